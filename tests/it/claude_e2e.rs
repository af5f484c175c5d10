//! End to end with the real `claude` CLI (npm `@anthropic-ai/claude-code`, the version in
//! scripts/tool-versions, installed by scripts/test.sh): the `claude-agent-sdk` harness through
//! `lap send`, and the `claude-code` TUI in tmux. The agent's `ANTHROPIC_API_KEY` is bound to
//! `api.anthropic.com` (the preset); the sandbox holds a stub, and the vault, resolving
//! `api.anthropic.com:443` to a fake Anthropic Messages API on this machine's loopback
//! (tests/it/support/vendor.rs, TLS from a test CA), swaps in the real key. No config is given to the
//! CLI: it calls its built-in `https://api.anthropic.com` as a new user's would.
//!
//! The fake behaves as Anthropic documents `POST /v1/messages`: with `stream: true` an SSE stream
//! (`event: message_start`, `content_block_start`, `ping`, `content_block_delta`s of `text_delta`,
//! `content_block_stop`, `message_delta` with `stop_reason`, `message_stop`), else one `message`
//! object; a missing or wrong `x-api-key` gets 401 with the error object
//! (`{"type":"error","error":{"type":"authentication_error",…}}`), another path 404. A user
//! message containing [`HANG`] gets the start of a streamed reply and then nothing, the response
//! held open (a model that stalls), for the abort test. Nothing leaves the machine: egress
//! defaults to deny, the agent may reach `api.anthropic.com` only, which resolves to loopback, and
//! the CLI's non-essential traffic is switched off.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support;
use crate::support::anthropic::{
    conversation, error, last_user_text, message_start, streamed, streamed_text, streamed_tool_call, tool_result,
};
use crate::support::lap;
use crate::support::tmux::Tmux;
use crate::support::vendor::{Reply, Seen, World, send_until, tool_path_env};
use crate::support::{require, wait_until, wait_within};

const HOST: &str = "api.anthropic.com";
const REAL_KEY: &str = "sk-ant-api03-TheRealKeyThatOnlyTheVaultHolds-0123456789";
const MODEL: &str = "claude-fake-1";
/// How long the real CLI may take to draw or answer (it is a large program, started cold).
const CLAUDE_WAIT: Duration = Duration::from_secs(60);
const REPLY: &[&str] = &["Hello from the ", "fake Anthropic API", ", through the vault."];
/// A user message containing this gets the start of a reply, then a response held open.
const HANG: &str = "HOLD-THE-LINE";
/// The part of the held reply that is sent (the test waits for it before it aborts).
const HANG_FIRST: &str = "Thinking slowly";
/// A user message containing this gets no answer at all, not even a status line, until the
/// client goes away.
const SILENT: &str = "HOLD-SILENTLY";
/// A user message containing this gets a `Bash` tool call printing the SHA-256 of the agent's
/// `ANTHROPIC_API_KEY` (a digest: the stub itself would be refused by the vault on its way back to
/// the model, outside its injection point); the call's result then gets the reply `ran: OUTPUT`.
const RUN_ENV: &str = "RUN-ENV";
const KEY_DIGEST: &str = "printf %s \"$ANTHROPIC_API_KEY\" | sha256sum";
/// How soon `lap sessions abort` must end a held turn: well inside the server's 10 s grace for an
/// interrupted tool, so it is the CLI honouring the interrupt, not the tool being killed.
const ABORT_PROMPTLY: Duration = Duration::from_secs(6);

/// The Anthropic Messages API as far as the CLI needs it, answering `REAL_KEY` only.
fn anthropic_api(request: &Seen) -> Reply {
    let path = request.path.split('?').next().unwrap_or("");
    if request.method != "POST" || path != "/v1/messages" {
        return error(404, "not_found_error", &format!("{} {path} not found", request.method)).into();
    }
    match request.header("x-api-key") {
        Some(REAL_KEY) => {}
        _ => return error(401, "authentication_error", "invalid x-api-key").into(),
    }
    let body = request.json();
    let model = body["model"].as_str().unwrap_or(MODEL).to_owned();
    if body["stream"] != true {
        let message = json!({
            "id": "msg_fake_whole", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": REPLY.concat()}], "stop_reason": "end_turn",
            "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 9}
        });
        return (200, "application/json", message.to_string()).into();
    }
    if let Some(output) = tool_result(&body) {
        return streamed_text(&model, &[&format!("ran: {}", output.trim())]);
    }
    let said = last_user_text(&body);
    if said.contains(RUN_ENV) {
        return streamed_tool_call(
            &model,
            "toolu_fake_env",
            "Bash",
            json!({"command": KEY_DIGEST, "description": "Digest the key"}),
        );
    }
    if said.contains(SILENT) {
        return Reply {
            silent: true,
            ..streamed(Vec::new())
        };
    }
    if said.contains(HANG) {
        let events = [
            message_start(&model),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": HANG_FIRST}}),
        ];
        return Reply {
            hang: true,
            ..streamed(events.to_vec())
        };
    }
    streamed_text(&model, REPLY)
}

