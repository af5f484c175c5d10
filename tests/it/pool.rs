//! The warm pool on the in-memory backend, with a store clock the test moves.
//!
//! A claim hands a session a sandbox made before it (bound to the session's own stubs at claim
//! time), concurrent claims never share one, the pool refills after claims, recycles sandboxes that
//! are too old or whose agent changed, survives a restart by adopting what still runs, never loses a
//! warm sandbox to the reconciler's orphan sweep, and with size 0 everything works as without a
//! pool. Cloning an agent's repo ahead of time needs real sandboxes; `tests/it/vault_sandbox.rs`
//! covers it on the local backend.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lap::control::pool::{self, PoolConfig, TopUp};
use lap::control::{Control, Services, phase};
use lap::sandbox::fake::Fake;
use lap::sandbox::{Sandbox, SandboxSpec};
use lap::secret::Secret;
use lap::store::warm::WarmStatus;
use lap::store::{AgentPatch, NewAgent, NewCredential, SessionRow, Store};
use lap::wire::api::{Agent, SessionStatus};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::wait_until_async;

const MAX_AGE: Duration = Duration::from_secs(30 * 60);
const DEADLINE: Duration = Duration::from_secs(10);

struct World {
    control: Arc<Control>,
    store: Store,
    fake: Arc<Fake>,
    now: Arc<Mutex<time::OffsetDateTime>>,
    agent: Agent,
    dir: tempfile::TempDir,
    size: u32,
    shutdown: CancellationToken,
}

fn config(size: u32) -> PoolConfig {
    PoolConfig {
        size,
        recent_agents: Duration::from_secs(24 * 3600),
        max_age: MAX_AGE,
    }
}

fn control(
    store: &Store,
    fake: &Arc<Fake>,
    dir: &std::path::Path,
    size: u32,
    shutdown: CancellationToken,
) -> Arc<Control> {
    crate::support::plane::control(dir, store, fake.clone(), |s| Services {
        pool: config(size),
        shutdown,
        ..s
    })
}

impl World {
    async fn new(size: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let now = Arc::new(Mutex::new(time::OffsetDateTime::now_utc()));
        let clock = now.clone();
        let store = Store::open(dir.path())
            .unwrap()
            .with_clock(Arc::new(move || *clock.lock().unwrap()));
        let fake = Arc::new(Fake::default());
        let shutdown = CancellationToken::new();
        let control = control(&store, &fake, dir.path(), size, shutdown.clone());
        let agent = store
            .create_agent(NewAgent {
                name: "demo".into(),
                harness_id: "shell".into(),
                command: None,
                repo_url: None,
                branch: "main".into(),
                prompt: None,
                model: None,
                env: BTreeMap::from([("EDITOR".to_owned(), "vim".to_owned())]),
                credentials: vec![NewCredential {
                    name: "GITHUB_TOKEN".into(),
                    hosts: vec!["api.github.test".into()],
                    value: Secret::new("real-token-value-that-never-enters-a-sandbox"),
                    inject: lap::wire::vault::default_injection("GITHUB_TOKEN"),
                    rules: Vec::new(),
                }],
                allow_out: Vec::new(),
                deny_out: Vec::new(),
                limits: Default::default(),
                volumes: Vec::new(),
            })
            .await
            .unwrap();
        Self {
            control,
            store,
            fake,
            now,
            agent,
            dir,
            size,
            shutdown,
        }
    }

    fn advance(&self, by: Duration) {
        *self.now.lock().unwrap() += by;
    }

    /// The same store and sandboxes under a new control plane, as after a restart of `lap serve`.
    fn restart(&mut self) {
        self.shutdown.cancel();
        self.shutdown = CancellationToken::new();
        self.control = control(
            &self.store,
            &self.fake,
            self.dir.path(),
            self.size,
            self.shutdown.clone(),
        );
    }

    async fn settled(&self, id: Uuid) -> SessionRow {
        wait_until_async(&format!("session {id} settled"), DEADLINE, || async {
            let row = self.store.get_session(id).await.unwrap().unwrap();
            (row.status != SessionStatus::Creating).then_some(row)
        })
        .await
    }

