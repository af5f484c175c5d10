//! The web UI's file browser in headless Chromium against `lap serve --backend local`: a file
//! uploaded through the session page lands in the sandbox byte for byte, and downloads back the
//! same (`tests/ui/files.mjs`, playwright-core driving Debian's `/usr/bin/chromium`). Without
//! Chromium, Node or a UI built into `lap`, the test is skipped with a banner, or fails under
//! `LAP_TEST_STRICT=1` (as `scripts/test.sh` sets), like `tests/it/ui.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support;
use crate::support::{Home, TestServer, lap};

/// The browser script's own time limit (it also times out each step).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the session may take to become ready.
const READY_WAIT: Duration = Duration::from_secs(30);

/// Chromium and `tests/ui`'s node modules, or why the browser test cannot run.
fn browser_prerequisites(root: &Path) -> Result<(PathBuf, PathBuf), String> {
    let chromium = PathBuf::from(std::env::var("LAP_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()));
    if !chromium.is_file() {
        return Err(format!(
            "no Chromium at {} (apt-get install chromium)",
            chromium.display()
        ));
    }
    if !Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Err("no `node` on PATH (apt-get install nodejs npm)".to_owned());
    }
    let dir = root.join("tests/ui");
    // The same lock as tests/it/ui.rs: one `npm ci` at a time.
    let lock = std::fs::File::create(std::env::temp_dir().join("lap-tests-ui-npm-ci.lock"))
        .map_err(|e| format!("cannot create the npm lock file: {e}"))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock the npm lock file: {e}"))?;
    if !dir.join("node_modules/playwright-core/package.json").is_file() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("cannot run `npm ci` in tests/ui ({e}); apt-get install npm"))?;
        if !out.status.success() {
            return Err(format!(
                "`npm ci` in tests/ui failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok((chromium, dir))
}

struct Cleanup<'a>(&'a TestServer);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        support::delete_local_sandboxes(self.0.data_dir());
    }
}

#[test]
fn a_person_uploads_and_downloads_a_file_through_the_session_page() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (chromium, dir) = match browser_prerequisites(root) {
        Ok(found) => found,
        Err(why) => return support::skip(&why),
    };
    let home = Home::new();
    let server = TestServer::start_local(&home);
    let _cleanup = Cleanup(&server);
    if server.http_get("/", None).1.contains("web UI was not built") {
        return support::skip("this lap was built without its web UI: install Node.js and npm, then rebuild");
    }
    lap(&home, ["agents", "create", "files-ui", "--harness", "shell"]).success();
    let session = lap(&home, ["--json", "sessions", "create", "files-ui"])
        .success()
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    support::wait_until(&format!("session {session} ready"), READY_WAIT, || {
        lap(&home, ["--json", "sessions", "show", &session]).json()["status"] == "ready"
    });
    // Bytes no text encoding would keep: every value, twice, and then some.
    let upload: Vec<u8> = (0..70_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&upload)
    };
    let mut child = Command::new("node")
        .arg("files.mjs")
        .current_dir(&dir)
        .env("LAP_URL", &server.url)
        .env("LAP_MASTER_KEY", server.master_key())
        .env("LAP_CHROMIUM", &chromium)
        .env("LAP_SESSION", &session)
        .env("LAP_UPLOAD", &b64)
        .env("HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run node");
    if support::try_wait_until(BROWSER_TIMEOUT, || child.try_wait().unwrap()).is_err() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{stdout}\n--- stderr\n{}\n--- lap serve\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    println!("{stdout}");
    // The browser's upload really is in the sandbox, as the sandbox user wrote it.
    let inside = lap(
        &home,
        [
            "exec",
            &session,
            "--",
            "sh",
            "-c",
            "od -An -tx1 -v /work/report.bin | tr -d ' \\n'",
        ],
    )
    .success()
    .stdout;
    let expected: String = upload.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        inside == expected,
        "the sandbox holds other bytes than the browser uploaded"
    );
}
