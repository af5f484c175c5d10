//! The warm pool: sandboxes made before anyone asks, so a session starts by claiming one.
//!
//! Design. `--warm-pool-size` sandboxes are kept in total, divided by [`plan`] between two kinds of
//! demand: the harnesses agents use (a sandbox any agent of that harness can take) and the agents
//! with a repository and a session in the last `--warm-pool-recent-agent-hours` (a sandbox made for
//! that agent, its repo already cloned in `/work/repo`). An agent without a repository needs nothing
//! a harness sandbox lacks, so it counts toward its harness. Slots go round-robin, harnesses and
//! agents interleaved, most recently used first.
//!
//! Late binding. A warm sandbox is created with no session: only the proxy and CA variables (plus,
//! for an agent's, its plain variables), no agent process. Everything per session happens at claim
//! time: fresh stubs, the vault binding of the agent's credentials to them, and the harness `start`
//! op ([`crate::sandbox::Sandbox::start_agent`]) which hands the session's environment to the
//! harness and starts the agent in `/work/repo`. Cloning an agent's repo ahead of time needs its
//! git token, so an agent's warm sandbox is made with its own throw-away stubs and a vault bound to
//! them for the clone only; the vault is detached after the clone (the credential helper reads the
//! stub from the environment and git keeps none of it in `.git/config`), and the claim binds the
//! session's new stubs. A stub of a warm sandbox is therefore never valid while a session uses it.
//!
//! Invariants. A claim is one conditional SQLite `UPDATE` ([`Store::claim_warm`]): two concurrent
//! creates never get the same sandbox. The backend then claims it too
//! ([`crate::sandbox::Sandbox::claim`]; for Kubernetes a label patch with the Pod's
//! `resourceVersion`), and a sandbox it refuses (it failed since it was made) is dropped and the
//! next one tried. Recycling (older than `--warm-pool-max-age`, agent changed or gone, no longer
//! planned) deletes a row only while it is `ready`, so it never takes a sandbox a session just
//! claimed. Backends report warm sandboxes with no session id; the reconciler deletes
//! such a sandbox only when no warm row and no live session names it, and never while the pool is
//! creating one ([`Pool::sweep`]). After a restart, `ready` rows whose sandbox still runs are adopted
//! and every other row is dropped (its sandbox then has no owner and is deleted).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, RwLock};
use uuid::Uuid;

use super::{BringUpError, Control, ControlError, sandbox_env};
use crate::sandbox::{LimitOverrides, SandboxInfo, SandboxSpec};
use crate::store::StoreError;
use crate::store::warm::{WarmRow, WarmStatus};
use crate::wire::admin::{AdminStats, ClaimSample, WarmGroup, WarmPoolStats};
use crate::wire::api::Agent;

/// Default of `--warm-pool-size` / `WARM_POOL_SIZE`.
pub const DEFAULT_SIZE: u32 = 2;
/// Default of `--warm-pool-recent-agent-hours` / `WARM_POOL_RECENT_AGENT_HOURS`.
pub const DEFAULT_RECENT_AGENT_HOURS: u64 = 24;
/// Default of `--warm-pool-max-age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 60);
/// How often the pool looks again without being woken by a claim (new agents, recycling by age,
/// agents that changed). A look is a few indexed queries.
pub const TICK: Duration = Duration::from_secs(1);
/// How long a group whose warm sandbox failed is left alone before the pool tries again.
const FAILURE_BACKOFF: Duration = Duration::from_secs(30);
/// Claim latencies kept for the admin stats.
const RECENT_CLAIMS: usize = 20;

/// The pool's settings, resolved once in `lap serve`.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Warm sandboxes kept in total; 0 turns the pool off.
    pub size: u32,
    /// Agents with a session this recent get a warm sandbox of their own.
    pub recent_agents: Duration,
    /// Warm sandboxes older than this are recycled.
    pub max_age: Duration,
}

