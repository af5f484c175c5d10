//! The web UI's cookie sessions: the SHA-256 digest of each token (never the token), when it
//! expires in Unix seconds, and the API key it acts as (none: the master key), so a restart of
//! `lap serve` keeps browsers signed in.

use rusqlite::params;
use uuid::Uuid;

use super::{Store, StoreError};

/// A stored cookie session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UiSession {
    pub digest: [u8; 32],
    pub expires_at: i64,
    /// The API key it acts as; none: the master key.
    pub key: Option<Uuid>,
    /// Whether the key was made for this session (an OIDC sign-in), so signing out revokes it.
    pub own_key: bool,
}

impl Store {
    /// The sessions that have not expired at `now`; expired ones are deleted.
    pub async fn ui_sessions(&self, now: i64) -> Result<Vec<UiSession>, StoreError> {
        self.call(move |conn, _| {
            conn.execute("DELETE FROM ui_sessions WHERE expires_at <= ?1", [now])?;
            let rows: Vec<(Vec<u8>, i64, Option<String>, bool)> = conn
                .prepare("SELECT digest, expires_at, key_id, own_key FROM ui_sessions")?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows
                .into_iter()
                .filter_map(|(digest, expires_at, key, own_key)| {
                    Some(UiSession {
                        digest: <[u8; 32]>::try_from(digest.as_slice()).ok()?,
                        expires_at,
                        key: match key {
                            Some(key) => Some(Uuid::parse_str(&key).ok()?),
                            None => None,
                        },
                        own_key,
                    })
                })
                .collect())
        })
        .await
    }

    /// Keeps a new session, and only the `keep` that expire last.
    pub async fn insert_ui_session(&self, session: UiSession, keep: usize) -> Result<(), StoreError> {
        self.call(move |conn, _| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO ui_sessions (digest, expires_at, key_id, own_key) VALUES (?1, ?2, ?3, ?4)",
                params![
                    session.digest.as_slice(),
                    session.expires_at,
                    session.key.map(|key| key.to_string()),
                    session.own_key
                ],
            )?;
            tx.execute(
                "DELETE FROM ui_sessions WHERE digest NOT IN
                    (SELECT digest FROM ui_sessions ORDER BY expires_at DESC LIMIT ?1)",
                [keep as i64],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Ends a session.
    pub async fn delete_ui_session(&self, digest: [u8; 32]) -> Result<(), StoreError> {
        self.call(move |conn, _| {
            conn.execute("DELETE FROM ui_sessions WHERE digest = ?1", [digest.as_slice()])?;
            Ok(())
        })
        .await
    }
}
