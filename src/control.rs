//! The services of `lap serve`: one [`Control`] whose methods the API handlers call, in parts —
//! bring-up ([`bringup`]), the one way a session leaves its sandbox ([`Control::end`]), the
//! reconciler and recovery ([`reconcile`]), the warm pool ([`pool`]), workspaces, pause, hibernate,
//! snapshots and forks ([`workspace`]), each session's vault ([`session_vault`]), ports ([`ports`])
//! and the message API ([`messages`]). This file holds the service itself: its start, deletion and
//! restart, and the end path.
//!
//! Handlers in `api` call these; this module never imports `api`. Every change of a session's state
//! goes through [`Store::update_session`], whose conditional updates say whether they applied and
//! make the transitions race-free: a bring-up that finishes after the session was deleted finds it
//! no longer `creating`, and deletes the sandbox it just made instead of resurrecting the session.
//! Every long-lived task has an owner and ends on shutdown. The server's own background work is
//! spawned on [`Services::tasks`]: bring-ups, recovery, the reconciler and the sandbox-event
//! follower, the warm pool, the reaper's steps, and the pulling of a sandbox's egress records with
//! their writer (the last pull runs at shutdown, so no record is lost). What lives as long as a
//! session or its conversation is spawned on [`Services::session_tasks`]: a served vault's listener
//! and its egress log writer, a conversation's tool, deadline watcher, abort timer and writer (a
//! writer stores what is queued before it ends; a tool runs in the sandbox, which outlives `lap
//! serve`). `lap serve` drains both, within its grace, before it exits. Bare `tokio::spawn`s are
//! left for the tasks of one connection or one request — a vault tunnel and its upstream
//! connection, a port connection, an exec's or an event stream's response, a terminal viewer's
//! pumps — which end with their connection (or the process) and hold nothing to store; the vault's
//! hot path takes no lock or tracker for them. Which
//! backend runs the sandboxes is decided in the composition root: code here asks the [`Sandbox`]
//! trait for what it can do, never for its name.

pub mod pool;
// Issue 17 part 1: ports, port connections and preview URLs.
pub mod ports;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::sandbox::{ExecChunk, ExecSpec, Sandbox, SandboxError, VaultPlacement};
use crate::settings::ToolDeadlines;
use crate::store::{SessionRow, SessionUpdate, Store, StoreError};
use crate::vault::intercept::Vault;
use crate::wire::api::{Interception, SessionStatus};

mod bringup;
mod git;
pub mod messages;
mod reconcile;
mod session_vault;
mod tools;
pub mod volumes;
pub mod workspace;

use bringup::Claim;
pub use bringup::{BringUpError, REPO_DIR, sandbox_env};
pub use reconcile::Reconciled;
pub use workspace::{Lifecycle, Refusal, Workspaces};

/// Phases of bring-up, as `GET /sessions/{id}` shows them.
pub mod phase {
    pub const CLAIMING_SANDBOX: &str = "claiming_sandbox";
    pub const CREATING_SANDBOX: &str = "creating_sandbox";
    pub const BINDING_CREDENTIALS: &str = "binding_credentials";
    pub const CLONING_REPO: &str = "cloning_repo";
    pub const STARTING_HARNESS: &str = "starting_harness";
    pub const COPYING_WORKSPACE: &str = "copying_workspace";
}

/// Default of `--idle-ttl` / `LAP_SESSION_IDLE_TTL`: the documented 24 hours.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(24 * 3600);

/// First wait before recovery is tried again when the backend did not answer at start; it doubles up
/// to [`RECOVER_RETRY_CAP`].
const RECOVER_RETRY: Duration = Duration::from_secs(1);
const RECOVER_RETRY_CAP: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("{0}")]
    Conflict(String),
    /// The harness's tool is not installed where sandboxes see it.
    #[error("{message}")]
    ToolMissing { message: String, hint: String },
    /// `lap serve` has not yet recovered the sessions of before its start: the backend does not answer.
    #[error("lap serve has not recovered its sessions yet: {0}")]
    NotRecovered(String),
    /// A request about a workspace, a pause or a snapshot that cannot be done as asked.
    #[error("{message}")]
    Refused {
        kind: Refusal,
        message: String,
        hint: String,
    },
}

