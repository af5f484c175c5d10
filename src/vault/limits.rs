//! How long, and how many, connections a sandbox may keep open through its vault, and how many
//! descriptors the vault may hold in all.
//!
//! Each connection a sandbox opens to its proxy listener holds a file descriptor in `lap serve`
//! (two, once a tunnel has its upstream; three with a WebSocket upgrade's own upstream), so a
//! hostile sandbox could starve the server of descriptors: its API listener, SQLite and the other
//! sandboxes would fail with `EMFILE`. Invariant: the vault never holds more descriptors than its
//! [`Budget`] gives it, and the [`RESERVED_DESCRIPTORS`] below `RLIMIT_NOFILE` stay `lap serve`'s.
//! - At start ([`init`]), `lap serve` raises its soft `RLIMIT_NOFILE` to the hard limit and derives
//!   the [`Budget`] from the result: one sandbox may have at most [`MAX_OPEN_CONNECTIONS`] open, or
//!   a [`SANDBOX_SHARE`]th of the vault's descriptors when that is fewer, and every sandbox together
//!   at most the vault's descriptors ([`DESCRIPTORS_PER_CONNECTION`] each).
//! - A connection over either limit is answered `429` with `X-Lap-Vault-Blocked: tunnel-limit` and
//!   recorded; at most [`MAX_REFUSING_CONNECTIONS`] per sandbox are being answered at once, each
//!   within [`REFUSAL_TIMEOUT`] and holding one of the vault's descriptors. Beyond that a sandbox's
//!   listener accepts nothing until a place frees ([`Tunnels::admit`]): further connections wait in
//!   the kernel's backlog, which costs `lap serve` no descriptor.
//! - A connection — plain, or an intercepted tunnel over HTTP/1 or HTTP/2 — with no request in
//!   flight for the vault's idle timeout ([`IDLE_TIMEOUT`] unless `LAP_VAULT_IDLE_TIMEOUT` says
//!   otherwise) is closed (gracefully: an HTTP/2 client gets GOAWAY). A request is in flight from
//!   its head until its response body has ended or been dropped, so a long stream is never cut for
//!   being quiet.
//!
//! - A sandbox whose vault `lap serve` runs costs `lap serve` descriptors of its own besides its
//!   connections (its proxy listener, the harness connections of its terminal and exec, the
//!   viewer's connection): [`SERVE_DESCRIPTORS_PER_SANDBOX`] of the same budget, held from the
//!   binding of its vault until it ends ([`Tunnels::for_served_sandbox`]). A sandbox for which the
//!   budget has no room is refused at binding, so many sandboxes cannot eat into the reserve.
//! - `lap vault sidecar` holds the vault of one pod: its budget ([`Holder::Sidecar`]) keeps
//!   [`SIDECAR_RESERVED_DESCRIPTORS`] for itself and gives the rest to that one sandbox.
//! - Every accept loop of the vault ([`accept_admitted`]) takes a place before it accepts and, when
//!   `accept` fails (`EMFILE`, `ENFILE`, `ENOBUFS`), rests [`ACCEPT_BACKOFF`] and tries again: a
//!   failed accept never ends a listener.
//!
//! Owns [`Budget`], [`Tunnels`] (one sandbox's places), [`Activity`] (the in-flight count of one
//! connection), the body wrapper that holds a request in flight, [`serve_until_idle`] and
//! [`accept_admitted`]; the vault ([`super::intercept`]), the egress listeners of `lap serve` and
//! `lap vault sidecar` wire them in.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::Response;
use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::body::{BoxError, ProxyBody};

