//! `lap serve` under a hostile sandbox's pressure on its descriptors (DESIGN §5, invariant 8): the
//! real `lap serve --backend local`, started with a low `RLIMIT_NOFILE`, and `shell` agents whose
//! sandboxes open as many tunnels through the vault as they can — CONNECT, TLS, one request over
//! HTTP/2 or HTTP/1.1 to a fake upstream on 127.0.0.1, then held open
//! (`vault_pressure_agent.py`, run by `lap exec`).
//!
//! What is proved: a sandbox gets its share of tunnels ([`Budget::from_descriptor_limit`]) and a
//! `429` with `X-Lap-Vault-Blocked: tunnel-limit` for each one more; a second sandbox gets its own;
//! while both hold theirs, `lap serve` keeps answering its REST API (health, listings, a new
//! session's bring-up, another session's exec and message), never runs out of descriptors, and never
//! logs `EMFILE`; idle tunnels (HTTP/2 and HTTP/1.1) are closed after `LAP_VAULT_IDLE_TIMEOUT`,
//! which frees their places. Only loopback traffic; every wait has a deadline.
//!
//! And the same for `lap vault sidecar` (the vault beside a Kubernetes pod), as a plain process
//! under a low `RLIMIT_NOFILE`: a hostile agent in the pod floods both of its ports (the proxy with
//! tunnels, the admin endpoint with idle connections, both reachable from the pod's network); the
//! sidecar keeps its budget ([`Budget::for_holder`]), refuses the tunnels past it with `429`, never
//! runs out of descriptors and never ends, and serves the next well-behaved request.

#![cfg(target_os = "linux")]

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lap::vault::ca::CertificateAuthority;
use lap::vault::limits::{Budget, Holder};
use serde_json::Value;

use crate::support;
use crate::support::upstream::{Seen, upstream};

/// The soft `RLIMIT_NOFILE` `lap serve` starts with; it raises it to [`HARD_DESCRIPTORS`].
const SOFT_DESCRIPTORS: u64 = 256;
/// The hard `RLIMIT_NOFILE` of `lap serve`: low enough that two sandboxes each holding the default
/// 128 tunnels (two descriptors each) would exhaust it.
const HARD_DESCRIPTORS: u64 = 512;
/// Tunnels each hostile sandbox tries to open at once (the issue's attack opened 420 in all).
const ATTEMPTS: usize = 210;
/// How long a call to the REST API may take while the sandboxes hold their tunnels.
const API_DEADLINE: Duration = Duration::from_secs(3);
/// How long a session's bring-up, or an agent's batch of tunnels, may take.
const WAIT: Duration = Duration::from_secs(90);
/// The vault's idle timeout in the idle test.
const IDLE: Duration = Duration::from_secs(3);

const AGENT: &str = include_str!("../vault_pressure_agent.py");

/// The real value of the agents' credential: random per run.
fn real_token() -> String {
    let mut bytes = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("ghp_PressureToken{hex}")
}

/// A `lap serve --backend local` under a low descriptor limit, a fake upstream for
/// `api.github.test`, and an agent `coder` holding a credential bound to it.
struct World {
    _rt: tokio::runtime::Runtime,
    real: String,
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    child: Child,
    url: String,
    addr: String,
    home: tempfile::TempDir,
    data: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    sessions: Vec<String>,
    _dir: tempfile::TempDir,
}

