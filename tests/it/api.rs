//! The REST API of `lap serve`, driven in-process through the router the composition root builds.
//!
//! Each test states one behaviour of the API that issue 2 ("REST API") asks for: authentication,
//! every agent and session route, every error in the `{"error": …, "hint": …}` envelope, credential
//! values that never come back, and an OpenAPI document that matches the router. The [`App`] fixture
//! wires a store in a temporary data dir, the session service and a sandbox backend (the in-memory
//! fake unless a test picks another), exactly as `lap serve` does. Nothing sleeps for a fixed time:
//! tests that wait for a background bring-up poll the session with a deadline, or wait for the
//! server's task tracker to drain.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use lap::api::{self, AppState};
use lap::control::Services;
use lap::sandbox::fake::Fake;
use lap::sandbox::{Sandbox, Unavailable};
use lap::secret::Secret;
use lap::store::Store;
use lap::wire::api::MAX_BODY_BYTES;

const MASTER_KEY: &str = "test-master-key";
const AGENTS: &str = "/api/v1/managed_agents/agents";
const SESSIONS: &str = "/api/v1/managed_agents/sessions";
/// How long a test waits for a background bring-up before it fails.
const BRING_UP_DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

/// One `lap serve` application on a fresh data dir, reached without a socket.
pub(crate) struct App {
    router: Router,
    /// The fake backend, shared with the server, to see which sandboxes exist.
    fake: Arc<Fake>,
    tasks: TaskTracker,
    dir: tempfile::TempDir,
}

/// A response: its status, its body parsed as JSON (`Null` when empty) and the raw body text.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
    pub(crate) raw: String,
}

impl App {
    /// An application on the in-memory fake backend.
    pub(crate) fn new() -> Self {
        let fake = Arc::new(Fake::default());
        Self::build(fake.clone(), fake)
    }

    /// An application whose sessions go to `sandbox`; `fake` stays empty.
    fn with_sandbox(sandbox: Arc<dyn Sandbox>) -> Self {
        Self::build(sandbox, Arc::new(Fake::default()))
    }

    fn build(sandbox: Arc<dyn Sandbox>, fake: Arc<Fake>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store opens");
        let tasks = TaskTracker::new();
        let control = crate::support::plane::control(dir.path(), &store, sandbox, |s| Services {
            tasks: tasks.clone(),
            ..s
        });
        let previews = lap::control::ports::Previews::new(&[7; 32], store.clone(), "http://127.0.0.1:9".into());
        let router = api::router(AppState {
            store,
            control,
            master_key: Arc::new(Secret::new(MASTER_KEY)),
            oidc: None,
        });
        let router = api::ports::with_previews(router, Arc::new(previews));
        Self {
            router,
            fake,
            tasks,
            dir,
        }
    }

    pub(crate) fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends a request as it is, with no header added.
    pub(crate) async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let json = response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|t| t.to_str().is_ok_and(|t| t.starts_with("application/json")));
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let raw = String::from_utf8(bytes.to_vec()).expect("UTF-8 body");
        let body = if raw.is_empty() || !json {
            Value::Null
        } else {
            serde_json::from_str(&raw).unwrap_or_else(|err| panic!("body is not JSON ({err}): {raw}"))
        };
        Reply { status, body, raw }
    }

    /// A request with the master key and a JSON body (`null`: none).
    pub(crate) fn request_json(method: Method, path: &str, body: &Value) -> Request<Body> {
        Self::request(method, path, (!body.is_null()).then_some(body))
    }

    /// A request with the master key, and a JSON body when one is given.
    fn request(method: Method, path: &str, body: Option<&Value>) -> Request<Body> {
        Self::request_as(MASTER_KEY, method, path, body)
    }

    /// A request with `bearer` (the master key, an API key), and a JSON body when one is given.
    pub(crate) fn request_as(bearer: &str, method: Method, path: &str, body: Option<&Value>) -> Request<Body> {
        let builder = Request::builder()
            .method(method)
            .uri(path)
            .header(AUTHORIZATION, format!("Bearer {bearer}"));
        match body {
            Some(body) => builder
                .header(CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        }
        .expect("valid request")
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(Self::request(Method::GET, path, None)).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Self::request(Method::POST, path, Some(&body))).await
    }

    async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(Self::request(Method::PATCH, path, Some(&body))).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.send(Self::request(Method::DELETE, path, None)).await
    }

    /// A request with the master key and a raw body, with or without a JSON content type.
    async fn send_raw(&self, method: Method, path: &str, content_type: Option<&str>, body: impl Into<Body>) -> Reply {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(AUTHORIZATION, format!("Bearer {MASTER_KEY}"));
        if let Some(content_type) = content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        self.send(builder.body(body.into()).expect("valid request")).await
    }

    /// A GET of `path` with the given `Authorization` header, or none.
    async fn get_with_authorization(&self, path: &str, authorization: Option<&str>) -> Reply {
        let mut builder = Request::builder().uri(path);
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        self.send(builder.body(Body::empty()).expect("valid request")).await
    }

    /// Creates an agent from a full create body; the test fails unless that succeeds.
    async fn create_agent(&self, body: Value) -> Value {
        let reply = self.post(AGENTS, body).await;
        assert_eq!(reply.status, StatusCode::OK, "agent create failed: {}", reply.raw);
        reply.body
    }

    /// Creates an agent with just a name and a harness.
    pub(crate) async fn agent(&self, name: &str, harness: &str) -> Value {
        self.create_agent(json!({"name": name, "harness_id": harness})).await
    }

    /// Starts a session of `agent` (id or name) with an empty body.
    pub(crate) async fn start_session(&self, agent: &str) -> Value {
        let reply = self.send(Self::request(Method::POST, &session_of(agent), None)).await;
        assert_eq!(reply.status, StatusCode::OK, "session create failed: {}", reply.raw);
        reply.body
    }

    /// Polls a session until it has `status`, failing after [`BRING_UP_DEADLINE`].
    async fn wait_for_status(&self, session: &Value, status: &str) -> Value {
        let path = format!("{SESSIONS}/{}", str_of(&session["id"]));
        crate::support::wait_until_async(&format!("the session {status}"), BRING_UP_DEADLINE, || async {
            let reply = self.get(&path).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
            if reply.body["status"] == status {
                Ok(reply.body)
            } else {
                Err(reply.raw)
            }
        })
        .await
    }

    /// A session of `agent` that is `ready`.
    async fn ready_session(&self, agent: &str) -> Value {
        let session = self.start_session(agent).await;
        self.wait_for_status(&session, "ready").await
    }

    /// Waits until every background task the server spawned (bring-ups) has finished.
    async fn settle(&self) {
        self.tasks.close();
        tokio::time::timeout(BRING_UP_DEADLINE, self.tasks.wait())
            .await
            .expect("background tasks finish");
        self.tasks.reopen();
    }

    /// The sandboxes the fake backend holds.
    async fn sandboxes(&self) -> usize {
        self.fake.list().await.expect("fake lists").len()
    }
}

fn agent_path(id_or_name: &str) -> String {
    format!("{AGENTS}/{id_or_name}")
}

fn session_of(agent: &str) -> String {
    format!("{AGENTS}/{agent}/session")
}

fn str_of(value: &Value) -> &str {
    value.as_str().unwrap_or_else(|| panic!("not a string: {value}"))
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|agent| str_of(&agent["name"]))
        .collect()
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|item| str_of(&item["id"]))
        .collect()
}

/// Asserts `reply` is an error with `status` in the envelope, its message containing `needle`.
#[track_caller]
fn assert_error(reply: &Reply, status: StatusCode, needle: &str) {
    assert_eq!(reply.status, status, "unexpected status; body: {}", reply.raw);
    let object = reply
        .body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not a JSON object: {}", reply.raw));
    let error = object
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no `error` string in {}", reply.raw));
    assert!(error.contains(needle), "error `{error}` does not mention `{needle}`");
    assert!(
        object.keys().all(|k| k == "error" || k == "hint"),
        "envelope has fields beyond error and hint: {}",
        reply.raw
    );
    if let Some(hint) = object.get("hint") {
        assert!(hint.is_string(), "hint is not a string: {}", reply.raw);
    }
}

