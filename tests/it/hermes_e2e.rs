//! End to end with the real Hermes Agent (PyPI `hermes-agent`, pinned in scripts/tool-versions,
//! installed by scripts/test.sh into a venv under /usr/local and linked as /usr/local/bin/hermes):
//! a `hermes` agent whose `OPENAI_API_KEY` is bound to `api.openai.com`, opened in a terminal
//! (tmux) with `lap AGENT`. Its first-run file (`~/.hermes/config.yaml`: an OpenAI-compatible
//! provider reading the key from `OPENAI_API_KEY`) takes it straight to its prompt. The vault
//! resolves the host to a fake OpenAI API on loopback (TLS from a test CA) that answers Chat
//! Completions as OpenAI documents (`POST /v1/chat/completions`, SSE `chat.completion.chunk`s and
//! `data: [DONE]` when `stream` is set, one `chat.completion` otherwise; `GET /v1/models`; a 401
//! `invalid_api_key` error object for any other key). Egress defaults to deny.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support;
use crate::support::lap;
use crate::support::require;
use crate::support::tmux::Tmux;
use crate::support::vendor::{Answer, Seen, World, tool_path_env};

const HOST: &str = "api.openai.com";
const REAL_KEY: &str = "sk-proj-TheRealOpenAiKeyOnlyTheVaultHolds0123456789";
const MODEL: &str = "gpt-fake-1";
/// How long the real tool may take to draw or answer (Python and a Node TUI, started cold).
const HERMES_WAIT: Duration = Duration::from_secs(120);
const HEARD: &str = "Fake OpenAI heard: ";

fn openai_error(status: u16, message: &str, kind: &str, code: Option<&str>) -> Answer {
    let error = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, "application/json", error.to_string())
}

fn last_user_text(request: &Value) -> String {
    let message = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .find(|m| m["role"] == "user");
    let content = message.map(|m| &m["content"]);
    match content {
        Some(Value::String(text)) => text.trim().to_owned(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("")
            .trim()
            .to_owned(),
        _ => String::new(),
    }
}

/// The OpenAI API as far as a Chat Completions client needs it, answering `REAL_KEY` only.
fn openai_api(request: &Seen) -> Answer {
    let path = request.path.split('?').next().unwrap_or("");
    if request.header("authorization") != Some(&format!("Bearer {REAL_KEY}")) {
        return openai_error(
            401,
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            Some("invalid_api_key"),
        );
    }
    match (request.method.as_str(), path) {
        ("GET", "/v1/models") => (
            200,
            "application/json",
            json!({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}]})
                .to_string(),
        ),
        ("GET", p) if p == format!("/v1/models/{MODEL}") => (
            200,
            "application/json",
            json!({"id": MODEL, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}).to_string(),
        ),
        ("POST", "/v1/chat/completions") => {
            let body = request.json();
            let model = body["model"].as_str().unwrap_or(MODEL).to_owned();
            let reply = format!("{HEARD}{}", last_user_text(&body));
            if body["stream"] != true {
                let completion = json!({
                    "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
                });
                return (200, "application/json", completion.to_string());
            }
            let chunk = |delta: Value, finish: Value| {
                json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
                       "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            };
            let (first, second) = reply.split_at(reply.len() / 2);
            let mut events = vec![
                chunk(json!({"role": "assistant", "content": first}), Value::Null),
                chunk(json!({"content": second}), Value::Null),
                chunk(json!({}), json!("stop")),
            ];
            if body["stream_options"]["include_usage"] == true {
                events.push(json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
                    "model": model, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}}));
            }
            let mut sse: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
            sse.push_str("data: [DONE]\n\n");
            (200, "text/event-stream", sse)
        }
        _ => openai_error(404, &format!("Invalid URL ({} {path})", request.method), "invalid_request_error", None),
    }
}