impl World {
    fn new(extra_env: &[(&str, &str)]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let public_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("public-ca")).unwrap());
        let ca_file = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca_file, public_ca.cert_pem()).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let port = rt.block_on(upstream(public_ca, seen.clone(), true));
        let home = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lap"));
        cmd.args(["serve", "--backend", "local", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .args(["--vault-resolve", &format!("api.github.test:{port}:127.0.0.1")])
            .arg("--vault-upstream-ca")
            .arg(&ca_file)
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LAP_CREDENTIAL_STORE", "file")
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: only `setrlimit`, async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: SOFT_DESCRIPTORS,
                    rlim_max: HARD_DESCRIPTORS,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = lines_tx.send(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        break rest.split_whitespace().next().unwrap().to_owned();
                    }
                }
                Err(err) => {
                    let _ = child.kill();
                    panic!(
                        "lap serve did not report listening within {WAIT:?} ({err}):\n{}",
                        log.lock().unwrap()
                    );
                }
            }
        };
        let addr = url.trim_start_matches("http://").to_owned();
        let world = Self {
            _rt: rt,
            real: real_token(),
            port,
            seen,
            child,
            url,
            addr,
            home,
            data,
            log,
            sessions: Vec::new(),
            _dir: dir,
        };
        let agent = world.lap(
            &[
                "--json",
                "agents",
                "create",
                "coder",
                "--harness",
                "shell",
                "--credential",
                "GITHUB_TOKEN@api.github.test",
            ],
            &[("GITHUB_TOKEN", &world.real.clone())],
        );
        assert!(agent.status.success(), "{agent:?}");
        world
    }

    /// Runs the `lap` client against this server; it must end within [`WAIT`].
    fn lap(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let child = Command::new(env!("CARGO_BIN_EXE_lap"))
            .args(["--server", &self.url])
            .args(args)
            .env_clear()
            .env("HOME", self.home.path())
            .env("LAP_CREDENTIAL_STORE", "file")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let (done, output) = std::sync::mpsc::channel();
        // Read to the end on a thread of its own, so a long output never blocks the client.
        std::thread::spawn(move || {
            let _ = done.send(child.wait_with_output());
        });
        match output.recv_timeout(WAIT) {
            Ok(output) => output.unwrap(),
            Err(_) => {
                // SAFETY: a plain kill(2) of the client this test started.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                panic!(
                    "`lap {args:?}` did not end within {WAIT:?}\nserver log:\n{}",
                    self.log()
                );
            }
        }
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.lap(args, &[]);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A new session of `coder`, ready within [`WAIT`].
    fn session(&mut self) -> String {
        let id = self.json(&["--json", "sessions", "create", "coder"])["id"]
            .as_str()
            .unwrap()
            .to_owned();
        self.sessions.push(id.clone());
        let ready = support::try_wait_until(WAIT, || {
            let status = self.json(&["--json", "sessions", "show", &id])["status"].clone();
            match status.as_str() {
                Some("ready") => Ok(()),
                Some("creating") => Err(status),
                _ => panic!("session {id} is {status}, not ready\nserver log:\n{}", self.log()),
            }
        });
        if let Err(status) = ready {
            panic!(
                "session {id} is {status}, not ready within {WAIT:?}\nserver log:\n{}",
                self.log()
            );
        }
        id
    }

    /// Runs a shell script in a session's sandbox; returns (exit code, stdout + stderr).
    fn sh(&self, session: &str, script: &str) -> (i32, String) {
        let out = self.lap(&["exec", session, "--", "sh", "-c", script], &[]);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(&self.real), "the real value reached the sandbox: {all}");
        (out.status.code().unwrap_or(-1), all)
    }

    /// Starts the hostile agent in `session`'s sandbox, in the background: it opens `count` tunnels
    /// at once, reports to `$HOME/pressure.opened`, then holds them (`hold`) until released, or
    /// waits for the vault to close them and opens `count` again (`idle`).
    fn attack(&self, session: &str, count: usize, mode: &str) -> std::thread::JoinHandle<(i32, String)> {
        let program = support::python_command(AGENT);
        let script = format!(
            "rm -f \"$HOME\"/pressure.*; TARGET=api.github.test:{} N={count} MODE={mode} WAIT={} \
             OUT=\"$HOME/pressure\" {program}",
            self.port,
            WAIT.as_secs()
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lap"));
        cmd.args(["--server", &self.url, "exec", session, "--", "sh", "-c", &script])
            .env_clear()
            .env("HOME", self.home.path())
            .env("LAP_CREDENTIAL_STORE", "file")
            .stdin(Stdio::null());
        std::thread::spawn(move || {
            let out = cmd.output().unwrap();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.code().unwrap_or(-1), all)
        })
    }

    /// The agent's report `name` in `session`'s sandbox, once written (within [`WAIT`]).
    fn report(&self, session: &str, name: &str, agent: &std::thread::JoinHandle<(i32, String)>) -> Value {
        let report = support::try_wait_until(WAIT, || {
            let (code, out) = self.sh(session, &format!("cat \"$HOME/pressure.{name}\" 2>/dev/null"));
            if code == 0 && !out.trim().is_empty() {
                return Some(serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}")));
            }
            assert!(
                !agent.is_finished(),
                "the agent in {session} ended before reporting `{name}`\nserver log:\n{}",
                self.log()
            );
            None
        });
        report.unwrap_or_else(|_| {
            panic!(
                "the agent in {session} did not report `{name}` within {WAIT:?}\nserver log:\n{}",
                self.log()
            )
        })
    }

    /// A plain HTTP/1.1 request to the REST API that must be answered within [`API_DEADLINE`];
    /// returns the status and the body.
    fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let started = Instant::now();
        let answer = self.try_api(method, path, body);
        let took = started.elapsed();
        match answer {
            Ok(answer) if took <= API_DEADLINE => answer,
            Ok(_) => panic!(
                "{method} {path} took {took:?}, more than {API_DEADLINE:?}\nserver log:\n{}",
                self.log()
            ),
            Err(err) => panic!(
                "{method} {path} got no answer within {API_DEADLINE:?}: {err}\nserver log:\n{}",
                self.log()
            ),
        }
    }

    fn try_api(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
        let key = std::fs::read_to_string(self.data.path().join("master.key"))?;
        let mut tcp = TcpStream::connect_timeout(&self.addr.parse().unwrap(), API_DEADLINE)?;
        tcp.set_read_timeout(Some(API_DEADLINE))?;
        tcp.set_write_timeout(Some(API_DEADLINE))?;
        let body = body.unwrap_or("");
        write!(
            tcp,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            key.trim(),
            body.len()
        )?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw)?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other(format!("no response head: {raw:?}")))?;
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok((status, body.to_owned()))
    }

    /// The descriptors `lap serve` holds now.
    fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    /// `lap serve`'s soft and hard `RLIMIT_NOFILE`, as `/proc` shows them.
    fn descriptor_limits(&self) -> (u64, u64) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id())).unwrap();
        let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
        let numbers: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        (numbers[0], numbers[1])
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Asserts `lap serve` never ran out of descriptors.
    fn assert_no_emfile(&self) {
        let log = self.log();
        assert!(
            !log.contains("Too many open files") && !log.contains("EMFILE"),
            "lap serve ran out of descriptors:\n{log}"
        );
    }

    /// The session's egress log, one line per record: for failure messages.
    fn egress(&self, session: &str) -> String {
        let records = self.json(&["--json", "sessions", "egress", session]);
        records.as_array().unwrap().iter().map(|r| format!("{r}\n")).collect()
    }

    /// The session's egress records that refused a tunnel for the limit, within [`WAIT`].
    fn tunnel_limit_records(&self, session: &str) -> usize {
        let refused = support::try_wait_until(WAIT, || {
            let records = self.json(&["--json", "sessions", "egress", session]);
            let text = records.to_string();
            assert!(!text.contains(&self.real), "the egress log holds the real value");
            let refused = records
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r.to_string().contains("tunnel-limit"))
                .count();
            (refused > 0).then_some(refused)
        });
        refused.unwrap_or(0)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for session in self.sessions.clone() {
            let _ = self.sh(&session, "touch \"$HOME/pressure.release\"");
            let _ = self.lap(&["--json", "sessions", "delete", &session], &[]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        support::delete_local_sandboxes(self.data.path());
        assert!(
            std::thread::panicking() || !self.log().contains(&self.real),
            "the server log holds the real value"
        );
    }
}

