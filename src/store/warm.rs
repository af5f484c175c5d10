//! The warm pool's rows: one per warm sandbox, from the moment the pool starts making it until the
//! session that claimed it has settled.
//!
//! A row is `warming` (being created; `sandbox_id` is set once the backend made it), `ready` (can be
//! claimed) or `claimed` (by `session_id`; the row goes once that session leaves `creating`). The
//! claim is one conditional `UPDATE … WHERE status = 'ready'` on a single connection, so two
//! sessions can never be handed the same sandbox, and recycling deletes a row only while it is still
//! `ready`, so a sandbox is never recycled under a session that just claimed it.

use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::{Store, StoreError, parse_uuid};

/// Where a warm sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmStatus {
    Warming,
    Ready,
    Claimed,
}

impl WarmStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warming => "warming",
            Self::Ready => "ready",
            Self::Claimed => "claimed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "ready" => Self::Ready,
            "claimed" => Self::Claimed,
            _ => Self::Warming,
        }
    }
}

/// A warm sandbox as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmRow {
    pub id: Uuid,
    /// The backend's id, once created.
    pub sandbox_id: Option<String>,
    /// Where the control plane reaches its harness.
    pub sandbox_url: Option<String>,
    pub harness_id: String,
    /// The agent it was made for (its repo is cloned), or `None`: any agent of the harness.
    pub agent_id: Option<Uuid>,
    /// The agent's settings when it was made: a changed agent does not get it.
    pub fingerprint: Option<String>,
    pub status: WarmStatus,
    pub session_id: Option<Uuid>,
    pub created_at: String,
    pub ready_at: Option<String>,
    pub claimed_at: Option<String>,
}

const WARM_SELECT: &str =
    "SELECT id, sandbox_id, sandbox_url, harness_id, agent_id, fingerprint, status, session_id, created_at,
    ready_at, claimed_at FROM warm_sandboxes";

fn warm_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<WarmRow> {
    let uuid = |text: Option<String>| text.and_then(|t| parse_uuid(&t).ok());
    Ok(WarmRow {
        id: uuid(Some(row.get(0)?)).unwrap_or_default(),
        sandbox_id: row.get(1)?,
        sandbox_url: row.get(2)?,
        harness_id: row.get(3)?,
        agent_id: uuid(row.get(4)?),
        fingerprint: row.get(5)?,
        status: WarmStatus::parse(&row.get::<_, String>(6)?),
        session_id: uuid(row.get(7)?),
        created_at: row.get(8)?,
        ready_at: row.get(9)?,
        claimed_at: row.get(10)?,
    })
}

