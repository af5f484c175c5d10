//! The message API's tables: a session's conversation (user and assistant messages, in order) and
//! its event log (our schema, by sequence number). Both outlive the tool process, the sandbox and
//! restarts of `lap serve`; both go with the session.

use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::{Store, StoreError, json};
use crate::wire::messages::{Event, Message};

/// Events kept per session; older ones are dropped.
pub const MAX_EVENTS: i64 = 100_000;

impl Store {
    /// Appends a message to a session's conversation, or replaces the one with the same id.
    pub async fn put_message(&self, session: Uuid, message: Message) -> Result<(), StoreError> {
        let text = json(&message);
        self.call(move |conn, _| {
            let tx = conn.transaction()?;
            let key = session.to_string();
            let replaced = tx.execute(
                "UPDATE session_messages SET message = ?1 WHERE session_id = ?2 AND id = ?3",
                params![text, key, message.info.id],
            )?;
            if replaced == 0 {
                tx.execute(
                    "INSERT INTO session_messages (session_id, position, id, message)
                     VALUES (?1, (SELECT coalesce(max(position), 0) + 1 FROM session_messages WHERE session_id = ?1), ?2, ?3)",
                    params![key, message.info.id, text],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// A session's conversation, oldest first.
    pub async fn messages(&self, session: Uuid) -> Result<Vec<Message>, StoreError> {
        self.call(move |conn, _| {
            let rows: Vec<String> = conn
                .prepare("SELECT message FROM session_messages WHERE session_id = ?1 ORDER BY position")?
                .query_map([session.to_string()], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            Ok(rows.iter().filter_map(|text| serde_json::from_str(text).ok()).collect())
        })
        .await
    }

    /// Appends events to a session's log in one transaction (an event already there is kept).
    pub async fn insert_events(&self, session: Uuid, events: Vec<Event>) -> Result<(), StoreError> {
        self.call(move |conn, _| {
            let tx = conn.transaction()?;
            let key = session.to_string();
            for event in &events {
                let text = json(event);
                tx.execute(
                    "INSERT OR IGNORE INTO session_events (session_id, seq, event) VALUES (?1, ?2, ?3)",
                    params![key, event.seq as i64, text],
                )?;
            }
            if let Some(last) = events.last() {
                tx.execute(
                    "DELETE FROM session_events WHERE session_id = ?1 AND seq <= ?2",
                    params![key, last.seq as i64 - MAX_EVENTS],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// A session's events after `after`, oldest first, at most `limit`.
    pub async fn events(&self, session: Uuid, after: u64, limit: u32) -> Result<Vec<Event>, StoreError> {
        self.call(move |conn, _| {
            let rows: Vec<String> = conn
                .prepare("SELECT event FROM session_events WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")?
                .query_map(params![session.to_string(), after as i64, limit], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            Ok(rows.iter().filter_map(|text| serde_json::from_str(text).ok()).collect())
        })
        .await
    }

    /// The sequence number of a session's last event (0 when it has none).
    pub async fn last_event_seq(&self, session: Uuid) -> Result<u64, StoreError> {
        self.call(move |conn, _| {
            let seq: Option<i64> = conn
                .query_row(
                    "SELECT max(seq) FROM session_events WHERE session_id = ?1",
                    [session.to_string()],
                    |row| row.get(0),
                )
                .optional()?
                .flatten();
            Ok(seq.unwrap_or(0) as u64)
        })
        .await
    }

    /// Records the tool's own conversation id (what a new tool process resumes).
    pub async fn set_harness_session_id(&self, session: Uuid, native: String) -> Result<(), StoreError> {
        self.call(move |conn, _| {
            conn.execute(
                "UPDATE sessions SET harness_session_id = ?1 WHERE id = ?2",
                params![native, session.to_string()],
            )?;
            Ok(())
        })
        .await
    }
}
