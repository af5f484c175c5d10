//! The vault gateway: one proxy port of `lap serve` that many sandboxes share, each connection
//! handed to the vault of the sandbox it belongs to.
//!
//! Used by the Kubernetes backend's gateway mode (`lap serve --kube-vault gateway`), where sandbox
//! pods carry no vault of their own and reach this port through the cluster network. A pod's proxy
//! URL carries a *proxy credential*, `http://lap:<pod name>@<gateway>`, so every first request on a
//! connection (a `CONNECT`, or an absolute-form `http://` request) has
//! `Proxy-Authorization: Basic base64("lap:<pod name>")`. The credential only names the sandbox: it is
//! no secret (the agent reads it in its environment) and is honoured only from the source address
//! the sandbox's route was registered with (its pod IP, from the pod's status). So the trust is the
//! network's: a pod cannot send from another pod's IP (it has no capability to forge packets, and a
//! TCP handshake needs the replies), and the NetworkPolicy lets sandbox pods reach only this port.
//!
//! Per connection: the first request head is read (at most [`MAX_HEAD`] bytes within
//! [`HEAD_TIMEOUT`]); a missing or unknown credential, or a known one from another address, is
//! answered `407` with `X-Lap-Vault-Blocked: proxy-credential` and closed, having reached nothing
//! upstream; it is logged, and a known credential used from the wrong address is also recorded in
//! that sandbox's egress log as an alert. An accepted connection goes, with the bytes already read,
//! to the sandbox's [`GatewayListener`], which the control plane serves exactly as it serves a
//! local sandbox's proxy listener: that session's binding, rules, scrubbing, limits and records.
//! Later requests on a kept-alive connection belong to the same sandbox (the connection is its
//! pod's); the vault drops `Proxy-Authorization` before anything goes upstream.
//!
//! Bounds, so that one sandbox cannot starve the others or `lap serve`: at most [`MAX_PENDING`]
//! connections are being read before they are routed (the rest wait in the kernel's backlog,
//! costing no descriptor), at most [`MAX_PENDING_PER_SOURCE`] of them from one address (beyond, a
//! connection is closed at once), each for at most [`HEAD_TIMEOUT`]; a routed connection never
//! waits for its sandbox's vault to take it: when [`ROUTED_QUEUE`] of them wait already, it is
//! answered `429` (`tunnel-limit`), as the vault answers a sandbox over its connection limit.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::audit;
use super::plan::{Binding, Why};

/// The user name of every proxy credential; the password is the sandbox's name.
pub const PROXY_USER: &str = "lap";
/// Largest first request head the gateway reads to route a connection.
pub const MAX_HEAD: usize = 16 * 1024;
/// How long a new connection may take to send its first request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections being read before they are routed, at most.
pub const MAX_PENDING: usize = 256;
/// Connections from one address being read before they are routed, at most.
pub const MAX_PENDING_PER_SOURCE: usize = 16;
/// Routed connections waiting for their sandbox's vault to take them, per sandbox.
pub const ROUTED_QUEUE: usize = 64;
/// What a refused client is told (the reason itself goes to the log).
const REFUSED: &str = "no valid lap proxy credential for this pod: use the proxy URL lap set in the environment\n\
                       hint: see docs/troubleshooting.md#proxy-credential";
/// The `X-Lap-Vault-Blocked` kind of a refused proxy credential.
pub const BLOCK_KIND: &str = "proxy-credential";

/// The proxy URL of sandbox `name` through the gateway at `addr` (`host:port`).
pub fn proxy_url(name: &str, addr: &str) -> String {
    format!("http://{PROXY_USER}:{name}@{addr}")
}

/// The routes of one gateway: sandbox name → where its connections may come from and go.
#[derive(Default)]
pub struct Gateway {
    routes: Mutex<HashMap<String, Route>>,
    generation: AtomicU64,
    /// Connections being read, per source address.
    pending: Mutex<HashMap<IpAddr, usize>>,
}

struct Route {
    source: IpAddr,
    generation: u64,
    connections: mpsc::Sender<RoutedStream>,
    binding: Arc<OnceLock<Weak<Binding>>>,
}

/// What the gateway decided about a connection's first request.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Hand it to this sandbox's vault.
    Route(String),
    /// Refuse it, for this reason; `Some(name)`: a known sandbox's credential from elsewhere.
    Refuse { reason: String, sandbox: Option<String> },
}

