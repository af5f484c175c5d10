//! How long, and how many, connections a sandbox may keep open through its vault.
//!
//! Each connection a sandbox opens to its proxy listener holds a file descriptor in `lap serve`
//! (two, once a tunnel has its upstream), so both are bounded: at most [`MAX_OPEN_CONNECTIONS`] per
//! sandbox at once (the one over it is answered `429` with `X-Lap-Vault-Blocked: tunnel-limit` and
//! recorded), and a connection — plain, or an intercepted tunnel over HTTP/1 or HTTP/2 — with no
//! request in flight for [`IDLE_TIMEOUT`] is closed (gracefully: an HTTP/2 client gets GOAWAY).
//! A request is in flight from its head until its response body has ended or been dropped, so a
//! long stream is never cut for being quiet.
//!
//! Owns [`Activity`] (the in-flight count of one connection), the body wrapper that holds a
//! request in flight, and [`serve_until_idle`]; the vault ([`super::intercept`]) wires them in.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::Response;
use hyper::body::{Body, Bytes, Frame, SizeHint};

use super::body::{BoxError, ProxyBody};

/// Connections one sandbox may have open through its vault at once (tunnels included).
pub const MAX_OPEN_CONNECTIONS: usize = 128;
/// A connection with no request in flight for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a connection being closed for idleness has to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The requests in flight on one connection, and when the last one ended.
pub struct Activity {
    in_flight: AtomicUsize,
    since: Mutex<Instant>,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            since: Mutex::new(Instant::now()),
        })
    }

    /// A request has begun; it is in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `timeout`.
    async fn until_idle(&self, timeout: Duration) {
        let tick = (timeout / 8).max(Duration::from_millis(10));
        loop {
            let quiet = *self.since.lock().unwrap_or_else(|p| p.into_inner());
            if self.in_flight.load(Ordering::SeqCst) == 0 && quiet.elapsed() >= timeout {
                return;
            }
            tokio::time::sleep(tick).await;
        }
    }
}

/// One request in flight; dropping it ends it.
pub struct InFlight(Arc<Activity>);

impl InFlight {
    /// `response`, with this request in flight until its body has ended or been dropped.
    pub fn hold(self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        response.map(|inner| http_body_util::BodyExt::boxed(Held { inner, _flight: self }))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Held {
    inner: ProxyBody,
    _flight: InFlight,
}

impl Body for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Runs a served connection until it ends, or until it has been idle for `idle`: then
/// `shutdown` starts a graceful close, which has [`SHUTDOWN_GRACE`] to finish.
pub async fn serve_until_idle<C, E>(
    conn: C,
    activity: &Activity,
    idle: Duration,
    shutdown: impl FnOnce(Pin<&mut C>),
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => return done,
        () = activity.until_idle(idle) => {}
    }
    tracing::debug!("closing a vault connection idle for {idle:?}");
    shutdown(conn.as_mut());
    tokio::time::timeout(SHUTDOWN_GRACE, conn).await.unwrap_or(Ok(()))
}