    /// Sandbox ids of the warm sandboxes ready to be claimed.
    async fn ready(&self) -> HashSet<String> {
        self.store
            .warm_rows()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.status == WarmStatus::Ready)
            .filter_map(|r| r.sandbox_id)
            .collect()
    }

    async fn sandboxes(&self) -> HashSet<String> {
        self.fake.list().await.unwrap().into_iter().map(|s| s.id).collect()
    }

    /// A warm sandbox made for `agent` as the pool makes one for a recent agent with a repo (whose
    /// clone needs a real sandbox): a row with the agent's fingerprint, then a sandbox, then ready.
    async fn agent_warm(&self, agent: &Agent) -> String {
        let id = Uuid::new_v4();
        self.store
            .insert_warm(
                id,
                agent.harness_id.clone(),
                Some(agent.id),
                Some(pool::fingerprint(agent)),
            )
            .await
            .unwrap();
        let info = self.fake.create(&SandboxSpec::default()).await.unwrap();
        assert!(
            self.store
                .set_warm_sandbox(id, info.id.clone(), info.url)
                .await
                .unwrap()
        );
        assert!(self.store.mark_warm_ready(id).await.unwrap());
        info.id
    }
}

#[tokio::test]
async fn a_claim_hands_out_a_warm_sandbox_bound_to_the_sessions_own_stubs_and_the_pool_refills() {
    let w = World::new(2).await;
    assert_eq!(w.control.top_up().await.unwrap().created, 2);
    let warm = w.ready().await;
    assert_eq!(warm.len(), 2);

    let row = w.control.create_session(&w.agent, None).await.unwrap();
    assert_eq!(
        row.status,
        SessionStatus::Ready,
        "a warm claim is ready on return: {row:?}"
    );
    let sandbox = row.sandbox_id.clone().unwrap();
    assert!(warm.contains(&sandbox), "the session got a warm sandbox");
    let (command, cwd) = w.fake.agent(&sandbox).expect("the agent started at claim time");
    assert_eq!(command.as_deref(), Some(lap::tools::find("shell").unwrap().command));
    assert_eq!(cwd, None, "no repo: the agent starts in its home");
    let env: BTreeMap<String, String> = w.fake.env(&sandbox).unwrap().into_iter().collect();
    let stubs = w.store.session_stubs(row.id).await.unwrap();
    assert_eq!(
        env["GITHUB_TOKEN"], stubs[0].1,
        "the session's own stub, bound at claim"
    );
    assert_eq!(env["EDITOR"], "vim");
    assert_eq!(env["HTTPS_PROXY"], "http://127.0.0.1:3128");

    assert_eq!(w.ready().await.len(), 1);
    assert_eq!(
        w.control.top_up().await.unwrap().created,
        1,
        "topped up after the claim"
    );
    assert_eq!(w.ready().await.len(), 2);

    let stats = w.control.admin_stats().await.unwrap().warm_pool;
    assert_eq!(
        (stats.configured_size, stats.ready, stats.hits, stats.misses),
        (2, 2, 1, 0)
    );
    assert_eq!(stats.recent_claims.len(), 1);
    assert_eq!(stats.recent_claims[0].session_id, row.id);
    let shell = stats.groups.iter().find(|g| g.agent_id.is_none()).unwrap();
    assert_eq!(
        (shell.harness_id.as_str(), shell.target, shell.ready, shell.claimed),
        ("shell", 2, 2, 1)
    );
    let metrics = w.control.metrics_text().await.unwrap();
    assert!(metrics.contains("lap_warm_claim_seconds_count 1"), "{metrics}");
    assert!(metrics.contains("lap_warm_pool_ready 2"), "{metrics}");
}

#[tokio::test]
async fn the_pool_refills_on_its_own_after_claims() {
    let w = World::new(2).await;
    w.control.spawn_pool();
    let wait_full = || wait_until_async("the pool filled", DEADLINE, || async { w.ready().await.len() >= 2 });
    wait_full().await;
    for _ in 0..3 {
        let row = w.control.create_session(&w.agent, None).await.unwrap();
        assert_eq!(row.status, SessionStatus::Ready);
        wait_full().await;
    }
    let stats = w.control.admin_stats().await.unwrap().warm_pool;
    assert_eq!((stats.hits, stats.misses), (3, 0));
    w.shutdown.cancel();
}