fn start() -> Option<World> {
    if !require("claude", "npm install -g @anthropic-ai/claude-code") {
        return None;
    }
    Some(World::start(HOST, anthropic_api))
}

/// Creates agent `name` of `harness` with the agent's model, its `ANTHROPIC_API_KEY` the real key
/// (bound to api.anthropic.com by the preset), allowed out to that host only. Nothing else: the
/// CLI finds the API at its built-in address.
fn agent(world: &World, name: &str, harness: &str) {
    agent_with_key(world, name, harness, REAL_KEY);
}

/// [`agent`] with `key` as its `ANTHROPIC_API_KEY`.
fn agent_with_key(world: &World, name: &str, harness: &str, key: &str) {
    let path = tool_path_env();
    let mut args = vec![
        "agents",
        "create",
        name,
        "--harness",
        harness,
        "--model",
        MODEL,
        "--credential",
        "ANTHROPIC_API_KEY",
        "--allow-out",
        HOST,
    ];
    if let Some(path) = &path {
        args.extend(["--env", path]);
    }
    world.home.lap().env("ANTHROPIC_API_KEY", key).run(args).success();
}

fn session(world: &World) -> String {
    lap(&world.home, ["--json", "sessions", "list"]).success().json()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The model requests (`POST /v1/messages`) the fake saw, as JSON.
fn turns(world: &World) -> Vec<(Seen, Value)> {
    world
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path.split('?').next() == Some("/v1/messages"))
        .map(|s| {
            let body = s.json();
            (s, body)
        })
        .collect()
}

/// The streamed model request that carried the user's `text` last.
fn turn_of(world: &World, text: &str) -> Value {
    turns(world)
        .into_iter()
        .rev()
        .map(|(_, body)| body)
        .find(|body| body["stream"] == true && last_user_text(body) == text)
        .unwrap_or_else(|| panic!("no model request for {text:?}\n{}", context(world)))
}

/// The agent's `ANTHROPIC_API_KEY` as a command in its sandbox sees it (asserting it is no real
/// value, and that no real value is in that environment).
fn stub_of(world: &World, id: &str) -> String {
    let env = lap(&world.home, ["exec", id, "--", "env"]).success();
    let stub = env
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("ANTHROPIC_API_KEY="))
        .unwrap_or_else(|| panic!("no ANTHROPIC_API_KEY in the sandbox:\n{env}"))
        .to_owned();
    assert_ne!(stub, REAL_KEY);
    assert!(!env.stdout.contains(REAL_KEY), "{env}");
    stub
}