/// What a sandbox's agent got: every tunnel up to the budget's share open (half of them HTTP/2),
/// each with a `200` through the vault, every other attempt refused `429 tunnel-limit`.
fn assert_share(session: &str, opened: &Value, per_sandbox: usize) {
    assert_eq!(opened["errors"], serde_json::json!([]), "{session}: {opened}");
    assert_eq!(opened["open"], per_sandbox, "{session}: {opened}");
    assert_eq!(opened["ok"], per_sandbox, "{session}: {opened}");
    assert!(
        opened["alpn"]["h2"].as_u64() >= Some(per_sandbox as u64 / 2 - 1),
        "{session}: {opened}"
    );
    assert_eq!(
        opened["refused"],
        serde_json::json!({"429 tunnel-limit": ATTEMPTS - per_sandbox}),
        "{session}: {opened}"
    );
}

#[test]
fn two_sandboxes_at_their_tunnel_limit_under_a_low_descriptor_limit_leave_lap_serve_answering() {
    let mut w = World::new(&[]);
    // `lap serve` raised its soft limit to the hard one, and derived its budget from that.
    assert_eq!(w.descriptor_limits(), (HARD_DESCRIPTORS, HARD_DESCRIPTORS));
    let budget = Budget::from_descriptor_limit(HARD_DESCRIPTORS);
    assert!(budget.per_sandbox < ATTEMPTS, "{budget:?}");
    assert!(
        w.log().contains(&format!(
            "allows each sandbox only {} connections through the vault",
            budget.per_sandbox
        )),
        "lap serve does not say its limit is lowered:\n{}",
        w.log()
    );
    let first = w.session();
    let second = w.session();
    let baseline = w.open_descriptors();

    // Both sandboxes open all they can, at once, and hold it.
    let first_agent = w.attack(&first, ATTEMPTS, "hold");
    let second_agent = w.attack(&second, ATTEMPTS, "hold");
    let first_opened = w.report(&first, "opened", &first_agent);
    let second_opened = w.report(&second, "opened", &second_agent);

    // While they hold them, lap serve answers: health, listings, a message to a session, and a new
    // session's whole bring-up (a sandbox, its harness, its vault listener) and its tunnels.
    let held = w.open_descriptors();
    for _ in 0..3 {
        let (status, body) = w.api("GET", "/api/v1/health", None);
        assert_eq!(status, 200, "{body}");
        let (status, body) = w.api("GET", "/api/v1/managed_agents/sessions", None);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&first) && body.contains(&second), "{body}");
        let (status, body) = w.api("GET", "/api/v1/managed_agents/agents", None);
        assert_eq!(status, 200, "{body}");
        let (status, body) = w.api(
            "POST",
            &format!("/api/v1/managed_agents/sessions/{second}/message"),
            Some(r#"{"text":"still there?"}"#),
        );
        assert_eq!(status, 200, "{body}");
    }
    // Each sandbox got its share, and a refusal for each attempt beyond it.
    assert_share(&first, &first_opened, budget.per_sandbox);
    assert_share(&second, &second_opened, budget.per_sandbox);
    let started = Instant::now();
    let third = w.session();
    let (code, out) = w.sh(
        &third,
        &format!(
            "for i in 1 2 3; do curl -sS -o /dev/null -w '%{{http_code}} ' -H \"Authorization: Bearer $GITHUB_TOKEN\" \
             https://api.github.test:{}/third; done",
            w.port
        ),
    );
    assert_eq!((code, out.trim()), (0, "200 200 200"), "a third sandbox got no tunnel");
    eprintln!(
        "a third session came up and got its tunnels in {:?}, with {held} descriptors held",
        started.elapsed()
    );
    let (status, _) = w.api("GET", "/api/v1/health", None);
    assert_eq!(status, 200);
    // And it kept room: the vault stayed within its budget.
    assert!(
        held as u64 + 64 <= HARD_DESCRIPTORS,
        "lap serve held {held} descriptors of {HARD_DESCRIPTORS} (it held {baseline} before the attack)"
    );

    // The refusals are recorded; the upstream got the real value, and only it, from each tunnel.
    assert!(w.tunnel_limit_records(&first) > 0, "no tunnel-limit record for {first}");
    let seen = w.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2 * budget.per_sandbox + 3, "requests upstream");
    let expected = format!("Bearer {}", w.real);
    assert!(
        seen.iter()
            .all(|s| s.header("authorization") == Some(expected.as_str()))
    );
    w.assert_no_emfile();

    // Released, the tunnels close and the agents end cleanly.
    for (session, agent) in [(&first, first_agent), (&second, second_agent)] {
        let (code, _) = w.sh(session, "touch \"$HOME/pressure.release\"");
        assert_eq!(code, 0);
        let (code, out) = agent.join().unwrap();
        assert_eq!(code, 0, "the agent in {session}: {out}");
    }
    w.assert_no_emfile();
}