/// How [`Control::start`] went.
#[derive(Debug)]
pub enum Started {
    /// Recovered; the reconciler, the backend's events and the warm pool run.
    Now,
    /// The backend did not answer; recovery is retried in the background, and sessions are refused
    /// until it succeeds.
    Deferred(SandboxError),
}

/// How a session leaves its sandbox ([`Control::end`]): each is one conditional store update.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// `dead` for this reason, from any live status: deleted, its agent exited, reaped, lost in a
    /// restart of `lap serve`.
    Dead(String),
    /// `failed` for this reason: its bring-up failed or was interrupted (a `creating` session names
    /// no sandbox; the bring-up discards the one it was making).
    Failed(String),
    /// `dead` for `reason`, only while it is `ready` or `paused` on `sandbox`, which failed or went
    /// away by itself (a session restarted onto a new sandbox meanwhile is left alone).
    SandboxDied { sandbox: String, reason: String },
    /// `hibernated`, from `ready` or `paused`: the sandbox goes, the workspace stays.
    Hibernated,
    /// `creating` again, from `ready`, `dead`, `failed` or `hibernated`, for a fresh sandbox.
    Restarted,
}

impl End {
    fn update(self) -> SessionUpdate {
        match self {
            Self::Dead(reason) => SessionUpdate::Dead { reason },
            Self::Failed(reason) => SessionUpdate::Failed { reason },
            Self::SandboxDied { sandbox, reason } => SessionUpdate::SandboxDied {
                sandbox_id: sandbox,
                reason,
            },
            Self::Hibernated => SessionUpdate::Hibernated,
            Self::Restarted => SessionUpdate::Restarted,
        }
    }
}

/// What the session service is built from, in the composition root.
pub struct Services {
    pub store: Store,
    pub sandbox: Arc<dyn Sandbox>,
    pub vault: Arc<Vault>,
    /// Host path of the CA bundle (system roots plus the vault CA) sandboxes get.
    pub ca_bundle: Option<PathBuf>,
    /// Refuse egress an agent's `allow_out` does not list (`--egress-default deny`).
    pub egress_default_deny: bool,
    /// Sessions idle longer than this are reaped.
    pub idle_ttl: Duration,
    /// The warm pool ([`pool::PoolConfig::off`] for none).
    pub pool: pool::PoolConfig,
    /// What an API harness's tool is held to (`control/messages.rs`).
    pub tool_deadlines: ToolDeadlines,
    /// The server's own background work: bring-ups, recovery, the reconciler, the sandbox-event
    /// follower, the warm pool, the reaper's steps, the pulling of egress records. Waiting on it
    /// waits for work in flight (the API tests, whose plane runs no reconciler, do), never for
    /// sessions to end.
    pub tasks: TaskTracker,
    /// Tasks that live as long as a session or its conversation: a served vault's listener and
    /// its egress log writer, a conversation's tool, deadline watcher, abort timer and writer.
    /// Apart from [`Self::tasks`] so that waiting on that one does not wait for sessions; each
    /// ends on `shutdown` (after storing what it holds), and `lap serve` drains both.
    pub session_tasks: TaskTracker,
    pub shutdown: CancellationToken,
}

impl Services {
    /// The three parts every plane needs, and `lap serve`'s defaults for the rest: no CA bundle,
    /// egress allowed by default, the default idle reap, no warm pool, the default tool deadlines,
    /// fresh task trackers and shutdown token. The composition root and the tests change what
    /// they need with `Services { field, ..Services::new(…) }`.
    pub fn new(store: Store, sandbox: Arc<dyn Sandbox>, vault: Arc<Vault>) -> Self {
        Self {
            store,
            sandbox,
            vault,
            ca_bundle: None,
            egress_default_deny: false,
            idle_ttl: DEFAULT_IDLE_TTL,
            pool: pool::PoolConfig::off(),
            tool_deadlines: ToolDeadlines::DEFAULT,
            tasks: TaskTracker::new(),
            session_tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        }
    }
}

