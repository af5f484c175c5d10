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
//! are swapped for real values in header values (`Authorization: Basic` decoded and re-encoded), the
//! path and query, and the body. A stub of any other credential is *stray*: the request is refused
//! with 403 (in the body, the upstream request is aborted) and recorded. Responses have every real
//! value replaced by its stub, in headers and body. `Accept-Encoding` is forced to `identity` so
//! bodies can be scrubbed, and a compressed request body toward a host with bound credentials is
//! refused with 415 rather than passed through unread.
//!
//! Bodies up to [`MAX_BUFFERED_BODY`] with a known length are rewritten whole and keep an exact
//! `Content-Length`; longer or unsized ones stream through [`RewriteBody`] in constant memory. The
//! upstream is verified against the system roots plus any `--vault-upstream-ca`, and one upstream
//! connection (h2 or http/1.1, by its own ALPN) is kept per intercepted client connection.
//! A response the upstream compresses despite `Accept-Encoding: identity` cannot be scrubbed and is
//! refused (502, `compressed-response`). Request heads must arrive within [`HEADER_READ_TIMEOUT`].
//!
//! Attacks from the security catalogue (`reference/anchors.md`) that are tested elsewhere or do not
//! apply here, one sentence each:
//! - Domain fronting / transparent mode: there is no transparent mode; every connection is an
//!   explicit CONNECT whose SNI and `Host`/`:authority` must name the same host.
//! - IP literal with a forged SNI: bindings are by CONNECT name, and an IP literal is refused as
//!   internal or, if public, has no bound credential, so a stub sent there is stray.
//! - Host canonicalisation: case and a trailing dot are normalised in `host_matches`; numeric forms go
//!   through the resolver and then the post-resolution address check.
//! - Redirects: the client follows them, not the vault, so each hop is a new request checked alone.
//! - Stubs in header names, the request line's method or trailers: only header values, the path and
//!   query, and bodies are ever swapped; a stub elsewhere is passed as the stub it is.
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
//! Known limits, documented for users in the README ("what it does not protect against"): a stub
//! encoded other than literally (percent, JSON `\u`, base64 outside Basic) is not recognised, so it
//! reaches an unbound host as an encoded stub without an alert (never a real value); a bound host can
//! be made to store a swapped value.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::audit::{AuditLog, Interception};
use super::ca::CertificateAuthority;
use super::policy::Policy;
use super::rewrite::{Substitutions, host_matches};
use super::websocket;
use crate::secret::Secret;

/// Bodies up to this size with a known length are rewritten whole, keeping an exact length.
pub const MAX_BUFFERED_BODY: usize = 8 * 1024 * 1024;
/// How long connecting to an upstream may take.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the vault reads a refused request's body before answering anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a whole HTTP/1 request head (slowloris): without it, a sandbox
/// could hold any number of half-sent heads open, and with them the server's file descriptors.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("invalid --vault-resolve `{0}`: expected HOST:PORT:ADDR")]
    BadResolve(String),
    #[error("cannot build the upstream TLS configuration: {0}")]
    Tls(String),
}

/// One credential as a sandbox's vault holds it.
pub struct Credential {
    pub name: String,
    pub stub: String,
    pub real: Secret,
    /// Host patterns: `host`, `*.suffix`, optionally `:port`.
    pub hosts: Vec<String>,
}

/// What one sandbox's listener enforces, and the record of what passed it.
pub struct Binding {
    pub credentials: Vec<Credential>,
    pub policy: Policy,
    pub audit: AuditLog,
}

impl Binding {
    pub fn new(credentials: Vec<Credential>, policy: Policy) -> Self {
        Self::with_audit(credentials, policy, AuditLog::default())
    }

    pub fn with_audit(credentials: Vec<Credential>, policy: Policy, audit: AuditLog) -> Self {
        Self {
            credentials,
            policy,
            audit,
        }
    }

