//! The intercepting proxy: where stubs become real credentials, and real credentials become stubs.
//!
//! A sandbox's proxy listener speaks HTTP/1.1 proxy requests:
//! - `CONNECT host:port` — the destination must pass the egress [`Policy`] by name and, after
//!   resolution (or an operator's `--vault-resolve` override), by address. The vault then answers 200
//!   and serves TLS itself, with a leaf for the CONNECT host from the [`CertificateAuthority`], offering
//!   h2 and http/1.1. A ClientHello whose SNI names another host fails the handshake, and every request
//!   whose `Host`/`:authority` is not the CONNECT host gets 421: a stub is only ever swapped on a
//!   connection whose CONNECT target, SNI and Host agree (DESIGN §5, invariant 2).
//! - absolute-form `http://…` — forwarded in clear, with nothing swapped: a request carrying any stub
//!   is refused, since a credential must never cross the network in clear.
//!
//! Per request, the credentials whose host patterns cover the destination are *bound*: their stubs
//! are swapped for real values only at each credential's injection points (see
//! [`crate::wire::vault::Injection`]), and only on requests its method/path rules allow; a bound stub
//! anywhere else is refused (`credential-not-injectable`, `credential-rule`). A stub of any other
//! credential is *stray*: refused with 403 (`credential-not-bound`). Both are recorded as alerts and
//! reach nothing upstream: a streamed body is cut before a stub's first byte. Responses have every
//! real value replaced by its stub, in headers, bodies and trailers; a header named after a real
//! value is dropped and the upstream's reason phrase never passed on. `Accept-Encoding` is forced to
//! `identity` so bodies can be scrubbed, `Range`/`If-Range` are removed when the sandbox has
//! credentials (a slice of a stored value would pass the scrubber), and a compressed request body is
//! decoded before it is checked and sent on decoded (one in a coding lap cannot decode is refused
//! with 415 whenever the sandbox has a credential). Connections are bounded per sandbox and closed
//! when idle ([`super::limits`]).
//!
//! Each request is decided first, from its head alone, by [`super::plan::decide`] (a [`plan::Plan`] or a
//! refusal, no I/O); this file is the I/O step around it: it reads the head, drains and answers a
//! refused request, and sends an allowed one upstream with its body ([`super::body`]) and its frames
//! ([`super::frames`]) rewritten as the plan says.
//!
//! Bodies up to [`MAX_BUFFERED_BODY`] with a known length are rewritten whole and keep an exact
//! `Content-Length`; longer or unsized ones stream in constant memory. The upstream is verified against the system roots plus any `--vault-upstream-ca`, and one upstream
//! connection (h2 or http/1.1, by its own ALPN) is kept per intercepted client connection.
//! A response the upstream compresses despite `Accept-Encoding: identity` (gzip, deflate, br, zstd) is
//! decoded as it streams ([`super::decode`]) and passed on decoded and scrubbed; any other coding is
//! refused (502, `compressed-response`). Request heads must arrive within [`HEADER_READ_TIMEOUT`].
//!
//! Attacks from the security catalogue (`reference/anchors.md`) that are tested elsewhere or do not
//! apply here, one sentence each:
//! - Domain fronting / transparent mode: there is no transparent mode; every connection is an
//!   explicit CONNECT whose SNI and `Host`/`:authority` must name the same host.
//! - IP literal with a forged SNI: bindings are by CONNECT name, and an IP literal is refused as
//!   internal or, if public, has no bound credential, so a stub sent there is stray.
//! - Host canonicalisation: the CONNECT host is made canonical once ([`canonical_host`]: lower case,
//!   no trailing dot) and only that name is checked against bindings, SNI, `Host`, pins and policy;
//!   numeric forms go through the resolver and then the post-resolution address check.
//! - Redirects: the client follows them, not the vault, so each hop is a new request checked alone.
//! - Stubs in header names, the request line's method or trailers: never swapped; a stub there is
//!   refused, toward bound and unbound hosts alike.
//! - Non-standard TLS ports, QUIC and raw TCP/UDP: a sandbox has no route but the proxy listener, so
//!   only CONNECT/HTTP reach anything, on whatever port policy allows.
//! - Sandbox privileges, `AF_UNIX` and io_uring escapes: properties of the sandbox (seccomp, no
//!   capabilities), tested with the local backend, not here.
//! - Policy changes mid-connection: a session's binding is built at bring-up; edits to the agent apply
//!   to new sessions.
//! - HTTP/2 frame-level attacks: left to hyper and `h2`; oversized header lists get 431.
//!
//! After a WebSocket upgrade the same rules hold frame by frame ([`super::websocket`]): bound stubs
//! swapped in the sandbox's frames, real values scrubbed from the upstream's, a stray stub closing
//! the connection (1008) and recorded as a block, no compression offered.
//!
//! Known limit, documented for users in docs/security.md ("what it does not protect against"): a bound
//! host can be made to store a swapped value only where a credential is opted into a point a server
//! stores (`body`, a stored header or parameter); a stub is recognised in every routine encoding
//! ([`super::encodings`]) in the head, body and trailers, but not under an arbitrary transformation.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::audit::{Interception, blocked_record, record};
use super::body::{BodyError, BoxError, OnEnd, ProxyBody, Trip, Way, drain, rewrite_body};
use super::ca::CertificateAuthority;
use super::decode::{self, DecodedBody};
use super::frames::Frames;
use super::limits::{Activity, Admission, REFUSAL_TIMEOUT, accept_admitted, serve_until_idle};
use super::plan::{self, Head, Refusal, Why};
use super::rewrite::Substitutions;
use super::tls_io::{Coalesce, TLS_WRITE_BUFFER, transport};
use super::upstream::{UPSTREAM_CONNECT_TIMEOUT, Upstream};
use super::websocket;