/// Connections one sandbox may have open through its vault at once (tunnels included), when the
/// descriptor limit allows that many ([`Budget`]).
pub const MAX_OPEN_CONNECTIONS: usize = 128;
/// A connection with no request in flight for this long is closed (`LAP_VAULT_IDLE_TIMEOUT`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a connection being closed for idleness has to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Descriptors below `RLIMIT_NOFILE` the vault never takes: `lap serve`'s listener, SQLite's
/// files, API and TTY connections, each sandbox's harness connections and proxy listener.
pub const RESERVED_DESCRIPTORS: u64 = 256;
/// Descriptors one vault connection may hold: the sandbox's side, its upstream, and the upstream of
/// a WebSocket upgrade (a connection of its own).
pub const DESCRIPTORS_PER_CONNECTION: u64 = 3;
/// When the descriptors and not [`MAX_OPEN_CONNECTIONS`] bind, one sandbox may take this fraction
/// (1/N) of the vault's: a sandbox at its limit leaves room for others.
pub const SANDBOX_SHARE: u64 = 4;
/// Connections over the limit one sandbox may have being answered `429` at once.
pub const MAX_REFUSING_CONNECTIONS: usize = 8;
/// How long a connection over the limit has to send its request and read the refusal.
pub const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// The soft limit set when the hard one is unlimited (Linux's default `fs.nr_open`).
const UNLIMITED_DESCRIPTORS: u64 = 1 << 20;
/// Descriptors `lap serve` holds for one sandbox whose vault it serves, besides the vault's
/// connections: the sandbox's proxy listener, a harness connection for its terminal and one for an
/// exec or message, and the viewer's API connection.
pub const SERVE_DESCRIPTORS_PER_SANDBOX: u64 = 4;
/// Descriptors below `RLIMIT_NOFILE` `lap vault sidecar` keeps for itself: standard streams, the
/// runtime's poller and wakers, its two listeners, [`MAX_ADMIN_CONNECTIONS`], files it reads.
pub const SIDECAR_RESERVED_DESCRIPTORS: u64 = 32;
/// Connections the sidecar's admin endpoint serves at once; more wait in its listener's backlog.
pub const MAX_ADMIN_CONNECTIONS: usize = 8;
/// How long an accept loop rests after a failed accept: `EMFILE` stays until a descriptor frees,
/// so trying again at once would spin.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The process a [`Budget`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// `lap serve`: the control plane, and the vault of every sandbox it serves.
    Serve,
    /// `lap vault sidecar`: the vault of one pod's sandbox, and its admin endpoint.
    Sidecar,
}

impl Holder {
    /// Descriptors below the limit the vault never takes.
    pub const fn reserved(self) -> u64 {
        match self {
            Holder::Serve => RESERVED_DESCRIPTORS,
            Holder::Sidecar => SIDECAR_RESERVED_DESCRIPTORS,
        }
    }

    /// The fraction (1/N) of the vault's descriptors one sandbox may take.
    const fn share(self) -> u64 {
        match self {
            Holder::Serve => SANDBOX_SHARE,
            Holder::Sidecar => 1,
        }
    }
}

/// What the vault may hold open: per sandbox, and in descriptors across every sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The soft `RLIMIT_NOFILE` it was derived from; `None`: no limit known, none derived.
    pub descriptor_limit: Option<u64>,
    /// Connections one sandbox may have open at once.
    pub per_sandbox: usize,
    /// Descriptors every vault connection together may hold.
    pub vault_descriptors: usize,
}

impl Budget {
    /// [`MAX_OPEN_CONNECTIONS`] per sandbox, no bound across sandboxes: a process whose descriptor
    /// limit nobody derived a budget from (the sidecar, tests of the vault alone).
    pub const fn unbounded() -> Self {
        Self {
            descriptor_limit: None,
            per_sandbox: MAX_OPEN_CONNECTIONS,
            vault_descriptors: Semaphore::MAX_PERMITS,
        }
    }

    /// `lap serve`'s budget under a soft `RLIMIT_NOFILE` of `limit`: everything above
    /// [`RESERVED_DESCRIPTORS`] is the vault's (its sandboxes' own descriptors included,
    /// [`SERVE_DESCRIPTORS_PER_SANDBOX`] each); a sandbox gets [`MAX_OPEN_CONNECTIONS`], or a
    /// [`SANDBOX_SHARE`]th of that when fewer (at least one connection).
    pub fn from_descriptor_limit(limit: u64) -> Self {
        Self::for_holder(Holder::Serve, limit)
    }

