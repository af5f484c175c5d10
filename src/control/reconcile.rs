//! The reconciler: brings the store and the backend in line (periodically, on events, after a
//! restart) — every `--reconcile-every`, on each of the backend's events, and once after a restart
//! of `lap serve` (recovery).
//!
//! Its shape is observe, decide, act. What a live session needs is [`decide`]d by a pure function of
//! what was observed (its status, whether its sandbox is listed, how long it has been idle) and the
//! reaper's [`Policy`]; the [`Action`] is then carried out through the same service calls a person
//! makes (a reap or a died sandbox through [`Control::end`], a hibernation, a pause). Which listed
//! sandboxes nobody owns is one rule, [`orphans`], used by both the periodic pass and recovery.
//!
//! Ordering keeps it race-free without locks: sessions are read before the sandboxes are listed
//! (a session that became ready before the read had its sandbox made before the listing, so it is
//! never mistaken for one whose sandbox died), owners after the listing (a session inserted
//! meanwhile already owns its sandbox), and the warm pool's rows under its sweep guard (no warm
//! sandbox is being made meanwhile). Every step is a conditional store update, so a pass is
//! idempotent and a session ended by someone else meanwhile is left to them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use uuid::Uuid;

use super::{Control, ControlError, End, idle_for};
use crate::sandbox::{SandboxChange, SandboxError, SandboxEvent, SandboxInfo};
use crate::store::warm::WarmStatus;
use crate::store::{SessionRow, StoreError};
use crate::wire::api::SessionStatus;

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

/// What the reconciler saw of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub status: SessionStatus,
    /// Whether the sandbox the session names is listed by the backend (`None`: it names none).
    pub sandbox_listed: Option<bool>,
    /// How long ago its last activity was (`None`: not known).
    pub idle: Option<Duration>,
}

/// The reaper's settings: when an idle session is paused, hibernated and, last, deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Past this, the session is deleted with its workspace (`--idle-ttl`).
    pub idle_ttl: Duration,
    /// `--pause-after` (`None`: never).
    pub pause_after: Option<Duration>,
    /// `--hibernate-after` (`None`: never).
    pub hibernate_after: Option<Duration>,
    /// Whether workspaces are kept, without which there is no hibernation.
    pub workspaces: bool,
}

/// What the reconciler does to one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Its sandbox stopped by itself: the session is dead.
    Died,
    /// Idle past the TTL: deleted with its workspace.
    Reap,
    Hibernate,
    Pause,
}

/// The reconciler's decision for one session. A `ready` or `paused` session whose sandbox is no
/// longer listed died; past the idle TTL a live one is reaped (the last step); past
/// `--hibernate-after` a running one hibernates (when workspaces are kept); past `--pause-after` a
/// `ready` one pauses.
pub fn decide(observed: Observed, policy: &Policy) -> Action {
    let running = matches!(observed.status, SessionStatus::Ready | SessionStatus::Paused);
    match observed.status {
        SessionStatus::Ready | SessionStatus::Paused => match observed.sandbox_listed {
            None => return Action::Nothing,
            Some(false) => return Action::Died,
            Some(true) => {}
        },
        SessionStatus::Hibernated => {}
        _ => return Action::Nothing,
    }
    let Some(idle) = observed.idle else {
        return Action::Nothing;
    };
    let past = |after: Option<Duration>| after.is_some_and(|after| idle > after);
    if idle > policy.idle_ttl {
        Action::Reap
    } else if past(policy.hibernate_after) && running && policy.workspaces {
        Action::Hibernate
    } else if past(policy.pause_after) && observed.status == SessionStatus::Ready {
        Action::Pause
    } else {
        Action::Nothing
    }
}