pub use super::body::MAX_BUFFERED_BODY;
pub use super::limits::{IDLE_TIMEOUT, MAX_OPEN_CONNECTIONS};
pub use super::plan::{Binding, Credential};

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a whole HTTP/1 request head (slowloris): without it, a sandbox
/// could hold any number of half-sent heads open, and with them the server's file descriptors.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("invalid --vault-resolve `{0}`: expected HOST:PORT:ADDR")]
    BadResolve(String),
    #[error("cannot build the upstream TLS configuration: {0}")]
    Tls(String),
}

/// `--vault-resolve HOST:PORT:ADDR`: connect to ADDR for HOST:PORT (an explicit allow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveOverride {
    pub host: String,
    pub port: u16,
    pub addr: IpAddr,
}

impl FromStr for ResolveOverride {
    type Err = VaultError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || VaultError::BadResolve(s.to_owned());
        let mut parts = s.splitn(3, ':');
        let (Some(host), Some(port), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        Ok(Self {
            host: canonical_host(host),
            port: port.parse().map_err(|_| bad())?,
            addr: addr.parse().map_err(|_| bad())?,
        })
    }
}

/// Name resolution for upstreams: the system's, or one a test supplies.
#[async_trait::async_trait]
pub trait Resolve: Send + Sync + 'static {
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The system resolver (`getaddrinfo` on the blocking pool).
pub struct SystemResolver;

#[async_trait::async_trait]
impl Resolve for SystemResolver {
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// The vault: shared by every sandbox listener of one `lap serve`.
pub struct Vault {
    ca: Arc<CertificateAuthority>,
    upstream_tls: Arc<rustls::ClientConfig>,
    upstream_tls_h1: Arc<rustls::ClientConfig>,
    resolve: Vec<ResolveOverride>,
    resolver: Arc<dyn Resolve>,
    idle_timeout: Duration,
}

impl Vault {
    /// `extra_roots` are trusted for upstreams besides the system's (`--vault-upstream-ca`).
    pub fn new(
        ca: Arc<CertificateAuthority>,
        resolve: Vec<ResolveOverride>,
        extra_roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, VaultError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        for root in extra_roots {
            roots
                .add(root)
                .map_err(|e| VaultError::Tls(format!("an upstream CA is not usable: {e}")))?;
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut h1 = config.clone();
        h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            ca,
            upstream_tls: Arc::new(config),
            upstream_tls_h1: Arc::new(h1),
            resolve,
            resolver: Arc::new(SystemResolver),
            idle_timeout: IDLE_TIMEOUT,
        })
    }

