//! The reconciler and restarts, on the in-memory backend with a clock the test moves.
//!
//! Sessions idle longer than the TTL are reaped (their sandbox deleted), activity resets the clock, a
//! sandbox that stops by itself makes its session `dead`, a restart gives a session a fresh
//! sandbox (a refused one deletes nothing), and a sandbox nobody owns is deleted. Time is moved through the store's clock, which stamps every row, so "activity at a later
//! time" is the same time the reaper compares against.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lap::control::{Control, ControlError, Services};
use lap::sandbox::Sandbox;
use lap::sandbox::fake::Fake;
use lap::store::{NewAgent, SessionRow, Store};
use lap::wire::api::{Agent, SessionStatus};
use uuid::Uuid;

use crate::support::wait_until_async;

const TTL: Duration = Duration::from_secs(3600);
const DEADLINE: Duration = Duration::from_secs(10);

struct World {
    control: Arc<Control>,
    store: Store,
    fake: Arc<Fake>,
    now: Arc<Mutex<time::OffsetDateTime>>,
    agent: Agent,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let now = Arc::new(Mutex::new(time::OffsetDateTime::now_utc()));
        let clock = now.clone();
        let store = Store::open(dir.path())
            .unwrap()
            .with_clock(Arc::new(move || *clock.lock().unwrap()));
        let fake = Arc::new(Fake::default());
        let control =
            crate::support::plane::control(dir.path(), &store, fake.clone(), |s| Services { idle_ttl: TTL, ..s });
        let agent = store
            .create_agent(NewAgent {
                name: "demo".into(),
                harness_id: "shell".into(),
                command: None,
                repo_url: None,
                branch: "main".into(),
                prompt: None,
                model: None,
                env: Default::default(),
                credentials: Vec::new(),
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
            _dir: dir,
        }
    }

    fn advance(&self, by: Duration) {
        *self.now.lock().unwrap() += by;
    }

    async fn session(&self, id: Uuid) -> SessionRow {
        self.store.get_session(id).await.unwrap().unwrap()
    }

    /// Waits (bounded) until the session leaves `creating`.
    async fn settled(&self, id: Uuid) -> SessionRow {
        wait_until_async(&format!("session {id} settled"), DEADLINE, || async {
            let row = self.session(id).await;
            (row.status != SessionStatus::Creating).then_some(row)
        })
        .await
    }

    async fn ready_session(&self) -> SessionRow {
        let row = self.control.create_session(&self.agent, None).await.unwrap();
        let row = self.settled(row.id).await;
        assert_eq!(row.status, SessionStatus::Ready, "{row:?}");
        row
    }

    async fn sandbox_exists(&self, id: &str) -> bool {
        self.fake.list().await.unwrap().iter().any(|s| s.id == id)
    }
}

#[tokio::test]
async fn sessions_idle_past_the_ttl_are_reaped_and_activity_resets_the_clock() {
    let w = World::new().await;
    let busy = w.ready_session().await;
    let idle = w.ready_session().await;

    w.advance(Duration::from_secs(30 * 60));
    assert_eq!(
        w.control.reconcile().await.unwrap().reaped,
        0,
        "nobody is idle for an hour yet"
    );
    w.store.touch_session(busy.id).await.unwrap();

    w.advance(Duration::from_secs(40 * 60));
    let pass = w.control.reconcile().await.unwrap();
    assert_eq!((pass.reaped, pass.died), (1, 0));
    let reaped = w.session(idle.id).await;
    assert_eq!(reaped.status, SessionStatus::Dead);
    assert_eq!(
        reaped.failure_reason.as_deref(),
        Some("reaped after 1h without activity")
    );
    assert!(
        !w.sandbox_exists(idle.sandbox_id.as_deref().unwrap()).await,
        "the reaped sandbox is deleted"
    );
    assert_eq!(
        w.session(busy.id).await.status,
        SessionStatus::Ready,
        "recent activity keeps it alive"
    );

    w.advance(Duration::from_secs(31 * 60));
    assert_eq!(w.control.reconcile().await.unwrap().reaped, 1);
    assert_eq!(w.session(busy.id).await.status, SessionStatus::Dead);
    assert_eq!(
        w.control.reconcile().await.unwrap(),
        Default::default(),
        "a second pass changes nothing"
    );
}

