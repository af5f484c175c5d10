//! The upstream side of one intercepted connection: one TLS connection to the CONNECT target's
//! pinned address, verified against the system roots plus any `--vault-upstream-ca`, speaking h2 or
//! http/1.1 by the upstream's own ALPN and reused for every request of the client connection;
//! WebSocket upgrades get an http/1.1 connection of their own. It sends what the I/O step of
//! [`super::intercept`] hands it and decides nothing.
//!
//! An upstream connection is driven by the task of the client connection it serves ([`Driven`]),
//! not a task of its own: a request and its response, and every chunk of a relayed body, then pass
//! between the two connections without waking another task (often on another thread).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

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
    driver: Driver,
}

/// A connection's future, until the connection ends.
type Connection = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Hands upstream connections to the [`Driven`] of their client connection.
#[derive(Clone)]
pub struct Driver(tokio::sync::mpsc::UnboundedSender<Connection>);

/// The upstream connections of one client connection, driven by [`Driven::run`] in that client
/// connection's task; they end when it does (as they did when their senders were dropped).
pub struct Driven {
    new: tokio::sync::mpsc::UnboundedReceiver<Connection>,
    running: FuturesUnordered<Connection>,
}

/// A [`Driver`] and the [`Driven`] it feeds.
pub fn driven() -> (Driver, Driven) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (
        Driver(tx),
        Driven {
            new: rx,
            running: FuturesUnordered::new(),
        },
    )
}

impl Driver {
    fn drive(&self, connection: impl Future<Output = ()> + Send + 'static) {
        // The client connection has ended: so has this one's use.
        let _ = self.0.send(Box::pin(connection));
    }
}

impl Driven {
    /// Drives every connection handed over, forever (the caller stops polling when its client
    /// connection ends).
    pub async fn run(mut self) {
        loop {
            tokio::select! {
                Some(connection) = self.new.recv() => self.running.push(connection),
                Some(()) = self.running.next(), if !self.running.is_empty() => {}
                else => std::future::pending::<()>().await,
            }
        }
    }
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
        driver: Driver,
    ) -> Self {
        Self {
            tls,
            tls_h1,
            host,
            port,
            addr,
            sender: tokio::sync::Mutex::new(None),
            driver,
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
            self.driver.drive(async move {
                let _ = conn.await;
            });
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            self.driver.drive(async move {
                let _ = conn.with_upgrades().await;
            });
            Ok(Sender::H1(sender))
        }
    }
}
