//! A fake vendor API on loopback, reached through the vault, for the tests that drive a real
//! agent CLI: HTTPS from a test CA on port 443 of a loopback address of its own (127.0.0.x, the
//! first free one), named as the vendor's host by
//! `lap serve --vault-resolve HOST:443:127.0.0.x --vault-upstream-ca PEM`, with egress denied by
//! default — so the tool's built-in `https://HOST` works unchanged. The test's handler answers each
//! request as the vendor documents, whole or streamed piece by piece (a [`Reply`] may also hold the
//! response open, as a stalled model does, until the client goes away); every request is recorded
//! so the test can check what reached the "vendor" (the real key, the model, the conversation).
//!
//! `LAP_TEST_TOOL_PATH` (set by `scripts/check-tools.sh`) is a directory put first on the agents'
//! `PATH`, so a run can try other versions of the tools than the installed ones.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lap::vault::ca::CertificateAuthority;

use super::upstream::BySni;
use super::{Home, TestServer, delete_local_sandboxes};

/// What the fake API saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// A whole response: status, content type, body.
pub type Answer = (u16, &'static str, String);

/// A response as the fake sends it: its body in pieces, each after its pause.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub pieces: Vec<(Duration, String)>,
    /// After the last piece the response stays open, sending nothing, until the client goes away
    /// (a model that stalls mid-turn).
    pub hang: bool,
    /// Nothing is sent at all, not even the status line, until the client goes away (a model
    /// that never starts answering); the rest is ignored.
    pub silent: bool,
}

/// Counts, when dropped, one held response the client went away from.
struct HangEnded(Arc<Mutex<usize>>);

impl Drop for HangEnded {
    fn drop(&mut self) {
        *self.0.lock().unwrap() += 1;
    }
}

impl From<Answer> for Reply {
    fn from((status, content_type, body): Answer) -> Self {
        Self {
            status,
            content_type,
            pieces: vec![(Duration::ZERO, body)],
            hang: false,
            silent: false,
        }
    }
}

pub type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// `PATH=DIR:…` for an agent's `--env` when `LAP_TEST_TOOL_PATH` names a directory of tools to try.
pub fn tool_path_env() -> Option<String> {
    let dir = std::env::var("LAP_TEST_TOOL_PATH").ok().filter(|d| !d.is_empty())?;
    Some(format!("PATH={dir}:/usr/local/bin:/usr/bin:/bin"))
}

/// A `lap serve` (local backend) whose vault sends `host` to the fake API on this machine's
/// loopback; egress defaults to deny. Its sandboxes are deleted on drop.
pub struct World {
    /// Runs the fake API, for as long as the world lives.
    _rt: tokio::runtime::Runtime,
    pub home: Home,
    _dir: tempfile::TempDir,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// How many held-open responses ([`Reply::hang`], [`Reply::silent`]) the client has gone away
    /// from.
    pub hangs_ended: Arc<Mutex<usize>>,
    pub server: TestServer,
}

impl World {
    pub fn start<R: Into<Reply>>(host: &str, handler: impl Fn(&Seen) -> R + Send + Sync + 'static) -> Self {
        let handler: Handler = Arc::new(move |seen| handler(seen).into());
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let home = Home::new();
        let dir = tempfile::tempdir().unwrap();
        let public_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("public-ca")).unwrap());
        let ca_file = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca_file, public_ca.cert_pem()).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hangs_ended = Arc::new(Mutex::new(0));
        let addr = rt.block_on(serve(public_ca, seen.clone(), hangs_ended.clone(), handler));
        let port = 443;
        let resolve = format!("{host}:{port}:{addr}");
        let server = TestServer::start_local_with(
            &home,
            [
                "--vault-resolve",
                resolve.as_str(),
                "--vault-upstream-ca",
                ca_file.to_str().unwrap(),
                "--egress-default",
                "deny",
            ],
        );
        Self {
            _rt: rt,
            home,
            _dir: dir,
            seen,
            hangs_ended,
            server,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        delete_local_sandboxes(self.server.data_dir());
    }
}