    /// The budget of `holder` under a soft `RLIMIT_NOFILE` of `limit`: everything above its
    /// [`Holder::reserved`] descriptors is the vault's; a sandbox gets [`MAX_OPEN_CONNECTIONS`], or
    /// its share of the vault's when fewer (at least one connection).
    pub fn for_holder(holder: Holder, limit: u64) -> Self {
        let vault = limit.saturating_sub(holder.reserved());
        // A sandbox with every descriptor to itself leaves its refusals theirs.
        let refusals = if holder.share() == 1 {
            MAX_REFUSING_CONNECTIONS as u64
        } else {
            0
        };
        let share = (vault / holder.share()).saturating_sub(refusals) / DESCRIPTORS_PER_CONNECTION;
        let per_sandbox = usize::try_from(share)
            .unwrap_or(usize::MAX)
            .clamp(1, MAX_OPEN_CONNECTIONS);
        let least = per_sandbox as u64 * DESCRIPTORS_PER_CONNECTION;
        let vault_descriptors = usize::try_from(vault.max(least))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            descriptor_limit: Some(limit),
            per_sandbox,
            vault_descriptors,
        }
    }

    /// Whether the descriptor limit, not [`MAX_OPEN_CONNECTIONS`], bounds a sandbox.
    pub fn is_lowered(&self) -> bool {
        self.per_sandbox < MAX_OPEN_CONNECTIONS
    }
}

/// The descriptor limit under which every sandbox of `lap serve` gets [`MAX_OPEN_CONNECTIONS`].
pub const fn full_budget_descriptors() -> u64 {
    full_budget_descriptors_of(Holder::Serve)
}

/// The descriptor limit under which `holder`'s sandboxes get [`MAX_OPEN_CONNECTIONS`].
pub const fn full_budget_descriptors_of(holder: Holder) -> u64 {
    let refusals = if holder.share() == 1 {
        MAX_REFUSING_CONNECTIONS as u64
    } else {
        0
    };
    holder.reserved() + MAX_OPEN_CONNECTIONS as u64 * DESCRIPTORS_PER_CONNECTION * holder.share() + refusals
}

/// The process's budget and the descriptors its vault connections hold now.
struct Shared {
    budget: Budget,
    descriptors: Arc<Semaphore>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

fn shared() -> &'static Shared {
    SHARED.get_or_init(|| Shared::new(Budget::unbounded()))
}

impl Shared {
    fn new(budget: Budget) -> Self {
        Self {
            budget,
            descriptors: Arc::new(Semaphore::new(budget.vault_descriptors)),
        }
    }
}

pub use crate::platform::DescriptorLimit;

/// Raises the soft open-files limit to the hard one ([`crate::platform::raise_descriptor_limit`]),
/// so `lap serve` is not held to a shell's default 1024 when the system allows more; `None` where
/// the system has no such limit. Agent processes do not inherit it beyond the sandbox's own ceiling
/// (`sandbox::local::rlimit`).
pub fn raise_descriptor_limit() -> std::io::Result<Option<DescriptorLimit>> {
    crate::platform::raise_descriptor_limit(UNLIMITED_DESCRIPTORS)
}

/// Raises the descriptor limit ([`raise_descriptor_limit`]) and makes the [`Budget`] derived from
/// it for `holder` the process's, for every [`Tunnels`] made after. Call once, before the first
/// sandbox is bound; returns the limit and the budget (unbounded where no limit could be read).
pub fn init(holder: Holder) -> (Option<DescriptorLimit>, Budget) {
    let limit = match raise_descriptor_limit() {
        Ok(limit) => limit,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read or raise RLIMIT_NOFILE; the vault's limits are not derived from it");
            None
        }
    };
    let budget = limit.map_or_else(Budget::unbounded, |l| Budget::for_holder(holder, l.now));
    let set = SHARED.set(Shared::new(budget)).is_ok();
    (limit, if set { budget } else { shared().budget })
}

/// The process's budget ([`init`], or [`Budget::unbounded`]).
pub fn budget() -> Budget {
    shared().budget
}