/// The session service.
pub struct Control {
    store: Store,
    sandbox: Arc<dyn Sandbox>,
    vault: Arc<Vault>,
    ca_bundle: Option<PathBuf>,
    egress_default_deny: bool,
    idle_ttl: Duration,
    tasks: TaskTracker,
    /// See [`Services::session_tasks`].
    session_tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Stops the vault of each live session.
    vaults: Mutex<HashMap<Uuid, CancellationToken>>,
    /// The backend's [`Sandbox::vault_placement`], read once.
    placement: VaultPlacement,
    /// For sandboxes that carry their vault: the position of the last record pulled from each, so a
    /// warm sandbox's clone records never reach the session that claims it (the store keeps the
    /// position of the last record kept, for after a restart).
    pulled: Arc<Mutex<HashMap<String, u64>>>,
    metrics: Arc<Metrics>,
    pool: pool::Pool,
    /// Conversations of API harness sessions (`control/messages.rs`).
    messages: messages::Messages,
    /// Why the sessions of before this start are not recovered yet (`None`: they are).
    unrecovered: Mutex<Option<String>>,
    /// Workspaces and the reaper's pause and hibernate steps (`control/workspace.rs`).
    lifecycle: Lifecycle,
    /// This service itself, for work a `&self` method spawns (a wake's bring-up).
    me: std::sync::Weak<Control>,
    /// Open connections to each session's ports (`control/ports.rs`).
    tunnels: Arc<ports::Tunnels>,
}

impl Control {
    pub fn new(services: Services) -> Arc<Self> {
        Self::with_lifecycle(services, Lifecycle::default())
    }

