//! OIDC sign-in against a real OpenID provider: npm's `oidc-provider` (OpenID-certified), run by
//! `tests/ui/oidc_provider.mjs` on loopback with five people (ada and grace of example.com, grace
//! in the `admins` group; mallory of another domain; eve, whose email is not verified; lin of another
//! domain, in the `contractors` group). People
//! sign in with headless Chromium (`tests/ui/oidc.mjs`): to the web UI with single sign-on, and a
//! terminal with `lap login --oidc`, approved or denied in the browser. Also: the web UI signed in
//! with an API key acts as that key, and a provider that is down, or no provider, gives errors that
//! say so and change nothing.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::{self, Home, LAP, TestServer};
use crate::ui::{http, run_browser_with};

const CLIENT_ID: &str = "lap-test";
const CLIENT_SECRET: &str = "a-client-secret-of-the-test-provider";
/// How long the provider has to start.
const PROVIDER_START: Duration = Duration::from_secs(60);

/// The provider, stopped when dropped.
struct Provider {
    child: Child,
    issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the test provider with `redirect` as its client's only redirect URI; `None` (skipped)
/// when Node or Chromium is missing here.
fn provider(redirect: &str) -> Option<Provider> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = match crate::ui::browser_prerequisites(root) {
        Ok((_, dir)) => dir,
        Err(why) => {
            support::skip(&why);
            return None;
        }
    };
    let mut child = Command::new("node")
        .arg("oidc_provider.mjs")
        .current_dir(&dir)
        // `localhost`, another site than lap's 127.0.0.1: the browser crosses sites as with a real
        // provider, so the cookie's SameSite rule is tried.
        .env("OIDC_ISSUER", "http://localhost:0")
        .env("OIDC_CLIENT_ID", CLIENT_ID)
        .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
        .env("OIDC_REDIRECT_URI", redirect)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node");
    let rx = lines_of(child.stdout.take().expect("stdout pipe"));
    let line = rx.recv_timeout(PROVIDER_START).expect("the provider says it is ready");
    let issuer = line.strip_prefix("ready ").expect("a `ready <issuer>` line").to_owned();
    Some(Provider { child, issuer })
}

