//! End to end with the real Gemini CLI (npm `@google/gemini-cli`, pinned in scripts/tool-versions,
//! installed by scripts/test.sh): a `gemini` agent whose `GEMINI_API_KEY` is bound to
//! `generativelanguage.googleapis.com`, opened in a terminal (tmux) as a person would with
//! `lap AGENT`. The vault resolves that host to a fake Gemini API on this machine's loopback (TLS
//! from a test CA) and swaps the sandbox's stub for the real key. The fake behaves as Google
//! documents: `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` answers `data:` chunks of
//! `GenerateContentResponse`, `:generateContent` one JSON response, `:countTokens` a count, and a
//! missing or wrong key gets Google's error JSON (`{"error":{"code","message","status","details"}}`,
//! 403 `PERMISSION_DENIED` without a key, 400 `INVALID_ARGUMENT`/`API_KEY_INVALID` with a bad one).
//! Nothing leaves the machine: egress defaults to deny and the agent may reach that host only.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support;
use crate::support::lap;
use crate::support::require;
use crate::support::tmux::Tmux;
use crate::support::vendor::{Answer, Seen, World, tool_path_env};

const HOST: &str = "generativelanguage.googleapis.com";
const REAL_KEY: &str = "AIzaSyTheRealGeminiKeyOnlyTheVaultHolds0123";
const MODEL: &str = "gemini-fake-1";
/// How long the real CLI may take to draw or answer (a large JS bundle, started cold).
const GEMINI_WAIT: Duration = Duration::from_secs(90);
/// What the fake's replies start with, before the echo of the user's text.
const HEARD: &str = "Fake Gemini heard: ";

fn google_error(code: u16, status: &str, message: &str, reason: Option<&str>) -> Answer {
    let mut error = json!({"error": {"code": code, "message": message, "status": status}});
    if let Some(reason) = reason {
        error["error"]["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": "googleapis.com",
            "metadata": {"service": HOST},
        }]);
    }
    (code, "application/json; charset=UTF-8", error.to_string())
}

/// The text of the last user turn in a `generateContent` request.
fn last_user_text(request: &Value) -> String {
    request["contents"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .find(|c| {
            c["role"] == "user"
                && c["parts"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["text"].is_string()))
        })
        .and_then(|c| c["parts"].as_array())
        .and_then(|parts| parts.iter().rev().find_map(|p| p["text"].as_str()))
        .unwrap_or("")
        .trim()
        .to_owned()
}

fn candidate(text: &str, last: bool) -> Value {
    let mut chunk = json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}],
        "modelVersion": MODEL,
    });
    if last {
        chunk["candidates"][0]["finishReason"] = json!("STOP");
        chunk["usageMetadata"] = json!({"promptTokenCount": 12, "candidatesTokenCount": 6, "totalTokenCount": 18});
    }
    chunk
}

/// The Gemini API as far as the CLI needs it, answering `REAL_KEY` only.
fn gemini_api(request: &Seen) -> Answer {
    let path = request.path.split('?').next().unwrap_or("");
    let Some((model, method)) = path
        .strip_prefix("/v1beta/models/")
        .and_then(|rest| rest.split_once(':'))
    else {
        return google_error(404, "NOT_FOUND", &format!("Method not found: {path}"), None);
    };
    let key = request.header("x-goog-api-key").map(str::to_owned).or_else(|| {
        request
            .path
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("key=")))
            .map(str::to_owned)
    });
    match key.as_deref() {
        None => {
            return google_error(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                None,
            );
        }
        Some(REAL_KEY) => {}
        Some(_) => {
            return google_error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                Some("API_KEY_INVALID"),
            );
        }
    }
    let body = request.json();
    match method {
        "countTokens" => (200, "application/json", json!({"totalTokens": 12}).to_string()),
        "generateContent" => {
            // The CLI's own side questions (e.g. whether the user speaks next) want JSON back.
            let text = if body["generationConfig"]["responseMimeType"] == "application/json" {
                json!({"reasoning": "the model answered", "next_speaker": "user"}).to_string()
            } else {
                format!("{HEARD}{}", last_user_text(&body))
            };
            (200, "application/json", candidate(&text, true).to_string())
        }
        "streamGenerateContent" => {
            let reply = format!("{HEARD}{}", last_user_text(&body));
            let (first, second) = reply.split_at(reply.len() / 2);
            let sse: String = [candidate(first, false), candidate(second, true)]
                .iter()
                .map(|chunk| format!("data: {chunk}\r\n\r\n"))
                .collect();
            (200, "text/event-stream", sse)
        }
        _ => google_error(
            404,
            "NOT_FOUND",
            &format!("models/{model} has no method {method}"),
            None,
        ),
    }
}