impl Gateway {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Registers sandbox `name`, reachable with its credential from `source` only, until the
    /// returned listener is dropped; it replaces an earlier registration of the same name (a
    /// restarted vault task, an adopted pod).
    pub fn route(self: &Arc<Self>, name: &str, source: IpAddr) -> GatewayListener {
        let (connections, receiver) = mpsc::channel(ROUTED_QUEUE);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let binding = Arc::new(OnceLock::new());
        let route = Route {
            source,
            generation,
            connections,
            binding: binding.clone(),
        };
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), route);
        GatewayListener {
            gateway: self.clone(),
            name: name.to_owned(),
            generation,
            connections: tokio::sync::Mutex::new(receiver),
            binding,
        }
    }

    /// Accepts connections on `listener` and routes each, until `stop`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        let pending = Arc::new(Semaphore::new(MAX_PENDING));
        loop {
            let permit = tokio::select! {
                _ = stop.cancelled() => return,
                permit = pending.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let Some(source) = self.clone().pending_from(peer.ip()) else {
                        tracing::debug!(%peer, "the vault gateway closed a connection over its address's limit");
                        continue;
                    };
                    let gateway = self.clone();
                    tokio::spawn(async move {
                        gateway.admit(stream, peer).await;
                        drop((source, permit));
                    });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the vault gateway cannot accept");
                    tokio::time::sleep(super::limits::ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    /// A place among the connections being read from `source`, if it has one left.
    fn pending_from(self: Arc<Self>, source: IpAddr) -> Option<PendingFrom> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let count = pending.entry(source).or_default();
        if *count >= MAX_PENDING_PER_SOURCE {
            return None;
        }
        *count += 1;
        drop(pending);
        Some(PendingFrom { gateway: self, source })
    }

    /// Reads the first request head of `stream` from `peer` and routes or refuses it.
    async fn admit(&self, mut stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
            Ok(Ok(head)) => head,
            Ok(Err(err)) => {
                tracing::debug!(%peer, error = %err, "the vault gateway cannot read a request");
                return;
            }
            Err(_) => return,
        };
        let end = head_end(&head).unwrap_or(head.len());
        let (method, target) = request_line(&head[..end]);
        match self.decide(&head[..end], peer.ip()) {
            Decision::Route(name) => {
                let routed = RoutedStream {
                    head,
                    at: 0,
                    inner: stream,
                };
                // The route may have ended since it was decided: its vault is gone.
                let sent = match self.routes_of(&name) {
                    Some(route) => route.connections.try_send(routed),
                    None => Err(mpsc::error::TrySendError::Closed(routed)),
                };
                match sent {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(mut routed)) => {
                        tracing::info!(sandbox = name, "the vault gateway refused a connection: too many wait");
                        too_many(&mut routed.inner).await;
                    }
                    Err(mpsc::error::TrySendError::Closed(mut routed)) => {
                        refuse(&mut routed.inner, "the sandbox's vault is gone").await;
                    }
                }
            }
            Decision::Refuse { reason, sandbox } => {
                tracing::info!(%peer, method, target, reason, "the vault gateway refused a connection");
                if let Some(name) = sandbox {
                    self.record_refusal(&name, &method, &target, &reason);
                }
                // The same answer whatever the reason: which sandboxes exist is not the client's to learn.
                refuse(&mut stream, REFUSED).await;
            }
        }
    }

    fn routes_of(&self, name: &str) -> Option<RouteView> {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.get(name).map(|route| RouteView {
            source: route.source,
            connections: route.connections.clone(),
            binding: route.binding.clone(),
        })
    }

    /// Whose connection this is, by its head's proxy credential and its source address.
    fn decide(&self, head: &[u8], source: IpAddr) -> Decision {
        let refuse = |reason: &str, sandbox: Option<String>| Decision::Refuse {
            reason: reason.to_owned(),
            sandbox,
        };
        let Some(name) = credential(head) else {
            return refuse(
                "no lap proxy credential (`Proxy-Authorization: Basic`, user `lap`)",
                None,
            );
        };
        match self.routes_of(&name) {
            None => refuse(
                &format!("the proxy credential names no sandbox served here (`{name}`)"),
                None,
            ),
            Some(route) if !same_address(route.source, source) => refuse(
                &format!("the proxy credential of `{name}` was used from {source}, not from its pod"),
                Some(name),
            ),
            Some(_) => Decision::Route(name),
        }
    }

    /// A refusal in sandbox `name`'s egress log, when its vault is being served.
    fn record_refusal(&self, name: &str, method: &str, target: &str, reason: &str) {
        let Some(binding) = self
            .routes_of(name)
            .and_then(|r| r.binding.get().and_then(Weak::upgrade))
        else {
            return;
        };
        let (host, port) = target_host(method, target);
        let mut record = audit::record(method, &host, port, "");
        record.status = Some(407);
        record.blocked = Some(reason.to_owned());
        record.block_kind = Some(BLOCK_KIND.to_owned());
        record.alert = true;
        binding.audit.record(record);
    }

    fn forget(&self, name: &str, generation: u64) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if routes.get(name).is_some_and(|route| route.generation == generation) {
            routes.remove(name);
        }
    }
}