    /// The same vault resolving names with `resolver` (the operator's overrides still come first).
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = resolver;
        self
    }

    /// The same vault closing connections idle for `idle` instead of [`IDLE_TIMEOUT`].
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// The CA certificate sandboxes must trust, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem()
    }

    /// Serves a TCP proxy listener until `shutdown`. A connection is accepted only once it has a
    /// place, or a place among the refused ([`super::limits::Tunnels::admit`]).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, binding: Arc<Binding>, shutdown: CancellationToken) {
        let serve = |(tcp, _): (TcpStream, SocketAddr), admission| {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(self.clone().serve_admitted(tcp, binding.clone(), admission));
        };
        accept_admitted(&binding.tunnels, || listener.accept(), serve, &shutdown).await;
    }

    /// Serves one client connection of a sandbox (TCP, or a Unix socket the harness forwards),
    /// admitted now ([`Self::serve_admitted`]).
    pub async fn serve_connection<I>(self: Arc<Self>, io: I, binding: Arc<Binding>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let admission = binding.tunnels.admit_now();
        self.serve_admitted(io, binding, admission).await
    }

    /// Serves one client connection of a sandbox with the place it was given. Refused (over the
    /// sandbox's limit or the vault's descriptors), every request on it is answered 429 and
    /// recorded, and it is closed within [`REFUSAL_TIMEOUT`]; idle for the vault's idle timeout,
    /// it is closed.
    pub async fn serve_admitted<I>(self: Arc<Self>, io: I, binding: Arc<Binding>, admission: Admission)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (slot, refused, idle) = match admission {
            Admission::Open(slot) => (Some(Arc::new(slot)), None, self.idle_timeout),
            Admission::Refused(refused) => (None, Some(Arc::new(refused)), REFUSAL_TIMEOUT),
        };
        let activity = Activity::new();
        let service = {
            let activity = activity.clone();
            service_fn(move |req| {
                let (vault, binding, slot, flight) = (self.clone(), binding.clone(), slot.clone(), activity.start());
                let refused = refused.clone();
                async move {
                    let response = match (slot, refused) {
                        (Some(slot), _) => vault.proxy(req, binding, slot).await,
                        (None, refused) => {
                            over_limit(&req, &binding, refused.as_ref().map_or("", |r| r.reason.as_str()))
                        }
                    };
                    Ok::<_, Infallible>(flight.hold(response))
                }
            })
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        if let Err(err) = serve_until_idle(conn, &activity, idle, |conn| conn.graceful_shutdown()).await {
            tracing::debug!(error = %err, "vault client connection ended");
        }
    }

    async fn proxy(self: Arc<Self>, req: Request<Incoming>, binding: Arc<Binding>, slot: Slot) -> Response<ProxyBody> {
        if req.method() == Method::CONNECT {
            self.connect(req, binding, slot).await
        } else if req.uri().scheme_str() == Some("http") {
            self.plain_http(req, binding).await
        } else {
            reply(
                StatusCode::BAD_REQUEST,
                "this is the lap vault, an HTTP proxy: send CONNECT or an absolute http:// URL",
            )
        }
    }

    async fn connect(
        self: Arc<Self>,
        req: Request<Incoming>,
        binding: Arc<Binding>,
        slot: Slot,
    ) -> Response<ProxyBody> {
        let Some(authority) = req.uri().authority().cloned() else {
            return reply(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
        };
        let host = canonical_host(authority.host());
        if host.is_empty() {
            return reply(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
        }
        // RFC 9110 §9.3.6: `host:port`, nothing else. Userinfo, or a port missing, zero or out of
        // range (which `port_u16` would turn into a silent default), is refused before any lookup.
        let port = match authority.port_u16() {
            Some(port) if port != 0 && !authority.as_str().contains('@') => port,
            _ => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "CONNECT needs host:port with a port from 1 to 65535",
                );
            }
        };
        let addr = match self.destination(&binding, &host, port).await {
            Ok(addr) => addr,
            Err(reason) => {
                binding
                    .audit
                    .record(blocked_record("CONNECT", &host, port, "", Why::Egress, &reason));
                return refusal_reply(Why::Egress, &format!("lap vault: `{host}` is blocked: {reason}"));
            }
        };
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    // The tunnel holds the connection's slot for as long as it is open.
                    let _slot = slot;
                    self.intercept(TokioIo::new(upgraded), host, port, addr, binding).await
                }
                Err(err) => tracing::debug!(error = %err, "CONNECT upgrade failed"),
            }
        });
        Response::new(empty())
    }

    /// The address to connect to for `host:port`, if policy allows it.
    async fn destination(&self, binding: &Binding, host: &str, port: u16) -> Result<SocketAddr, String> {
        binding.policy.check_host(host).map_err(|r| r.to_string())?;
        if let Some(pinned) = self.resolve.iter().find(|o| o.host == host && o.port == port) {
            binding
                .policy
                .check_addr(pinned.addr, true)
                .map_err(|r| r.to_string())?;
            return Ok(SocketAddr::new(pinned.addr, port));
        }
        let addrs = self
            .resolver
            .lookup(host, port)
            .await
            .map_err(|e| format!("cannot resolve it: {e}"))?;
        // Every address is checked, not only the first: a name that mixes a public and an internal
        // address is served from the public one, and refused when it has no other.
        let mut refusal = None;
        for addr in addrs {
            match binding.policy.check_addr(addr.ip(), false) {
                Ok(()) => return Ok(addr),
                Err(r) => refusal = Some(r.to_string()),
            }
        }
        Err(refusal.unwrap_or_else(|| "it has no address".to_owned()))
    }

    async fn intercept<I>(self: Arc<Self>, io: I, host: String, port: u16, addr: SocketAddr, binding: Arc<Binding>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let leaf = match self.ca.leaf(&host) {
            Ok(leaf) => leaf,
            Err(err) => return tracing::warn!(error = %err, "cannot mint a leaf"),
        };
        let resolver = Arc::new(SniCheck {
            expected: host.clone(),
            leaf,
            mismatch: Mutex::new(None),
        });
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let accept = tokio_rustls::TlsAcceptor::from(Arc::new(config)).accept(transport(io));
        let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
            Ok(Ok(tls)) => tls,
            _ => {
                if let Some(sni) = resolver.mismatch.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let reason = format!("TLS SNI `{sni}` does not match the CONNECT target `{host}`");
                    binding
                        .audit
                        .record(blocked_record("CONNECT", &host, port, "", Why::SniMismatch, &reason));
                }
                return;
            }
        };
        tls.get_mut().1.set_buffer_limit(Some(TLS_WRITE_BUFFER));
        let upstream = Arc::new(Upstream::new(
            self.upstream_tls.clone(),
            self.upstream_tls_h1.clone(),
            host.clone(),
            port,
            addr,
        ));
        let vault = self.clone();
        let activity = Activity::new();
        let service = {
            let activity = activity.clone();
            service_fn(move |req| {
                let (vault, binding, upstream, host) = (vault.clone(), binding.clone(), upstream.clone(), host.clone());
                let flight = activity.start();
                async move {
                    let response = vault.forward(req, &host, port, &binding, &upstream).await;
                    Ok::<_, Infallible>(flight.hold(response))
                }
            })
        };
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(Coalesce::new(tls)), service);
        let idle = self.idle_timeout;
        if let Err(err) = serve_until_idle(conn, &activity, idle, |conn| conn.graceful_shutdown()).await {
            tracing::debug!(error = %err, "intercepted connection ended");
        }
    }

    /// One request on an intercepted connection to `host:port`: decided from its head, then sent.
    async fn forward(
        &self,
        req: Request<Incoming>,
        host: &str,
        port: u16,
        binding: &Arc<Binding>,
        upstream: &Upstream,
    ) -> Response<ProxyBody> {
        let started = std::time::Instant::now();
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str).to_owned();
        let method = parts.method.to_string();
        let authority = parts.uri.authority().map(|a| a.as_str().to_owned()).or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
        let head = Head {
            method: &method,
            authority: authority.as_deref(),
            path: &path,
            headers: &parts.headers,
        };
        let refuse = |refusal: Refusal| {
            binding
                .audit
                .record(blocked_record(&method, host, port, &path, refusal.why, &refusal.reason));
            refusal_reply(refusal.why, &format!("lap vault: {}", refusal.reason))
        };
        let mut plan = match plan::decide(binding, host, port, &head) {
            Ok(plan) => plan,
            Err(refusal) => {
                // Drained first: clients still sending (curl over h2 in particular) then see the
                // refusal instead of a reset stream.
                drain(body).await;
                return refuse(refusal);
            }
        };
        // Read before the plan's headers (hop-by-hop ones gone) replace them: `Transfer-Encoding` too.
        let codings = decode::codings(&parts.headers).unwrap_or_default();
        parts.headers = std::mem::take(&mut plan.headers);
        let new_path = plan.path.clone();
        let scrub = Arc::new(binding.scrubber_with(plan.reflected.clone()));
        if plan.websocket {
            // The handshake's swaps go in its record; the frames' are counted afresh.
            let (swapped, stubs_swapped) = plan.tally.swapped(binding);
            let _ = plan.swap.take_hits();
            let opened = |status: StatusCode| Interception {
                status: Some(status.as_u16()),
                swapped: swapped.clone(),
                stubs_swapped: stubs_swapped.clone(),
                duration_ms: Some(started.elapsed().as_millis() as u64),
                ..record(&method, host, port, &path)
            };
            let blocked = plan.frame_refusal(binding);
            let frames = Frames {
                swap: plan.swap.clone(),
                stray: Arc::new(plan.frame_guard(binding)),
                scrub: scrub.clone(),
                binding: binding.clone(),
                bound: plan.tally.body_swap.clone(),
                opened: opened(StatusCode::SWITCHING_PROTOCOLS),
                blocked: blocked_record(&method, host, port, &path, blocked.why, &blocked.reason),
            };
            return match self.websocket(parts, new_path, upstream, frames).await {
                Ok(response) => {
                    binding.audit.record(opened(response.status()));
                    response
                }
                Err(err) => refuse(Refusal {
                    why: Why::Upstream,
                    reason: format!("WebSocket to `{host}:{port}` failed: {err}"),
                }),
            };
        }
        let guard = plan.guard(binding);
        let body = match rewrite_request(body, codings, &mut parts.headers, &plan.swap, Way::Up(guard.clone())).await {
            Ok(body) => body,
            Err(BodyError::Refused) => {
                let trip = guard.tripped().unwrap_or(Trip::Body(usize::MAX));
                return refuse(plan.refusal(binding, &trip));
            }
            Err(BodyError::Read(err)) => {
                return refuse(Refusal {
                    why: Why::BadRequest,
                    reason: format!("cannot read the request body: {err}"),
                });
            }
        };
        let bytes_up = content_length(&parts.headers);
        let response = upstream.send(Request::from_parts(parts, body), new_path).await;
        // A streamed body cut by the guard fails the upstream request before the stub's first byte.
        if let Some(trip) = guard.tripped() {
            return refuse(plan.refusal(binding, &trip));
        }
        let response = match response {
            Ok(response) => response,
            Err(err) => {
                return refuse(Refusal {
                    why: Why::Upstream,
                    reason: format!("upstream `{host}:{port}` failed: {err}"),
                });
            }
        };
        let status = response.status();
        // The record is written when the response body ends (streamed: what it scrubbed and how
        // much it carried are known only then), or when the sandbox stops reading it.
        let ended = {
            let (binding, scrub, tally) = (binding.clone(), scrub.clone(), plan.tally.clone());
            let base = record(&method, host, port, &path);
            move |bytes: u64, alert: bool| {
                let (swapped, stubs_swapped) = tally.swapped(&binding);
                binding.audit.record(Interception {
                    status: Some(status.as_u16()),
                    swapped,
                    stubs_swapped,
                    scrubbed: binding.names(&scrub.hits()),
                    bytes_up,
                    bytes_down: Some(bytes),
                    duration_ms: Some(started.elapsed().as_millis() as u64),
                    alert,
                    ..base
                });
            }
        };
        match answer(response, &method, host, binding, &scrub, ended).await {
            Ok(answered) => answered,
            Err(refusal) => refuse(refusal),
        }
    }

    /// A WebSocket upgrade whose head is already rewritten: sent on its own HTTP/1.1 upstream
    /// connection, offering no extension (so nothing is compressed); after `101` the two sides are
    /// relayed frame by frame ([`websocket`]): bound stubs swapped in the sandbox's frames, real
    /// values scrubbed from the upstream's, a stray stub ending the connection (recorded as a block).
    /// Any other answer is scrubbed like every response.
    async fn websocket(
        &self,
        mut parts: hyper::http::request::Parts,
        path: PathAndQuery,
        upstream: &Upstream,
        frames: Frames,
    ) -> Result<Response<ProxyBody>, BoxError> {
        let client_side = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or("WebSocket upgrades need HTTP/1.1 between the sandbox and the vault")?;
        for name in ["keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer"] {
            parts.headers.remove(name);
        }
        websocket::strip_extensions(&mut parts.headers);
        let mut response = upstream.upgrade(Request::from_parts(parts, empty()), path).await?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let method = frames.opened.method.clone();
            let host = frames.opened.host.clone();
            return answer(response, &method, &host, &frames.binding, &frames.scrub, |_, _| {})
                .await
                .map_err(|refusal| refusal.reason.into());
        }
        let names = frames.binding.real_names();
        *response.headers_mut() = plan::rewrite_headers(response.headers(), &frames.scrub, &names).headers;
        if response.headers().contains_key(header::SEC_WEBSOCKET_EXTENSIONS) {
            return Err(
                "the upstream agreed to a WebSocket extension nobody offered; its frames could not be read".into(),
            );
        }
        let server_side = hyper::upgrade::on(&mut response);
        // Nothing else of the upstream's goes on, its reason phrase included (see [`answer`]).
        response.extensions_mut().clear();
        tokio::spawn(async move {
            match tokio::try_join!(client_side, server_side) {
                Ok((client, server)) => frames.relay(TokioIo::new(client), TokioIo::new(server)).await,
                Err(err) => tracing::debug!(error = %err, "WebSocket upgrade did not complete"),
            }
        });
        let (parts, _) = response.into_parts();
        Ok(Response::from_parts(parts, empty()))
    }

    /// Absolute-form `http://` requests: forwarded in clear, never with a stub.
    async fn plain_http(&self, req: Request<Incoming>, binding: Arc<Binding>) -> Response<ProxyBody> {
        let started = std::time::Instant::now();
        let uri = req.uri().clone();
        let host = canonical_host(uri.host().unwrap_or_default());
        let port = uri.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", PathAndQuery::as_str).to_owned();
        let method = req.method().to_string();
        let refuse = |refusal: Refusal| {
            binding.audit.record(blocked_record(
                &method,
                &host,
                port,
                &path,
                refusal.why,
                &refusal.reason,
            ));
            refusal_reply(refusal.why, &format!("lap vault: {}", refusal.reason))
        };
        let in_clear = || Refusal {
            why: Why::NotBound,
            reason: plan::IN_CLEAR.to_owned(),
        };
        let addr = match self.destination(&binding, &host, port).await {
            Ok(addr) => addr,
            Err(reason) => {
                return refuse(Refusal {
                    why: Why::Egress,
                    reason: format!("`{host}` is blocked: {reason}"),
                });
            }
        };
        let (mut parts, body) = req.into_parts();
        let head = Head {
            method: &method,
            authority: uri.authority().map(|a| a.as_str()),
            path: &path,
            headers: &parts.headers,
        };
        let plain = match plan::decide_plain(&binding, &head) {
            Ok(plain) => plain,
            Err(refusal) => return refuse(refusal),
        };
        let codings = decode::codings(&parts.headers).unwrap_or_default();
        parts.headers = plain.headers;
        let none = Arc::new(Substitutions::new(Vec::<(&[u8], &[u8])>::new()));
        let guard = plain.guard;
        let body = match rewrite_request(body, codings, &mut parts.headers, &none, Way::Up(guard.clone())).await {
            Ok(body) => body,
            Err(BodyError::Refused) => return refuse(in_clear()),
            Err(err) => {
                return refuse(Refusal {
                    why: Why::BadRequest,
                    reason: format!("cannot read the request body: {err}"),
                });
            }
        };
        parts.uri = Uri::from(PathAndQuery::try_from(path.as_str()).unwrap_or_else(|_| PathAndQuery::from_static("/")));
        parts.version = Version::HTTP_11;
        let result = async {
            let tcp = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(addr)).await??;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            Ok::<_, BoxError>(sender.send_request(Request::from_parts(parts, body)).await?)
        }
        .await;
        if guard.tripped().is_some() {
            return refuse(in_clear());
        }
        let response = match result {
            Ok(response) => response,
            Err(err) => {
                return refuse(Refusal {
                    why: Why::Upstream,
                    reason: format!("upstream `{host}:{port}` failed: {err}"),
                });
            }
        };
        let status = response.status();
        let scrub = Arc::new(binding.scrubber());
        let ended = {
            let (binding, scrub) = (binding.clone(), scrub.clone());
            let base = record(&method, &host, port, &path);
            move |bytes: u64, alert: bool| {
                binding.audit.record(Interception {
                    status: Some(status.as_u16()),
                    scrubbed: binding.names(&scrub.hits()),
                    bytes_down: Some(bytes),
                    duration_ms: Some(started.elapsed().as_millis() as u64),
                    alert,
                    ..base
                });
            }
        };
        match answer(response, &method, &host, &binding, &scrub, ended).await {
            Ok(answered) => answered,
            Err(refusal) => refuse(refusal),
        }
    }
}