fn start() -> Option<World> {
    if !require("gemini", "npm install -g @google/gemini-cli") {
        return None;
    }
    Some(World::start(HOST, gemini_api))
}

/// Creates agent `name` of the `gemini` harness with `key` as its `GEMINI_API_KEY`, allowed out to
/// the vendor's host only. No base URL: the tool's built-in `https://HOST` reaches the fake.
fn agent(world: &World, name: &str, key: &str) {
    let mut args = vec![
        "agents",
        "create",
        name,
        "--harness",
        "gemini",
        "--model",
        MODEL,
        "--credential",
        "GEMINI_API_KEY",
        "--allow-out",
        HOST,
    ];
    let path = tool_path_env();
    if let Some(path) = &path {
        args.extend(["--env", path]);
    }
    world.home.lap().env("GEMINI_API_KEY", key).run(args).success();
}

fn open(world: &World, name: &str) -> Tmux {
    open_in(world, &format!("gemini-{name}"), name)
}

/// `lap NAME` in a terminal (a tmux server) of its own called `terminal`.
fn open_in(world: &World, terminal: &str, name: &str) -> Tmux {
    let tmux = Tmux::shell(terminal, (120, 40), "");
    tmux.keys(&format!(
        "env -i {} {} {name}; echo LAP-EXIT=$?\n",
        world.home.env_words(),
        env!("CARGO_BIN_EXE_lap")
    ));
    tmux
}

/// Waits until the pane shows `expected`; on timeout, fails with the pane, what the fake API saw
/// and the session's egress log.
fn until_shown(world: &World, tmux: &Tmux, what: &str, expected: &str) -> String {
    let shown = support::try_wait_until(GEMINI_WAIT, || {
        let screen = tmux.screen();
        if screen.contains(expected) {
            Ok(screen)
        } else {
            Err(screen)
        }
    });
    shown.unwrap_or_else(|screen| {
        let egress = lap(&world.home, ["--json", "sessions", "egress", &session(world)]);
        panic!(
            "timed out waiting for {what}; pane:\n{screen}\nthe fake API saw: {:#?}\negress: {egress}\nserver log:\n{}",
            world.seen(),
            world.server.log()
        );
    })
}

/// Types `text` and presses Enter once the input box shows it: Ink reads keys that arrive together
/// as a paste, where an Enter is a newline, not a submit.
fn submit(world: &World, tmux: &Tmux, text: &str) {
    tmux.keys(text);
    until_shown(world, tmux, "the typed text in the input box", &format!("> {text}"));
    std::thread::sleep(Duration::from_millis(200));
    tmux.key("Enter");
}

fn say(world: &World, tmux: &Tmux, text: &str) -> String {
    submit(world, tmux, text);
    until_shown(
        world,
        tmux,
        &format!("the fake API's reply to {text:?}"),
        &format!("{HEARD}{text}"),
    )
}

fn session(world: &World) -> String {
    lap(&world.home, ["--json", "sessions", "list"]).success().json()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_gemini_session_opens_at_the_prompt_and_answers_two_turns_with_the_key_swapped_by_the_vault() {
    let Some(world) = start() else { return };
    agent(&world, "gem", REAL_KEY);
    let tmux = open(&world, "gem");
    // Straight into the agent: no folder-trust question, no auth dialog.
    let screen = tmux.until_within(GEMINI_WAIT, "gemini's prompt", |s| s.contains("Type your message"));
    for question in [
        "Do you trust",
        "trust this folder",
        "How would you like to authenticate",
        "Get started",
    ] {
        assert!(!screen.contains(question), "a first-run question: {question}\n{screen}");
    }
    // The agent's model is the one the CLI uses (its footer names it).
    assert!(screen.contains(MODEL), "{screen}");

    say(&world, &tmux, "Say hello.");
    let screen = say(&world, &tmux, "And once more.");
    assert!(screen.contains(&format!("{HEARD}Say hello.")), "{screen}");
    assert!(!screen.contains(REAL_KEY), "{screen}");

    // Every request reached the "vendor" with the real key, put there by the vault; the turns were
    // streamed from the agent's model (the CLI's side questions, e.g. a summary, use a small model
    // of its own choosing).
    let seen = world.seen();
    let streamed: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path.contains(":streamGenerateContent"))
        .collect();
    assert!(streamed.len() >= 2, "{seen:#?}");
    for request in &streamed {
        assert_eq!(
            request.path,
            format!("/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"),
            "{request:#?}"
        );
    }
    for request in &seen {
        assert_eq!(request.header("x-goog-api-key"), Some(REAL_KEY), "{request:#?}");
    }

    // The sandbox holds the stub only: in the agent's environment and nowhere in its home.
    let id = session(&world);
    let stub = lap(&world.home, ["exec", &id, "--", "printenv", "GEMINI_API_KEY"]).success();
    assert!(!stub.out().is_empty() && stub.out() != REAL_KEY, "{stub}");
    support::assert_no_file_in_the_sandbox_holds(&world.home, &id, REAL_KEY);

    // The vault's log shows the swap on each model call, and nothing else got out.
    let egress = lap(&world.home, ["--json", "sessions", "egress", &id]).success().json();
    let calls: Vec<&Value> = egress
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["host"] == HOST && r["path"].as_str().unwrap_or("").contains(":streamGenerateContent"))
        .collect();
    assert!(calls.len() >= 2, "{egress:#}");
    for record in &calls {
        assert_eq!(record["swapped"], json!(["GEMINI_API_KEY"]), "{record:#}");
        assert_eq!(record["status"], 200, "{record:#}");
    }
    for record in egress.as_array().unwrap() {
        if record["host"] != HOST {
            assert!(record["blocked"].is_string(), "{record:#}");
        }
    }
    assert!(!world.server.log().contains(REAL_KEY));

    // Ctrl-D detaches; the session stays.
    tmux.key("C-d");
    tmux.until("lap to exit", |s| s.contains("LAP-EXIT=0"));
}

