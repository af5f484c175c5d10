//! Terminal benchmark: `lap attach` against `ssh localhost`, on the same machine, in one run.
//!
//! Run with `scripts/bench.sh tty` (release build, as root: real sandboxes of the local backend,
//! and an `sshd` of the benchmark's own on a loopback port, from Debian's openssh-server, with a
//! throwaway host key and client key). Each side runs under a PTY of this process, as a person's
//! terminal would:
//! - keystroke echo: one key typed into `cat` (cooked mode, so the remote PTY echoes it), timed until
//!   the echo is back on this terminal — client → `lap serve` → harness → PTY and back for `lap`,
//!   client → sshd → PTY and back for ssh; p50 and p99 over `LAP_BENCH_TTY_KEYS` keys (500);
//! - output throughput: `cat` of a file of printable text (`LAP_BENCH_TTY_MB`, 100 MB) made on the
//!   remote side beforehand, timed until a marker printed after it arrives, in MB/s.
//!
//! Targets: echo p50 under 5 ms; throughput at least ssh's.

mod support;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{LAP, Server, client_env, ms, percentile};

/// How long one step may take before the benchmark gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const ECHO_TARGET: Duration = Duration::from_millis(5);
/// Keys typed before a newline empties the remote line buffer.
const KEYS_PER_LINE: usize = 40;
/// The shell prompt each side is given, to know when a command has finished; set as
/// [`PROMPT_SET`], so that the echo of setting it does not look like it.
const PROMPT: &str = "bench-42> ";
const PROMPT_SET: &str = "PS1='bench-$((6*7))> '";

/// A program on a PTY of ours: what we type, and what comes back.
struct Terminal {
    child: Child,
    master: std::fs::File,
    output: mpsc::Receiver<Vec<u8>>,
    /// The last bytes seen, enough to find a marker split across reads.
    tail: Vec<u8>,
}

