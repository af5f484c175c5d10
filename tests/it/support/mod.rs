//! Fixtures for the end-to-end tests: a throwaway home, a real `lap serve`, and the `lap` CLI run
//! against it with a clean environment.
//!
//! [`Home`] is a temp dir used as `HOME`, with `XDG_CONFIG_HOME` and `XDG_DATA_HOME` inside it, so
//! nothing a test does touches the real user's files. [`TestServer`] runs `lap serve --backend fake`
//! on a free loopback port and keeps draining its stderr; [`Lap`] runs the CLI and returns exit code,
//! stdout and stderr as one [`Run`] whose `Display` is what the snapshots show. [`Home::redactions`]
//! binds insta filters that replace everything that differs between runs.
//!
//! Two rules every test keeps live here once: [`skip`] (and [`require`]) skips a test whose
//! prerequisite is missing, or fails it under `LAP_TEST_STRICT=1`; [`wait_until`] (and its async
//! twin) is the one way to poll a condition to a deadline.

pub mod anthropic;
pub mod fake_openai;
pub mod plane;
pub mod tmux;
pub mod upstream;
pub mod vendor;

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `lap` binary under test.
pub const LAP: &str = env!("CARGO_BIN_EXE_lap");

/// Whether every test prerequisite is installed: `LAP_TEST_STRICT=1`, which scripts/test.sh (and so
/// CI) sets once it has installed them. A test missing one then fails instead of skipping ([`skip`]).
pub fn strict() -> bool {
    std::env::var("LAP_TEST_STRICT").as_deref() == Ok("1")
}

/// The calling test cannot run here, because of `why` (a missing prerequisite, and how to install
/// it): under [`strict`] that fails the test; else a banner on stderr says it was skipped, and the
/// caller returns.
pub fn skip(why: &str) {
    assert!(
        !strict(),
        "{why}\n(LAP_TEST_STRICT=1: every prerequisite must be installed; scripts/test.sh installs them)"
    );
    let banner = "=".repeat(72);
    // Straight to the stderr handle: the test harness captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "\n{banner}\nSKIPPED: {why}\n(set LAP_TEST_STRICT=1 to make this a failure)\n{banner}\n"
    );
}

/// Whether `program` runs (`program --version` exits 0) with the test's `PATH`.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `true` when `program` is there; else says so and returns `false`, or fails a strict run
/// (scripts/test.sh sets `LAP_TEST_STRICT=1` once it has installed everything).
pub fn require(program: &str, install: &str) -> bool {
    if installed(program) {
        return true;
    }
    skip(&format!("`{program}` is not installed ({install})"));
    false
}

/// What a probe of [`wait_until`] says: ready, with what the wait gives back, or not yet.
pub trait Ready {
    type Value;
    /// `Ok` once ready; else `Err` with what the probe saw (empty when it has nothing to add), for
    /// the failure message.
    fn ready(self) -> Result<Self::Value, String>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Result<(), String> {
        if self { Ok(()) } else { Err(String::new()) }
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: fmt::Display> Ready for Result<T, E> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.map_err(|seen| seen.to_string())
    }
}

/// The pause after the first probe of a wait; it doubles up to [`POLL_MAX`], so a quick condition
/// is seen at once and a slow one (a probe that runs `lap`) is not asked too often.
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(100);

/// Probes until `probe` is ready ([`Ready`]: `true`, `Some(value)` or `Ok(value)`) and returns its
/// value. Past `deadline` fails the test: it names `what` it waited for, how long, and what the
/// last probe saw (an `Err`'s text).
#[track_caller]
pub fn wait_until<R: Ready>(what: &str, deadline: Duration, probe: impl FnMut() -> R) -> R::Value {
    match try_wait_until(deadline, probe) {
        Ok(value) => value,
        Err(seen) => panic!("{}", waited_in_vain(what, deadline, &seen)),
    }
}