/// The lines `output` gives, as they come.
fn lines_of(output: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// A server on the fake backend signing people in with the test provider: example.com and the
/// `contractors` group may sign in, `admins` are admins.
fn server_with_provider(home: &Home) -> Option<(TestServer, Provider)> {
    let mut server = TestServer::start(home);
    let provider = provider(&format!("{}/auth/oidc/callback", server.url))?;
    server.restart_with(
        &[
            "--oidc-issuer",
            &provider.issuer,
            "--oidc-client-id",
            CLIENT_ID,
            "--oidc-scope",
            "email,profile,groups",
            "--oidc-allow-domain",
            "example.com",
            "--oidc-allow-group",
            "contractors",
            "--oidc-admin-group",
            "admins",
        ],
        &[("LAP_OIDC_CLIENT_SECRET", CLIENT_SECRET)],
    );
    Some((server, provider))
}

#[test]
fn people_sign_in_to_the_web_ui_with_single_sign_on_and_only_those_let_in_do() {
    let home = Home::new();
    let Some((server, _provider)) = server_with_provider(&home) else {
        return;
    };
    let screenshot = home.path().join("ui-oidc.png");
    let Some(stdout) = run_browser_with("oidc.mjs", &server, &home, &screenshot, &[("OIDC_MODE", "web")]) else {
        return;
    };
    for step in [
        "the sign-in page offers single sign-on",
        "ada signed in at the provider and came back signed in as a member",
        "a member's page has no Audit link, and the admin API refuses the cookie",
        "signing out ends the session",
        "grace of the admins group signs in as an admin",
        "mallory of another domain is refused with a page that says why",
        "eve, whose email is not verified, is refused",
        "lin of another domain but the contractors group signs in as a member",
    ] {
        assert!(stdout.contains(&format!("ok: {step}")), "no `ok: {step}` in:\n{stdout}");
    }
    // Made at their first sign-in: only the two let in.
    let users = home.lap().run(["users", "list", "--json"]).success().json();
    let mut names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ada@example.com", "grace@example.com", "lin@partner.test"]);
    // Each sign-in acted through a key of its own; ada's was revoked when she signed out.
    let keys = home.lap().run(["keys", "list", "--json"]).success().json();
    let key_of = |user: &str| {
        keys.as_array()
            .unwrap()
            .iter()
            .find(|k| k["user"] == user)
            .unwrap_or_else(|| panic!("a key of {user} in {keys}"))
            .clone()
    };
    assert!(key_of("ada@example.com")["revoked_at"].is_string(), "{keys}");
    assert_eq!(key_of("grace@example.com")["role"], "admin");
    assert!(key_of("grace@example.com")["revoked_at"].is_null(), "{keys}");
    // The audit log has each sign-in, the refused ones too.
    let audit = home.lap().run(["audit", "--json"]).success().json();
    let rows: Vec<(String, String, u64)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "sign-in with OIDC to the web UI")
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["peer"].as_str().unwrap_or_default().to_owned(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    for (actor, status) in [("ada@example.com", 303), ("grace@example.com", 303), ("unknown", 403)] {
        assert!(
            rows.iter()
                .any(|(a, peer, s)| a == actor && *s == status && peer.starts_with("127.0.0.1:")),
            "no audit row of {actor} with {status} in {rows:?}"
        );
    }
}

/// Runs `lap login --oidc --no-browser` for a new person (`home`); returns the child, the link and
/// the code it printed, and the rest of its stderr as it comes.
fn start_login(server: &TestServer, home: &Home) -> (Child, String, String, mpsc::Receiver<String>) {
    let mut child = Command::new(LAP)
        .args(["login", "--oidc", "--no-browser", "--url", &server.url])
        .env_clear()
        .envs(home.env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lap login --oidc");
    let rx = lines_of(child.stderr.take().expect("stderr pipe"));
    let (mut link, mut code) = (None, None);
    while link.is_none() || code.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("lap login --oidc prints a link and a code");
        let line = line.trim();
        if line.starts_with("http://") {
            link = Some(line.to_owned());
        }
        if let Some(rest) = line.strip_prefix("Then approve the sign-in of the terminal showing the code ") {
            code = Some(rest.trim_end_matches('.').to_owned());
        }
    }
    (child, link.unwrap(), code.unwrap(), rx)
}

/// Waits for `lap login` to end; its exit code and the rest of its stderr.
fn finish_login(mut child: Child, rx: mpsc::Receiver<String>) -> (i32, String) {
    let status = support::wait_until("lap login --oidc to end", Duration::from_secs(60), || {
        child.try_wait().unwrap()
    });
    let rest: Vec<String> = rx.try_iter().collect();
    (status.code().unwrap_or(-1), rest.join("\n"))
}

#[test]
fn lap_login_oidc_signs_a_terminal_in_once_the_person_approves_it_in_the_browser() {
    let home = Home::new();
    let Some((server, _provider)) = server_with_provider(&home) else {
        return;
    };
    let screenshot = home.path().join("ui-oidc-cli.png");

    // Approved: the terminal gets a key of ada's, and uses it.
    let person = Home::new();
    let (child, link, code, rx) = start_login(&server, &person);
    assert!(
        link.starts_with(&format!("{}/auth/oidc/login?cli=", server.url)),
        "{link}"
    );
    let env = [
        ("OIDC_MODE", "cli-approve"),
        ("OIDC_LINK", link.as_str()),
        ("OIDC_CODE", code.as_str()),
    ];
    if run_browser_with("oidc.mjs", &server, &home, &screenshot, &env).is_none() {
        return;
    }
    let (exit, told) = finish_login(child, rx);
    assert_eq!(exit, 0, "lap login --oidc failed:\n{told}\n{}", server.log());
    assert!(
        told.contains("logged in to") && told.contains("as ada@example.com (member"),
        "{told}"
    );
    let saved = std::fs::read_to_string(person.credentials_file()).expect("the saved key");
    assert!(saved.contains("lap_key_"), "an API key is saved, not a provider token");
    let sessions = person.lap().run(["sessions", "list", "--json"]).success();
    assert_eq!(
        sessions.json(),
        serde_json::json!([]),
        "ada has no session yet: {sessions}"
    );
    let refused = person.lap().run(["users", "list"]);
    assert_ne!(refused.code, 0, "a member's key is not an admin's: {refused}");
    let keys = home.lap().run(["keys", "list", "--json"]).success().json();
    let ada = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["user"] == "ada@example.com")
        .expect("a key of ada's");
    assert!(ada["expires_at"].is_string(), "the CLI's key expires: {ada}");

    // Denied: nothing is saved, and the terminal says why.
    let other = Home::new();
    let (child, link, code, rx) = start_login(&server, &other);
    let env = [
        ("OIDC_MODE", "cli-deny"),
        ("OIDC_LINK", link.as_str()),
        ("OIDC_CODE", code.as_str()),
    ];
    run_browser_with("oidc.mjs", &server, &home, &screenshot, &env).expect("the browser ran before");
    let (exit, told) = finish_login(child, rx);
    assert_ne!(exit, 0, "a denied sign-in fails:\n{told}");
    assert!(told.contains("denied in the browser"), "{told}");
    assert!(!other.credentials_file().exists(), "nothing was saved");
}