/// One place among the connections being read from `source`; given back when dropped.
struct PendingFrom {
    gateway: Arc<Gateway>,
    source: IpAddr,
}

impl Drop for PendingFrom {
    fn drop(&mut self) {
        let mut pending = self.gateway.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = pending.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                pending.remove(&self.source);
            }
        }
    }
}

struct RouteView {
    source: IpAddr,
    connections: mpsc::Sender<RoutedStream>,
    binding: Arc<OnceLock<Weak<Binding>>>,
}

/// One sandbox's end of the gateway: the connections routed to it. Dropping it ends the route.
pub struct GatewayListener {
    gateway: Arc<Gateway>,
    name: String,
    generation: u64,
    connections: tokio::sync::Mutex<mpsc::Receiver<RoutedStream>>,
    binding: Arc<OnceLock<Weak<Binding>>>,
}

impl GatewayListener {
    /// The next connection routed to this sandbox.
    pub async fn accept(&self) -> io::Result<RoutedStream> {
        self.connections
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| io::Error::other("the vault gateway stopped"))
    }

    /// Records refusals of this sandbox's credential (used from another address) in `binding`'s log.
    pub fn record_refusals_to(&self, binding: &Arc<Binding>) {
        let _ = self.binding.set(Arc::downgrade(binding));
    }
}

impl Drop for GatewayListener {
    fn drop(&mut self) {
        self.gateway.forget(&self.name, self.generation);
    }
}

/// A routed connection: the bytes the gateway read first, then the rest of the client's stream.
pub struct RoutedStream {
    head: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl AsyncRead for RoutedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.at < self.head.len() {
            let n = buf.remaining().min(self.head.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.head[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for RoutedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Two addresses are the same pod's when equal, an IPv4-mapped IPv6 address counting as its IPv4.
fn same_address(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// Reads until the end of the first request head (or [`MAX_HEAD`] bytes, or the end of the stream);
/// returns every byte read, which may run past the head.
async fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    while head_end(&head).is_none() && head.len() < MAX_HEAD {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a request head",
            ));
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(head)
}

/// Where the head ends (after its blank line), if it has.
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4)
}

/// The method and target of the head's request line (empty when there is none).
fn request_line(head: &[u8]) -> (String, String) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or_default().chars().take(16).collect();
    let target = words.next().unwrap_or_default().chars().take(256).collect();
    (method, target)
}

/// The host and port a request line targets, for the record.
fn target_host(method: &str, target: &str) -> (String, u16) {
    let authority = match method {
        "CONNECT" => target,
        _ => target
            .split_once("://")
            .map_or(target, |(_, rest)| rest.split('/').next().unwrap_or_default()),
    };
    match authority.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(0)),
        None => (authority.to_owned(), 80),
    }
}

/// The sandbox name a head's `Proxy-Authorization: Basic` credential gives, with the user
/// [`PROXY_USER`]; `None` when there is none, or it is not one of lap's.
fn credential(head: &[u8]) -> Option<String> {
    use base64::Engine;
    let text = std::str::from_utf8(head).ok()?;
    let value = text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim())
    })?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, name) = decoded.split_once(':')?;
    (user == PROXY_USER && !name.is_empty()).then(|| name.to_owned())
}

/// Answers 407 with `reason` and closes.
async fn refuse(stream: &mut TcpStream, reason: &str) {
    let head = format!(
        "407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"lap vault\"\r\n\
         X-Lap-Vault-Blocked: {BLOCK_KIND}"
    );
    answer(stream, &head, reason).await;
}

/// Answers 429 (`tunnel-limit`) and closes: [`ROUTED_QUEUE`] connections wait for this sandbox's
/// vault already.
async fn too_many(stream: &mut TcpStream) {
    let why = Why::TunnelLimit;
    let head = format!(
        "{} {}\r\nX-Lap-Vault-Blocked: {}",
        why.status().as_u16(),
        why.status().canonical_reason().unwrap_or_default(),
        why.kind().unwrap_or_default()
    );
    answer(
        stream,
        &head,
        "too many connections wait for this sandbox's vault; retry later",
    )
    .await;
}