    fn bound_to(&self, host: &str, port: u16) -> (Vec<&Credential>, Vec<&Credential>) {
        self.credentials
            .iter()
            .partition(|c| c.hosts.iter().any(|p| host_matches(p, host, port)))
    }

    /// Real value → stub, for every credential: what responses are scrubbed with.
    fn scrubber(&self) -> Substitutions {
        self.scrubber_with(Vec::new())
    }

    /// [`Self::scrubber`] plus `extra` pairs, which come after the credentials' own.
    fn scrubber_with(&self, extra: Vec<(Vec<u8>, Vec<u8>)>) -> Substitutions {
        let own = self
            .credentials
            .iter()
            .map(|c| (c.real.expose().as_bytes().to_vec(), c.stub.as_bytes().to_vec()));
        Substitutions::new(own.chain(extra))
    }
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
            host: host.to_ascii_lowercase(),
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
        })
    }

    /// The same vault resolving names with `resolver` (the operator's overrides still come first).
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = resolver;
        self
    }

    /// The CA certificate sandboxes must trust, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem()
    }

    /// Serves a TCP proxy listener until `shutdown`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, binding: Arc<Binding>, shutdown: CancellationToken) {
        loop {
            let tcp = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(err) => {
                        tracing::warn!(error = %err, "vault accept failed");
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(self.clone().serve_connection(tcp, binding.clone()));
        }
    }

    /// Serves one client connection of a sandbox (TCP, or a Unix socket the harness forwards).
    pub async fn serve_connection<I>(self: Arc<Self>, io: I, binding: Arc<Binding>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = service_fn(move |req| {
            let vault = self.clone();
            let binding = binding.clone();
            async move { Ok::<_, Infallible>(vault.proxy(req, binding).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "vault client connection ended");
        }
    }

    async fn proxy(self: Arc<Self>, req: Request<Incoming>, binding: Arc<Binding>) -> Response<ProxyBody> {
        if req.method() == Method::CONNECT {
            self.connect(req, binding).await
        } else if req.uri().scheme_str() == Some("http") {
            self.plain_http(req, binding).await
        } else {
            reply(
                StatusCode::BAD_REQUEST,
                "this is the lap vault, an HTTP proxy: send CONNECT or an absolute http:// URL",
            )
        }
    }

    async fn connect(self: Arc<Self>, req: Request<Incoming>, binding: Arc<Binding>) -> Response<ProxyBody> {
        let Some(authority) = req.uri().authority().cloned() else {
            return reply(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
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
                return Why::Egress.reply(&format!("lap vault: `{host}` is blocked: {reason}"));
            }
        };
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => self.intercept(TokioIo::new(upgraded), host, port, addr, binding).await,
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
        let accept = tokio_rustls::TlsAcceptor::from(Arc::new(config)).accept(io);
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
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
        let upstream = Arc::new(Upstream {
            tls: self.upstream_tls.clone(),
            tls_h1: self.upstream_tls_h1.clone(),
            host: host.clone(),
            port,
            addr,
            sender: tokio::sync::Mutex::new(None),
        });
        let vault = self.clone();
        let service = service_fn(move |req| {
            let (vault, binding, upstream, host) = (vault.clone(), binding.clone(), upstream.clone(), host.clone());
            async move { Ok::<_, Infallible>(vault.forward(req, &host, port, &binding, &upstream).await) }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        if let Err(err) = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await {
            tracing::debug!(error = %err, "intercepted connection ended");
        }
    }

    /// One request on an intercepted connection to `host:port`.
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
        let refuse = |why: Why, reason: String| {
            binding
                .audit
                .record(blocked_record(&method, host, port, &path, why, &reason));
            why.reply(&format!("lap vault: {reason}"))
        };
        // A refusal before the body is read drains it first: clients still sending (curl over h2 in
        // particular) then see the refusal instead of a reset stream.
        macro_rules! early {
            ($why:expr, $reason:expr $(,)?) => {{
                drain(body).await;
                return refuse($why, $reason);
            }};
        }

        let authority = parts.uri.authority().map(|a| a.as_str().to_owned()).or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
        if !authority.as_deref().is_some_and(|a| authority_is(a, host, port)) {
            let asked = authority.unwrap_or_else(|| "(none)".into());
            let carries_stub = binding.credentials.iter().any(|c| {
                path.contains(&c.stub) || parts.headers.values().any(|v| contains_stub(v.as_bytes(), &c.stub))
            });
            // With a stub aboard, this is an attempt to move a credential elsewhere: an alert.
            let why = if carries_stub { Why::NotBound } else { Why::HostMismatch };
            early!(
                why,
                format!("Host `{asked}` does not match the CONNECT target `{host}`")
            );
        }

        let (bound, unbound) = binding.bound_to(host, port);
        let swap = Arc::new(Substitutions::new(
            bound.iter().map(|c| (c.stub.as_bytes(), c.real.expose().as_bytes())),
        ));
        let stray = Arc::new(Substitutions::new(
            unbound.iter().map(|c| (c.stub.as_bytes(), c.stub.as_bytes())),
        ));
        let in_head = |c: &Credential| {
            path.contains(&c.stub) || parts.headers.values().any(|v| contains_stub(v.as_bytes(), &c.stub))
        };
        let strays: Vec<&str> = unbound.iter().filter(|c| in_head(c)).map(|c| c.name.as_str()).collect();
        if !strays.is_empty() {
            early!(Why::NotBound, stray_reason(&strays, host));
        }

        if !swap.is_empty() && is_compressed(&parts.headers) {
            early!(
                Why::Compressed,
                format!(
                    "a compressed request body to `{host}` cannot be checked for credentials; send it uncompressed"
                ),
            );
        }
        let rewritten = swap.replace_all(path.as_bytes());
        let Ok(new_path) = PathAndQuery::try_from(rewritten.as_ref()) else {
            early!(Why::BadRequest, "the rewritten request path is not a valid URL".into(),);
        };
        // Encoded forms of real values this request puts on the wire (Basic credentials): a response
        // that reflects them must be scrubbed as well as the plain values.
        let mut encoded = Vec::new();
        for value in parts.headers.values_mut() {
            if let Some(new) = swap.header_value(value.as_bytes()) {
                if let (Some(old_token), Some(new_token)) = (basic_token(value.as_bytes()), basic_token(&new)) {
                    encoded.push((new_token.to_vec(), old_token.to_vec()));
                }
                match HeaderValue::from_bytes(&new) {
                    Ok(new) => *value = new,
                    Err(_) => early!(Why::BadRequest, "a rewritten header is not valid".into()),
                }
            }
        }
        if is_websocket_upgrade(&parts.headers) {
            // The handshake's swaps go in its record; the frames' are counted afresh.
            let handshake = swap.take_hits();
            let record = |status: StatusCode| Interception {
                status: Some(status.as_u16()),
                swapped: names(&bound, &handshake),
                stubs_swapped: stubs(&bound, &handshake),
                duration_ms: Some(started.elapsed().as_millis() as u64),
                ..record(&method, host, port, &path)
            };
            let frames = Frames {
                swap: swap.clone(),
                stray: stray.clone(),
                scrub: Arc::new(binding.scrubber_with(encoded)),
                binding: binding.clone(),
                bound: bound.iter().map(|c| (c.name.clone(), c.stub.clone())).collect(),
                opened: record(StatusCode::SWITCHING_PROTOCOLS),
                blocked: blocked_record(
                    &method,
                    host,
                    port,
                    &path,
                    Why::NotBound,
                    &stray_reason(&unbound_names(&unbound), host),
                ),
            };
            return match self.websocket(parts, new_path, upstream, frames).await {
                Ok(response) => {
                    binding.audit.record(record(response.status()));
                    response
                }
                Err(err) => refuse(Why::Upstream, format!("WebSocket to `{host}:{port}` failed: {err}")),
            };
        }
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));

        let stray_hit = Arc::new(AtomicBool::new(false));
        let body = match rewrite_body(body, &mut parts.headers, &swap, Some(&stray), &stray_hit).await {
            Ok(body) => body,
            Err(BodyError::Stray) => {
                let names: Vec<&str> = unbound.iter().map(|c| c.name.as_str()).collect();
                return refuse(Why::NotBound, stray_reason(&names, host));
            }
            Err(BodyError::Read(err)) => {
                return refuse(Why::BadRequest, format!("cannot read the request body: {err}"));
            }
        };
        let bytes_up = content_length(&parts.headers);
        let request = Request::from_parts(parts, body);
        let response = match upstream.send(request, new_path).await {
            Ok(response) => response,
            Err(_) if stray_hit.load(Ordering::SeqCst) => {
                let names: Vec<&str> = unbound.iter().map(|c| c.name.as_str()).collect();
                return refuse(Why::NotBound, stray_reason(&names, host));
            }
            Err(err) => {
                return refuse(Why::Upstream, format!("upstream `{host}:{port}` failed: {err}"));
            }
        };
        let (mut parts, body) = response.into_parts();
        // `Accept-Encoding: identity` was asked for; an upstream that compresses anyway would carry
        // a reflected real value past the scrubber inside the compressed bytes. Fail closed.
        if is_compressed(&parts.headers) && has_body(&method, &parts) {
            return refuse(
                Why::CompressedResponse,
                format!("`{host}` answered with a compressed body, which cannot be scrubbed of credentials"),
            );
        }
        let scrub = Arc::new(binding.scrubber_with(encoded));
        for value in parts.headers.values_mut() {
            if let Some(new) = scrub.header_value(value.as_bytes())
                && let Ok(new) = HeaderValue::from_bytes(&new)
            {
                *value = new;
            }
        }
        strip_hop_by_hop(&mut parts.headers);
        let status = parts.status;
        let body = match rewrite_body(body, &mut parts.headers, &scrub, None, &stray_hit).await {
            Ok(body) => body,
            Err(err) => {
                return refuse(Why::Upstream, format!("cannot read the response of `{host}`: {err}"));
            }
        };
        binding.audit.record(Interception {
            status: Some(status.as_u16()),
            swapped: names(&bound, &swap.hits()),
            stubs_swapped: stubs(&bound, &swap.hits()),
            scrubbed: names(&binding.credentials.iter().collect::<Vec<_>>(), &scrub.hits()),
            bytes_up,
            bytes_down: content_length(&parts.headers),
            duration_ms: Some(started.elapsed().as_millis() as u64),
            ..record(&method, host, port, &path)
        });
        Response::from_parts(parts, body)
    }

    /// A WebSocket upgrade whose head is already rewritten: sent on its own HTTP/1.1 upstream
    /// connection, offering no extension (so nothing is compressed); after `101` the two sides are
    /// relayed frame by frame ([`websocket`]): bound stubs swapped in the sandbox's frames, real
    /// values scrubbed from the upstream's, a stray stub ending the connection (recorded as a block).
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
        for value in response.headers_mut().values_mut() {
            if let Some(new) = frames.scrub.header_value(value.as_bytes())
                && let Ok(new) = HeaderValue::from_bytes(&new)
            {
                *value = new;
            }
        }
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (parts, body) = response.into_parts();
            return Ok(Response::from_parts(parts, body.map_err(BoxError::from).boxed()));
        }
        if response.headers().contains_key(header::SEC_WEBSOCKET_EXTENSIONS) {
            return Err(
                "the upstream agreed to a WebSocket extension nobody offered; its frames could not be read".into(),
            );
        }
        let server_side = hyper::upgrade::on(&mut response);
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
        let host = uri.host().unwrap_or_default().to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", PathAndQuery::as_str).to_owned();
        let method = req.method().to_string();
        let refuse = |why: Why, reason: String| {
            binding
                .audit
                .record(blocked_record(&method, &host, port, &path, why, &reason));
            why.reply(&format!("lap vault: {reason}"))
        };
        let addr = match self.destination(&binding, &host, port).await {
            Ok(addr) => addr,
            Err(reason) => return refuse(Why::Egress, format!("`{host}` is blocked: {reason}")),
        };
        let all = Arc::new(Substitutions::new(
            binding
                .credentials
                .iter()
                .map(|c| (c.stub.as_bytes(), c.stub.as_bytes())),
        ));
        let (mut parts, body) = req.into_parts();
        let in_head = all.finds_any(path.as_bytes()) || parts.headers.values().any(|v| all.finds_any(v.as_bytes()));
        let in_clear = "credentials are only sent over HTTPS; a stub in a plain http:// request is refused";
        if in_head {
            return refuse(Why::NotBound, in_clear.to_owned());
        }
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        let none = Arc::new(Substitutions::new(Vec::<(&[u8], &[u8])>::new()));
        let stray_hit = Arc::new(AtomicBool::new(false));
        let body = match rewrite_body(body, &mut parts.headers, &none, Some(&all), &stray_hit).await {
            Ok(body) => body,
            Err(BodyError::Stray) => return refuse(Why::NotBound, in_clear.to_owned()),
            Err(err) => return refuse(Why::BadRequest, format!("cannot read the request body: {err}")),
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
        let response = match result {
            Ok(response) => response,
            Err(_) if stray_hit.load(Ordering::SeqCst) => return refuse(Why::NotBound, in_clear.to_owned()),
            Err(err) => {
                return refuse(Why::Upstream, format!("upstream `{host}:{port}` failed: {err}"));
            }
        };
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let scrub = Arc::new(binding.scrubber());
        let status = parts.status;
        let body = match rewrite_body(body, &mut parts.headers, &scrub, None, &stray_hit).await {
            Ok(body) => body,
            Err(err) => {
                return refuse(Why::Upstream, format!("cannot read the response of `{host}`: {err}"));
            }
        };
        binding.audit.record(Interception {
            status: Some(status.as_u16()),
            bytes_down: content_length(&parts.headers),
            duration_ms: Some(started.elapsed().as_millis() as u64),
            ..record(&method, &host, port, &path)
        });
        Response::from_parts(parts, body)
    }
}

