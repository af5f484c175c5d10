//! `lap port-forward` beside `ssh -L`, in one run: the same small TCP server program
//! ([`SERVER_PY`]) inside a real sandbox for lap (reached through `lap serve`, a WebSocket per
//! connection, and the sandbox's harness) and on the host's loopback for ssh (reached through an
//! `sshd` of the benchmark's own, as `tests/it/tty.rs`'s benchmark starts it, with `ssh -N -L`).
//!
//! Figures, each side:
//! - connection latency: `connect()` to the first byte echoed on a fresh connection (a new
//!   WebSocket and harness connection for lap, a new channel for ssh); p50 and p99 over
//!   `LAP_BENCH_PORTS_CONNS` connections (200);
//! - round trip on an open connection: one byte out and back; p50 over 1000;
//! - throughput: `LAP_BENCH_PORTS_MB` MiB (256) downloaded through the forward, MB/s.
//!
//! Needs root (sandboxes) and openssh (`scripts/bench.sh ports` installs it).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{LAP, Server, client_env, percentile};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const ROUND_TRIPS: usize = 1000;

/// The server both sides reach: `E` then an echo of every byte; `D` + 4-byte big-endian N then N
/// MiB of data and the end.
const SERVER_PY: &str = r#"
import socket, sys, threading
CHUNK = b"x" * (1 << 20)
def exactly(c, n):
    data = b""
    while len(data) < n:
        more = c.recv(n - len(data))
        if not more:
            break
        data += more
    return data
def handle(c):
    with c:
        cmd = exactly(c, 1)
        if cmd == b"E":
            while True:
                b = c.recv(1)
                if not b:
                    return
                c.sendall(b)
        elif cmd == b"D":
            n = int.from_bytes(exactly(c, 4), "big")
            for _ in range(n):
                c.sendall(CHUNK)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(128)
while True:
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"#;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_accepting(addr: SocketAddr) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing accepts on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a child when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Figures {
    connect: Vec<Duration>,
    round_trip: Vec<Duration>,
    mb_per_s: f64,
}

/// Measures the forward listening at `addr`.
fn measure(addr: SocketAddr, conns: usize, mib: u32) -> Figures {
    let mut connect = Vec::with_capacity(conns);
    for _ in 0..conns {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
        stream.write_all(b"Ea").unwrap();
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).unwrap();
        connect.push(started.elapsed());
    }
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    stream.write_all(b"E").unwrap();
    let mut round_trip = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let started = Instant::now();
        stream.write_all(b"b").unwrap();
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).unwrap();
        round_trip.push(started.elapsed());
    }
    drop(stream);
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    let started = Instant::now();
    stream.write_all(b"D").unwrap();
    stream.write_all(&mib.to_be_bytes()).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let elapsed = started.elapsed();
    assert_eq!(total, u64::from(mib) << 20, "the download came back short");
    connect.sort();
    round_trip.sort();
    Figures {
        connect,
        round_trip,
        mb_per_s: total as f64 / 1e6 / elapsed.as_secs_f64(),
    }
}

