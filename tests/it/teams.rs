//! Users and API keys with roles (issue 19, part 1): every route's rule, each role against every
//! route, keys shown once and stored as digests, refused at once when revoked, expired or their
//! user disabled, and the CLI a team member uses.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};

use lap::api::roles::{Access, RULES};
use lap::wire::teams::Role;

use crate::api::{App, Reply};
use crate::support::{Home, TestServer, lap, wait_until_async};

const USERS: &str = "/api/v1/admin/users";
const KEYS: &str = "/api/v1/admin/keys";
/// How long a key made to expire in a second may still be let in.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(10);
/// How long a local session may take to be ready, and its terminal to open.
const SESSION_DEADLINE: Duration = Duration::from_secs(60);
/// How long what a revoked key opened may stay open (it is cut at once; this is the test's patience).
const CUT_DEADLINE: Duration = Duration::from_secs(10);

/// A request with `key` as the bearer, and a JSON body when one is given.
fn with_key(method: Method, path: &str, key: &str, body: Option<&Value>) -> Request<Body> {
    App::request_as(key, method, path, body)
}

/// Makes a user `name` (if new) and a key of `role` for them; returns the key.
async fn key_for(app: &App, name: &str, role: &str) -> String {
    let made = app.post(USERS, json!({"name": name})).await;
    assert!(
        made.status == StatusCode::CREATED || made.status == StatusCode::CONFLICT,
        "{}",
        made.raw
    );
    let created = app.post(KEYS, json!({"user": name, "role": role})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.raw);
    created.body["key"].as_str().expect("the key, once").to_owned()
}

/// `path` with its parameters filled: ids that exist nowhere, a port, a file path.
fn concrete(path: &str) -> String {
    path.replace("{id}", "3f0c6a52-7d4e-4a8e-9d43-5b1f0e2a9c11")
        .replace("{name}", "nobody")
        .replace("{hsid}", "ses_none")
        .replace("{port}", "8080")
        .replace("{path}", "index.html")
}

fn role_rank(role: Role) -> u8 {
    match role {
        Role::Viewer => 0,
        Role::Member => 1,
        Role::Admin => 2,
    }
}

#[test]
fn every_documented_route_has_an_access_rule_and_every_rule_a_route() {
    let doc = serde_json::to_value(lap::api::openapi()).expect("the document serialises");
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    let missing: Vec<_> = documented
        .iter()
        .filter(|(method, path)| !RULES.iter().any(|(m, p, _)| p == path && (*m == "*" || m == method)))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without a row in src/api/roles.rs (each needs one: who may call it): {missing:?}"
    );
    let stale: Vec<_> = RULES
        .iter()
        .filter(|(m, p, _)| {
            !documented
                .iter()
                .any(|(method, path)| path == p && (*m == "*" || m == method))
        })
        .collect();
    assert!(stale.is_empty(), "rows of src/api/roles.rs for no route: {stale:?}");
}