#[test]
fn a_provider_that_is_down_or_none_gives_errors_that_say_so_and_changes_nothing() {
    // A provider on a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let home = Home::new();
    let mut server = TestServer::start(&home);
    let plain = http(&server, "GET", "/auth/oidc/login", &[], "");
    assert_eq!(plain.status, 404, "{}", plain.body);
    assert!(plain.body.contains("OIDC sign-in is not set up"), "{}", plain.body);
    assert_eq!(
        http(&server, "GET", "/api/ui/auth/methods", &[], "").body,
        r#"{"oidc":false}"#
    );
    let person = Home::new();
    let none = person
        .lap()
        .run(["login", "--oidc", "--no-browser", "--url", &server.url]);
    assert_ne!(none.code, 0);
    assert!(
        none.stderr.contains("OIDC sign-in is not set up") && none.stderr.contains("hint:"),
        "{none}"
    );

    server.restart_with(
        &["--oidc-issuer", &issuer, "--oidc-client-id", CLIENT_ID],
        &[("LAP_OIDC_CLIENT_SECRET", CLIENT_SECRET)],
    );
    assert_eq!(
        http(&server, "GET", "/api/ui/auth/methods", &[], "").body,
        r#"{"oidc":true}"#
    );
    let page = http(&server, "GET", "/auth/oidc/login?next=/agents", &[], "");
    assert_eq!(page.status, 502, "{}", page.body);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(page.body.contains("cannot reach the OpenID provider"), "{}", page.body);
    let down = person
        .lap()
        .run(["login", "--oidc", "--no-browser", "--url", &server.url]);
    assert_ne!(down.code, 0);
    assert!(
        down.stderr.contains("cannot reach the OpenID provider") && down.stderr.contains("hint:"),
        "{down}"
    );
    assert!(!person.credentials_file().exists(), "nothing was saved");
    // The master key still works, and the sign-in page still takes keys.
    home.lap().run(["users", "list"]).success();

    // A callback nobody started is refused, not followed.
    let forged = http(&server, "GET", "/auth/oidc/callback?code=x&state=forged", &[], "");
    assert_eq!(forged.status, 400, "{}", forged.body);
    assert!(forged.body.contains("this sign-in is unknown"), "{}", forged.body);
}

#[test]
fn lap_serve_refuses_an_oidc_setup_it_cannot_use() {
    let home = Home::new();
    let data = home.path().join("data");
    let data = data.to_str().unwrap();
    let run = |args: &[&str], secret: bool| {
        let mut command = Command::new(LAP);
        command
            .args([
                "serve",
                "--backend",
                "fake",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data,
            ])
            .args(args)
            .env_clear()
            .envs(home.env())
            .stdin(Stdio::null());
        if secret {
            command.env("LAP_OIDC_CLIENT_SECRET", CLIENT_SECRET);
        }
        support::wait_within(
            command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(),
            Duration::from_secs(30),
            "lap serve",
        )
    };
    let no_secret = run(
        &["--oidc-issuer", "https://idp.example.com", "--oidc-client-id", "x"],
        false,
    );
    let told = String::from_utf8_lossy(&no_secret.stderr);
    assert!(!no_secret.status.success());
    assert!(
        told.contains("LAP_OIDC_CLIENT_SECRET") && told.contains("hint:"),
        "{told}"
    );
    // Checked before any request: no traffic leaves this machine.
    let plain = run(
        &["--oidc-issuer", "http://idp.example.com", "--oidc-client-id", "x"],
        true,
    );
    let told = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success());
    assert!(told.contains("is not HTTPS"), "{told}");
    let no_client = run(&["--oidc-issuer", "https://idp.example.com"], true);
    assert!(!no_client.status.success());
    assert!(String::from_utf8_lossy(&no_client.stderr).contains("--oidc-client-id"));
}