/// One sandbox's places for connections through the vault.
pub struct Tunnels {
    open: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
    descriptors: Arc<Semaphore>,
    limit: usize,
    /// The sandbox's own descriptors in the budget, when `lap serve` holds them
    /// ([`Tunnels::for_served_sandbox`]).
    _sandbox: Option<OwnedSemaphorePermit>,
}

/// The budget has no room for one more sandbox's own descriptors.
#[derive(Debug, thiserror::Error)]
#[error(
    "lap serve holds the descriptors of as many sandboxes as its descriptor limit allows \
     ({SERVE_DESCRIPTORS_PER_SANDBOX} each, beside their vault connections); end a session, or raise \
     lap serve's descriptor limit (`ulimit -Hn`, systemd `LimitNOFILE=`)"
)]
pub struct NoRoomForSandbox;

impl Default for Tunnels {
    fn default() -> Self {
        Self::new()
    }
}

impl Tunnels {
    /// Places as the process's [`budget`] allows.
    pub fn new() -> Self {
        let shared = shared();
        Self::within(shared.budget.per_sandbox, shared.descriptors.clone())
    }

    /// Places for a sandbox whose own descriptors `lap serve` holds besides its connections: takes
    /// [`SERVE_DESCRIPTORS_PER_SANDBOX`] of the process's budget for as long as the places live, or
    /// fails when the budget has no room for them (nothing is taken then).
    pub fn for_served_sandbox() -> Result<Self, NoRoomForSandbox> {
        let shared = shared();
        Self::served_within(shared.budget.per_sandbox, shared.descriptors.clone())
    }

    fn served_within(limit: usize, descriptors: Arc<Semaphore>) -> Result<Self, NoRoomForSandbox> {
        let own = descriptors
            .clone()
            .try_acquire_many_owned(SERVE_DESCRIPTORS_PER_SANDBOX as u32)
            .map_err(|_| NoRoomForSandbox)?;
        let mut tunnels = Self::within(limit, descriptors);
        tunnels._sandbox = Some(own);
        Ok(tunnels)
    }

    /// `limit` places, each taking [`DESCRIPTORS_PER_CONNECTION`] of `descriptors`.
    fn within(limit: usize, descriptors: Arc<Semaphore>) -> Self {
        Self {
            open: Arc::new(Semaphore::new(limit)),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING_CONNECTIONS)),
            descriptors,
            limit,
            _sandbox: None,
        }
    }

    /// The connections this sandbox may have open at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A place for the next connection if there is one now, else its refusal (with a place among
    /// the refusing ones if there is one: a caller that has accepted the connection already answers
    /// it either way).
    pub fn admit_now(&self) -> Admission {
        match self.try_open() {
            Some(slot) => Admission::Open(slot),
            None => Admission::Refused(self.refusal(self.try_refusing())),
        }
    }

    /// Waits until the next connection has a place or a place among the refusing ones, and takes
    /// it. Call it before accepting: while neither is free, connections wait in the listener's
    /// backlog, where they hold none of `lap serve`'s descriptors.
    pub async fn admit(&self) -> Admission {
        if let Some(slot) = self.try_open() {
            return Admission::Open(slot);
        }
        if let Some(place) = self.try_refusing() {
            return Admission::Refused(self.refusal(Some(place)));
        }
        tokio::select! {
            slot = self.open() => Admission::Open(slot),
            place = self.refusing() => Admission::Refused(self.refusal(Some(place))),
        }
    }

    fn try_refusing(&self) -> Option<RefusingPlace> {
        let refusing = self.refusing.clone().try_acquire_owned().ok()?;
        let descriptor = self.descriptors.clone().try_acquire_owned().ok()?;
        Some(RefusingPlace {
            _refusing: refusing,
            _descriptor: descriptor,
        })
    }

    async fn refusing(&self) -> RefusingPlace {
        // Neither semaphore is ever closed.
        let refusing = self.refusing.clone().acquire_owned().await;
        let descriptor = self.descriptors.clone().acquire_owned().await;
        match (refusing, descriptor) {
            (Ok(refusing), Ok(descriptor)) => RefusingPlace {
                _refusing: refusing,
                _descriptor: descriptor,
            },
            _ => std::future::pending().await,
        }
    }

    fn try_open(&self) -> Option<Slot> {
        let open = self.open.clone().try_acquire_owned().ok()?;
        let descriptors = self
            .descriptors
            .clone()
            .try_acquire_many_owned(DESCRIPTORS_PER_CONNECTION as u32)
            .ok()?;
        Some(Slot {
            _open: open,
            _descriptors: descriptors,
        })
    }

    async fn open(&self) -> Slot {
        // Neither semaphore is ever closed.
        let open = self.open.clone().acquire_owned().await;
        let descriptors = self
            .descriptors
            .clone()
            .acquire_many_owned(DESCRIPTORS_PER_CONNECTION as u32)
            .await;
        match (open, descriptors) {
            (Ok(open), Ok(descriptors)) => Slot {
                _open: open,
                _descriptors: descriptors,
            },
            _ => std::future::pending().await,
        }
    }

    fn refusal(&self, place: Option<RefusingPlace>) -> Refused {
        let reason = if self.open.available_permits() == 0 {
            format!(
                "the sandbox has {} connections open through the vault, the most it may; close some and retry",
                self.limit
            )
        } else {
            "lap serve's vault holds all the descriptors it may (every sandbox's connections together); \
             close some and retry, or raise lap serve's descriptor limit (ulimit -n)"
                .to_owned()
        };
        Refused { reason, _place: place }
    }
}