/// Each role against every route behind a role: below the route's role a 403 that names both, at
/// or above it the route's own answer (here a 4xx about the made-up ids, never 401 or 403).
#[tokio::test]
async fn each_role_reaches_exactly_the_routes_its_rank_allows() {
    let app = App::new();
    let keys = [
        (Role::Viewer, key_for(&app, "vera", "viewer").await),
        (Role::Member, key_for(&app, "max", "member").await),
        (Role::Admin, key_for(&app, "ada", "admin").await),
    ];
    let mut checked = 0;
    for (method, path, access) in RULES {
        let Access::Role(needed) = access else { continue };
        let method = if *method == "*" { "POST" } else { method };
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        for (role, key) in &keys {
            let reply = app
                .send(with_key(method.clone(), &concrete(path), key, Some(&json!({}))))
                .await;
            if role_rank(*role) >= role_rank(*needed) {
                assert!(
                    reply.status != StatusCode::FORBIDDEN && reply.status != StatusCode::UNAUTHORIZED,
                    "{role} was refused {method} {path}: {} {}",
                    reply.status,
                    reply.raw
                );
            } else {
                assert_eq!(
                    reply.status,
                    StatusCode::FORBIDDEN,
                    "{role} reached {method} {path}: {}",
                    reply.raw
                );
                let error = reply.body["error"].as_str().unwrap_or_default();
                assert!(
                    error.contains(&format!("role `{role}`")) && error.contains(&format!("needs `{needed}`")),
                    "{error}"
                );
                assert!(
                    reply.body["hint"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("lap keys create")
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} role/route pairs were tried");
}

/// A member drives a session from start to delete; a viewer sees it and cannot delete it.
#[tokio::test]
async fn a_member_drives_a_session_and_a_viewer_only_reads_it() {
    let app = App::new();
    app.agent("helper", "shell").await;
    let member = key_for(&app, "max", "member").await;
    let viewer = key_for(&app, "vera", "viewer").await;
    let started = app
        .send(with_key(
            Method::POST,
            "/api/v1/managed_agents/agents/helper/session",
            &member,
            None,
        ))
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.raw);
    let session = format!(
        "/api/v1/managed_agents/sessions/{}",
        started.body["id"].as_str().unwrap()
    );
    let seen = app.send(with_key(Method::GET, &session, &viewer, None)).await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.raw);
    let refused = app.send(with_key(Method::DELETE, &session, &viewer, None)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.raw);
    let deleted = app.send(with_key(Method::DELETE, &session, &member, None)).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.raw);
    let agent = app
        .send(with_key(
            Method::DELETE,
            "/api/v1/managed_agents/agents/helper",
            &member,
            None,
        ))
        .await;
    assert_eq!(
        agent.status,
        StatusCode::FORBIDDEN,
        "a member deleted an agent: {}",
        agent.raw
    );
}

#[tokio::test]
async fn a_key_is_shown_once_and_only_its_digest_is_stored() {
    let app = App::new();
    let key = key_for(&app, "ada", "member").await;
    assert!(
        key.starts_with("lap_key_") && key.len() == "lap_key_".len() + 43,
        "{key}"
    );
    let listed = app.get(KEYS).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(!listed.raw.contains(&key), "the listing holds the key: {}", listed.raw);
    assert_eq!(listed.body[0]["prefix"], key[.."lap_key_".len() + 4]);
    assert_eq!(listed.body[0]["user"], "ada");
    assert_eq!(listed.body[0]["role"], "member");
    for entry in std::fs::read_dir(app.data_dir()).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            let bytes = std::fs::read(&path).expect("read");
            let secret = &key.as_bytes()["lap_key_".len() + 4..];
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "{} holds the key",
                path.display()
            );
        }
    }
}

