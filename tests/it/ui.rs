//! The web UI served by `lap serve`: its pages and assets, its cookie sign-in, and a person using it
//! in headless Chromium.
//!
//! The HTTP tests run a real `lap serve` on the fake backend and speak raw HTTP/1.1, to see the
//! exact `Set-Cookie` and the CSRF rule. The browser test runs `tests/ui/session.mjs`
//! (playwright-core driving Debian's `/usr/bin/chromium`, no browser download) against
//! `lap serve --backend local` with real sandboxes: sign in, create an agent, open a session, type
//! in the terminal, resize, see a blocked request in the egress log, sign out. Without Chromium or
//! Node it is skipped with a banner, or fails under `LAP_TEST_STRICT=1` (as `scripts/test.sh`
//! sets). A second browser test sends messages to an API-harness agent (the real `claude`, against
//! the echoing fake Anthropic API of tests/it/support/anthropic.rs) and watches the reply stream in.
//! The first one's screenshot of the session page goes to `LAP_UI_SCREENSHOT` when set
//! (`docs/ui-session.png`, shown in `docs/guide/web-ui.md`, is made that way).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support;
use crate::support::{Home, TestServer};

/// The browser script's own time limit (it also times out each step).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(240);

/// One raw HTTP/1.1 exchange: status, headers (lowercased names) and body.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

pub(crate) fn http(server: &TestServer, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
        server.port
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Signs in with the master key; returns the `Set-Cookie` header and the `name=value` pair.
fn sign_in(server: &TestServer) -> (String, String) {
    let key = server.master_key();
    let reply = http(
        server,
        "POST",
        "/api/ui/auth/cookie",
        &[("Authorization", &format!("Bearer {key}"))],
        "",
    );
    assert_eq!(reply.status, 204, "{}", reply.body);
    let set = reply.header("set-cookie").expect("a Set-Cookie header").to_owned();
    let pair = set.split(';').next().unwrap().trim().to_owned();
    (set, pair)
}

#[test]
fn the_page_and_its_assets_are_served_at_the_root_with_a_strict_csp() {
    let home = Home::new();
    let server = TestServer::start(&home);
    if !ui_built(&server) {
        return;
    }
    for path in ["/", "/sign-in", "/agents", "/agents/new", "/sessions"] {
        let reply = http(&server, "GET", path, &[], "");
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        assert!(
            reply.header("content-type").is_some_and(|t| t.starts_with("text/html")),
            "GET {path}"
        );
        assert!(reply.body.contains("<title>lap</title>"), "GET {path}: {}", reply.body);
        let csp = reply.header("content-security-policy").expect("a CSP");
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
    }
    let app = http(&server, "GET", "/ui/app.js", &[], "");
    assert_eq!(app.status, 200);
    assert!(app.header("content-type").unwrap().starts_with("text/javascript"));
    let xterm = http(&server, "GET", "/ui/vendor/xterm.mjs", &[], "");
    assert_eq!(xterm.status, 200, "xterm.js is embedded");
    assert!(xterm.body.contains("Terminal"));
    let etag = xterm.header("etag").expect("an ETag").to_owned();
    let again = http(&server, "GET", "/ui/vendor/xterm.mjs", &[("If-None-Match", &etag)], "");
    assert_eq!(again.status, 304);
    // Other paths keep the API's JSON 404.
    let missing = http(&server, "GET", "/ui/nope.js", &[], "");
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("\"error\""), "{}", missing.body);
    let unknown = http(&server, "GET", "/nope", &[], "");
    assert!(unknown.body.contains("no route for GET /nope"), "{}", unknown.body);
}

#[test]
fn signing_in_sets_an_httponly_strict_cookie_that_is_not_the_master_key() {
    let home = Home::new();
    let server = TestServer::start(&home);
    let key = server.master_key();
    let (set, pair) = sign_in(&server);
    let attributes: Vec<&str> = set.split(';').map(str::trim).collect();
    for wanted in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(&wanted), "{set}");
    }
    assert!(attributes.iter().any(|a| a.starts_with("Max-Age=")), "{set}");
    assert!(!attributes.contains(&"Secure"), "plain HTTP gets no Secure flag: {set}");
    let (name, value) = pair.split_once('=').unwrap();
    assert_eq!(name, "lap_ui_session");
    assert_eq!(value.len(), 64, "{value}");
    assert!(!set.contains(&key), "the cookie carries the master key: {set}");

    // Behind a TLS-terminating proxy the cookie is Secure.
    let reply = http(
        &server,
        "POST",
        "/api/ui/auth/cookie",
        &[
            ("Authorization", &format!("Bearer {key}")),
            ("X-Forwarded-Proto", "https"),
        ],
        "",
    );
    assert!(
        reply.header("set-cookie").unwrap().contains("; Secure"),
        "{:?}",
        reply.headers
    );

    // A wrong key gets no cookie.
    let wrong = http(
        &server,
        "POST",
        "/api/ui/auth/cookie",
        &[("Authorization", "Bearer nope-nope-nope")],
        "",
    );
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
}

