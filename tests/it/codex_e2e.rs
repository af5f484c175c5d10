//! End to end with the real `codex` CLI (npm `@openai/codex`, the version in scripts/tool-versions,
//! installed by scripts/test.sh): the `codex-app-server` harness through `lap send`, and the `codex`
//! TUI in tmux. The agent's `OPENAI_API_KEY` is bound to `api.openai.com` (the preset); the sandbox
//! holds a stub, and the vault, resolving `api.openai.com:443` to the fake OpenAI API on this
//! machine's loopback (tests/it/support/fake_openai.rs, TLS from a test CA), swaps in the real key.
//! No config is given to codex but what the harness writes on its first run: it uses its built-in
//! `openai` provider exactly as a new user's codex would. Nothing leaves the machine: egress
//! defaults to deny and the agent may reach `api.openai.com` only, which resolves to loopback.

use std::time::Duration;

use crate::support;
use crate::support::fake_openai::{REPLY, RUN_PWD, SLOW, SLOW_FIRST, World, with_tool_path};
use crate::support::tmux::Tmux;

const REAL_KEY: &str = "sk-proj-TheRealOpenAiKeyThatOnlyTheVaultHolds-0123456789";
/// How long the real CLI may take to draw or answer (started cold, it also falls back from the
/// Responses WebSocket to HTTPS first).
const CODEX_WAIT: Duration = Duration::from_secs(90);
/// How long codex's composer must be quiet after the typed text shows before Enter: keys that come
/// in a burst are taken as a paste, and an Enter in it as a new line, not a submit.
const PASTE_BURST: Duration = Duration::from_millis(300);
const INSTALL: &str = "npm install -g @openai/codex";

fn world() -> Option<World> {
    World::start("codex", INSTALL, REAL_KEY)
}

/// Creates agent `name` of `harness` with model `model`, its `OPENAI_API_KEY` the real key.
fn agent(world: &World, name: &str, harness: &str, model: &str) {
    world
        .home
        .lap()
        .env("OPENAI_API_KEY", REAL_KEY)
        .run(with_tool_path(&[
            "agents",
            "create",
            name,
            "--harness",
            harness,
            "--model",
            model,
            "--credential",
            "OPENAI_API_KEY",
            "--allow-out",
            "api.openai.com",
        ]))
        .success();
}