#[tokio::test]
async fn concurrent_creates_never_share_a_warm_sandbox() {
    let w = World::new(4).await;
    assert_eq!(w.control.top_up().await.unwrap().created, 4);
    let warm = w.ready().await;
    let creates = (0..12).map(|_| {
        let control = w.control.clone();
        let agent = w.agent.clone();
        tokio::spawn(async move { control.create_session(&agent, None).await.unwrap() })
    });
    let mut sandboxes = Vec::new();
    for create in creates.collect::<Vec<_>>() {
        let row = w.settled(create.await.unwrap().id).await;
        assert_eq!(row.status, SessionStatus::Ready, "{row:?}");
        sandboxes.push(row.sandbox_id.unwrap());
    }
    let distinct: HashSet<&String> = sandboxes.iter().collect();
    assert_eq!(distinct.len(), 12, "no two sessions share a sandbox: {sandboxes:?}");
    let claimed = sandboxes.iter().filter(|s| warm.contains(*s)).count();
    assert_eq!(claimed, 4, "every warm sandbox went to exactly one session");
    let stats = w.control.admin_stats().await.unwrap().warm_pool;
    assert_eq!((stats.hits, stats.misses), (4, 8));
}

#[tokio::test]
async fn the_store_claim_is_atomic_under_concurrency() {
    let w = World::new(3).await;
    w.control.top_up().await.unwrap();
    let claims = (0..10).map(|_| {
        let store = w.store.clone();
        let agent = w.agent.clone();
        tokio::spawn(async move {
            store
                .claim_warm(
                    Uuid::new_v4(),
                    agent.harness_id.clone(),
                    agent.id,
                    pool::fingerprint(&agent),
                    true,
                )
                .await
                .unwrap()
        })
    });
    let mut won = Vec::new();
    for claim in claims.collect::<Vec<_>>() {
        if let Some(row) = claim.await.unwrap() {
            won.push(row.sandbox_id.unwrap());
        }
    }
    won.sort();
    won.dedup();
    assert_eq!(won.len(), 3, "three sandboxes, three winners, no sandbox twice");
}

#[tokio::test]
async fn an_agents_own_warm_sandbox_is_claimed_first_and_recycled_when_the_agent_changes() {
    let w = World::new(2).await;
    w.control.top_up().await.unwrap();
    let harness_warm = w.ready().await;
    let own = w.agent_warm(&w.agent).await;

    let row = w.control.create_session(&w.agent, None).await.unwrap();
    assert_eq!(
        row.sandbox_id.as_deref(),
        Some(own.as_str()),
        "the agent's own sandbox first"
    );
    assert_eq!(w.ready().await, harness_warm);

    // Another one made for the agent, then the agent changes: it must not be handed out.
    let stale = w.agent_warm(&w.agent).await;
    let patch = AgentPatch {
        env: Some(BTreeMap::from([("EDITOR".to_owned(), "nano".to_owned())])),
        ..AgentPatch::default()
    };
    w.advance(Duration::from_secs(1));
    let changed = w.store.update_agent(w.agent.id, patch).await.unwrap().unwrap();
    let row = w.control.create_session(&changed, None).await.unwrap();
    assert_ne!(
        row.sandbox_id.as_deref(),
        Some(stale.as_str()),
        "a changed agent never gets it"
    );
    let done: TopUp = w.control.top_up().await.unwrap();
    assert!(done.recycled >= 1, "{done:?}");
    assert!(!w.sandboxes().await.contains(&stale), "the stale sandbox is deleted");
    assert!(!w.ready().await.contains(&stale));
}

#[tokio::test]
async fn warm_sandboxes_older_than_the_maximum_age_are_recycled() {
    let w = World::new(2).await;
    w.control.top_up().await.unwrap();
    let first = w.ready().await;
    w.advance(MAX_AGE - Duration::from_secs(60));
    assert_eq!(
        w.control.top_up().await.unwrap(),
        TopUp::default(),
        "young enough: kept"
    );
    w.advance(Duration::from_secs(120));
    let done = w.control.top_up().await.unwrap();
    assert_eq!((done.recycled, done.created), (2, 2));
    let second = w.ready().await;
    assert_eq!(second.len(), 2);
    assert!(first.is_disjoint(&second));
    assert_eq!(w.sandboxes().await, second, "the old ones are deleted");
}

