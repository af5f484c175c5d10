//! The master key in the OS keyring: `lap login` inside a D-Bus session with an unlocked
//! gnome-keyring keeps the key there (Secret Service), writes no `credentials` file, and later
//! commands read it back.
//!
//! The session bus and the keyring daemon are started by the test with `dbus-run-session` (the
//! recipe of `shared/reference/feasibility.md` §1). Without those tools the test is skipped loudly,
//! or fails when `LAP_TEST_STRICT=1`, as CI sets it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use insta::assert_snapshot;

use crate::support;
use crate::support::{Home, LAP, TestServer};

/// The tools the test needs, and the Debian packages that have them.
const TOOLS: [(&str, &str); 2] = [("dbus-run-session", "dbus"), ("gnome-keyring-daemon", "gnome-keyring")];

/// How long the whole bus session may take.
const SESSION_TIMEOUT: Duration = Duration::from_secs(120);

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// `true` when the test can run; otherwise skips loudly, or panics when the keyring is required.
fn keyring_tools_present() -> bool {
    let missing: Vec<&str> = TOOLS.iter().filter(|(t, _)| !on_path(t)).map(|(t, _)| *t).collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "the keyring test needs `{}`; install them with `apt-get install dbus gnome-keyring`",
        missing.join("`, `")
    );
    support::skip(&message);
    false
}

/// Runs each step inside one `dbus-run-session`, after unlocking a fresh keyring. Step `name`
/// leaves its output in `$HOME/name.out` and its exit code in `$HOME/name.rc`.
const SCRIPT: &str = r#"
set -u
printf testpw | gnome-keyring-daemon --unlock --components=secrets >/dev/null
step() { name=$1; shift; "$@" >"$HOME/$name.out" 2>&1; echo $? >"$HOME/$name.rc"; }
step login sh -c 'printf "%s\n" "$KEY" | "$LAP" login --url "$URL" --key-stdin'
step files ls -A "$XDG_CONFIG_HOME/lap"
step configfile cat "$XDG_CONFIG_HOME/lap/config.toml"
step config "$LAP" config --json
step create "$LAP" agents create demo --harness shell
step list "$LAP" agents list
step logout "$LAP" logout
step after "$LAP" config --json
"#;

/// The output and exit code of one step of [`SCRIPT`].
fn step(home: &Home, name: &str) -> (i32, String) {
    let read = |ext: &str| std::fs::read_to_string(home.path().join(format!("{name}.{ext}")));
    let rc = read("rc").unwrap_or_else(|_| panic!("step `{name}` did not run"));
    (rc.trim().parse().unwrap(), read("out").unwrap())
}

#[test]
fn login_keeps_the_master_key_in_the_os_keyring_when_a_session_bus_is_there() {
    if !keyring_tools_present() {
        return;
    }
    let server_home = Home::new();
    let server = TestServer::start(&server_home);
    let home = Home::new();
    let _r = home.redactions();

    let child = Command::new("dbus-run-session")
        .args(["--", "sh", "-c", SCRIPT])
        .env_clear()
        // No `LAP_CREDENTIAL_STORE`: the CLI picks the store itself; dbus-run-session provides
        // `DBUS_SESSION_BUS_ADDRESS`.
        .envs(home.env_without_store())
        .env("LAP", LAP)
        .env("URL", &server.url)
        .env("KEY", server.master_key())
        .current_dir(home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dbus-run-session");
    let session = support::wait_within(child, SESSION_TIMEOUT, "the keyring session");
    assert!(
        session.status.success(),
        "dbus-run-session failed: {}\n{}",
        session.status,
        String::from_utf8_lossy(&session.stderr)
    );

    let (code, out) = step(&home, "login");
    assert_eq!(code, 0, "{out}");
    assert_snapshot!(out, @r"
    saved the master key in the OS keyring
    logged in to http://127.0.0.1:[PORT]
    ");
    let (_, files) = step(&home, "files");
    assert_eq!(files.trim(), "config.toml", "no `credentials` file next to the config");
    assert!(!home.credentials_file().exists(), "the key went to a file as well");
    assert_snapshot!(step(&home, "configfile").1, @r#"
    # lap client configuration; `lap config` shows the effective values
    url = "http://127.0.0.1:[PORT]"
    key_store = "keyring"
    "#);
    let config = std::fs::read_to_string(home.path().join("config.out")).unwrap();
    assert!(!config.contains(&server.master_key()), "{config}");
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["values"]["master_key"]["source"]["kind"], "keyring", "{config}");

    let (code, out) = step(&home, "create");
    assert_eq!(code, 0, "{out}");
    let (code, out) = step(&home, "list");
    assert_eq!(code, 0, "{out}");
    assert_snapshot!(out, @r"
    NAME  HARNESS  SESSIONS  REPO  CREATED
    demo  shell    0         -     [TIME]
    ");

    let (code, out) = step(&home, "logout");
    assert_eq!(code, 0, "{out}");
    assert_snapshot!(out, @r"
    removed the master key in the OS keyring
    removed the server URL in `[HOME]/.config/lap/config.toml`
    ");
    let (code, out) = step(&home, "after");
    assert_eq!(code, 0, "{out}");
    let config: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        config["values"]["master_key"]["value"],
        serde_json::Value::Null,
        "{config}"
    );
    assert!(
        Path::new(&home.xdg_data()).join("keyrings").exists(),
        "the daemon kept its keyring in the test home"
    );
}
