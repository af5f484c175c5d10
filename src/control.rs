//! The services of `lap serve`: session bring-up, deletion, restart, the reconciler (idle reaping,
//! sandboxes that died) and recovery after a restart of `lap serve`.
//!
//! Handlers in `api` call these; this module never imports `api`. Every change of a session's state
//! goes through [`Store::update_session`], whose conditional updates make the transitions race-free:
//! a bring-up that finishes after the session was deleted finds it no longer `creating`, and deletes
//! the sandbox it just made instead of resurrecting the session. Background work is spawned on the
//! server's [`TaskTracker`] so shutdown can wait for it. The warm pool lives in [`pool`]; workspaces
//! that outlive their sandbox, pause, hibernate, snapshots, forks and the reaper's policy steps in
//! [`workspace`].

pub mod pool;
// Issue 17 part 1: ports, port connections and preview URLs.
pub mod ports;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::harness::first_run::{self, FirstRun};
use crate::metrics::Metrics;
use crate::sandbox::{
    AGENT_HOME, AgentStart, BoundCredential, CA_BUNDLE_PATH, ExecChunk, ExecSpec, HomeFile, PROXY_ADDR, ProxyListener,
    Sandbox, SandboxChange, SandboxError, SandboxEvent, SandboxSpec, VaultBinding, VaultPlacement,
};
use crate::store::warm::{WarmRow, WarmStatus};
use crate::store::{NewCredential, SessionRow, SessionUpdate, Store, StoreError};
use crate::vault::audit::AuditLog;
use crate::vault::intercept::{Binding, Vault};
use crate::wire::api::{Agent, Interception, SessionStatus};

mod git;
pub mod messages;
mod tools;
pub mod workspace;

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

/// How a bring-up gets its sandbox.
enum Claim {
    /// Ask the warm pool first (when it is on).
    Untried,
    /// The warm pool was asked already: this sandbox, or none.
    Tried(Option<Box<WarmRow>>),
}

/// Where the agent's repository is cloned, inside the sandbox.
pub const REPO_DIR: &str = "/work/repo";
/// A git credential helper reading the token from the sandbox's environment — a stub, which the
/// vault swaps for the real value on the way to the bound host.
const GIT_CREDENTIAL_HELPER: &str = "credential.helper=!f() { token=${GITHUB_TOKEN:-${GH_TOKEN:-$GIT_TOKEN}}; \
    test -n \"$token\" || exit 0; echo username=x-access-token; echo \"password=$token\"; }; f";
/// How much of git's stderr a failed clone keeps for the failure reason.
const CLONE_ERROR_BYTES: usize = 2048;

/// Default of `--idle-ttl` / `LAP_SESSION_IDLE_TTL`: the documented 24 hours.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Vault records waiting for the store, per session, before new ones are kept in memory only.
const AUDIT_QUEUE: usize = 10_000;
/// Most vault records written in one transaction.
const AUDIT_BATCH: usize = 256;

/// The command a TUI agent runs under its sandbox's PTY: its own `command`, else its harness's.
fn agent_command(agent: &Agent) -> Option<String> {
    let harness = crate::harness::find(&agent.harness_id).filter(|h| h.supports_tui())?;
    Some(harness.tui_command(agent.command.as_deref(), agent.model.as_deref()))
}

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

