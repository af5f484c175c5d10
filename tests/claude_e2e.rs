//! End to end with the real `claude` CLI (npm `@anthropic-ai/claude-code`, installed by
//! scripts/test.sh): a `claude-agent-sdk` session whose `ANTHROPIC_API_KEY` is bound to
//! `api.anthropic.com`. The sandbox holds a stub; the vault, resolving `api.anthropic.com` to a
//! fake Anthropic Messages API on this machine's loopback (TLS from a test CA), swaps in the real
//! key. The fake answers only the real key, with a fixed reply streamed in the real SSE format;
//! `lap send` prints it and the session's egress log shows the swap. Nothing leaves the machine:
//! egress defaults to deny, the agent may reach `api.anthropic.com` only, that name resolves to
//! 127.0.0.1, and the CLI's non-essential traffic is switched off.

mod support;

use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lap::vault::ca::CertificateAuthority;
use support::tmux::Tmux;
use support::upstream::tls_listener;
use support::{Home, TestServer, delete_local_sandboxes, lap};

const REAL_KEY: &str = "sk-ant-api03-TheRealKeyThatOnlyTheVaultHolds-0123456789";
/// How long the real CLI may take to draw or answer (it is a large program, started cold).
const CLAUDE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
const REPLY: &[&str] = &["Hello from the ", "fake Anthropic API", ", through the vault."];

/// What the fake API saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    api_key: Option<String>,
    authorization: Option<String>,
    stream: bool,
}