impl Terminal {
    fn spawn(mut command: Command) -> Self {
        let winsize = nix::pty::Winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&winsize), None).expect("openpty");
        let stdio = || Stdio::from(pty.slave.try_clone().unwrap());
        let child = command
            .stdin(stdio())
            .stdout(stdio())
            .stderr(stdio())
            .spawn()
            .expect("spawn the client");
        drop(pty.slave);
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone().unwrap();
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            master,
            output,
            tail: Vec::new(),
        }
    }

    fn type_bytes(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
    }

    /// Reads until `needle` has arrived; returns when it did and how many bytes came with it.
    fn wait_for(&mut self, needle: &[u8]) -> (Instant, usize) {
        let mut bytes = 0;
        loop {
            if let Some(at) = self.tail.windows(needle.len()).position(|w| w == needle) {
                self.tail.drain(..at + needle.len());
                return (Instant::now(), bytes);
            }
            let keep = self.tail.len().saturating_sub(needle.len());
            self.tail.drain(..keep);
            let Ok(chunk) = self.output.recv_timeout(STEP_TIMEOUT) else {
                panic!(
                    "timed out waiting for {:?}; the terminal ended with {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&self.tail)
                );
            };
            bytes += chunk.len();
            self.tail.extend_from_slice(&chunk);
        }
    }

    /// Runs a shell command line and waits for the prompt after it.
    fn run(&mut self, line: &str) {
        self.type_bytes(format!("{line}\r").as_bytes());
        self.wait_for(PROMPT.as_bytes());
    }

    /// Sets the prompt the other methods wait for.
    fn take_prompt(&mut self) {
        self.type_bytes(format!("{PROMPT_SET}\r").as_bytes());
        self.wait_for(PROMPT.as_bytes());
    }

    /// Keystroke echo round trips inside `cat`, each key timed until its echo is back.
    fn echo_times(&mut self, keys: usize) -> Vec<Duration> {
        self.type_bytes(b"cat\r");
        self.wait_for(b"cat\r\n");
        let mut times = Vec::with_capacity(keys);
        for i in 0..keys {
            let key = b'a' + (i % 26) as u8;
            self.tail.clear();
            while self.output.try_recv().is_ok() {}
            let sent = Instant::now();
            self.type_bytes(&[key]);
            let (back, _) = self.wait_for(&[key]);
            times.push(back - sent);
            if (i + 1) % KEYS_PER_LINE == 0 {
                // The line goes to `cat` and comes back once more: let it pass.
                self.type_bytes(b"\r");
                std::thread::sleep(Duration::from_millis(20));
                while self.output.try_recv().is_ok() {}
            }
        }
        // Ctrl-C ends `cat`; the shell prompts again.
        self.type_bytes(b"\x03");
        self.wait_for(PROMPT.as_bytes());
        times.sort();
        times
    }

    /// `cat` of `path` (on the remote side), in MB/s, timed until a marker printed after it.
    fn throughput(&mut self, path: &str, size: u64) -> f64 {
        self.tail.clear();
        while self.output.try_recv().is_ok() {}
        let started = Instant::now();
        self.type_bytes(format!("cat {path}; echo END-$((6*7))\r").as_bytes());
        let (done, _) = self.wait_for(b"END-42");
        size as f64 / 1e6 / (done - started).as_secs_f64()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An sshd of our own on a loopback port, with throwaway keys in a temp dir.
struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sshd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        for key in ["host_key", "client_key"] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f", &path(key)])
                .output()
                .expect("ssh-keygen (scripts/bench.sh installs openssh-client)");
            assert!(out.status.success(), "ssh-keygen: {out:?}");
        }
        std::fs::copy(path("client_key.pub"), path("authorized_keys")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {}\n",
            path("host_key"),
            path("authorized_keys"),
            path("sshd.pid")
        );
        std::fs::write(path("sshd_config"), config).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f", &path("sshd_config")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("/usr/sbin/sshd (scripts/bench.sh installs openssh-server)");
        let deadline = Instant::now() + STEP_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port, dir }
    }

    fn client(&self) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.args(["-tt", "-p", &self.port.to_string(), "-i"])
            .arg(self.dir.path().join("client_key"))
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "root@127.0.0.1",
                "env TERM=xterm-256color bash --norc --noprofile -i",
            ]);
        ssh
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes a file of `megabytes` MB of printable text; returns its exact size.
fn make_file(sh: impl FnOnce(&str) -> std::process::Output, path: &str, megabytes: u64) -> u64 {
    // base64 turns 3 bytes into 4 characters; 120-character lines.
    let raw = megabytes * 1_000_000 * 3 / 4;
    let script = format!("head -c {raw} /dev/urandom | base64 -w 120 > {path} && stat -c %s {path}");
    let out = sh(&script);
    assert!(out.status.success(), "{script}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Milliseconds to the microsecond: an echo on loopback can take well under one.
fn fine(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Figures {
    echo: Vec<Duration>,
    mb_per_s: f64,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let keys = env_number("LAP_BENCH_TTY_KEYS", 500) as usize;
    let megabytes = env_number("LAP_BENCH_TTY_MB", 100);

    eprintln!("lap: a shell session, `lap attach` under a PTY");
    let server = Server::start(0);
    server.lap(&["agents", "create", "demo", "--harness", "shell"]);
    let session: serde_json::Value =
        serde_json::from_slice(&server.lap(&["--json", "sessions", "create", "demo"]).stdout).unwrap();
    let id = session["id"].as_str().unwrap().to_owned();
    let size = make_file(
        |script| server.lap(&["exec", &id, "--", "sh", "-c", script]),
        "/tmp/big",
        megabytes,
    );
    let mut attach = Command::new(LAP);
    attach
        .args(["attach", &id])
        .env_clear()
        .envs(client_env(server.home.path()));
    let mut term = Terminal::spawn(attach);
    term.wait_for(b"$ ");
    term.take_prompt();
    let lap = Figures {
        echo: term.echo_times(keys),
        mb_per_s: term.throughput("/tmp/big", size),
    };
    term.run("true");
    drop(term);
    drop(server);

    eprintln!("ssh: ssh -tt root@127.0.0.1 to an sshd of our own, under a PTY");
    let sshd = Sshd::start();
    let big = sshd.dir.path().join("big").display().to_string();
    let ssh_size = make_file(
        |script| Command::new("sh").args(["-c", script]).output().unwrap(),
        &big,
        megabytes,
    );
    let mut term = Terminal::spawn(sshd.client());
    term.take_prompt();
    let ssh = Figures {
        echo: term.echo_times(keys),
        mb_per_s: term.throughput(&big, ssh_size),
    };
    drop(term);
    drop(sshd);

    println!();
    println!(
        "{:<14} {:>12} {:>12} {:>16}",
        "terminal", "echo p50", "echo p99", "cat throughput"
    );
    for (name, f) in [("lap attach", &lap), ("ssh localhost", &ssh)] {
        println!(
            "{:<14} {:>12} {:>12} {:>11.1} MB/s",
            name,
            fine(percentile(&f.echo, 0.5)),
            fine(percentile(&f.echo, 0.99)),
            f.mb_per_s
        );
    }
    let (lap_p50, ssh_p50) = (percentile(&lap.echo, 0.5), percentile(&ssh.echo, 0.5));
    println!();
    println!(
        "lap / ssh: echo p50 {:.2}x, throughput {:.2}x ({keys} keys, {:.0} MB)",
        lap_p50.as_secs_f64() / ssh_p50.as_secs_f64(),
        lap.mb_per_s / ssh.mb_per_s,
        size as f64 / 1e6
    );
    let echo_ratio = lap_p50.as_secs_f64() / ssh_p50.as_secs_f64();
    support::record(
        "terminal: keystroke echo through `lap attach` → `lap serve` → harness → PTY and back, p50 / p99",
        &format!("{} / {}", fine(lap_p50), fine(percentile(&lap.echo, 0.99))),
        &format!(
            "`ssh localhost`: {} / {} (lap {echo_ratio:.2}×)",
            fine(ssh_p50),
            fine(percentile(&ssh.echo, 0.99))
        ),
        &format!(
            "p50 < {}: {}; ≤ 1.3× ssh (issue 22): {}",
            ms(ECHO_TARGET),
            support::met(lap_p50 < ECHO_TARGET),
            support::met(echo_ratio <= 1.3)
        ),
    );
    support::record(
        &format!(
            "terminal: `cat` of a {:.0} MB text file to the attached terminal",
            size as f64 / 1e6
        ),
        &format!("{:.1} MB/s", lap.mb_per_s),
        &format!(
            "`ssh localhost`: {:.1} MB/s (lap {:.2}×)",
            ssh.mb_per_s,
            lap.mb_per_s / ssh.mb_per_s
        ),
        &format!("≥ ssh's: {}", support::met(lap.mb_per_s >= ssh.mb_per_s)),
    );
    println!(
        "targets: echo p50 under {}: {} ({}); throughput at least ssh's: {}",
        ms(ECHO_TARGET),
        ms(lap_p50),
        if lap_p50 < ECHO_TARGET { "met" } else { "NOT met" },
        if lap.mb_per_s >= ssh.mb_per_s { "met" } else { "NOT met" }
    );
}