/// What the sandbox's next connection gets.
pub enum Admission {
    /// A place among the sandbox's connections, with its descriptors.
    Open(Slot),
    /// No place: every request on it is answered `429` and it is closed.
    Refused(Refused),
}

/// A connection's place among its sandbox's, and its descriptors in the vault's budget; a tunnel
/// keeps it while it is open.
pub struct Slot {
    _open: OwnedSemaphorePermit,
    _descriptors: OwnedSemaphorePermit,
}

/// Why a connection has no place, and its place among the connections being refused.
pub struct Refused {
    pub reason: String,
    _place: Option<RefusingPlace>,
}

/// A place among the sandbox's connections being refused, and its descriptor in the vault's budget.
struct RefusingPlace {
    _refusing: OwnedSemaphorePermit,
    _descriptor: OwnedSemaphorePermit,
}

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

/// Accepts a sandbox's connections until `stop` and hands each to `serve` with its admission: a
/// connection is accepted only once `tunnels` has a place for it, or for its refusal
/// ([`Tunnels::admit`]), so what a sandbox opens beyond waits in the listener's backlog. A failed
/// `accept` (`EMFILE` and the like) ends nothing: the loop keeps the admission it took, rests
/// [`ACCEPT_BACKOFF`] and accepts again. `stop` comes first: once cancelled, nothing more is
/// accepted.
pub async fn accept_admitted<S, F>(
    tunnels: &Tunnels,
    mut accept: impl FnMut() -> F,
    mut serve: impl FnMut(S, Admission),
    stop: &CancellationToken,
) where
    F: Future<Output = std::io::Result<S>>,
{
    let mut kept = None;
    loop {
        let admission = match kept.take() {
            Some(admission) => admission,
            None => tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                admission = tunnels.admit() => admission,
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            accepted = accept() => accepted,
        };
        match accepted {
            Ok(stream) => serve(stream, admission),
            Err(err) => {
                tracing::warn!(error = %err, "cannot accept a vault connection; trying again in {ACCEPT_BACKOFF:?}");
                kept = Some(admission);
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_descriptor_limit_lowers_each_sandboxs_share_and_never_touches_the_reserve() {
        let low = Budget::from_descriptor_limit(512);
        assert_eq!(low.per_sandbox, 21, "(512 - 256) / 4 / 3");
        assert_eq!(low.vault_descriptors, 256);
        assert!(low.is_lowered());
        let full = Budget::from_descriptor_limit(full_budget_descriptors());
        assert_eq!(full.per_sandbox, MAX_OPEN_CONNECTIONS);
        assert!(!full.is_lowered());
        assert!(Budget::from_descriptor_limit(full_budget_descriptors() - 1).is_lowered());
        // Below the reserve the vault still lets a sandbox have one connection.
        let tiny = Budget::from_descriptor_limit(100);
        assert_eq!((tiny.per_sandbox, tiny.vault_descriptors), (1, 3));
        // From the first limit that gives one sandbox a connection of its own share.
        for limit in [268, 300, 1024, 4096, 65_536, 1 << 20] {
            let budget = Budget::from_descriptor_limit(limit);
            assert!(
                budget.vault_descriptors as u64 + RESERVED_DESCRIPTORS <= limit,
                "{limit}: {budget:?}"
            );
            assert!(
                budget.per_sandbox as u64 * DESCRIPTORS_PER_CONNECTION * SANDBOX_SHARE
                    <= budget.vault_descriptors as u64,
                "{limit}: {budget:?}"
            );
        }
        assert_eq!(Budget::unbounded().per_sandbox, MAX_OPEN_CONNECTIONS);
    }

    fn is_open(admission: &Admission) -> bool {
        matches!(admission, Admission::Open(_))
    }

    #[tokio::test]
    async fn past_its_places_a_sandbox_is_refused_then_waits_until_a_place_frees() {
        let tunnels = Tunnels::within(2, Arc::new(Semaphore::new(100)));
        let first = tunnels.admit().await;
        let second = tunnels.admit().await;
        assert!(is_open(&first) && is_open(&second));
        let mut refused = Vec::new();
        for _ in 0..MAX_REFUSING_CONNECTIONS {
            match tunnels.admit().await {
                Admission::Refused(r) => {
                    assert!(r.reason.contains("the sandbox has 2 connections open"), "{}", r.reason);
                    refused.push(r);
                }
                Admission::Open(_) => panic!("a third place"),
            }
        }
        // Every place and every refusal is taken: the next waits (in the listener's backlog).
        let waiting = tokio::time::timeout(Duration::from_millis(100), tunnels.admit()).await;
        assert!(waiting.is_err(), "admitted with no place free");
        // Checked at once, it is refused with no place among the refusing.
        assert!(!is_open(&tunnels.admit_now()));
        drop(first);
        let next = tokio::time::timeout(Duration::from_secs(5), tunnels.admit())
            .await
            .expect("a freed place admits the next connection");
        assert!(is_open(&next));
        // A refusal that ends frees its place among the refusing.
        drop(refused.pop());
        let next = tokio::time::timeout(Duration::from_secs(5), tunnels.admit())
            .await
            .expect("a freed refusal lets the next connection be refused");
        assert!(!is_open(&next));
    }

    #[tokio::test]
    async fn the_vaults_descriptors_bound_every_sandbox_together_refusals_included() {
        // Three connections' descriptors and one more: room for one refusal.
        let descriptors = Arc::new(Semaphore::new(3 * DESCRIPTORS_PER_CONNECTION as usize + 1));
        let one = Tunnels::within(2, descriptors.clone());
        let other = Tunnels::within(2, descriptors.clone());
        let held = [one.admit().await, one.admit().await, other.admit().await];
        assert!(held.iter().all(is_open));
        let refused = match other.admit().await {
            Admission::Refused(r) => r,
            Admission::Open(_) => panic!("past the vault's descriptors"),
        };
        assert!(refused.reason.contains("descriptor limit"), "{}", refused.reason);
        // The last descriptor is the refusal's: the next connection waits, in either sandbox.
        let waiting = tokio::time::timeout(Duration::from_millis(100), other.admit()).await;
        assert!(waiting.is_err(), "a connection past every descriptor was admitted");
        drop(refused);
        let next = tokio::time::timeout(Duration::from_secs(5), one.admit())
            .await
            .expect("a freed descriptor lets the next connection be refused");
        assert!(!is_open(&next));
        drop((held, next));
        assert!(is_open(&other.admit().await));
    }

    #[test]
    fn the_sidecar_keeps_a_small_reserve_and_gives_its_one_sandbox_the_rest() {
        let budget = Budget::for_holder(Holder::Sidecar, 128);
        assert_eq!(budget.vault_descriptors, 96, "128 - 32");
        assert_eq!(
            budget.per_sandbox, 29,
            "(96 - 8 refusals) / 3: one sandbox, no share for others"
        );
        let full = Budget::for_holder(Holder::Sidecar, full_budget_descriptors_of(Holder::Sidecar));
        assert_eq!(full.per_sandbox, MAX_OPEN_CONNECTIONS);
        assert!(!full.is_lowered());
    }

    #[tokio::test]
    async fn each_served_sandbox_holds_its_own_descriptors_so_many_sandboxes_never_reach_the_reserve() {
        const LIMIT: u64 = 512;
        let budget = Budget::from_descriptor_limit(LIMIT);
        let descriptors = Arc::new(Semaphore::new(budget.vault_descriptors));
        // Sandboxes, each opening connections until it is refused: what `lap serve` then holds
        // (their own descriptors, their connections') stays within the limit less the reserve.
        let mut sandboxes = Vec::new();
        let mut held = Vec::new();
        let mut connections = 0u64;
        // More sandboxes than `LIMIT` descriptors could hold, were their own not counted.
        for _ in 0..LIMIT {
            let Ok(tunnels) = Tunnels::served_within(budget.per_sandbox, descriptors.clone()) else {
                break;
            };
            while let Admission::Open(slot) = tunnels.admit_now() {
                held.push(slot);
                connections += 1;
            }
            sandboxes.push(tunnels);
        }
        let own = sandboxes.len() as u64 * SERVE_DESCRIPTORS_PER_SANDBOX;
        assert!(!sandboxes.is_empty());
        assert!(
            own + connections * DESCRIPTORS_PER_CONNECTION + RESERVED_DESCRIPTORS <= LIMIT,
            "{} sandboxes ({own} descriptors) and {connections} connections under {LIMIT}",
            sandboxes.len()
        );
        // Connections end: their descriptors go to sandboxes, never past the budget.
        drop(held);
        for _ in 0..LIMIT {
            let Ok(tunnels) = Tunnels::served_within(budget.per_sandbox, descriptors.clone()) else {
                break;
            };
            sandboxes.push(tunnels);
        }
        assert_eq!(
            sandboxes.len() as u64 * SERVE_DESCRIPTORS_PER_SANDBOX,
            budget.vault_descriptors as u64,
            "sandboxes alone fill the vault's descriptors and no more"
        );
        // One more is refused, with what to do; one ending makes room.
        let refused = Tunnels::served_within(budget.per_sandbox, descriptors.clone())
            .err()
            .unwrap();
        assert!(refused.to_string().contains("ulimit -Hn"), "{refused}");
        sandboxes.pop();
        assert!(Tunnels::served_within(budget.per_sandbox, descriptors.clone()).is_ok());
    }

    #[tokio::test]
    async fn a_failed_accept_rests_and_tries_again_instead_of_ending_the_listener() {
        let tunnels = Tunnels::within(4, Arc::new(Semaphore::new(100)));
        let stop = CancellationToken::new();
        // Three accepts fail with `EMFILE`, then connections 1, 2 and 3 arrive.
        let mut calls = 0;
        let accept = || {
            calls += 1;
            let result = if calls <= 3 {
                Err(std::io::Error::from_raw_os_error(libc::EMFILE))
            } else {
                Ok(calls - 3)
            };
            async move { result }
        };
        let served = Arc::new(Mutex::new(Vec::new()));
        let serve = {
            let (served, stop) = (served.clone(), stop.clone());
            move |n: i32, admission: Admission| {
                let mut served = served.lock().unwrap();
                served.push((n, is_open(&admission)));
                if served.len() == 3 {
                    stop.cancel();
                }
            }
        };
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), accept_admitted(&tunnels, accept, serve, &stop))
            .await
            .expect("the loop serves the connections that follow the failures");
        assert_eq!(*served.lock().unwrap(), vec![(1, true), (2, true), (3, true)]);
        assert!(started.elapsed() >= 3 * ACCEPT_BACKOFF, "it rested after each failure");
    }
}