#[test]
fn idle_tunnels_are_closed_after_the_idle_timeout_and_their_places_freed() {
    let idle = format!("{}s", IDLE.as_secs());
    let mut w = World::new(&[("LAP_VAULT_IDLE_TIMEOUT", &idle)]);
    let budget = Budget::from_descriptor_limit(HARD_DESCRIPTORS);
    let session = w.session();
    let before = w.open_descriptors();
    // Exactly the sandbox's share: every tunnel opens, then goes quiet.
    let agent = w.attack(&session, budget.per_sandbox, "idle");
    let opened = w.report(&session, "opened", &agent);
    assert_eq!(
        opened["open"],
        budget.per_sandbox,
        "{opened}\negress log:\n{}",
        w.egress(&session)
    );
    assert_eq!(opened["ok"], budget.per_sandbox, "{opened}");
    let closed = w.report(&session, "closed", &agent);
    assert_eq!(closed["errors"], serde_json::json!([]), "{closed}");
    assert_eq!(closed["closed"], budget.per_sandbox, "{closed}");
    let h2 = opened["alpn"]["h2"].as_u64().unwrap();
    assert!(h2 > 0, "{opened}");
    assert_eq!(
        closed["goaway"].as_u64(),
        Some(h2),
        "every HTTP/2 tunnel gets GOAWAY: {closed}"
    );
    let (shortest, longest) = (
        closed["min_idle"].as_f64().unwrap(),
        closed["max_idle"].as_f64().unwrap(),
    );
    // Not before the timeout (less the agent's own clock slack), and not long after it.
    assert!(
        shortest >= IDLE.as_secs_f64() - 0.5,
        "closed after {shortest}s: {closed}"
    );
    assert!(longest <= IDLE.as_secs_f64() * 3.0, "closed after {longest}s: {closed}");
    // Their places are free again: the same number opens once more (a refusal is retried until
    // the agent's deadline: a place frees a moment after the client has seen its tunnel end).
    let reopened = w.report(&session, "reopened", &agent);
    assert_eq!(reopened["open"], budget.per_sandbox, "{reopened}");
    assert_eq!(reopened["refused"], serde_json::json!({}), "{reopened}");
    let (code, out) = agent.join().unwrap();
    assert_eq!(code, 0, "{out}");
    // Closed on both sides: lap serve is back near where it was.
    support::wait_until(&format!("lap serve back near its {before} descriptors"), WAIT, || {
        let open = w.open_descriptors();
        if open <= before + 8 {
            Ok(())
        } else {
            Err(format!("it holds {open}"))
        }
    });
    w.assert_no_emfile();
}

