//! The services of `lap serve`: one [`Control`] whose methods the API handlers call, in parts —
//! bring-up ([`bringup`]), the one way a session leaves its sandbox ([`Control::end`]), the
//! reconciler and recovery ([`reconcile`]), the warm pool ([`pool`]), workspaces, pause, hibernate,
//! snapshots and forks ([`workspace`]), ports ([`ports`]) and the message API ([`messages`]). This
//! file holds the service itself, its start, deletion and restart, and the attachment of each
//! sandbox's vault.
//!
//! Handlers in `api` call these; this module never imports `api`. Every change of a session's state
//! goes through [`Store::update_session`], whose conditional updates say whether they applied and
//! make the transitions race-free: a bring-up that finishes after the session was deleted finds it
//! no longer `creating`, and deletes the sandbox it just made instead of resurrecting the session.
//! Bring-ups are spawned on the server's [`TaskTracker`] so shutdown can wait for them. Which
//! backend runs the sandboxes is decided in the composition root: code here asks the [`Sandbox`]
//! trait for what it can do, never for its name.

pub mod pool;
// Issue 17 part 1: ports, port connections and preview URLs.
pub mod ports;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::sandbox::{
    BoundCredential, ExecChunk, ExecSpec, ProxyListener, Sandbox, SandboxError, VaultBinding, VaultPlacement,
};
use crate::store::{NewCredential, SessionRow, SessionUpdate, Store, StoreError};
use crate::vault::audit::AuditLog;
use crate::vault::intercept::{Binding, Vault};
use crate::wire::api::{Agent, Interception, SessionStatus};

mod bringup;
mod git;
pub mod messages;
mod reconcile;
mod tools;
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

/// Vault records waiting for the store, per session, before new ones are kept in memory only.
const AUDIT_QUEUE: usize = 10_000;
/// Most vault records written in one transaction.
const AUDIT_BATCH: usize = 256;

/// First wait before recovery is tried again when the backend did not answer at start; it doubles up
/// to [`RECOVER_RETRY_CAP`].
const RECOVER_RETRY: Duration = Duration::from_secs(1);
const RECOVER_RETRY_CAP: Duration = Duration::from_secs(30);