fn hint(reply: &Reply) -> &str {
    reply.body["hint"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_revoked_key_or_a_disabled_users_key_is_refused_from_the_next_request() {
    let app = App::new();
    let sessions = "/api/v1/managed_agents/sessions";
    let key = key_for(&app, "ada", "viewer").await;
    assert_eq!(
        app.send(with_key(Method::GET, sessions, &key, None)).await.status,
        StatusCode::OK
    );

    let disabled = app
        .send(App::request_json(
            Method::PATCH,
            &format!("{USERS}/ada"),
            &json!({"disabled": true}),
        ))
        .await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.raw);
    let refused = app.send(with_key(Method::GET, sessions, &key, None)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(hint(&refused).contains("the user `ada` is disabled"), "{}", refused.raw);
    let made = app.post(KEYS, json!({"user": "ada", "role": "viewer"})).await;
    assert_eq!(
        made.status,
        StatusCode::CONFLICT,
        "a disabled user got a key: {}",
        made.raw
    );
    app.send(App::request_json(
        Method::PATCH,
        &format!("{USERS}/ada"),
        &json!({"disabled": false}),
    ))
    .await;
    assert_eq!(
        app.send(with_key(Method::GET, sessions, &key, None)).await.status,
        StatusCode::OK
    );

    let id = app.get(KEYS).await.body[0]["id"].as_str().expect("key id").to_owned();
    let revoked = app
        .send(App::request_json(Method::DELETE, &format!("{KEYS}/{id}"), &json!(null)))
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.raw);
    assert!(revoked.body["revoked_at"].is_string(), "{}", revoked.raw);
    let refused = app.send(with_key(Method::GET, sessions, &key, None)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(hint(&refused).contains("was revoked at"), "{}", refused.raw);
}

#[tokio::test]
async fn an_expired_key_is_refused() {
    let app = App::new();
    app.post(USERS, json!({"name": "ada"})).await;
    let created = app
        .post(KEYS, json!({"user": "ada", "role": "viewer", "expires_in_seconds": 1}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.raw);
    assert!(created.body["expires_at"].is_string(), "{}", created.raw);
    let key = created.body["key"].as_str().unwrap().to_owned();
    let refused = wait_until_async("the key to expire", EXPIRY_DEADLINE, || async {
        let reply = app
            .send(with_key(Method::GET, "/api/v1/managed_agents/sessions", &key, None))
            .await;
        if reply.status == StatusCode::UNAUTHORIZED {
            Ok(reply)
        } else {
            Err(reply.raw)
        }
    })
    .await;
    assert!(hint(&refused).contains("expired at"), "{}", refused.raw);
}

#[tokio::test]
async fn bad_users_and_keys_get_clear_errors_and_change_nothing() {
    let app = App::new();
    let cases = [
        (
            USERS,
            json!({"name": ""}),
            StatusCode::BAD_REQUEST,
            "1 to 64 characters",
        ),
        (USERS, json!({"name": "a b"}), StatusCode::BAD_REQUEST, "not ' '"),
        (
            USERS,
            json!({"name": "ada", "admin": true}),
            StatusCode::BAD_REQUEST,
            "admin",
        ),
        (
            KEYS,
            json!({"user": "nobody", "role": "viewer"}),
            StatusCode::NOT_FOUND,
            "no user named `nobody`",
        ),
        (
            KEYS,
            json!({"user": "ada", "role": "owner"}),
            StatusCode::BAD_REQUEST,
            "owner",
        ),
        (
            KEYS,
            json!({"user": "ada", "role": "viewer", "expires_in_seconds": 0}),
            StatusCode::BAD_REQUEST,
            "1 s to 10 years",
        ),
    ];
    for (path, body, status, says) in cases {
        let reply = app.post(path, body.clone()).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.raw);
        assert!(reply.raw.contains(says), "{body}: {}", reply.raw);
    }
    assert_eq!(
        app.post(USERS, json!({"name": "ada"})).await.status,
        StatusCode::CREATED
    );
    let again = app.post(USERS, json!({"name": "ada"})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(hint(&again).contains("lap users list"), "{}", again.raw);
    let unknown = app
        .send(App::request_json(
            Method::DELETE,
            &format!("{KEYS}/3f0c6a52-7d4e-4a8e-9d43-5b1f0e2a9c11"),
            &json!(null),
        ))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.raw);
    let malformed = app
        .send(App::request_json(Method::DELETE, &format!("{KEYS}/nope"), &json!(null)))
        .await;
    assert_eq!(malformed.status, StatusCode::NOT_FOUND, "{}", malformed.raw);
    let users = app.get(USERS).await;
    assert_eq!(users.body.as_array().map(Vec::len), Some(1), "{}", users.raw);
    assert_eq!(app.get(KEYS).await.body, json!([]));
    let unknown_key = app
        .send(with_key(
            Method::GET,
            USERS,
            "lap_key_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            None,
        ))
        .await;
    assert_eq!(unknown_key.status, StatusCode::UNAUTHORIZED);
    assert!(hint(&unknown_key).contains("unknown"), "{}", unknown_key.raw);
}

/// What a team does from the command line: the admin makes a user and a viewer key; the user logs
/// in with it, lists sessions, and is told what their role cannot do.
#[test]
fn the_cli_makes_users_and_keys_and_a_viewer_logs_in_with_one() {
    let admin = Home::new();
    let server = TestServer::start(&admin);
    lap(&admin, ["users", "create", "vera"]).success();
    let listed = lap(&admin, ["users", "list", "--json"]).success().json();
    assert_eq!(listed[0]["name"], "vera");
    let created = lap(
        &admin,
        [
            "keys",
            "create",
            "--user",
            "vera",
            "--role",
            "viewer",
            "--expires",
            "30d",
        ],
    )
    .success();
    let key = created.out().trim().to_owned();
    assert!(key.starts_with("lap_key_"), "stdout is the key alone: {key:?}");
    let keys = lap(&admin, ["keys", "list", "--json"]).success().json();
    assert_eq!(keys[0]["role"], "viewer");
    assert!(keys[0]["expires_at"].is_string());

    let vera = Home::new();
    vera.lap()
        .stdin(format!("{key}\n"))
        .run(["login", "--url", &server.url, "--key-stdin"])
        .success();
    lap(&vera, ["sessions", "list"]).success();
    let refused = lap(&vera, ["agents", "create", "helper", "--harness", "shell"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("has the role `viewer`") && refused.stderr.contains("needs `member`"),
        "{refused}"
    );
    let refused = lap(&vera, ["users", "list"]);
    assert!(
        refused.code != 0 && refused.stderr.contains("needs `admin`"),
        "{refused}"
    );

    let id = keys[0]["id"].as_str().unwrap();
    lap(&admin, ["keys", "revoke", id]).success();
    let revoked = lap(&vera, ["sessions", "list"]);
    assert!(revoked.code != 0 && revoked.stderr.contains("was revoked"), "{revoked}");
    let bad = lap(&admin, ["keys", "create", "--user", "vera", "--role", "owner"]);
    assert!(bad.code == 2 && bad.stderr.contains("not a role"), "{bad}");
}

/// Ownership: a member reaches their own sessions and agents and the team's agents, and nothing of
/// another member's (it answers as if it did not exist); a viewer reads everything but gets no
/// terminal token; an admin reaches everything.
#[tokio::test]
async fn a_member_reaches_only_their_own_sessions_and_agents() {
    let app = App::new();
    app.agent("helper", "shell").await;
    let max = key_for(&app, "max", "member").await;
    let mia = key_for(&app, "mia", "member").await;
    let vera = key_for(&app, "vera", "viewer").await;
    let ada = key_for(&app, "ada", "admin").await;
    let agents = "/api/v1/managed_agents/agents";
    let sessions = "/api/v1/managed_agents/sessions";

    let started = app
        .send(with_key(Method::POST, &format!("{agents}/helper/session"), &max, None))
        .await;
    assert_eq!(
        started.status,
        StatusCode::OK,
        "a member cannot use the team's agent: {}",
        started.raw
    );
    let id = started.body["id"].as_str().unwrap().to_owned();
    assert!(
        started.body["tty_token"].is_string(),
        "the owner needs the terminal token"
    );
    assert_eq!(started.body["owner"], "max", "{}", started.raw);
    let session = format!("{sessions}/{id}");

    for (method, path) in [
        (Method::GET, session.clone()),
        (Method::DELETE, session.clone()),
        (Method::POST, format!("{session}/exec")),
        (Method::GET, format!("{session}/messages")),
        (Method::GET, format!("{session}/files?path=/work")),
    ] {
        let reply = app.send(with_key(method.clone(), &path, &mia, Some(&json!({})))).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "mia reached max's {method} {path}: {}",
            reply.raw
        );
        assert_eq!(reply.body["error"], format!("session `{id}` not found"));
    }
    let listed = |key: &str| {
        let request = with_key(Method::GET, sessions, key, None);
        async { app.send(request).await.body }
    };
    assert_eq!(listed(&mia).await, json!([]), "mia lists max's session");
    assert_eq!(listed(&max).await[0]["id"], id.as_str());
    assert_eq!(listed(&max).await[0]["owner"], "max");
    let seen = listed(&vera).await;
    assert_eq!(seen[0]["id"], id.as_str(), "a viewer reads every session");
    assert!(
        seen[0].get("tty_token").is_none_or(Value::is_null),
        "a viewer got a terminal token: {seen}"
    );
    assert_eq!(listed(&ada).await[0]["id"], id.as_str());
    let shown = app.send(with_key(Method::GET, &session, &vera, None)).await;
    assert!(shown.body.get("tty_token").is_none_or(Value::is_null), "{}", shown.raw);

    // A member's own agent is theirs alone; the team's is changed by an admin only.
    let made = app
        .send(with_key(
            Method::POST,
            agents,
            &max,
            Some(&json!({"name": "maxbot", "harness_id": "shell"})),
        ))
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.raw);
    let names = |reply: Reply| -> Vec<String> {
        reply.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(made.body["owner"], "max", "{}", made.raw);
    let team = app
        .send(with_key(Method::GET, &format!("{agents}/helper"), &mia, None))
        .await;
    assert!(
        team.body.get("owner").is_none(),
        "the team's agent has no owner: {}",
        team.raw
    );
    assert_eq!(
        names(app.send(with_key(Method::GET, agents, &mia, None)).await),
        ["helper"]
    );
    assert_eq!(
        names(app.send(with_key(Method::GET, agents, &max, None)).await),
        ["maxbot", "helper"]
    );
    assert_eq!(
        names(app.send(with_key(Method::GET, agents, &vera, None)).await),
        ["maxbot", "helper"]
    );
    let hidden = app
        .send(with_key(Method::GET, &format!("{agents}/maxbot"), &mia, None))
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND, "{}", hidden.raw);
    let used = app
        .send(with_key(Method::POST, &format!("{agents}/maxbot/session"), &mia, None))
        .await;
    assert_eq!(
        used.status,
        StatusCode::NOT_FOUND,
        "mia started a session of max's agent: {}",
        used.raw
    );
    let changed = app
        .send(with_key(
            Method::PATCH,
            &format!("{agents}/helper"),
            &max,
            Some(&json!({"prompt": "x"})),
        ))
        .await;
    assert_eq!(changed.status, StatusCode::FORBIDDEN, "{}", changed.raw);
    assert!(changed.raw.contains("the team's agent"), "{}", changed.raw);
    let own = app
        .send(with_key(
            Method::PATCH,
            &format!("{agents}/maxbot"),
            &max,
            Some(&json!({"prompt": "x"})),
        ))
        .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.raw);

    // The owner, and an admin, delete.
    assert_eq!(
        app.send(with_key(Method::DELETE, &session, &max, None)).await.status,
        StatusCode::OK
    );
    let agent = app
        .send(with_key(Method::DELETE, &format!("{agents}/maxbot"), &ada, None))
        .await;
    assert!(agent.status.is_success(), "{}", agent.raw);
}