#[test]
fn codex_app_server_answers_through_the_vault_with_no_config_streams_resumes_and_aborts() {
    let Some(mut world) = world() else { return };
    agent(&world, "cx", "codex-app-server", "gpt-fake-1");

    // The first message of a new user: nothing configured but the agent.
    let sent = world.lap(["send", "cx", "Remember the word PINEAPPLE."]);
    assert_eq!(sent.code, 0, "{sent}\n{}", world.context());
    assert_eq!(sent.out(), REPLY.concat(), "{sent}");
    let session = world.session();

    // A second turn, streamed, in the same thread: codex sends the first turn along.
    let streamed = world.lap(["send", "--stream", "cx", "Once more."]);
    assert_eq!(streamed.code, 0, "{streamed}");
    assert_eq!(streamed.stdout, format!("{}\n", REPLY.concat()), "{streamed}");
    let turns = world.api.turns();
    let last = turns.last().unwrap();
    assert!(last.stream, "{last:#?}");
    assert_eq!(last.model.as_deref(), Some("gpt-fake-1"), "{last:#?}");
    assert!(last.texts.iter().any(|t| t.contains("PINEAPPLE")), "{last:#?}");
    assert!(last.texts.iter().any(|t| t.contains("Once more.")), "{last:#?}");

    // A turn with a tool call: the model asks to run `pwd`, codex runs it in the sandbox and the
    // model gets its output back.
    let ran = world.lap(["send", "--json", "cx", &format!("{RUN_PWD} now")]);
    assert_eq!(ran.code, 0, "{ran}\n{}", world.context());
    let ran = ran.json();
    let parts = ran["parts"].as_array().unwrap();
    let tool = parts
        .iter()
        .find(|p| p["type"] == "tool")
        .unwrap_or_else(|| panic!("{ran:#}"));
    assert_eq!(tool["tool"], "commandExecution", "{ran:#}");
    assert_eq!(tool["state"]["status"], "completed", "{ran:#}");
    let text = parts.last().unwrap()["text"].as_str().unwrap_or_default().to_owned();
    let dir = text.strip_prefix("ran pwd: ").unwrap_or_else(|| panic!("{ran:#}"));
    assert!(dir.starts_with('/'), "{ran:#}");
    assert!(
        tool["state"]["output"].as_str().unwrap_or_default().contains(dir),
        "{ran:#}"
    );

    // Abort a running turn: the reply is slow, POST …/abort stops it.
    let (child, reader) = world.send_until("cx", &format!("{SLOW} please"), SLOW_FIRST, CODEX_WAIT);
    let (status, body) = world.post(&format!("/api/v1/managed_agents/sessions/{session}/abort"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"aborted\":true"), "{body}");
    let out = child.wait_with_output().unwrap();
    let printed = reader.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !printed.contains(&".".repeat(100)),
        "the slow reply ran to its end: {printed}"
    );

    // After a restart of `lap serve`, the conversation goes on in codex's own thread.
    world.server.restart();
    let after = world.lap(["send", "cx", "Still there?"]);
    assert_eq!(after.code, 0, "{after}\n{}", world.context());
    assert_eq!(after.out(), REPLY.concat(), "{after}");
    let last = world.api.turns().pop().unwrap();
    assert!(last.texts.iter().any(|t| t.contains("PINEAPPLE")), "{last:#?}");
    assert!(last.texts.iter().any(|t| t.contains("Still there?")), "{last:#?}");

    world.assert_the_sandbox_holds_only_the_stub(&session, REAL_KEY, Some(".codex/auth.json"));
    let egress = world.lap(["--json", "sessions", "egress", &session]).success().json();
    let swapped: Vec<&serde_json::Value> = egress
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["host"] == "api.openai.com" && r["status"] == 200)
        .collect();
    assert!(!swapped.is_empty(), "{egress:#}");
    for record in swapped {
        assert_eq!(record["swapped"], serde_json::json!(["OPENAI_API_KEY"]), "{record:#}");
    }
}

