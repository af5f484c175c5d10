//! End to end with the real `opencode` CLI (npm `opencode-ai`, the version in scripts/tool-versions,
//! installed by scripts/test.sh): the `opencode` harness (the default of `lap agents create`)
//! through `lap send`, with no config at all — opencode's built-in `openai` provider reads
//! `OPENAI_API_KEY` (a stub in the sandbox) and calls `https://api.openai.com/v1/responses`, which
//! the vault resolves to the fake OpenAI API on this machine's loopback (tests/it/support/fake_openai.rs,
//! TLS from a test CA) and where it swaps in the real key. Nothing leaves the machine: egress
//! defaults to deny, and the agent may reach `api.openai.com` only, which resolves to loopback.
//!
//! A stand-in for `opencode serve` remains for one failure only: a server that never answers, which
//! the harness must give up on with a clear error instead of hanging.

use std::time::{Duration, Instant};

use crate::support;
use crate::support::fake_openai::{REPLY, RUN_PWD, SLOW, SLOW_FIRST, World, with_tool_path};

const REAL_KEY: &str = "sk-proj-TheRealOpenAiKeyOpencodeNeverSees-9876543210";
/// How long the real CLI may take to answer (a large program, started cold).
const OPENCODE_WAIT: Duration = Duration::from_secs(90);
const INSTALL: &str = "npm install -g opencode-ai";

fn world() -> Option<World> {
    World::start("opencode", INSTALL, REAL_KEY)
}

/// Creates agent `name` (the default harness: opencode) with the real `OPENAI_API_KEY` and `extra`
/// arguments.
fn agent(world: &World, name: &str, extra: &[&str]) {
    let mut args = vec![
        "agents",
        "create",
        name,
        "--credential",
        "OPENAI_API_KEY",
        "--allow-out",
        "api.openai.com",
    ];
    args.extend_from_slice(extra);
    world
        .home
        .lap()
        .env("OPENAI_API_KEY", REAL_KEY)
        .run(with_tool_path(&args))
        .success();
}

#[test]
fn opencode_answers_the_first_message_with_no_config_streams_aborts_and_resumes_after_a_restart() {
    let Some(mut world) = world() else { return };
    agent(&world, "oc", &[]);
    let shown = world.lap(["--json", "agents", "show", "oc"]).success().json();
    assert_eq!(shown["harness_id"], "opencode", "{shown:#}");

    // The first message of a new user (opencode 1.18.33 never answers the request that arrives as
    // its port opens: the harness must not wait on it forever).
    let started = Instant::now();
    let sent = world.lap(["send", "oc", "Remember the word PINEAPPLE."]);
    assert_eq!(sent.code, 0, "{sent}\n{}", world.context());
    assert_eq!(sent.out(), REPLY.concat(), "{sent}");
    assert!(started.elapsed() < OPENCODE_WAIT, "{:?}", started.elapsed());
    let session = world.session();

    // A second turn, streamed.
    let streamed = world.lap(["send", "--stream", "oc", "Once more."]);
    assert_eq!(streamed.code, 0, "{streamed}\n{}", world.context());
    assert_eq!(streamed.stdout, format!("{}\n", REPLY.concat()), "{streamed}");
    let last = world.api.turns().pop().unwrap();
    assert!(last.stream, "{last:#?}");
    assert!(last.texts.iter().any(|t| t.contains("PINEAPPLE")), "{last:#?}");
    assert!(last.texts.iter().any(|t| t.contains("Once more.")), "{last:#?}");

    // A turn with a tool call: the model asks to run `pwd`, opencode runs it in the sandbox and the
    // model gets its output back.
    let ran = world.lap(["send", "--json", "oc", &format!("{RUN_PWD} now")]);
    assert_eq!(ran.code, 0, "{ran}\n{}", world.context());
    let ran = ran.json();
    let parts = ran["parts"].as_array().unwrap();
    let tool = parts
        .iter()
        .find(|p| p["type"] == "tool")
        .unwrap_or_else(|| panic!("{ran:#}"));
    assert_eq!(tool["tool"], "bash", "{ran:#}");
    assert_eq!(tool["state"]["status"], "completed", "{ran:#}");
    let text = parts.last().unwrap()["text"].as_str().unwrap_or_default().to_owned();
    let dir = text.strip_prefix("ran pwd: ").unwrap_or_else(|| panic!("{ran:#}"));
    assert!(dir.starts_with('/'), "{ran:#}");
    assert!(
        tool["state"]["output"].as_str().unwrap_or_default().contains(dir),
        "{ran:#}"
    );

    // Abort a running turn.
    let (child, reader) = world.send_until("oc", &format!("{SLOW} please"), SLOW_FIRST, OPENCODE_WAIT);
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
    let after_abort = world.lap(["send", "oc", "After the abort."]);
    assert_eq!(after_abort.code, 0, "{after_abort}\n{}", world.context());

    // After a restart of `lap serve`, opencode's own session goes on.
    world.server.restart();
    let after = world.lap(["send", "oc", "Still there?"]);
    assert_eq!(after.code, 0, "{after}\n{}", world.context());
    assert_eq!(after.out(), REPLY.concat(), "{after}");
    let last = world.api.turns().pop().unwrap();
    assert!(last.texts.iter().any(|t| t.contains("PINEAPPLE")), "{last:#?}");
    assert!(last.texts.iter().any(|t| t.contains("Still there?")), "{last:#?}");

    world.assert_the_sandbox_holds_only_the_stub(&session, REAL_KEY, None);
}

