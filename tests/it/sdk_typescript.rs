//! The TypeScript SDK (`sdk/typescript`) against a real `lap serve` on the local backend, with real
//! sandboxes: its `node:test` suite, compiled by the SDK's pinned TypeScript (strict), runs with
//! `LAP_URL` and `LAP_MASTER_KEY` pointing at the server, and with `HOME` and `XDG_CONFIG_HOME` of
//! the test's home, whose CLI config and credentials file the server's first start wrote (the SDK's
//! config-file path reads them).
//!
//! Node.js 18 or newer and npm come from PATH; the SDK's dev dependencies (`typescript`,
//! `@types/node`, pinned by `sdk/typescript/package-lock.json`) are installed with `npm ci` when
//! missing, one test at a time. Each test compiles into a directory of its own under
//! `sdk/typescript/build/`, so the two tests may run at once. Without node or npm the test skips,
//! loudly — unless `LAP_TEST_STRICT=1` (scripts/test.sh), where that fails it.
//!
//! Two runs: everything but messages on a plain local server with a shell agent, and the message
//! tests (`tests/messages.test.ts`) through the real `claude` CLI against the echoing fake
//! Anthropic API of `support::anthropic` (skipped like the other claude tests when `claude` is
//! missing).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support;
use crate::support::{Home, TestServer, anthropic};

/// How long the whole suite may take, and its compilation.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);
const COMPILE_TIMEOUT: Duration = Duration::from_secs(300);

/// The suite's files that need an agent of the real `claude` (named in `LAP_SDK_CLAUDE_AGENT`).
const CLAUDE_FILES: &[&str] = &["messages.test.js"];

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/typescript")
}

/// Node's major version, when a `node` is on PATH.
fn node_major() -> Option<u32> {
    let out = Command::new("node").arg("--version").output().ok()?;
    let version = String::from_utf8_lossy(&out.stdout);
    version.trim().trim_start_matches('v').split('.').next()?.parse().ok()
}

/// The SDK's dev dependencies in place (`npm ci` under a lock when missing), or why not.
fn prerequisites() -> Result<(), String> {
    match node_major() {
        None => return Err("no `node` on PATH (apt-get install nodejs npm)".to_owned()),
        Some(major) if major < 18 => return Err(format!("node {major} is too old: the SDK needs 18 or newer")),
        Some(_) => {}
    }
    let dir = sdk_dir();
    let lock = std::fs::File::create(std::env::temp_dir().join("lap-tests-sdk-typescript-npm-ci.lock"))
        .map_err(|e| format!("cannot create the npm lock file: {e}"))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock the npm lock file: {e}"))?;
    if !dir.join("node_modules/typescript/package.json").is_file() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("cannot run `npm ci` in sdk/typescript ({e}); apt-get install npm"))?;
        if !out.status.success() {
            return Err(format!(
                "`npm ci` in sdk/typescript failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// Whether the test can run; `false` means skip (outside a strict run, else it panics).
fn ready_or_skip() -> bool {
    match prerequisites() {
        Ok(()) => true,
        Err(why) => {
            support::skip(&why);
            false
        }
    }
}

/// Runs `command` to its end within `timeout`; its status, stdout and stderr.
fn run(mut command: Command, timeout: Duration, what: &str) -> (std::process::ExitStatus, String, String) {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let out = support::wait_within(child, timeout, what);
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (out.status, text(out.stdout), text(out.stderr))
}

/// A compiled copy of the SDK's sources, tests and examples, removed when dropped.
struct Build(PathBuf);

impl Build {
    /// `tsc -p tsconfig.test.json` into `build/NAME-PID`; panics with the compiler's errors.
    fn compile(name: &str) -> Self {
        let dir = sdk_dir();
        let out = dir.join("build").join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let mut tsc = Command::new("node");
        tsc.arg("node_modules/typescript/bin/tsc")
            .args(["-p", "tsconfig.test.json", "--outDir"])
            .arg(&out)
            .current_dir(&dir);
        let (status, stdout, stderr) = run(tsc, COMPILE_TIMEOUT, "tsc");
        let build = Build(out);
        assert!(status.success(), "tsc failed ({status}):\n{stdout}\n{stderr}");
        build
    }

    /// The compiled test files whose names `select` keeps.
    fn tests(&self, select: impl Fn(&str) -> bool) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.0.join("tests"))
            .expect("read the compiled tests")
            .map(|e| e.expect("a compiled test").path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".test.js") && select(n))
            })
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no compiled tests in {}", self.0.display());
        files
    }
}

impl Drop for Build {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `files` with `node --test` against `server` with the environment of `home` and
/// `extra_env`; panics with the output unless every test ran and passed.
fn run_suite(files: &[PathBuf], home: &Home, server: &TestServer, extra_env: &[(&str, &str)]) {
    let mut node = Command::new("node");
    node.args(["--test", "--test-reporter=tap"])
        .args(files)
        .current_dir(sdk_dir())
        .env_clear()
        .envs(home.env())
        .env("LAP_URL", &server.url)
        .env("LAP_MASTER_KEY", server.master_key())
        .envs(extra_env.iter().copied());
    let (status, stdout, stderr) = run(node, SUITE_TIMEOUT, "the SDK's node:test suite");
    assert!(
        status.success(),
        "the TypeScript SDK's suite failed ({status}):\n{stdout}\n{stderr}\nserver log:\n{}",
        server.log()
    );
    let count = |key: &str| -> u32 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# {key} ")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `# {key}` line in the TAP output:\n{stdout}"))
    };
    assert!(
        count("pass") > 0 && count("fail") == 0 && count("skipped") == 0 && count("todo") == 0,
        "every test must run and pass:\n{stdout}"
    );
    eprintln!("{stdout}");
}

#[test]
fn the_typescript_sdk_suite_passes_against_a_real_server() {
    if !ready_or_skip() {
        return;
    }
    let build = Build::compile("plain");
    let home = Home::new();
    let server = TestServer::start_local(&home);
    let _cleanup = support::LocalSandboxes(server.data_dir().to_owned());
    let files = build.tests(|name| !CLAUDE_FILES.contains(&name));
    run_suite(&files, &home, &server, &[]);
}

/// Messages need an API harness: the real `claude` on `claude-agent-sdk`, its model the echoing
/// fake Anthropic API (`support::anthropic`, reached through the vault on loopback).
#[test]
fn the_typescript_sdk_sends_messages_and_streams_typed_frames_through_the_real_claude() {
    if !ready_or_skip() {
        return;
    }
    let Some(world) = anthropic::start() else { return };
    let build = Build::compile("claude");
    anthropic::agent(&world, "sdk-ts-claude");
    let files = build.tests(|name| CLAUDE_FILES.contains(&name));
    run_suite(
        &files,
        &world.home,
        &world.server,
        &[("LAP_SDK_CLAUDE_AGENT", "sdk-ts-claude")],
    );
}