    /// [`Self::new`] with workspaces kept and the reaper's pause and hibernate steps.
    pub fn with_lifecycle(services: Services, lifecycle: Lifecycle) -> Arc<Self> {
        let Services {
            store,
            sandbox,
            vault,
            ca_bundle,
            egress_default_deny,
            idle_ttl,
            pool,
            tool_deadlines,
            tasks,
            session_tasks,
            shutdown,
        } = services;
        let messages = messages::Messages::new(tool_deadlines, session_tasks.clone(), shutdown.clone());
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            store,
            placement: sandbox.vault_placement(),
            pulled: Arc::default(),
            sandbox,
            vault,
            ca_bundle,
            egress_default_deny,
            idle_ttl,
            tasks,
            shutdown,
            vaults: Mutex::new(HashMap::new()),
            metrics: Arc::new(Metrics::default()),
            pool: pool::Pool::new(pool),
            messages,
            session_tasks,
            // The router exists only after `start`, which sets it when recovery has to wait.
            unrecovered: Mutex::new(None),
            lifecycle,
            tunnels: Arc::default(),
        })
    }

    /// Resolves when `lap serve` starts shutting down: what a stream that would never end on its
    /// own (an SSE follower) ends on.
    pub fn stopping(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.shutdown.clone().cancelled_owned()
    }

    /// Recovers the sessions of before this start ([`Self::recover`]), then starts the reconciler
    /// (every `reconcile_every`), the backend's events and the warm pool. A backend that does not
    /// answer (a Kubernetes API that is down) does not stop `lap serve`: recovery is tried again in
    /// the background, with backoff, and until it succeeds sessions are refused
    /// ([`ControlError::NotRecovered`]) — nothing new is made while the old is not accounted for.
    pub async fn start(self: &Arc<Self>, reconcile_every: Duration) -> Result<Started, ControlError> {
        match self.recover().await {
            Ok(()) => {
                self.run_loops(reconcile_every);
                Ok(Started::Now)
            }
            Err(ControlError::Sandbox(err)) => {
                *self.unrecovered.lock().unwrap_or_else(|p| p.into_inner()) = Some(err.to_string());
                let this = self.clone();
                self.tasks.spawn(async move {
                    let mut wait = RECOVER_RETRY;
                    loop {
                        tokio::select! {
                            _ = this.shutdown.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        match this.recover().await {
                            Ok(()) => {
                                tracing::info!("the sandbox backend answers again: sessions recovered");
                                this.run_loops(reconcile_every);
                                return;
                            }
                            Err(err) => {
                                tracing::debug!(error = %err, "recovery failed; trying again");
                                *this.unrecovered.lock().unwrap_or_else(|p| p.into_inner()) = Some(err.to_string());
                            }
                        }
                        wait = (wait * 2).min(RECOVER_RETRY_CAP);
                    }
                });
                Ok(Started::Deferred(err))
            }
            Err(err) => Err(err),
        }
    }

    fn run_loops(self: &Arc<Self>, reconcile_every: Duration) {
        *self.unrecovered.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.spawn_reconciler(reconcile_every);
        self.spawn_sandbox_events();
        self.spawn_pool();
    }

    /// Refuses work that makes sandboxes while the sessions of before this start are not recovered.
    fn check_recovered(&self) -> Result<(), ControlError> {
        match &*self.unrecovered.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(why) => Err(ControlError::NotRecovered(why.clone())),
        }
    }

    pub fn backend(&self) -> &'static str {
        self.sandbox.name()
    }

    /// The vault CA certificate sandboxes trust, PEM. A backend whose sandboxes carry their own
    /// vault (Kubernetes) gives each sandbox a CA of its own, so there is no one CA to give: refused.
    pub fn vault_ca_pem(&self) -> Result<String, ControlError> {
        match self.placement {
            VaultPlacement::Served => Ok(self.vault.ca_pem()),
            VaultPlacement::InSandbox => Err(ControlError::Refused {
                kind: Refusal::Conflict,
                message: format!(
                    "the {} backend has no vault CA that every sandbox trusts: each sandbox's vault signs with a \
                     CA made for that sandbox alone",
                    self.sandbox.name()
                ),
                hint: format!(
                    "a sandbox trusts the system roots and its own CA, in its `{}`; see \
                     docs/operating/kubernetes.md",
                    crate::sandbox::CA_BUNDLE_PATH
                ),
            }),
        }
    }

    /// The metrics in Prometheus text format.
    pub async fn metrics_text(&self) -> Result<String, ControlError> {
        let counts = self.store.session_counts().await?;
        let warm = self.warm_ready().await?;
        Ok(self.metrics.render(&counts, warm))
    }

    /// A session's egress log after position `after`, oldest first (it outlives the session's vault
    /// and restarts of `lap serve`).
    pub async fn interceptions(
        &self,
        session: Uuid,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Interception>, ControlError> {
        Ok(self.store.interceptions(session, after, limit).await?)
    }

    /// The names of the credentials a session's sandbox holds stubs for.
    pub async fn vault_keys(&self, session: Uuid) -> Result<Vec<String>, ControlError> {
        Ok(self
            .store
            .session_stubs(session)
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// Stops a session's sandbox and marks it `dead`, then deletes its workspace. Returns the row
    /// before the call, or `None` when there is no such session.
    pub async fn delete_session(&self, id: Uuid) -> Result<Option<SessionRow>, ControlError> {
        let before = self.end_session(id, "deleted".to_owned()).await?;
        // Deleted with the session: its workspace goes too.
        if before.is_some() {
            self.remove_workspace(id).await;
        }
        Ok(before)
    }

    /// Makes a live session `dead` with `reason` (e.g. its agent exited) and deletes its sandbox
    /// ([`Self::end`]); returns the row as it was before, or `None` when there is no such session.
    pub async fn end_session(&self, id: Uuid, reason: String) -> Result<Option<SessionRow>, ControlError> {
        let before = self.store.get_session(id).await?;
        if before.as_ref().is_some_and(|row| !row.status.is_terminal()) {
            self.end(id, End::Dead(reason)).await?;
        }
        Ok(before)
    }

    /// The one way a session leaves its sandbox, always in this order:
    ///
    /// 1. the store's conditional update ([`End`]). The state is the truth, so whoever looks next —
    ///    the agent watcher, the reconciler, the backend's events, a bring-up about to write
    ///    `ready` — finds the session off this sandbox, and the sandbox's end is no news to them;
    /// 2. the session's vault stops;
    /// 3. the sandbox the session named just before the update is deleted.
    ///
    /// When the update does not apply (no such session, already ended, changed meanwhile) nothing
    /// else is done: whoever changed it did the rest. Returns the row after the update when it
    /// applied. The workspace stays (a restart or a resume mounts it again); deleting it with the
    /// session is the caller's.
    async fn end(&self, id: Uuid, end: End) -> Result<Option<SessionRow>, ControlError> {
        let Some(updated) = self.store.update_session(id, end.update()).await? else {
            return Ok(None);
        };
        if !updated.applied {
            return Ok(None);
        }
        self.detach_vault(id);
        if let Some(sandbox) = &updated.sandbox_before {
            self.delete_sandbox(sandbox).await;
        }
        Ok(Some(updated.row))
    }

    /// Gives a `ready`, `dead`, `failed` or `hibernated` session a fresh sandbox: the old one (if
    /// any) is deleted ([`End::Restarted`]) and bring-up runs again. Returns the session as it is
    /// now (`creating`), or `None` if it does not exist.
    pub async fn restart_session(self: &Arc<Self>, id: Uuid) -> Result<Option<SessionRow>, ControlError> {
        let Some(row) = self.store.get_session(id).await? else {
            return Ok(None);
        };
        if row.status == SessionStatus::Creating {
            return Err(ControlError::Conflict(format!(
                "session {id} is creating; wait for it to settle before restarting"
            )));
        }
        let agent = self.store.find_agent(&row.agent_id.to_string()).await?;
        let Some(agent) = agent else {
            return Err(ControlError::Conflict(format!("the agent of session {id} is gone")));
        };
        self.check_recovered()?;
        self.sandbox.check().await?;
        let Some(restarted) = self.end(id, End::Restarted).await? else {
            return Err(ControlError::Conflict(format!(
                "session {id} changed while restarting; try again"
            )));
        };
        let started = std::time::Instant::now();
        self.tasks
            .spawn(self.clone().bring_up(id, agent, Claim::Untried, started));
        Ok(Some(restarted))
    }

    /// Stops every live session of an agent, then deletes the agent with its sessions and credentials.
    pub async fn delete_agent(&self, agent_id: Uuid) -> Result<bool, ControlError> {
        let live = self
            .store
            .list_sessions(Some(agent_id), u32::MAX, crate::store::Scope::All)
            .await?;
        for row in live.iter().filter(|row| !row.status.is_terminal()) {
            self.delete_session(row.id).await?;
        }
        let deleted = self.store.delete_agent(agent_id).await?;
        self.prune_volumes(agent_id, &[]).await?;
        Ok(deleted)
    }

    /// Runs a command in a session's sandbox, sending its output to `output`; returns its exit code.
    pub async fn exec(
        &self,
        sandbox_id: &str,
        spec: ExecSpec,
        output: tokio::sync::mpsc::Sender<ExecChunk>,
    ) -> Result<i32, ControlError> {
        Ok(self.sandbox.exec(sandbox_id, spec, output).await?)
    }

    /// A connection to a session's sandbox for one file operation (issue 17).
    pub async fn files_connection(&self, sandbox_id: &str) -> Result<crate::sandbox::files::Conn, ControlError> {
        Ok(self.sandbox.files_connection(sandbox_id).await?)
    }

    /// Attaches a viewer to the agent's terminal in a session's sandbox.
    pub async fn attach(
        &self,
        sandbox_id: &str,
        cols: u16,
        rows: u16,
    ) -> Result<crate::sandbox::TtyChannel, ControlError> {
        Ok(self.sandbox.attach(sandbox_id, cols, rows).await?)
    }

    async fn delete_sandbox(&self, id: &str) {
        if self.placement == VaultPlacement::InSandbox {
            self.pulled.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
            if let Err(err) = self.store.forget_pulled(id.to_owned()).await {
                tracing::warn!(sandbox = id, error = %err, "cannot forget a deleted sandbox's record position");
            }
        }
        if let Err(err) = self.sandbox.delete(id).await {
            tracing::warn!(sandbox = id, error = %err, "cannot delete sandbox");
        }
    }
}

/// How long ago `last_seen_at` (as stored) was, at `now`.
fn idle_for(last_seen_at: &str, now: time::OffsetDateTime) -> Option<Duration> {
    let seen = time::OffsetDateTime::parse(last_seen_at, &time::format_description::well_known::Rfc3339).ok()?;
    Some(Duration::try_from(now - seen).unwrap_or_default())
}