/// A key the API refuses: the turn fails with OpenAI's 401 and a hint naming the credential's binding
/// and opencode's provider.
#[test]
fn a_refused_key_fails_the_turn_with_opencodes_own_hint() {
    let Some(world) = world() else { return };
    world
        .home
        .lap()
        .env("OPENAI_API_KEY", "sk-proj-AnOldRevokedKey-0000000000000000")
        .run(with_tool_path(&[
            "agents",
            "create",
            "old",
            "--credential",
            "OPENAI_API_KEY",
            "--allow-out",
            "api.openai.com",
        ]))
        .success();
    let refused = world.lap(["send", "old", "hi"]);
    assert_eq!(refused.code, 1, "{refused}\n{}", world.context());
    assert!(refused.stderr.contains("Incorrect API key provided"), "{refused}");
    assert!(!refused.stderr.contains("AnOldRevokedKey"), "{refused}");
    assert!(
        refused.stderr.contains("hint: the model's API refused the key"),
        "{refused}"
    );
    assert!(refused.stderr.contains("lap agents show"), "{refused}");
    assert!(refused.stderr.contains("opencode's `openai` provider"), "{refused}");
}

/// A stand-in `opencode serve` that takes connections and never answers (what 1.18.33 does to the
/// first request, forever): the harness gives up at its deadline with an error that says so.
#[test]
fn an_opencode_serve_that_never_answers_fails_the_turn_at_its_deadline_with_a_hint() {
    let Some(world) = world() else { return };
    let silent = support::python_command(
        "import socket, sys, time\n\
         port = int(sys.argv[sys.argv.index('--port') + 1])\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', port)); s.listen(64)\n\
         held = []\n\
         while True:\n    held.append(s.accept()[0])\n",
    );
    agent(
        &world,
        "mute",
        &["--command", &silent, "--env", "LAP_OPENCODE_READY_TIMEOUT=5"],
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let home_env = world.home.env();
    std::thread::spawn(move || {
        let out = std::process::Command::new(support::LAP)
            .args(["send", "mute", "hello?"])
            .env_clear()
            .envs(home_env)
            .stdin(std::process::Stdio::null())
            .output();
        let _ = tx.send(out);
    });
    let out = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            panic!(
                "`lap send` still waits on a server that never answers\n{}",
                world.context()
            )
        })
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("opencode serve did not answer on 127.0.0.1:4096 within 5 s"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
    // The session is free for the next message (no `409 a turn is already running`).
    let again = world.lap(["send", "mute", "hello again?"]);
    assert_eq!(again.code, 1, "{again}");
    assert!(!again.stderr.contains("already running"), "{again}");
}