/// The SHA-256 of `text` in hex, as `sha256sum` prints it.
fn sha256(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the fake saw, and the server's log, for a failure message.
fn context(world: &World) -> String {
    let seen: Vec<(String, String, String)> = world
        .seen()
        .iter()
        .map(|s| {
            (
                s.path.clone(),
                s.header("x-api-key").unwrap_or("-").to_owned(),
                last_user_text(&s.json()),
            )
        })
        .collect();
    format!("the fake saw: {seen:#?}\nserver log:\n{}", world.server.log())
}

#[test]
fn claude_agent_sdk_answers_plain_and_streamed_continues_aborts_a_hang_and_resumes_after_a_restart() {
    let Some(mut world) = start() else { return };
    agent(&world, "claude", "claude-agent-sdk");

    // The reply arrives whole.
    let sent = lap(&world.home, ["send", "claude", "Remember the word PINEAPPLE."]);
    assert_eq!(sent.code, 0, "{sent}\n{}", context(&world));
    assert_eq!(sent.out(), REPLY.concat(), "{sent}");
    let id = session(&world);

    // A second turn, streamed as it arrives, continues the conversation: the model gets the first
    // turn, the user's words and its own reply, along.
    let streamed = lap(&world.home, ["send", "--stream", "claude", "Once more."]);
    assert_eq!(streamed.code, 0, "{streamed}\n{}", context(&world));
    assert_eq!(streamed.stdout, format!("{}\n", REPLY.concat()), "{streamed}");
    let second = turn_of(&world, "Once more.");
    assert_eq!(second["model"], MODEL, "{second:#}");
    let said = conversation(&second);
    assert!(said.iter().any(|t| t.contains("PINEAPPLE")), "{said:#?}");
    assert!(said.iter().any(|t| t == &REPLY.concat()), "{said:#?}");

    // The agent's own view: the model asks for a `Bash` call that digests the agent's key; Claude
    // runs it in the sandbox and the model gets the output back. It is the stub's digest.
    let ran = lap(&world.home, ["send", "--json", "claude", &format!("{RUN_ENV} now")]);
    assert_eq!(ran.code, 0, "{ran}\n{}", context(&world));
    let ran = ran.json();
    let parts = ran["parts"].as_array().unwrap();
    let tool = parts
        .iter()
        .find(|p| p["type"] == "tool")
        .unwrap_or_else(|| panic!("{ran:#}"));
    assert_eq!(tool["tool"], "Bash", "{ran:#}");
    assert_eq!(tool["state"]["status"], "completed", "{ran:#}");
    assert_eq!(tool["state"]["input"]["command"], KEY_DIGEST, "{ran:#}");
    let text = parts.last().unwrap()["text"].as_str().unwrap_or_default().to_owned();
    let digest = text
        .strip_prefix("ran: ")
        .and_then(|out| out.split_whitespace().next())
        .unwrap_or_else(|| panic!("{ran:#}"))
        .to_owned();
    let stub = stub_of(&world, &id);
    assert_eq!(digest, sha256(&stub), "the agent's key is not the stub: {ran:#}");
    assert_ne!(digest, sha256(REAL_KEY));

    // Abort: the model stalls mid-reply; `lap sessions abort` ends the turn promptly and the held
    // request is given up; so does Ctrl-C in `lap send`; the session takes the next turn.
    let (child, reader) = send_until(
        &world.home,
        "claude",
        &format!("{HANG} and answer slowly."),
        HANG_FIRST,
        CLAUDE_WAIT,
    );
    let aborted = lap(&world.home, ["sessions", "abort", &id]);
    assert_eq!(aborted.code, 0, "{aborted}\n{}", context(&world));
    let out = wait_within(child, ABORT_PROMPTLY, "the aborted `lap send`");
    let printed = reader.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{printed}\n{stderr}\n{}", context(&world));
    assert!(stderr.contains("abort"), "{stderr}");
    wait_until("the CLI giving up the held response", CLAUDE_WAIT, || {
        *world.hangs_ended.lock().unwrap() >= 1
    });
    // Ctrl-C in `lap send` aborts the turn the same way (exit 130).
    let (child, reader) = send_until(
        &world.home,
        "claude",
        &format!("{HANG} once more."),
        HANG_FIRST,
        CLAUDE_WAIT,
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = wait_within(child, ABORT_PROMPTLY, "`lap send` after Ctrl-C");
    let printed = reader.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{printed}\n{stderr}\n{}", context(&world));
    wait_until("the CLI giving up the second held response", CLAUDE_WAIT, || {
        *world.hangs_ended.lock().unwrap() >= 2
    });
    // A model that never starts answering (no status line even): the abort ends that turn too.
    let child = std::process::Command::new(support::LAP)
        .args(["send", "claude", &format!("{SILENT} now")])
        .env_clear()
        .envs(world.home.env())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the silent turn reaching the fake", CLAUDE_WAIT, || {
        turns(&world)
            .iter()
            .any(|(_, body)| last_user_text(body).contains(SILENT))
    });
    let aborted = lap(&world.home, ["sessions", "abort", &id]);
    assert_eq!(aborted.code, 0, "{aborted}\n{}", context(&world));
    let out = wait_within(child, ABORT_PROMPTLY, "the aborted silent `lap send`");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        context(&world)
    );
    wait_until("the CLI giving up the silent request", CLAUDE_WAIT, || {
        *world.hangs_ended.lock().unwrap() >= 3
    });
    let after_abort = lap(&world.home, ["send", "claude", "After the abort."]);
    assert_eq!(after_abort.code, 0, "{after_abort}\n{}", context(&world));
    assert_eq!(after_abort.out(), REPLY.concat(), "{after_abort}");

    // After a restart of `lap serve`, the same session goes on with the conversation; and after
    // another (the resumed conversation is resumed in turn).
    for text in ["Still there?", "And now?"] {
        world.server.restart();
        let after = lap(&world.home, ["send", "claude", text]);
        assert_eq!(after.code, 0, "{after}\n{}", context(&world));
        assert_eq!(after.out(), REPLY.concat(), "{after}");
        assert_eq!(session(&world), id);
        let said = conversation(&turn_of(&world, text));
        assert!(said.iter().any(|t| t.contains("PINEAPPLE")), "{said:#?}");
        assert!(said.iter().any(|t| t.contains("After the abort.")), "{said:#?}");
    }
    let said = conversation(&turn_of(&world, "And now?"));
    assert!(said.iter().any(|t| t.contains("Still there?")), "{said:#?}");

    // The upstream saw the real key on every request, put there by the vault.
    let seen = world.seen();
    assert!(turns(&world).len() >= 9, "{}", context(&world));
    for request in &seen {
        assert_eq!(request.header("x-api-key"), Some(REAL_KEY), "{}", context(&world));
        assert!(
            request.header("authorization").is_none_or(|a| !a.contains("stub")),
            "{request:#?}"
        );
    }
    let egress = lap(&world.home, ["--json", "sessions", "egress", &id]).success().json();
    let swapped: Vec<&Value> = egress
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["host"] == HOST && r["path"].as_str().unwrap_or("").starts_with("/v1/messages"))
        .collect();
    assert!(swapped.len() >= 9, "{egress:#}");
    for record in &swapped {
        assert_eq!(record["swapped"], json!(["ANTHROPIC_API_KEY"]), "{record:#}");
    }
    // Nothing else was let out: any other host was refused by the vault, not reached.
    for record in egress.as_array().unwrap() {
        if record["host"] != HOST {
            assert!(record["blocked"].is_string(), "{record:#}");
        }
    }

    // The sandbox holds only the stub: in the environment of a command in it, and in no file under
    // HOME or /tmp.
    assert_eq!(stub_of(&world, &id), stub);
    // The running CLI: resumed after the restart, one process, started with `--resume`.
    let agents = lap(
        &world.home,
        [
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "for d in /proc/[0-9]*; do \
               if tr '\\0' ' ' < $d/cmdline 2>/dev/null | grep -q -- '--input-forma[t] stream-json'; then \
                 echo \"CMDLINE $(tr '\\0' ' ' < $d/cmdline)\"; \
               fi; \
             done",
        ],
    )
    .success();
    let cmdlines: Vec<&str> = agents.stdout.lines().filter(|l| l.starts_with("CMDLINE ")).collect();
    assert_eq!(cmdlines.len(), 1, "{agents}");
    assert!(cmdlines[0].contains("--resume"), "{agents}");
    support::assert_no_file_in_the_sandbox_holds(&world.home, &id, REAL_KEY);
    assert!(!world.server.log().contains(REAL_KEY));

    // The conversation is kept like any other: each user message and Claude's reply.
    let history = world.server.http_get(
        &format!("/api/v1/managed_agents/sessions/{id}/messages"),
        Some(&world.server.master_key()),
    );
    assert_eq!(history.0, 200, "{}", history.1);
    let history: Value = serde_json::from_str(&history.1).unwrap();
    // Each turn as (role, finish, last text): the aborted one kept with what had arrived.
    let turns: Vec<(String, String, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let text = m["parts"].as_array().and_then(|p| p.last()).map(|p| p["text"].clone());
            (
                m["info"]["role"].as_str().unwrap_or_default().to_owned(),
                m["info"]["finish"].as_str().unwrap_or_default().to_owned(),
                text.and_then(|t| t.as_str().map(str::to_owned)).unwrap_or_default(),
            )
        })
        .collect();
    let reply = REPLY.concat();
    let expected = [
        ("user", "", "Remember the word PINEAPPLE."),
        ("assistant", "stop", reply.as_str()),
        ("user", "", "Once more."),
        ("assistant", "stop", reply.as_str()),
        ("user", "", &format!("{RUN_ENV} now")),
        ("assistant", "stop", &format!("ran: {digest}  -")),
        ("user", "", &format!("{HANG} and answer slowly.")),
        ("assistant", "interrupted", HANG_FIRST),
        ("user", "", &format!("{HANG} once more.")),
        ("assistant", "interrupted", HANG_FIRST),
        ("user", "", &format!("{SILENT} now")),
        ("assistant", "interrupted", ""),
        ("user", "", "After the abort."),
        ("assistant", "stop", reply.as_str()),
        ("user", "", "Still there?"),
        ("assistant", "stop", reply.as_str()),
        ("user", "", "And now?"),
        ("assistant", "stop", reply.as_str()),
    ]
    .map(|(role, finish, text)| (role.to_owned(), finish.to_owned(), text.to_owned()));
    assert_eq!(turns, expected, "{history:#}");
}