/// Listens on the first free 127.0.0.x:443 (x from 40) with TLS for any name from `ca`; returns
/// the address. [`World::start`] puts a `lap serve` in front of it; tests/it/kube_e2e.rs a pod's vault.
pub async fn serve(
    ca: Arc<CertificateAuthority>,
    seen: Arc<Mutex<Vec<Seen>>>,
    hangs_ended: Arc<Mutex<usize>>,
    handler: Handler,
) -> Ipv4Addr {
    let (addr, listener, acceptor) = bind_443(40, "the fake vendor API", ca).await;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, seen, hangs_ended, handler) =
                (acceptor.clone(), seen.clone(), hangs_ended.clone(), handler.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    answer(req, seen.clone(), hangs_ended.clone(), handler.clone())
                });
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The same fake over plain HTTP on `127.0.0.1:0`, for a tool run on this machine outside any
/// sandbox (tests/it/mcp.rs runs `claude` with `ANTHROPIC_BASE_URL` set to it); returns the address.
pub async fn serve_plain(seen: Arc<Mutex<Vec<Seen>>>, handler: Handler) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hangs_ended = Arc::new(Mutex::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (seen, hangs_ended, handler) = (seen.clone(), hangs_ended.clone(), handler.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    answer(req, seen.clone(), hangs_ended.clone(), handler.clone())
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// One request to the fake: recorded in `seen`, answered as `handler` says (a silent reply holds
/// the response open until the client goes away).
async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    hangs_ended: Arc<Mutex<usize>>,
    handler: Handler,
) -> Result<hyper::Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let request = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body,
    };
    let reply = handler(&request);
    seen.lock().unwrap().push(request);
    if reply.silent {
        // Dropped (and counted) when the client goes away.
        let _ended = HangEnded(hangs_ended.clone());
        std::future::pending::<()>().await;
    }
    Ok(respond(reply, hangs_ended))
}

/// The response of `reply`: its pieces written as they come due (a client that goes away ends it).
fn respond(
    reply: Reply,
    hangs_ended: Arc<Mutex<usize>>,
) -> hyper::Response<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        for (pause, data) in reply.pieces {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            if tx.send(Bytes::from(data)).await.is_err() {
                return;
            }
        }
        if reply.hang {
            let _ended = HangEnded(hangs_ended);
            tx.closed().await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|data| (Ok::<_, Infallible>(Frame::data(data)), rx))
    });
    hyper::Response::builder()
        .status(reply.status)
        .header("content-type", reply.content_type)
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

/// `lap send --stream AGENT TEXT` in `home`, in the background; returns once it printed `first`,
/// with the child and a thread collecting the rest of its stdout. Fails the test, killing the
/// child, when `first` is not printed within `wait`.
pub fn send_until(
    home: &Home,
    agent: &str,
    text: &str,
    first: &str,
    wait: Duration,
) -> (std::process::Child, std::thread::JoinHandle<String>) {
    let mut child = std::process::Command::new(super::LAP)
        .args(["send", "--stream", agent, text])
        .env_clear()
        .envs(home.env())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn lap send");
    let mut stdout = child.stdout.take().expect("stdout pipe");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut chunk = [0u8; 256];
        loop {
            match std::io::Read::read(&mut stdout, &mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    all.push_str(&String::from_utf8_lossy(&chunk[..n]));
                    let _ = tx.send(all.clone());
                }
            }
        }
        all
    });
    let deadline = std::time::Instant::now() + wait;
    let mut printed = String::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(all) if all.contains(first) => return (child, reader),
            Ok(all) => printed = all,
            Err(err) => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("wait for lap send");
                let why = match err {
                    std::sync::mpsc::RecvTimeoutError::Timeout => format!("within {wait:?}"),
                    std::sync::mpsc::RecvTimeoutError::Disconnected => format!("before it exited ({})", out.status),
                };
                panic!(
                    "`lap send --stream {agent}` did not print {first:?} {why}; stdout:\n{printed}\nstderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// The first free `127.0.0.x:443` with `x` from `first`, and a TLS acceptor serving each SNI name a
/// leaf of `ca` (h2 and HTTP/1.1): where a fake vendor API (`what`) listens, as the real one would.
pub async fn bind_443(
    first: u8,
    what: &str,
    ca: Arc<CertificateAuthority>,
) -> (Ipv4Addr, tokio::net::TcpListener, tokio_rustls::TlsAcceptor) {
    let mut bound = None;
    for x in first..=250u8 {
        let addr = Ipv4Addr::new(127, 0, 0, x);
        match tokio::net::TcpListener::bind((IpAddr::V4(addr), 443)).await {
            Ok(listener) => {
                bound = Some((addr, listener));
                break;
            }
            Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(err) => panic!(
                "cannot listen on {addr}:443 for {what}: {err}\n\
                 hint: the end-to-end tests bind port 443 of a loopback address; run them as root \
                 or with CAP_NET_BIND_SERVICE (sysctl net.ipv4.ip_unprivileged_port_start=443 also works)"
            ),
        }
    }
    let (addr, listener) = bound.unwrap_or_else(|| panic!("a free 127.0.0.x:443 for {what}"));
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni(ca)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (addr, listener, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
