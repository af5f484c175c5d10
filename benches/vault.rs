//! Vault benchmark: what intercepting HTTPS costs, beside a direct connection and mitmproxy, in one run.
//!
//! Run with `scripts/bench.sh vault` (it installs mitmproxy in a venv and sets `LAP_BENCH_MITMDUMP`);
//! `cargo bench --bench vault` alone measures direct and vault only. Everything listens on 127.0.0.1:
//! an HTTPS upstream, the lap vault (with a bound credential, so every request is rewritten) and
//! mitmproxy. The same client measures each path:
//! - latency: sequential GETs on one kept-alive connection (after a warm-up), p50 and p99;
//! - throughput: concurrent connections for a fixed number of requests, requests per second.
//!
//! Targets (DESIGN §6): added latency under 1 ms p50; throughput at least 5× mitmproxy's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
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

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

struct Route {
    name: &'static str,
    proxy: Option<SocketAddr>,
    ca: PathBuf,
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
    let binding = Arc::new(Binding::new(
        vec![Credential {
            name: "BENCH_TOKEN".into(),
            stub: STUB.into(),
            real: Secret::new("real-bench-token-value-0123456789"),
            hosts: vec![format!("127.0.0.1:{}", upstream.port())],
        }],
        Policy::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let vault_addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(vault.serve(listener, binding, stop.clone()));

    let mut paths = vec![
        Route {
            name: "direct",
            proxy: None,
            ca: upstream_ca_file.clone(),
        },
        Route {
            name: "lap vault",
            proxy: Some(vault_addr),
            ca: vault_ca_file,
        },
    ];
    let mitm = start_mitmproxy(dir.path(), &upstream_ca_file).await;
    if let Some((_, addr, ca)) = &mitm {
        paths.push(Route {
            name: "mitmproxy",
            proxy: Some(*addr),
            ca: ca.clone(),
        });
    } else {
        eprintln!("mitmproxy not measured: run `scripts/bench.sh vault`, or set LAP_BENCH_MITMDUMP=/path/to/mitmdump");
    }

    println!("vault benchmark: {LATENCY_REQUESTS} sequential GETs per path on one kept-alive HTTPS connection,");
    println!("then {THROUGHPUT_REQUESTS} GETs over {THROUGHPUT_CONNECTIONS} connections; all on 127.0.0.1\n");
    println!(
        "{:<10} {:>10} {:>10} {:>14} {:>12}",
        "path", "p50", "p99", "added p50", "req/s"
    );
    let mut results = Vec::new();
    for path in &paths {
        let (p50, p99) = latency(upstream, path).await;
        let rps = throughput(upstream, path).await;
        results.push((path.name, p50, p99, rps));
    }
    let direct_p50 = results[0].1;
    for (name, p50, p99, rps) in &results {
        let added = p50.saturating_sub(direct_p50);
        println!(
            "{name:<10} {:>10} {:>10} {:>14} {rps:>12.0}",
            us(*p50),
            us(*p99),
            us(added)
        );
    }
    let vault_rps = results[1].3;
    println!();
    println!(
        "vault added latency p50: {} (target < 1 ms)",
        us(results[1].1.saturating_sub(direct_p50))
    );
    println!("vault throughput vs direct: {:.2}×", vault_rps / results[0].3);
    if let Some((_, _, _, mitm_rps)) = results.get(2) {
        println!(
            "vault throughput vs mitmproxy: {:.1}× (target ≥ 5×)",
            vault_rps / mitm_rps
        );
    }
    stop.cancel();
    if let Some((mut child, _, _)) = mitm {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// An HTTPS upstream answering every request with a small body, keep-alive, HTTP/1.1.
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
                let service = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"{\"ok\":true,\"items\":[1,2,3]}",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// Starts `mitmdump` when `LAP_BENCH_MITMDUMP` names it: (process, address, its CA certificate).
async fn start_mitmproxy(dir: &Path, upstream_ca: &Path) -> Option<(Child, SocketAddr, PathBuf)> {
    let binary = std::env::var_os("LAP_BENCH_MITMDUMP")?;
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
        .args(["--set", "flow_detail=0", "--set", "stream_large_bodies=1m"])
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

/// One kept-alive HTTPS connection to the upstream, through `path`'s proxy when it has one.
async fn connect(upstream: SocketAddr, path: &Route) -> Sender {
    let target = path.proxy.unwrap_or(upstream);
    let mut tcp = TcpStream::connect(target).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    if path.proxy.is_some() {
        let connect = format!("CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\n\r\n");
        tcp.write_all(connect.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        assert!(
            head.starts_with(b"HTTP/1.1 200"),
            "{}: {}",
            path.name,
            String::from_utf8_lossy(&head)
        );
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&path.ca).unwrap() {
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

async fn get(sender: &mut Sender, upstream: SocketAddr) {
    let request = hyper::Request::get("/v1/items?limit=3")
        .header("host", upstream.to_string())
        .header("authorization", format!("Bearer {STUB}"))
        .body(Empty::new())
        .unwrap();
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert!(response.status().is_success());
    response.into_body().collect().await.unwrap();
}

async fn latency(upstream: SocketAddr, path: &Route) -> (Duration, Duration) {
    let mut sender = connect(upstream, path).await;
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

async fn throughput(upstream: SocketAddr, path: &Route) -> f64 {
    let mut senders = Vec::new();
    for _ in 0..THROUGHPUT_CONNECTIONS {
        senders.push(connect(upstream, path).await);
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