/// The one rule for sandboxes nobody owns, which are deleted. A listed sandbox is owned when a live
/// session (`creating`, `ready` or `paused`) names it, or when it was made for a session (`session_id`)
/// that is still `creating` (its bring-up has not recorded it yet), or, made by the warm pool (no
/// session), when a warm row names it. `warm` is `None` when the pool's rows are not known (it is
/// making a sandbox): a sandbox of the pool is then kept, until the next pass.
pub fn orphans<'a>(
    sandboxes: &'a [SandboxInfo],
    live: &[SessionRow],
    warm: Option<&HashSet<String>>,
) -> Vec<&'a SandboxInfo> {
    let named: HashSet<&str> = live.iter().filter_map(|row| row.sandbox_id.as_deref()).collect();
    let creating: HashSet<String> = live
        .iter()
        .filter(|row| row.status == SessionStatus::Creating)
        .map(|row| row.id.to_string())
        .collect();
    sandboxes
        .iter()
        .filter(|sandbox| {
            let owned = named.contains(sandbox.id.as_str())
                || match &sandbox.session_id {
                    Some(session) => creating.contains(session),
                    None => warm.is_none_or(|warm| warm.contains(&sandbox.id)),
                };
            !owned
        })
        .collect()
}

/// How many sessions recovery re-attaches at once.
const RECOVER_PARALLEL: usize = 16;

/// How recovery ends a session it could not keep.
struct Ended {
    end: End,
    /// Its vault could not be attached again: its sandbox is deleted with it.
    reattach_failed: bool,
}

/// The ids of `sandboxes`, for lookups in constant time.
pub(super) fn listed_ids(sandboxes: &[SandboxInfo]) -> HashSet<&str> {
    sandboxes.iter().map(|s| s.id.as_str()).collect()
}

/// Why a ready session's vault could not be attached again after a restart of `lap serve`.
#[derive(Debug, thiserror::Error)]
pub enum ReattachError {
    #[error("the session has no sandbox")]
    NoSandbox,
    #[error("its agent is gone")]
    AgentGone,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

impl Control {
    /// The reaper's settings of this service.
    fn policy(&self) -> Policy {
        Policy {
            idle_ttl: self.idle_ttl,
            pause_after: self.lifecycle.pause_after,
            hibernate_after: self.lifecycle.hibernate_after,
            workspaces: self.lifecycle.workspaces.is_some(),
        }
    }

    /// One pass of the reconciler: marks `dead` the ready sessions whose sandbox stopped by itself,
    /// reaps, hibernates and pauses idle sessions ([`decide`]), and deletes sandboxes nobody owns
    /// ([`orphans`]; e.g. a launch that finished after `lap serve` was killed and restarted).
    /// Idempotent.
    pub async fn reconcile(&self) -> Result<Reconciled, ControlError> {
        // Sessions first, then sandboxes: a session that became ready before the query had its
        // sandbox created before the listing, so it cannot be mistaken for one whose sandbox died.
        let sessions = self
            .store
            .sessions_with_status(&[SessionStatus::Ready, SessionStatus::Paused, SessionStatus::Hibernated])
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
        for sandbox in orphans(&sandboxes, &live, warm.as_ref()) {
            tracing::info!(sandbox = %sandbox.id, "deleting a sandbox nobody owns");
            self.delete_sandbox(&sandbox.id).await;
        }
        self.store.forget_settled_claims().await?;
        let now = self.store.now_utc();
        let policy = self.policy();
        let mut done = Reconciled::default();
        // Looked up once per session: a set, so a pass stays linear in the sessions and sandboxes.
        let listed = listed_ids(&sandboxes);
        for row in &sessions {
            let observed = Observed {
                status: row.status,
                sandbox_listed: row.sandbox_id.as_deref().map(|id| listed.contains(id)),
                idle: idle_for(&row.last_seen_at, now),
            };
            self.act(row, decide(observed, &policy), &mut done).await?;
        }
        done.workspaces_removed = self.sweep_workspaces(now).await?;
        self.metrics.reaped.inc_by(done.reaped as u64);
        Ok(done)
    }

