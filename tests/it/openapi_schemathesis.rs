//! The OpenAPI document holds for the server: Schemathesis (PyPI, pinned in scripts/lib.sh)
//! generates requests from `lap serve`'s own `/api/v1/openapi.json` and sends them, with the master
//! key, to a real `lap serve --backend fake` on 127.0.0.1. Every check runs (status codes, content
//! types, response schemas, schema-valid requests accepted and schema-invalid ones refused,
//! authentication ignored, methods not allowed, …) in every phase, the stateful one included (it
//! chains the links schemathesis infers: create an agent, start its session, use the session), with
//! a fixed seed and a bounded number of examples per operation. Any finding fails the test, with
//! schemathesis's report (each finding with a `curl` line that replays it).
//!
//! Excluded: the WebSocket and SSE routes (`…/tty`, `…/portforward/{port}`, `…/events`,
//! `…/message_stream`) and the port proxy (`…/ports/{port}/{path}`), whose bodies schemathesis
//! cannot speak; tests/it/tty.rs, tests/it/ports.rs and tests/it/messages.rs cover them. The few statuses
//! that are the documented answer yet count as findings by default are listed, with why, in
//! tests/schemathesis.toml.
//!
//! Without schemathesis the test skips, loudly — unless `LAP_TEST_STRICT=1` (scripts/test.sh, which
//! installs it), where a missing schemathesis fails it. `$LAP_SCHEMATHESIS` names the `st` program;
//! else `st` under `${LAP_TOOLS_DIR:-~/.cache/lap-tools}/schemathesis/bin`, else `st` on PATH.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support;
use crate::support::{Home, TestServer};

/// The seed of every run: the same requests each time.
const SEED: &str = "20261207";
/// Examples per operation and phase; with two workers the run takes about a minute on two cores.
const MAX_EXAMPLES: &str = "25";
/// How long the whole run may take before it is killed and the test fails.
const RUN_DEADLINE: Duration = Duration::from_secs(600);
/// The routes left out (a regex on the path): WebSocket, SSE and the port proxy.
const EXCLUDED_PATHS: &str = r"/(tty|portforward/\{port\}|events|message_stream|ports/\{port\}/\{path\})$";

/// The `st` program, when schemathesis is installed.
fn schemathesis() -> Option<PathBuf> {
    let runs = |program: &Path| {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).contains("version"))
    };
    if let Some(path) = std::env::var_os("LAP_SCHEMATHESIS") {
        return Some(path.into());
    }
    let tools = match std::env::var_os("LAP_TOOLS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/lap-tools"),
    };
    let in_tools = tools.join("schemathesis/bin/st");
    if runs(&in_tools) {
        return Some(in_tools);
    }
    let on_path = PathBuf::from("st");
    runs(&on_path).then_some(on_path)
}

/// Runs `command` to its end, or kills it at `deadline`; returns its exit success and its output
/// (stdout and stderr together, as schemathesis prints its report on stdout).
fn run_with_deadline(mut command: Command, deadline: Duration) -> (bool, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn schemathesis");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = done_tx.send(text);
    });
    let output = match done_rx.recv_timeout(deadline) {
        Ok(text) => text,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("schemathesis did not finish within {deadline:?}");
        }
    };
    let status = child.wait().expect("wait for schemathesis");
    let errors = errors.join().unwrap_or_default();
    (status.success(), format!("{output}{errors}"))
}

#[test]
fn schemathesis_finds_no_difference_between_the_openapi_document_and_the_server() {
    let Some(st) = schemathesis() else {
        support::skip(
            "no schemathesis: scripts/test.sh installs it (the version scripts/lib.sh pins), or set LAP_SCHEMATHESIS to its `st`",
        );
        return;
    };
    let home = Home::new();
    let server = TestServer::start(&home);
    let schema = format!("{}/api/v1/openapi.json", server.url);
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    // Schemathesis writes nothing but its report on stdout; its working dir is a throwaway one.
    let work = tempfile::tempdir().unwrap();
    let mut command = Command::new(&st);
    command
        .current_dir(work.path())
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(&schema)
        .args(["--header", &format!("Authorization: Bearer {}", server.master_key())])
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--seed", SEED, "--max-examples", MAX_EXAMPLES, "--workers", "2"])
        .args(["--exclude-path-regex", EXCLUDED_PATHS])
        .args(["--generation-database", "none", "--request-timeout", "30", "--no-color"]);
    let (passed, report) = run_with_deadline(command, RUN_DEADLINE);
    assert!(
        passed,
        "schemathesis found places where the OpenAPI document and the server disagree:\n{report}\nserver log:\n{}",
        server.log()
    );
    // A run that tested nothing would also exit 0: the summary names the operations it tested.
    assert!(report.contains("Tested:"), "schemathesis ran no test:\n{report}");
    assert!(
        !report.contains("Tested: 0"),
        "schemathesis tested no operation:\n{report}"
    );
}