/// The sidecar's descriptor limit (soft and hard, so it cannot raise it).
const SIDECAR_DESCRIPTORS: u64 = 128;
/// Connections the hostile agent opens to each of the sidecar's ports: well past its descriptor
/// limit, within its listeners' backlog (128), where the kernel keeps what is not yet accepted.
const SIDECAR_ATTEMPTS: usize = 120;
const SIDECAR_STUB: &str = "stub_github_token_5eed5eed5eed5eed";

/// Reads the status line and headers of a response on `stream`, within its read timeout.
fn response_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn a_sidecar_under_a_low_descriptor_limit_outlasts_a_flood_of_tunnels_and_serves_the_next_request() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let public_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("public-ca")).unwrap());
    let upstream_ca = dir.path().join("upstream-ca.pem");
    std::fs::write(&upstream_ca, public_ca.cert_pem()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = rt.block_on(upstream(public_ca, seen.clone(), true));
    let ca_dir = dir.path().join("vault");
    let vault_ca = dir.path().join("vault-ca.pem");
    std::fs::write(
        &vault_ca,
        CertificateAuthority::load_or_create(&ca_dir).unwrap().cert_pem(),
    )
    .unwrap();
    let real = real_token();
    let binding = dir.path().join("binding.json");
    let file = serde_json::json!({"credentials": [
        {"name": "GITHUB_TOKEN", "stub": SIDECAR_STUB, "value": real, "hosts": ["api.github.test"]}
    ]});
    std::fs::write(&binding, file.to_string()).unwrap();
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "sidecar-pressure-admin-token\n").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lap"));
    cmd.args(["vault", "sidecar", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--ca-dir")
        .arg(&ca_dir)
        .arg("--binding")
        .arg(&binding)
        .arg("--admin-token-file")
        .arg(&token)
        .arg("--vault-upstream-ca")
        .arg(&upstream_ca)
        .args(["--vault-resolve", &format!("api.github.test:{port}:127.0.0.1")])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only `setrlimit`, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: SIDECAR_DESCRIPTORS,
                rlim_max: SIDECAR_DESCRIPTORS,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let mut child = Kill(child);
    let log = Arc::new(Mutex::new(String::new()));
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = lines_tx.send(line);
            }
        });
    }
    let line = loop {
        match lines_rx.recv_timeout(WAIT) {
            Ok(line) if line.contains("proxy on ") => break line,
            Ok(_) => {}
            Err(err) => panic!(
                "the sidecar did not report its addresses within {WAIT:?} ({err}):\n{}",
                log.lock().unwrap()
            ),
        }
    };
    let proxy = support::addr_after(&line, "proxy on ");
    let admin = support::addr_after(&line, "admin on ");
    let budget = Budget::for_holder(Holder::Sidecar, SIDECAR_DESCRIPTORS);

    // The flood: idle connections to the admin endpoint, then tunnels, all held open.
    let mut held = Vec::new();
    for _ in 0..SIDECAR_ATTEMPTS {
        held.push(TcpStream::connect(admin).expect("the admin endpoint's backlog takes the connection"));
    }
    let mut tunnels = Vec::new();
    for _ in 0..SIDECAR_ATTEMPTS {
        let sent = TcpStream::connect(proxy).and_then(|mut stream| {
            write!(
                stream,
                "CONNECT api.github.test:{port} HTTP/1.1\r\nHost: api.github.test:{port}\r\n\r\n"
            )?;
            Ok(stream)
        });
        match sent {
            Ok(stream) => tunnels.push(stream),
            Err(err) => panic!(
                "tunnel {} of the flood: {err}; the sidecar ended? (exit {:?}):\n{}",
                tunnels.len() + 1,
                child.0.try_wait(),
                log.lock().unwrap()
            ),
        }
    }
    let (mut open, mut refused, mut other) = (0, 0, Vec::new());
    for stream in &mut tunnels {
        stream.set_read_timeout(Some(API_DEADLINE)).unwrap();
        let head = response_head(stream);
        if head.starts_with("HTTP/1.1 200") {
            open += 1;
        } else if head.starts_with("HTTP/1.1 429")
            && head.to_ascii_lowercase().contains("x-lap-vault-blocked: tunnel-limit")
        {
            refused += 1;
        } else {
            other.push(head);
        }
    }
    let alive = child.0.try_wait().unwrap().is_none();
    assert!(
        alive,
        "the sidecar ended under the flood (exit {:?}):\n{}",
        child.0.try_wait(),
        log.lock().unwrap()
    );
    assert_eq!(
        open, budget.per_sandbox,
        "tunnels opened: the sidecar's budget {budget:?}"
    );
    assert_eq!(
        (refused, other.len()),
        (SIDECAR_ATTEMPTS - budget.per_sandbox, 0),
        "every tunnel past the budget is refused 429 tunnel-limit; others: {other:?}"
    );

    // The agent lets go; the next well-behaved request is served and swapped.
    drop((tunnels, held));
    let answered = support::try_wait_until(WAIT, || {
        let (status, output) = rt.block_on(support::upstream::curl(
            proxy,
            &vault_ca,
            &[
                "--max-time",
                "10",
                "-H",
                &format!("Authorization: Bearer {SIDECAR_STUB}"),
                &format!("https://api.github.test:{port}/"),
            ],
        ));
        // A tunnel let go may hold its place until the sidecar sees it closed.
        if status == 200 {
            Ok(output)
        } else {
            Err(format!("{status}: {output}"))
        }
    });
    let output = answered.unwrap_or_else(|last| panic!("{last}\nsidecar:\n{}", log.lock().unwrap()));
    assert!(!output.contains(&real), "{output}");
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|s| s.header("authorization") == Some(format!("Bearer {real}").as_str())),
        "the upstream got the swapped credential"
    );
    let log = log.lock().unwrap();
    assert!(
        !log.contains("Too many open files") && !log.contains("cannot accept"),
        "the sidecar ran out of descriptors:\n{log}"
    );
    assert!(child.0.try_wait().unwrap().is_none(), "the sidecar ended:\n{log}");
}
