//! Benchmark of the Kubernetes backend at scale, in simulation (`scripts/bench.sh kube`; not run in
//! CI, gates nothing): the real backend ([`Kube`], sidecar mode, port-forward reach, as `lap serve`
//! runs it) against the in-process fake API server of the tests (`tests/it/kube_fake.rs`, over real
//! HTTP on 127.0.0.1), with `LAP_BENCH_KUBE_SESSIONS` pods (default 2000).
//!
//! 1. Creates: warm pods made up to a quarter, a half and all of the total, eight at a time; the API
//!    calls of each create (counted from the fake's request log) and its time, and the time of the
//!    per-pod vault CA alone.
//! 2. After each step, a restart: a new client and backend (nothing cached) list every managed pod,
//!    as recovery does, and a new pod watcher syncs (every pod seen once); their time and calls, and
//!    the heap this process keeps once the watcher has synced (a counting allocator: the bytes still
//!    allocated, with the watcher's stream held, over those before it started), so growth with the
//!    number of pods shows.
//! 3. With all pods present: what one pod's objects weigh as stored; every pod changed once, timed
//!    until the synced watcher has seen each change; on a few pods, each with a real `lap vault
//!    sidecar` and a real `lap harness` (this build's binary) started from the pod's Secret behind
//!    the fake's port-forward, a session's steps on a warm pod (claim, late binding, the agent's
//!    start, one pull of the vault's records, the wait for the agent's exit: calls and time of
//!    each); every other warm pod claimed (calls per claim); and a session's pod made cold (calls
//!    per create).
//!
//! The fake answers in microseconds and pods are ready at once, so times are lap's own cost plus
//! loopback HTTP, not a cluster's; the call counts are what a cluster would see, but for the status
//! polls a pod's real start adds (one every 500 ms while it starts).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lap::sandbox::kube::{BoundCredential, Kube, KubeConfig, KubeVault, Reach, VaultBinding, manifest};
use lap::sandbox::{AgentStart, Sandbox, SandboxSpec};

#[allow(dead_code)] // the tests use more of the fake than this benchmark
#[path = "../tests/it/kube_fake.rs"]
mod kube_fake;

use kube_fake::FakeApi;

const SESSIONS: usize = 2000;
/// Creates in flight at once (`lap serve`'s warm pool and concurrent `lap` users both overlap).
const PARALLEL: usize = 8;
/// Pods that get a real sidecar and harness for the figures of a session's steps.
const SESSION_PODS: usize = 5;
const LAP: &str = env!("CARGO_BIN_EXE_lap");

/// Counts the bytes allocated and not yet freed, and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds the contract;
// the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires of it.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation here is).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was allocated by `System` with `layout`; the caller keeps `new_size` valid.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// This process's resident set (`VmRSS`), in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn config() -> KubeConfig {
    KubeConfig {
        namespace: "lap".into(),
        image: "lap-sandbox:dev".into(),
        defaults: manifest::Resources::harness_default(),
        // Debian's bundle, as `lap serve` reads it: each Secret carries it, so its size counts.
        system_roots_pem: std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default(),
        ready_timeout: Duration::from_secs(30),
        reach: Reach::PortForward,
        workspace: None,
        vault: KubeVault::Sidecar,
    }
}

fn spec(session: Option<&str>) -> SandboxSpec {
    SandboxSpec {
        harness_id: "claude-code".into(),
        session_id: session.map(str::to_owned),
        env: vec![("ANTHROPIC_API_KEY".into(), "stub_anthropic_3fa91c0d".into())],
        ..SandboxSpec::default()
    }
}

/// The requests logged from `from` on, as "METHOD kind" (`POST pods`, `GET pod`, `PATCH secret`,
/// `GET pod/portforward`) → how many.
fn calls(api: &FakeApi, from: usize) -> BTreeMap<String, usize> {
    let mut tally = BTreeMap::new();
    for line in &api.seen()[from..] {
        let (method, path) = line.split_once(' ').unwrap_or((line, ""));
        let parts: Vec<&str> = path.split('/').collect();
        let after = parts.iter().position(|p| *p == "namespaces").map_or(0, |i| i + 2);
        let kind = match parts.get(after..).unwrap_or_default() {
            [resource] => (*resource).to_owned(),
            [resource, _name] => resource.trim_end_matches('s').to_owned(),
            [resource, _name, sub] => format!("{}/{sub}", resource.trim_end_matches('s')),
            _ => path.to_owned(),
        };
        *tally.entry(format!("{method} {kind}")).or_insert(0) += 1;
    }
    tally
}