/// Stubs of `credentials[i]` for each index.
fn stubs(credentials: &[&Credential], indices: &[usize]) -> Vec<String> {
    indices
        .iter()
        .filter_map(|&i| credentials.get(i))
        .map(|c| c.stub.clone())
        .collect()
}

/// Names of `credentials[i]` for each index.
fn names(credentials: &[&Credential], indices: &[usize]) -> Vec<String> {
    indices
        .iter()
        .filter_map(|&i| credentials.get(i))
        .map(|c| c.name.clone())
        .collect()
}

/// The base64 part of an `Authorization: Basic …` value.
fn basic_token(value: &[u8]) -> Option<&[u8]> {
    let prefix = b"basic ";
    (value.len() > prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| value[prefix.len()..].trim_ascii())
}

fn stray_reason(names: &[&str], host: &str) -> String {
    format!(
        "a stub of {} was sent to `{host}`, which it is not bound to",
        names.join(", ")
    )
}

fn contains_stub(value: &[u8], stub: &str) -> bool {
    let single = Substitutions::new([(stub, stub)]);
    single.finds_any(value) || single.header_value(value).is_some()
}

/// Reads and discards a request body the vault refuses, up to [`MAX_BUFFERED_BODY`] bytes and
/// [`DRAIN_TIMEOUT`]; a longer one is cut off.
async fn drain(mut body: Incoming) {
    let mut left = MAX_BUFFERED_BODY;
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            let len = frame.data_ref().map_or(0, Bytes::len);
            if len >= left {
                return;
            }
            left -= len;
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, read).await;
}

