//! Vault benchmark: what intercepting HTTPS costs, beside a direct connection and mitmproxy, in one run.
//!
//! Run with `scripts/bench.sh vault` (it installs mitmproxy in a venv and sets `LAP_BENCH_MITMDUMP`);
//! `cargo bench --bench vault` alone measures direct and vault only. Everything listens on 127.0.0.1:
//! an HTTPS upstream, the lap vault (with a credential bound to the upstream, so every request is
//! rewritten, and five more shaped like GitHub, OpenAI, Anthropic, AWS and Slack credentials bound
//! elsewhere, so every response is scrubbed of six values in every encoding and their masked echoes)
//! and mitmproxy running an addon that does the same header replacement. The same client
//! measures each path:
//! - latency: sequential GETs on one kept-alive connection (after a warm-up), p50 and p99;
//! - throughput: concurrent connections for a fixed number of requests, requests per second;
//! - bulk: one streamed upload and one streamed download of `LAP_BENCH_BULK_MB` MiB (default 1024),
//!   in MB/s (the vault rewrites the upload as it streams), and the CPU time each byte cost, client,
//!   upstream and proxy together (`ns/B`): on a machine whose cores all three share, throughput
//!   follows it, so the vault's own ns/B beside the whole direct path's says how far it is from the
//!   0.5× a proxy with two TLS legs cannot beat there.
//!
//! `LAP_BENCH_ROUNDS` rounds (default 3) each measure every path in turn; the summary gives each
//! figure's median over the rounds, and each ratio as the median of the rounds' own ratios, so a
//! neighbour's burst on a shared machine moves one round, not the result.
//!
//! Targets: added latency under 100 µs p50 and bulk at least 0.5× direct with scrubbing on (issue 14);
//! throughput at least 5× mitmproxy's (DESIGN §6).

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lap::secret::Secret;
use lap::vault::ca::CertificateAuthority;
use lap::vault::intercept::{Binding, Credential, ResolveOverride, Vault};
use lap::vault::policy::Policy;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WARMUP: usize = 200;
const LATENCY_REQUESTS: usize = 3000;
const THROUGHPUT_CONNECTIONS: usize = 32;
const THROUGHPUT_REQUESTS: usize = 20_000;
const STUB: &str = "stub_bench_token_0badc0de";
const REAL: &str = "real-bench-token-value-0123456789";
/// Chunk size of the bulk transfers.
const CHUNK: usize = 64 * 1024;

type Body = BoxBody<Bytes, Infallible>;
type Sender = hyper::client::conn::http1::SendRequest<Body>;

/// One way to the upstream: direct, or through a proxy whose CA the client trusts.
struct Route {
    name: &'static str,
    proxy: Option<SocketAddr>,
    ca: PathBuf,
    /// The proxy's own process, when it is not this one: its CPU time counts too.
    process: Option<u32>,
}