/// The streamed model requests whose last user text is `text`.
fn requests_for(world: &World, text: &str) -> Vec<Value> {
    world
        .seen()
        .iter()
        .filter(|s| s.path.contains(":streamGenerateContent"))
        .map(Seen::json)
        .filter(|body| last_user_text(body) == text)
        .collect()
}

#[test]
fn a_gemini_conversation_goes_on_after_a_restart_of_lap_serve() {
    let Some(mut world) = start() else { return };
    agent(&world, "gem", REAL_KEY);
    let tmux = open(&world, "gem");
    tmux.until_within(GEMINI_WAIT, "gemini's prompt", |s| s.contains("Type your message"));
    say(&world, &tmux, "Remember the word PINEAPPLE.");
    let id = session(&world);
    tmux.key("C-d");
    tmux.until("lap to exit", |s| s.contains("LAP-EXIT=0"));
    drop(tmux);

    // Stop `lap serve` and start it again on the same store; `lap gem` comes back to the session,
    // its screen as it was, and the conversation goes on through the vault.
    world.server.restart();
    let tmux = open_in(&world, "gemini-gem-again", "gem");
    until_shown(
        &world,
        &tmux,
        "the session's screen, repainted",
        &format!("{HEARD}Remember the word PINEAPPLE."),
    );
    // (No `?` in it: typed into gemini's input box, it opens the shortcuts panel.)
    let screen = say(&world, &tmux, "Still there.");
    assert!(!screen.contains(REAL_KEY), "{screen}");
    assert_eq!(session(&world), id);
    let after = requests_for(&world, "Still there.");
    assert!(!after.is_empty(), "{:#?}", world.seen());
    for body in &after {
        let said = body.to_string();
        assert!(said.contains("PINEAPPLE"), "the conversation did not go on: {body:#}");
        assert!(
            said.contains(&format!("{HEARD}Remember the word PINEAPPLE.")),
            "{body:#}"
        );
    }
    for request in world.seen() {
        assert_eq!(request.header("x-goog-api-key"), Some(REAL_KEY), "{request:#?}");
    }
    let egress = lap(&world.home, ["--json", "sessions", "egress", &id]).success().json();
    let calls = egress
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["host"] == HOST && r["path"].as_str().unwrap_or("").contains(":streamGenerateContent"))
        .count();
    assert!(calls >= 2, "{egress:#}");
    assert!(!world.server.log().contains(REAL_KEY));
    tmux.key("C-d");
    tmux.until("lap to exit", |s| s.contains("LAP-EXIT=0"));
}

#[test]
fn a_gemini_key_the_vendor_refuses_shows_googles_error_in_the_terminal() {
    let Some(world) = start() else { return };
    agent(&world, "badkey", "AIzaSyNotTheKeyTheFakeApiKnows000000000");
    let tmux = open(&world, "badkey");
    tmux.until_within(GEMINI_WAIT, "gemini's prompt", |s| s.contains("Type your message"));
    submit(&world, &tmux, "Say hello.");
    let screen = until_shown(&world, &tmux, "the API's refusal", "API key not valid");
    assert!(!screen.contains(HEARD), "{screen}");
    let seen = world.seen();
    assert!(
        seen.iter()
            .any(|s| s.header("x-goog-api-key").is_some_and(|k| k.starts_with("AIzaSyNot"))),
        "{seen:#?}"
    );
}