    /// Carries out the reconciler's decision for one session, counted in `done`.
    async fn act(&self, row: &SessionRow, action: Action, done: &mut Reconciled) -> Result<(), ControlError> {
        match action {
            Action::Nothing => {}
            Action::Died => {
                let sandbox = row.sandbox_id.as_deref().unwrap_or_default();
                let reason = "the sandbox stopped: its harness exited".to_owned();
                if self.sandbox_died(row.id, sandbox, reason).await? {
                    done.died += 1;
                }
            }
            Action::Reap => {
                let ttl = humantime::format_duration(self.idle_ttl);
                let reason = format!("reaped after {ttl} without activity");
                tracing::info!(session = %row.id, %reason, "reconciler");
                self.end(row.id, End::Dead(reason)).await?;
                self.remove_workspace(row.id).await;
                done.reaped += 1;
            }
            Action::Hibernate => {
                self.hibernate_session(row.id).await?;
                done.hibernated += 1;
            }
            Action::Pause => match self.pause_session(row.id).await {
                Ok(_) => done.paused += 1,
                // A backend that cannot pause at all (Kubernetes): the step does not apply.
                Err(ControlError::Sandbox(crate::sandbox::SandboxError::Unsupported { .. })) => {}
                Err(err) => tracing::warn!(session = %row.id, error = %err, "cannot pause an idle session"),
            },
        }
        Ok(())
    }

    /// Makes session `session` dead because its sandbox `sandbox` failed or went away by itself, if
    /// it is still `ready` (or `paused`) on that sandbox ([`End::SandboxDied`]); what is left of the
    /// sandbox is deleted. Returns whether the session died here.
    async fn sandbox_died(&self, session: Uuid, sandbox: &str, reason: String) -> Result<bool, ControlError> {
        let end = End::SandboxDied {
            sandbox: sandbox.to_owned(),
            reason: reason.clone(),
        };
        let died = self.end(session, end).await?.is_some();
        if died {
            tracing::info!(%session, %sandbox, %reason, "the sandbox of a session died");
            self.metrics.died.inc();
        }
        Ok(died)
    }

    /// Follows the backend's [`crate::sandbox::Sandbox::events`] (when it has them) until shutdown:
    /// a session whose sandbox failed (an image that cannot be pulled, a crash, an eviction, an OOM
    /// kill) or was deleted behind lap's back becomes `dead` with the reason at once, and a warm
    /// sandbox that failed leaves the pool. Sessions still `creating` learn it from their bring-up.
    pub fn spawn_sandbox_events(self: &Arc<Self>) {
        use futures_util::StreamExt;
        let Some(mut events) = self.sandbox.events() else {
            return;
        };
        let this = self.clone();
        self.tasks.spawn(async move {
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
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let started = std::time::Instant::now();
                if let Err(err) = this.reconcile().await {
                    tracing::warn!(error = %err, "reconciler pass failed");
                }
                this.metrics.reconcile(started.elapsed());
            }
        });
    }