/// Whether `authority` (`host` or `host:port`) names `host:port`.
fn authority_is(authority: &str, host: &str, port: u16) -> bool {
    let Ok(parsed) = authority.parse::<hyper::http::uri::Authority>() else {
        return false;
    };
    let name = parsed.host().trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case(host) && parsed.port_u16().unwrap_or(443) == port
}

/// What the frames of one WebSocket connection are rewritten with.
struct Frames {
    /// Stubs bound to the host → real values (sandbox → upstream).
    swap: Arc<Substitutions>,
    /// Stubs of credentials not bound to the host: none may pass.
    stray: Arc<Substitutions>,
    /// Real values → stubs (upstream → sandbox).
    scrub: Arc<Substitutions>,
    binding: Arc<Binding>,
    /// Name and stub of each credential bound to the host, in [`Frames::swap`]'s order.
    bound: Vec<(String, String)>,
    /// The upgrade's record: the frames' is made from it when the connection ends.
    opened: Interception,
    /// What is recorded when a stray stub ends the connection.
    blocked: Interception,
}

impl Frames {
    /// Relays both directions until both end; a stray stub or unreadable framing on either side
    /// stops both, and a stray stub closes both with 1008 and is recorded.
    async fn relay<C, S>(self, client: C, server: S)
    where
        C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use super::websocket::{Direction, RelayError};
        let started = std::time::Instant::now();
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut server_read, mut server_write) = tokio::io::split(server);
        let stop = tokio_util::sync::CancellationToken::new();
        let up = Direction {
            rewrite: &self.swap,
            stray: (!self.stray.is_empty()).then_some(&*self.stray),
            mask: true,
        };
        let down = Direction {
            rewrite: &self.scrub,
            stray: None,
            mask: false,
        };
        let (sent, received) = tokio::join!(
            websocket::relay_until(&mut client_read, &mut server_write, &up, &stop),
            websocket::relay_until(&mut server_read, &mut client_write, &down, &stop),
        );
        self.record_frames(started);
        for result in [&sent, &received] {
            match result {
                Err(RelayError::Stray) => {
                    self.binding.audit.record(self.blocked.clone());
                    let reason = "lap vault: a credential's stub not bound to this host";
                    let _ = websocket::close(&mut client_write, websocket::POLICY_VIOLATION, reason, false).await;
                    let _ = websocket::close(&mut server_write, websocket::POLICY_VIOLATION, reason, true).await;
                }
                Err(RelayError::Protocol(why)) => {
                    tracing::info!(host = %self.blocked.host, why, "a WebSocket connection was cut: unreadable frames");
                    let _ = websocket::close(&mut client_write, websocket::PROTOCOL_ERROR, why, false).await;
                }
                Err(RelayError::Io(err)) => tracing::debug!(error = %err, "a WebSocket connection ended"),
                Ok(()) => {}
            }
        }
    }
}

