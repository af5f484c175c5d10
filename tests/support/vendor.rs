//! A fake vendor API on loopback, reached through the vault, for the tests that drive a real
//! agent CLI: HTTPS from a test CA on 127.0.0.1, named as the vendor's host by
//! `lap serve --vault-resolve HOST:PORT:127.0.0.1 --vault-upstream-ca PEM`, with egress denied by
//! default. The test's handler answers each request as the vendor documents; every request is
//! recorded so the test can check what reached the "vendor" (the real key, the model).
//!
//! `LAP_TEST_TOOL_PATH` (set by `scripts/check-tools.sh`) is a directory put first on the agents'
//! `PATH`, so a run can try other versions of the tools than the installed ones.

use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lap::vault::ca::CertificateAuthority;

use super::upstream::tls_listener;
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

/// A response: status, content type, body.
pub type Answer = (u16, &'static str, String);
pub type Handler = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// Whether `program` runs (`program --version` exits 0) with the test's `PATH`.
pub fn installed(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `true` when `program` is there; else says so and returns `false`, or fails a strict run
/// (scripts/test.sh sets `LAP_TEST_STRICT=1` once it has installed everything).
pub fn require(program: &str, install: &str) -> bool {
    if installed(program) {
        return true;
    }
    assert_ne!(
        std::env::var("LAP_TEST_STRICT").as_deref(),
        Ok("1"),
        "`{program}` is missing; scripts/test.sh installs it ({install})"
    );
    eprintln!("skipped: `{program}` is not installed ({install})");
    false
}

/// `PATH=DIR:…` for an agent's `--env` when `LAP_TEST_TOOL_PATH` names a directory of tools to try.
pub fn tool_path_env() -> Option<String> {
    let dir = std::env::var("LAP_TEST_TOOL_PATH").ok().filter(|d| !d.is_empty())?;
    Some(format!("PATH={dir}:/usr/local/bin:/usr/bin:/bin"))
}

/// A `lap serve` (local backend) whose vault sends `host` to the fake API on this machine's
/// loopback; egress defaults to deny. Its sandboxes are deleted on drop.
pub struct World {
    pub rt: tokio::runtime::Runtime,
    pub home: Home,
    _dir: tempfile::TempDir,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// The fake API's port: the agent's base URL is `https://HOST:PORT`.
    pub port: u16,
    pub server: TestServer,
}

impl World {
    pub fn start(host: &str, handler: Handler) -> Self {
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
        let port = rt.block_on(serve(public_ca, seen.clone(), handler));
        let resolve = format!("{host}:{port}:127.0.0.1");
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
            rt,
            home,
            _dir: dir,
            seen,
            port,
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

async fn serve(ca: Arc<CertificateAuthority>, seen: Arc<Mutex<Vec<Seen>>>, handler: Handler) -> u16 {
    let (listener, port, acceptor) = tls_listener(ca, &[b"h2", b"http/1.1"]).await;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, seen, handler) = (acceptor.clone(), seen.clone(), handler.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (seen, handler) = (seen.clone(), handler.clone());
                    async move {
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
                        let (status, content_type, body) = handler(&request);
                        seen.lock().unwrap().push(request);
                        let response = hyper::Response::builder()
                            .status(status)
                            .header("content-type", content_type)
                            .body(Full::new(Bytes::from(body)))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}