#[test]
fn the_cookie_opens_the_api_survives_a_restart_and_state_changes_need_the_csrf_header() {
    let home = Home::new();
    let mut server = TestServer::start(&home);
    let (_, cookie) = sign_in(&server);
    let agents = "/api/v1/managed_agents/agents";
    assert_eq!(http(&server, "GET", agents, &[], "").status, 401);
    let listed = http(&server, "GET", agents, &[("Cookie", &cookie)], "");
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(
        http(&server, "GET", "/api/ui/auth/cookie", &[("Cookie", &cookie)], "").status,
        204
    );
    assert_eq!(
        http(&server, "GET", "/api/ui/config", &[("Cookie", &cookie)], "").status,
        200
    );

    let body = r#"{"name":"from-cookie","harness_id":"shell"}"#;
    let forged = http(&server, "POST", agents, &[("Cookie", &cookie)], body);
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(forged.body.contains("x-lap-ui"), "{}", forged.body);
    let created = http(&server, "POST", agents, &[("Cookie", &cookie), ("X-Lap-UI", "1")], body);
    assert_eq!(created.status, 200, "{}", created.body);

    // A made-up cookie opens nothing.
    let fake = format!("lap_ui_session={}", "0".repeat(64));
    assert_eq!(http(&server, "GET", agents, &[("Cookie", &fake)], "").status, 401);

    // A restart of `lap serve` (kill -9) keeps the browser signed in.
    server.restart();
    let listed = http(&server, "GET", agents, &[("Cookie", &cookie)], "");
    assert_eq!(listed.status, 200, "{}", listed.body);

    // Signing out ends the session on the server: the same cookie is refused afterwards.
    let out = http(
        &server,
        "DELETE",
        "/api/ui/auth/cookie",
        &[("Cookie", &cookie), ("X-Lap-UI", "1")],
        "",
    );
    assert_eq!(out.status, 204);
    assert!(
        out.header("set-cookie").unwrap().contains("Max-Age=0"),
        "{:?}",
        out.headers
    );
    assert_eq!(http(&server, "GET", agents, &[("Cookie", &cookie)], "").status, 401);
    assert_eq!(
        http(&server, "GET", "/api/ui/auth/cookie", &[("Cookie", &cookie)], "").status,
        401
    );
}

/// What the browser test needs, or why it cannot run.
pub(crate) fn browser_prerequisites(root: &Path) -> Result<(PathBuf, PathBuf), String> {
    let chromium = PathBuf::from(std::env::var("LAP_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()));
    if !chromium.is_file() {
        return Err(format!(
            "no Chromium at {} (apt-get install chromium)",
            chromium.display()
        ));
    }
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("no `node` on PATH (apt-get install nodejs npm)".to_owned());
    }
    let dir = root.join("tests/ui");
    // Browser tests run in parallel processes: one `npm ci` at a time, and the others wait for it.
    let lock = std::fs::File::create(std::env::temp_dir().join("lap-tests-ui-npm-ci.lock"))
        .map_err(|e| format!("cannot create the npm lock file: {e}"))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock the npm lock file: {e}"))?;
    let installed = ["playwright-core", "oidc-provider"]
        .iter()
        .all(|package| dir.join(format!("node_modules/{package}/package.json")).is_file());
    if !installed {
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

/// Removes every sandbox of the server when the test ends, whatever happened.
struct Cleanup<'a>(&'a TestServer);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        support::delete_local_sandboxes(self.0.data_dir());
    }
}

/// Runs `tests/ui/{script}` in Chromium against `server`; returns its `ok: …` lines. `None` when
/// the browser test cannot run here (skipped with a banner; a failure under `LAP_TEST_STRICT=1`).
fn run_browser(script: &str, server: &TestServer, home: &Home, screenshot: &Path) -> Option<String> {
    run_browser_with(script, server, home, screenshot, &[])
}