impl Store {
    /// Records a sandbox the pool starts making (`warming`, no sandbox yet).
    pub async fn insert_warm(
        &self,
        id: Uuid,
        harness_id: String,
        agent_id: Option<Uuid>,
        fingerprint: Option<String>,
    ) -> Result<(), StoreError> {
        let now = self.timestamp();
        self.call(move |conn, _| {
            conn.execute(
                "INSERT INTO warm_sandboxes (id, harness_id, agent_id, fingerprint, status, created_at)
                 VALUES (?1, ?2, ?3, ?4, 'warming', ?5)",
                params![
                    id.to_string(),
                    harness_id,
                    agent_id.map(|a| a.to_string()),
                    fingerprint,
                    now
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Names the backend's sandbox of a `warming` row; `false` when the row is gone.
    pub async fn set_warm_sandbox(
        &self,
        id: Uuid,
        sandbox_id: String,
        sandbox_url: String,
    ) -> Result<bool, StoreError> {
        self.call(move |conn, _| {
            let changed = conn.execute(
                "UPDATE warm_sandboxes SET sandbox_id = ?1, sandbox_url = ?2 WHERE id = ?3 AND status = 'warming'",
                params![sandbox_id, sandbox_url, id.to_string()],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    /// Makes a `warming` row claimable; `false` when the row is gone.
    pub async fn mark_warm_ready(&self, id: Uuid) -> Result<bool, StoreError> {
        let now = self.timestamp();
        self.call(move |conn, _| {
            let changed = conn.execute(
                "UPDATE warm_sandboxes SET status = 'ready', ready_at = ?1
                 WHERE id = ?2 AND status = 'warming' AND sandbox_id IS NOT NULL",
                params![now, id.to_string()],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    /// Atomically hands one `ready` sandbox of `harness_id` to `session`: the agent's own (made with
    /// the same `fingerprint`, repo cloned) first, else one made for any agent of the harness, oldest
    /// first. `None` when there is none.
    pub async fn claim_warm(
        &self,
        session: Uuid,
        harness_id: String,
        agent_id: Uuid,
        fingerprint: String,
        harness_wide: bool,
    ) -> Result<Option<WarmRow>, StoreError> {
        let now = self.timestamp();
        self.call(move |conn, _| {
            conn.query_row(
                "UPDATE warm_sandboxes SET status = 'claimed', session_id = ?1, claimed_at = ?2
                 WHERE status = 'ready' AND id = (
                     SELECT id FROM warm_sandboxes
                     WHERE status = 'ready' AND harness_id = ?3
                       AND ((agent_id = ?4 AND fingerprint = ?5) OR (?6 AND agent_id IS NULL))
                     ORDER BY agent_id IS NULL, created_at LIMIT 1)
                 RETURNING id, sandbox_id, sandbox_url, harness_id, agent_id, fingerprint, status, session_id, created_at,
                     ready_at, claimed_at",
                params![
                    session.to_string(),
                    now,
                    harness_id,
                    agent_id.to_string(),
                    fingerprint,
                    harness_wide
                ],
                warm_row,
            )
            .optional()
            .map_err(Into::into)
        })
        .await
    }

    /// Deletes a row if it is in `status` (a recycle never takes a claimed sandbox); `false` when it
    /// was not.
    pub async fn delete_warm(&self, id: Uuid, status: WarmStatus) -> Result<bool, StoreError> {
        self.call(move |conn, _| {
            let changed = conn.execute(
                "DELETE FROM warm_sandboxes WHERE id = ?1 AND status = ?2",
                params![id.to_string(), status.as_str()],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    /// Every row, oldest first.
    pub async fn warm_rows(&self) -> Result<Vec<WarmRow>, StoreError> {
        self.call(|conn, _| {
            conn.prepare(&format!("{WARM_SELECT} ORDER BY created_at, id"))?
                .query_map([], warm_row)?
                .collect::<Result<_, _>>()
                .map_err(Into::into)
        })
        .await
    }

    /// Forgets the claims whose session has left `creating` (it owns its sandbox by then, or it
    /// failed and deleted it). Returns how many went.
    pub async fn forget_settled_claims(&self) -> Result<usize, StoreError> {
        self.call(|conn, _| {
            Ok(conn.execute(
                "DELETE FROM warm_sandboxes WHERE status = 'claimed' AND (session_id IS NULL OR session_id NOT IN
                    (SELECT id FROM sessions WHERE status = 'creating'))",
                [],
            )?)
        })
        .await
    }

    /// Agents with a session created at or after `since` (as stored), most recent first.
    pub async fn recent_agents(&self, since: String) -> Result<Vec<Uuid>, StoreError> {
        self.call(move |conn, _| {
            let ids: Vec<String> = conn
                .prepare(
                    "SELECT agent_id FROM sessions WHERE created_at >= ?1
                     GROUP BY agent_id ORDER BY max(created_at) DESC, agent_id",
                )?
                .query_map([since], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            Ok(ids.iter().filter_map(|id| parse_uuid(id).ok()).collect())
        })
        .await
    }

    /// The harnesses agents use, the one with the most recent session first, then by how many
    /// agents use it.
    pub async fn harnesses_in_use(&self) -> Result<Vec<String>, StoreError> {
        self.call(|conn, _| {
            conn.prepare(
                "SELECT a.harness_id FROM agents a LEFT JOIN sessions s ON s.agent_id = a.id
                 GROUP BY a.harness_id
                 ORDER BY max(s.created_at) IS NULL, max(s.created_at) DESC, count(DISTINCT a.id) DESC, a.harness_id",
            )?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()
            .map_err(Into::into)
        })
        .await
    }
}