impl Frames {
    /// When the frames swapped or scrubbed anything, one record of the connection (method `WS`):
    /// which credentials its frames carried each way, and how long it was open.
    fn record_frames(&self, started: std::time::Instant) {
        let (swapped, scrubbed) = (self.swap.hits(), self.scrub.hits());
        if swapped.is_empty() && scrubbed.is_empty() {
            return;
        }
        let pick = |indices: &[usize], field: fn(&(String, String)) -> &String| -> Vec<String> {
            indices
                .iter()
                .filter_map(|&i| self.bound.get(i))
                .map(|c| field(c).clone())
                .collect()
        };
        let all: Vec<&Credential> = self.binding.credentials.iter().collect();
        self.binding.audit.record(Interception {
            method: "WS".to_owned(),
            status: None,
            swapped: pick(&swapped, |c| &c.0),
            stubs_swapped: pick(&swapped, |c| &c.1),
            scrubbed: names(&all, &scrubbed),
            duration_ms: Some(started.elapsed().as_millis() as u64),
            timestamp: crate::store::now(),
            ..self.opened.clone()
        });
    }
}

fn unbound_names<'a>(unbound: &[&'a Credential]) -> Vec<&'a str> {
    unbound.iter().map(|c| c.name.as_str()).collect()
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
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