/// An upstream's response to `method`, made fit for the sandbox: decoded when compressed; headers,
/// body and trailers scrubbed with `scrub`; a header whose *name* holds a real value left out (an
/// alert); hop-by-hop headers gone; the upstream's reason phrase dropped (the canonical one is
/// sent). `ended(bytes, alert)` runs once, when the body has ended or the sandbox stopped reading.
/// A request body made fit for its upstream: rewritten and checked against the guard in `way`, after
/// `codings` (the sandbox compressed it) are undone; a decoded body goes upstream decoded, so a stub
/// inside compressed bytes is seen like any other.
async fn rewrite_request(
    body: Incoming,
    codings: Vec<decode::Coding>,
    headers: &mut HeaderMap,
    subs: &Arc<Substitutions>,
    way: Way,
) -> Result<ProxyBody, BodyError> {
    if codings.is_empty() {
        return rewrite_body(body, headers, subs, way).await;
    }
    decode::strip_codings(headers);
    rewrite_body(DecodedBody::new(body, codings), headers, subs, way).await
}

async fn answer(
    response: Response<Incoming>,
    method: &str,
    host: &str,
    binding: &Binding,
    scrub: &Arc<Substitutions>,
    ended: impl FnOnce(u64, bool) + Send + Sync + 'static,
) -> Result<Response<ProxyBody>, Refusal> {
    let (mut parts, body) = response.into_parts();
    // `Accept-Encoding: identity` was asked for; a body an upstream compresses anyway (in
    // `Content-Encoding` or `Transfer-Encoding`) is decoded as it streams ([`decode`]) and passed on
    // decoded, so the scrubber reads it. A coding lap cannot decode is refused, never passed on
    // compressed.
    let codings = match decode::codings(&parts.headers) {
        Ok(codings) if has_body(method, &parts) => codings,
        Ok(_) => Vec::new(),
        Err(err) => {
            return Err(Refusal {
                why: Why::CompressedResponse,
                reason: format!("`{host}` answered with a body lap cannot decode to scrub it of credentials: {err}"),
            });
        }
    };
    let rewritten = plan::rewrite_headers(&parts.headers, scrub, &binding.real_names());
    let alert = rewritten.dropped_name;
    if alert {
        tracing::warn!(
            host,
            "a response header named after a real credential value was dropped"
        );
    }
    parts.headers = rewritten.headers;
    plan::strip_hop_by_hop(&mut parts.headers);
    // hyper keeps a non-canonical reason phrase in the extensions and would send it on: it is the
    // upstream's text, unscrubbed (`HTTP/1.1 200 Bearer ghp_…`). Nothing of it goes on.
    parts.extensions.clear();
    let on_end: OnEnd = Box::new(move |bytes| ended(bytes, alert));
    let way = Way::Down {
        on_end: Some(on_end),
        names: binding.real_names(),
    };
    let read = if codings.is_empty() {
        rewrite_body(body, &mut parts.headers, scrub, way).await
    } else {
        decode::strip_codings(&mut parts.headers);
        rewrite_body(DecodedBody::new(body, codings), &mut parts.headers, scrub, way).await
    };
    let body = read.map_err(|err| Refusal {
        why: Why::Upstream,
        reason: format!("cannot read the response of `{host}`: {err}"),
    })?;
    Ok(Response::from_parts(parts, body))
}