fn sse(events: &[(&str, serde_json::Value)]) -> String {
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

/// The Anthropic Messages API as far as the CLI needs it: `POST /v1/messages`, streamed (SSE) or
/// not, answering the real key only.
async fn fake_anthropic(ca: Arc<CertificateAuthority>, seen: Arc<Mutex<Vec<Seen>>>) -> u16 {
    use serde_json::json;
    let (listener, port, acceptor) = tls_listener(ca, &[b"h2", b"http/1.1"]).await;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let header = |name: &str| {
                            parts
                                .headers
                                .get(name)
                                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                        };
                        let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                        let stream = request["stream"].as_bool().unwrap_or(false);
                        seen.lock().unwrap().push(Seen {
                            path: parts.uri.path().to_owned(),
                            api_key: header("x-api-key"),
                            authorization: header("authorization"),
                            stream,
                        });
                        let respond = |status: u16, content_type: &str, body: String| {
                            hyper::Response::builder()
                                .status(status)
                                .header("content-type", content_type)
                                .header("request-id", "req_fake")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap()
                        };
                        if parts.uri.path() != "/v1/messages" {
                            let error =
                                json!({"type": "error", "error": {"type": "not_found_error", "message": "not here"}});
                            return Ok::<_, std::convert::Infallible>(respond(
                                404,
                                "application/json",
                                error.to_string(),
                            ));
                        }
                        if header("x-api-key").as_deref() != Some(REAL_KEY) {
                            let error = json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}});
                            return Ok(respond(401, "application/json", error.to_string()));
                        }
                        let model = request["model"].as_str().unwrap_or("claude-fake").to_owned();
                        let text: String = REPLY.concat();
                        if !stream {
                            let message = json!({
                                "id": "msg_fake_whole", "type": "message", "role": "assistant", "model": model,
                                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                                "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 9}
                            });
                            return Ok(respond(200, "application/json", message.to_string()));
                        }
                        let mut events = vec![
                            (
                                "message_start",
                                json!({"type": "message_start", "message": {
                                "id": "msg_fake_stream", "type": "message", "role": "assistant", "model": model,
                                "content": [], "stop_reason": null, "stop_sequence": null,
                                "usage": {"input_tokens": 12, "output_tokens": 1}}}),
                            ),
                            (
                                "content_block_start",
                                json!({"type": "content_block_start", "index": 0,
                                "content_block": {"type": "text", "text": ""}}),
                            ),
                            ("ping", json!({"type": "ping"})),
                        ];
                        for piece in REPLY {
                            events.push((
                                "content_block_delta",
                                json!({"type": "content_block_delta", "index": 0,
                                "delta": {"type": "text_delta", "text": piece}}),
                            ));
                        }
                        events.push(("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
                        events.push(("message_delta", json!({"type": "message_delta",
                            "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 9}})));
                        events.push(("message_stop", json!({"type": "message_stop"})));
                        Ok(respond(200, "text/event-stream", sse(&events)))
                    }
                });
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

fn claude_installed() -> bool {
    std::process::Command::new("claude")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success())
}

/// A `lap serve` (local backend) whose vault resolves `api.anthropic.com` to the fake API on this
/// machine's loopback; egress defaults to deny. Its sandboxes are deleted on drop.
struct World {
    _rt: tokio::runtime::Runtime,
    home: Home,
    _dir: tempfile::TempDir,
    seen: Arc<Mutex<Vec<Seen>>>,
    port: u16,
    server: TestServer,
}

impl World {
    /// `None` (after saying so) when the `claude` CLI is missing and the run is not strict.
    fn start() -> Option<Self> {
        if !claude_installed() {
            assert_ne!(
                std::env::var("LAP_TEST_STRICT").as_deref(),
                Ok("1"),
                "the `claude` CLI is missing; scripts/test.sh installs it (npm install -g @anthropic-ai/claude-code)"
            );
            eprintln!("skipped: the `claude` CLI is not installed (npm install -g @anthropic-ai/claude-code)");
            return None;
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let home = Home::new();
        let dir = tempfile::tempdir().unwrap();
        let public_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("public-ca")).unwrap());
        let ca_file = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca_file, public_ca.cert_pem()).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let port = rt.block_on(fake_anthropic(public_ca, seen.clone()));

        let resolve = format!("api.anthropic.com:{port}:127.0.0.1");
        let server = TestServer::start_local_with(
            &home,
            [
                "--vault-resolve",
                resolve.as_str(),
                "--vault-upstream-ca",
                ca_file.to_str().unwrap(),
                "--egress-default",
                "deny",
            ],
        );
        Some(Self {
            _rt: rt,
            home,
            _dir: dir,
            seen,
            port,
            server,
        })
    }

    /// Creates agent `name` of `harness`, its `ANTHROPIC_API_KEY` the real key (bound to
    /// api.anthropic.com by the preset), pointed at the fake API, allowed out to it only.
    fn agent(&self, name: &str, harness: &str) {
        let base_url = format!("ANTHROPIC_BASE_URL=https://api.anthropic.com:{}", self.port);
        // scripts/check-tools.sh: the tool versions to try go first on the agent's PATH.
        let path = support::vendor::tool_path_env();
        let mut args = vec![
            "agents",
            "create",
            name,
            "--harness",
            harness,
            "--model",
            "claude-fake-1",
            "--credential",
            "ANTHROPIC_API_KEY",
            "--env",
            &base_url,
            "--env",
            "CLAUDE_CODE_MAX_RETRIES=0",
            "--allow-out",
            "api.anthropic.com",
        ];
        if let Some(path) = &path {
            args.extend(["--env", path]);
        }
        self.home.lap().env("ANTHROPIC_API_KEY", REAL_KEY).run(args).success();
    }
}

impl Drop for World {
    fn drop(&mut self) {
        delete_local_sandboxes(self.server.data_dir());
    }
}