/// Sends `HTTP/1.1 <head>` (a status line and headers) with `text` as its body, and closes.
async fn answer(stream: &mut TcpStream, head: &str, text: &str) {
    let body = format!("lap vault gateway: {text}\n");
    let response = format!(
        "HTTP/1.1 {head}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(auth: Option<&str>) -> Vec<u8> {
        use base64::Engine;
        let mut head = "CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n".to_owned();
        if let Some(auth) = auth {
            let encoded = base64::engine::general_purpose::STANDARD.encode(auth);
            head.push_str(&format!("proxy-authorization: Basic {encoded}\r\n"));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    #[test]
    fn a_credential_names_its_sandbox_only_from_its_address() {
        let gateway = Gateway::new();
        let pod: IpAddr = "10.1.2.3".parse().unwrap();
        let _a = gateway.route("lap-a", pod);
        let _b = gateway.route("lap-b", "10.1.2.4".parse().unwrap());
        assert_eq!(
            gateway.decide(&head(Some("lap:lap-a")), pod),
            Decision::Route("lap-a".into())
        );
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(
            gateway.decide(&head(Some("lap:lap-a")), mapped),
            Decision::Route("lap-a".into())
        );
        let refused = |d: Decision| matches!(d, Decision::Refuse { .. });
        assert!(refused(gateway.decide(&head(Some("lap:lap-b")), pod)), "another pod's");
        assert!(matches!(
            gateway.decide(&head(Some("lap:lap-b")), pod),
            Decision::Refuse { sandbox: Some(name), .. } if name == "lap-b"
        ));
        assert!(refused(gateway.decide(&head(Some("lap:lap-c")), pod)), "unknown");
        assert!(refused(gateway.decide(&head(Some("root:lap-a")), pod)), "another user");
        assert!(refused(gateway.decide(&head(None), pod)), "none");
    }

    #[test]
    fn a_dropped_listener_ends_its_route_but_not_a_newer_one() {
        let gateway = Gateway::new();
        let pod: IpAddr = "10.1.2.3".parse().unwrap();
        let old = gateway.route("lap-a", pod);
        let new = gateway.route("lap-a", pod);
        drop(old);
        assert_eq!(
            gateway.decide(&head(Some("lap:lap-a")), pod),
            Decision::Route("lap-a".into())
        );
        drop(new);
        assert!(matches!(
            gateway.decide(&head(Some("lap:lap-a")), pod),
            Decision::Refuse { .. }
        ));
    }

    #[test]
    fn one_address_holds_at_most_its_share_of_the_connections_being_read() {
        let gateway = Gateway::new();
        let (a, b): (IpAddr, IpAddr) = ("10.1.2.3".parse().unwrap(), "10.1.2.4".parse().unwrap());
        let held: Vec<PendingFrom> = (0..MAX_PENDING_PER_SOURCE)
            .map(|_| gateway.clone().pending_from(a).unwrap())
            .collect();
        assert!(gateway.clone().pending_from(a).is_none());
        assert!(
            gateway.clone().pending_from(b).is_some(),
            "another address is not held up"
        );
        drop(held);
        assert!(gateway.clone().pending_from(a).is_some());
        assert!(gateway.pending.lock().unwrap().is_empty(), "every place was given back");
    }

    #[tokio::test]
    async fn a_sandbox_whose_vault_does_not_take_its_connections_gets_429_past_its_queue() {
        let gateway = Gateway::new();
        let pod: IpAddr = "127.0.0.1".parse().unwrap();
        let route = gateway.route("lap-a", pod);
        let listener = TcpListener::bind((pod, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(gateway.clone().serve(listener, stop.clone()));
        let mut held = Vec::new();
        for queued in 1..=ROUTED_QUEUE {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(&head(Some("lap:lap-a"))).await.unwrap();
            held.push(stream);
            // One at a time, so no more than one is being read from this address.
            tokio::time::timeout(Duration::from_secs(10), async {
                while route.connections.lock().await.len() < queued {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("the connection queued for the sandbox's vault");
        }
        let mut over = TcpStream::connect(addr).await.unwrap();
        over.write_all(&head(Some("lap:lap-a"))).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), over.read_to_string(&mut answer))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 429 Too Many Requests\r\n")
                && answer.contains("X-Lap-Vault-Blocked: tunnel-limit\r\n"),
            "{answer}"
        );
        stop.cancel();
    }

    #[test]
    fn records_name_the_target_of_either_request_form() {
        assert_eq!(
            target_host("CONNECT", "api.github.com:443"),
            ("api.github.com".into(), 443)
        );
        assert_eq!(target_host("GET", "http://example.com/x"), ("example.com".into(), 80));
        assert_eq!(
            proxy_url("lap-0123", "lap-serve.lap.svc:3128"),
            "http://lap:lap-0123@lap-serve.lap.svc:3128"
        );
    }
}