/// What one route measured.
struct Measured {
    name: &'static str,
    p50: Duration,
    p99: Duration,
    requests_per_second: f64,
    upload_mb_s: f64,
    download_mb_s: f64,
    /// CPU time (client, upstream and proxy together) per byte moved, in ns: up and down.
    upload_cpu: f64,
    download_cpu: f64,
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("upstream-ca")).unwrap());
    let upstream_ca_file = write(dir.path(), "upstream-ca.pem", &upstream_ca.cert_pem());
    let upstream = start_upstream(upstream_ca.clone()).await;

    let vault_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("vault")).unwrap());
    let vault_ca_file = write(dir.path(), "vault-ca.pem", &vault_ca.cert_pem());
    let pin = ResolveOverride {
        host: "127.0.0.1".into(),
        port: upstream.port(),
        addr: upstream.ip(),
    };
    let root = CertificateDer::from_pem_slice(upstream_ca.cert_pem().as_bytes()).unwrap();
    let vault = Arc::new(Vault::new(vault_ca, vec![pin], vec![root]).unwrap());
    let credential = Credential {
        name: "BENCH_TOKEN".into(),
        stub: STUB.into(),
        value: Secret::new(REAL),
        hosts: vec![format!("127.0.0.1:{}", upstream.port())],
        inject: vec![
            lap::wire::vault::Injection::Authorization,
            lap::wire::vault::Injection::Body,
        ],
        rules: Vec::new(),
    };
    let mut credentials = vec![credential];
    credentials.extend(realistic_credentials());
    let binding = Arc::new(Binding::new(credentials, Policy::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let vault_addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(vault.serve(listener, binding, stop.clone()));

    let mut routes = vec![
        Route {
            name: "direct",
            proxy: None,
            ca: upstream_ca_file.clone(),
            process: None,
        },
        Route {
            name: "lap vault",
            proxy: Some(vault_addr),
            ca: vault_ca_file,
            process: None,
        },
    ];
    let mitm = start_mitmproxy(dir.path(), &upstream_ca_file).await;
    if let Some((child, addr, ca)) = &mitm {
        routes.push(Route {
            name: "mitmproxy",
            proxy: Some(*addr),
            ca: ca.clone(),
            process: Some(child.id()),
        });
    } else {
        eprintln!("mitmproxy not measured: run `scripts/bench.sh vault`, or set LAP_BENCH_MITMDUMP=/path/to/mitmdump");
    }

    let bulk_mb: usize = env_number("LAP_BENCH_BULK_MB", 1024);
    let rounds = env_number("LAP_BENCH_ROUNDS", 3).max(1);
    println!("vault benchmark, all on 127.0.0.1: {LATENCY_REQUESTS} sequential GETs on one kept-alive HTTPS");
    println!(
        "connection, {THROUGHPUT_REQUESTS} GETs over {THROUGHPUT_CONNECTIONS} connections, {bulk_mb} MiB up and down;"
    );
    println!("{rounds} rounds, each measuring every path in turn; the summary is the median of the rounds\n");
    print_header();
    let mut rounds_measured: Vec<Vec<Measured>> = Vec::new();
    for round in 1..=rounds {
        let mut measured = Vec::new();
        for route in &routes {
            let (p50, p99) = latency(upstream, route).await;
            let requests_per_second = throughput(upstream, route).await;
            let up = bulk(upstream, route, bulk_mb, Direction::Up).await;
            let down = bulk(upstream, route, bulk_mb, Direction::Down).await;
            let this = Measured {
                name: route.name,
                p50,
                p99,
                requests_per_second,
                upload_mb_s: up.mb_s,
                download_mb_s: down.mb_s,
                upload_cpu: up.cpu_ns_per_byte,
                download_cpu: down.cpu_ns_per_byte,
            };
            print_row(&format!("{} #{round}", this.name), &this, measured.first());
            measured.push(this);
        }
        rounds_measured.push(measured);
    }
    // Each figure is the median over the rounds; each ratio the median of the rounds' own ratios
    // (two paths measured minutes apart on a shared machine compare badly; within a round they don't).
    let median_of = |f: &dyn Fn(&[Measured]) -> f64| median(rounds_measured.iter().map(|r| f(r)).collect());
    let summary: Vec<Measured> = (0..routes.len())
        .map(|i| Measured {
            name: routes[i].name,
            p50: Duration::from_secs_f64(median_of(&|r| r[i].p50.as_secs_f64())),
            p99: Duration::from_secs_f64(median_of(&|r| r[i].p99.as_secs_f64())),
            requests_per_second: median_of(&|r| r[i].requests_per_second),
            upload_mb_s: median_of(&|r| r[i].upload_mb_s),
            download_mb_s: median_of(&|r| r[i].download_mb_s),
            upload_cpu: median_of(&|r| r[i].upload_cpu),
            download_cpu: median_of(&|r| r[i].download_cpu),
        })
        .collect();
    println!("\nmedian of {rounds} rounds:");
    print_header();
    for measured in &summary {
        print_row(measured.name, measured, summary.first());
    }
    let added = median_of(&|r| r[1].p50.as_secs_f64() - r[0].p50.as_secs_f64()).max(0.0);
    println!();
    println!(
        "vault added latency p50: {} (target < 100 µs)",
        us(Duration::from_secs_f64(added))
    );
    println!(
        "vault vs direct: {:.2}× requests/s, {:.2}× upload, {:.2}× download (bulk target ≥ 0.5×)",
        median_of(&|r| r[1].requests_per_second / r[0].requests_per_second),
        median_of(&|r| r[1].upload_mb_s / r[0].upload_mb_s),
        median_of(&|r| r[1].download_mb_s / r[0].download_mb_s),
    );
    // On a machine whose cores the client, the upstream and the proxy share, throughput follows the
    // CPU each byte costs: a proxy that decrypts and encrypts once more costs at least what the
    // direct path's two TLS ends and its socket cost, which is where 0.5× comes from.
    println!(
        "CPU per byte moved (client, upstream and proxy together), up / down: direct {:.2} / {:.2} ns, lap vault {:.2} / {:.2} ns;",
        summary[0].upload_cpu, summary[0].download_cpu, summary[1].upload_cpu, summary[1].download_cpu,
    );
    println!(
        "the vault's own share: {:.2}× / {:.2}× of the whole direct path's (1.00× is the 0.5× throughput bound)",
        median_of(&|r| (r[1].upload_cpu - r[0].upload_cpu) / r[0].upload_cpu),
        median_of(&|r| (r[1].download_cpu - r[0].download_cpu) / r[0].download_cpu),
    );
    if routes.len() > 2 {
        println!(
            "vault vs mitmproxy: {:.1}× requests/s, {:.1}× upload, {:.1}× download (target ≥ 5×)",
            median_of(&|r| r[1].requests_per_second / r[2].requests_per_second),
            median_of(&|r| r[1].upload_mb_s / r[2].upload_mb_s),
            median_of(&|r| r[1].download_mb_s / r[2].download_mb_s),
        );
    }
    record_figures(&summary, &rounds_measured, added);
    stop.cancel();
    if let Some((mut child, _, _)) = mitm {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The rows of `docs/benchmarks.md`'s table ([`support::record`]): direct is `summary[0]`, the vault
/// `summary[1]`, mitmproxy `summary[2]` when it was measured.
fn record_figures(summary: &[Measured], rounds: &[Vec<Measured>], added: f64) {
    let median_of = |f: &dyn Fn(&[Measured]) -> f64| median(rounds.iter().map(|r| f(r)).collect());
    let mitm = summary.get(2);
    let added_us = added * 1e6;
    support::record(
        "vault: added latency per kept-alive HTTPS GET, p50",
        &format!("{added_us:.0} µs"),
        &format!(
            "direct: {} per GET{}",
            us(summary[0].p50),
            mitm.map(|m| format!("; mitmproxy adds {}", us(m.p50.saturating_sub(summary[0].p50))))
                .unwrap_or_default()
        ),
        &format!(
            "< 100 µs (issue 14): {}; < 50 µs (issue 22): {}",
            support::met(added_us < 100.0),
            support::met(added_us < 50.0)
        ),
    );
    let rps = median_of(&|r| r[1].requests_per_second / r[0].requests_per_second);
    support::record(
        "vault: small GETs over 32 kept-alive connections",
        &format!("{:.0} req/s", summary[1].requests_per_second),
        &format!(
            "direct: {:.0} req/s ({rps:.2}×){}",
            summary[0].requests_per_second,
            mitm.map(|m| format!("; mitmproxy: {:.0} req/s", m.requests_per_second))
                .unwrap_or_default()
        ),
        &format!("≥ 0.35× direct: {}", support::met(rps >= 0.35)),
    );
    let (up, down) = (
        median_of(&|r| r[1].upload_mb_s / r[0].upload_mb_s),
        median_of(&|r| r[1].download_mb_s / r[0].download_mb_s),
    );
    support::record(
        "vault: streamed upload / download",
        &format!(
            "{:.0} / {:.0} MB/s; {:.2} / {:.2} ns of CPU per byte",
            summary[1].upload_mb_s, summary[1].download_mb_s, summary[1].upload_cpu, summary[1].download_cpu
        ),
        &format!(
            "direct: {:.0} / {:.0} MB/s ({up:.2}× / {down:.2}×), {:.2} / {:.2} ns per byte{}",
            summary[0].upload_mb_s,
            summary[0].download_mb_s,
            summary[0].upload_cpu,
            summary[0].download_cpu,
            mitm.map(|m| format!("; mitmproxy: {:.0} / {:.0} MB/s", m.upload_mb_s, m.download_mb_s))
                .unwrap_or_default()
        ),
        &format!(
            "≥ 0.5× direct (two TLS legs): {}",
            support::met(up >= 0.5 && down >= 0.5)
        ),
    );
}

/// Credentials shaped like the real ones (prefix and length), bound to other hosts: every response
/// is still scrubbed of all of them, in every encoding, so the needle set is a realistic one.
fn realistic_credentials() -> Vec<Credential> {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = |len: usize| -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ALPHABET[(seed >> 33) as usize % ALPHABET.len()] as char
            })
            .collect()
    };
    let shapes = [
        ("GITHUB_TOKEN", format!("ghp_{}", random(36)), "api.github.com"),
        ("OPENAI_API_KEY", format!("sk-proj-{}", random(156)), "api.openai.com"),
        (
            "ANTHROPIC_API_KEY",
            format!("sk-ant-api03-{}AA", random(93)),
            "api.anthropic.com",
        ),
        ("AWS_SECRET_ACCESS_KEY", random(40), "*.amazonaws.com"),
        (
            "SLACK_BOT_TOKEN",
            format!("xoxb-{}-{}-{}", random(12), random(13), random(24)),
            "slack.com",
        ),
    ];
    shapes
        .into_iter()
        .map(|(name, real, host)| Credential {
            name: name.into(),
            stub: format!("stub_{}_{}", name.to_ascii_lowercase(), random(16)),
            value: Secret::new(real),
            hosts: vec![host.into()],
            inject: lap::wire::vault::default_injection(name),
            rules: Vec::new(),
        })
        .collect()
}