#[test]
fn a_claude_code_session_opens_at_the_prompt_with_no_first_run_questions_answers_and_goes_on_after_a_restart() {
    let Some(mut world) = start() else { return };
    agent(&world, "cc", "claude-code");
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
    let first = turns(&world);
    assert!(!first.is_empty(), "{}", context(&world));
    for (request, _) in &first {
        assert_eq!(request.header("x-api-key"), Some(REAL_KEY), "{}", context(&world));
    }

    // Ctrl-D detaches; the session stays for `lap cc` to come back to.
    tmux.key("C-d");
    tmux.until("lap to exit", |s| s.contains("LAP-EXIT=0"));
    let sessions = lap(home, ["--json", "sessions", "list"]).success().json();
    assert_eq!(sessions[0]["status"], "ready", "{sessions:#}");
    drop(tmux);

    // Also after a restart of `lap serve`: the screen as it was, and the conversation goes on.
    world.server.restart();
    let tmux = Tmux::shell("claude-tui-again", (120, 40), "");
    tmux.keys(&format!(
        "env -i {} {} cc; echo LAP-EXIT=$?\n",
        world.home.env_words(),
        env!("CARGO_BIN_EXE_lap")
    ));
    tmux.until_within(CLAUDE_WAIT, "the session's screen, repainted", |s| {
        s.contains("fake Anthropic API")
    });
    tmux.keys("Once more.");
    tmux.key("Enter");
    tmux.until_within(CLAUDE_WAIT, "the second reply", |s| {
        s.matches("fake Anthropic API").count() >= 2
    });
    let said = conversation(&turn_of(&world, "Once more."));
    assert!(said.iter().any(|t| t.contains("Say hello.")), "{said:#?}");
    assert!(said.iter().any(|t| t == &REPLY.concat()), "{said:#?}");
    for (request, _) in &turns(&world) {
        assert_eq!(request.header("x-api-key"), Some(REAL_KEY), "{}", context(&world));
    }
    assert_eq!(session(&world), sessions[0]["id"].as_str().unwrap());
    tmux.key("C-d");
    tmux.until("lap to exit", |s| s.contains("LAP-EXIT=0"));
    assert!(!world.server.log().contains(REAL_KEY));
}

