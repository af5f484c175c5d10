//! Users and their API keys (wire/teams.rs): a key is stored as its SHA-256 digest and its first
//! characters, never as itself; revoking stamps `revoked_at`, so the listing keeps what happened.
//! Also what goes with them: who owns which agent, session and snapshot (`owners`), the live uses
//! of each key to cut when it is revoked ([`KeyCuts`]), quotas and what a user's sessions hold
//! ([`Store::usage`]), and the audit log.

use std::collections::HashMap;
use std::sync::Mutex;

use rusqlite::{OptionalExtension, Row, params};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::wire::api::AgentLimits;
use crate::wire::teams::{ApiKey, AuditEntry, QUOTA_DEFAULT_CPUS, QUOTA_DEFAULT_MEMORY_MB, Quota, Role, User};

/// Whose objects a listing shows: everyone's, or a member's own (and, for agents, the team's: those
/// no API key made).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    Member(Uuid),
}

impl Scope {
    /// The member's user id as stored, for a query's `?N IS NULL OR …`.
    pub(super) fn member(self) -> Option<String> {
        match self {
            Self::All => None,
            Self::Member(user) => Some(user.to_string()),
        }
    }
}

/// The live uses of API keys (a terminal, an event stream, a port-forward), each watching its key's
/// token: revoking the key or disabling its user cancels it, and they end. A revoked key's token
/// stays cancelled (a key is never let in again); enabling a user forgets theirs.
#[derive(Default)]
pub struct KeyCuts(Mutex<HashMap<Uuid, CancellationToken>>);

impl KeyCuts {
    fn token(&self, key: Uuid) -> CancellationToken {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }

    fn cut(&self, keys: &[Uuid]) {
        let mut tokens = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            tokens.entry(*key).or_default().cancel();
        }
    }

    fn forget(&self, keys: &[Uuid]) {
        let mut tokens = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            tokens.remove(key);
        }
    }
}

/// What an owner is recorded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned {
    Agent,
    Session,
    Snapshot,
}

impl Owned {
    fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Session => "session",
            Self::Snapshot => "snapshot",
        }
    }
}

/// A key found by its digest, with what decides whether it is let in.
#[derive(Debug, Clone)]
pub struct KeyOwner {
    pub key_id: Uuid,
    pub user_id: Uuid,
    pub user: String,
    pub role: Role,
    pub user_disabled: bool,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// The most audit entries kept; older ones are dropped as new ones arrive.
pub const AUDIT_KEPT: i64 = 100_000;

/// An action to record in the audit log (the store stamps its time and id).
#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    pub actor: String,
    pub key_id: Option<Uuid>,
    pub peer: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub status: u16,
}

/// What a user's sessions hold now ([`Store::usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub sessions: u32,
    pub memory_mb: u64,
    pub cpus: f64,
}

/// Whom an OIDC sign-in acts as ([`Store::oidc_user`]).
#[derive(Debug, Clone)]
pub enum OidcMatch {
    /// A user signed in before, or made ahead by an admin under that name.
    User(User),
    /// A user made by this sign-in.
    Created(User),
    /// The name is a user's who signed in with another identity.
    NameBound,
    /// No such user, and the sign-in may not make one.
    NotAllowed,
}

/// A key to store.
pub struct NewKeyRow {
    pub user_id: Uuid,
    pub role: Role,
    pub digest: [u8; 32],
    pub prefix: String,
    pub expires_at: Option<String>,
}

/// The user named `name`.
fn user_named(conn: &rusqlite::Connection, name: &str) -> rusqlite::Result<Option<User>> {
    conn.query_row(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
        [name],
        user_row,
    )
    .optional()
}

/// The columns [`user_row`] reads.
const USER_COLUMNS: &str = "id, name, disabled, created_at, max_sessions, max_memory_mb, max_cpus";

fn user_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: parse_id(row.get::<_, String>(0)?),
        name: row.get(1)?,
        disabled: row.get(2)?,
        created_at: row.get(3)?,
        quota: Quota {
            sessions: row.get(4)?,
            memory_mb: row.get::<_, Option<i64>>(5)?.map(|mb| mb.max(0) as u64),
            cpus: row.get(6)?,
        },
    })
}

fn key_row(row: &Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: parse_id(row.get::<_, String>(0)?),
        user: row.get(1)?,
        role: Role::parse(&row.get::<_, String>(2)?).unwrap_or(Role::Viewer),
        prefix: row.get(3)?,
        created_at: row.get(4)?,
        expires_at: row.get(5)?,
        revoked_at: row.get(6)?,
    })
}