/// Waits (in paused time) until the ready warm sandboxes satisfy `done`.
async fn until_ready(w: &World, what: &str, done: impl Fn(&HashSet<String>) -> bool) {
    wait_until_async(what, Duration::from_secs(120), || async { done(&w.ready().await) }).await;
}

#[tokio::test(start_paused = true)]
async fn the_pool_loop_recycles_by_age_on_its_own_tick() {
    let w = World::new(1).await;
    w.control.spawn_pool();
    until_ready(&w, "the pool filled", |ready| ready.len() == 1).await;
    let first = w.ready().await;
    w.advance(MAX_AGE + Duration::from_secs(1));
    until_ready(&w, "the old sandbox replaced", |ready| {
        ready.len() == 1 && ready.is_disjoint(&first)
    })
    .await;
    w.shutdown.cancel();
}

#[tokio::test]
async fn a_restart_adopts_ready_warm_sandboxes_and_drops_the_rest() {
    let mut w = World::new(2).await;
    w.control.top_up().await.unwrap();
    let ready = w.ready().await;
    // A sandbox whose warming was interrupted, and a ready one that vanished while down.
    let interrupted = Uuid::new_v4();
    w.store
        .insert_warm(interrupted, "shell".into(), None, None)
        .await
        .unwrap();
    let half = w.fake.create(&SandboxSpec::default()).await.unwrap();
    w.store
        .set_warm_sandbox(interrupted, half.id.clone(), half.url)
        .await
        .unwrap();
    let vanished = w.agent_warm(&w.agent).await;
    w.fake.delete(&vanished).await.unwrap();

    w.restart();
    w.control.recover().await.unwrap();
    assert_eq!(w.ready().await, ready, "the ready ones are adopted");
    assert_eq!(w.sandboxes().await, ready, "the interrupted one is deleted");
    assert_eq!(w.store.warm_rows().await.unwrap().len(), 2, "the other rows are gone");
    assert_eq!(w.control.top_up().await.unwrap(), TopUp::default(), "nothing to remake");
    let row = w.control.create_session(&w.agent, None).await.unwrap();
    assert!(
        ready.contains(row.sandbox_id.as_deref().unwrap()),
        "an adopted one is claimed"
    );
}

#[tokio::test]
async fn the_reconciler_keeps_warm_and_claimed_sandboxes_and_sweeps_unowned_ones() {
    let w = World::new(2).await;
    w.control.top_up().await.unwrap();
    let claimed = w.control.create_session(&w.agent, None).await.unwrap();
    let stray = w.fake.create(&SandboxSpec::default()).await.unwrap();
    w.control.reconcile().await.unwrap();
    let left = w.sandboxes().await;
    assert!(!left.contains(&stray.id), "a sandbox nobody owns is deleted");
    assert!(left.contains(claimed.sandbox_id.as_deref().unwrap()));
    assert!(w.ready().await.is_subset(&left));
    assert_eq!(left.len(), 2);
    assert!(
        w.store
            .warm_rows()
            .await
            .unwrap()
            .iter()
            .all(|r| r.status != WarmStatus::Claimed),
        "a settled claim is forgotten"
    );
}

#[tokio::test]
async fn with_pool_size_zero_every_session_creates_its_sandbox() {
    let w = World::new(0).await;
    assert_eq!(w.control.top_up().await.unwrap(), TopUp::default());
    assert!(w.store.warm_rows().await.unwrap().is_empty());
    let row = w.control.create_session(&w.agent, None).await.unwrap();
    if row.status == SessionStatus::Creating {
        assert_ne!(row.phase.as_deref(), Some(phase::CLAIMING_SANDBOX), "no pool, no claim");
    }
    let row = w.settled(row.id).await;
    assert_eq!(row.status, SessionStatus::Ready);
    let sandbox = row.sandbox_id.unwrap();
    assert_eq!(w.sandboxes().await, HashSet::from([sandbox.clone()]));
    assert!(
        w.fake.agent(&sandbox).is_some(),
        "the agent started late, after bring-up"
    );
    let stats = w.control.admin_stats().await.unwrap().warm_pool;
    assert_eq!(
        (stats.configured_size, stats.ready, stats.hits, stats.misses),
        (0, 0, 0, 0)
    );
}