/// `tally` per `per` operations, as "12.00 (POST pods 1.00, GET pod 1.00, …)".
fn per(tally: &BTreeMap<String, usize>, per: usize) -> String {
    let total: usize = tally.values().sum();
    let parts: Vec<String> = tally
        .iter()
        .map(|(kind, n)| format!("{kind} {:.2}", *n as f64 / per as f64))
        .collect();
    format!("{:.2} ({})", total as f64 / per as f64, parts.join(", "))
}

fn main() {
    let total: usize = std::env::var("LAP_BENCH_KUBE_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SESSIONS);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(total));
}

async fn run(total: usize) {
    println!("lap kube benchmark: {total} pods, sidecar mode, port-forward reach, the fake API server on 127.0.0.1");
    let (api, url) = FakeApi::start().await;
    let kube = Kube::new(FakeApi::client(&url), config());
    pod_ca_cost();

    let mut warm: Vec<String> = Vec::new();
    let mut steps: Vec<usize> = [total / 4, total / 2, total].into_iter().filter(|n| *n > 0).collect();
    steps.dedup();
    println!(
        "\n  pods | create p50 / p99 | API calls per create | list after restart | watcher sync | heap kept by the synced watcher | heap peak during list+sync (the fake's replies included) | process RSS (the fake's store included)"
    );
    for step in steps {
        let mark = api.seen().len();
        let times = create_warm(&kube, step - warm.len(), &mut warm).await;
        let made = calls(&api, mark);
        let restart = restart(&api, &url, step).await;
        println!(
            "  {step:>5} | {} / {} | {} | {} ({} calls) | {} ({} calls) | {} ({} B per pod) | {} | {}",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            per(&made, times.len()),
            ms(restart.list),
            restart.list_calls,
            ms(restart.sync),
            restart.sync_calls,
            mib(restart.kept),
            restart.kept / step,
            mib(restart.peak),
            mib(rss()),
        );
    }

    object_sizes(&api, &warm[0]);
    watcher_follows_changes(&api, &url, &warm).await;
    let sampled = session_figures(&api, &kube, &warm[..SESSION_PODS.min(warm.len())]).await;
    claims(&api, &kube, &warm[sampled..]).await;
    let mark = api.seen().len();
    let cold = 20;
    for i in 0..cold {
        kube.create(&spec(Some(&format!("cold-{i}"))))
            .await
            .expect("a session's pod");
    }
    println!(
        "\na session's pod made cold (no warm pod), {cold} creates: API calls per create {}",
        per(&calls(&api, mark), cold)
    );
}

/// The per-pod vault CA: its time alone, over 200.
fn pod_ca_cost() {
    let mut times: Vec<Duration> = (0..200)
        .map(|i| {
            let start = Instant::now();
            lap::sandbox::kube::pod_ca(&format!("lap-{i:016x}")).expect("a pod CA");
            start.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "the vault CA of one pod (ECDSA P-256 key and self-signed certificate), 200 made: p50 {}, p99 {}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99))
    );
}

/// Makes `count` warm pods, [`PARALLEL`] at a time, appending their ids; returns each create's time,
/// sorted.
async fn create_warm(kube: &Kube, count: usize, warm: &mut Vec<String>) -> Vec<Duration> {
    let done: Vec<(String, Duration)> = futures_util::stream::iter(0..count)
        .map(|_| async {
            let start = Instant::now();
            let info = kube.create(&spec(None)).await.expect("a warm pod");
            (info.id, start.elapsed())
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut times = Vec::with_capacity(done.len());
    for (id, time) in done {
        warm.push(id);
        times.push(time);
    }
    times.sort();
    times
}

struct Restart {
    list: Duration,
    list_calls: usize,
    sync: Duration,
    sync_calls: usize,
    /// Heap still allocated once the watcher has synced (its stream held), over before the restart.
    kept: usize,
    /// Peak heap over before the restart, while listing and syncing (the fake's response buffers
    /// count: it runs in this process).
    peak: usize,
}

/// What a restarted `lap serve`'s backend does first with `pods` pods present: a fresh client lists
/// them (recovery) and a fresh watcher syncs.
async fn restart(api: &FakeApi, url: &str, pods: usize) -> Restart {
    let before = live();
    PEAK.store(before, Ordering::Relaxed);
    let kube = Kube::new(FakeApi::client(url), config());
    let mark = api.seen().len();
    let start = Instant::now();
    let listed = kube.list().await.expect("the list");
    let list = start.elapsed();
    assert_eq!(listed.len(), pods, "the list holds every pod");
    drop(listed);
    let list_calls = api.seen().len() - mark;

    let mark = api.seen().len();
    let start = Instant::now();
    let mut states = Box::pin(kube.pod_states());
    for _ in 0..pods {
        states
            .next()
            .await
            .expect("the watcher goes on")
            .expect("a pod's state");
    }
    let sync = start.elapsed();
    let sync_calls = api.seen().len() - mark;
    let kept = live().saturating_sub(before);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    drop(states);
    Restart {
        list,
        list_calls,
        sync,
        sync_calls,
        kept,
        peak,
    }
}

/// What one pod's objects weigh as the API server stores them (JSON; etcd adds little): the Secret
/// carries the system roots in its CA bundle.
fn object_sizes(api: &FakeApi, pod: &str) {
    let size = |resource: &str, name: &str| {
        let object = api.get(resource, name).expect("the object");
        serde_json::to_vec(&object).expect("JSON").len()
    };
    let secret = api.get("secrets", &manifest::secret_name(pod)).expect("its Secret");
    let bundle = secret["data"][manifest::keys::CA_BUNDLE].as_str().map_or(0, str::len);
    println!(
        "\none pod's objects as stored: Pod {} KiB, Secret {} KiB (of which the CA bundle, base64: {} KiB), NetworkPolicy {} KiB",
        size("pods", pod) / 1024,
        size("secrets", &manifest::secret_name(pod)) / 1024,
        bundle / 1024,
        size("networkpolicies", &manifest::policy_name(pod)) / 1024,
    );
}

/// A synced watcher over every pod, then each pod changed once: the time until it has seen all.
async fn watcher_follows_changes(api: &FakeApi, url: &str, pods: &[String]) {
    let kube = Kube::new(FakeApi::client(url), config());
    let mut states = Box::pin(kube.pod_states());
    for _ in 0..pods.len() {
        states
            .next()
            .await
            .expect("the watcher goes on")
            .expect("a pod's state");
    }
    let start = Instant::now();
    for pod in pods {
        api.touch("pods", pod);
    }
    for _ in 0..pods.len() {
        states
            .next()
            .await
            .expect("the watcher goes on")
            .expect("a pod's state");
    }
    println!(
        "\n{} pods each changed once: the synced watcher saw every change {} after the first",
        pods.len(),
        ms(start.elapsed()),
    );
}

/// Claims each of `pods` for a session of its own: calls per claim.
async fn claims(api: &FakeApi, kube: &Kube, pods: &[String]) {
    let mark = api.seen().len();
    let start = Instant::now();
    for (i, pod) in pods.iter().enumerate() {
        assert!(
            kube.claim(pod, &format!("session-{i}")).await.expect("a claim"),
            "`{pod}` claimed"
        );
    }
    println!(
        "\n{} warm pods claimed, one after another: {} each; API calls per claim {}",
        pods.len(),
        ms(start.elapsed() / pods.len().max(1) as u32),
        per(&calls(api, mark), pods.len())
    );
}

/// A session's life on a warm pod, on each of `pods`, each with a real sidecar and a real harness
/// (this build's `lap vault sidecar` and `lap harness`, from the pod's Secret, on 127.0.0.1 behind
/// the fake's port-forward): claim, late binding, the agent's start, one pull of the vault's records
/// and the wait for the agent's exit; calls and time of each. Returns how many pods it used.
async fn session_figures(api: &FakeApi, kube: &Kube, pods: &[String]) -> usize {
    const STEPS: [&str; 5] = [
        "claim",
        "late binding",
        "the agent's start",
        "one pull of the vault's records",
        "the wait for the agent's exit (held open while the agent runs)",
    ];
    let mut figures: Vec<(Vec<Duration>, BTreeMap<String, usize>)> = vec![Default::default(); STEPS.len()];
    for (i, pod) in pods.iter().enumerate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = api.get("secrets", &manifest::secret_name(pod)).expect("its Secret");
        let containers = Containers::start(dir.path(), &secret);
        api.forward(manifest::ADMIN_PORT, containers.admin);
        api.forward(manifest::HARNESS_PORT, containers.harness);
        for (step, figure) in figures.iter_mut().enumerate() {
            let mark = api.seen().len();
            let start = Instant::now();
            match step {
                0 => assert!(kube.claim(pod, &format!("session-{i}")).await.expect("a claim")),
                1 => kube.bind_vault(pod, &binding()).await.expect("late binding"),
                2 => kube.start_agent(pod, agent()).await.expect("the agent's start"),
                3 => drop(kube.vault_records(pod, 0).await.expect("the records")),
                _ => assert_eq!(kube.wait_agent(pod).await.expect("the agent's exit"), 0),
            }
            figure.0.push(start.elapsed());
            add(&mut figure.1, calls(api, mark));
        }
    }
    println!(
        "
a session on a warm pod, {} pods, each step through port-forward:",
        pods.len()
    );
    for (what, (times, tally)) in STEPS.iter().zip(&mut figures) {
        times.sort();
        println!(
            "  {what}: p50 {}; API calls {}",
            ms(percentile(times, 0.5)),
            per(tally, pods.len())
        );
    }
    pods.len()
}

fn agent() -> AgentStart {
    AgentStart {
        command: Some("true".into()),
        ..AgentStart::default()
    }
}

fn add(into: &mut BTreeMap<String, usize>, from: BTreeMap<String, usize>) {
    for (kind, n) in from {
        *into.entry(kind).or_insert(0) += n;
    }
}

fn binding() -> VaultBinding {
    VaultBinding {
        credentials: vec![BoundCredential {
            name: "ANTHROPIC_API_KEY".into(),
            stub: "stub_anthropic_3fa91c0d".into(),
            value: lap::secret::Secret::new("sk-ant-bench-not-a-real-key"),
            hosts: vec!["api.anthropic.com".into()],
            inject: lap::wire::vault::default_injection("ANTHROPIC_API_KEY"),
            rules: Vec::new(),
        }],
        allow_out: vec!["api.anthropic.com".into()],
        ..VaultBinding::default()
    }
}

/// A pod's containers as real processes on 127.0.0.1, started from its Secret as the kubelet would
/// start them: `lap vault sidecar` with the pod's CA and admin token, `lap harness` with its token.
struct Containers {
    children: Vec<Child>,
    admin: std::net::SocketAddr,
    harness: std::net::SocketAddr,
}

impl Containers {
    fn start(dir: &Path, secret: &serde_json::Value) -> Self {
        use base64::Engine;
        let file = |key: &str| {
            let data = secret["data"][key].as_str().expect("the Secret has the key");
            base64::engine::general_purpose::STANDARD.decode(data).expect("base64")
        };
        std::fs::create_dir_all(dir.join("ca")).expect("ca dir");
        for key in [manifest::keys::CA_CERT, manifest::keys::CA_KEY] {
            std::fs::write(dir.join("ca").join(key), file(key)).expect("write the CA");
        }
        for key in [manifest::keys::ADMIN_TOKEN, manifest::keys::HARNESS_TOKEN] {
            std::fs::write(dir.join(key), file(key)).expect("write a token");
        }
        let mut sidecar = Command::new(LAP);
        sidecar
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
            .arg(dir.join(manifest::keys::ADMIN_TOKEN))
            .env_clear()
            .env("HOME", dir);
        let (sidecar, line) = first_line(sidecar);
        let admin = addr_after(&line, "admin on ");
        std::fs::create_dir_all(dir.join("home")).expect("home dir");
        let mut harness = Command::new(LAP);
        harness
            .args(["harness", "--listen", "127.0.0.1:0", "--token-file"])
            .arg(dir.join(manifest::keys::HARNESS_TOKEN))
            .arg("--home")
            .arg(dir.join("home"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TERM", "screen");
        let (harness, line) = first_line(harness);
        let harness_addr = addr_after(&line, "listening on ");
        Self {
            children: vec![sidecar, harness],
            admin,
            harness: harness_addr,
        }
    }
}

/// Spawns `command` and reads its first line on stderr (where lap's servers say where they listen).
fn first_line(mut command: Command) -> (Child, String) {
    use std::io::BufRead;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a lap process");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("its first line");
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, line)
}

/// The address after `after` in a line such as `… proxy on ADDR, admin on ADDR`.
fn addr_after(line: &str, after: &str) -> std::net::SocketAddr {
    line.split(after)
        .nth(1)
        .and_then(|rest| rest.split(|c: char| c == ',' || c.is_whitespace()).next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no `{after}` address in {line:?}"))
}

impl Drop for Containers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