/// Revoking a key closes, within the deadline, the terminal and the event stream it opened, and the
/// terminal token it was shown stops opening the terminal. On the local backend: a real sandbox and
/// a real terminal.
#[test]
fn revoking_a_key_closes_the_terminal_and_the_event_stream_it_opened() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let home = Home::new();
    let server = TestServer::start_local(&home);
    let _cleanup = crate::support::LocalSandboxes(server.data_dir().to_owned());
    lap(&home, ["agents", "create", "demo", "--harness", "shell"]).success();
    lap(&home, ["users", "create", "max"]).success();
    let key = lap(&home, ["keys", "create", "--user", "max", "--role", "member"])
        .success()
        .out()
        .to_owned();
    let as_max = |args: &[&str]| home.lap().env("LAP_MASTER_KEY", &key).run(args.iter().copied());
    let id = as_max(&["--json", "sessions", "create", "demo"]).success().json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = crate::support::wait_until(&format!("session {id} ready"), SESSION_DEADLINE, || {
        let shown = as_max(&["--json", "sessions", "show", &id]).success().json();
        if shown["status"] == "ready" {
            Ok(shown)
        } else {
            Err(shown)
        }
    });
    let token = session["tty_token"].as_str().unwrap().to_owned();
    assert!(
        token.starts_with("lapk."),
        "a key is shown a token bound to it: {token}"
    );
    let master = lap(&home, ["--json", "sessions", "show", &id]).success().json();
    assert_ne!(
        master["tty_token"], session["tty_token"],
        "the session's own token reached a key"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ws = server.url.replacen("http", "ws", 1);
        let tty = format!("{ws}/api/v1/managed_agents/sessions/{id}/tty?token={token}");
        let (mut terminal, _) = tokio::time::timeout(SESSION_DEADLINE, tokio_tungstenite::connect_async(tty.as_str()))
            .await
            .expect("the terminal opens within the deadline")
            .expect("the key-bound token opens the terminal");
        let first = tokio::time::timeout(SESSION_DEADLINE, terminal.next())
            .await
            .expect("a first frame");
        assert!(matches!(first, Some(Ok(Message::Binary(_)))), "{first:?}");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let events = reqwest::Client::new()
            .get(format!("{}/api/v1/managed_agents/sessions/{id}/events", server.url))
            .bearer_auth(&key)
            .send()
            .await
            .expect("the event stream opens");
        assert_eq!(events.status(), 200);
        let mut events = events.bytes_stream();

        let keys = lap(&home, ["--json", "keys", "list"]).success().json();
        lap(&home, ["keys", "revoke", keys[0]["id"].as_str().unwrap()]).success();

        let closed = tokio::time::timeout(CUT_DEADLINE, async {
            while let Some(message) = terminal.next().await {
                if let Ok(Message::Close(frame)) = message {
                    return frame;
                }
            }
            None
        })
        .await
        .expect("the terminal is closed once its key is revoked");
        let frame = closed.expect("a close frame that says why");
        assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
        assert!(frame.reason.contains("revoked"), "{frame:?}");
        tokio::time::timeout(CUT_DEADLINE, async { while let Some(Ok(_)) = events.next().await {} })
            .await
            .expect("the event stream ends once its key is revoked");
        let again = tokio_tungstenite::connect_async(tty.as_str()).await;
        assert!(
            matches!(&again, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 401),
            "a revoked key's token opened the terminal again: {again:?}"
        );
    });
    lap(&home, ["sessions", "delete", &id]).success();
}