#[test]
fn lap_send_to_a_real_claude_gets_the_fake_apis_reply_with_the_key_swapped_by_the_vault() {
    let Some(world) = World::start() else { return };
    world.agent("claude", "claude-agent-sdk");
    let (home, server, seen) = (&world.home, &world.server, &world.seen);

    let sent = lap(home, ["send", "claude", "Say hello."]);
    let log = server.log();
    assert_eq!(
        sent.code,
        0,
        "{sent}\nseen: {:#?}\nserver log:\n{log}",
        seen.lock().unwrap()
    );
    assert_eq!(sent.out(), REPLY.concat(), "{sent}");

    // A second turn to the same claude process, streamed as it arrives.
    let streamed = lap(home, ["send", "--stream", "claude", "Once more."]);
    assert_eq!(streamed.code, 0, "{streamed}");
    assert_eq!(streamed.stdout, format!("{}\n", REPLY.concat()), "{streamed}");

    // The fake API got the real key and only the real key; the sandbox never had it.
    let seen = seen.lock().unwrap().clone();
    let messages: Vec<&Seen> = seen.iter().filter(|s| s.path == "/v1/messages").collect();
    assert!(messages.iter().any(|s| s.stream), "{seen:#?}");
    for request in &seen {
        if let Some(key) = &request.api_key {
            assert_eq!(key, REAL_KEY, "{seen:#?}");
        }
        assert!(
            request.authorization.as_deref().is_none_or(|a| !a.contains("stub")),
            "{seen:#?}"
        );
    }
    let session = lap(home, ["--json", "sessions", "list"]).success().json()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let egress = lap(home, ["--json", "sessions", "egress", &session]).success().json();
    let swapped: Vec<&serde_json::Value> = egress
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["host"] == "api.anthropic.com" && r["path"].as_str().unwrap_or("").starts_with("/v1/messages"))
        .collect();
    assert!(!swapped.is_empty(), "{egress:#}");
    for record in &swapped {
        assert_eq!(
            record["swapped"],
            serde_json::json!(["ANTHROPIC_API_KEY"]),
            "{record:#}"
        );
        assert_eq!(record["status"], 200, "{record:#}");
    }
    // Nothing else was let out: any other host was refused by the vault, not reached.
    for record in egress.as_array().unwrap() {
        if record["host"] != "api.anthropic.com" {
            assert!(record["blocked"].is_string(), "{record:#}");
        }
    }
    assert!(!server.log().contains(REAL_KEY));

    // The conversation is kept like any other: the user's message and Claude's reply.
    let history = server.http_get(
        &format!("/api/v1/managed_agents/sessions/{session}/messages"),
        Some(&server.master_key()),
    );
    assert_eq!(history.0, 200, "{}", history.1);
    let history: serde_json::Value = serde_json::from_str(&history.1).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 4, "{history:#}");
    for reply in [&history[1], &history[3]] {
        assert_eq!(reply["info"]["finish"], "stop", "{history:#}");
        assert_eq!(reply["parts"][0]["text"], REPLY.concat());
    }
}

#[test]
fn a_claude_code_session_opens_at_the_prompt_with_no_first_run_questions_and_answers_through_the_vault() {
    let Some(world) = World::start() else { return };
    world.agent("cc", "claude-code");
    let home = &world.home;
    let tmux = Tmux::shell("claude-tui", (120, 40), "");
    tmux.keys(&format!(
        "env -i {} {} cc; echo LAP-EXIT=$?\n",
        home.env_words(),
        env!("CARGO_BIN_EXE_lap")
    ));
    // Straight to Claude Code's prompt: no onboarding, no folder trust, no "use this API key?".
    // The prompt's footer: "? for shortcuts" before 2.1.33x, the permission mode's "(shift+tab to
    // cycle)" since.
    let screen = tmux.until_within(CLAUDE_WAIT, "claude's prompt", |s| {
        s.contains("for shortcuts") || s.contains("shift+tab to cycle")
    });
    for question in [
        "trust",
        "API key",
        "Choose the text style",
        "Select login method",
        "Auto mode is now",
    ] {
        assert!(!screen.contains(question), "a first-run question: {question}\n{screen}");
    }
    tmux.keys("Say hello.");
    tmux.key("Enter");
    let screen = tmux.until_within(CLAUDE_WAIT, "the fake API's reply", |s| {
        s.contains("fake Anthropic API")
    });
    assert!(!screen.contains(REAL_KEY), "{screen}");

    // The request went out with the real key, put there by the vault.
    let seen = world.seen.lock().unwrap().clone();
    let messages: Vec<&Seen> = seen.iter().filter(|s| s.path == "/v1/messages").collect();
    assert!(!messages.is_empty(), "{seen:#?}");
    assert!(
        messages.iter().all(|s| s.api_key.as_deref() == Some(REAL_KEY)),
        "{seen:#?}"
    );

    // Ctrl-D detaches; the session stays for `lap cc` to come back to.
    tmux.key("C-d");
    tmux.until("lap to exit", |s| s.contains("LAP-EXIT=0"));
    let sessions = lap(home, ["--json", "sessions", "list"]).success().json();
    assert_eq!(sessions[0]["status"], "ready", "{sessions:#}");
    assert!(!world.server.log().contains(REAL_KEY));
}