/// A key the API refuses: the turn fails with Anthropic's 401 and a hint naming the credential's
/// binding and how Claude sends its key.
#[test]
fn a_refused_key_fails_the_claude_agent_sdk_turn_with_claudes_own_hint() {
    let Some(world) = start() else { return };
    agent_with_key(
        &world,
        "old",
        "claude-agent-sdk",
        "sk-ant-api03-AnOldRevokedKey-000000000000",
    );
    let refused = lap(&world.home, ["send", "old", "hi"]);
    assert_eq!(refused.code, 1, "{refused}\n{}", context(&world));
    assert!(refused.stderr.contains("401 Unauthorized"), "{refused}");
    assert!(!refused.stderr.contains("AnOldRevokedKey"), "{refused}");
    assert!(
        refused.stderr.contains("hint: the model's API refused the key"),
        "{refused}"
    );
    assert!(refused.stderr.contains("lap agents show"), "{refused}");
    assert!(refused.stderr.contains("x-api-key"), "{refused}");
    let seen = world.seen();
    // Not after Claude's ten retries of the 401 (some three minutes): the first one ends the turn.
    let asked = turns(&world).len();
    assert!((1..=3).contains(&asked), "{}", context(&world));
    for request in &seen {
        assert_eq!(
            request.header("x-api-key"),
            Some("sk-ant-api03-AnOldRevokedKey-000000000000"),
            "{request:#?}"
        );
    }
    // The session is free for the next message (no `409 a turn is already running`).
    let again = lap(&world.home, ["send", "old", "hi again"]);
    assert_eq!(again.code, 1, "{again}");
    assert!(!again.stderr.contains("already running"), "{again}");
    assert!(
        again.stderr.contains("hint: the model's API refused the key"),
        "{again}"
    );
}