/// A key the API refuses: the turn fails with OpenAI's 401 and a hint naming codex's sign-in file
/// and the credential's binding.
#[test]
fn a_refused_key_fails_the_turn_with_codexs_own_hint() {
    let Some(world) = world() else { return };
    world
        .home
        .lap()
        .env("OPENAI_API_KEY", "sk-proj-AnOldRevokedKey-0000000000000000")
        .run(with_tool_path(&[
            "agents",
            "create",
            "old",
            "--harness",
            "codex-app-server",
            "--credential",
            "OPENAI_API_KEY",
            "--allow-out",
            "api.openai.com",
        ]))
        .success();
    let refused = world.lap(["send", "old", "hi"]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(refused.stderr.contains("401 Unauthorized"), "{refused}");
    // OpenAI shows the refused key masked; the vault scrubs even that form back to the stub's.
    assert!(refused.stderr.contains("Incorrect API key provided: "), "{refused}");
    assert!(!refused.stderr.contains("AnOldRevokedKey"), "{refused}");
    assert!(
        refused.stderr.contains("hint: the model's API refused the key"),
        "{refused}"
    );
    assert!(refused.stderr.contains("auth.json"), "{refused}");
    assert!(refused.stderr.contains("lap agents show"), "{refused}");
    let seen = world.api.seen();
    assert!(!seen.is_empty());
    for request in &seen {
        assert_eq!(request.status, 401, "{request:#?}");
        assert_eq!(
            request.authorization.as_deref(),
            Some("Bearer sk-proj-AnOldRevokedKey-0000000000000000"),
            "{request:#?}"
        );
    }
}

#[test]
fn a_codex_session_opens_at_the_prompt_uses_the_agents_model_answers_through_the_vault_and_goes_on_after_a_restart() {
    let Some(mut world) = world() else { return };
    agent(&world, "cxt", "codex", "gpt-fake-2");
    let tmux = open(&world, "codex-tui", "cxt");
    // Straight to codex's composer: no sign-in chooser, no trust question.
    let screen = tmux.until_within(CODEX_WAIT, "codex's prompt", |s| {
        s.contains("gpt-fake-2") && s.contains('›')
    });
    for question in ["Sign in with ChatGPT", "Do you trust", "API key"] {
        assert!(!screen.contains(question), "a first-run question: {question}\n{screen}");
    }
    submit(&tmux, "Remember the word PINEAPPLE.");
    let screen = tmux.until_within(CODEX_WAIT, "the fake API's reply", |s| s.contains("fake OpenAI API"));
    assert!(!screen.contains(REAL_KEY), "{screen}");
    let turns = world.api.turns();
    assert!(!turns.is_empty(), "{}", world.context());
    for turn in &turns {
        assert_eq!(turn.model.as_deref(), Some("gpt-fake-2"), "{turn:#?}");
        assert_eq!(
            turn.authorization.as_deref(),
            Some(format!("Bearer {REAL_KEY}").as_str())
        );
    }

    // Ctrl-D detaches; the session stays for `lap cxt` to come back to.
    tmux.key("C-d");
    tmux.until("lap to exit", |s| s.contains("LAP-EXIT=0"));
    let id = world.session();
    drop(tmux);

    // Stop `lap serve` and start it again on the same store: `lap cxt` comes back to the session,
    // its screen as it was, and the conversation goes on in codex's own thread, through the vault.
    world.server.restart();
    let tmux = open(&world, "codex-tui-again", "cxt");
    tmux.until_within(CODEX_WAIT, "the session's screen, repainted", |s| {
        s.contains("Remember the word PINEAPPLE.") && s.contains("fake OpenAI API")
    });
    submit(&tmux, "Still there.");
    tmux.until_within(CODEX_WAIT, "the second reply", |s| {
        s.matches("fake OpenAI API").count() >= 2
    });
    let after: Vec<_> = world
        .api
        .turns()
        .into_iter()
        .filter(|t| t.texts.iter().any(|text| text.contains("Still there.")))
        .collect();
    assert!(!after.is_empty(), "{:#?}", world.api.seen());
    for turn in &after {
        assert!(
            turn.texts.iter().any(|t| t.contains("PINEAPPLE")),
            "the conversation did not go on: {turn:#?}"
        );
        assert_eq!(turn.model.as_deref(), Some("gpt-fake-2"), "{turn:#?}");
    }
    assert_eq!(world.session(), id, "{}", world.context());
    for turn in &world.api.turns() {
        assert_eq!(
            turn.authorization.as_deref(),
            Some(format!("Bearer {REAL_KEY}").as_str())
        );
    }
    tmux.key("C-d");
    tmux.until("lap to exit", |s| s.contains("LAP-EXIT=0"));
    assert!(!world.server.log().contains(REAL_KEY));
}

/// `lap AGENT` in a new tmux session `name`, in the world's home and nothing else of this
/// environment; it echoes `LAP-EXIT=<code>` when `lap` exits.
fn open(world: &World, name: &str, agent: &str) -> Tmux {
    let tmux = Tmux::shell(name, (120, 40), "");
    tmux.keys(&format!(
        "env -i {} {} {agent}; echo LAP-EXIT=$?\n",
        world.home.env_words(),
        support::LAP
    ));
    tmux
}

/// Types `text` into codex's composer and submits it once it shows there.
fn submit(tmux: &Tmux, text: &str) {
    tmux.keys(text);
    tmux.until_within(CODEX_WAIT, &format!("{text:?} in codex's composer"), |s| {
        s.contains(&format!("› {text}"))
    });
    std::thread::sleep(PASTE_BURST);
    tmux.key("Enter");
}
