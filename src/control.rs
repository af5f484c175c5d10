//! The services of `lap serve`: session bring-up, deletion and recovery after a restart.
//!
//! Handlers in `api` call these; this module never imports `api`. Every change of a session's state
//! goes through [`Store::update_session`], whose conditional updates make the transitions race-free:
//! a bring-up that finishes after the session was deleted finds it no longer `creating`, and deletes
//! the sandbox it just made instead of resurrecting the session. Background work is spawned on the
//! server's [`TaskTracker`] so shutdown can wait for it.

use std::sync::Arc;

use ring::rand::{SecureRandom, SystemRandom};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::sandbox::{ExecChunk, ExecSpec, Sandbox, SandboxError, SandboxSpec};
use crate::store::{SessionRow, SessionUpdate, Store, StoreError, now};
use crate::wire::api::{Agent, SessionStatus};

/// Phases of bring-up, as `GET /sessions/{id}` shows them.
pub mod phase {
    pub const CREATING_SANDBOX: &str = "creating_sandbox";
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// The session service.
pub struct Control {
    store: Store,
    sandbox: Arc<dyn Sandbox>,
    tasks: TaskTracker,
}

impl Control {
    pub fn new(store: Store, sandbox: Arc<dyn Sandbox>, tasks: TaskTracker) -> Arc<Self> {
        Arc::new(Self { store, sandbox, tasks })
    }

    pub fn backend(&self) -> &'static str {
        self.sandbox.name()
    }

    /// Records a new `creating` session and starts its bring-up in the background. Fails at once,
    /// writing nothing, when the backend cannot create sandboxes.
    pub async fn create_session(
        self: &Arc<Self>,
        agent: &Agent,
        title: Option<String>,
    ) -> Result<SessionRow, ControlError> {
        self.sandbox.check().await?;
        let row = SessionRow {
            id: Uuid::new_v4(),
            agent_id: agent.id,
            agent_name: agent.name.clone(),
            harness_id: agent.harness_id.clone(),
            status: SessionStatus::Creating,
            phase: Some(phase::CREATING_SANDBOX.to_owned()),
            phase_detail: None,
            sandbox_id: None,
            sandbox_url: None,
            tty_token: new_token(),
            harness_session_id: None,
            failure_reason: None,
            title,
            created_at: now(),
            last_seen_at: String::new(),
            stopped_at: None,
        };
        self.store.insert_session(row.clone()).await?;
        let this = self.clone();
        let spec = SandboxSpec {
            harness_id: agent.harness_id.clone(),
            session_id: Some(row.id.to_string()),
        };
        let id = row.id;
        self.tasks.spawn(async move { this.bring_up(id, spec).await });
        Ok(self.store.get_session(row.id).await?.unwrap_or(row))
    }

    async fn bring_up(&self, id: Uuid, spec: SandboxSpec) {
        let update = match self.sandbox.create(&spec).await {
            Ok(info) => {
                let update = SessionUpdate::Ready {
                    sandbox_id: info.id.clone(),
                    sandbox_url: info.url,
                    harness_session_id: None,
                };
                match self.store.update_session(id, update).await {
                    Ok(Some(row)) if row.status == SessionStatus::Ready => return,
                    // Deleted (or failed) while the sandbox was being made: do not leak it.
                    Ok(_) => {
                        self.delete_sandbox(&info.id).await;
                        return;
                    }
                    Err(err) => {
                        tracing::error!(session = %id, error = %err, "cannot record a ready session");
                        self.delete_sandbox(&info.id).await;
                        SessionUpdate::Failed {
                            reason: format!("the store failed: {err}"),
                        }
                    }
                }
            }
            Err(err) => SessionUpdate::Failed {
                reason: err.to_string(),
            },
        };
        if let Err(err) = self.store.update_session(id, update).await {
            tracing::error!(session = %id, error = %err, "cannot record a failed bring-up");
        }
    }

    /// Stops a session's sandbox and marks it `dead`. Returns the row before the call, or `None`
    /// when there is no such session.
    pub async fn delete_session(&self, id: Uuid) -> Result<Option<SessionRow>, ControlError> {
        let Some(row) = self.store.get_session(id).await? else {
            return Ok(None);
        };
        if row.status.is_terminal() {
            return Ok(Some(row));
        }
        self.store
            .update_session(
                id,
                SessionUpdate::Dead {
                    reason: "deleted".to_owned(),
                },
            )
            .await?;
        if let Some(sandbox) = &row.sandbox_id {
            self.delete_sandbox(sandbox).await;
        }
        Ok(Some(row))
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

    /// Brings the store and the backend back in line after `lap serve` (re)starts: interrupted
    /// bring-ups fail, ready sessions whose sandbox vanished die, sandboxes nobody owns are deleted.
    pub async fn recover(&self) -> Result<(), ControlError> {
        let sandboxes = self.sandbox.list().await?;
        let live = self
            .store
            .sessions_with_status(&[SessionStatus::Creating, SessionStatus::Ready])
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
                _ => continue,
            };
            tracing::info!(session = %row.id, "recovering session after restart");
            self.store.update_session(row.id, update).await?;
        }
        for sandbox in &sandboxes {
            let owned = live.iter().any(|row| {
                row.status == SessionStatus::Ready && row.sandbox_id.as_deref() == Some(sandbox.id.as_str())
            });
            if !owned {
                tracing::info!(sandbox = %sandbox.id, "deleting a sandbox no session owns");
                self.delete_sandbox(&sandbox.id).await;
            }
        }
        Ok(())
    }

    async fn delete_sandbox(&self, id: &str) {
        if let Err(err) = self.sandbox.delete(id).await {
            tracing::warn!(sandbox = id, error = %err, "cannot delete sandbox");
        }
    }
}

/// A fresh per-session TTY token: 32 random bytes, hex.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).expect("system random generator");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