/// Pretty JSON with ids, timestamps, fingerprints and tokens replaced, for snapshots.
macro_rules! assert_json_snapshot_redacted {
    ($value:expr, @$snapshot:literal) => {
        insta::with_settings!({filters => vec![
            (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "[uuid]"),
            (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", "[time]"),
            (r#""fingerprint": "[0-9a-f]{8}""#, r#""fingerprint": "[fingerprint]""#),
            (r#""tty_token": "[0-9a-f]{64}""#, r#""tty_token": "[token]""#),
            (r"fake-[0-9a-f]{32}", "fake-[sandbox]"),
        ]}, {
            insta::assert_snapshot!(serde_json::to_string_pretty(&$value).unwrap(), @$snapshot);
        });
    };
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_request_without_authorization_is_unauthorized() {
    let app = App::new();
    let reply = app.get_with_authorization(AGENTS, None).await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(reply.body["error"], "unauthorized");
}

#[tokio::test]
async fn a_wrong_master_key_is_unauthorized() {
    let app = App::new();
    for key in [
        "Bearer wrong-key",
        "Bearer test-master-ke",
        "Bearer test-master-key2",
        "Bearer ",
    ] {
        let reply = app.get_with_authorization(AGENTS, Some(key)).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(reply.body["error"], "unauthorized", "{key}");
    }
}

#[tokio::test]
async fn the_bearer_scheme_must_be_spelled_exactly() {
    let app = App::new();
    for value in [
        format!("bearer {MASTER_KEY}"),
        format!("BEARER {MASTER_KEY}"),
        format!("Bearer  {MASTER_KEY}"),
        format!("Bearer{MASTER_KEY}"),
        format!("Basic {MASTER_KEY}"),
        MASTER_KEY.to_owned(),
    ] {
        let reply = app.get_with_authorization(AGENTS, Some(&value)).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(reply.body["error"], "unauthorized", "`{value}`");
    }
}

#[tokio::test]
async fn the_right_master_key_is_accepted() {
    let app = App::new();
    let reply = app
        .get_with_authorization(AGENTS, Some(&format!("Bearer {MASTER_KEY}")))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
}

#[tokio::test]
async fn every_managed_agents_operation_requires_the_master_key() {
    let app = App::new();
    for (method, path) in documented_operations() {
        if !path.starts_with("/api/v1/managed_agents") {
            continue;
        }
        let path = path.replace("{id}", "demo");
        let request = Request::builder()
            .method(method.clone())
            .uri(&path)
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let reply = app.send(request).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}: {}", reply.raw);
        assert_eq!(reply.body["error"], "unauthorized", "{method} {path}");
    }
}

#[tokio::test]
async fn health_is_open_without_authorization() {
    let app = App::new();
    let reply = app.get_with_authorization("/api/v1/health", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
    assert_eq!(reply.body["ok"], true);
    assert_eq!(reply.body["backend"], "fake");
    assert_eq!(reply.body["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn health_names_the_backend_in_use() {
    let app = App::with_sandbox(Arc::new(Unavailable {
        backend: "local",
        reason: "not built yet",
    }));
    let reply = app.get_with_authorization("/api/v1/health", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["backend"], "local");
}

#[tokio::test]
async fn openapi_json_is_open_without_authorization() {
    let app = App::new();
    let reply = app.get_with_authorization("/api/v1/openapi.json", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
    assert!(reply.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    assert_eq!(reply.body, serde_json::to_value(api::openapi()).unwrap());
}

// ---------------------------------------------------------------------------------------------
// Agents: create, show
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn creating_an_agent_returns_it_in_lap_shape() {
    let app = App::new();
    let agent = app
        .create_agent(json!({
            "name": "demo",
            "harness_id": "claude-code",
            "command": "claude --verbose",
            "repo_url": "https://github.com/example/repo.git",
            "branch": "dev",
            "prompt": "be brief",
            "model": "claude-sonnet",
            "env": {"RUST_LOG": "debug"},
            "credentials": [{"name": "GITHUB_TOKEN", "value": "ghp_secret", "hosts": ["api.github.com"]}],
            "env_vars": {"ANTHROPIC_API_KEY": "sk-ant-secret"},
            "env_var_hosts": {"ANTHROPIC_API_KEY": ["api.anthropic.com"]},
            "allow_out": ["*.PyPI.org", "10.0.0.0/8"],
            "deny_out": ["evil.example"]
        }))
        .await;
    assert_json_snapshot_redacted!(agent, @r#"
    {
      "allow_out": [
        "*.pypi.org",
        "10.0.0.0/8"
      ],
      "branch": "dev",
      "command": "claude --verbose",
      "created_at": "[time]",
      "credentials": [
        {
          "fingerprint": "[fingerprint]",
          "hosts": [
            "api.anthropic.com"
          ],
          "inject": [
            "authorization",
            "header:x-api-key"
          ],
          "name": "ANTHROPIC_API_KEY",
          "rules": []
        },
        {
          "fingerprint": "[fingerprint]",
          "hosts": [
            "api.github.com"
          ],
          "inject": [
            "authorization"
          ],
          "name": "GITHUB_TOKEN",
          "rules": []
        }
      ],
      "deny_out": [
        "evil.example"
      ],
      "env": {
        "RUST_LOG": "debug"
      },
      "env_var_hosts": {
        "ANTHROPIC_API_KEY": [
          "api.anthropic.com"
        ],
        "GITHUB_TOKEN": [
          "api.github.com"
        ]
      },
      "harness_id": "claude-code",
      "id": "[uuid]",
      "model": "claude-sonnet",
      "name": "demo",
      "prompt": "be brief",
      "repo_url": "https://github.com/example/repo.git",
      "supports_tui": true,
      "updated_at": "[time]"
    }
    "#);
    assert!(uuid::Uuid::parse_str(str_of(&agent["id"])).is_ok());
}

#[tokio::test]
async fn a_new_agent_defaults_to_harness_opencode_and_branch_main() {
    let app = App::new();
    let agent = app.create_agent(json!({"name": "demo"})).await;
    assert_eq!(agent["harness_id"], "opencode");
    assert_eq!(agent["branch"], "main");
    assert_eq!(agent["supports_tui"], false);
    for cleared in ["command", "repo_url", "prompt", "model"] {
        assert_eq!(agent[cleared], Value::Null, "{cleared}");
    }
    assert_eq!(agent["env"], json!({}));
    assert_eq!(agent["credentials"], json!([]));
    assert_eq!(agent["env_var_hosts"], json!({}));
    assert_eq!(agent["allow_out"], json!([]));
    assert_eq!(agent["deny_out"], json!([]));
}

#[tokio::test]
async fn an_agent_is_shown_by_id_and_by_name() {
    let app = App::new();
    let created = app.agent("demo", "shell").await;
    let by_id = app.get(&agent_path(str_of(&created["id"]))).await;
    let by_name = app.get(&agent_path("demo")).await;
    assert_eq!(by_id.status, StatusCode::OK);
    assert_eq!(by_name.status, StatusCode::OK);
    assert_eq!(by_id.body, created);
    assert_eq!(by_name.body, created);
}

#[tokio::test]
async fn an_unknown_agent_is_404_on_every_agent_route() {
    let app = App::new();
    let missing = "00000000-0000-4000-8000-000000000000";
    for id in ["nobody", missing] {
        assert_error(
            &app.get(&agent_path(id)).await,
            StatusCode::NOT_FOUND,
            &format!("agent `{id}` not found"),
        );
        assert_error(
            &app.patch(&agent_path(id), json!({"prompt": "x"})).await,
            StatusCode::NOT_FOUND,
            "not found",
        );
        assert_error(&app.delete(&agent_path(id)).await, StatusCode::NOT_FOUND, "not found");
        assert_error(
            &app.post(&session_of(id), json!({})).await,
            StatusCode::NOT_FOUND,
            "not found",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Agents: list
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_agent_list_is_a_page_newest_first() {
    let app = App::new();
    for name in ["first", "second", "third"] {
        app.agent(name, "shell").await;
    }
    let reply = app.get(AGENTS).await;
    assert_eq!(reply.status, StatusCode::OK);
    let page = reply.body.as_object().unwrap();
    let mut keys: Vec<_> = page.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["data", "limit", "offset", "total"]);
    assert_eq!(names(&reply.body["data"]), ["third", "second", "first"]);
    assert_eq!(reply.body["total"], 3);
    assert_eq!(reply.body["limit"], 50);
    assert_eq!(reply.body["offset"], 0);
}

#[tokio::test]
async fn the_agent_list_pages_with_limit_and_offset() {
    let app = App::new();
    for name in ["a1", "a2", "a3", "a4", "a5"] {
        app.agent(name, "shell").await;
    }
    let reply = app.get(&format!("{AGENTS}?limit=2&offset=1")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(names(&reply.body["data"]), ["a4", "a3"]);
    assert_eq!(reply.body["total"], 5);
    assert_eq!(reply.body["limit"], 2);
    assert_eq!(reply.body["offset"], 1);

    let past_the_end = app.get(&format!("{AGENTS}?offset=10")).await;
    assert_eq!(past_the_end.body["data"], json!([]));
    assert_eq!(past_the_end.body["total"], 5);
}

#[tokio::test]
async fn the_agent_list_clamps_limit_to_1_through_200() {
    let app = App::new();
    app.agent("a1", "shell").await;
    app.agent("a2", "shell").await;
    let zero = app.get(&format!("{AGENTS}?limit=0")).await;
    assert_eq!(zero.body["limit"], 1);
    assert_eq!(names(&zero.body["data"]), ["a2"]);
    let huge = app.get(&format!("{AGENTS}?limit=100000")).await;
    assert_eq!(huge.body["limit"], 200);
    assert_eq!(names(&huge.body["data"]), ["a2", "a1"]);
}

#[tokio::test]
async fn the_agent_list_rejects_a_non_numeric_limit_in_the_envelope() {
    let app = App::new();
    assert_error(
        &app.get(&format!("{AGENTS}?limit=many")).await,
        StatusCode::BAD_REQUEST,
        "limit",
    );
    assert_error(
        &app.get(&format!("{AGENTS}?offset=-1")).await,
        StatusCode::BAD_REQUEST,
        "offset",
    );
}

#[tokio::test]
async fn the_agent_list_searches_name_id_and_harness_case_insensitively() {
    let app = App::new();
    let alpha = app.agent("alpha-bot", "shell").await;
    app.agent("beta-bot", "codex").await;
    app.agent("gamma", "shell").await;

    let by_name = app.get(&format!("{AGENTS}?search=BOT")).await;
    assert_eq!(names(&by_name.body["data"]), ["beta-bot", "alpha-bot"]);
    assert_eq!(by_name.body["total"], 2);

    let by_harness = app.get(&format!("{AGENTS}?search=CODEX")).await;
    assert_eq!(names(&by_harness.body["data"]), ["beta-bot"]);

    let id = str_of(&alpha["id"]);
    let by_id = app.get(&format!("{AGENTS}?search={}", &id[..13])).await;
    assert_eq!(names(&by_id.body["data"]), ["alpha-bot"]);

    let none = app.get(&format!("{AGENTS}?search=zeta")).await;
    assert_eq!(none.body["data"], json!([]));
    assert_eq!(none.body["total"], 0);
}

#[tokio::test]
async fn the_agent_list_search_takes_wildcard_characters_literally() {
    let app = App::new();
    app.agent("alpha", "shell").await;
    app.agent("beta", "claude-code").await;
    for pattern in ["_", "%25", "a_p", "%5C"] {
        let reply = app.get(&format!("{AGENTS}?search={pattern}")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body["data"], json!([]), "search={pattern}");
        assert_eq!(reply.body["total"], 0, "search={pattern}");
    }
}

#[tokio::test]
async fn agent_list_items_count_sessions_and_flag_an_active_one() {
    let app = App::new();
    app.agent("busy", "shell").await;
    app.agent("idle", "shell").await;
    let first = app.ready_session("busy").await;
    app.ready_session("busy").await;
    app.delete(&format!("{SESSIONS}/{}", str_of(&first["id"]))).await;

    let list = app.get(AGENTS).await.body;
    let item = |name: &str| {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(item("busy")["session_count"], 2);
    assert_eq!(item("busy")["has_active_session"], true);
    assert_eq!(item("idle")["session_count"], 0);
    assert_eq!(item("idle")["has_active_session"], false);

    let show = app.get(&agent_path("busy")).await.body;
    assert!(
        show.get("session_count").is_none(),
        "only list items carry session_count"
    );
    assert!(show.get("has_active_session").is_none());
}

#[tokio::test]
async fn an_agent_whose_sessions_all_ended_has_no_active_session() {
    let app = App::new();
    app.agent("demo", "shell").await;
    let session = app.ready_session("demo").await;
    app.delete(&format!("{SESSIONS}/{}", str_of(&session["id"]))).await;
    let list = app.get(AGENTS).await.body;
    assert_eq!(list["data"][0]["session_count"], 1);
    assert_eq!(list["data"][0]["has_active_session"], false);
}

// ---------------------------------------------------------------------------------------------
// Agents: update
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn patch_changes_only_the_fields_it_names() {
    let app = App::new();
    let before = app
        .create_agent(
            json!({"name": "demo", "harness_id": "shell", "prompt": "old", "model": "m1",
            "repo_url": "https://example.com/r.git", "env": {"A": "1"}}),
        )
        .await;
    let reply = app
        .patch(
            &agent_path("demo"),
            json!({"prompt": "new", "harness_id": "codex", "branch": "dev", "command": "codex --fast",
                "repo_url": "git@github.com:example/r.git"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
    let after = reply.body;
    assert_eq!(after["prompt"], "new");
    assert_eq!(after["harness_id"], "codex");
    assert_eq!(after["branch"], "dev");
    assert_eq!(after["command"], "codex --fast");
    assert_eq!(after["repo_url"], "git@github.com:example/r.git");
    for unchanged in ["id", "name", "model", "env", "created_at", "credentials"] {
        assert_eq!(after[unchanged], before[unchanged], "{unchanged}");
    }
    assert_eq!(app.get(&agent_path("demo")).await.body, after);
}

#[tokio::test]
async fn patch_with_an_empty_string_clears_optional_text_fields() {
    let app = App::new();
    app.create_agent(
        json!({"name": "demo", "command": "run", "repo_url": "https://example.com/r.git",
        "prompt": "p", "model": "m"}),
    )
    .await;
    let reply = app
        .patch(
            &agent_path("demo"),
            json!({"command": "", "repo_url": "", "prompt": "", "model": " "}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
    for field in ["command", "repo_url", "prompt", "model"] {
        assert_eq!(reply.body[field], Value::Null, "{field}");
    }
}

#[tokio::test]
async fn patch_env_replaces_the_whole_map() {
    let app = App::new();
    app.create_agent(json!({"name": "demo", "env": {"A": "1", "B": "2"}}))
        .await;
    let reply = app.patch(&agent_path("demo"), json!({"env": {"C": "3"}})).await;
    assert_eq!(reply.body["env"], json!({"C": "3"}));
    let cleared = app.patch(&agent_path("demo"), json!({"env": {}})).await;
    assert_eq!(cleared.body["env"], json!({}));
}

#[tokio::test]
async fn limits_are_stored_replaced_by_patch_and_refused_out_of_range_with_400() {
    let app = App::new();
    let created = app
        .create_agent(json!({"name": "demo", "limits": {"memory_mb": 512, "pids": 100, "cpus": 1.5}}))
        .await;
    assert_eq!(created["limits"], json!({"memory_mb": 512, "pids": 100, "cpus": 1.5}));
    let reply = app.patch(&agent_path("demo"), json!({"limits": {"pids": 64}})).await;
    assert_eq!(reply.body["limits"], json!({"pids": 64}));
    // `{}` clears them; an agent without limits shows none.
    let cleared = app.patch(&agent_path("demo"), json!({"limits": {}})).await;
    assert_eq!(cleared.body.get("limits"), None, "{}", cleared.raw);
    for (limits, needle) in [
        (json!({"memory_mb": 0}), "invalid limits.memory_mb `0`"),
        (json!({"pids": 10}), "invalid limits.pids `10`"),
        (json!({"cpus": 0}), "invalid limits.cpus `0`"),
        (json!({"cpus": -1.0}), "invalid limits.cpus `-1`"),
        (json!({"memory": 5}), "unknown field `memory`"),
    ] {
        let reply = app.patch(&agent_path("demo"), json!({ "limits": limits })).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, needle);
        let reply = app.post(AGENTS, json!({"name": "other", "limits": limits})).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, needle);
    }
}

#[tokio::test]
async fn volumes_are_stored_and_replaced_but_a_backend_without_workspaces_refuses_their_sessions_with_409() {
    let app = App::new();
    let created = app
        .create_agent(json!({"name": "demo", "volumes": [{"name": "cache", "path": "/work/home/.cache/"}]}))
        .await;
    assert_eq!(
        created["volumes"],
        json!([{"name": "cache", "path": "/work/home/.cache"}])
    );
    // The fake backend, like Kubernetes, keeps no workspaces: a session is refused, none is made.
    let reply = app.post(&session_of("demo"), json!({})).await;
    assert_error(
        &reply,
        StatusCode::CONFLICT,
        "agent `demo` has volumes, which the `fake` backend cannot mount",
    );
    assert!(str_of(&reply.body["hint"]).contains("--volume ''"), "{}", reply.raw);
    assert_eq!(app.sandboxes().await, 0);
    let shown = app.get(&agent_path("demo")).await;
    assert_eq!(shown.body["volumes"][0]["name"], "cache", "{}", shown.raw);
    // `[]` clears them, and then sessions start.
    let cleared = app.patch(&agent_path("demo"), json!({"volumes": []})).await;
    assert_eq!(cleared.body.get("volumes"), None, "{}", cleared.raw);
    assert_eq!(app.post(&session_of("demo"), json!({})).await.status, StatusCode::OK);
    for (volumes, needle) in [
        (json!([{"name": "v", "path": "/etc"}]), "cannot be mounted at `/etc`"),
        (json!([{"name": "v", "path": "/work/a/../b"}]), "`.` or `..`"),
        (
            json!([{"name": "v", "path": "/work/a"}, {"name": "v", "path": "/work/b"}]),
            "given twice",
        ),
        (
            json!([{"name": "v", "path": "/work/a", "mode": "ro"}]),
            "unknown field `mode`",
        ),
        (json!(["v:/work/a"]), "invalid type"),
    ] {
        let reply = app.patch(&agent_path("demo"), json!({ "volumes": volumes })).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, needle);
        let reply = app.post(AGENTS, json!({"name": "other", "volumes": volumes})).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, needle);
    }
}

#[tokio::test]
async fn patch_allow_out_and_deny_out_replace_the_lists() {
    let app = App::new();
    app.create_agent(json!({"name": "demo", "allow_out": ["a.example", "b.example"], "deny_out": ["c.example"]}))
        .await;
    let reply = app
        .patch(
            &agent_path("demo"),
            json!({"allow_out": ["*.pypi.org"], "deny_out": []}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
    assert_eq!(reply.body["allow_out"], json!(["*.pypi.org"]));
    assert_eq!(reply.body["deny_out"], json!([]));
}

#[tokio::test]
async fn patch_upserts_credentials_by_name() {
    let app = App::new();
    let before = app
        .create_agent(json!({"name": "demo",
            "credentials": [{"name": "TOKEN", "value": "old-value", "hosts": ["api.example.com"]}]}))
        .await;
    let reply = app
        .patch(
            &agent_path("demo"),
            json!({"credentials": [
                {"name": "TOKEN", "value": "new-value", "hosts": ["*.example.com"]},
                {"name": "OTHER", "value": "other-value", "hosts": ["h.test"]}
            ]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
    let credentials = &reply.body["credentials"];
    assert_eq!(credentials.as_array().unwrap().len(), 2);
    assert_eq!(credentials[0]["name"], "OTHER");
    assert_eq!(credentials[0]["hosts"], json!(["h.test"]));
    assert_eq!(credentials[1]["name"], "TOKEN");
    assert_eq!(credentials[1]["hosts"], json!(["*.example.com"]));
    assert_ne!(
        credentials[1]["fingerprint"], before["credentials"][0]["fingerprint"],
        "a new value has a new fingerprint"
    );
    assert_eq!(
        reply.body["env_var_hosts"],
        json!({"OTHER": ["h.test"], "TOKEN": ["*.example.com"]})
    );
}

#[tokio::test]
async fn patch_env_vars_upserts_credentials_lap_style() {
    let app = App::new();
    app.create_agent(json!({"name": "demo"})).await;
    let reply = app
        .patch(
            &agent_path("demo"),
            json!({"env_vars": {"OPENAI_API_KEY": "sk-x"}, "env_var_hosts": {"OPENAI_API_KEY": ["api.openai.com"]}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
    assert_eq!(
        reply.body["env_var_hosts"],
        json!({"OPENAI_API_KEY": ["api.openai.com"]})
    );
}

#[tokio::test]
async fn patch_removes_credentials() {
    let app = App::new();
    app.create_agent(json!({"name": "demo", "env_vars": {"KEEP": "k", "DROP": "d"},
        "env_var_hosts": {"KEEP": ["h.test"], "DROP": ["h.test"]}}))
        .await;
    let reply = app
        .patch(&agent_path("demo"), json!({"remove_credentials": ["DROP"]}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
    let remaining: Vec<_> = reply.body["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| str_of(&c["name"]).to_owned())
        .collect();
    assert_eq!(remaining, ["KEEP"]);
    assert_eq!(reply.body["env_var_hosts"], json!({"KEEP": ["h.test"]}));
}

#[tokio::test]
async fn patch_removing_a_credential_the_agent_lacks_is_400() {
    let app = App::new();
    app.create_agent(json!({"name": "demo"})).await;
    let reply = app
        .patch(&agent_path("demo"), json!({"remove_credentials": ["NOPE"]}))
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "NOPE");
}

#[tokio::test]
async fn patch_env_var_hosts_rebinds_a_credential_and_keeps_its_value() {
    let app = App::new();
    let before = app
        .create_agent(json!({"name": "demo",
            "credentials": [{"name": "TOKEN", "value": "v", "hosts": ["a.example.com"]}]}))
        .await;
    let reply = app
        .patch(
            &agent_path("demo"),
            json!({"env_var_hosts": {"TOKEN": ["b.example.com", "*.c.example.com:8443"]}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
    assert_eq!(
        reply.body["credentials"][0]["hosts"],
        json!(["b.example.com", "*.c.example.com:8443"])
    );
    assert_eq!(
        reply.body["credentials"][0]["fingerprint"],
        before["credentials"][0]["fingerprint"]
    );
    assert_eq!(
        reply.body["env_var_hosts"],
        json!({"TOKEN": ["b.example.com", "*.c.example.com:8443"]})
    );
}

#[tokio::test]
async fn credentials_get_their_presets_injection_points_unless_given_their_own() {
    let app = App::new();
    let agent = app
        .create_agent(json!({"name": "demo",
            "credentials": [
                {"name": "GITHUB_TOKEN", "value": "ghp_x", "rules": ["get,post /repos/acme/**"]},
                {"name": "GITLAB_TOKEN", "value": "glpat-x"},
            ],
            "env_vars": {"ANTHROPIC_API_KEY": "sk-ant-x", "SEARCH_KEY": "k"},
            "env_var_hosts": {"SEARCH_KEY": ["search.example.com"]},
            "env_var_inject": {"SEARCH_KEY": ["Query:key", "header:X-Search-Key", "query:key"]},
            "env_var_rules": {"SEARCH_KEY": ["/v1/search", "GET /v1/%73uggest"]}}))
        .await;
    let by_name = |name: &str| {
        agent["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {agent}"))
            .clone()
    };
    assert_eq!(
        by_name("ANTHROPIC_API_KEY")["inject"],
        json!(["authorization", "header:x-api-key"])
    );
    assert_eq!(by_name("ANTHROPIC_API_KEY")["rules"], json!([]));
    assert_eq!(
        by_name("GITLAB_TOKEN")["inject"],
        json!(["header:private-token", "authorization"])
    );
    assert_eq!(by_name("GITLAB_TOKEN")["hosts"], json!(["gitlab.com"]));
    assert_eq!(by_name("GITHUB_TOKEN")["inject"], json!(["authorization"]));
    assert_eq!(by_name("GITHUB_TOKEN")["rules"], json!(["GET,POST /repos/acme/**"]));
    // Header names lower-cased, duplicates dropped, unreserved escapes decoded: the stored form.
    assert_eq!(
        by_name("SEARCH_KEY")["inject"],
        json!(["query:key", "header:x-search-key"])
    );
    assert_eq!(by_name("SEARCH_KEY")["rules"], json!(["/v1/search", "GET /v1/suggest"]));
    // Shown again as stored.
    let shown = app.get(&agent_path("demo")).await;
    assert_eq!(shown.body["credentials"], agent["credentials"]);
}

#[tokio::test]
async fn patch_env_var_inject_and_rules_replace_a_credentials_sets_and_keep_its_value() {
    let app = App::new();
    let before = app
        .create_agent(json!({"name": "demo",
            "credentials": [{"name": "TOKEN", "value": "v", "hosts": ["a.example.com"]}]}))
        .await;
    assert_eq!(before["credentials"][0]["inject"], json!(["authorization"]));
    let reply = app
        .patch(
            &agent_path("demo"),
            json!({"env_var_inject": {"TOKEN": ["header:x-token", "body"]},
                   "env_var_rules": {"TOKEN": ["POST /upload/*"]}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
    let credential = &reply.body["credentials"][0];
    assert_eq!(credential["inject"], json!(["header:x-token", "body"]));
    assert_eq!(credential["rules"], json!(["POST /upload/*"]));
    assert_eq!(credential["fingerprint"], before["credentials"][0]["fingerprint"]);
    assert_eq!(credential["hosts"], json!(["a.example.com"]));

    // A new value without points keeps the stored ones; `[]` rules means any request again.
    let reply = app
        .patch(
            &agent_path("demo"),
            json!({"credentials": [{"name": "TOKEN", "value": "w", "hosts": ["a.example.com"]}],
                   "env_var_rules": {"TOKEN": []}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
    let credential = &reply.body["credentials"][0];
    assert_eq!(credential["inject"], json!(["header:x-token", "body"]));
    assert_eq!(credential["rules"], json!([]));
    assert_ne!(credential["fingerprint"], before["credentials"][0]["fingerprint"]);
}

#[tokio::test]
async fn bad_injection_points_and_rules_are_400_naming_the_entry_with_a_hint() {
    let app = App::new();
    let create = |inject: Value, rules: Value| {
        json!({"name": "demo", "env_vars": {"GITHUB_TOKEN": "v"},
               "env_var_inject": {"GITHUB_TOKEN": inject}, "env_var_rules": {"GITHUB_TOKEN": rules}})
    };
    for (inject, rules, needle, hint) in [
        (
            json!(["header:Authorization"]),
            json!([]),
            "`header:Authorization` names the `Authorization` header",
            "say `authorization`",
        ),
        (
            json!(["cookie"]),
            json!([]),
            "unknown injection point `cookie`",
            "header:NAME",
        ),
        (
            json!(["header:host"]),
            json!([]),
            "header `host` cannot carry a credential",
            "another header",
        ),
        (
            json!(["query:a&b"]),
            json!([]),
            "`a&b` is not a query parameter name",
            "letters, digits",
        ),
        (
            json!([]),
            json!([]),
            "credential `GITHUB_TOKEN` has no injection point",
            "authorization",
        ),
        (
            json!(["authorization"]),
            json!(["GET /repos/../admin"]),
            "rule `GET /repos/../admin` has an empty, `.` or `..` segment",
            "METHODS /glob",
        ),
        (
            json!(["authorization"]),
            json!(["repos/**"]),
            "rule `repos/**` has no path starting with `/`",
            "METHODS /glob",
        ),
        (
            json!(["authorization"]),
            json!(["/a?b"]),
            "rule `/a?b` has `?` in its path",
            "METHODS /glob",
        ),
    ] {
        let reply = app.post(AGENTS, create(inject.clone(), rules.clone())).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, needle);
        assert!(str_of(&reply.body["error"]).contains("GITHUB_TOKEN"), "{}", reply.raw);
        assert!(
            reply.body["hint"].as_str().is_some_and(|h| h.contains(hint)),
            "{inject} {rules}: {}",
            reply.raw
        );
    }
    // The same checks on patch, and a failed patch changes nothing.
    app.create_agent(json!({"name": "demo", "env_vars": {"GITHUB_TOKEN": "v"}}))
        .await;
    let reply = app
        .patch(
            &agent_path("demo"),
            json!({"env_var_inject": {"GITHUB_TOKEN": ["authorization", "header:content-length"]}}),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "header `content-length` cannot carry a credential",
    );
    let reply = app
        .patch(
            &agent_path("demo"),
            json!({"env_var_rules": {"GITHUB_TOKEN": ["GET /a/%zz"]}}),
        )
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "bad percent-escape");
    let shown = app.get(&agent_path("demo")).await;
    assert_eq!(shown.body["credentials"][0]["inject"], json!(["authorization"]));
    assert_eq!(shown.body["credentials"][0]["rules"], json!([]));
}

#[tokio::test]
async fn env_var_inject_or_rules_naming_a_non_credential_is_400() {
    let app = App::new();
    for field in ["env_var_inject", "env_var_rules"] {
        let value = if field == "env_var_inject" {
            json!(["body"])
        } else {
            json!(["/x"])
        };
        let reply = app
            .post(AGENTS, json!({"name": "demo", field: {"NOT_THERE": value.clone()}}))
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, &format!("{field} names `NOT_THERE`"));
        app.create_agent(json!({"name": "other"})).await;
        let reply = app
            .patch(&agent_path("other"), json!({field: {"NOT_THERE": value}}))
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, &format!("{field} names `NOT_THERE`"));
        assert_eq!(app.delete(&agent_path("other")).await.status, StatusCode::NO_CONTENT);
    }
}

#[test]
fn openapi_documents_injection_points_and_rules_as_strings() {
    let doc = serde_json::to_value(api::openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    for field in ["inject", "rules"] {
        assert_eq!(
            schemas["CredentialInfo"]["properties"][field]["items"]["type"], "string",
            "{}",
            schemas["CredentialInfo"]
        );
    }
    for schema in ["CreateAgent", "UpdateAgent"] {
        for field in ["env_var_inject", "env_var_rules"] {
            assert_eq!(
                schemas[schema]["properties"][field]["additionalProperties"]["items"]["type"], "string",
                "{schema}.{field}: {}",
                schemas[schema]
            );
        }
    }
    assert!(schemas["CredentialInput"]["properties"]["inject"].is_object());
}

#[tokio::test]
async fn patch_renames_an_agent() {
    let app = App::new();
    let created = app.agent("old-name", "shell").await;
    let reply = app.patch(&agent_path("old-name"), json!({"name": "new-name"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
    assert_eq!(reply.body["name"], "new-name");
    assert_eq!(reply.body["id"], created["id"]);
    assert_eq!(app.get(&agent_path("new-name")).await.body["id"], created["id"]);
    assert_error(
        &app.get(&agent_path("old-name")).await,
        StatusCode::NOT_FOUND,
        "not found",
    );
}

#[tokio::test]
async fn patch_to_its_own_name_is_not_a_conflict() {
    let app = App::new();
    app.agent("demo", "shell").await;
    let reply = app.patch(&agent_path("demo"), json!({"name": "demo"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
}

// ---------------------------------------------------------------------------------------------
// Agents: delete
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn deleting_an_agent_answers_204_then_404() {
    let app = App::new();
    let agent = app.agent("demo", "shell").await;
    let reply = app.delete(&agent_path(str_of(&agent["id"]))).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.raw, "");
    assert_error(&app.get(&agent_path("demo")).await, StatusCode::NOT_FOUND, "not found");
    assert_error(
        &app.delete(&agent_path("demo")).await,
        StatusCode::NOT_FOUND,
        "not found",
    );
    assert_eq!(app.get(AGENTS).await.body["total"], 0);
}

#[tokio::test]
async fn deleting_an_agent_by_name_frees_the_name() {
    let app = App::new();
    let first = app.agent("demo", "shell").await;
    assert_eq!(app.delete(&agent_path("demo")).await.status, StatusCode::NO_CONTENT);
    let second = app.agent("demo", "shell").await;
    assert_ne!(first["id"], second["id"]);
}

#[tokio::test]
async fn deleting_an_agent_stops_its_sessions_sandboxes_and_removes_them() {
    let app = App::new();
    app.agent("demo", "shell").await;
    app.agent("other", "shell").await;
    let doomed = app.ready_session("demo").await;
    app.ready_session("demo").await;
    let kept = app.ready_session("other").await;
    assert_eq!(app.sandboxes().await, 3);

    assert_eq!(app.delete(&agent_path("demo")).await.status, StatusCode::NO_CONTENT);

    assert_eq!(app.sandboxes().await, 1, "only the other agent's sandbox is left");
    assert_error(
        &app.get(&format!("{SESSIONS}/{}", str_of(&doomed["id"]))).await,
        StatusCode::NOT_FOUND,
        "not found",
    );
    assert_eq!(ids(&app.get(SESSIONS).await.body), [str_of(&kept["id"])]);
}

#[tokio::test]
async fn deleting_an_agent_while_its_session_is_created_leaks_no_sandbox() {
    let app = App::new();
    app.agent("demo", "shell").await;
    app.start_session("demo").await;
    assert_eq!(app.delete(&agent_path("demo")).await.status, StatusCode::NO_CONTENT);
    app.settle().await;
    assert_eq!(app.sandboxes().await, 0);
    assert_eq!(app.get(SESSIONS).await.body, json!([]));
}

// ---------------------------------------------------------------------------------------------
// Agents: validation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_agent_names_are_400() {
    let app = App::new();
    let too_long = "a".repeat(64);
    for name in ["", "-demo", "Demo", "de_mo", "de mo", "démo", too_long.as_str()] {
        let reply = app.post(AGENTS, json!({"name": name})).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid agent name");
    }
    app.agent("demo", "shell").await;
    let rename = app.patch(&agent_path("demo"), json!({"name": "Not-Valid"})).await;
    assert_error(&rename, StatusCode::BAD_REQUEST, "invalid agent name");
}

#[tokio::test]
async fn a_name_that_reads_as_a_uuid_is_400_because_routes_could_not_find_it_by_name() {
    let app = App::new();
    let other = app.agent("other", "shell").await;
    for name in [
        "3a6cdbd2-020f-4850-ba99-f67cd38f62aa",
        "3a6cdbd2020f4850ba99f67cd38f62aa",
        str_of(&other["id"]),
    ] {
        let reply = app.post(AGENTS, json!({"name": name})).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "reads as a UUID");
        let rename = app.patch(&agent_path("other"), json!({"name": name})).await;
        assert_error(&rename, StatusCode::BAD_REQUEST, "reads as a UUID");
    }
}

#[tokio::test]
async fn the_longest_valid_name_is_accepted() {
    let app = App::new();
    let name = format!("0{}", "a-".repeat(31));
    assert_eq!(name.len(), 63);
    app.agent(&name, "shell").await;
}

#[tokio::test]
async fn an_unknown_harness_is_400_naming_the_valid_ones() {
    let app = App::new();
    let reply = app.post(AGENTS, json!({"name": "demo", "harness_id": "vim"})).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "unknown harness_id \"vim\"");
    for valid in [
        "claude-code",
        "codex",
        "codex-app-server",
        "gemini",
        "hermes",
        "opencode",
        "claude-agent-sdk",
        "shell",
    ] {
        assert!(str_of(&reply.body["error"]).contains(valid), "{valid} not named");
    }
    app.agent("demo", "shell").await;
    let patch = app.patch(&agent_path("demo"), json!({"harness_id": "emacs"})).await;
    assert_error(&patch, StatusCode::BAD_REQUEST, "unknown harness_id \"emacs\"");
}

#[tokio::test]
async fn a_bad_credential_host_pattern_is_400() {
    let app = App::new();
    for host in ["http://api.example.com", "a b", "*.", "h:0", "h:99999", ".example.com"] {
        let reply = app
            .post(
                AGENTS,
                json!({"name": "demo", "credentials": [{"name": "T", "value": "v", "hosts": [host]}]}),
            )
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid host pattern");
    }
    let lap_style = app
        .post(
            AGENTS,
            json!({"name": "demo", "env_vars": {"T": "v"}, "env_var_hosts": {"T": ["no spaces"]}}),
        )
        .await;
    assert_error(&lap_style, StatusCode::BAD_REQUEST, "invalid host pattern");
}

#[tokio::test]
async fn a_bad_egress_entry_is_400() {
    let app = App::new();
    for field in ["allow_out", "deny_out"] {
        for entry in ["a;b", "10.0.0.0/33", "", "https://x.example"] {
            let reply = app.post(AGENTS, json!({"name": "demo", field: [entry]})).await;
            assert_error(&reply, StatusCode::BAD_REQUEST, &format!("invalid {field} entry"));
        }
    }
    app.agent("demo", "shell").await;
    let patch = app.patch(&agent_path("demo"), json!({"allow_out": ["bad host"]})).await;
    assert_error(&patch, StatusCode::BAD_REQUEST, "invalid allow_out entry");
}

#[tokio::test]
async fn a_bad_repo_url_is_400() {
    let app = App::new();
    for url in [
        "github.com/example/repo",
        "ftp://example.com/r",
        "https://example.com/a b",
    ] {
        let reply = app.post(AGENTS, json!({"name": "demo", "repo_url": url})).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid repo_url");
    }
    app.agent("demo", "shell").await;
    let patch = app.patch(&agent_path("demo"), json!({"repo_url": "nope"})).await;
    assert_error(&patch, StatusCode::BAD_REQUEST, "invalid repo_url");
}

#[tokio::test]
async fn a_bad_branch_is_400() {
    let app = App::new();
    for branch in ["", "-rf", "a b"] {
        let reply = app.post(AGENTS, json!({"name": "demo", "branch": branch})).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid branch");
    }
}

#[tokio::test]
async fn bad_env_and_credential_names_are_400() {
    let app = App::new();
    let env = app.post(AGENTS, json!({"name": "demo", "env": {"1BAD": "x"}})).await;
    assert_error(&env, StatusCode::BAD_REQUEST, "invalid env variable name");
    let credential = app
        .post(
            AGENTS,
            json!({"name": "demo", "credentials": [{"name": "BAD-NAME", "value": "x"}]}),
        )
        .await;
    assert_error(&credential, StatusCode::BAD_REQUEST, "invalid credential name");
    let empty = app
        .post(
            AGENTS,
            json!({"name": "demo", "credentials": [{"name": "T", "value": "", "hosts": ["h.test"]}]}),
        )
        .await;
    assert_error(&empty, StatusCode::BAD_REQUEST, "empty value");
}

#[tokio::test]
async fn a_name_that_is_both_env_and_credential_is_400() {
    let app = App::new();
    let create = app
        .post(
            AGENTS,
            json!({"name": "demo", "env": {"TOKEN": "plain"}, "env_vars": {"TOKEN": "secret"},
                "env_var_hosts": {"TOKEN": ["h.test"]}}),
        )
        .await;
    assert_error(
        &create,
        StatusCode::BAD_REQUEST,
        "`TOKEN` is both a plain env variable and a credential",
    );

    app.create_agent(json!({"name": "demo", "env_vars": {"TOKEN": "secret"}, "env_var_hosts": {"TOKEN": ["h.test"]}}))
        .await;
    let patch_env = app.patch(&agent_path("demo"), json!({"env": {"TOKEN": "plain"}})).await;
    assert_error(&patch_env, StatusCode::BAD_REQUEST, "`TOKEN` is both");

    app.create_agent(json!({"name": "plain", "env": {"PLAIN": "x"}})).await;
    let patch_credential = app
        .patch(
            &agent_path("plain"),
            json!({"env_vars": {"PLAIN": "secret"}, "env_var_hosts": {"PLAIN": ["h.test"]}}),
        )
        .await;
    assert_error(&patch_credential, StatusCode::BAD_REQUEST, "`PLAIN` is both");
}

#[tokio::test]
async fn a_credential_bound_to_no_host_is_400_unless_its_name_has_a_preset() {
    let app = App::new();
    let reply = app
        .post(
            AGENTS,
            json!({"name": "demo", "credentials": [{"name": "INTERNAL_KEY", "value": "v"}]}),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "credential `INTERNAL_KEY` is bound to no host",
    );
    assert!(
        reply.body["hint"].as_str().unwrap().contains("INTERNAL_KEY@"),
        "{}",
        reply.raw
    );
    let reply = app
        .post(AGENTS, json!({"name": "demo", "env_vars": {"INTERNAL_KEY": "v"}}))
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "bound to no host");
    let agent = app
        .create_agent(json!({"name": "gh", "credentials": [
            {"name": "GITHUB_TOKEN", "value": "v"},
            {"name": "OPENAI_API_KEY", "value": "w"},
        ]}))
        .await;
    assert_eq!(
        agent["env_var_hosts"],
        json!({
            "GITHUB_TOKEN": ["github.com", "api.github.com", "*.githubusercontent.com"],
            "OPENAI_API_KEY": ["api.openai.com"],
        })
    );
}

#[tokio::test]
async fn a_credential_given_twice_is_400() {
    let app = App::new();
    let reply = app
        .post(
            AGENTS,
            json!({"name": "demo", "credentials": [{"name": "T", "value": "a", "hosts": ["h.test"]}],
                "env_vars": {"T": "b"}, "env_var_hosts": {"T": ["h.test"]}}),
        )
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "credential `T` is given twice");
}

#[tokio::test]
async fn env_var_hosts_naming_a_non_credential_is_400() {
    let app = App::new();
    let create = app
        .post(
            AGENTS,
            json!({"name": "demo", "env": {"PLAIN": "x"}, "env_var_hosts": {"PLAIN": ["api.example.com"]}}),
        )
        .await;
    assert_error(
        &create,
        StatusCode::BAD_REQUEST,
        "env_var_hosts names `PLAIN`, which is not a credential",
    );

    app.create_agent(json!({"name": "demo"})).await;
    let patch = app
        .patch(
            &agent_path("demo"),
            json!({"env_var_hosts": {"GHOST": ["api.example.com"]}}),
        )
        .await;
    assert_error(
        &patch,
        StatusCode::BAD_REQUEST,
        "env_var_hosts names `GHOST`, which is not a credential",
    );
}

#[tokio::test]
async fn a_duplicate_name_on_create_is_409() {
    let app = App::new();
    app.agent("demo", "shell").await;
    let reply = app.post(AGENTS, json!({"name": "demo", "harness_id": "codex"})).await;
    assert_error(&reply, StatusCode::CONFLICT, "an agent named `demo` already exists");
    assert_eq!(app.get(AGENTS).await.body["total"], 1);
}

#[tokio::test]
async fn a_rename_onto_an_existing_name_is_409() {
    let app = App::new();
    app.agent("taken", "shell").await;
    app.agent("demo", "shell").await;
    let reply = app.patch(&agent_path("demo"), json!({"name": "taken"})).await;
    assert_error(&reply, StatusCode::CONFLICT, "an agent named `taken` already exists");
    assert_eq!(
        app.get(&agent_path("demo")).await.status,
        StatusCode::OK,
        "the rename was not applied"
    );
}

#[tokio::test]
async fn a_failed_patch_changes_nothing() {
    let app = App::new();
    app.agent("taken", "shell").await;
    let before = app.create_agent(json!({"name": "demo", "prompt": "keep me"})).await;
    let reply = app
        .patch(&agent_path("demo"), json!({"prompt": "lost", "name": "taken"}))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(app.get(&agent_path("demo")).await.body, before);
}

// ---------------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_unknown_json_field_is_400_naming_the_field() {
    let app = App::new();
    let create = app.post(AGENTS, json!({"name": "demo", "harnes_id": "shell"})).await;
    assert_error(&create, StatusCode::BAD_REQUEST, "unknown field `harnes_id`");

    let nested = app
        .post(
            AGENTS,
            json!({"name": "demo", "credentials": [{"name": "T", "value": "v", "host": [], "hosts": ["h.test"]}]}),
        )
        .await;
    assert_error(&nested, StatusCode::BAD_REQUEST, "unknown field `host`");

    app.agent("demo", "shell").await;
    let patch = app.patch(&agent_path("demo"), json!({"promt": "typo"})).await;
    assert_error(&patch, StatusCode::BAD_REQUEST, "unknown field `promt`");

    let session = app.post(&session_of("demo"), json!({"titel": "x"})).await;
    assert_error(&session, StatusCode::BAD_REQUEST, "unknown field `titel`");
}

#[tokio::test]
async fn a_wrong_json_type_is_400() {
    let app = App::new();
    let reply = app.post(AGENTS, json!({"name": 42})).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid request body");
    let missing = app.post(AGENTS, json!({})).await;
    assert_error(&missing, StatusCode::BAD_REQUEST, "missing field `name`");
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = App::new();
    let create = app
        .send_raw(Method::POST, AGENTS, Some("application/json"), r#"{"name": "demo""#)
        .await;
    assert_error(&create, StatusCode::BAD_REQUEST, "malformed JSON");

    app.agent("demo", "shell").await;
    let patch = app
        .send_raw(
            Method::PATCH,
            &agent_path("demo"),
            Some("application/json"),
            "{prompt: 1}",
        )
        .await;
    assert_error(&patch, StatusCode::BAD_REQUEST, "malformed JSON");

    let session = app
        .send_raw(Method::POST, &session_of("demo"), Some("application/json"), "{")
        .await;
    assert_error(&session, StatusCode::BAD_REQUEST, "malformed JSON");
    assert_eq!(app.get(SESSIONS).await.body, json!([]));
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_415() {
    let app = App::new();
    let create = app.send_raw(Method::POST, AGENTS, None, r#"{"name": "demo"}"#).await;
    assert_error(&create, StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected a JSON body");
    assert!(
        create.body["hint"]
            .as_str()
            .unwrap()
            .contains("Content-Type: application/json")
    );

    let text = app
        .send_raw(Method::POST, AGENTS, Some("text/plain"), r#"{"name": "demo"}"#)
        .await;
    assert_error(&text, StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected a JSON body");

    app.agent("demo", "shell").await;
    let patch = app
        .send_raw(Method::PATCH, &agent_path("demo"), None, r#"{"prompt": "x"}"#)
        .await;
    assert_error(&patch, StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected a JSON body");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = App::new();
    let oversized = |extra: Value| {
        let mut body = extra;
        body["prompt"] = json!("x".repeat(MAX_BODY_BYTES));
        body.to_string()
    };
    let create = app
        .send_raw(
            Method::POST,
            AGENTS,
            Some("application/json"),
            oversized(json!({"name": "demo"})),
        )
        .await;
    assert_error(&create, StatusCode::PAYLOAD_TOO_LARGE, "larger than");

    app.agent("demo", "shell").await;
    let patch = app
        .send_raw(
            Method::PATCH,
            &agent_path("demo"),
            Some("application/json"),
            oversized(json!({})),
        )
        .await;
    assert_error(&patch, StatusCode::PAYLOAD_TOO_LARGE, "larger than");

    let title = json!({"title": "x".repeat(MAX_BODY_BYTES)}).to_string();
    let session = app
        .send_raw(Method::POST, &session_of("demo"), Some("application/json"), title)
        .await;
    assert_error(&session, StatusCode::PAYLOAD_TOO_LARGE, "larger than");
}

#[tokio::test]
async fn a_body_just_under_the_limit_is_read() {
    let app = App::new();
    let envelope = json!({"name": "demo", "prompt": ""}).to_string().len();
    let body = json!({"name": "demo", "prompt": "x".repeat(MAX_BODY_BYTES - envelope)}).to_string();
    assert_eq!(body.len(), MAX_BODY_BYTES);
    let reply = app.send_raw(Method::POST, AGENTS, Some("application/json"), body).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        &reply.raw[..200.min(reply.raw.len())]
    );
}

// ---------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------

const SECRET_VALUE: &str = "sk-live-THIS-VALUE-MUST-NEVER-LEAK-0123456789";
const SECOND_SECRET: &str = "ghp_ANOTHER-VALUE-THAT-MUST-NEVER-LEAK-9876543210";

#[tokio::test]
async fn credential_values_never_appear_in_any_response() {
    let app = App::new();
    let mut bodies = Vec::new();
    let create = app
        .post(
            AGENTS,
            json!({"name": "demo", "harness_id": "shell",
                "credentials": [{"name": "API_KEY", "value": SECRET_VALUE, "hosts": ["api.example.com"]}],
                "env_vars": {"LAP_STYLE": SECRET_VALUE}, "env_var_hosts": {"LAP_STYLE": ["h.test"]}}),
        )
        .await;
    assert_eq!(create.status, StatusCode::OK);
    bodies.push(create.raw);
    bodies.push(app.get(&agent_path("demo")).await.raw);
    bodies.push(app.get(AGENTS).await.raw);
    let patch = app
        .patch(
            &agent_path("demo"),
            json!({"credentials": [{"name": "API_KEY", "value": SECOND_SECRET, "hosts": ["h.test"]}],
                "env_vars": {"MORE": SECOND_SECRET}, "env_var_hosts": {"MORE": ["h.test"]}}),
        )
        .await;
    assert_eq!(patch.status, StatusCode::OK);
    bodies.push(patch.raw);
    bodies.push(app.get(&agent_path("demo")).await.raw);
    let session = app.ready_session("demo").await;
    bodies.push(session.to_string());
    bodies.push(app.get(SESSIONS).await.raw);

    for body in &bodies {
        assert!(!body.contains(SECRET_VALUE), "first value leaked: {body}");
        assert!(!body.contains(SECOND_SECRET), "second value leaked: {body}");
    }
    let shown = app.get(&agent_path("demo")).await.body;
    let names: Vec<_> = shown["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| str_of(&c["name"]))
        .collect();
    assert_eq!(names, ["API_KEY", "LAP_STYLE", "MORE"]);
    for credential in shown["credentials"].as_array().unwrap() {
        let mut keys: Vec<_> = credential.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["fingerprint", "hosts", "inject", "name", "rules"]);
    }
}

#[tokio::test]
async fn fingerprints_are_equal_for_equal_values_and_differ_otherwise() {
    let app = App::new();
    let one = app
        .create_agent(
            json!({"name": "one", "env_vars": {"A": SECRET_VALUE, "B": SECOND_SECRET},
            "env_var_hosts": {"A": ["h.test"], "B": ["h.test"]}}),
        )
        .await;
    let two = app
        .create_agent(
            json!({"name": "two", "credentials": [{"name": "C", "value": SECRET_VALUE, "hosts": ["h.test"]}]}),
        )
        .await;
    let fingerprint = |agent: &Value, i: usize| str_of(&agent["credentials"][i]["fingerprint"]).to_owned();
    assert_eq!(
        fingerprint(&one, 0),
        fingerprint(&two, 0),
        "same value, same fingerprint"
    );
    assert_ne!(
        fingerprint(&one, 0),
        fingerprint(&one, 1),
        "different values, different fingerprints"
    );
    assert_eq!(fingerprint(&one, 0).len(), 8);
    assert!(!SECRET_VALUE.contains(&fingerprint(&one, 0)));

    let rewritten = app
        .patch(
            &agent_path("two"),
            json!({"credentials": [{"name": "C", "value": SECRET_VALUE, "hosts": ["h.test"]}]}),
        )
        .await;
    assert_eq!(
        fingerprint(&rewritten.body, 0),
        fingerprint(&two, 0),
        "stable across writes"
    );
}

#[tokio::test]
async fn credential_values_are_not_stored_in_clear_in_the_database() {
    let app = App::new();
    app.create_agent(
        json!({"name": "demo", "env_vars": {"A": SECRET_VALUE}, "env_var_hosts": {"A": ["h.test"]},
        "credentials": [{"name": "B", "value": SECRET_VALUE, "hosts": ["api.example.com"]}]}),
    )
    .await;
    app.patch(
        &agent_path("demo"),
        json!({"env_vars": {"C": SECOND_SECRET}, "env_var_hosts": {"C": ["h.test"]}}),
    )
    .await;

    // The database and its write-ahead log, where a fresh write lives until a checkpoint.
    let mut stored = std::fs::read(app.data_dir().join("lap.db")).expect("lap.db exists");
    stored.extend(std::fs::read(app.data_dir().join("lap.db-wal")).unwrap_or_default());
    let holds = |needle: &str| stored.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(holds("api.example.com"), "the bytes read are the ones the store wrote");
    assert!(!holds(SECRET_VALUE), "a credential value is stored in clear");
    assert!(!holds(SECOND_SECRET), "a patched credential value is stored in clear");
}

// ---------------------------------------------------------------------------------------------
// Sessions: create
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_session_is_created_by_agent_id_with_an_empty_body() {
    let app = App::new();
    let agent = app.agent("demo", "shell").await;
    let reply = app
        .send_raw(Method::POST, &session_of(str_of(&agent["id"])), None, Body::empty())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
    let session = reply.body;
    assert!(["creating", "ready"].contains(&str_of(&session["status"])), "{session}");
    assert_eq!(session["agent_id"], agent["id"]);
    assert_eq!(session["agent_name"], "demo");
    assert_eq!(session["title_preview"], Value::Null);
    assert!(uuid::Uuid::parse_str(str_of(&session["id"])).is_ok());
}

#[tokio::test]
async fn a_session_is_created_by_agent_name_with_the_lap_cli_title() {
    let app = App::new();
    let agent = app.agent("demo", "shell").await;
    let reply = app.post(&session_of("demo"), json!({"title": "lap-cli"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
    assert!(["creating", "ready"].contains(&str_of(&reply.body["status"])));
    assert_eq!(reply.body["agent_id"], agent["id"]);
    assert_eq!(reply.body["title_preview"], "lap-cli");
}

#[tokio::test]
async fn a_session_is_created_with_an_empty_json_object_without_content_type() {
    let app = App::new();
    app.agent("demo", "shell").await;
    let reply = app.send_raw(Method::POST, &session_of("demo"), None, "{}").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
}

#[tokio::test]
async fn a_session_becomes_ready_in_lap_shape() {
    let app = App::new();
    app.agent("demo", "shell").await;
    let session = app.ready_session("demo").await;
    let id = str_of(&session["id"]);
    assert_eq!(session["tty_url"], format!("/api/v1/managed_agents/sessions/{id}/tty"));
    assert_json_snapshot_redacted!(session, @r#"
    {
      "agent_id": "[uuid]",
      "agent_name": "demo",
      "created_at": "[time]",
      "failure_reason": null,
      "harness_session_id": null,
      "id": "[uuid]",
      "idle_timeout_ms": 86400000,
      "last_seen_at": "[time]",
      "phase": null,
      "phase_detail": null,
      "sandbox_url": "fake://fake-[sandbox]",
      "status": "ready",
      "stopped_at": null,
      "supports_tui": true,
      "title_preview": null,
      "tty_token": "[token]",
      "tty_url": "/api/v1/managed_agents/sessions/[uuid]/tty"
    }
    "#);
}

#[tokio::test]
async fn tty_url_is_only_set_for_tui_harnesses_once_ready() {
    let app = App::new();
    app.agent("tui", "shell").await;
    app.agent("api", "opencode").await;

    let creating = app.start_session("tui").await;
    if creating["status"] == "creating" {
        assert_eq!(creating["tty_url"], Value::Null, "no terminal before ready");
    }
    let ready = app.wait_for_status(&creating, "ready").await;
    assert_eq!(ready["supports_tui"], true);
    assert_eq!(
        ready["tty_url"],
        format!("/api/v1/managed_agents/sessions/{}/tty", str_of(&ready["id"]))
    );

    let api_session = app.ready_session("api").await;
    assert_eq!(api_session["supports_tui"], false);
    assert_eq!(api_session["tty_url"], Value::Null);

    app.delete(&format!("{SESSIONS}/{}", str_of(&ready["id"]))).await;
    let dead = app.get(&format!("{SESSIONS}/{}", str_of(&ready["id"]))).await.body;
    assert_eq!(dead["tty_url"], Value::Null, "no terminal once dead");
}

#[tokio::test]
async fn tty_tokens_differ_between_sessions() {
    let app = App::new();
    app.agent("demo", "shell").await;
    let a = app.start_session("demo").await;
    let b = app.start_session("demo").await;
    let token = |s: &Value| str_of(&s["tty_token"]).to_owned();
    assert_eq!(token(&a).len(), 64);
    assert_ne!(token(&a), token(&b));
    let a_ready = app.wait_for_status(&a, "ready").await;
    assert_eq!(token(&a_ready), token(&a), "the token is stable for a session");
}

#[tokio::test]
async fn session_create_with_an_unavailable_backend_is_503_and_writes_nothing() {
    let app = App::with_sandbox(Arc::new(Unavailable {
        backend: "local",
        reason: "this build cannot run local sandboxes yet",
    }));
    app.agent("demo", "shell").await;
    let reply = app.post(&session_of("demo"), json!({"title": "lap-cli"})).await;
    assert_error(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "`local` sandbox backend is not available",
    );
    assert!(str_of(&reply.body["error"]).contains("this build cannot run local sandboxes yet"));
    assert!(
        reply.body["hint"].as_str().is_some_and(|h| !h.is_empty()),
        "a hint: {}",
        reply.raw
    );

    assert_eq!(app.get(SESSIONS).await.body, json!([]));
    let list = app.get(AGENTS).await.body;
    assert_eq!(list["data"][0]["session_count"], 0);
}

// ---------------------------------------------------------------------------------------------
// Sessions: list, show, delete
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_session_list_is_a_bare_array_newest_first() {
    let app = App::new();
    app.agent("demo", "shell").await;
    let first = app.start_session("demo").await;
    let second = app.start_session("demo").await;
    let third = app.start_session("demo").await;
    let reply = app.get(SESSIONS).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.is_array(), "a bare array: {}", reply.raw);
    assert_eq!(
        ids(&reply.body),
        [str_of(&third["id"]), str_of(&second["id"]), str_of(&first["id"])]
    );
}

#[tokio::test]
async fn the_session_list_filters_by_agent_id_or_name() {
    let app = App::new();
    let demo = app.agent("demo", "shell").await;
    app.agent("other", "shell").await;
    let mine = app.start_session("demo").await;
    app.start_session("other").await;

    for key in ["demo", str_of(&demo["id"])] {
        let reply = app.get(&format!("{SESSIONS}?agent_id={key}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
        assert_eq!(ids(&reply.body), [str_of(&mine["id"])], "agent_id={key}");
    }
    assert_eq!(app.get(SESSIONS).await.body.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_session_list_for_an_unknown_agent_is_404() {
    let app = App::new();
    let reply = app.get(&format!("{SESSIONS}?agent_id=nobody")).await;
    assert_error(&reply, StatusCode::NOT_FOUND, "agent `nobody` not found");
}

#[tokio::test]
async fn the_session_list_honours_limit() {
    let app = App::new();
    app.agent("demo", "shell").await;
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(app.start_session("demo").await);
    }
    let two = app.get(&format!("{SESSIONS}?limit=2")).await.body;
    assert_eq!(ids(&two), [str_of(&created[2]["id"]), str_of(&created[1]["id"])]);
    let clamped = app.get(&format!("{SESSIONS}?limit=0")).await.body;
    assert_eq!(ids(&clamped), [str_of(&created[2]["id"])]);
    assert_error(
        &app.get(&format!("{SESSIONS}?limit=x")).await,
        StatusCode::BAD_REQUEST,
        "limit",
    );
}

#[tokio::test]
async fn a_session_is_shown_by_id() {
    let app = App::new();
    app.agent("demo", "shell").await;
    let created = app.start_session("demo").await;
    let reply = app.get(&format!("{SESSIONS}/{}", str_of(&created["id"]))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["id"], created["id"]);
    assert_eq!(reply.body["tty_token"], created["tty_token"]);
    assert_eq!(reply.body["created_at"], created["created_at"]);
}

#[tokio::test]
async fn an_unknown_or_malformed_session_id_is_404() {
    let app = App::new();
    for id in ["00000000-0000-4000-8000-000000000000", "not-a-uuid", "demo"] {
        let path = format!("{SESSIONS}/{id}");
        assert_error(
            &app.get(&path).await,
            StatusCode::NOT_FOUND,
            &format!("session `{id}` not found"),
        );
        assert_error(
            &app.delete(&path).await,
            StatusCode::NOT_FOUND,
            &format!("session `{id}` not found"),
        );
    }
}

#[tokio::test]
async fn deleting_a_session_reports_deleted_then_dead() {
    let app = App::new();
    app.agent("demo", "shell").await;
    let session = app.ready_session("demo").await;
    let id = str_of(&session["id"]);
    assert_eq!(app.sandboxes().await, 1);

    let first = app.delete(&format!("{SESSIONS}/{id}")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.raw);
    assert_eq!(first.body, json!({"id": id, "status": "deleted"}));
    assert_eq!(app.sandboxes().await, 0, "the sandbox is stopped");

    let again = app.delete(&format!("{SESSIONS}/{id}")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, json!({"id": id, "status": "dead"}));

    let shown = app.get(&format!("{SESSIONS}/{id}")).await.body;
    assert_eq!(shown["status"], "dead");
    assert!(shown["stopped_at"].is_string());
}

#[tokio::test]
async fn deleting_a_session_still_being_created_leaks_no_sandbox() {
    let app = App::new();
    app.agent("demo", "shell").await;
    let session = app.start_session("demo").await;
    let id = str_of(&session["id"]);
    let reply = app.delete(&format!("{SESSIONS}/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    app.settle().await;
    assert_eq!(app.sandboxes().await, 0);
    assert_eq!(app.get(&format!("{SESSIONS}/{id}")).await.body["status"], "dead");
}

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_unknown_path_is_404_in_the_envelope() {
    let app = App::new();
    // `/` is the web UI's page (tests/it/ui.rs).
    for path in [
        "/nope",
        "/api/v1/nope",
        "/api/v1/managed_agents/agents/demo/nope",
        "/api/v2/managed_agents/agents",
    ] {
        let reply = app.get(path).await;
        assert_error(&reply, StatusCode::NOT_FOUND, &format!("no route for GET {path}"));
        assert!(reply.body["hint"].is_string());
    }
}

#[tokio::test]
async fn a_wrong_method_is_405_in_the_envelope() {
    let app = App::new();
    app.agent("demo", "shell").await;
    let cases = [
        (Method::PUT, AGENTS.to_owned()),
        (Method::DELETE, AGENTS.to_owned()),
        (Method::POST, agent_path("demo")),
        (Method::GET, session_of("demo")),
        (Method::POST, SESSIONS.to_owned()),
        (
            Method::PATCH,
            format!("{SESSIONS}/00000000-0000-4000-8000-000000000000"),
        ),
        (Method::POST, "/api/v1/health".to_owned()),
        (Method::DELETE, "/api/v1/openapi.json".to_owned()),
    ];
    for (method, path) in cases {
        let reply = app.send(App::request(method.clone(), &path, None)).await;
        assert_error(
            &reply,
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} is not allowed on {path}"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAPI
// ---------------------------------------------------------------------------------------------

/// Every (method, path) pair the OpenAPI document lists, sorted by path then method.
fn documented_operations() -> Vec<(Method, String)> {
    let doc = serde_json::to_value(api::openapi()).expect("document serialises");
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (key, _) in item.as_object().expect("path item") {
            if ["get", "put", "post", "delete", "patch", "head", "options", "trace"].contains(&key.as_str()) {
                let method = key.to_ascii_uppercase().parse::<Method>().expect("an HTTP method");
                out.push((method, path.clone()));
            }
        }
    }
    out.sort_by(|a, b| (&a.1, a.0.as_str()).cmp(&(&b.1, b.0.as_str())));
    out
}

#[tokio::test]
async fn admin_stats_need_the_master_key_and_show_the_pool_and_sessions() {
    let app = App::new();
    let reply = app.get_with_authorization("/api/v1/admin/stats", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.raw);
    app.agent("demo", "shell").await;
    app.ready_session("demo").await;
    let reply = app.get("/api/v1/admin/stats").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
    let pool = &reply.body["warm_pool"];
    // This application runs without a pool: every session was a miss-free cold start.
    assert_eq!(pool["configured_size"], 0, "{}", reply.raw);
    assert_eq!((pool["hits"].as_u64(), pool["misses"].as_u64()), (Some(0), Some(0)));
    assert_eq!(pool["groups"], json!([]));
    assert_eq!(reply.body["sessions"]["ready"], 1, "{}", reply.raw);
}

#[test]
fn openapi_lists_exactly_the_routes_of_the_api() {
    let listed: Vec<String> = documented_operations()
        .into_iter()
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    assert_eq!(
        listed,
        [
            "GET /api/v1/admin/audit",
            "GET /api/v1/admin/keys",
            "POST /api/v1/admin/keys",
            "DELETE /api/v1/admin/keys/{id}",
            "GET /api/v1/admin/stats",
            "GET /api/v1/admin/users",
            "POST /api/v1/admin/users",
            "PATCH /api/v1/admin/users/{name}",
            "PUT /api/v1/admin/users/{name}/quota",
            "GET /api/v1/health",
            "GET /api/v1/health/k8s",
            "GET /api/v1/managed_agents/agents",
            "POST /api/v1/managed_agents/agents",
            "DELETE /api/v1/managed_agents/agents/{id}",
            "GET /api/v1/managed_agents/agents/{id}",
            "PATCH /api/v1/managed_agents/agents/{id}",
            "POST /api/v1/managed_agents/agents/{id}/session",
            "GET /api/v1/managed_agents/sessions",
            "DELETE /api/v1/managed_agents/sessions/{id}",
            "GET /api/v1/managed_agents/sessions/{id}",
            "POST /api/v1/managed_agents/sessions/{id}/abort",
            "GET /api/v1/managed_agents/sessions/{id}/events",
            "POST /api/v1/managed_agents/sessions/{id}/exec",
            "DELETE /api/v1/managed_agents/sessions/{id}/files",
            "GET /api/v1/managed_agents/sessions/{id}/files",
            "GET /api/v1/managed_agents/sessions/{id}/files/content",
            "PUT /api/v1/managed_agents/sessions/{id}/files/content",
            "GET /api/v1/managed_agents/sessions/{id}/files/stat",
            "POST /api/v1/managed_agents/sessions/{id}/fork",
            "POST /api/v1/managed_agents/sessions/{id}/hibernate",
            "GET /api/v1/managed_agents/sessions/{id}/interceptions",
            "POST /api/v1/managed_agents/sessions/{id}/message",
            "POST /api/v1/managed_agents/sessions/{id}/message_stream",
            "GET /api/v1/managed_agents/sessions/{id}/messages",
            "POST /api/v1/managed_agents/sessions/{id}/opencode/session/{hsid}/abort",
            "GET /api/v1/managed_agents/sessions/{id}/opencode/session/{hsid}/message",
            "POST /api/v1/managed_agents/sessions/{id}/opencode/session/{hsid}/message",
            "POST /api/v1/managed_agents/sessions/{id}/pause",
            "GET /api/v1/managed_agents/sessions/{id}/portforward/{port}",
            "GET /api/v1/managed_agents/sessions/{id}/ports",
            "GET /api/v1/managed_agents/sessions/{id}/ports/{port}/{path}",
            "DELETE /api/v1/managed_agents/sessions/{id}/preview_urls",
            "POST /api/v1/managed_agents/sessions/{id}/preview_urls",
            "POST /api/v1/managed_agents/sessions/{id}/restart",
            "POST /api/v1/managed_agents/sessions/{id}/resume",
            "POST /api/v1/managed_agents/sessions/{id}/snapshots",
            "GET /api/v1/managed_agents/sessions/{id}/tty",
            "GET /api/v1/managed_agents/sessions/{id}/vault-keys",
            "GET /api/v1/managed_agents/sessions/{id}/workspace",
            "GET /api/v1/managed_agents/snapshots",
            "DELETE /api/v1/managed_agents/snapshots/{name}",
            "POST /api/v1/managed_agents/snapshots/{name}/session",
            "GET /api/v1/openapi.json",
            "GET /api/v1/vault/ca.pem",
            "GET /metrics",
        ]
    );
}

#[tokio::test]
async fn every_documented_operation_reaches_a_handler() {
    for (method, path) in documented_operations() {
        // A fresh application per operation, so a DELETE cannot hide a later route.
        let app = App::new();
        let agent = app.agent("demo", "shell").await;
        let session = app.ready_session("demo").await;
        let id = if path.starts_with(SESSIONS) {
            str_of(&session["id"])
        } else {
            str_of(&agent["id"])
        };
        let uri = path.replace("{id}", id).replace("{hsid}", "ses_any");
        if uri.ends_with("/events") {
            // An event stream does not end: its head is all there is to check.
            let response = app
                .router
                .clone()
                .oneshot(App::request(method.clone(), &uri, None))
                .await
                .expect("router is infallible");
            assert_eq!(response.status(), StatusCode::OK, "{method} {uri}");
            app.settle().await;
            continue;
        }
        let body = matches!(method, Method::POST | Method::PATCH).then(|| json!({}));
        let reply = app.send(App::request(method.clone(), &uri, body.as_ref())).await;
        assert_ne!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}: {}",
            reply.raw
        );
        let unrouted = reply.status == StatusCode::NOT_FOUND
            && reply.body["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("no route for"));
        assert!(!unrouted, "{method} {uri} has no route: {}", reply.raw);
        if uri.ends_with("/health/k8s") {
            // The fake backend has no Kubernetes API server to reach.
            assert_eq!(
                reply.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{method} {uri}: {}",
                reply.raw
            );
            continue;
        }
        if ["/pause", "/hibernate", "/fork", "/workspace", "/snapshots"]
            .iter()
            .any(|p| path.contains(p))
        {
            // The fake backend keeps no workspaces and cannot freeze: refused with a hint.
            assert!(
                reply.status.is_success() || reply.body["hint"].is_string(),
                "{method} {uri}: {} {}",
                reply.status,
                reply.raw
            );
            app.settle().await;
            continue;
        }
        if path.starts_with("/api/v1/admin/users/") || path.starts_with("/api/v1/admin/keys/") {
            // No user or key of that name or id (or an empty patch): a 4xx that says what to do.
            assert!(
                [
                    StatusCode::NOT_FOUND,
                    StatusCode::BAD_REQUEST,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE
                ]
                .contains(&reply.status),
                "{method} {uri}: {}",
                reply.raw
            );
            assert!(reply.body["hint"].is_string(), "{method} {uri}: {}", reply.raw);
            app.settle().await;
            continue;
        }
        if uri.ends_with("/tty") {
            // The terminal takes the session's own token, never the master key.
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {uri}: {}", reply.raw);
            app.settle().await;
            continue;
        }
        assert!(
            reply.status.is_success() || reply.status == StatusCode::BAD_REQUEST,
            "{method} {uri}: {} {}",
            reply.status,
            reply.raw
        );
        app.settle().await;
    }
}

#[test]
fn openapi_operation_ids_are_unique() {
    let doc = serde_json::to_value(api::openapi()).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no id"));
            assert!(
                seen.insert(id.to_owned()),
                "operationId `{id}` is used twice ({method} {path})"
            );
        }
    }
}

#[test]
fn openapi_documents_401_on_every_master_key_route_and_the_body_errors_on_every_json_body() {
    let doc = serde_json::to_value(api::openapi()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let keyed = operation["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("master_key").is_some()));
            if keyed {
                assert!(responses.contains_key("401"), "{method} {path} lacks 401");
            }
            if operation["requestBody"]["content"].get("application/json").is_some() {
                for status in ["400", "413", "415"] {
                    assert!(responses.contains_key(status), "{method} {path} lacks {status}");
                }
            }
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().unwrap();
                if parameter["in"] == "path" {
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: `{name}` is not in the path"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_400() {
    let app = App::new();
    for body in ["[\"demo\", \"shell\"]", "\"demo\"", "3", "null"] {
        let reply = app.send_raw(Method::POST, AGENTS, Some("application/json"), body).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "expected a JSON object");
    }
    let limits_as_a_list = app.post(AGENTS, json!({"name": "demo", "limits": [null, null]})).await;
    assert_error(&limits_as_a_list, StatusCode::BAD_REQUEST, "invalid request body");
}

#[tokio::test]
async fn a_whole_number_written_with_a_fraction_is_an_integer() {
    let app = App::new();
    let agent = app
        .create_agent(json!({"name": "demo", "harness_id": "shell", "limits": {"memory_mb": 512.0, "cpus": 2.0}}))
        .await;
    assert_eq!(agent["limits"]["memory_mb"], 512);
    let half = app
        .post(AGENTS, json!({"name": "half", "limits": {"memory_mb": 512.5}}))
        .await;
    assert_error(&half, StatusCode::BAD_REQUEST, "limits");
}

#[test]
fn openapi_declares_the_master_key_bearer_scheme() {
    let doc = serde_json::to_value(api::openapi()).unwrap();
    let scheme = &doc["components"]["securitySchemes"]["master_key"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    let list = &doc["paths"]["/api/v1/managed_agents/agents"]["get"];
    assert_eq!(list["security"], json!([{"master_key": []}]));
    let params: Vec<_> = list["parameters"]
        .as_array()
        .expect("list parameters")
        .iter()
        .map(|p| str_of(&p["name"]).to_owned())
        .collect();
    assert_eq!(params, ["limit", "offset", "search"]);
}

#[tokio::test]
async fn metrics_need_the_master_key_when_the_peer_is_not_known_to_be_local() {
    let app = App::new();
    app.agent("demo", "shell").await;
    app.ready_session("demo").await;
    app.settle().await; // bring-up records its duration after the session is ready
    let anonymous = app.get_with_authorization("/metrics", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{}", anonymous.raw);
    let reply = app
        .get_with_authorization("/metrics", Some(&format!("Bearer {MASTER_KEY}")))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
    assert!(reply.raw.contains("lap_sessions{status=\"ready\"} 1"), "{}", reply.raw);
    assert!(reply.raw.contains("lap_bring_up_seconds_count 1"), "{}", reply.raw);
}

// ---------------------------------------------------------------------------------------------
// Terminal WebSocket auth
// ---------------------------------------------------------------------------------------------

/// The terminal path of a session.
fn tty_of(session: &Value) -> String {
    format!("{SESSIONS}/{}/tty", str_of(&session["id"]))
}

#[tokio::test]
async fn the_terminal_refuses_a_missing_or_wrong_token_and_the_master_key() {
    let app = App::new();
    app.agent("demo", "shell").await;
    let session = app.start_session("demo").await;
    let session = app.wait_for_status(&session, "ready").await;
    let path = tty_of(&session);
    for authorization in [None, Some("Bearer wrong"), Some(&*format!("Bearer {MASTER_KEY}"))] {
        let reply = app.get_with_authorization(&path, authorization).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let reply = app
        .get_with_authorization(&format!("{path}?token={MASTER_KEY}"), None)
        .await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    // The right token gets past authentication, as a header or in the query; a plain GET is not an
    // upgrade.
    let token = str_of(&session["tty_token"]);
    let reply = app
        .get_with_authorization(&path, Some(&format!("Bearer {token}")))
        .await;
    assert_eq!(reply.status, StatusCode::UPGRADE_REQUIRED, "{}", reply.raw);
    let reply = app.get_with_authorization(&format!("{path}?token={token}"), None).await;
    assert_eq!(reply.status, StatusCode::UPGRADE_REQUIRED, "{}", reply.raw);
}

#[tokio::test]
async fn one_sessions_token_never_opens_another_sessions_terminal() {
    let app = App::new();
    app.agent("demo", "shell").await;
    let first = app.start_session("demo").await;
    let first = app.wait_for_status(&first, "ready").await;
    let second = app.start_session("demo").await;
    let second = app.wait_for_status(&second, "ready").await;
    assert_ne!(first["tty_token"], second["tty_token"]);
    let reply = app
        .get_with_authorization(
            &tty_of(&second),
            Some(&format!("Bearer {}", str_of(&first["tty_token"]))),
        )
        .await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    let reply = app
        .get_with_authorization(
            &format!("{}?token={}", tty_of(&second), str_of(&first["tty_token"])),
            None,
        )
        .await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn tty_url_is_absolute_on_the_host_the_client_used() {
    let app = App::new();
    app.agent("demo", "shell").await;
    let session = app.ready_session("demo").await;
    let id = str_of(&session["id"]);
    let show = |forwarded: Option<&'static str>| {
        let mut request = App::request(Method::GET, &format!("{SESSIONS}/{id}"), None);
        request
            .headers_mut()
            .insert("host", "lap.example.com:3000".parse().unwrap());
        if let Some(proto) = forwarded {
            request
                .headers_mut()
                .insert("x-forwarded-proto", proto.parse().unwrap());
        }
        app.send(request)
    };
    let plain = show(None).await;
    assert_eq!(
        plain.body["tty_url"],
        format!("ws://lap.example.com:3000/api/v1/managed_agents/sessions/{id}/tty")
    );
    let proxied = show(Some("https")).await;
    assert_eq!(
        proxied.body["tty_url"],
        format!("wss://lap.example.com:3000/api/v1/managed_agents/sessions/{id}/tty")
    );
}

/// `lap serve`'s own server in-process ([`lap::cli::serve::serve`], the composition root that
/// `lap serve` runs): on a loopback listener of port 0 it answers a real HTTP request with the
/// master key, and once its shutdown token is cancelled it stops and returns — open requests
/// finished and background work drained within its grace, so well within the deadline here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_on_its_listener_and_returns_once_shut_down() {
    use clap::Parser;
    use lap::cli::serve::{self, Settings};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: serve::Args,
    }
    /// Far beyond the server's own grace (10 s for connections, 10 s for background tasks).
    const STOP_DEADLINE: Duration = Duration::from_secs(60);

    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("UTF-8 temp dir");
    let args = Cli::try_parse_from([
        "lap",
        "--backend",
        "fake",
        "--data-dir",
        data,
        "--preview-listen",
        "127.0.0.1:0",
    ])
    .expect("flags parse")
    .serve;
    let env = lap::settings::Env {
        master_key: Some(MASTER_KEY.to_owned()),
        ..Default::default()
    };
    let settings = Settings {
        // This server is no user's: it writes no client config.
        client_config: None,
        ..Settings::resolve(args, &env).expect("settings resolve")
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let out = lap::output::Printer::new(false, true, true);
            serve::serve(settings, listener, shutdown, &out).await
        }
    });

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    let agents = client
        .get(format!("http://{addr}{AGENTS}"))
        .header(AUTHORIZATION.as_str(), format!("Bearer {MASTER_KEY}"))
        .send()
        .await
        .expect("lap serve answers on its listener");
    assert_eq!(agents.status().as_u16(), 200);
    let body: Value = agents.json().await.expect("a JSON list of agents");
    assert_eq!(body["data"], json!([]), "{body}");
    let refused = client
        .get(format!("http://{addr}{AGENTS}"))
        .send()
        .await
        .expect("lap serve answers without a key too");
    assert_eq!(refused.status().as_u16(), 401);
    drop(client);

    shutdown.cancel();
    let stopped = tokio::time::timeout(STOP_DEADLINE, server)
        .await
        .unwrap_or_else(|_| panic!("lap serve did not return within {STOP_DEADLINE:?} of its shutdown"));
    stopped
        .expect("the server task did not panic")
        .expect("lap serve stopped cleanly");
}