fn until_shown(world: &World, tmux: &Tmux, what: &str, expected: &str) -> String {
    let shown = support::try_wait_until(HERMES_WAIT, || {
        let screen = tmux.screen();
        if screen.contains(expected) {
            Ok(screen)
        } else {
            Err(screen)
        }
    });
    shown.unwrap_or_else(|screen| {
        let id = lap(&world.home, ["--json", "sessions", "list"]).success().json()[0]["id"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let egress = lap(&world.home, ["--json", "sessions", "egress", &id]);
        panic!(
            "timed out waiting for {what}; pane:\n{screen}\nthe fake API saw: {:#?}\negress: {egress}",
            world.seen()
        );
    })
}

fn say(world: &World, tmux: &Tmux, text: &str) -> String {
    tmux.keys(text);
    until_shown(world, tmux, "the typed text", text);
    std::thread::sleep(Duration::from_millis(200));
    tmux.key("Enter");
    until_shown(
        world,
        tmux,
        &format!("the reply to {text:?}"),
        &format!("{HEARD}{text}"),
    )
}

fn installed() -> bool {
    require(
        "hermes",
        "a venv under /usr/local with PyPI hermes-agent; see scripts/test.sh",
    )
}

/// Creates agent `herm` of the `hermes` harness with the real `OPENAI_API_KEY`, allowed out to
/// the vendor's host only. No base URL: the tool's built-in `https://HOST` reaches the fake.
fn agent(world: &World) {
    let mut args = vec![
        "agents",
        "create",
        "herm",
        "--harness",
        "hermes",
        "--model",
        MODEL,
        "--credential",
        "OPENAI_API_KEY",
        "--allow-out",
        HOST,
    ];
    let path = tool_path_env();
    if let Some(path) = &path {
        args.extend(["--env", path]);
    }
    world.home.lap().env("OPENAI_API_KEY", REAL_KEY).run(args).success();
}

/// `lap herm` in a terminal (a tmux server) of its own called `terminal`.
fn open(world: &World, terminal: &str) -> Tmux {
    let tmux = Tmux::shell(terminal, (120, 40), "");
    tmux.keys(&format!(
        "env -i {} {} herm; echo LAP-EXIT=$?\n",
        world.home.env_words(),
        env!("CARGO_BIN_EXE_lap")
    ));
    tmux
}

fn session(world: &World) -> String {
    lap(&world.home, ["--json", "sessions", "list"]).success().json()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_hermes_session_opens_at_its_prompt_and_answers_two_turns_with_the_key_swapped_by_the_vault() {
    if !installed() {
        return;
    }
    let world = World::start(HOST, openai_api);
    agent(&world);
    let tmux = open(&world, "hermes");
    let screen = until_shown(&world, &tmux, "hermes's prompt", "ready │");
    assert!(!screen.contains("No inference provider"), "{screen}");
    say(&world, &tmux, "Say hello.");
    let screen = say(&world, &tmux, "And once more.");
    assert!(!screen.contains(REAL_KEY), "{screen}");

    // The turns reached the "vendor" with the real key (the fake answers nothing else) and the
    // agent's model.
    let seen = world.seen();
    let turns: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path == "/v1/chat/completions" && last_user_text(&s.json()).ends_with("once more."))
        .collect();
    assert!(!turns.is_empty(), "{seen:#?}");
    for request in seen.iter().filter(|s| s.path == "/v1/chat/completions") {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {REAL_KEY}").as_str())
        );
        assert_eq!(request.json()["model"], MODEL, "{request:#?}");
    }

    // The sandbox holds the stub only.
    let id = lap(&world.home, ["--json", "sessions", "list"]).success().json()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stub = lap(&world.home, ["exec", &id, "--", "printenv", "OPENAI_API_KEY"]).success();
    assert!(!stub.out().is_empty() && stub.out() != REAL_KEY, "{stub}");
    support::assert_no_file_in_the_sandbox_holds(&world.home, &id, REAL_KEY);
    let egress = lap(&world.home, ["--json", "sessions", "egress", &id]).success().json();
    let calls: Vec<&Value> = egress
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["host"] == HOST && r["path"] == "/v1/chat/completions")
        .collect();
    assert!(calls.len() >= 2, "{egress:#}");
    for record in &calls {
        assert_eq!(record["swapped"], json!(["OPENAI_API_KEY"]), "{record:#}");
    }
    assert!(!world.server.log().contains(REAL_KEY));
}

#[test]
fn a_hermes_conversation_goes_on_after_a_restart_of_lap_serve() {
    if !installed() {
        return;
    }
    let mut world = World::start(HOST, openai_api);
    agent(&world);
    let tmux = open(&world, "hermes");
    until_shown(&world, &tmux, "hermes's prompt", "ready │");
    say(&world, &tmux, "Remember the word PINEAPPLE.");
    let id = session(&world);
    tmux.key("C-d");
    until_shown(&world, &tmux, "lap to exit", "LAP-EXIT=0");
    drop(tmux);

    // Stop `lap serve` and start it again on the same store; `lap herm` comes back to the session,
    // its screen as it was, and the conversation goes on through the vault.
    world.server.restart();
    let tmux = open(&world, "hermes-again");
    until_shown(
        &world,
        &tmux,
        "the session's screen, repainted",
        &format!("{HEARD}Remember the word PINEAPPLE."),
    );
    let screen = say(&world, &tmux, "Still there.");
    assert!(!screen.contains(REAL_KEY), "{screen}");
    assert_eq!(session(&world), id);
    let seen = world.seen();
    let after: Vec<Value> = seen
        .iter()
        .filter(|s| s.path == "/v1/chat/completions")
        .map(Seen::json)
        .filter(|body| last_user_text(body) == "Still there.")
        .collect();
    assert!(!after.is_empty(), "{seen:#?}");
    for body in &after {
        let said = body.to_string();
        assert!(said.contains("PINEAPPLE"), "the conversation did not go on: {body:#}");
        assert!(
            said.contains(&format!("{HEARD}Remember the word PINEAPPLE.")),
            "{body:#}"
        );
    }
    for request in seen.iter().filter(|s| s.path == "/v1/chat/completions") {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {REAL_KEY}").as_str())
        );
    }
    assert!(!world.server.log().contains(REAL_KEY));
    tmux.key("C-d");
    until_shown(&world, &tmux, "lap to exit", "LAP-EXIT=0");
}
