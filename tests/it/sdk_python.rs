//! The Python SDK (`sdk/python`) against a real `lap serve` on the local backend, with real
//! sandboxes: its pytest suite runs with `LAP_URL` and `LAP_MASTER_KEY` pointing at the server, and
//! with `HOME` and `XDG_CONFIG_HOME` of the test's home, whose CLI config and credentials file the
//! server's first start wrote (the SDK's config-file path reads them).
//!
//! The interpreter is `$LAP_SDK_PYTHON`, else the venv `scripts/lib.sh`'s `ensure_sdk_python`
//! makes under `${LAP_TOOLS_DIR:-~/.cache/lap-tools}/sdk-python` (pytest and the SDK's pinned
//! httpx, from PyPI). The worktree's `sdk/python/src` comes first on `PYTHONPATH`, so the source
//! under test is this checkout's. Without the venv the test skips, loudly — unless
//! `LAP_TEST_STRICT=1` (scripts/test.sh), where a missing venv fails it.
//!
//! Two runs: everything but messages on a plain local server with a shell agent, and the message
//! tests (pytest marker `claude`) through the real `claude` CLI against the echoing fake Anthropic
//! API of `support::anthropic` (skipped like the other claude tests when `claude` is missing).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support;
use crate::support::{Home, TestServer, anthropic};

/// How long the whole pytest suite may take.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);

/// The venv's python when it has pytest, mypy and httpx; `None` when there is none.
fn sdk_python() -> Option<PathBuf> {
    let python = match std::env::var_os("LAP_SDK_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => {
            let tools = std::env::var_os("LAP_TOOLS_DIR")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/lap-tools")))?;
            tools.join("sdk-python/bin/python")
        }
    };
    let usable = Command::new(&python)
        .args(["-c", "import httpx, pytest, mypy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    usable.then_some(python)
}

/// The venv's python, or `None` when the test is to skip (outside a strict run).
fn python_or_skip() -> Option<PathBuf> {
    let python = sdk_python();
    if python.is_none() {
        let message =
            "no Python SDK venv (pytest, mypy, httpx): run scripts/test.sh, or `. scripts/lib.sh; ensure_sdk_python`";
        support::skip(message);
    }
    python
}

/// Runs the SDK's pytest suite, marker expression `markers`, against `server` with the
/// environment of `home` and `extra_env`; panics with its output unless every selected test ran
/// and passed.
fn run_pytest(python: &Path, home: &Home, server: &TestServer, markers: &str, extra_env: &[(&str, &str)]) {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/python");
    let child = Command::new(python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-rs",
            "--durations=5",
            "-p",
            "no:cacheprovider",
            "-m",
            markers,
            "tests",
        ])
        .current_dir(&sdk)
        .env_clear()
        .envs(home.env())
        .env("LAP_URL", &server.url)
        .env("LAP_MASTER_KEY", server.master_key())
        .env("PYTHONPATH", sdk.join("src"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(extra_env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pytest");
    let out = support::wait_within(child, SUITE_TIMEOUT, "the SDK's pytest suite");
    let status = out.status;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        status.success(),
        "pytest failed ({status}):\n{stdout}\n{stderr}\nserver log:\n{}",
        server.log()
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.contains(" passed") && !summary.contains("skipped"),
        "every test must run: {summary}\n{stdout}"
    );
    eprintln!("{stdout}");
}

#[test]
fn the_python_sdk_suite_passes_against_a_real_server() {
    let Some(python) = python_or_skip() else { return };
    let home = Home::new();
    let server = TestServer::start_local(&home);
    let _cleanup = support::LocalSandboxes(server.data_dir().to_owned());
    run_pytest(&python, &home, &server, "not claude", &[]);
}

/// Messages need an API harness: the real `claude` on `claude-agent-sdk`, its model the echoing
/// fake Anthropic API (`support::anthropic`, reached through the vault on loopback).
#[test]
fn the_python_sdk_sends_messages_and_streams_typed_events_through_the_real_claude() {
    let Some(python) = python_or_skip() else { return };
    let Some(world) = anthropic::start() else { return };
    anthropic::agent(&world, "sdk-claude");
    run_pytest(
        &python,
        &world.home,
        &world.server,
        "claude",
        &[("LAP_SDK_CLAUDE_AGENT", "sdk-claude")],
    );
}
