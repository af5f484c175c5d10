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

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{LAP, Server, client_env, ms, percentile};

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
    support::record(
        &format!(
            "`lap demo` after a fresh `lap serve`, `lap`'s own time to the repainted shell prompt, pool on ({runs} runs)"
        ),
        &format!("p50 {}, max {}", ms(on), ms(*results[1].2.last().unwrap())),
        &format!(
            "pool off: p50 {} ({:.1}×); LAP: {} warm (published)",
            ms(off),
            off.as_secs_f64() / on.as_secs_f64(),
            ms(LAP_WARM)
        ),
        &format!(
            "attached < {}: {}; prompt p50 < 25 ms (issue 22): {}",
            ms(TARGET),
            support::met(on_attached < TARGET),
            support::met(on < Duration::from_millis(25))
        ),
    );
    println!(
        "target: pool-on `lap demo` attached in under {}: {} ({})",
        ms(TARGET),
        ms(on_attached),
        if on_attached < TARGET { "met" } else { "NOT met" }
    );
}
