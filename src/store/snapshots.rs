//! Snapshots of session workspaces: one row per named copy kept under the data dir
//! (`control/workspace.rs` owns the files; this owns only the rows).
//!
//! Invariant: a name is unique (the table's `UNIQUE` constraint, so two concurrent creates with one
//! name cannot both succeed: the second gets [`StoreError::SnapshotNameTaken`]).

use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::{Store, StoreError};

/// One stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    pub id: Uuid,
    pub name: String,
    pub session_id: Uuid,
    pub agent_name: String,
    pub size_bytes: u64,
    pub created_at: String,
    /// The name of the user who made it with an API key (store/teams.rs's `owners`); none: the
    /// team's. Read, never written with the row.
    pub owner: Option<String>,
}

const SELECT: &str = "SELECT id, name, session_id, agent_name, size_bytes, created_at,
    (SELECT u.name FROM owners o JOIN users u ON u.id = o.user_id WHERE o.kind = 'snapshot' AND o.object_id = snapshots.id)
    FROM snapshots";

fn snapshot_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SnapshotRow> {
    let id: String = row.get(0)?;
    let session: String = row.get(2)?;
    Ok(SnapshotRow {
        id: Uuid::parse_str(&id).unwrap_or_default(),
        name: row.get(1)?,
        session_id: Uuid::parse_str(&session).unwrap_or_default(),
        agent_name: row.get(3)?,
        size_bytes: row.get::<_, i64>(4)?.max(0) as u64,
        created_at: row.get(5)?,
        owner: row.get(6)?,
    })
}

impl Store {
    /// Records a snapshot whose files are in place; a name that exists is refused.
    pub async fn insert_snapshot(&self, row: SnapshotRow) -> Result<(), StoreError> {
        self.call(move |conn, _| {
            let inserted = conn.execute(
                "INSERT INTO snapshots (id, name, session_id, agent_name, size_bytes, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    row.id.to_string(),
                    row.name,
                    row.session_id.to_string(),
                    row.agent_name,
                    row.size_bytes as i64,
                    row.created_at
                ],
            );
            match inserted {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                    Err(StoreError::SnapshotNameTaken(row.name))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Every snapshot in `scope`, newest first.
    pub async fn list_snapshots(&self, scope: super::Scope) -> Result<Vec<SnapshotRow>, StoreError> {
        self.call(move |conn, _| {
            conn.prepare(&format!(
                "{SELECT} WHERE ?1 IS NULL OR id IN (SELECT object_id FROM owners WHERE kind = 'snapshot' AND user_id = ?1)
                 ORDER BY created_at DESC, name"
            ))?
            .query_map([scope.member()], snapshot_row)?
                .collect::<Result<_, _>>()
                .map_err(Into::into)
        })
        .await
    }

    /// The snapshot named `key`, or whose id is `key`.
    pub async fn find_snapshot(&self, key: &str) -> Result<Option<SnapshotRow>, StoreError> {
        let key = key.to_owned();
        self.call(move |conn, _| {
            conn.query_row(&format!("{SELECT} WHERE name = ?1 OR id = ?1"), [&key], snapshot_row)
                .optional()
                .map_err(Into::into)
        })
        .await
    }

    /// Deletes the row of snapshot `id`; whether there was one.
    pub async fn delete_snapshot(&self, id: Uuid) -> Result<bool, StoreError> {
        self.call(move |conn, _| Ok(conn.execute("DELETE FROM snapshots WHERE id = ?1", [id.to_string()])? == 1))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_snapshot_name_is_taken_once_and_found_by_name_or_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let row = SnapshotRow {
            id: Uuid::new_v4(),
            name: "before-refactor".into(),
            session_id: Uuid::new_v4(),
            agent_name: "a".into(),
            size_bytes: 42,
            created_at: store.timestamp(),
            owner: None,
        };
        store.insert_snapshot(row.clone()).await.unwrap();
        let again = SnapshotRow {
            id: Uuid::new_v4(),
            ..row.clone()
        };
        assert!(matches!(
            store.insert_snapshot(again).await,
            Err(StoreError::SnapshotNameTaken(name)) if name == "before-refactor"
        ));
        assert_eq!(store.find_snapshot("before-refactor").await.unwrap(), Some(row.clone()));
        assert_eq!(
            store.find_snapshot(&row.id.to_string()).await.unwrap(),
            Some(row.clone())
        );
        assert!(store.delete_snapshot(row.id).await.unwrap());
        assert_eq!(
            store.list_snapshots(super::super::Scope::All).await.unwrap(),
            Vec::new()
        );
    }

    #[tokio::test]
    async fn a_members_listing_holds_their_own_snapshots_only() {
        use super::super::Scope;
        use super::super::teams::Owned;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let max = store.create_user("max".into()).await.unwrap().id;
        let mia = store.create_user("mia".into()).await.unwrap().id;
        let mut ids = Vec::new();
        for (name, owner) in [("of-max", Some(max)), ("of-mia", Some(mia)), ("of-the-team", None)] {
            let row = SnapshotRow {
                id: Uuid::new_v4(),
                name: name.into(),
                session_id: Uuid::new_v4(),
                agent_name: "a".into(),
                size_bytes: 1,
                created_at: store.timestamp(),
                owner: None,
            };
            store.insert_snapshot(row.clone()).await.unwrap();
            if let Some(owner) = owner {
                store.set_owner(Owned::Snapshot, row.id, owner).await.unwrap();
            }
            ids.push(row.id);
        }
        let names = |rows: Vec<SnapshotRow>| rows.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(
            names(store.list_snapshots(Scope::Member(max)).await.unwrap()),
            ["of-max"]
        );
        assert_eq!(
            names(store.list_snapshots(Scope::Member(mia)).await.unwrap()),
            ["of-mia"]
        );
        // Each shows its owner's name; the team's none.
        let owners: Vec<(String, Option<String>)> = store
            .list_snapshots(Scope::All)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.name, r.owner))
            .collect();
        assert_eq!(owners.len(), 3);
        for (name, owner) in [("of-max", Some("max")), ("of-mia", Some("mia")), ("of-the-team", None)] {
            assert!(
                owners.contains(&(name.to_owned(), owner.map(str::to_owned))),
                "{owners:?}"
            );
        }
        assert_eq!(store.owner_of(Owned::Snapshot, ids[0]).await.unwrap(), Some(max));
        assert_eq!(store.owner_of(Owned::Snapshot, ids[2]).await.unwrap(), None);
    }
}