#[tokio::test]
async fn a_sandbox_that_stops_by_itself_makes_its_session_dead() {
    let w = World::new().await;
    let row = w.ready_session().await;
    w.fake.delete(row.sandbox_id.as_deref().unwrap()).await.unwrap();
    let pass = w.control.reconcile().await.unwrap();
    assert_eq!((pass.reaped, pass.died), (0, 1));
    let dead = w.session(row.id).await;
    assert_eq!(dead.status, SessionStatus::Dead);
    assert_eq!(
        dead.failure_reason.as_deref(),
        Some("the sandbox stopped: its harness exited")
    );
}

#[tokio::test(start_paused = true)]
async fn the_reconciler_runs_on_its_own_tick() {
    let w = World::new().await;
    let row = w.ready_session().await;
    w.control.spawn_reconciler(Duration::from_secs(2));
    w.fake.delete(row.sandbox_id.as_deref().unwrap()).await.unwrap();
    // Paused time jumps ahead whenever the runtime is idle, so this waits for ticks, not seconds.
    wait_until_async("the reconciler noticing", Duration::from_secs(60), || async {
        w.session(row.id).await.status == SessionStatus::Dead
    })
    .await;
}

#[tokio::test]
async fn restart_gives_a_session_a_fresh_sandbox_from_ready_or_dead() {
    let w = World::new().await;
    let row = w.ready_session().await;
    let first = row.sandbox_id.clone().unwrap();

    let restarted = w.control.restart_session(row.id).await.unwrap().unwrap();
    assert_eq!(restarted.status, SessionStatus::Creating);
    let again = w.settled(row.id).await;
    assert_eq!(again.status, SessionStatus::Ready);
    let second = again.sandbox_id.clone().unwrap();
    assert_ne!(first, second);
    assert!(!w.sandbox_exists(&first).await, "the old sandbox is deleted");

    w.control.delete_session(row.id).await.unwrap();
    assert_eq!(w.session(row.id).await.status, SessionStatus::Dead);
    w.control.restart_session(row.id).await.unwrap();
    let revived = w.settled(row.id).await;
    assert_eq!(revived.status, SessionStatus::Ready);
    assert_eq!(revived.failure_reason, None);
    assert!(w.sandbox_exists(revived.sandbox_id.as_deref().unwrap()).await);
    assert!(w.control.restart_session(Uuid::new_v4()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_creating_session_cannot_be_restarted() {
    let w = World::new().await;
    let row = w.control.create_session(&w.agent, None).await.unwrap();
    // The fake creates instantly, so make the row `creating` again the way a restart would.
    w.settled(row.id).await;
    w.store.restart_session(row.id).await.unwrap();
    match w.control.restart_session(row.id).await {
        Err(ControlError::Conflict(message)) => assert!(message.contains("creating"), "{message}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn a_paused_session_is_not_restarted_and_keeps_its_sandbox() {
    let w = World::new().await;
    let row = w.ready_session().await;
    let sandbox = row.sandbox_id.clone().unwrap();
    // The in-memory backend cannot freeze, so the row is made `paused` the way a pause records it.
    let paused = w
        .store
        .update_session(row.id, lap::store::SessionUpdate::Paused)
        .await
        .unwrap()
        .unwrap();
    assert!(paused.applied);
    match w.control.restart_session(row.id).await {
        Err(ControlError::Conflict(message)) => assert!(message.contains("changed"), "{message}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(w.session(row.id).await.status, SessionStatus::Paused);
    assert!(w.sandbox_exists(&sandbox).await, "a refused restart deletes nothing");
}

#[tokio::test]
async fn a_sandbox_left_behind_by_a_session_now_on_another_is_deleted() {
    let w = World::new().await;
    let row = w.ready_session().await;
    // What a restart whose delete failed leaves: a sandbox made for the session, which lives on.
    let spec = lap::sandbox::SandboxSpec {
        harness_id: "shell".into(),
        session_id: Some(row.id.to_string()),
        ..Default::default()
    };
    let left = w.fake.create(&spec).await.unwrap();
    assert!(w.sandbox_exists(&left.id).await);
    let pass = w.control.reconcile().await.unwrap();
    assert_eq!((pass.reaped, pass.died), (0, 0));
    assert!(!w.sandbox_exists(&left.id).await, "the sandbox nobody owns is deleted");
    let still = w.session(row.id).await;
    assert_eq!(still.status, SessionStatus::Ready);
    assert!(
        w.sandbox_exists(still.sandbox_id.as_deref().unwrap()).await,
        "its own sandbox stays"
    );
}