/// Ids are written by this module only, always as UUIDs.
fn parse_id(text: String) -> Uuid {
    Uuid::parse_str(&text).unwrap_or_default()
}

const KEY_COLUMNS: &str = "k.id, u.name, k.role, k.prefix, k.created_at, k.expires_at, k.revoked_at";

impl Store {
    /// Records `user` as the owner of an object they made.
    pub async fn set_owner(&self, kind: Owned, id: Uuid, user: Uuid) -> Result<(), StoreError> {
        self.call(move |conn, _| {
            conn.execute(
                "INSERT OR REPLACE INTO owners (kind, object_id, user_id) VALUES (?1, ?2, ?3)",
                params![kind.as_str(), id.to_string(), user.to_string()],
            )?;
            Ok(())
        })
        .await
    }

    /// The user who made an object, if an API key made it.
    pub async fn owner_of(&self, kind: Owned, id: Uuid) -> Result<Option<Uuid>, StoreError> {
        self.call(move |conn, _| {
            Ok(conn
                .query_row(
                    "SELECT user_id FROM owners WHERE kind = ?1 AND object_id = ?2",
                    params![kind.as_str(), id.to_string()],
                    |row| row.get::<_, String>(0),
                )
                .optional()?
                .map(parse_id))
        })
        .await
    }