/// The audit rows of a scripted day: who did what, in order, from where; reads are not rows, and no
/// credential value is in any.
#[tokio::test]
async fn the_audit_log_keeps_who_did_what_and_never_a_credential_value() {
    let app = App::new();
    let secret = "ghp_audit_secret_value_0123456789";
    let made = app
        .post(
            "/api/v1/managed_agents/agents",
            json!({"name": "helper", "harness_id": "shell",
                   "credentials": [{"name": "GITHUB_TOKEN", "value": secret, "hosts": ["api.github.com"]}]}),
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.raw);
    let max = key_for(&app, "max", "member").await;
    let started = app
        .send(with_key(
            Method::POST,
            "/api/v1/managed_agents/agents/helper/session",
            &max,
            None,
        ))
        .await;
    let id = started.body["id"].as_str().unwrap().to_owned();
    app.send(with_key(Method::GET, "/api/v1/managed_agents/sessions", &max, None))
        .await;
    let refused = app.send(with_key(Method::GET, "/api/v1/admin/audit", &max, None)).await;
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "a member read the audit log: {}",
        refused.raw
    );
    app.send(with_key(
        Method::DELETE,
        &format!("/api/v1/managed_agents/sessions/{id}"),
        &max,
        None,
    ))
    .await;
    let key_id = app.get(KEYS).await.body[0]["id"].as_str().unwrap().to_owned();
    app.send(App::request_json(
        Method::DELETE,
        &format!("{KEYS}/{key_id}"),
        &json!(null),
    ))
    .await;

    let log = app.get("/api/v1/admin/audit").await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.raw);
    assert!(
        !log.raw.contains(secret),
        "a credential value is in the audit log: {}",
        log.raw
    );
    let rows: Vec<(String, String, u64)> = log.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("master", "POST /api/v1/managed_agents/agents", 200),
        ("master", "POST /api/v1/admin/users", 201),
        ("master", "POST /api/v1/admin/keys", 201),
        ("max", "POST /api/v1/managed_agents/agents/{id}/session", 200),
        ("max", "DELETE /api/v1/managed_agents/sessions/{id}", 200),
        ("master", "DELETE /api/v1/admin/keys/{id}", 200),
    ];
    let expected: Vec<(String, String, u64)> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), *c))
        .collect();
    assert_eq!(rows, expected, "{}", log.raw);
    let entries = log.body["entries"].as_array().unwrap();
    assert_eq!(entries[4]["target"], format!("id={id}"));
    assert!(entries[3]["key_id"].is_string(), "{}", entries[3]);
    let after = entries[3]["id"].as_u64().unwrap();
    let since = app.get(&format!("/api/v1/admin/audit?after={after}")).await;
    assert_eq!(since.body["entries"].as_array().map(Vec::len), Some(2), "{}", since.raw);
}