fn is_compressed(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| v.to_str().map_or(true, |v| !v.trim().eq_ignore_ascii_case("identity")))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    ] {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

enum BodyError {
    Stray,
    Read(BoxError),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stray => f.write_str("a stub headed to a host it is not bound to"),
            Self::Read(err) => write!(f, "{err}"),
        }
    }
}

/// Rewrites a body with `subs`, refusing it when `stray` finds anything. Sized bodies under the limit
/// are rewritten whole with an exact `Content-Length`; others stream.
async fn rewrite_body(
    body: Incoming,
    headers: &mut HeaderMap,
    subs: &Arc<Substitutions>,
    stray: Option<&Arc<Substitutions>>,
    stray_hit: &Arc<AtomicBool>,
) -> Result<ProxyBody, BodyError> {
    let known = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let nothing_to_do = subs.is_empty() && stray.is_none_or(|s| s.is_empty());
    if nothing_to_do {
        return Ok(body.map_err(BoxError::from).boxed());
    }
    match known {
        Some(len) if len <= MAX_BUFFERED_BODY => {
            let bytes = Limited::new(body, MAX_BUFFERED_BODY)
                .collect()
                .await
                .map_err(BodyError::Read)?
                .to_bytes();
            if stray.is_some_and(|s| s.finds_any(&bytes)) {
                stray_hit.store(true, Ordering::SeqCst);
                return Err(BodyError::Stray);
            }
            let out = Bytes::from(subs.replace_all(&bytes).into_owned());
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
            Ok(Full::new(out).map_err(|never| match never {}).boxed())
        }
        Some(_) | None => {
            headers.remove(header::CONTENT_LENGTH);
            Ok(RewriteBody {
                inner: body,
                subs: subs.clone(),
                stray: stray.cloned(),
                stray_hit: stray_hit.clone(),
                carry: Vec::new(),
                tail: Vec::new(),
                trailers: None,
                done: false,
            }
            .boxed())
        }
    }
}