/// How often the records of a vault that runs in its sandbox are pulled.
const RECORD_PULL: Duration = Duration::from_secs(1);

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
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
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
            tasks,
            shutdown,
        } = services;
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
            messages: messages::Messages::default(),
            // The router exists only after `start`, which sets it when recovery has to wait.
            unrecovered: Mutex::new(None),
            lifecycle,
            tunnels: Arc::default(),
        })
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
                tokio::spawn(async move {
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

    /// The vault CA certificate sandboxes trust, PEM.
    pub fn vault_ca_pem(&self) -> String {
        self.vault.ca_pem()
    }

    /// Starts serving a sandbox's egress listener with the session's binding, until
    /// [`Self::detach_vault`] with the same `key`. The vault's records are kept as `audit`'s egress
    /// log (`None`: a warm sandbox's clone, which belongs to no session, is counted only). For a
    /// backend whose sandboxes carry their own vault ([`VaultPlacement::InSandbox`]) the binding goes
    /// to that vault instead and its records are pulled every [`RECORD_PULL`] until detached.
    async fn attach_vault(
        &self,
        key: Uuid,
        audit: Option<Uuid>,
        sandbox_id: &str,
        agent: &Agent,
        credentials: Vec<NewCredential>,
        stubs: &[(String, String)],
    ) -> Result<(), SandboxError> {
        let binding = vault_binding(agent, credentials, stubs, self.egress_default_deny);
        if self.placement == VaultPlacement::InSandbox {
            return self.bind_in_sandbox(key, audit, sandbox_id, binding).await;
        }
        let listener = self.sandbox.proxy_listener(sandbox_id).await?;
        let (sink, records) = tokio::sync::mpsc::channel(AUDIT_QUEUE);
        let mut binding = crate::vault::proxy_binding(binding, AuditLog::with_sink(sink));
        // The sandbox's own descriptors in `lap serve` count in the vault's budget.
        binding.tunnels =
            crate::vault::limits::Tunnels::for_served_sandbox().map_err(|e| SandboxError::Unavailable {
                backend: self.sandbox.name(),
                reason: e.to_string(),
            })?;
        let binding = Arc::new(binding);
        tokio::spawn(keep_audit(
            self.store.clone(),
            self.metrics.clone(),
            audit,
            None,
            records,
        ));
        let stop = self.vault_stop(key);
        // Not on `tasks`: it lives as long as the session and ends on `stop` (a child of shutdown).
        tokio::spawn(serve_egress(self.vault.clone(), listener, binding, stop));
        Ok(())
    }

    /// A fresh stop token for the vault task of `key` (a child of shutdown); the task it replaces,
    /// if any, is stopped.
    fn vault_stop(&self, key: Uuid) -> CancellationToken {
        let stop = self.shutdown.child_token();
        let previous = self
            .vaults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, stop.clone());
        if let Some(previous) = previous {
            previous.cancel();
        }
        stop
    }

    /// [`Self::attach_vault`] for a sandbox that carries its vault: the binding through
    /// [`Sandbox::bind_vault`], then a task pulling its records into `audit`'s egress log.
    async fn bind_in_sandbox(
        &self,
        key: Uuid,
        audit: Option<Uuid>,
        sandbox_id: &str,
        binding: VaultBinding,
    ) -> Result<(), SandboxError> {
        self.sandbox.bind_vault(sandbox_id, &binding).await?;
        let (sink, records) = tokio::sync::mpsc::channel(AUDIT_QUEUE);
        tokio::spawn(keep_audit(
            self.store.clone(),
            self.metrics.clone(),
            audit,
            Some(sandbox_id.to_owned()),
            records,
        ));
        let stop = self.vault_stop(key);
        // Like `serve_egress`: it lives as long as the session and ends on `stop`.
        tokio::spawn(pull_records(
            self.sandbox.clone(),
            self.store.clone(),
            sandbox_id.to_owned(),
            self.pulled.clone(),
            sink,
            stop,
        ));
        Ok(())
    }

    fn detach_vault(&self, session: Uuid) {
        if let Some(stop) = self.vaults.lock().unwrap_or_else(|p| p.into_inner()).remove(&session) {
            stop.cancel();
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
        let live = self.store.list_sessions(Some(agent_id), u32::MAX).await?;
        for row in live.iter().filter(|row| !row.status.is_terminal()) {
            self.delete_session(row.id).await?;
        }
        Ok(self.store.delete_agent(agent_id).await?)
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

/// Writes a session's vault records to the store, in batches, until its vault is gone (`session`
/// `None`: a warm sandbox's clone, counted only). Records pulled from the vault a sandbox carries
/// (`pulled_from`) are kept with their last position ([`Store::keep_pulled`]), so a restarted
/// `lap serve` pulls on after it and keeps no record twice; a warm sandbox's only move the position.
async fn keep_audit(
    store: Store,
    metrics: Arc<Metrics>,
    session: Option<Uuid>,
    pulled_from: Option<String>,
    mut records: tokio::sync::mpsc::Receiver<Interception>,
) {
    let mut batch = Vec::new();
    while records.recv_many(&mut batch, AUDIT_BATCH).await > 0 {
        batch.iter().for_each(|record| metrics.interception(record));
        let batch = std::mem::take(&mut batch);
        let kept = match (&pulled_from, session) {
            (Some(sandbox), _) => {
                let position = batch.iter().map(|r| r.id).max().unwrap_or(0);
                store.keep_pulled(session, sandbox.clone(), position, batch).await
            }
            (None, Some(session)) => store.insert_interceptions(session, batch).await,
            (None, None) => Ok(()),
        };
        if let Err(err) = kept {
            tracing::warn!(?session, error = %err, "cannot keep vault records");
        }
    }
}

/// Pulls the records of the vault sandbox `id` carries into `sink`, every [`RECORD_PULL`] and once
/// more on `stop`, after the last position `pulled` remembers for it (at first, the position the
/// store kept, which survives restarts of `lap serve`). A pull that fails (the sandbox going away,
/// the API server busy) is tried again at the next tick.
async fn pull_records(
    sandbox: Arc<dyn Sandbox>,
    store: Store,
    id: String,
    pulled: Arc<Mutex<HashMap<String, u64>>>,
    sink: tokio::sync::mpsc::Sender<Interception>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(RECORD_PULL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let remembered = pulled.lock().unwrap_or_else(|p| p.into_inner()).get(&id).copied();
        let after = match remembered {
            Some(after) => after,
            None => match store.pulled_position(id.clone()).await {
                Ok(after) => {
                    pulled
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(id.clone())
                        .or_insert(after);
                    after
                }
                Err(err) => {
                    tracing::warn!(sandbox = %id, error = %err, "cannot read where the vault's records were pulled to");
                    if last {
                        return;
                    }
                    continue;
                }
            },
        };
        match sandbox.vault_records(&id, after).await {
            Ok(records) => {
                for record in records {
                    if record.id > after {
                        pulled
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(id.clone(), record.id);
                    }
                    if sink.send(record).await.is_err() {
                        return;
                    }
                }
            }
            Err(err) => tracing::debug!(sandbox = %id, error = %err, "cannot pull the vault's records"),
        }
        if last {
            return;
        }
    }
}

/// Accepts a sandbox's egress connections and hands each to the vault, until `stop`. A connection
/// is accepted only once the vault has a place for it, or for its refusal
/// ([`crate::vault::limits::Tunnels::admit`]): a sandbox at its limit cannot make `lap serve` hold
/// more descriptors, what it opens beyond waits in the listener's backlog; a failed accept rests
/// and tries again ([`crate::vault::limits::accept_admitted`]).
async fn serve_egress(vault: Arc<Vault>, listener: ProxyListener, binding: Arc<Binding>, stop: CancellationToken) {
    let serve = |stream, admission| {
        tokio::spawn(vault.clone().serve_admitted(stream, binding.clone(), admission));
    };
    crate::vault::limits::accept_admitted(&binding.tunnels, || listener.accept(), serve, &stop).await;
}

/// The one binding a session's vault is handed, in-process or in the sandbox: each stored credential
/// that has a stub in `stubs`, with its value, hosts, injection points and rules, and the agent's
/// egress policy.
fn vault_binding(
    agent: &Agent,
    credentials: Vec<NewCredential>,
    stubs: &[(String, String)],
    egress_default_deny: bool,
) -> VaultBinding {
    let stub_of: BTreeMap<&str, &str> = stubs.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();
    VaultBinding {
        credentials: credentials
            .into_iter()
            .filter_map(|c| {
                Some(BoundCredential {
                    stub: (*stub_of.get(c.name.as_str())?).to_owned(),
                    value: c.value,
                    name: c.name,
                    hosts: c.hosts,
                    inject: c.inject,
                    rules: c.rules,
                })
            })
            .collect(),
        allow_out: agent.allow_out.clone(),
        deny_out: agent.deny_out.clone(),
        egress_default_deny,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::wire::vault::{Injection, RequestRule};

    #[test]
    fn the_vault_binding_carries_each_stubbed_credentials_points_rules_and_the_policy() {
        let agent: Agent = serde_json::from_value(serde_json::json!({
            "id": Uuid::nil(), "name": "a", "harness_id": "shell", "supports_tui": true, "command": null,
            "repo_url": null, "branch": "main", "prompt": null, "model": null, "env": {}, "credentials": [],
            "env_var_hosts": {}, "allow_out": ["pypi.org"], "deny_out": ["evil.test"],
            "created_at": "t", "updated_at": "t"
        }))
        .unwrap();
        let rules: Vec<RequestRule> = vec!["GET /repos/**".parse().unwrap()];
        let credential = |name: &str, inject: Vec<Injection>| NewCredential {
            name: name.into(),
            hosts: vec!["api.github.com".into()],
            value: Secret::new(format!("real-{name}")),
            inject,
            rules: rules.clone(),
        };
        let stubs = vec![("GITHUB_TOKEN".to_owned(), "stub_gh".to_owned())];
        let binding = vault_binding(
            &agent,
            vec![
                credential("GITHUB_TOKEN", vec![Injection::Header("x-token".into())]),
                credential("UNSTUBBED", vec![Injection::Authorization]),
            ],
            &stubs,
            true,
        );
        assert_eq!(binding.credentials.len(), 1, "a credential without a stub is not bound");
        let bound = &binding.credentials[0];
        assert_eq!((bound.name.as_str(), bound.stub.as_str()), ("GITHUB_TOKEN", "stub_gh"));
        assert_eq!(bound.value.expose(), "real-GITHUB_TOKEN");
        assert_eq!(bound.inject, vec![Injection::Header("x-token".into())]);
        assert_eq!(bound.rules, rules);
        assert_eq!(binding.allow_out, ["pypi.org"]);
        assert_eq!(binding.deny_out, ["evil.test"]);
        assert!(binding.egress_default_deny);
        // What the sidecar reads back is the same.
        let read: VaultBinding = serde_json::from_slice(&serde_json::to_vec(&binding).unwrap()).unwrap();
        assert_eq!(read.credentials[0].inject, bound.inject);
        assert_eq!(read.credentials[0].rules, bound.rules);
    }
}
