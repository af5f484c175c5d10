//! File transfer benchmark: `lap cp` into and out of a session's sandbox against `scp` to an sshd of
//! the benchmark's own on the same machine, in one run.
//!
//! Run with `scripts/bench.sh files` (release build, as root: real sandboxes of the local backend,
//! and Debian's openssh-server on a loopback port with throwaway keys). One file of
//! `LAP_BENCH_FILES_MB` MiB (512) of random bytes goes up and comes back down
//! `LAP_BENCH_FILES_ROUNDS` times (3) each way; the best and median MB/s of each are printed. `lap`
//! speaks plain HTTP to a `lap serve` on loopback (then the harness socket, then the sandbox's
//! disk); `scp` encrypts (its default cipher) to an sshd writing to this machine's disk. The
//! figures are what a person on this machine sees, not the same work.
//!
//! Target: at least half of scp's throughput each way.

mod support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{LAP, Server, client_env};

/// How long the sshd may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

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
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {}\n\
             Subsystem sftp internal-sftp\n",
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
        let deadline = Instant::now() + START_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port, dir }
    }

    /// `scp FROM TO`, either side `root@127.0.0.1:PATH`.
    fn scp(&self, from: &str, to: &str) {
        let out = Command::new("scp")
            .args(["-q", "-P", &self.port.to_string(), "-i"])
            .arg(self.dir.path().join("client_key"))
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                from,
                to,
            ])
            .output()
            .expect("scp");
        assert!(out.status.success(), "scp {from} {to}: {out:?}");
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Writes `size` bytes of pseudo-random data.
fn make_file(path: &std::path::Path, size: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
}

/// MB/s (10^6 bytes) of each timed run, sorted.
fn timed(rounds: u64, size: u64, mut run: impl FnMut()) -> Vec<f64> {
    let mut rates: Vec<f64> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            run();
            size as f64 / 1e6 / started.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates
}

fn best_median(rates: &[f64]) -> (f64, f64) {
    (rates[rates.len() - 1], rates[rates.len() / 2])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let size = env_number("LAP_BENCH_FILES_MB", 512) << 20;
    let rounds = env_number("LAP_BENCH_FILES_ROUNDS", 3).max(1);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source.bin");
    make_file(&source, size);
    let source = source.display().to_string();

    eprintln!("lap: `lap cp` into and out of a shell session's sandbox");
    let server = Server::start(0);
    server.lap(&["agents", "create", "bench", "--harness", "shell"]);
    let session: serde_json::Value =
        serde_json::from_slice(&server.lap(&["--json", "sessions", "create", "bench"]).stdout).unwrap();
    let id = session["id"].as_str().unwrap().to_owned();
    let remote = format!("{id}:/work/bench.bin");
    let back = work.path().join("back-lap.bin").display().to_string();
    let cp = |from: &str, to: &str| {
        let out = Command::new(LAP)
            .args(["--quiet", "cp", from, to])
            .env_clear()
            .envs(client_env(server.home.path()))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "lap cp {from} {to}: {out:?}");
    };
    let lap_up = timed(rounds, size, || cp(&source, &remote));
    let lap_down = timed(rounds, size, || cp(&remote, &back));
    drop(server);

    eprintln!("scp: to and from an sshd of our own on 127.0.0.1");
    let sshd = Sshd::start();
    let target = format!("root@127.0.0.1:{}", sshd.dir.path().join("bench.bin").display());
    let back = work.path().join("back-scp.bin").display().to_string();
    let scp_up = timed(rounds, size, || sshd.scp(&source, &target));
    let scp_down = timed(rounds, size, || sshd.scp(&target, &back));
    drop(sshd);

    println!();
    println!(
        "{:<8} {:>16} {:>16} {:>18} {:>18}",
        "tool", "upload best", "upload median", "download best", "download median"
    );
    for (name, up, down) in [("lap cp", &lap_up, &lap_down), ("scp", &scp_up, &scp_down)] {
        let (ub, um) = best_median(up);
        let (db, dm) = best_median(down);
        println!("{name:<8} {ub:>11.1} MB/s {um:>11.1} MB/s {db:>13.1} MB/s {dm:>13.1} MB/s");
    }
    let up = best_median(&lap_up).1 / best_median(&scp_up).1;
    let down = best_median(&lap_down).1 / best_median(&scp_down).1;
    println!();
    println!(
        "lap / scp (medians): upload {up:.2}x, download {down:.2}x ({:.0} MiB, {rounds} rounds each way)",
        size as f64 / (1u64 << 20) as f64
    );
    support::record(
        &format!(
            "`lap cp` of a {:.0} MiB file into and out of a sandbox, {rounds} rounds each way",
            size as f64 / (1u64 << 20) as f64
        ),
        &format!(
            "upload median {:.0} MB/s; download median {:.0} MB/s",
            best_median(&lap_up).1,
            best_median(&lap_down).1
        ),
        &format!(
            "`scp` to an sshd of its own: {:.0} / {:.0} MB/s (lap {up:.2}× / {down:.2}×)",
            best_median(&scp_up).1,
            best_median(&scp_down).1
        ),
        &format!("≥ half of scp's each way: {}", support::met(up >= 0.5 && down >= 0.5)),
    );
    println!(
        "target: at least half of scp's each way: {}",
        if up >= 0.5 && down >= 0.5 { "met" } else { "NOT met" }
    );
}