/// The web UI signed in with an API key acts as that key: its user and role, and no longer once
/// the key is revoked.
#[test]
fn the_web_ui_signed_in_with_an_api_key_acts_as_it_until_it_is_revoked() {
    let home = Home::new();
    let server = TestServer::start(&home);
    home.lap().run(["users", "create", "lin"]).success();
    let made = home
        .lap()
        .run(["keys", "create", "--user", "lin", "--role", "member", "--json"])
        .success()
        .json();
    let key = made["key"].as_str().unwrap();
    let bearer = format!("Bearer {key}");
    let signed = http(
        &server,
        "POST",
        "/api/ui/auth/cookie",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(signed.status, 204, "{}", signed.body);
    let cookie = signed
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(!cookie.contains(key), "the cookie is not the key");
    let config = http(&server, "GET", "/api/ui/config", &[("Cookie", &cookie)], "");
    assert_eq!(config.status, 200, "{}", config.body);
    let config: serde_json::Value = serde_json::from_str(&config.body).unwrap();
    assert_eq!(
        (config["signed_in_as"].as_str(), config["role"].as_str()),
        (Some("lin"), Some("member"))
    );
    let admin = http(&server, "GET", "/api/v1/admin/users", &[("Cookie", &cookie)], "");
    assert_eq!(admin.status, 403, "a member's cookie is a member's: {}", admin.body);
    assert_eq!(
        http(
            &server,
            "GET",
            "/api/v1/managed_agents/sessions",
            &[("Cookie", &cookie)],
            ""
        )
        .status,
        200
    );
    home.lap()
        .run(["keys", "revoke", made["id"].as_str().unwrap()])
        .success();
    let after = http(
        &server,
        "GET",
        "/api/v1/managed_agents/sessions",
        &[("Cookie", &cookie)],
        "",
    );
    assert_eq!(after.status, 401, "{}", after.body);
    assert!(after.body.contains("revoked"), "{}", after.body);
    // A wrong key buys no cookie.
    let wrong = http(
        &server,
        "POST",
        "/api/ui/auth/cookie",
        &[("Authorization", "Bearer lap_key_nope")],
        "",
    );
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
}

/// A sign-in is tied to the browser that started it: a callback with a valid state but without that
/// browser's cookie (someone else's link) is refused, and signs nobody in.
#[test]
fn a_callback_from_another_browser_is_refused() {
    let home = Home::new();
    let Some((server, _provider)) = server_with_provider(&home) else {
        return;
    };
    let start = || {
        let started = http(&server, "GET", "/auth/oidc/login?next=/agents", &[], "");
        assert_eq!(started.status, 303, "{}", started.body);
        let cookie = started.header("set-cookie").expect("the flow's cookie").to_owned();
        for part in ["lap_oidc_flow=", "HttpOnly", "SameSite=Lax", "Path=/auth/oidc"] {
            assert!(cookie.contains(part), "{part} in {cookie}");
        }
        let location = started.header("location").expect("to the provider").to_owned();
        let state = location
            .split(['?', '&'])
            .find_map(|pair| pair.strip_prefix("state="))
            .expect("a state")
            .to_owned();
        (cookie.split(';').next().unwrap().to_owned(), state)
    };
    let (_, state) = start();
    let bare = http(
        &server,
        "GET",
        &format!("/auth/oidc/callback?code=x&state={state}"),
        &[],
        "",
    );
    assert_eq!(bare.status, 400, "{}", bare.body);
    assert!(bare.body.contains("started in another browser"), "{}", bare.body);
    let (_, state) = start();
    let other = "lap_oidc_flow=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let wrong = http(
        &server,
        "GET",
        &format!("/auth/oidc/callback?code=x&state={state}"),
        &[("Cookie", other)],
        "",
    );
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    assert!(wrong.body.contains("started in another browser"), "{}", wrong.body);
    assert!(
        home.lap()
            .run(["users", "list", "--json"])
            .success()
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
}