/// `lap audit -f --json` prints an action as it happens, one object per line.
#[test]
fn lap_audit_follows_new_actions() {
    use std::io::BufRead;
    let home = Home::new();
    let _server = TestServer::start(&home);
    let mut follow = std::process::Command::new(crate::support::LAP)
        .envs(home.env())
        .args(["--json", "audit", "-f"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn lap audit -f");
    let stdout = follow.stdout.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    lap(&home, ["users", "create", "ada"]).success();
    let deadline = std::time::Instant::now() + EXPIRY_DEADLINE;
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) => {
                let entry: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                if entry["action"] == "POST /api/v1/admin/users" {
                    break entry;
                }
            }
            Err(_) => panic!("`lap audit -f` did not print the user's creation"),
        }
    };
    assert_eq!(found["actor"], "master");
    assert_eq!(found["status"], 201);
    let _ = follow.kill();
    let _ = follow.wait();
}

/// Quotas: a member's live sessions, and the memory and CPUs their sandboxes hold, are capped; a
/// session over the cap is a 429 naming the limit, and fits again once one ends.
#[tokio::test]
async fn a_session_over_its_users_quota_is_refused_with_429_naming_the_limit() {
    let app = App::new();
    app.agent("helper", "shell").await;
    let made = app
        .post(
            "/api/v1/managed_agents/agents",
            json!({"name": "big", "harness_id": "shell", "limits": {"memory_mb": 4096, "cpus": 1.5}}),
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.raw);
    let max = key_for(&app, "max", "member").await;
    let quota = |body: Value| App::request_json(Method::PUT, &format!("{USERS}/max/quota"), &body);
    let set = app.send(quota(json!({"sessions": 1}))).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.raw);
    assert_eq!(set.body["quota"], json!({"sessions": 1}));
    let start = |agent: &str| {
        with_key(
            Method::POST,
            &format!("/api/v1/managed_agents/agents/{agent}/session"),
            &max,
            None,
        )
    };

    let first = app.send(start("helper")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.raw);
    let second = app.send(start("helper")).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS, "{}", second.raw);
    assert!(
        second.raw.contains("1 live sessions, the most their quota allows (1)"),
        "{}",
        second.raw
    );
    assert!(
        hint(&second).contains("lap users quota max --sessions"),
        "{}",
        second.raw
    );
    let master = app
        .send(App::request_json(
            Method::POST,
            "/api/v1/managed_agents/agents/helper/session",
            &json!(null),
        ))
        .await;
    assert_eq!(
        master.status,
        StatusCode::OK,
        "the master key has no quota: {}",
        master.raw
    );

    // Memory: `helper` sets no limit and counts 4096 MiB; `big` asks for 4096 more.
    app.send(quota(json!({"memory_mb": 6000}))).await;
    let over = app.send(start("big")).await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS, "{}", over.raw);
    assert!(
        over.raw.contains("needs 4096 MiB") && over.raw.contains("4096 MiB of their quota's 6000 MiB"),
        "{}",
        over.raw
    );
    app.send(quota(json!({"cpus": 3}))).await;
    let over = app.send(start("big")).await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS, "{}", over.raw);
    assert!(over.raw.contains("needs 1.5 CPUs"), "{}", over.raw);

    // Once the first ends, there is room again.
    let id = first.body["id"].as_str().unwrap();
    let ended = app
        .send(with_key(
            Method::DELETE,
            &format!("/api/v1/managed_agents/sessions/{id}"),
            &max,
            None,
        ))
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.raw);
    assert_eq!(app.send(start("big")).await.status, StatusCode::OK);

    for (body, status) in [
        (json!({"cpus": -1}), StatusCode::BAD_REQUEST),
        (json!({"sessions": 1, "gpus": 2}), StatusCode::BAD_REQUEST),
    ] {
        let reply = app.send(quota(body.clone())).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.raw);
    }
    let unknown = app
        .send(App::request_json(
            Method::PUT,
            &format!("{USERS}/nobody/quota"),
            &json!({"sessions": 1}),
        ))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.raw);
}
