//! A fake HTTPS upstream and a curl-through-a-proxy helper, for the vault tests.
//!
//! The upstream serves TLS from its own CA (trusted by the vault as `--vault-upstream-ca` would make
//! it), on 127.0.0.1 only, records what reaches it and echoes the request's `Authorization` and body
//! back, so a real value that got through would come back in the response.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lap::vault::ca::CertificateAuthority;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub host: String,
    pub version: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
pub struct BySni(pub Arc<CertificateAuthority>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.leaf(hello.server_name()?).ok()
    }
}

/// An upstream that records each request and echoes its `Authorization` and body back, so a real
/// value that reaches it comes back in the response (the reflection the vault must scrub).
pub async fn upstream(ca: Arc<CertificateAuthority>, seen: Arc<Mutex<Vec<Seen>>>, tls: bool) -> u16 {
    let (listener, port, acceptor) = tls_listener(ca, &[b"h2", b"http/1.1"]).await;
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes().to_vec();
                        let host = parts
                            .uri
                            .authority()
                            .map(|a| a.to_string())
                            .or_else(|| parts.headers.get("host").map(|h| h.to_str().unwrap().to_owned()))
                            .unwrap_or_default();
                        let headers: Vec<(String, String)> = parts
                            .headers
                            .iter()
                            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                            .collect();
                        let auth = parts
                            .headers
                            .get("authorization")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let echo = format!(
                            "auth={} body={}",
                            auth.clone().unwrap_or_default(),
                            String::from_utf8_lossy(&body)
                        );
                        seen.lock().unwrap().push(Seen {
                            host,
                            version: format!("{:?}", parts.version),
                            path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                            headers,
                            body,
                        });
                        let mut response = hyper::Response::new(Full::new(Bytes::from(echo)));
                        if let Some(auth) = auth {
                            response.headers_mut().insert("x-echo-auth", auth.parse().unwrap());
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if tls {
                    let Ok(stream) = acceptor.accept(tcp).await else { return };
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                } else {
                    let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                }
            });
        }
    });
    port
}

/// A listener on 127.0.0.1 (any port) and a TLS acceptor serving leaves of `ca` by SNI, offering
/// `alpn` (none: no ALPN).
pub async fn tls_listener(
    ca: Arc<CertificateAuthority>,
    alpn: &[&[u8]],
) -> (tokio::net::TcpListener, u16, tokio_rustls::TlsAcceptor) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni(ca)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (listener, port, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// curl through the HTTP proxy at `proxy`, trusting `ca`; returns (HTTP status, what curl printed:
/// response heads and body, then its stderr).
pub async fn curl(proxy: SocketAddr, ca: &Path, args: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--proxy", &format!("http://{proxy}"), "--cacert"]);
    cmd.arg(ca).args(["-w", "\n%{http_code}"]).args(args);
    for name in ["HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"] {
        cmd.env_remove(name);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("curl (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
    )
}