/// What one reconciler pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Sessions idle longer than the TTL, whose sandboxes were deleted.
    pub reaped: usize,
    /// Ready sessions whose sandbox had stopped by itself.
    pub died: usize,
    /// Idle sessions paused (`--pause-after`).
    pub paused: usize,
    /// Idle sessions hibernated (`--hibernate-after`).
    pub hibernated: usize,
    /// Workspaces deleted because nobody will resume them.
    pub workspaces_removed: usize,
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

    /// Records a new `creating` session and starts its bring-up in the background. Fails at once,
    /// writing nothing, when the backend cannot create sandboxes. A session that claims a warm
    /// sandbox needing no clone is brought up before this returns, so it comes back `ready`.
    pub async fn create_session(
        self: &Arc<Self>,
        agent: &Agent,
        title: Option<String>,
    ) -> Result<SessionRow, ControlError> {
        let started = std::time::Instant::now();
        self.check_recovered()?;
        self.sandbox.check().await?;
        let first = if self.pool.enabled() {
            phase::CLAIMING_SANDBOX
        } else {
            phase::CREATING_SANDBOX
        };
        self.check_tool(agent)?;
        let row = self.new_row(agent, title, first);
        self.store.insert_session(row.clone()).await?;
        let (id, agent) = (row.id, agent.clone());
        // A store that cannot claim falls back to creating a sandbox; the session is not stranded.
        let claimed = self.claim_warm(id, &agent).await.unwrap_or_else(|err| {
            tracing::warn!(session = %id, error = %err, "cannot claim a warm sandbox");
            None
        });
        let quick = claimed
            .as_ref()
            .is_some_and(|warm| agent.repo_url.is_none() || warm.agent_id.is_some());
        let bring_up = self
            .clone()
            .bring_up(id, agent, Claim::Tried(claimed.map(Box::new)), started);
        if quick {
            bring_up.await;
        } else {
            self.tasks.spawn(bring_up);
        }
        Ok(self.store.get_session(row.id).await?.unwrap_or(row))
    }

    /// A new `creating` session row of `agent` in phase `phase`.
    fn new_row(&self, agent: &Agent, title: Option<String>, phase: &str) -> SessionRow {
        SessionRow {
            id: Uuid::new_v4(),
            agent_id: agent.id,
            agent_name: agent.name.clone(),
            harness_id: agent.harness_id.clone(),
            status: SessionStatus::Creating,
            phase: Some(phase.to_owned()),
            phase_detail: None,
            sandbox_id: None,
            sandbox_url: None,
            tty_token: new_token(),
            harness_session_id: None,
            failure_reason: None,
            title,
            created_at: self.store.timestamp(),
            last_seen_at: String::new(),
            stopped_at: None,
        }
    }

    async fn bring_up(self: Arc<Self>, id: Uuid, agent: Agent, claim: Claim, started: std::time::Instant) {
        match self.try_bring_up(id, &agent, claim, started).await {
            Ok(()) => {
                self.metrics.bring_up(started.elapsed());
                if let Ok(Some(row)) = self.store.get_session(id).await
                    && row.status == SessionStatus::Ready
                    && let Some(sandbox) = row.sandbox_id
                {
                    self.watch_agent(id, sandbox);
                }
            }
            Err(reason) => {
                let update = SessionUpdate::Failed { reason };
                if let Err(err) = self.store.update_session(id, update).await {
                    tracing::error!(session = %id, error = %err, "cannot record a failed bring-up");
                }
            }
        }
    }

    /// Ends the session when its agent exits, whether a viewer is attached or not.
    fn watch_agent(self: &Arc<Self>, id: Uuid, sandbox: String) {
        let this = self.clone();
        self.tasks.spawn(async move {
            let code = tokio::select! {
                _ = this.shutdown.cancelled() => return,
                code = this.sandbox.wait_agent(&sandbox) => code,
            };
            // A sandbox that went for a hibernation (or a restart) is not an agent that exited.
            let still_there = matches!(
                this.store.get_session(id).await,
                Ok(Some(row)) if row.sandbox_id.as_deref() == Some(sandbox.as_str())
            );
            match code {
                Ok(_) if !still_there => {}
                Ok(code) => {
                    let reason = format!("the agent exited with code {code}");
                    if let Err(err) = this.end_session(id, reason).await {
                        tracing::warn!(session = %id, error = %err, "cannot end the session of an exited agent");
                    }
                }
                // No agent to watch (an API harness, a backend without terminals) or the sandbox
                // went away: nothing to do.
                Err(err) => tracing::debug!(session = %id, error = %err, "not watching the agent"),
            }
        });
    }

    /// Stubs, sandbox (warm or new), vault, repo, agent, `ready`. Returns the failure reason a person
    /// can act on.
    async fn try_bring_up(
        &self,
        id: Uuid,
        agent: &Agent,
        claim: Claim,
        started: std::time::Instant,
    ) -> Result<(), String> {
        let store_failed = |err: StoreError| format!("the store failed: {err}");
        let phase = |name: &str| self.store.update_session(id, SessionUpdate::Phase(name.to_owned()));
        let credentials = self.store.agent_credentials(agent.id).await.map_err(store_failed)?;
        let stubs: Vec<(String, String)> = credentials
            .iter()
            .map(|c| (c.name.clone(), crate::vault::new_stub(&c.name)))
            .collect();
        self.store
            .set_session_stubs(id, stubs.clone())
            .await
            .map_err(store_failed)?;
        let bound: Vec<(String, Vec<String>)> = credentials.iter().map(|c| (c.name.clone(), c.hosts.clone())).collect();
        let env = sandbox_env(&agent.env, &stubs, &bound);
        // A workspace that exists already (a restart, a resume from hibernation, a fork) is mounted
        // into a new sandbox; a warm sandbox has a `/work` of its own, which becomes the workspace.
        let workspace = self.workspace_of(id);
        let resumed = workspace.as_ref().is_some_and(|w| w.exists());
        let native = match resumed {
            true => self
                .store
                .get_session(id)
                .await
                .map_err(store_failed)?
                .and_then(|row| row.harness_session_id),
            false => None,
        };
        let claimed = match claim {
            Claim::Tried(claimed) => claimed.map(|row| *row),
            Claim::Untried if resumed => None,
            Claim::Untried => {
                if self.pool.enabled() {
                    phase(phase::CLAIMING_SANDBOX).await.map_err(store_failed)?;
                }
                self.claim_warm(id, agent).await.map_err(store_failed)?
            }
        };
        let (sandbox_id, sandbox_url, cloned, warm) = match &claimed {
            Some(WarmRow {
                sandbox_id: Some(sandbox_id),
                sandbox_url,
                agent_id,
                ..
            }) => (
                sandbox_id.clone(),
                sandbox_url.clone().unwrap_or_default(),
                agent_id.is_some(),
                true,
            ),
            _ => {
                if self.pool.enabled() {
                    phase(phase::CREATING_SANDBOX).await.map_err(store_failed)?;
                }
                let spec = SandboxSpec {
                    harness_id: agent.harness_id.clone(),
                    session_id: Some(id.to_string()),
                    env: env.clone(),
                    ca_bundle: self.ca_bundle.clone(),
                    command: None,
                    limits: (&agent.limits).into(),
                    workspace: workspace.clone(),
                };
                let info = self.sandbox.create(&spec).await.map_err(|e| e.to_string())?;
                (info.id, info.url, false, false)
            }
        };
        let bound = async {
            if warm && let Some(workspace) = &workspace {
                self.sandbox
                    .keep_workspace(&sandbox_id, workspace)
                    .await
                    .map_err(|e| format!("cannot keep the sandbox's workspace: {e}"))?;
            }
            let cloned = cloned || (resumed && workspace.as_ref().is_some_and(|w| w.join("repo").exists()));
            phase(phase::BINDING_CREDENTIALS).await.map_err(store_failed)?;
            self.attach_vault(id, Some(id), &sandbox_id, agent, credentials, &stubs)
                .await
                .map_err(|e| format!("cannot start the vault for this sandbox: {e}"))?;
            if let Some(url) = &agent.repo_url
                && !cloned
            {
                phase(phase::CLONING_REPO).await.map_err(store_failed)?;
                self.clone_repo(&sandbox_id, url, &agent.branch, env.clone()).await?;
            }
            phase(phase::STARTING_HARNESS).await.map_err(store_failed)?;
            self.start_agent(&sandbox_id, agent, env.clone()).await?;
            let ready = SessionUpdate::Ready {
                sandbox_id: sandbox_id.clone(),
                sandbox_url: sandbox_url.clone(),
                // The tool's transcripts are in the workspace: its conversation resumes.
                harness_session_id: native.clone(),
            };
            self.store.update_session(id, ready).await.map_err(store_failed)
        };
        match bound.await {
            Ok(Some(updated)) if updated.applied => {
                if let Some(warm) = &claimed {
                    self.claimed_in(id, agent, warm, started.elapsed());
                }
                Ok(())
            }
            // Deleted (or failed) while the sandbox was being made: do not leak it.
            Ok(_) => {
                self.detach_vault(id);
                self.delete_sandbox(&sandbox_id).await;
                Ok(())
            }
            Err(reason) => {
                self.detach_vault(id);
                self.delete_sandbox(&sandbox_id).await;
                Err(reason)
            }
        }
    }

    /// Starts the agent of a session in its sandbox (late binding): the session's environment, the
    /// agent's command (none for an API harness: the environment only) in `/work/repo` when the
    /// agent has a repository. The one place the control plane starts an agent.
    async fn start_agent(&self, sandbox: &str, agent: &Agent, env: Vec<(String, String)>) -> Result<(), String> {
        let harness = crate::harness::find(&agent.harness_id);
        // The tool's own needs first, so the agent's `env` can override them.
        let env: Vec<(String, String)> = harness
            .into_iter()
            .flat_map(|h| h.env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
            .chain(env)
            .collect();
        let cwd = agent.repo_url.as_ref().map(|_| REPO_DIR.to_owned());
        let first_run = harness.map_or(FirstRun::None, |h| h.first_run);
        let home_files = first_run::files(
            first_run,
            &env,
            cwd.as_deref().unwrap_or(AGENT_HOME),
            AGENT_HOME,
            agent.model.as_deref(),
        )
        .into_iter()
        .map(|f| HomeFile {
            path: f.path.to_owned(),
            contents: f.contents,
        })
        .collect();
        let start = AgentStart {
            env,
            command: agent_command(agent),
            cwd,
            home_files,
        };
        self.sandbox
            .start_agent(sandbox, start)
            .await
            .map_err(|e| format!("cannot start the agent in its sandbox: {e}"))
    }

    /// Clones `url` (`branch`, depth 1) into [`REPO_DIR`] inside the sandbox, as its user, through its
    /// vault, with `env` over the sandbox's environment. A failure is git's own message.
    async fn clone_repo(
        &self,
        sandbox: &str,
        url: &str,
        branch: &str,
        env: Vec<(String, String)>,
    ) -> Result<(), String> {
        let argv = [
            "git",
            "-c",
            GIT_CREDENTIAL_HELPER,
            "clone",
            "--quiet",
            "--depth",
            "1",
            "--branch",
            branch,
            "--",
            url,
            REPO_DIR,
        ];
        let spec = ExecSpec {
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            cwd: None,
            stdin: Vec::new(),
            env,
        };
        let (output, mut chunks) = tokio::sync::mpsc::channel(64);
        let collect = async {
            let mut stderr = Vec::new();
            while let Some(chunk) = chunks.recv().await {
                if let ExecChunk::Stderr(data) = chunk {
                    stderr.extend_from_slice(&data);
                    let excess = stderr.len().saturating_sub(CLONE_ERROR_BYTES);
                    stderr.drain(..excess);
                }
            }
            stderr
        };
        let (code, stderr) = tokio::join!(self.sandbox.exec(sandbox, spec, output), collect);
        match code {
            Ok(0) => Ok(()),
            Ok(code) => {
                let message = String::from_utf8_lossy(&stderr).trim().replace('\n', "; ");
                Err(format!(
                    "git clone of `{url}` (branch `{branch}`) failed with exit code {code}: {message}"
                ))
            }
            Err(err) => Err(format!("cannot run git clone in the sandbox: {err}")),
        }
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

    /// Stops a session's sandbox and marks it `dead`. Returns the row before the call, or `None`
    /// when there is no such session.
    pub async fn delete_session(&self, id: Uuid) -> Result<Option<SessionRow>, ControlError> {
        let before = self.end_session(id, "deleted".to_owned()).await?;
        // Deleted with the session: its workspace goes too.
        if before.is_some() {
            self.remove_workspace(id).await;
        }
        Ok(before)
    }

    /// Makes a live session `dead` with `reason` (e.g. its agent exited) and deletes its sandbox;
    /// returns the row as it was before.
    pub async fn end_session(&self, id: Uuid, reason: String) -> Result<Option<SessionRow>, ControlError> {
        let Some(row) = self.store.get_session(id).await? else {
            return Ok(None);
        };
        if row.status.is_terminal() {
            return Ok(Some(row));
        }
        let after = self.store.update_session(id, SessionUpdate::Dead { reason }).await?;
        // The row after the update, not `row`: a bring-up that recorded its sandbox since `row` was
        // read is seen here, and one that finishes later finds the session dead and deletes its own.
        self.detach_vault(id);
        if let Some(sandbox) = after.as_ref().and_then(|after| after.row.sandbox_id.as_deref()) {
            self.delete_sandbox(sandbox).await;
        }
        Ok(Some(row))
    }

    /// Gives a `ready`, `dead` or `failed` session a fresh sandbox: the old one (if any) is deleted and
    /// bring-up runs again. Returns the session as it is now (`creating`), or `None` if it does not
    /// exist.
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
        self.detach_vault(id);
        if let Some(sandbox) = &row.sandbox_id {
            self.delete_sandbox(sandbox).await;
        }
        let Some(restarted) = self.store.restart_session(id).await? else {
            return Err(ControlError::Conflict(format!(
                "session {id} changed while restarting; try again"
            )));
        };
        let started = std::time::Instant::now();
        self.tasks
            .spawn(self.clone().bring_up(id, agent, Claim::Untried, started));
        Ok(Some(restarted))
    }

    /// One pass of the reconciler: reaps sessions idle longer than the TTL, marks `dead` the ready
    /// sessions whose sandbox stopped by itself, and deletes sandboxes made for a session that is no
    /// longer live (a launch that finished after `lap serve` was killed and restarted). Idempotent.
    pub async fn reconcile(&self) -> Result<Reconciled, ControlError> {
        // Sessions first, then sandboxes: a session that became ready before the query had its
        // sandbox created before the listing, so it cannot be mistaken for one whose sandbox died.
        let ready = self
            .store
            .sessions_with_status(&[SessionStatus::Ready, SessionStatus::Paused])
            .await?;
        // Held over the listing and the reads after it: no warm sandbox is being made meanwhile, so
        // every one listed is named by its row. `None`: the pool is making one; sweep next time.
        let sweep = self.pool.sweep();
        let sandboxes = self.sandbox.list().await?;
        // Live sessions after the listing: a session inserted meanwhile already owns its sandbox.
        let live = self
            .store
            .sessions_with_status(&[SessionStatus::Creating, SessionStatus::Ready, SessionStatus::Paused])
            .await?;
        let warm = match &sweep {
            Some(_) => Some(self.warm_sandboxes().await?),
            None => None,
        };
        drop(sweep);
        let owned: HashSet<&str> = live.iter().filter_map(|row| row.sandbox_id.as_deref()).collect();
        for sandbox in &sandboxes {
            let orphan = match sandbox.session_id.as_deref() {
                Some(session) => !live.iter().any(|row| row.id.to_string() == session),
                // Made by the warm pool: its row or the session that claimed it owns it.
                None => warm
                    .as_ref()
                    .is_some_and(|warm| !warm.contains(&sandbox.id) && !owned.contains(sandbox.id.as_str())),
            };
            if orphan {
                tracing::info!(sandbox = %sandbox.id, "deleting a sandbox whose session is no longer live");
                self.delete_sandbox(&sandbox.id).await;
            }
        }
        self.store.forget_settled_claims().await?;
        let now = self.store.now_utc();
        let mut done = Reconciled::default();
        for row in ready {
            let Some(sandbox) = row.sandbox_id.as_deref() else {
                continue;
            };
            if !sandboxes.iter().any(|s| s.id == sandbox) {
                let reason = "the sandbox stopped: its harness exited".to_owned();
                if self.sandbox_died(row.id, sandbox, reason).await? {
                    done.died += 1;
                }
                continue;
            }
            self.count_step(&row, now, &mut done).await?;
        }
        for row in self.store.sessions_with_status(&[SessionStatus::Hibernated]).await? {
            self.count_step(&row, now, &mut done).await?;
        }
        done.workspaces_removed = self.sweep_workspaces(now).await?;
        self.metrics.reaped.inc_by(done.reaped as u64);
        Ok(done)
    }

    /// The reaper's step for one idle session ([`Self::apply_policy`]), counted in `done`.
    async fn count_step(
        &self,
        row: &SessionRow,
        now: time::OffsetDateTime,
        done: &mut Reconciled,
    ) -> Result<(), ControlError> {
        match self.apply_policy(row, now).await? {
            workspace::Step::Reaped => done.reaped += 1,
            workspace::Step::Hibernated => done.hibernated += 1,
            workspace::Step::Paused => done.paused += 1,
            workspace::Step::None => {}
        }
        Ok(())
    }

    /// Makes session `session` dead because its sandbox `sandbox` failed or went away by itself, if
    /// it is still `ready` on that sandbox; then the sandbox is deleted (what is left of it). Returns
    /// whether the session died here.
    async fn sandbox_died(&self, session: Uuid, sandbox: &str, reason: String) -> Result<bool, ControlError> {
        let update = SessionUpdate::SandboxDied {
            sandbox_id: sandbox.to_owned(),
            reason: reason.clone(),
        };
        let died = self
            .store
            .update_session(session, update)
            .await?
            .is_some_and(|u| u.applied);
        if died {
            tracing::info!(%session, %sandbox, %reason, "the sandbox of a session died");
            self.metrics.died.inc();
            self.detach_vault(session);
            self.delete_sandbox(sandbox).await;
        }
        Ok(died)
    }

    /// Follows the backend's [`Sandbox::events`] (when it has them) until shutdown: a session whose
    /// sandbox failed (an image that cannot be pulled, a crash, an eviction, an OOM kill) or was
    /// deleted behind lap's back becomes `dead` with the reason at once, and a warm sandbox that
    /// failed leaves the pool. Sessions still `creating` learn it from their bring-up.
    pub fn spawn_sandbox_events(self: &Arc<Self>) {
        use futures_util::StreamExt;
        let Some(mut events) = self.sandbox.events() else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = this.shutdown.cancelled() => return,
                    event = events.next() => event,
                };
                match event {
                    None => return,
                    Some(Err(err)) => tracing::warn!(error = %err, "the backend's sandbox events failed; retrying"),
                    Some(Ok(event)) => {
                        if let Err(err) = this.sandbox_changed(event).await {
                            tracing::warn!(error = %err, "cannot act on a sandbox event");
                        }
                    }
                }
            }
        });
    }

    async fn sandbox_changed(&self, event: SandboxEvent) -> Result<(), ControlError> {
        let reason = match event.change {
            SandboxChange::Failed { reason } => format!("the sandbox failed: {reason}"),
            SandboxChange::Gone => "the sandbox was deleted outside lap".to_owned(),
        };
        let ready = self.store.sessions_with_status(&[SessionStatus::Ready]).await?;
        if let Some(row) = ready
            .iter()
            .find(|row| row.sandbox_id.as_deref() == Some(event.id.as_str()))
        {
            self.sandbox_died(row.id, &event.id, reason).await?;
            return Ok(());
        }
        let warm = self.store.warm_rows().await?;
        if let Some(row) = warm
            .iter()
            .find(|row| row.status == WarmStatus::Ready && row.sandbox_id.as_deref() == Some(event.id.as_str()))
            && self.store.delete_warm(row.id, WarmStatus::Ready).await?
        {
            tracing::info!(sandbox = %event.id, %reason, "dropping a warm sandbox");
            self.delete_sandbox(&event.id).await;
        }
        Ok(())
    }

    /// Runs [`Self::reconcile`] every `every` until shutdown.
    pub fn spawn_reconciler(self: &Arc<Self>, every: Duration) {
        let this = self.clone();
        let stop = self.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(err) = this.reconcile().await {
                    tracing::warn!(error = %err, "reconciler pass failed");
                }
            }
        });
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

    /// Brings the store and the backend back in line after `lap serve` (re)starts: interrupted
    /// bring-ups fail, ready sessions whose sandbox vanished die, sandboxes nobody owns are deleted.
    pub async fn recover(self: &Arc<Self>) -> Result<(), ControlError> {
        let sandboxes = self.sandbox.list().await?;
        // Positions of a vault whose sandbox went (one whose last records came in after it was
        // deleted): nothing will pull from them again.
        self.store
            .forget_pulled_except(sandboxes.iter().map(|s| s.id.clone()).collect())
            .await?;
        let warm = self.recover_pool(&sandboxes).await?;
        let live = self
            .store
            .sessions_with_status(&[SessionStatus::Creating, SessionStatus::Ready, SessionStatus::Paused])
            .await?;
        for row in &live {
            let present = row
                .sandbox_id
                .as_ref()
                .is_some_and(|id| sandboxes.iter().any(|s| &s.id == id));
            let update = match row.status {
                SessionStatus::Creating => SessionUpdate::Failed {
                    reason: "bring-up was interrupted by a restart of lap serve".to_owned(),
                },
                _ if !present => SessionUpdate::Dead {
                    reason: "the sandbox vanished while lap serve was down".to_owned(),
                },
                _ => match self.reattach_paused(row).await {
                    Ok(()) => {
                        if let Some(sandbox) = &row.sandbox_id {
                            self.watch_agent(row.id, sandbox.clone());
                        }
                        continue;
                    }
                    Err(reason) => {
                        if let Some(sandbox) = &row.sandbox_id {
                            self.delete_sandbox(sandbox).await;
                        }
                        SessionUpdate::Dead {
                            reason: format!("cannot re-attach the vault after a restart: {reason}"),
                        }
                    }
                },
            };
            tracing::info!(session = %row.id, "recovering session after restart");
            self.store.update_session(row.id, update).await?;
        }
        for sandbox in &sandboxes {
            let owned = warm.contains(&sandbox.id)
                || live.iter().any(|row| {
                    matches!(row.status, SessionStatus::Ready | SessionStatus::Paused)
                        && row.sandbox_id.as_deref() == Some(sandbox.id.as_str())
                });
            if !owned {
                tracing::info!(sandbox = %sandbox.id, "deleting a sandbox no session owns");
                self.delete_sandbox(&sandbox.id).await;
            }
        }
        Ok(())
    }

    /// [`Self::reattach_vault`], thawing a paused session's sandbox for it (its harness hands over
    /// the egress listener) and freezing it again after.
    async fn reattach_paused(&self, row: &SessionRow) -> Result<(), String> {
        let paused = row.status == SessionStatus::Paused;
        if paused && let Some(sandbox) = &row.sandbox_id {
            self.sandbox.resume(sandbox).await.map_err(|e| e.to_string())?;
        }
        let attached = self.reattach_vault(row).await;
        if paused && let Some(sandbox) = &row.sandbox_id {
            self.sandbox.pause(sandbox).await.map_err(|e| e.to_string())?;
        }
        attached
    }

    async fn reattach_vault(&self, row: &SessionRow) -> Result<(), String> {
        let sandbox = row.sandbox_id.as_deref().ok_or("the session has no sandbox")?;
        let agent = self
            .store
            .find_agent(&row.agent_id.to_string())
            .await
            .map_err(|e| e.to_string())?
            .ok_or("its agent is gone")?;
        let credentials = self
            .store
            .agent_credentials(agent.id)
            .await
            .map_err(|e| e.to_string())?;
        let stubs = self.store.session_stubs(row.id).await.map_err(|e| e.to_string())?;
        self.attach_vault(row.id, Some(row.id), sandbox, &agent, credentials, &stubs)
            .await
            .map_err(|e| e.to_string())
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

/// A sandbox's environment: the agent's plain variables, then the proxy and CA variables every
/// tool needs to go through the vault, the git configuration that sends every `bound` host's git
/// remotes (SSH ones too) over HTTPS with the stub ([`git`]; `bound` is each credential's name and
/// hosts), then one stub per credential (never a real value).
pub fn sandbox_env(
    plain: &BTreeMap<String, String>,
    stubs: &[(String, String)],
    bound: &[(String, Vec<String>)],
) -> Vec<(String, String)> {
    let proxy = format!("http://{PROXY_ADDR}");
    let mut env = plain.clone();
    for name in [
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "ALL_PROXY",
        "https_proxy",
        "http_proxy",
        "all_proxy",
    ] {
        env.insert(name.to_owned(), proxy.clone());
    }
    for name in ["NO_PROXY", "no_proxy"] {
        env.insert(name.to_owned(), "localhost,127.0.0.1".to_owned());
    }
    env.insert("NODE_USE_ENV_PROXY".to_owned(), "1".to_owned());
    for name in [
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
        "CODEX_CA_CERTIFICATE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "PIP_CERT",
        "CARGO_HTTP_CAINFO",
        "AWS_CA_BUNDLE",
    ] {
        env.insert(name.to_owned(), CA_BUNDLE_PATH.to_owned());
    }
    env.extend(git::config_env(bound));
    for (name, stub) in stubs {
        env.insert(name.clone(), stub.clone());
    }
    env.into_iter().collect()
}

/// A fresh per-session TTY token: 32 random bytes, hex.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).expect("system random generator");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

    #[test]
    fn the_sandbox_environment_carries_stubs_proxy_and_ca_but_never_lets_the_agent_unset_them() {
        let plain = BTreeMap::from([
            ("EDITOR".to_owned(), "vim".to_owned()),
            ("HTTPS_PROXY".to_owned(), "http://elsewhere:1".to_owned()),
        ]);
        let stubs = vec![(
            "GITHUB_TOKEN".to_owned(),
            "stub_github_token_0011223344556677".to_owned(),
        )];
        let bound = vec![("GITHUB_TOKEN".to_owned(), vec!["github.com".to_owned()])];
        let env: BTreeMap<String, String> = sandbox_env(&plain, &stubs, &bound).into_iter().collect();
        assert_eq!(env["EDITOR"], "vim");
        assert_eq!(env["HTTPS_PROXY"], "http://127.0.0.1:3128");
        assert_eq!(env["https_proxy"], "http://127.0.0.1:3128");
        assert_eq!(env["NO_PROXY"], "localhost,127.0.0.1");
        assert_eq!(env["SSL_CERT_FILE"], CA_BUNDLE_PATH);
        assert_eq!(env["NODE_EXTRA_CA_CERTS"], CA_BUNDLE_PATH);
        assert_eq!(env["GITHUB_TOKEN"], "stub_github_token_0011223344556677");
        assert_eq!(env["GIT_CONFIG_KEY_0"], "url.https://github.com/.insteadOf");
        assert_eq!(env["GIT_CONFIG_VALUE_0"], "git@github.com:");
    }

    #[test]
    fn a_tui_agent_runs_its_harness_with_the_model_flag_and_its_own_command_as_given() {
        let agent = |harness: &str, command: Option<&str>, model: Option<&str>| -> Agent {
            serde_json::from_value(serde_json::json!({
                "id": uuid::Uuid::nil(), "name": "a", "harness_id": harness, "supports_tui": true,
                "command": command, "repo_url": null, "branch": "main", "prompt": null, "model": model,
                "env": {}, "credentials": [], "env_var_hosts": {}, "allow_out": [], "deny_out": [],
                "created_at": "", "updated_at": ""
            }))
            .unwrap()
        };
        assert_eq!(
            agent_command(&agent("gemini", None, Some("gemini-2.5-pro"))).as_deref(),
            Some("gemini --model 'gemini-2.5-pro'")
        );
        assert_eq!(
            agent_command(&agent("hermes", None, Some("it's"))).as_deref(),
            Some("hermes --tui --model 'it'\\''s'")
        );
        assert_eq!(agent_command(&agent("gemini", None, None)).as_deref(), Some("gemini"));
        assert_eq!(
            agent_command(&agent("shell", None, Some("m"))).as_deref(),
            Some("bash -l")
        );
        assert_eq!(
            agent_command(&agent("gemini", Some("my-gemini"), Some("m"))).as_deref(),
            Some("my-gemini")
        );
        assert_eq!(agent_command(&agent("opencode", None, Some("m"))), None);
    }
}