fn fine(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let conns = env_number("LAP_BENCH_PORTS_CONNS", 200) as usize;
    let mib = env_number("LAP_BENCH_PORTS_MB", 256) as u32;

    eprintln!("lap: lap port-forward to a server inside a sandbox");
    let server = Server::start(0);
    server.lap(&["agents", "create", "bench", "--harness", "shell"]);
    let session: serde_json::Value =
        serde_json::from_slice(&server.lap(&["--json", "sessions", "create", "bench"]).stdout).unwrap();
    let id = session["id"].as_str().unwrap().to_owned();
    let write = Command::new(LAP)
        .args(["exec", &id, "--", "sh", "-c", "cat > /tmp/bench_server.py"])
        .env_clear()
        .envs(client_env(server.home.path()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut write = write;
    write.stdin.take().unwrap().write_all(SERVER_PY.as_bytes()).unwrap();
    assert!(write.wait().unwrap().success());
    server.lap(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "nohup python3 /tmp/bench_server.py 9100 >/tmp/bench.log 2>&1 </dev/null &",
    ]);
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let out = server.lap(&["--json", "sessions", "ports", &id]);
        if String::from_utf8_lossy(&out.stdout).contains("9100") {
            break;
        }
        assert!(Instant::now() < deadline, "the sandbox's server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut forward = Command::new(LAP)
        .args(["port-forward", &id, "0:9100"])
        .env_clear()
        .envs(client_env(server.home.path()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(forward.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let forward = Killed(forward);
    let addr: SocketAddr = line
        .strip_prefix("Forwarding from ")
        .and_then(|rest| rest.split(" -> ").next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line from lap port-forward: {line:?}"));
    let lap = measure(addr, conns, mib);
    drop(forward);
    drop(server);

    eprintln!("ssh: ssh -N -L to the same server program on the host's loopback");
    let host_port = free_port();
    let _target = Killed(
        Command::new("python3")
            .args(["-c", SERVER_PY, &host_port.to_string()])
            .spawn()
            .expect("python3"),
    );
    wait_accepting(SocketAddr::from(([127, 0, 0, 1], host_port)));
    let sshd = Sshd::start();
    let local_port = free_port();
    let _tunnel = Killed(
        Command::new("ssh")
            .args(["-N", "-p", &sshd.port.to_string(), "-i"])
            .arg(sshd.dir.path().join("client_key"))
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-L",
                &format!("127.0.0.1:{local_port}:127.0.0.1:{host_port}"),
                "root@127.0.0.1",
            ])
            .spawn()
            .expect("ssh"),
    );
    let ssh_addr = SocketAddr::from(([127, 0, 0, 1], local_port));
    wait_accepting(ssh_addr);
    let ssh = measure(ssh_addr, conns, mib);

    println!();
    println!(
        "{:<16} {:>14} {:>14} {:>14} {:>14}",
        "forward", "connect p50", "connect p99", "round trip p50", "throughput"
    );
    for (name, f) in [("lap port-forward", &lap), ("ssh -L", &ssh)] {
        println!(
            "{:<16} {:>14} {:>14} {:>14} {:>9.1} MB/s",
            name,
            fine(percentile(&f.connect, 0.5)),
            fine(percentile(&f.connect, 0.99)),
            fine(percentile(&f.round_trip, 0.5)),
            f.mb_per_s
        );
    }
    let p50 = |f: &Figures, which: fn(&Figures) -> &Vec<Duration>| percentile(which(f), 0.5);
    support::record(
        &format!("`lap port-forward` to a server in a sandbox: {conns} fresh connections, 1000 round trips, {mib} MiB"),
        &format!(
            "connect p50 {}; round trip p50 {}; {:.0} MB/s",
            fine(p50(&lap, |f| &f.connect)),
            fine(p50(&lap, |f| &f.round_trip)),
            lap.mb_per_s
        ),
        &format!(
            "`ssh -L` to the same program on the host's loopback: connect p50 {}; round trip p50 {}; {:.0} MB/s",
            fine(p50(&ssh, |f| &f.connect)),
            fine(p50(&ssh, |f| &f.round_trip)),
            ssh.mb_per_s
        ),
        "—",
    );
    println!();
    println!(
        "lap / ssh: connect p50 {:.2}x, round trip p50 {:.2}x, throughput {:.2}x ({conns} connections, {mib} MiB)",
        percentile(&lap.connect, 0.5).as_secs_f64() / percentile(&ssh.connect, 0.5).as_secs_f64(),
        percentile(&lap.round_trip, 0.5).as_secs_f64() / percentile(&ssh.round_trip, 0.5).as_secs_f64(),
        lap.mb_per_s / ssh.mb_per_s,
    );
}

/// An sshd of our own on a loopback port, with throwaway keys in a temp dir (as `benches/tty.rs`).
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
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {}\n\
             AllowTcpForwarding yes\n",
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
        wait_accepting(SocketAddr::from(([127, 0, 0, 1], port)));
        Self { child, port, dir }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