/// [`wait_until`] for a caller that has something to do before it fails (a child to kill): past
/// `deadline`, `Err` with what the last probe saw.
pub fn try_wait_until<R: Ready>(deadline: Duration, mut probe: impl FnMut() -> R) -> Result<R::Value, String> {
    let end = Instant::now() + deadline;
    let mut pause = POLL_FIRST;
    loop {
        match probe().ready() {
            Ok(value) => return Ok(value),
            Err(seen) if Instant::now() >= end => return Err(seen),
            Err(_) => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// Waits, at most `wait`, for `child` to exit; its output. Its piped stdout and stderr are drained
/// on threads of their own meanwhile, so a child that prints more than a pipe holds never blocks on
/// it. Fails the test (killing the child) past `wait`, with what it printed.
pub fn wait_within(mut child: Child, wait: Duration, what: &str) -> std::process::Output {
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let exited = try_wait_until(wait, || {
        child.try_wait().unwrap_or_else(|e| panic!("wait for {what}: {e}"))
    });
    let Ok(status) = exited else {
        let _ = child.kill();
        let _ = child.wait();
        let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
        panic!(
            "{what} did not end within {wait:?}; stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// [`wait_until`] inside a test's async runtime: its probe is a future, the pauses between probes
/// let the runtime's other tasks (in-process servers) run, and the deadline is on the runtime's
/// clock (so under `start_paused` it counts the time the test moves, not seconds).
pub async fn wait_until_async<R: Ready, F: Future<Output = R>>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> F,
) -> R::Value {
    let end = tokio::time::Instant::now() + deadline;
    let mut pause = POLL_FIRST;
    loop {
        match probe().await.ready() {
            Ok(value) => return value,
            Err(seen) => assert!(
                tokio::time::Instant::now() < end,
                "{}",
                waited_in_vain(what, deadline, &seen)
            ),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

fn waited_in_vain(what: &str, deadline: Duration, seen: &str) -> String {
    if seen.is_empty() {
        format!("waited {deadline:?} for {what}, in vain")
    } else {
        format!("waited {deadline:?} for {what}, in vain; last seen:\n{seen}")
    }
}

/// How long `lap serve` may take to say it is listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A temp dir used as `HOME` (and XDG config and data dirs) by the server and the CLI.
pub struct Home {
    dir: tempfile::TempDir,
}

impl Default for Home {
    fn default() -> Self {
        Self::new()
    }
}

impl Home {
    pub fn new() -> Self {
        // Always under /tmp, so paths (and the table columns they widen) have the same length
        // wherever the tests run.
        let dir = tempfile::Builder::new()
            .prefix("lap-test-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `$XDG_CONFIG_HOME`.
    pub fn xdg_config(&self) -> PathBuf {
        self.path().join(".config")
    }

    /// `$XDG_DATA_HOME`.
    pub fn xdg_data(&self) -> PathBuf {
        self.path().join(".local/share")
    }

    /// The CLI's config dir: `$XDG_CONFIG_HOME/lap`.
    pub fn config_dir(&self) -> PathBuf {
        self.xdg_config().join("lap")
    }

    pub fn config_file(&self) -> PathBuf {
        self.config_dir().join("config.toml")
    }

    pub fn credentials_file(&self) -> PathBuf {
        self.config_dir().join("credentials")
    }

    /// Where a [`TestServer`] of this home keeps its data.
    pub fn server_data(&self) -> PathBuf {
        self.path().join("server-data")
    }

    /// The whole environment of every process a test starts, apart from per-call extras:
    /// `PATH`, `HOME`, the XDG dirs, and the credentials file as the key store.
    pub fn env(&self) -> Vec<(OsString, OsString)> {
        let mut env = self.env_without_store();
        env.push(("LAP_CREDENTIAL_STORE".into(), "file".into()));
        env
    }

    /// [`Home::env`] as `K=V` words, for a shell command line (`env -i …`).
    pub fn env_words(&self) -> String {
        self.env()
            .into_iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// [`Home::env`] without `LAP_CREDENTIAL_STORE`, for the keyring test.
    pub fn env_without_store(&self) -> Vec<(OsString, OsString)> {
        vec![
            (
                "PATH".into(),
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            ),
            ("HOME".into(), self.path().into()),
            ("XDG_CONFIG_HOME".into(), self.xdg_config().into()),
            ("XDG_DATA_HOME".into(), self.xdg_data().into()),
        ]
    }

    /// A `lap` command in this home.
    pub fn lap(&self) -> Lap<'_> {
        Lap {
            home: self,
            env: Vec::new(),
            stdin: None,
        }
    }

    /// Writes `body` as the CLI's `config.toml`.
    pub fn write_config(&self, body: &str) {
        std::fs::create_dir_all(self.config_dir()).unwrap();
        std::fs::write(self.config_file(), body).unwrap();
    }

    /// Insta filters for everything that changes between runs; bound until the guard drops.
    pub fn redactions(&self) -> insta::internals::SettingsBindDropGuard {
        let mut settings = insta::Settings::clone_current();
        for (pattern, replacement) in redaction_filters(self.path()) {
            settings.add_filter(&pattern, replacement);
        }
        settings.bind_to_scope()
    }
}

/// The filters of [`Home::redactions`], in the order they apply.
pub fn redaction_filters(home: &Path) -> Vec<(String, &'static str)> {
    let home = home.display().to_string();
    let mut filters = vec![
        (regex_escape(&home), "[HOME]"),
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}".to_owned(),
            "[UUID]",
        ),
        (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z".to_owned(), "[TIME]"),
        // Ephemeral ports have five digits; the default port 3000 and `:1` stay visible.
        (r"(127\.0\.0\.1|localhost):\d{5}\b".to_owned(), "$1:[PORT]"),
        (r"lapk_[A-Za-z0-9_-]{20,}".to_owned(), "[MASTER_KEY]"),
        (r"fingerprint [0-9a-f]{6,}".to_owned(), "fingerprint [FP]"),
        (r#""fingerprint": "[0-9a-f]+""#.to_owned(), r#""fingerprint": "[FP]""#),
        (
            r#""tty_token": "[0-9a-f]+""#.to_owned(),
            r#""tty_token": "[TTY_TOKEN]""#,
        ),
        (r"fake://fake-[0-9a-f]+".to_owned(), "fake://[SANDBOX]"),
    ];
    // The temp dir might also be shown through a symlinked path (e.g. /private/tmp on macOS).
    if let Ok(real) = std::fs::canonicalize(&home)
        && real.display().to_string() != home
    {
        filters.insert(1, (regex_escape(&real.display().to_string()), "[HOME]"));
    }
    filters
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A `lap` CLI invocation: clean environment, stdin null unless [`Lap::stdin`] gives input.
pub struct Lap<'a> {
    home: &'a Home,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
}

impl Lap<'_> {
    /// Adds an environment variable to the child's (otherwise clean) environment.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Feeds `input` on stdin.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Runs `lap ARGS…` to completion.
    pub fn run<I, S>(self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(LAP);
        cmd.args(args)
            .env_clear()
            .envs(self.home.env())
            .envs(self.env)
            .current_dir(self.home.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().expect("spawn lap");
        if let Some(input) = self.stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            pipe.write_all(&input).expect("write stdin");
        }
        Run::from(child.wait_with_output().expect("wait for lap"))
    }
}

/// Runs `lap ARGS…` in `home` with the clean environment and stdin null.
pub fn lap<I, S>(home: &Home, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    home.lap().run(args)
}

/// Asserts that no file under the sandbox's `$HOME` or `/tmp` holds `real` (searched from inside
/// session `session`, the value passed as an argument so it is not in the command line's text).
#[track_caller]
pub fn assert_no_file_in_the_sandbox_holds(home: &Home, session: &str, real: &str) {
    let found = lap(
        home,
        [
            "exec",
            session,
            "--",
            "sh",
            "-c",
            "grep -rl -- \"$0\" \"$HOME\" /tmp; echo found=$?",
            real,
        ],
    );
    assert!(
        found.stdout.contains("found=1"),
        "the real key is in the sandbox: {found}"
    );
}

/// What a finished `lap` printed, and how it exited.
#[derive(Debug, Clone)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Panics with the whole output unless the exit code is 0.
    #[track_caller]
    pub fn success(self) -> Self {
        assert_eq!(self.code, 0, "lap failed:\n{self}");
        self
    }

    /// stdout without its trailing newline.
    pub fn out(&self) -> &str {
        self.stdout.trim_end()
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "exit: {}", self.code)?;
        if !self.stdout.is_empty() {
            write!(f, "--- stdout\n{}", self.stdout)?;
            if !self.stdout.ends_with('\n') {
                writeln!(f)?;
            }
        }
        if !self.stderr.is_empty() {
            write!(f, "--- stderr\n{}", self.stderr)?;
            if !self.stderr.ends_with('\n') {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

/// A running `lap serve --backend fake` on a loopback port, killed when dropped.
pub struct TestServer {
    child: Option<Child>,
    /// `fake` (in memory) unless started with [`TestServer::start_local`].
    backend: &'static str,
    env: Vec<(OsString, OsString)>,
    extra_args: Vec<OsString>,
    data_dir: PathBuf,
    /// `http://127.0.0.1:PORT` (or `https://…`).
    pub url: String,
    pub port: u16,
    /// Everything the server printed on stderr so far, all its starts together.
    log: Arc<Mutex<String>>,
    /// What this start printed up to and including the `listening on` line.
    pub startup: String,
}

impl TestServer {
    /// Starts a server with the home's environment and data dir `home.server_data()`.
    pub fn start(home: &Home) -> Self {
        Self::start_with(home, Vec::<OsString>::new(), Vec::new())
    }

    /// Starts a server with extra arguments (e.g. `--tls-cert`) and environment variables.
    pub fn start_with<I, S>(home: &Home, extra_args: I, extra_env: Vec<(&str, &str)>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut env = home.env();
        env.extend(extra_env.into_iter().map(|(k, v)| (k.into(), v.into())));
        let mut server = Self {
            child: None,
            backend: "fake",
            env,
            extra_args: extra_args.into_iter().map(Into::into).collect(),
            data_dir: home.server_data(),
            url: String::new(),
            port: 0,
            log: Arc::default(),
            startup: String::new(),
        };
        server.spawn("127.0.0.1:0");
        server
    }

    /// A server on the local namespace backend: real sandboxes, under this server's data dir.
    pub fn start_local(home: &Home) -> Self {
        // The first start (fake) writes the client config; the local one takes over its port.
        let mut server = Self::start_with(home, Vec::<OsString>::new(), Vec::new());
        server.backend = "local";
        server.restart();
        server
    }

    /// [`TestServer::start_local`] with extra environment variables (e.g. `LAP_SANDBOX_CGROUPS`).
    pub fn start_local_env(home: &Home, extra_env: Vec<(&str, &str)>) -> Self {
        let mut server = Self::start_with(home, Vec::<OsString>::new(), extra_env);
        server.backend = "local";
        server.restart();
        server
    }

    /// [`TestServer::start_local`] with extra arguments (e.g. `--vault-resolve`).
    pub fn start_local_with<I, S>(home: &Home, extra_args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut server = Self::start_with(home, extra_args, Vec::new());
        server.backend = "local";
        server.restart();
        server
    }

    /// A server on the Kubernetes backend, with `KUBECONFIG=kubeconfig` and extra arguments.
    pub fn start_kube<I, S>(home: &Home, kubeconfig: &Path, extra_args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut server = Self::start_with(home, extra_args, Vec::new());
        server.backend = "kube";
        server.env.push(("KUBECONFIG".into(), kubeconfig.into()));
        server.restart();
        server
    }

    /// The process id of the running server (files tests read its memory from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// The server's data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn spawn(&mut self, listen: &str) {
        let mut child = Command::new(LAP)
            .arg("serve")
            .args(["--backend", self.backend, "--listen", listen, "--data-dir"])
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env_clear()
            .envs(self.env.clone())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lap serve");
        let stderr = child.stderr.take().expect("stderr pipe");
        self.child = Some(child);
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        let log = Arc::clone(&self.log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = lines_tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut startup = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    startup.push_str(&line);
                    startup.push('\n');
                    if let Some(url) = listening_url(&line) {
                        self.port = url.rsplit(':').next().unwrap().parse().expect("port");
                        self.url = url;
                        self.startup = startup;
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("lap serve did not report listening within {START_TIMEOUT:?}; stderr:\n{startup}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().unwrap().wait().expect("wait for lap serve");
                    panic!("lap serve exited ({status}) before listening; stderr:\n{startup}")
                }
            }
        }
    }

    /// What this start told its user: [`TestServer::startup`] without log records (timestamped
    /// `tracing` lines, which depend on the machine: e.g. that the default preview port is taken).
    pub fn told(&self) -> String {
        let log_record = |line: &str| {
            let b = line.as_bytes();
            b.len() > 20 && b[4] == b'-' && b[10] == b'T' && b[..4].iter().all(u8::is_ascii_digit)
        };
        self.startup
            .lines()
            .filter(|line| !log_record(line))
            .map(|line| format!("{line}\n"))
            .collect()
    }

    /// Stops the server as a service manager or a Ctrl-C would (SIGTERM) and returns how it exited,
    /// or `None` if it is still running after `deadline` (then it is killed).
    pub fn terminate(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take().expect("the server runs");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM lap serve");
        let exited = try_wait_until(deadline, || child.try_wait().expect("wait for lap serve"));
        if exited.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        exited.ok()
    }

    /// Kills the server with SIGKILL (`Child::kill`): no graceful shutdown, no flushing.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data dir (after [`TestServer::kill9`]).
    pub fn restart(&mut self) {
        self.kill9();
        let listen = format!("127.0.0.1:{}", self.port);
        let url = self.url.clone();
        self.spawn(&listen);
        assert_eq!(self.url, url, "the restarted server listens elsewhere");
    }

    /// Starts the server again on the same port with more arguments and environment: for settings
    /// that need its URL first (an OIDC provider's redirect URI).
    pub fn restart_with(&mut self, extra_args: &[&str], extra_env: &[(&str, &str)]) {
        self.extra_args.extend(extra_args.iter().map(OsString::from));
        self.env
            .extend(extra_env.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))));
        self.restart();
    }

    /// The master key the server generated on its first start (kept in its data dir).
    pub fn master_key(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("master.key"))
            .expect("master.key in the data dir")
            .trim()
            .to_owned()
    }

    /// Everything the server printed on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// A minimal HTTP/1.1 GET on the server (plain HTTP only), like `curl -H 'Authorization: …'`.
    /// Returns the status code and the body.
    pub fn http_get(&self, path: &str, bearer: Option<&str>) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let auth = bearer
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{auth}Accept: application/json\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read response");
        let raw = String::from_utf8(raw).expect("utf-8 response");
        let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let chunked = head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
        let body = if chunked { dechunk(body) } else { body.to_owned() };
        (status, body)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn listening_url(line: &str) -> Option<String> {
    let rest = line.strip_prefix("lap serve listening on ")?;
    Some(rest.split_whitespace().next()?.to_owned())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Deletes every local-backend sandbox under `data_dir` (a test's cleanup, even after a failure
/// half-way). Runs on its own thread and runtime, so it works from `Drop` inside or outside one.
/// Spawns `command` with no stdin or stdout and its stderr piped; returns it with its first stderr
/// line (where `lap harness --listen` and `lap vault sidecar` say where they listen), and drains
/// the rest on a thread of its own, so the child never blocks on a full pipe.
pub fn spawn_first_line(mut command: Command) -> (Child, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a lap process");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = stderr.read_to_end(&mut rest);
    });
    (child, line)
}

/// The address that follows `after` in a start line such as `… proxy on ADDR, admin on ADDR`.
pub fn addr_after(line: &str, after: &str) -> std::net::SocketAddr {
    line.split(after)
        .nth(1)
        .unwrap_or_else(|| panic!("no `{after}` in: {line}"))
        .split(|c: char| c == ',' || c.is_whitespace())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A real `lap vault sidecar` with its admin endpoint, as a sandbox pod's vault container, for the
/// Kubernetes flows through its admin port; killed when dropped.
pub struct Sidecar {
    child: Child,
    pub admin: std::net::SocketAddr,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a sidecar whose CA is made in `dir` and whose admin endpoint wants `token`.
pub fn sidecar(dir: &std::path::Path, token: &str) -> Sidecar {
    lap::vault::ca::CertificateAuthority::load_or_create(&dir.join("ca")).unwrap();
    std::fs::write(dir.join("admin-token"), token).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_lap"));
    command
        .args([
            "vault",
            "sidecar",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--ca-dir",
        ])
        .arg(dir.join("ca"))
        .arg("--admin-token-file")
        .arg(dir.join("admin-token"))
        .env_clear()
        .env("HOME", dir);
    let (child, line) = spawn_first_line(command);
    let admin = addr_after(&line, "admin on ");
    Sidecar { child, admin }
}

/// `program` (Python source) as one command line an agent can run: `python3 -c …` decoding it from
/// base64, so no quoting of the source is needed.
pub fn python_command(program: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(program);
    format!("python3 -c \"import base64;exec(base64.b64decode('{b64}'))\"")
}

/// Deletes a server's local sandboxes (under its data dir) when dropped: at the end of a test,
/// passed or not.
pub struct LocalSandboxes(pub PathBuf);

impl Drop for LocalSandboxes {
    fn drop(&mut self) {
        delete_local_sandboxes(&self.0);
    }
}

pub fn delete_local_sandboxes(data_dir: &Path) {
    use lap::sandbox::Sandbox;
    let dir = data_dir.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let local = lap::sandbox::local::Local::new(&dir).with_program(LAP);
            for sandbox in local.list().await.unwrap_or_default() {
                let _ = local.delete(&sandbox.id).await;
            }
        });
    })
    .join()
    .unwrap();
}