    /// Brings the store and the backend back in line after `lap serve` (re)starts: interrupted
    /// bring-ups fail, ready sessions whose sandbox vanished die, the others get their vault again,
    /// and sandboxes nobody owns ([`orphans`]) are deleted.
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
        // Re-attaching is a round trip to each sandbox (on Kubernetes a Secret patch and a
        // port-forward), so [`RECOVER_PARALLEL`] sessions are re-attached at once: the time to
        // recover is not the sum of theirs. Sessions are then ended one by one, in order.
        let listed = listed_ids(&sandboxes);
        // The futures are made first: a stream mapping through a closure over borrowed rows does
        // not compile inside the spawned task that retries recovery (a higher-ranked lifetime).
        let attempts: Vec<_> = live
            .iter()
            .map(|row| {
                let present = row.sandbox_id.as_deref().is_some_and(|id| listed.contains(id));
                async move { (row, self.recover_session(row, present).await) }
            })
            .collect();
        let outcomes: Vec<(&SessionRow, Option<Ended>)> = futures_util::stream::iter(attempts)
            .buffered(RECOVER_PARALLEL)
            .collect()
            .await;
        // Sandboxes deleted here already, with their session.
        let mut ended = HashSet::new();
        for (row, outcome) in outcomes {
            let Some(Ended { end, reattach_failed }) = outcome else {
                continue;
            };
            if reattach_failed {
                ended.extend(row.sandbox_id.clone());
            }
            tracing::info!(session = %row.id, "recovering session after restart");
            self.end(row.id, end).await?;
        }
        let live = self
            .store
            .sessions_with_status(&[SessionStatus::Creating, SessionStatus::Ready, SessionStatus::Paused])
            .await?;
        let left: Vec<SandboxInfo> = sandboxes.into_iter().filter(|s| !ended.contains(&s.id)).collect();
        for sandbox in orphans(&left, &live, Some(&warm)) {
            tracing::info!(sandbox = %sandbox.id, "deleting a sandbox nobody owns");
            self.delete_sandbox(&sandbox.id).await;
        }
        Ok(())
    }

    /// What recovery does with live session `row` (`present`: its sandbox is listed): `None` once
    /// its vault is attached again and its agent watched, else how it is to end.
    async fn recover_session(self: &Arc<Self>, row: &SessionRow, present: bool) -> Option<Ended> {
        let end = match row.status {
            SessionStatus::Creating => End::Failed("bring-up was interrupted by a restart of lap serve".to_owned()),
            _ if !present => End::Dead("the sandbox vanished while lap serve was down".to_owned()),
            _ => match self.reattach_paused(row).await {
                Ok(()) => {
                    if let Some(sandbox) = &row.sandbox_id {
                        self.watch_agent(row.id, sandbox.clone());
                    }
                    return None;
                }
                Err(reason) => {
                    return Some(Ended {
                        end: End::Dead(format!("cannot re-attach the vault after a restart: {reason}")),
                        reattach_failed: true,
                    });
                }
            },
        };
        Some(Ended {
            end,
            reattach_failed: false,
        })
    }

    /// [`Self::reattach_vault`], thawing a paused session's sandbox for it (its harness hands over
    /// the egress listener) and freezing it again after.
    async fn reattach_paused(&self, row: &SessionRow) -> Result<(), ReattachError> {
        let paused = row.status == SessionStatus::Paused;
        if paused && let Some(sandbox) = &row.sandbox_id {
            self.sandbox.resume(sandbox).await?;
        }
        let attached = self.reattach_vault(row).await;
        if paused && let Some(sandbox) = &row.sandbox_id {
            self.sandbox.pause(sandbox).await?;
        }
        attached
    }

    async fn reattach_vault(&self, row: &SessionRow) -> Result<(), ReattachError> {
        let sandbox = row.sandbox_id.as_deref().ok_or(ReattachError::NoSandbox)?;
        let agent = self
            .store
            .find_agent(&row.agent_id.to_string())
            .await?
            .ok_or(ReattachError::AgentGone)?;
        let credentials = self.store.agent_credentials(agent.id).await?;
        let stubs = self.store.session_stubs(row.id).await?;
        Ok(self
            .attach_vault(row.id, Some(row.id), sandbox, &agent, credentials, &stubs)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn policy() -> Policy {
        Policy {
            idle_ttl: 60 * MIN,
            pause_after: Some(5 * MIN),
            hibernate_after: Some(20 * MIN),
            workspaces: true,
        }
    }

    #[test]
    fn the_decision_for_a_session_follows_from_what_was_observed() {
        use Action::*;
        use SessionStatus::*;
        let listed = Some(true);
        let gone = Some(false);
        // (status, sandbox listed, idle minutes, expected)
        let table = [
            (Ready, listed, Some(1), Nothing),
            (Ready, listed, Some(6), Pause),
            (Ready, listed, Some(21), Hibernate),
            (Ready, listed, Some(61), Reap),
            (Ready, listed, None, Nothing),
            (Ready, gone, Some(1), Died),
            (Ready, gone, Some(61), Died),
            (Ready, None, Some(61), Nothing),
            (Paused, listed, Some(6), Nothing),
            (Paused, listed, Some(21), Hibernate),
            (Paused, listed, Some(61), Reap),
            (Paused, gone, Some(1), Died),
            (Hibernated, None, Some(21), Nothing),
            (Hibernated, None, Some(61), Reap),
            (Creating, None, Some(61), Nothing),
            (Dead, listed, Some(61), Nothing),
            (Failed, gone, Some(61), Nothing),
        ];
        for (status, sandbox_listed, idle, expected) in table {
            let observed = Observed {
                status,
                sandbox_listed,
                idle: idle.map(|m| m * MIN),
            };
            assert_eq!(decide(observed, &policy()), expected, "{observed:?}");
        }
    }

    #[test]
    fn without_workspaces_or_steps_an_idle_session_only_waits_for_its_ttl() {
        let observed = |status, idle| Observed {
            status,
            sandbox_listed: Some(true),
            idle: Some(idle * MIN),
        };
        let no_workspaces = Policy {
            workspaces: false,
            ..policy()
        };
        // Past --hibernate-after, a session that cannot hibernate is paused instead.
        assert_eq!(
            decide(observed(SessionStatus::Ready, 21), &no_workspaces),
            Action::Pause
        );
        assert_eq!(
            decide(observed(SessionStatus::Paused, 21), &no_workspaces),
            Action::Nothing
        );
        let no_steps = Policy {
            pause_after: None,
            hibernate_after: None,
            ..policy()
        };
        assert_eq!(decide(observed(SessionStatus::Ready, 59), &no_steps), Action::Nothing);
        assert_eq!(decide(observed(SessionStatus::Ready, 61), &no_steps), Action::Reap);
    }

    fn sandbox(id: &str, session: Option<Uuid>) -> SandboxInfo {
        SandboxInfo {
            id: id.into(),
            url: String::new(),
            harness_id: "shell".into(),
            session_id: session.map(|s| s.to_string()),
        }
    }

    fn session(status: SessionStatus, sandbox: Option<&str>) -> SessionRow {
        SessionRow {
            id: Uuid::new_v4(),
            agent_id: Uuid::nil(),
            agent_name: "a".into(),
            harness_id: "shell".into(),
            status,
            phase: None,
            phase_detail: None,
            sandbox_id: sandbox.map(str::to_owned),
            sandbox_url: None,
            tty_token: String::new(),
            harness_session_id: None,
            failure_reason: None,
            title: None,
            created_at: String::new(),
            last_seen_at: String::new(),
            stopped_at: None,
            owner: None,
        }
    }

    #[test]
    fn a_sandbox_is_an_orphan_unless_a_live_session_or_a_warm_row_owns_it() {
        let ready = session(SessionStatus::Ready, Some("sb-ready"));
        let creating = session(SessionStatus::Creating, None);
        let restarted = session(SessionStatus::Ready, Some("sb-new"));
        let gone = Uuid::new_v4();
        let live = [ready.clone(), creating.clone(), restarted.clone()];
        let warm = HashSet::from(["sb-warm".to_owned()]);
        // (sandbox, owned with the warm rows known, owned while the pool is making one)
        let table = [
            (sandbox("sb-ready", Some(ready.id)), true, true),
            (sandbox("sb-making", Some(creating.id)), true, true),
            (sandbox("sb-new", Some(restarted.id)), true, true),
            // Left behind by a restart: its session lives, on another sandbox.
            (sandbox("sb-old", Some(restarted.id)), false, false),
            (sandbox("sb-dead", Some(gone)), false, false),
            (sandbox("sb-warm", None), true, true),
            // A claimed warm sandbox: its session names it.
            (sandbox("sb-ready", None), true, true),
            (sandbox("sb-stray", None), false, true),
        ];
        for (listed, owned, owned_unknown) in table {
            let one = std::slice::from_ref(&listed);
            assert_eq!(orphans(one, &live, Some(&warm)).is_empty(), owned, "{listed:?}");
            assert_eq!(
                orphans(one, &live, None).is_empty(),
                owned_unknown,
                "{listed:?} (pool busy)"
            );
        }
    }
}
