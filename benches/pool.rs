//! Warm-pool benchmark: how long `lap demo` (a shell agent) takes to be attached after a fresh
//! `lap serve` start, with the warm pool on and off, in one run.
//!
//! Run with `scripts/bench.sh pool` (release build, real sandboxes of the local backend: run it as
//! root or where unprivileged user namespaces work). Each sample starts its own `lap serve` on a
//! fresh data dir and HOME (the pool on: `--warm-pool-size 2`, waiting until both warm sandboxes
//! are ready, as they are a moment after any start; the pool off: `--warm-pool-size 0`), creates
//! agent `demo` with the shell harness, then times `lap demo` itself under a PTY from its spawn:
//! - attached: the repaint of the agent's screen on the terminal (what follows `lap`'s spinner);
//! - prompt: the shell's prompt (`$ `) on the repainted screen.
//!
//! It prints p50, min and max of each, the ratio pool off / pool on, and LAP's published warm
//! start of 1.8 s beside them. Target: the pool-on `lap demo` attached in under 200 ms.
//! `LAP_BENCH_POOL_RUNS` sets the samples per mode (default 10).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lap::sandbox::Sandbox;

const LAP: &str = env!("CARGO_BIN_EXE_lap");
/// LAP's published warm start, for comparison.
const LAP_WARM: Duration = Duration::from_millis(1800);
const TARGET: Duration = Duration::from_millis(200);
/// How long one step may take before the benchmark gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
const POOL_SIZE: u32 = 2;
/// How the repaint of the agent's screen begins: cursor home, clear screen.
const REPAINT: &str = "\x1b[H\x1b[2J";

/// What one `lap demo` measured.
#[derive(Clone, Copy)]
struct Sample {
    attached: Duration,
    prompt: Duration,
}

struct Server {
    child: Child,
    home: tempfile::TempDir,
    data: tempfile::TempDir,
}

impl Server {
    fn start(pool: u32) -> Self {
        let home = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(LAP)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .args(["--warm-pool-size", &pool.to_string()])
            .env_clear()
            .envs(client_env(home.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lap serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .expect("lap serve exited before listening")
                .expect("read lap serve's stderr");
            if line.contains("listening on") {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, home, data }
    }

    fn lap(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(LAP)
            .args(args)
            .env_clear()
            .envs(client_env(self.home.path()))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "lap {args:?}: {out:?}");
        out
    }

    fn warm_ready(&self) -> u64 {
        let out = self.lap(&["admin", "stats", "--json"]);
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        stats["warm_pool"]["ready"].as_u64().unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let local = lap::sandbox::local::Local::new(self.data.path()).with_program(LAP);
            for sandbox in local.list().await.unwrap_or_default() {
                let _ = local.delete(&sandbox.id).await;
            }
        });
    }
}

fn client_env(home: &Path) -> Vec<(String, String)> {
    vec![
        ("HOME".into(), home.display().to_string()),
        ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
        ("LAP_CREDENTIAL_STORE".into(), "file".into()),
        ("TERM".into(), "xterm-256color".into()),
    ]
}

/// One sample: a fresh server, agent `demo`, then `lap demo` under a PTY, timed from its spawn.
fn sample(pool: u32) -> Sample {
    let server = Server::start(pool);
    server.lap(&["agents", "create", "demo", "--harness", "shell"]);
    let deadline = Instant::now() + STEP_TIMEOUT;
    while server.warm_ready() < u64::from(pool) {
        assert!(Instant::now() < deadline, "the warm pool did not fill");
        std::thread::sleep(Duration::from_millis(20));
    }
    let winsize = nix::pty::Winsize {
        ws_row: 30,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&winsize), None).expect("openpty");
    let stdio = || Stdio::from(pty.slave.try_clone().unwrap());
    let started = Instant::now();
    let mut child = Command::new(LAP)
        .arg("demo")
        .env_clear()
        .envs(client_env(server.home.path()))
        .stdin(stdio())
        .stdout(stdio())
        .stderr(stdio())
        .spawn()
        .expect("spawn lap demo");
    drop(pty.slave);
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 || tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut attached = None;
    let prompt = loop {
        let (at, bytes) = rx
            .recv_timeout(STEP_TIMEOUT)
            .unwrap_or_else(|_| panic!("no prompt from `lap demo`: {}", String::from_utf8_lossy(&seen)));
        seen.extend_from_slice(&bytes);
        let text = String::from_utf8_lossy(&seen);
        // The repaint clears the screen first; anything before it is `lap`'s own spinner.
        let Some(screen) = text.find(REPAINT) else { continue };
        attached.get_or_insert(at - started);
        if text[screen..].contains("$ ") {
            break at - started;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    drop(rx);
    drop(server);
    let _ = reader.join();
    Sample {
        attached: attached.unwrap(),
        prompt,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("LAP_BENCH_POOL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut results = Vec::new();
    for (name, pool) in [("pool off", 0), ("pool on", POOL_SIZE)] {
        eprintln!("{name}: {runs} samples of `lap demo` after a fresh `lap serve`");
        let samples: Vec<Sample> = (0..runs).map(|_| sample(pool)).collect();
        let mut attached: Vec<Duration> = samples.iter().map(|s| s.attached).collect();
        let mut prompt: Vec<Duration> = samples.iter().map(|s| s.prompt).collect();
        attached.sort();
        prompt.sort();
        results.push((name, attached, prompt));
    }
    println!();
    println!(
        "{:<10} {:>14} {:>14} {:>14} {:>14}",
        "lap demo", "attached p50", "attached max", "prompt p50", "prompt max"
    );
    for (name, attached, prompt) in &results {
        println!(
            "{:<10} {:>14} {:>14} {:>14} {:>14}",
            name,
            ms(percentile(attached, 0.5)),
            ms(*attached.last().unwrap()),
            ms(percentile(prompt, 0.5)),
            ms(*prompt.last().unwrap()),
        );
    }
    let off = percentile(&results[0].2, 0.5);
    let on = percentile(&results[1].2, 0.5);
    let on_attached = percentile(&results[1].1, 0.5);
    println!();
    println!(
        "pool off / pool on (prompt p50): {:.1}x; LAP's published warm start {} is {:.1}x the pool-on prompt p50",
        off.as_secs_f64() / on.as_secs_f64(),
        ms(LAP_WARM),
        LAP_WARM.as_secs_f64() / on.as_secs_f64()
    );
    println!(
        "target: pool-on `lap demo` attached in under {}: {} ({})",
        ms(TARGET),
        ms(on_attached),
        if on_attached < TARGET { "met" } else { "NOT met" }
    );
}