/// [`run_browser`] with more environment for the script.
pub(crate) fn run_browser_with(
    script: &str,
    server: &TestServer,
    home: &Home,
    screenshot: &Path,
    env: &[(&str, &str)],
) -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (chromium, dir) = match browser_prerequisites(root) {
        Ok(found) => found,
        Err(why) => {
            support::skip(&why);
            return None;
        }
    };
    if !ui_built(server) {
        return None;
    }
    let mut child = Command::new("node")
        .arg(script)
        .current_dir(&dir)
        .env("LAP_URL", &server.url)
        .env("LAP_MASTER_KEY", server.master_key())
        .env("LAP_CHROMIUM", &chromium)
        .env("LAP_SCREENSHOT", screenshot)
        .env("HOME", home.path())
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run node");
    if support::try_wait_until(BROWSER_TIMEOUT, || child.try_wait().unwrap()).is_err() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test {script} failed ({}):\n{stdout}\n--- stderr\n{stderr}\n--- lap serve\n{}",
        out.status,
        server.log()
    );
    println!("{stdout}");
    Some(stdout)
}

/// Whether this `lap` holds its web UI, not the page that says it was not built (a build without
/// Node.js and npm). Without it the test is skipped with a banner, or fails under
/// `LAP_TEST_STRICT=1`.
fn ui_built(server: &TestServer) -> bool {
    let page = http(server, "GET", "/", &[], "");
    if !page.body.contains("web UI was not built") {
        return true;
    }
    support::skip(
        "this lap was built without its web UI (see the build's warnings): install Node.js and npm, then rebuild",
    );
    false
}

#[test]
fn a_person_signs_in_creates_an_agent_uses_its_terminal_sees_a_blocked_request_and_signs_out() {
    let home = Home::new();
    let server = TestServer::start_local(&home);
    let _cleanup = Cleanup(&server);
    let screenshot = std::env::var_os("LAP_UI_SCREENSHOT")
        .map(|p| std::path::absolute(p).expect("an absolute screenshot path"))
        .unwrap_or_else(|| home.path().join("ui-session.png"));
    let Some(stdout) = run_browser("session.mjs", &server, &home, &screenshot) else {
        return;
    };
    for step in [
        "signed in: an HttpOnly SameSite=Strict session cookie",
        "created agent web-demo",
        "typed in the browser terminal and saw the output",
        "resized the window: stty size followed",
        "the blocked request appeared in the egress log",
        "edited the agent",
        "deleted the agent after confirming",
        "signed out",
    ] {
        assert!(stdout.contains(&format!("ok: {step}")), "no `ok: {step}` in:\n{stdout}");
    }
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
}

#[test]
fn a_person_messages_an_api_agent_and_sees_the_reply_stream_in() {
    let Some(world) = support::anthropic::start() else {
        return;
    };
    support::anthropic::agent(&world, "sdk");
    let (home, server) = (&world.home, &world.server);
    let screenshot = std::env::var_os("LAP_UI_CHAT_SCREENSHOT")
        .map(|p| std::path::absolute(p).expect("an absolute screenshot path"))
        .unwrap_or_else(|| home.path().join("ui-chat.png"));
    let Some(stdout) = run_browser("chat.mjs", server, home, &screenshot) else {
        return;
    };
    for step in [
        "the session of an API harness shows a message composer, and `lap chat` as its command",
        "a reply streams into the thread while the turn runs",
        "Stop reply ends the running turn",
        "the next message gets its whole reply",
        "the conversation is still there after a reload",
        "a command run in the sandbox from the page shows its output and exit code",
    ] {
        assert!(stdout.contains(&format!("ok: {step}")), "no `ok: {step}` in:\n{stdout}");
    }
}

/// The audit log's admin page: the sign-in and a change made with the master key appear in it.
#[test]
fn the_audit_page_lists_who_did_what_as_it_happens() {
    let home = Home::new();
    let server = TestServer::start(&home);
    let screenshot = home.path().join("ui-audit.png");
    let Some(stdout) = run_browser("audit.mjs", &server, &home, &screenshot) else {
        return;
    };
    for step in [
        "the audit page lists the sign-in of the web UI",
        "an action made elsewhere appears without a reload",
    ] {
        assert!(stdout.contains(&format!("ok: {step}")), "no `ok: {step}` in:\n{stdout}");
    }
}