/// A body rewritten as it streams, in memory bounded by the longest needle.
struct RewriteBody {
    inner: Incoming,
    subs: Arc<Substitutions>,
    stray: Option<Arc<Substitutions>>,
    stray_hit: Arc<AtomicBool>,
    carry: Vec<u8>,
    /// The end of the previous chunk, so a stray stub split across chunks is still seen.
    tail: Vec<u8>,
    trailers: Option<HeaderMap>,
    done: bool,
}

impl Body for RewriteBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(trailers) = self.trailers.take() {
                self.done = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let this = &mut *self;
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if let Some(stray) = &this.stray {
                            // The chunk itself, then the seam with the previous one (a stub split
                            // across it): no copy of the whole chunk.
                            let reach = stray.longest().saturating_sub(1);
                            let mut seam = std::mem::take(&mut this.tail);
                            seam.extend_from_slice(&data[..reach.min(data.len())]);
                            if stray.finds_any(&data) || stray.finds_any(&seam) {
                                this.stray_hit.store(true, Ordering::SeqCst);
                                this.done = true;
                                return Poll::Ready(Some(Err(
                                    "lap vault: a stub headed to a host it is not bound to".into()
                                )));
                            }
                            let from = if data.len() >= reach {
                                &data[data.len() - reach..]
                            } else {
                                &seam[..]
                            };
                            let keep = reach.min(from.len());
                            this.tail = from[from.len() - keep..].to_vec();
                        }
                        // Nothing held back and nothing in this chunk to rewrite or wait for: pass it on
                        // as it is, without a copy (the common case of a large body).
                        if this.carry.is_empty() && this.subs.passes_through(&data) {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        let mut out = Vec::with_capacity(data.len());
                        this.subs.push(&mut this.carry, &data, &mut out);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                        }
                    }
                    Err(frame) => {
                        this.trailers = frame.into_trailers().ok();
                        let mut out = Vec::new();
                        this.subs.finish(&mut this.carry, &mut out);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                        }
                    }
                },
                Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
                None => {
                    this.done = true;
                    let mut out = Vec::new();
                    this.subs.finish(&mut this.carry, &mut out);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
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

/// The upstream side of one intercepted connection.
struct Upstream {
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
    async fn send(&self, mut req: Request<ProxyBody>, path: PathAndQuery) -> Result<Response<Incoming>, BoxError> {
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
    async fn upgrade(&self, mut req: Request<ProxyBody>, path: PathAndQuery) -> Result<Response<Incoming>, BoxError> {
        let io = TokioIo::new(self.tls_stream(&self.tls_h1).await?);
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
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, BoxError> {
        let tcp = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(self.addr)).await??;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.host.clone())?;
        Ok(tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await?)
    }

    async fn connect(&self) -> Result<Sender, BoxError> {
        let tls = self.tls_stream(&self.tls).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
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

/// Why the vault answered a request itself. Blocks carry `X-Lap-Vault-Blocked: <kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// A stub headed somewhere it is not bound to: an alert.
    NotBound,
    /// The destination fails the agent's egress policy.
    Egress,
    /// `Host`/`:authority` names another host than the CONNECT target (no stub aboard).
    HostMismatch,
    /// The TLS ClientHello named another host than the CONNECT target.
    SniMismatch,
    /// A compressed body toward a host with bound credentials.
    Compressed,
    /// A compressed response from an intercepted upstream (it could hide a real value).
    CompressedResponse,
    BadRequest,
    Upstream,
}

impl Why {
    fn status(self) -> StatusCode {
        match self {
            Self::NotBound | Self::Egress | Self::SniMismatch => StatusCode::FORBIDDEN,
            Self::HostMismatch => StatusCode::MISDIRECTED_REQUEST,
            Self::Compressed => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::CompressedResponse => StatusCode::BAD_GATEWAY,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Upstream => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `X-Lap-Vault-Blocked` value, for refusals that are policy (not errors).
    fn kind(self) -> Option<&'static str> {
        match self {
            Self::NotBound => Some("credential-not-bound"),
            Self::Egress => Some("egress-policy"),
            Self::HostMismatch => Some("host-mismatch"),
            Self::SniMismatch => Some("sni-mismatch"),
            Self::Compressed => Some("compressed-body"),
            Self::CompressedResponse => Some("compressed-response"),
            Self::BadRequest | Self::Upstream => None,
        }
    }

    fn reply(self, text: &str) -> Response<ProxyBody> {
        let mut response = reply(self.status(), text);
        if let Some(kind) = self.kind() {
            response
                .headers_mut()
                .insert(BLOCKED_HEADER, HeaderValue::from_static(kind));
        }
        response
    }
}

/// The header that marks a response the vault made to refuse a request.
pub const BLOCKED_HEADER: &str = "x-lap-vault-blocked";

fn blocked_record(method: &str, host: &str, port: u16, path: &str, why: Why, reason: &str) -> Interception {
    Interception {
        status: (why != Why::SniMismatch).then(|| why.status().as_u16()),
        blocked: Some(reason.to_owned()),
        block_kind: why.kind().map(str::to_owned),
        alert: why == Why::NotBound,
        ..record(method, host, port, path)
    }
}

/// A record of a request to `host:port`, stamped now, its query values redacted.
fn record(method: &str, host: &str, port: u16, path: &str) -> Interception {
    Interception {
        id: 0,
        timestamp: crate::store::now(),
        method: method.to_owned(),
        host: host.to_owned(),
        port,
        path: redact_query(path),
        status: None,
        swapped: Vec::new(),
        stubs_swapped: Vec::new(),
        scrubbed: Vec::new(),
        bytes_up: None,
        bytes_down: None,
        duration_ms: None,
        blocked: None,
        block_kind: None,
        alert: false,
    }
}

/// `path?a=1&b` → `path?a=…&b`: parameter names stay, values go (they may be tokens or personal).
fn redact_query(path: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}=…"),
            None => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", redacted.join("&"))
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
