//! Workspace benchmark: how fast a paused and a hibernated session answer an attach with their
//! first terminal byte, and how long a fork of a workspace takes, by size.
//!
//! Run with `scripts/bench.sh workspace` (release build, real sandboxes of the local backend: run it
//! as root or where unprivileged user namespaces work). One `lap serve` (warm pool of 2), agent
//! `demo` with the shell harness, one session. Each resume sample pauses (or hibernates) the session
//! with the CLI, untimed, then times a raw WebSocket attach to its terminal — the upgrade request
//! written to the first byte of the first frame read — which is what wakes it. The fork samples fill
//! the session's workspace with N MB and time `POST …/fork` (the copy; the new session's bring-up
//! runs after the answer). It prints p50 and p99 of each, beside E2B's published resume of about
//! 1 s, and the same attach to a running session as the baseline; targets: from pause under 20 ms
//! p50, from hibernation under 150 ms p50.
//! `LAP_BENCH_RESUMES` sets the samples per resume kind (default 20), `LAP_BENCH_FORK_MB` the
//! workspace sizes (default `10,1024`; add `10240` for 10 GB where the disk has room).

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use support::{Server, ms, percentile};

/// E2B's published resume time, for comparison.
const E2B_RESUME: Duration = Duration::from_secs(1);
const TARGET_PAUSED: Duration = Duration::from_millis(20);
const TARGET_HIBERNATED: Duration = Duration::from_millis(150);
/// How long one step may take before the benchmark gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(600);

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn json(out: std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// Attaches to session `id`'s terminal over a raw WebSocket; returns the time from the upgrade
/// request to the first byte of the first frame.
fn attach(port: u16, id: &str, token: &str) -> Duration {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let started = Instant::now();
    write!(
        stream,
        "GET /api/v1/managed_agents/sessions/{id}/tty HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Authorization: Bearer {token}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("an answer to the attach");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    stream.read_exact(&mut byte).expect("a first terminal frame");
    started.elapsed()
}

fn report(label: &str, samples: &mut [Duration], target: Duration) {
    samples.sort();
    let p50 = percentile(samples, 0.5);
    println!(
        "{label:<28} p50 {:>9}  p99 {:>9}  (n={}, target p50 < {}; E2B ~{} → {:.0}× faster)",
        ms(p50),
        ms(percentile(samples, 0.99)),
        samples.len(),
        ms(target),
        ms(E2B_RESUME),
        E2B_RESUME.as_secs_f64() / p50.as_secs_f64().max(1e-9)
    );
}

fn main() {
    let server = Server::start(2);
    server.lap(&["agents", "create", "demo", "--harness", "shell"]);
    let id = String::from_utf8(server.lap(&["sessions", "create", "demo"]).stdout)
        .unwrap()
        .trim()
        .to_owned();
    let session = json(server.lap(&["sessions", "show", &id, "--json"]));
    let token = session["tty_token"].as_str().expect("tty token").to_owned();
    let port: u16 = session["tty_url"]
        .as_str()
        .and_then(|u| u.split("//").nth(1))
        .and_then(|u| u.split('/').next())
        .and_then(|host| host.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("the server's port in tty_url");
    let runs = env_number("LAP_BENCH_RESUMES", 20);

    let mut ready = Vec::new();
    let mut paused = Vec::new();
    let mut hibernated = Vec::new();
    for _ in 0..runs {
        // The baseline: the same attach to a session that is already running.
        ready.push(attach(port, &id, &token));
        server.lap(&["sessions", "pause", &id]);
        paused.push(attach(port, &id, &token));
        server.lap(&["sessions", "hibernate", &id]);
        hibernated.push(attach(port, &id, &token));
    }
    println!("workspace benchmark (local backend, shell harness, first terminal byte of an attach)");
    report("ready (no resume, baseline)", &mut ready, TARGET_PAUSED);
    report("pause → resume", &mut paused, TARGET_PAUSED);
    report("hibernate → resume", &mut hibernated, TARGET_HIBERNATED);
    let p = |samples: &[Duration], q: f64| percentile(samples, q);
    support::record(
        &format!("attach to a paused / hibernated session → first terminal byte, {runs} samples"),
        &format!(
            "pause: p50 {}, p99 {}; hibernate: p50 {}, p99 {}",
            ms(p(&paused, 0.5)),
            ms(p(&paused, 0.99)),
            ms(p(&hibernated, 0.5)),
            ms(p(&hibernated, 0.99))
        ),
        &format!(
            "the same attach to a running session: p50 {}; E2B: ~{} (published)",
            ms(p(&ready, 0.5)),
            ms(E2B_RESUME)
        ),
        &format!(
            "p50 < {} / < {}: {}",
            ms(TARGET_PAUSED),
            ms(TARGET_HIBERNATED),
            support::met(p(&paused, 0.5) < TARGET_PAUSED && p(&hibernated, 0.5) < TARGET_HIBERNATED)
        ),
    );

    let sizes = std::env::var("LAP_BENCH_FORK_MB").unwrap_or_else(|_| "10,1024".into());
    let mut filled = 0usize;
    for mb in sizes.split(',').filter_map(|s| s.trim().parse::<usize>().ok()) {
        // Grow the workspace to `mb` MB of incompressible data, in 10 MB files.
        let script = format!(
            "i={filled}; while [ $i -lt {mb} ]; do head -c 10485760 /dev/urandom > /work/fill.$i; i=$((i+10)); done"
        );
        server.lap(&["exec", &id, "--", "sh", "-c", &script]);
        filled = filled.max(mb);
        let started = Instant::now();
        let fork = json(server.lap(&["sessions", "fork", &id, "--no-wait", "--json"]));
        let took = started.elapsed();
        println!(
            "fork of a {mb:>6} MB workspace  {:>10}  (`lap sessions fork --no-wait`: the copy and the CLI's own start)",
            ms(took)
        );
        support::record(
            &format!("`lap sessions fork --no-wait` of a {mb} MB workspace"),
            &ms(took),
            "—",
            "—",
        );
        let fork_id = fork["id"].as_str().expect("fork id").to_owned();
        server.lap(&["sessions", "delete", &fork_id]);
    }
}