impl PoolConfig {
    /// No pool: every session creates its sandbox.
    pub fn off() -> Self {
        Self {
            size: 0,
            ..Self::default()
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            size: DEFAULT_SIZE,
            recent_agents: Duration::from_secs(DEFAULT_RECENT_AGENT_HOURS * 3600),
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

/// What a warm sandbox is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WarmKey {
    /// Any agent of this harness.
    Harness(String),
    /// This agent (of this harness), with its repo cloned.
    Agent { harness_id: String, agent_id: Uuid },
}

impl WarmKey {
    fn of(row: &WarmRow) -> Self {
        match row.agent_id {
            Some(agent_id) => Self::Agent {
                harness_id: row.harness_id.clone(),
                agent_id,
            },
            None => Self::Harness(row.harness_id.clone()),
        }
    }

    fn harness_id(&self) -> &str {
        match self {
            Self::Harness(h) | Self::Agent { harness_id: h, .. } => h,
        }
    }
}

/// The pool's plan: which group each of the `size` slots goes to, in the order they are filled.
/// Harnesses and agents (each most recently used first) are interleaved, then slots go round-robin.
pub fn plan(size: u32, harnesses: &[String], agents: &[(Uuid, String)]) -> Vec<WarmKey> {
    let mut keys = Vec::new();
    for i in 0..harnesses.len().max(agents.len()) {
        if let Some(h) = harnesses.get(i) {
            keys.push(WarmKey::Harness(h.clone()));
        }
        if let Some((agent_id, harness_id)) = agents.get(i) {
            keys.push(WarmKey::Agent {
                harness_id: harness_id.clone(),
                agent_id: *agent_id,
            });
        }
    }
    if keys.is_empty() {
        return Vec::new();
    }
    (0..size as usize).map(|slot| keys[slot % keys.len()].clone()).collect()
}

/// What makes an agent's warm sandbox stale when it changes: everything baked in before the claim.
pub fn fingerprint(agent: &Agent) -> String {
    let material = serde_json::json!([
        agent.harness_id,
        agent.command,
        agent.repo_url,
        agent.branch,
        agent.env,
        agent.updated_at,
    ]);
    let digest = ring::digest::digest(&ring::digest::SHA256, material.to_string().as_bytes());
    digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The pool's state in `lap serve`.
pub struct Pool {
    pub(super) config: PoolConfig,
    wake: Notify,
    /// Held (shared) while the pool creates a sandbox, taken (exclusive) by the reconciler's sweep
    /// of sandboxes with no session, so it never deletes one whose row is not written yet.
    creating: RwLock<()>,
    backoff: Mutex<HashMap<WarmKey, tokio::time::Instant>>,
    log: Mutex<ClaimLog>,
}

#[derive(Default)]
struct ClaimLog {
    hits: u64,
    misses: u64,
    claimed: BTreeMap<WarmKey, u64>,
    recent: VecDeque<ClaimSample>,
}

/// What one top-up did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TopUp {
    pub created: usize,
    pub recycled: usize,
    pub failed: usize,
}

impl Pool {
    pub fn new(config: PoolConfig) -> Self {
        Self {
            config,
            wake: Notify::new(),
            creating: RwLock::new(()),
            backoff: Mutex::new(HashMap::new()),
            log: Mutex::new(ClaimLog::default()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.size > 0
    }

    fn log(&self) -> std::sync::MutexGuard<'_, ClaimLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sweep guard of the reconciler, or `None` while the pool is creating a sandbox.
    pub(super) fn sweep(&self) -> Option<tokio::sync::RwLockWriteGuard<'_, ()>> {
        self.creating.try_write().ok()
    }
}

impl Control {
    /// Claims a warm sandbox for session `id` of `agent`, or `None` (the pool is off or has none).
    /// Wakes the pool to replace it either way.
    pub(super) async fn claim_warm(&self, id: Uuid, agent: &Agent) -> Result<Option<WarmRow>, StoreError> {
        // A warm sandbox mounts no volume (handing a volume to a warm sandbox's user would take it
        // from a running session's): an agent with volumes gets a sandbox of its own.
        if !self.pool.enabled() || !agent.volumes.is_empty() {
            return Ok(None);
        }
        // A harness's warm sandbox was made before its agent was known, with the backend's default
        // limits: an agent with limits of its own takes only a sandbox made for it.
        let harness_wide = LimitOverrides::from(&agent.limits) == LimitOverrides::default();
        let claimed = loop {
            let Some(row) = self
                .store
                .claim_warm(id, agent.harness_id.clone(), agent.id, fingerprint(agent), harness_wide)
                .await?
            else {
                break None;
            };
            let Some(sandbox) = row.sandbox_id.clone() else {
                break Some(row);
            };
            // The backend claims it too (for Kubernetes, the Pod's label patch with its
            // resourceVersion): a sandbox that failed since it was made is not handed out.
            let claimed = self.sandbox.claim(&sandbox, &id.to_string()).await;
            if let Ok(true) = claimed {
                break Some(row);
            }
            self.store.delete_warm(row.id, WarmStatus::Claimed).await?;
            self.delete_sandbox(&sandbox).await;
            match claimed {
                Err(err) => {
                    // The backend is not answering: the next would fare no better.
                    tracing::warn!(%sandbox, error = %err, "cannot claim a warm sandbox; dropped it");
                    break None;
                }
                _ => tracing::info!(%sandbox, "a warm sandbox could not be claimed any more; dropped it"),
            }
        };
        {
            let mut log = self.pool.log();
            match &claimed {
                Some(row) => {
                    log.hits += 1;
                    *log.claimed.entry(WarmKey::of(row)).or_default() += 1;
                }
                None => {
                    log.misses += 1;
                    self.metrics.pool_miss();
                }
            }
        }
        self.pool.wake.notify_one();
        Ok(claimed)
    }

    /// Records how long a warm claim took, from the create request to `ready`.
    pub(super) fn claimed_in(&self, id: Uuid, agent: &Agent, row: &WarmRow, took: Duration) {
        self.metrics.claim(took);
        let mut log = self.pool.log();
        log.recent.push_front(ClaimSample {
            session_id: id,
            agent_name: agent.name.clone(),
            harness_id: agent.harness_id.clone(),
            at: self.store.timestamp(),
            latency_ms: took.as_secs_f64() * 1000.0,
            agent_warm: row.agent_id.is_some(),
        });
        log.recent.truncate(RECENT_CLAIMS);
    }

    /// Runs [`Self::top_up`] when woken (after every claim) and every [`TICK`], until shutdown.
    pub fn spawn_pool(self: &Arc<Self>) {
        if !self.pool.enabled() {
            return;
        }
        let this = self.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = this.shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                    _ = this.pool.wake.notified() => {}
                }
                if let Err(err) = this.top_up().await {
                    tracing::warn!(error = %err, "warm pool top-up failed");
                }
            }
        });
    }

    /// The groups the pool should hold now, slot by slot.
    async fn planned(&self) -> Result<(Vec<WarmKey>, HashMap<Uuid, Agent>), ControlError> {
        let since = self.store.now_utc() - self.pool.config.recent_agents;
        let recent = self.store.recent_agents(crate::store::format_timestamp(since)).await?;
        let mut agents = HashMap::new();
        let mut with_repo = Vec::new();
        for id in recent {
            if let Some(agent) = self.store.find_agent(&id.to_string()).await? {
                // An agent with volumes never takes a warm sandbox (`claim_warm`).
                if agent.repo_url.is_some() && agent.volumes.is_empty() {
                    with_repo.push((agent.id, agent.harness_id.clone()));
                }
                agents.insert(agent.id, agent);
            }
        }
        let harnesses: Vec<String> = self
            .store
            .harnesses_in_use()
            .await?
            .into_iter()
            .filter(|h| crate::tools::find(h).is_some())
            .collect();
        Ok((plan(self.pool.config.size, &harnesses, &with_repo), agents))
    }

    /// Brings the pool to its plan: recycles warm sandboxes that are too old, whose agent changed or
    /// that are no longer planned, then creates what is missing, one at a time. Idempotent.
    pub async fn top_up(&self) -> Result<TopUp, ControlError> {
        let mut done = TopUp::default();
        let (planned, mut agents) = if self.pool.enabled() {
            self.planned().await?
        } else {
            (Vec::new(), HashMap::new())
        };
        let mut wanted: HashMap<&WarmKey, usize> = HashMap::new();
        for key in &planned {
            *wanted.entry(key).or_default() += 1;
        }
        let now = self.store.now_utc();
        let rows = self.store.warm_rows().await?;
        let mut have: HashMap<WarmKey, usize> = HashMap::new();
        // Newest first, so a surplus recycles the oldest.
        for row in rows.iter().rev().filter(|r| r.status != WarmStatus::Claimed) {
            let key = WarmKey::of(row);
            let age = super::idle_for(&row.created_at, now).unwrap_or_default();
            let agent = match row.agent_id {
                Some(id) => match agents.get(&id) {
                    Some(agent) => Some(agent.clone()),
                    None => self.store.find_agent(&id.to_string()).await?,
                },
                None => None,
            };
            let reason = if age > self.pool.config.max_age {
                Some("older than the maximum age")
            } else if row.agent_id.is_some() && agent.as_ref().map(fingerprint).as_deref() != row.fingerprint.as_deref()
            {
                Some("its agent changed")
            } else if have.get(&key).copied().unwrap_or(0) >= wanted.get(&key).copied().unwrap_or(0) {
                Some("not planned")
            } else {
                None
            };
            match reason {
                // A row still warming is its creator's to finish (it is counted, not recycled).
                Some(reason) if row.status == WarmStatus::Ready => {
                    if self.store.delete_warm(row.id, WarmStatus::Ready).await? {
                        tracing::info!(sandbox = ?row.sandbox_id, reason, "recycling a warm sandbox");
                        if let Some(sandbox) = &row.sandbox_id {
                            self.delete_sandbox(sandbox).await;
                        }
                        done.recycled += 1;
                    }
                }
                _ => *have.entry(key).or_default() += 1,
            }
        }
        for key in &planned {
            if self.shutdown.is_cancelled() {
                break;
            }
            match have.get_mut(key) {
                Some(n) if *n > 0 => *n -= 1,
                _ => {
                    let waiting = self
                        .pool
                        .backoff
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(key)
                        .is_some_and(|until| tokio::time::Instant::now() < *until);
                    if waiting {
                        continue;
                    }
                    let agent = match key {
                        WarmKey::Agent { agent_id, .. } => agents.remove(agent_id),
                        WarmKey::Harness(_) => None,
                    };
                    match self.warm_one(key, agent.as_ref()).await {
                        Ok(()) => done.created += 1,
                        Err(reason) => {
                            tracing::warn!(group = ?key, %reason, "cannot make a warm sandbox");
                            done.failed += 1;
                            self.pool
                                .backoff
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(key.clone(), tokio::time::Instant::now() + FAILURE_BACKOFF);
                        }
                    }
                    if let Some(agent) = agent {
                        agents.insert(agent.id, agent);
                    }
                }
            }
        }
        Ok(done)
    }

    /// Makes one warm sandbox for `key`: row, sandbox, the agent's repo cloned through a vault bound
    /// to throw-away stubs, then `ready`.
    async fn warm_one(&self, key: &WarmKey, agent: Option<&Agent>) -> Result<(), BringUpError> {
        let _creating = self.pool.creating.read().await;
        let id = Uuid::new_v4();
        self.store
            .insert_warm(
                id,
                key.harness_id().to_owned(),
                agent.map(|a| a.id),
                agent.map(fingerprint),
            )
            .await?;
        let (credentials, stubs, plain) = match agent {
            Some(agent) => {
                let credentials = self.store.agent_credentials(agent.id).await?;
                let stubs: Vec<(String, String)> = credentials
                    .iter()
                    .map(|c| (c.name.clone(), crate::vault::new_stub(&c.name)))
                    .collect();
                (credentials, stubs, agent.env.clone())
            }
            None => (Vec::new(), Vec::new(), BTreeMap::new()),
        };
        let spec = SandboxSpec {
            harness_id: key.harness_id().to_owned(),
            session_id: None,
            env: sandbox_env(
                &plain,
                &stubs,
                &credentials
                    .iter()
                    .map(|c| (c.name.clone(), c.hosts.clone()))
                    .collect::<Vec<_>>(),
            ),
            ca_bundle: self.ca_bundle.clone(),
            command: None,
            limits: agent.map(|a| (&a.limits).into()).unwrap_or_default(),
            workspace: None,
            volumes: Vec::new(),
        };
        let info: SandboxInfo = match self.sandbox.create(&spec).await {
            Ok(info) => info,
            Err(err) => {
                let _ = self.store.delete_warm(id, WarmStatus::Warming).await;
                return Err(BringUpError::Create(err));
            }
        };
        let made = async {
            if !self
                .store
                .set_warm_sandbox(id, info.id.clone(), info.url.clone())
                .await?
            {
                return Err(BringUpError::WarmRowGone);
            }
            if let Some(agent) = agent
                && let Some(url) = &agent.repo_url
            {
                self.attach_vault(id, None, &info.id, agent, credentials, &stubs)
                    .await
                    .map_err(BringUpError::CloneVault)?;
                let cloned = self.clone_repo(&info.id, url, &agent.branch, Vec::new()).await;
                self.detach_vault(id);
                cloned?;
            }
            if self.store.mark_warm_ready(id).await? {
                Ok(())
            } else {
                Err(BringUpError::WarmRowGone)
            }
        };
        let result = made.await;
        if result.is_err() {
            let _ = self.store.delete_warm(id, WarmStatus::Warming).await;
            self.delete_sandbox(&info.id).await;
        } else {
            tracing::info!(sandbox = %info.id, group = ?key, "warm sandbox ready");
        }
        result
    }

    /// After a restart: adopts `ready` warm sandboxes that still run and drops every other row.
    /// Returns the adopted sandboxes' ids.
    pub(super) async fn recover_pool(&self, sandboxes: &[SandboxInfo]) -> Result<HashSet<String>, ControlError> {
        let mut adopted = HashSet::new();
        let listed = super::reconcile::listed_ids(sandboxes);
        for row in self.store.warm_rows().await? {
            let running = row.sandbox_id.as_deref().is_some_and(|id| listed.contains(id));
            if row.status == WarmStatus::Ready && running && self.pool.enabled() {
                if let Some(id) = row.sandbox_id {
                    adopted.insert(id);
                }
                continue;
            }
            tracing::info!(sandbox = ?row.sandbox_id, status = row.status.as_str(), "dropping a warm sandbox after a restart");
            self.store.delete_warm(row.id, row.status).await?;
        }
        Ok(adopted)
    }

    /// Sandboxes the pool owns now (any row naming them).
    pub(super) async fn warm_sandboxes(&self) -> Result<HashSet<String>, StoreError> {
        Ok(self
            .store
            .warm_rows()
            .await?
            .into_iter()
            .filter_map(|row| row.sandbox_id)
            .collect())
    }

    /// The warm pool and sessions, for `GET /api/v1/admin/stats`.
    pub async fn admin_stats(&self) -> Result<AdminStats, ControlError> {
        let rows = self.store.warm_rows().await?;
        let (planned, _) = if self.pool.enabled() {
            self.planned().await?
        } else {
            (Vec::new(), HashMap::new())
        };
        let mut groups: BTreeMap<WarmKey, WarmGroup> = BTreeMap::new();
        let group = |key: &WarmKey| WarmGroup {
            harness_id: key.harness_id().to_owned(),
            agent_id: match key {
                WarmKey::Agent { agent_id, .. } => Some(*agent_id),
                WarmKey::Harness(_) => None,
            },
            agent_name: None,
            target: 0,
            warming: 0,
            ready: 0,
            claimed: 0,
            sandboxes: Vec::new(),
        };
        for key in &planned {
            groups.entry(key.clone()).or_insert_with(|| group(key)).target += 1;
        }
        let (mut warming, mut ready) = (0, 0);
        for row in &rows {
            let key = WarmKey::of(row);
            let entry = groups.entry(key.clone()).or_insert_with(|| group(&key));
            if row.status != WarmStatus::Claimed
                && let Some(id) = &row.sandbox_id
            {
                entry.sandboxes.push(id.clone());
            }
            match row.status {
                WarmStatus::Warming => {
                    entry.warming += 1;
                    warming += 1;
                }
                WarmStatus::Ready => {
                    entry.ready += 1;
                    ready += 1;
                }
                WarmStatus::Claimed => {}
            }
        }
        let (hits, misses, recent) = {
            let log = self.pool.log();
            for (key, n) in &log.claimed {
                groups.entry(key.clone()).or_insert_with(|| group(key)).claimed = *n;
            }
            (log.hits, log.misses, log.recent.iter().cloned().collect())
        };
        for group in groups.values_mut() {
            if let Some(id) = group.agent_id {
                group.agent_name = self.store.find_agent(&id.to_string()).await?.map(|a| a.name);
            }
        }
        Ok(AdminStats {
            warm_pool: WarmPoolStats {
                configured_size: self.pool.config.size,
                recent_agent_hours: self.pool.config.recent_agents.as_secs() / 3600,
                max_age_seconds: self.pool.config.max_age.as_secs(),
                warming,
                ready,
                hits,
                misses,
                groups: groups.into_values().collect(),
                recent_claims: recent,
            },
            sessions: self.store.session_counts().await?.into_iter().collect(),
        })
    }

    /// Warm sandboxes ready now, for the `/metrics` gauge.
    pub(super) async fn warm_ready(&self) -> Result<u64, StoreError> {
        Ok(self
            .store
            .warm_rows()
            .await?
            .iter()
            .filter(|r| r.status == WarmStatus::Ready)
            .count() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_interleaves_harnesses_and_agents_then_goes_round_robin() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let shell = || WarmKey::Harness("shell".into());
        let agent = |id| WarmKey::Agent {
            harness_id: "shell".into(),
            agent_id: id,
        };
        assert_eq!(plan(2, &[], &[]), Vec::<WarmKey>::new());
        assert_eq!(plan(0, &["shell".into()], &[]), Vec::<WarmKey>::new());
        assert_eq!(plan(2, &["shell".into()], &[]), vec![shell(), shell()]);
        let agents = [(a, "shell".to_owned()), (b, "shell".to_owned())];
        assert_eq!(plan(2, &["shell".into()], &agents), vec![shell(), agent(a)]);
        assert_eq!(
            plan(5, &["shell".into()], &agents),
            vec![shell(), agent(a), agent(b), shell(), agent(a)]
        );
    }
}
