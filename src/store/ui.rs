//! The web UI's cookie sessions: the SHA-256 digest of each token (never the token) and when it
//! expires, in Unix seconds, so a restart of `lap serve` keeps browsers signed in.

use rusqlite::params;

use super::{Store, StoreError};

impl Store {
    /// The sessions that have not expired at `now`; expired ones are deleted.
    pub async fn ui_sessions(&self, now: i64) -> Result<Vec<([u8; 32], i64)>, StoreError> {
        self.call(move |conn, _| {
            conn.execute("DELETE FROM ui_sessions WHERE expires_at <= ?1", [now])?;
            let rows: Vec<(Vec<u8>, i64)> = conn
                .prepare("SELECT digest, expires_at FROM ui_sessions")?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows
                .into_iter()
                .filter_map(|(digest, expires)| Some((<[u8; 32]>::try_from(digest.as_slice()).ok()?, expires)))
                .collect())
        })
        .await
    }

    /// Keeps a new session, and only the `keep` that expire last.
    pub async fn insert_ui_session(&self, digest: [u8; 32], expires_at: i64, keep: usize) -> Result<(), StoreError> {
        self.call(move |conn, _| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO ui_sessions (digest, expires_at) VALUES (?1, ?2)",
                params![digest.as_slice(), expires_at],
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
