//! The upstream side of one intercepted connection: one TLS connection to the CONNECT target's
//! pinned address, verified against the system roots plus any `--vault-upstream-ca`, speaking h2 or
//! http/1.1 by the upstream's own ALPN and reused for every request of the client connection;
//! WebSocket upgrades get an http/1.1 connection of their own. It sends what the I/O step of
//! [`super::intercept`] hands it and decides nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Request, Response, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::io::BufReader;
use tokio::net::TcpStream;

use super::body::{BoxError, ProxyBody};
use super::tls_io::{Coalesce, TLS_WRITE_BUFFER, transport};

/// How long connecting to an upstream may take.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The upstream side of one intercepted connection.
pub struct Upstream {
    tls: Arc<rustls::ClientConfig>,
    /// The same trust, offering only http/1.1: WebSocket upgrades need it.
    tls_h1: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
    addr: SocketAddr,
    sender: tokio::sync::Mutex<Option<Sender>>,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<ProxyBody>),
    H2(hyper::client::conn::http2::SendRequest<ProxyBody>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Self::H1(s) => s.is_closed(),
            Self::H2(s) => s.is_closed(),
        }
    }
}

impl Upstream {
    /// An upstream not yet connected: the first request connects.
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        tls_h1: Arc<rustls::ClientConfig>,
        host: String,
        port: u16,
        addr: SocketAddr,
    ) -> Self {
        Self {
            tls,
            tls_h1,
            host,
            port,
            addr,
            sender: tokio::sync::Mutex::new(None),
        }
    }

    pub async fn send(&self, mut req: Request<ProxyBody>, path: PathAndQuery) -> Result<Response<Incoming>, BoxError> {
        let mut guard = self.sender.lock().await;
        if guard.as_ref().is_none_or(Sender::is_closed) {
            *guard = Some(self.connect().await?);
        }
        let authority = self.authority();
        match guard.as_mut().expect("connected above") {
            Sender::H2(sender) => {
                let mut sender = sender.clone();
                drop(guard);
                *req.uri_mut() = Uri::builder()
                    .scheme("https")
                    .authority(authority)
                    .path_and_query(path)
                    .build()?;
                *req.version_mut() = Version::HTTP_2;
                req.headers_mut().remove(header::HOST);
                Ok(sender.send_request(req).await?)
            }
            Sender::H1(sender) => {
                *req.uri_mut() = Uri::from(path);
                *req.version_mut() = Version::HTTP_11;
                req.headers_mut()
                    .insert(header::HOST, HeaderValue::from_str(&authority)?);
                sender.ready().await?;
                Ok(sender.send_request(req).await?)
            }
        }
    }

    /// Sends an upgrade request on a fresh HTTP/1.1 connection of its own.
    pub async fn upgrade(
        &self,
        mut req: Request<ProxyBody>,
        path: PathAndQuery,
    ) -> Result<Response<Incoming>, BoxError> {
        let io = TokioIo::new(Coalesce::new(self.tls_stream(&self.tls_h1).await?));
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn.with_upgrades());
        *req.uri_mut() = Uri::from(path);
        *req.version_mut() = Version::HTTP_11;
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_str(&self.authority())?);
        Ok(sender.send_request(req).await?)
    }

    fn authority(&self) -> String {
        if self.port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    async fn tls_stream(
        &self,
        config: &Arc<rustls::ClientConfig>,
    ) -> Result<tokio_rustls::client::TlsStream<BufReader<TcpStream>>, BoxError> {
        let tcp = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(self.addr)).await??;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.host.clone())?;
        let mut tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, transport(tcp))
            .await?;
        tls.get_mut().1.set_buffer_limit(Some(TLS_WRITE_BUFFER));
        Ok(tls)
    }

    async fn connect(&self) -> Result<Sender, BoxError> {
        let tls = self.tls_stream(&self.tls).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(Coalesce::new(tls));
        if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn.with_upgrades());
            Ok(Sender::H1(sender))
        }
    }
}