/// Whether a response to `method` can carry a body at all (RFC 9110 §6.4.1).
fn has_body(method: &str, parts: &hyper::http::response::Parts) -> bool {
    let empty = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    !(method == "HEAD"
        || empty
        || parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED)
}

/// Serves the leaf for the CONNECT host; a ClientHello naming another host fails the handshake.
#[derive(Debug)]
struct SniCheck {
    expected: String,
    leaf: Arc<CertifiedKey>,
    mismatch: Mutex<Option<String>>,
}

impl ResolvesServerCert for SniCheck {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match hello.server_name() {
            None => Some(self.leaf.clone()),
            Some(sni) if sni.trim_end_matches('.').eq_ignore_ascii_case(&self.expected) => Some(self.leaf.clone()),
            Some(other) => {
                *self.mismatch.lock().unwrap_or_else(|p| p.into_inner()) = Some(other.to_owned());
                None
            }
        }
    }
}

/// A connection's place among the sandbox's ([`super::limits::Slot`]); a tunnel keeps it.
type Slot = Arc<super::limits::Slot>;

/// The answer to every request on a connection over the sandbox's limit: 429, recorded.
fn over_limit(req: &Request<Incoming>, binding: &Binding, reason: &str) -> Response<ProxyBody> {
    let host = canonical_host(req.uri().host().unwrap_or_default());
    let port = req.uri().port_u16().unwrap_or(0);
    binding.audit.record(blocked_record(
        req.method().as_str(),
        &host,
        port,
        "",
        Why::TunnelLimit,
        reason,
    ));
    let mut response = refusal_reply(Why::TunnelLimit, &format!("lap vault: {reason}"));
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The one form of a host name every check sees (binding, SNI, `Host`/`:authority`,
/// `--vault-resolve` pins, policy): lower case, without brackets or a trailing dot
/// (`API.github.com.` is `api.github.com`).
pub fn canonical_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// The header that marks a response the vault made to refuse a request.
pub const BLOCKED_HEADER: &str = "x-lap-vault-blocked";

/// The vault's own answer refusing a request for `why`.
fn refusal_reply(why: Why, text: &str) -> Response<ProxyBody> {
    let mut response = match why.troubleshooting() {
        Some(row) => reply(why.status(), &format!("{text}\nhint: see {row}")),
        None => reply(why.status(), text),
    };
    if let Some(kind) = why.kind() {
        response
            .headers_mut()
            .insert(BLOCKED_HEADER, HeaderValue::from_static(kind));
    }
    response
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn reply(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{text}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}
