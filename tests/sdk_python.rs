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

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Home, TestServer};

/// How long the whole pytest suite may take.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);

/// The venv's python when it has pytest and httpx; `None` when there is none.
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
        .args(["-c", "import httpx, pytest"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    usable.then_some(python)
}

#[test]
fn the_python_sdk_suite_passes_against_a_real_server() {
    let Some(python) = sdk_python() else {
        let message =
            "no Python SDK venv (pytest, httpx): run scripts/test.sh, or `. scripts/lib.sh; ensure_sdk_python`";
        assert!(std::env::var_os("LAP_TEST_STRICT").is_none(), "{message}");
        eprintln!("SKIPPED: {message}");
        return;
    };
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/python");
    let home = Home::new();
    let server = TestServer::start_local(&home);
    let _cleanup = Cleanup(server.data_dir().to_owned());
    let mut child = Command::new(&python)
        .args(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests"])
        .current_dir(&sdk)
        .env_clear()
        .envs(home.env())
        .env("LAP_URL", &server.url)
        .env("LAP_MASTER_KEY", server.master_key())
        .env("PYTHONPATH", sdk.join("src"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pytest");
    // Drained on threads of their own, so the suite never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + SUITE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for pytest") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the SDK's pytest suite ran past {SUITE_TIMEOUT:?}:\n{}\n{}",
                stdout.join().unwrap(),
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
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

/// Deletes the server's sandboxes when the test ends, passed or not.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        support::delete_local_sandboxes(&self.0);
    }
}
