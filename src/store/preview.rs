//! Revoked preview URLs: per session and port (port 0 for every port of the session), the moment
//! before which every URL issued is void, in Unix milliseconds. A URL is never stored, only this
//! watermark, so revoking is one row whatever the number of URLs handed out.

use rusqlite::params;
use uuid::Uuid;

use super::{Store, StoreError};

impl Store {
    /// Voids the preview URLs of `session` (`port` 0: of every port) issued up to `before_ms`.
    pub async fn revoke_previews(&self, session: Uuid, port: u16, before_ms: i64) -> Result<(), StoreError> {
        self.call(move |conn, _| {
            conn.execute(
                "INSERT INTO preview_revocations (session_id, port, revoked_before) VALUES (?1, ?2, ?3)
                 ON CONFLICT (session_id, port) DO UPDATE SET
                     revoked_before = MAX(revoked_before, excluded.revoked_before)",
                params![session.to_string(), port, before_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// The latest revocation that covers `session`'s `port` (its own or the session-wide one), in
    /// Unix milliseconds; 0 when none.
    pub async fn previews_revoked_before(&self, session: Uuid, port: u16) -> Result<i64, StoreError> {
        self.call(move |conn, _| {
            let before: Option<i64> = conn.query_row(
                "SELECT MAX(revoked_before) FROM preview_revocations WHERE session_id = ?1 AND port IN (0, ?2)",
                params![session.to_string(), port],
                |row| row.get(0),
            )?;
            Ok(before.unwrap_or(0))
        })
        .await
    }
}