    /// Resolves when API key `key` stops being let in: revoked, its user disabled, or `expires_at`
    /// (as stored) passed. What a key opened (a terminal, an event stream) ends then.
    pub fn key_ended(&self, key: Uuid, expires_at: Option<&str>) -> impl Future<Output = ()> + Send + 'static {
        let token = self.cuts.token(key);
        let left = expires_at
            .and_then(|at| time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok())
            .map(|at| (at - self.now_utc()).try_into().unwrap_or(std::time::Duration::ZERO));
        async move {
            match left {
                Some(left) => tokio::select! {
                    _ = token.cancelled() => {}
                    _ = tokio::time::sleep(left) => {}
                },
                None => token.cancelled().await,
            }
        }
    }

    pub async fn create_user(&self, name: String) -> Result<User, StoreError> {
        let now = self.timestamp();
        self.call(move |conn, _| {
            let id = Uuid::new_v4();
            let inserted = conn.execute(
                "INSERT INTO users (id, name, disabled, created_at) VALUES (?1, ?2, 0, ?3)",
                params![id.to_string(), name, now],
            );
            match inserted {
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                    return Err(StoreError::UserNameTaken(name));
                }
                other => other?,
            };
            Ok(User {
                id,
                name,
                disabled: false,
                created_at: now,
                quota: Quota::default(),
            })
        })
        .await
    }

    /// The user an OIDC sign-in acts as: the one `subject` (the provider's issuer and `sub`) signed
    /// in as before; else the user named `name` not yet bound to a subject (an admin made them
    /// ahead), now bound to it; else, when `may_create`, a new user of that name bound to it.
    pub async fn oidc_user(&self, subject: String, name: String, may_create: bool) -> Result<OidcMatch, StoreError> {
        let now = self.timestamp();
        self.call(move |conn, _| {
            let tx = conn.transaction()?;
            let by_subject = tx
                .query_row(
                    &format!("SELECT {USER_COLUMNS} FROM users WHERE oidc_subject = ?1"),
                    [&subject],
                    user_row,
                )
                .optional()?;
            if let Some(user) = by_subject {
                return Ok(OidcMatch::User(user));
            }
            let bound: Option<Option<String>> = tx
                .query_row("SELECT oidc_subject FROM users WHERE name = ?1", [&name], |row| {
                    row.get(0)
                })
                .optional()?;
            let found = match bound {
                Some(Some(_)) => return Ok(OidcMatch::NameBound),
                Some(None) => {
                    tx.execute(
                        "UPDATE users SET oidc_subject = ?1 WHERE name = ?2",
                        params![subject, name],
                    )?;
                    user_named(&tx, &name)?.map(OidcMatch::User)
                }
                None if may_create => {
                    tx.execute(
                        "INSERT INTO users (id, name, disabled, created_at, oidc_subject) VALUES (?1, ?2, 0, ?3, ?4)",
                        params![Uuid::new_v4().to_string(), name, now, subject],
                    )?;
                    user_named(&tx, &name)?.map(OidcMatch::Created)
                }
                None => Some(OidcMatch::NotAllowed),
            };
            tx.commit()?;
            Ok(found.unwrap_or(OidcMatch::NotAllowed))
        })
        .await
    }

    /// Every user, oldest first.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.call(|conn, _| {
            Ok(conn
                .prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, name"))?
                .query_map([], user_row)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn find_user(&self, name: String) -> Result<Option<User>, StoreError> {
        self.call(move |conn, _| Ok(user_named(conn, &name)?)).await
    }

    /// Disables or enables a user; the user after, or `None` when there is none of that name.
    pub async fn set_user_disabled(&self, name: String, disabled: bool) -> Result<Option<User>, StoreError> {
        let (user, keys) = self
            .call(move |conn, _| {
                conn.execute(
                    "UPDATE users SET disabled = ?1 WHERE name = ?2",
                    params![disabled, name],
                )?;
                let user = user_named(conn, &name)?;
                let keys: Vec<Uuid> = conn
                    .prepare(
                        "SELECT k.id FROM api_keys k JOIN users u ON u.id = k.user_id
                         WHERE u.name = ?1 AND k.revoked_at IS NULL",
                    )?
                    .query_map([&name], |row| row.get::<_, String>(0).map(parse_id))?
                    .collect::<Result<_, _>>()?;
                Ok((user, keys))
            })
            .await?;
        if disabled {
            self.cuts.cut(&keys);
        } else {
            self.cuts.forget(&keys);
        }
        Ok(user)
    }

    pub async fn insert_key(&self, key: NewKeyRow) -> Result<ApiKey, StoreError> {
        let now = self.timestamp();
        self.call(move |conn, _| {
            let id = Uuid::new_v4();
            conn.execute(
                "INSERT INTO api_keys (id, user_id, role, digest, prefix, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id.to_string(),
                    key.user_id.to_string(),
                    key.role.as_str(),
                    key.digest.as_slice(),
                    key.prefix,
                    now,
                    key.expires_at,
                ],
            )?;
            Ok(conn.query_row(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = ?1"),
                [id.to_string()],
                key_row,
            )?)
        })
        .await
    }

    /// Every key, oldest first; of one user when `user` is given.
    pub async fn list_keys(&self, user: Option<String>) -> Result<Vec<ApiKey>, StoreError> {
        self.call(move |conn, _| {
            Ok(conn
                .prepare(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys k JOIN users u ON u.id = k.user_id
                     WHERE ?1 IS NULL OR u.name = ?1 ORDER BY k.created_at, k.id"
                ))?
                .query_map([user], key_row)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Revokes a key (stamping now, once); the key after, or `None` when there is no such key.
    pub async fn revoke_key(&self, id: Uuid) -> Result<Option<ApiKey>, StoreError> {
        let now = self.timestamp();
        let revoked = self
            .call(move |conn, _| {
                conn.execute(
                    "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                    params![now, id.to_string()],
                )?;
                Ok(conn
                    .query_row(
                        &format!(
                            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = ?1"
                        ),
                        [id.to_string()],
                        key_row,
                    )
                    .optional()?)
            })
            .await?;
        if revoked.is_some() {
            self.cuts.cut(&[id]);
        }
        Ok(revoked)
    }

    /// The key whose digest is `digest`, with its user.
    pub async fn key_owner(&self, digest: [u8; 32]) -> Result<Option<KeyOwner>, StoreError> {
        self.call(move |conn, _| key_owner_where(conn, "k.digest = ?1", digest.as_slice()))
            .await
    }

    /// The key `id`, with its user.
    pub async fn key_by_id(&self, id: Uuid) -> Result<Option<KeyOwner>, StoreError> {
        self.call(move |conn, _| key_owner_where(conn, "k.id = ?1", id.to_string()))
            .await
    }

    /// Records one action, dropping the oldest beyond [`AUDIT_KEPT`].
    pub async fn record_audit(&self, entry: NewAuditEntry) -> Result<(), StoreError> {
        let now = self.timestamp();
        self.call(move |conn, _| {
            conn.execute(
                "INSERT INTO audit (at, actor, key_id, peer, action, target, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    now,
                    entry.actor,
                    entry.key_id.map(|id| id.to_string()),
                    entry.peer,
                    entry.action,
                    entry.target,
                    entry.status
                ],
            )?;
            let id = conn.last_insert_rowid();
            if id % 1000 == 0 {
                conn.execute("DELETE FROM audit WHERE id <= ?1", [id - AUDIT_KEPT])?;
            }
            Ok(())
        })
        .await
    }

    /// Entries after id `after` (oldest first, at most `limit`), or without it the last `limit`.
    pub async fn audit(&self, after: Option<u64>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.call(move |conn, _| {
            let row = |row: &Row<'_>| {
                Ok(AuditEntry {
                    id: row.get::<_, i64>(0)?.max(0) as u64,
                    at: row.get(1)?,
                    actor: row.get(2)?,
                    key_id: row.get::<_, Option<String>>(3)?.map(parse_id),
                    peer: row.get(4)?,
                    action: row.get(5)?,
                    target: row.get(6)?,
                    status: row.get(7)?,
                })
            };
            const COLUMNS: &str = "id, at, actor, key_id, peer, action, target, status";
            let mut entries: Vec<AuditEntry> = match after {
                Some(after) => conn
                    .prepare(&format!(
                        "SELECT {COLUMNS} FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2"
                    ))?
                    .query_map(params![after as i64, limit], row)?
                    .collect::<Result<_, _>>()?,
                None => conn
                    .prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY id DESC LIMIT ?1"))?
                    .query_map([limit], row)?
                    .collect::<Result<_, _>>()?,
            };
            if after.is_none() {
                entries.reverse();
            }
            Ok(entries)
        })
        .await
    }

    /// One quota check and the session it lets in at a time: held from [`Store::usage`] until the
    /// new session's owner is recorded, so two creates at once cannot both fit in the last place.
    pub async fn quota_turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.quota.clone().lock_owned().await
    }

    /// Sets a user's quota; the user after, or `None` when there is none of that name.
    pub async fn set_quota(&self, name: String, quota: Quota) -> Result<Option<User>, StoreError> {
        self.call(move |conn, _| {
            conn.execute(
                "UPDATE users SET max_sessions = ?1, max_memory_mb = ?2, max_cpus = ?3 WHERE name = ?4",
                params![quota.sessions, quota.memory_mb.map(|mb| mb as i64), quota.cpus, name],
            )?;
            Ok(user_named(conn, &name)?)
        })
        .await
    }

    /// A user's quota and what their sessions hold now: live sessions, and the memory (MiB) and
    /// CPUs of those holding a sandbox (not counted for a user without a quota).
    pub async fn usage(&self, user: Uuid) -> Result<(Quota, Usage), StoreError> {
        self.call(move |conn, _| {
            let quota = conn
                .query_row(
                    &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
                    [user.to_string()],
                    user_row,
                )
                .optional()?
                .map(|u| u.quota)
                .unwrap_or_default();
            if quota == Quota::default() {
                // No limit to count against.
                return Ok((quota, Usage::default()));
            }
            let live: Vec<(String, String)> = conn
                .prepare(
                    "SELECT s.status, a.limits_json FROM sessions s JOIN agents a ON a.id = s.agent_id
                     WHERE s.status IN ('creating', 'ready', 'paused', 'hibernated')
                       AND s.id IN (SELECT object_id FROM owners WHERE kind = 'session' AND user_id = ?1)",
                )?
                .query_map([user.to_string()], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let mut usage = Usage::default();
            for (status, limits) in live {
                usage.sessions += 1;
                if status != "hibernated" {
                    let limits: AgentLimits = serde_json::from_str(&limits).unwrap_or_default();
                    usage.memory_mb += limits.memory_mb.unwrap_or(QUOTA_DEFAULT_MEMORY_MB);
                    usage.cpus += limits.cpus.unwrap_or(QUOTA_DEFAULT_CPUS);
                }
            }
            Ok((quota, usage))
        })
        .await
    }
}

fn key_owner_where(
    conn: &mut rusqlite::Connection,
    condition: &str,
    value: impl rusqlite::ToSql,
) -> Result<Option<KeyOwner>, StoreError> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT k.id, u.id, u.name, k.role, u.disabled, k.expires_at, k.revoked_at
                 FROM api_keys k JOIN users u ON u.id = k.user_id WHERE {condition}"
            ),
            [value],
            |row| {
                Ok(KeyOwner {
                    key_id: parse_id(row.get(0)?),
                    user_id: parse_id(row.get(1)?),
                    user: row.get(2)?,
                    role: Role::parse(&row.get::<_, String>(3)?).unwrap_or(Role::Viewer),
                    user_disabled: row.get(4)?,
                    expires_at: row.get(5)?,
                    revoked_at: row.get(6)?,
                })
            },
        )
        .optional()?)
}