/// A positive whole number from the environment, or `default`.
fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn print_header() {
    println!(
        "{:<14} {:>10} {:>10} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "path", "p50", "p99", "added p50", "req/s", "up MB/s", "down MB/s", "up ns/B", "down ns/B"
    );
}

/// One row; `direct` (the round's first path) gives the added latency.
fn print_row(label: &str, measured: &Measured, direct: Option<&Measured>) {
    println!(
        "{:<14} {:>10} {:>10} {:>12} {:>10.0} {:>10.0} {:>10.0} {:>10.2} {:>10.2}",
        label,
        us(measured.p50),
        us(measured.p99),
        us(measured.p50.saturating_sub(direct.map_or(measured.p50, |d| d.p50))),
        measured.requests_per_second,
        measured.upload_mb_s,
        measured.download_mb_s,
        measured.upload_cpu,
        measured.download_cpu,
    );
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn empty() -> Body {
    Empty::new().boxed()
}

/// A text body of `bytes` bytes (rounded down to whole chunks), streamed.
fn text_stream(bytes: usize) -> Body {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let frames = (0..bytes / CHUNK).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone())));
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

/// An HTTPS upstream (HTTP/1.1, keep-alive): `/upload` drains and counts, `/download?bytes=N` streams
/// N bytes, anything else answers a small JSON body.
async fn start_upstream(ca: Arc<CertificateAuthority>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let leaf = ca.leaf("127.0.0.1").unwrap();
    let resolver = rustls::sign::SingleCertAndKey::from(leaf);
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = match req.uri().path() {
                        "/upload" => {
                            let mut body = req.into_body();
                            let mut total = 0usize;
                            while let Some(Ok(frame)) = body.frame().await {
                                total += frame.data_ref().map_or(0, Bytes::len);
                            }
                            Full::new(Bytes::from(total.to_string())).boxed()
                        }
                        "/download" => {
                            let query = req.uri().query().unwrap_or_default();
                            text_stream(query.strip_prefix("bytes=").and_then(|n| n.parse().ok()).unwrap_or(0))
                        }
                        _ => Full::new(Bytes::from_static(b"{\"ok\":true,\"items\":[1,2,3]}")).boxed(),
                    };
                    Ok::<_, Infallible>(hyper::Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// Starts `mitmdump` when `LAP_BENCH_MITMDUMP` names it: (process, address, its CA certificate). It
/// runs an addon replacing the stub in `Authorization`, the work the vault does on every request.
async fn start_mitmproxy(dir: &Path, upstream_ca: &Path) -> Option<(Child, SocketAddr, PathBuf)> {
    let binary = std::env::var_os("LAP_BENCH_MITMDUMP")?;
    let addon = dir.join("swap.py");
    let script = format!(
        "def request(flow):\n    value = flow.request.headers.get('authorization')\n    if value and {STUB:?} in value:\n        flow.request.headers['authorization'] = value.replace({STUB:?}, {REAL:?})\n"
    );
    std::fs::write(&addon, script).ok()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let confdir = dir.join("mitmproxy");
    let child = Command::new(binary)
        .args([
            "--quiet",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            &port.to_string(),
        ])
        .args(["--set", &format!("confdir={}", confdir.display())])
        .args([
            "--set",
            &format!("ssl_verify_upstream_trusted_ca={}", upstream_ca.display()),
        ])
        .args(["--set", "flow_detail=0", "--set", "stream_large_bodies=1m", "-s"])
        .arg(&addon)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .ok()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let ca = confdir.join("mitmproxy-ca-cert.pem");
    while Instant::now() < deadline {
        if ca.exists() && TcpStream::connect(addr).await.is_ok() {
            return Some((child, addr, ca));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("mitmdump did not start within 30 s");
    None
}

/// One kept-alive HTTPS connection to the upstream, through `route`'s proxy when it has one.
async fn connect(upstream: SocketAddr, route: &Route) -> Sender {
    let target = route.proxy.unwrap_or(upstream);
    let mut tcp = TcpStream::connect(target).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    if route.proxy.is_some() {
        let connect = format!("CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\n\r\n");
        tcp.write_all(connect.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        assert!(
            head.starts_with(b"HTTP/1.1 200"),
            "{}: {}",
            route.name,
            String::from_utf8_lossy(&head)
        );
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&route.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::IpAddress(upstream.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    sender
}

fn request(method: &str, path: &str, upstream: SocketAddr, body: Body) -> hyper::Request<Body> {
    hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", upstream.to_string())
        .header("authorization", format!("Bearer {STUB}"))
        .header("content-type", "text/plain")
        .body(body)
        .unwrap()
}

async fn get(sender: &mut Sender, upstream: SocketAddr) {
    sender.ready().await.unwrap();
    let response = sender
        .send_request(request("GET", "/v1/items?limit=3", upstream, empty()))
        .await
        .unwrap();
    assert!(response.status().is_success());
    response.into_body().collect().await.unwrap();
}

async fn latency(upstream: SocketAddr, route: &Route) -> (Duration, Duration) {
    let mut sender = connect(upstream, route).await;
    for _ in 0..WARMUP {
        get(&mut sender, upstream).await;
    }
    let mut times = Vec::with_capacity(LATENCY_REQUESTS);
    for _ in 0..LATENCY_REQUESTS {
        let start = Instant::now();
        get(&mut sender, upstream).await;
        times.push(start.elapsed());
    }
    times.sort();
    (times[times.len() / 2], times[times.len() * 99 / 100])
}

async fn throughput(upstream: SocketAddr, route: &Route) -> f64 {
    let mut senders = Vec::new();
    for _ in 0..THROUGHPUT_CONNECTIONS {
        senders.push(connect(upstream, route).await);
    }
    let per_connection = THROUGHPUT_REQUESTS / THROUGHPUT_CONNECTIONS;
    let start = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            tokio::spawn(async move {
                for _ in 0..per_connection {
                    get(&mut sender, upstream).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (per_connection * THROUGHPUT_CONNECTIONS) as f64 / start.elapsed().as_secs_f64()
}

enum Direction {
    Up,
    Down,
}

/// One streamed transfer: its speed and what it cost.
struct Transfer {
    mb_s: f64,
    cpu_ns_per_byte: f64,
}

/// One streamed transfer of `mb` MiB through `route`.
async fn bulk(upstream: SocketAddr, route: &Route, mb: usize, direction: Direction) -> Transfer {
    let bytes = (mb * 1024 * 1024) / CHUNK * CHUNK;
    let mut sender = connect(upstream, route).await;
    let start = Instant::now();
    let cpu_before = cpu_seconds(route.process);
    let request = match direction {
        Direction::Up => request("POST", "/upload", upstream, text_stream(bytes)),
        Direction::Down => request("GET", &format!("/download?bytes={bytes}"), upstream, empty()),
    };
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert!(response.status().is_success(), "{}: {}", route.name, response.status());
    let mut body = response.into_body();
    let mut received = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(data) = frame.data_ref() {
            total += data.len();
            if matches!(direction, Direction::Up) {
                received.extend_from_slice(data);
            }
        }
    }
    match direction {
        Direction::Up => assert_eq!(
            String::from_utf8_lossy(&received),
            bytes.to_string(),
            "{}: short upload",
            route.name
        ),
        Direction::Down => assert_eq!(total, bytes, "{}: short download", route.name),
    }
    let seconds = start.elapsed().as_secs_f64();
    Transfer {
        mb_s: (bytes as f64 / 1e6) / seconds,
        cpu_ns_per_byte: (cpu_seconds(route.process) - cpu_before) * 1e9 / bytes as f64,
    }
}

/// CPU time spent so far, user and system, by this process and by `other` (a proxy of its own).
fn cpu_seconds(other: Option<u32>) -> f64 {
    // SAFETY: getrusage only writes the struct it is given, which is plain data.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let own = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    own + other.map_or(0.0, process_cpu_seconds)
}

/// A process's user and system time from `/proc/PID/stat` (fields 14 and 15, in clock ticks).
fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let Some(after_name) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11..13].iter().filter_map(|f| f.parse::<f64>().ok()).sum();
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_second
}
