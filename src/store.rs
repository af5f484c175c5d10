//! The SQLite store: the only module that speaks SQL.
//!
//! One database file (`lap.db` in the data dir) in WAL mode with `synchronous=FULL`, so a `kill -9`
//! of `lap serve` after a write returns loses nothing. Migrations are numbered and applied at open
//! (`PRAGMA user_version` records how far). Credential values are sealed (see [`seal`]) before they
//! reach a row and are only ever read back as [`Secret`]s. Every call runs on the blocking pool so
//! the async runtime never waits on disk.

mod messages;
mod preview;
pub mod seal;
pub mod snapshots;
pub mod teams;
pub mod ui;
pub mod warm;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use crate::secret::Secret;
use crate::tools;
use crate::wire::api::{Agent, AgentLimits, AgentVolume, CredentialInfo, Interception, SessionStatus};
use crate::wire::vault::{Injection, RequestRule, default_injection};

use seal::Sealer;
pub use teams::Scope;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Sql(#[from] rusqlite::Error),
    #[error("cannot use the credential key file `{}`", path.display())]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the data dir `{}`", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Crypto(&'static str),
    #[error("an agent named `{0}` already exists")]
    NameTaken(String),
    #[error("a snapshot named `{0}` already exists")]
    SnapshotNameTaken(String),
    #[error("a user named `{0}` already exists")]
    UserNameTaken(String),
    #[error("the database was written by a newer lap (schema {found}, this build knows {known})")]
    TooNew { found: i64, known: i64 },
    #[error("a store task panicked")]
    Panicked,
}

/// The most egress records kept per session; older ones are dropped as new ones arrive.
pub const MAX_INTERCEPTIONS: u32 = 10_000;

/// Versioned migrations; index + 1 is the schema version they bring the database to.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE agents (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    harness_id    TEXT NOT NULL,
    command       TEXT,
    repo_url      TEXT,
    branch        TEXT NOT NULL,
    prompt        TEXT,
    model         TEXT,
    env_json      TEXT NOT NULL,
    allow_out_json TEXT NOT NULL,
    deny_out_json TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE TABLE credentials (
    agent_id    TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    hosts_json  TEXT NOT NULL,
    sealed      BLOB NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (agent_id, name)
);
CREATE TABLE sessions (
    id                 TEXT PRIMARY KEY,
    agent_id           TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    status             TEXT NOT NULL,
    phase              TEXT,
    phase_detail       TEXT,
    sandbox_id         TEXT,
    sandbox_url        TEXT,
    tty_token          TEXT NOT NULL,
    harness_session_id TEXT,
    failure_reason     TEXT,
    title              TEXT,
    created_at         TEXT NOT NULL,
    last_seen_at       TEXT NOT NULL,
    stopped_at         TEXT
);
CREATE INDEX sessions_by_agent ON sessions(agent_id, created_at);
CREATE INDEX sessions_by_status ON sessions(status);
"#,
    r#"
CREATE TABLE session_stubs (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    stub       TEXT NOT NULL,
    PRIMARY KEY (session_id, name)
);
"#,
    r#"
CREATE TABLE interceptions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    record     TEXT NOT NULL
);
CREATE INDEX interceptions_by_session ON interceptions(session_id, id);
"#,
    r#"
ALTER TABLE agents ADD COLUMN limits_json TEXT NOT NULL DEFAULT '{}';
"#,
    // The warm pool (`store/warm.rs`). No foreign keys: a row outlives its agent until the pool
    // recycles its sandbox, which only the row names.
    r#"
CREATE TABLE warm_sandboxes (
    id          TEXT PRIMARY KEY,
    sandbox_id  TEXT UNIQUE,
    sandbox_url TEXT,
    harness_id  TEXT NOT NULL,
    agent_id    TEXT,
    fingerprint TEXT,
    status      TEXT NOT NULL,
    session_id  TEXT,
    created_at  TEXT NOT NULL,
    ready_at    TEXT,
    claimed_at  TEXT
);
CREATE INDEX warm_sandboxes_by_status ON warm_sandboxes(status, harness_id, agent_id, created_at);
"#,
    // The message API: conversation history and events of API harnesses (store/messages.rs).
    r#"
CREATE TABLE session_messages (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    id         TEXT NOT NULL,
    message    TEXT NOT NULL,
    PRIMARY KEY (session_id, position)
);
CREATE TABLE session_events (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    event      TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
"#,
    // Of a vault that runs in its sandbox (the Kubernetes sidecar): the position of the last record
    // kept from it, so a restarted `lap serve` pulls on from there. No foreign key: a warm sandbox
    // has no session, and its clone's records are skipped by position too.
    r#"
CREATE TABLE vault_cursors (
    sandbox_id TEXT PRIMARY KEY,
    position   INTEGER NOT NULL
);
"#,
    // The web UI's cookie sessions (store/ui.rs): token digests, never tokens.
    r#"
CREATE TABLE ui_sessions (
    digest     BLOB PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
"#,
    // Where each credential may go (wire/vault.rs): its injection points and request rules. Rows of
    // before get their preset's injection points in the same transaction ([`INJECTION_MIGRATION`]).
    r#"
ALTER TABLE credentials ADD COLUMN inject_json TEXT;
ALTER TABLE credentials ADD COLUMN rules_json TEXT NOT NULL DEFAULT '[]';
"#,
    // Schema 10: snapshots of session workspaces (store/snapshots.rs). No foreign key to the
    // session: a snapshot outlives the session it was taken from.
    r#"
CREATE TABLE IF NOT EXISTS snapshots (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    agent_name TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
"#,
    // Schema 11: preview URLs revoked per session and port (port 0: every port), by the time they
    // were issued (store/preview.rs).
    r#"
CREATE TABLE IF NOT EXISTS preview_revocations (
    session_id     TEXT NOT NULL,
    port           INTEGER NOT NULL,
    revoked_before INTEGER NOT NULL,
    PRIMARY KEY (session_id, port)
);
"#,
    // Schema 12: the agent's volumes (name and mount path each; their data lives under
    // `<data-dir>/volumes/<agent id>/`, `control/volumes.rs`).
    r#"
ALTER TABLE agents ADD COLUMN volumes_json TEXT NOT NULL DEFAULT '[]';
"#,
    // Schema 13: users and their API keys (store/teams.rs): each key's SHA-256 digest, never the key.
    r#"
CREATE TABLE IF NOT EXISTS users (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    disabled   INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    -- The user's quota (wire/teams.rs); NULL: no limit.
    max_sessions  INTEGER,
    max_memory_mb INTEGER,
    max_cpus      REAL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id),
    role       TEXT NOT NULL,
    digest     BLOB NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT
);
-- Who made an agent, session or snapshot through an API key (none: the master key's, the team's).
CREATE TABLE IF NOT EXISTS owners (
    kind      TEXT NOT NULL,
    object_id TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    PRIMARY KEY (kind, object_id)
);
CREATE INDEX IF NOT EXISTS owners_by_user ON owners (user_id, kind);
-- Every control-plane action (store/teams.rs): who, when, from where, what; never a body.
CREATE TABLE IF NOT EXISTS audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     TEXT NOT NULL,
    actor  TEXT NOT NULL,
    key_id TEXT,
    peer   TEXT,
    action TEXT NOT NULL,
    target TEXT,
    status INTEGER NOT NULL
);
"#,
    // Schema 14: a web UI session may act as an API key (signed in with one, or with OIDC, which
    // mints one the sign-out revokes: `own_key`); a user made by an OIDC sign-in keeps the
    // provider's `issuer` and `sub` (api/oidc.rs).
    r#"
ALTER TABLE ui_sessions ADD COLUMN key_id TEXT;
ALTER TABLE ui_sessions ADD COLUMN own_key INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN oidc_subject TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS users_by_oidc_subject ON users (oidc_subject) WHERE oidc_subject IS NOT NULL;
"#,
];

/// The schema version that added `inject_json`; bringing a database to it gives every credential
/// row of before [`default_injection`] of its name (and no rules).
const INJECTION_MIGRATION: usize = 9;

/// A validated agent ready to insert.
#[derive(Debug, Clone)]
pub struct NewAgent {
    pub name: String,
    pub harness_id: String,
    pub command: Option<String>,
    pub repo_url: Option<String>,
    pub branch: String,
    pub prompt: Option<String>,
    pub model: Option<String>,
    pub env: BTreeMap<String, String>,
    pub credentials: Vec<NewCredential>,
    pub allow_out: Vec<String>,
    pub deny_out: Vec<String>,
    pub limits: AgentLimits,
    /// Validated, without sizes.
    pub volumes: Vec<AgentVolume>,
}

/// A credential with its real value, on its way into the store (or out of it, into a binding).
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub name: String,
    pub hosts: Vec<String>,
    pub value: Secret,
    /// Where in a request its stub may be swapped.
    pub inject: Vec<Injection>,
    /// Requests it may be swapped into (empty: any).
    pub rules: Vec<RequestRule>,
}

/// A validated change to an agent. `None` leaves a field alone; `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct AgentPatch {
    pub name: Option<String>,
    pub harness_id: Option<String>,
    pub command: Option<Option<String>>,
    pub repo_url: Option<Option<String>>,
    pub branch: Option<String>,
    pub prompt: Option<Option<String>>,
    pub model: Option<Option<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub upsert_credentials: Vec<NewCredential>,
    /// Re-binds existing credentials without changing their values.
    pub rebind: BTreeMap<String, Vec<String>>,
    /// Replaces existing credentials' injection points without changing their values.
    pub reinject: BTreeMap<String, Vec<Injection>>,
    /// Replaces existing credentials' request rules without changing their values.
    pub rerule: BTreeMap<String, Vec<RequestRule>>,
    pub remove_credentials: Vec<String>,
    pub allow_out: Option<Vec<String>>,
    pub deny_out: Option<Vec<String>>,
    pub limits: Option<AgentLimits>,
    pub volumes: Option<Vec<AgentVolume>>,
}

/// A session row.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub agent_name: String,
    pub harness_id: String,
    pub status: SessionStatus,
    pub phase: Option<String>,
    pub phase_detail: Option<String>,
    pub sandbox_id: Option<String>,
    pub sandbox_url: Option<String>,
    pub tty_token: String,
    pub harness_session_id: Option<String>,
    pub failure_reason: Option<String>,
    pub title: Option<String>,
    pub created_at: String,
    pub last_seen_at: String,
    pub stopped_at: Option<String>,
    /// The name of the user who made it with an API key (store/teams.rs's `owners`); none: the
    /// team's. Read, never written, through this row.
    pub owner: Option<String>,
}

/// A change of a session's state, applied atomically.
#[derive(Debug, Clone)]
pub enum SessionUpdate {
    Phase(String),
    Ready {
        sandbox_id: String,
        sandbox_url: String,
        harness_session_id: Option<String>,
    },
    Failed {
        reason: String,
    },
    Dead {
        reason: String,
    },
    /// `dead`, only while the session is `ready` on `sandbox_id`: its sandbox failed or went away
    /// (a session restarted onto a new sandbox meanwhile is left alone).
    SandboxDied {
        sandbox_id: String,
        reason: String,
    },
    /// `paused`, only from `ready`: its sandbox's processes were frozen.
    Paused,
    /// `ready` again, only from `paused`: its sandbox's processes were thawed; a resume is activity
    /// (`last_seen_at` is now, in the same write).
    Thawed,
    /// `hibernated`, from `ready` or `paused`: its sandbox goes, its workspace stays.
    Hibernated,
    /// `creating` again, from `ready`, `dead`, `failed` or `hibernated`, for a fresh sandbox: the
    /// old sandbox is forgotten, the failure cleared, and a restart is activity.
    Restarted,
}

/// What [`Store::update_session`] did.
#[derive(Debug, Clone)]
pub struct Updated {
    /// Whether the update's condition held and the row changed.
    pub applied: bool,
    /// The sandbox the session named just before the update (a hibernation or a restart forgets it).
    pub sandbox_before: Option<String>,
    /// The row after the call.
    pub row: SessionRow,
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    sealer: Arc<Sealer>,
    clock: Clock,
    migrated_credentials: usize,
    /// Live uses of API keys, cut when their key is revoked or its user disabled (store/teams.rs).
    cuts: Arc<teams::KeyCuts>,
    /// Held from a quota check to the new session's owner row ([`Store::quota_turn`]).
    quota: Arc<tokio::sync::Mutex<()>>,
}

/// Wall-clock time (UTC) the store stamps rows with; replaceable so tests can move it.
pub type Clock = Arc<dyn Fn() -> time::OffsetDateTime + Send + Sync>;

impl Store {
    /// Opens (creating when needed) `lap.db` and the credential key in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        crate::platform::restrict_dir(data_dir);
        let sealer = Sealer::open_or_create(&data_dir.join("credential.key"))?;
        let mut conn = Connection::open(data_dir.join("lap.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let migrated_credentials = migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            sealer: Arc::new(sealer),
            clock: Arc::new(time::OffsetDateTime::now_utc),
            migrated_credentials,
            cuts: Arc::default(),
            quota: Arc::default(),
        })
    }

    /// How many stored credentials this open gave their preset injection points (the migration to
    /// per-credential injection points); 0 when there was nothing to migrate.
    pub fn migrated_credentials(&self) -> usize {
        self.migrated_credentials
    }

    /// The same store, stamping rows with `clock` (tests move time with it).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The store's current time.
    pub fn now_utc(&self) -> time::OffsetDateTime {
        (self.clock)()
    }

    /// The store's current time, formatted as stored.
    pub fn timestamp(&self) -> String {
        format_timestamp((self.clock)())
    }

    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Sealer) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        let sealer = self.sealer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn, &sealer)
        })
        .await
        .map_err(|_| StoreError::Panicked)?
    }

    pub async fn create_agent(&self, agent: NewAgent) -> Result<Agent, StoreError> {
        let now = self.timestamp();
        self.call(move |conn, sealer| {
            let tx = conn.transaction()?;
            let id = Uuid::new_v4();
            let inserted = tx.execute(
                "INSERT INTO agents (id, name, harness_id, command, repo_url, branch, prompt, model,
                    env_json, allow_out_json, deny_out_json, created_at, updated_at, limits_json, volumes_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13, ?14)",
                params![
                    id.to_string(),
                    agent.name,
                    agent.harness_id,
                    agent.command,
                    agent.repo_url,
                    agent.branch,
                    agent.prompt,
                    agent.model,
                    json(&agent.env),
                    json(&agent.allow_out),
                    json(&agent.deny_out),
                    now,
                    json(&agent.limits),
                    json(&agent.volumes),
                ],
            );
            map_unique(inserted, &agent.name)?;
            for cred in &agent.credentials {
                upsert_credential(&tx, sealer, id, cred)?;
            }
            let out = get_agent(&tx, id)?.expect("agent just inserted");
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// Agents newest first, filtered by a case-insensitive substring of name, id or harness.
    pub async fn list_agents(
        &self,
        search: Option<String>,
        limit: u32,
        offset: u32,
        scope: Scope,
    ) -> Result<(Vec<Agent>, u64), StoreError> {
        self.call(move |conn, _| {
            let pattern = format!("%{}%", like_literal(&search.unwrap_or_default().to_lowercase()));
            // A member sees the team's agents (no owner) and their own.
            let filter = r"(lower(name) LIKE ?1 ESCAPE '\' OR id LIKE ?1 ESCAPE '\'
                OR lower(harness_id) LIKE ?1 ESCAPE '\')
                AND (?4 IS NULL OR id NOT IN (SELECT object_id FROM owners WHERE kind = 'agent' AND user_id != ?4))";
            let member = scope.member();
            let total: i64 = conn.query_row(
                &format!("SELECT count(*) FROM agents WHERE {filter}"),
                params![&pattern, Option::<u32>::None, Option::<u32>::None, member],
                |row| row.get(0),
            )?;
            let ids: Vec<String> = conn
                .prepare(&format!(
                    "SELECT id FROM agents WHERE {filter}
                     ORDER BY created_at DESC, rowid DESC LIMIT ?2 OFFSET ?3"
                ))?
                .query_map(params![pattern, limit, offset, member], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let mut agents = Vec::with_capacity(ids.len());
            for id in ids {
                let id = parse_uuid(&id)?;
                let Some(mut agent) = get_agent(conn, id)? else {
                    continue;
                };
                let (count, active): (i64, i64) = conn.query_row(
                    "SELECT count(*), coalesce(sum(status IN ('creating', 'ready')), 0)
                     FROM sessions WHERE agent_id = ?1",
                    [id.to_string()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?;
                agent.session_count = Some(count as u64);
                agent.has_active_session = Some(active > 0);
                agents.push(agent);
            }
            Ok((agents, total as u64))
        })
        .await
    }

    /// Finds an agent by UUID or by name.
    pub async fn find_agent(&self, id_or_name: &str) -> Result<Option<Agent>, StoreError> {
        let key = id_or_name.to_owned();
        self.call(move |conn, _| {
            let id = match Uuid::parse_str(&key) {
                Ok(id) => Some(id),
                Err(_) => conn
                    .query_row("SELECT id FROM agents WHERE name = ?1", [&key], |row| {
                        row.get::<_, String>(0)
                    })
                    .optional()?
                    .map(|id| parse_uuid(&id))
                    .transpose()?,
            };
            match id {
                Some(id) => get_agent(conn, id),
                None => Ok(None),
            }
        })
        .await
    }

    pub async fn update_agent(&self, id: Uuid, patch: AgentPatch) -> Result<Option<Agent>, StoreError> {
        let now = self.timestamp();
        self.call(move |conn, sealer| {
            let tx = conn.transaction()?;
            if get_agent(&tx, id)?.is_none() {
                return Ok(None);
            }
            let key = id.to_string();
            let set = |column: &str, value: &dyn rusqlite::ToSql| -> Result<(), StoreError> {
                tx.execute(
                    &format!("UPDATE agents SET {column} = ?1 WHERE id = ?2"),
                    params![value, key],
                )?;
                Ok(())
            };
            if let Some(name) = &patch.name {
                map_unique(
                    tx.execute("UPDATE agents SET name = ?1 WHERE id = ?2", params![name, key]),
                    name,
                )?;
            }
            if let Some(v) = &patch.harness_id {
                set("harness_id", v)?;
            }
            if let Some(v) = &patch.command {
                set("command", v)?;
            }
            if let Some(v) = &patch.repo_url {
                set("repo_url", v)?;
            }
            if let Some(v) = &patch.branch {
                set("branch", v)?;
            }
            if let Some(v) = &patch.prompt {
                set("prompt", v)?;
            }
            if let Some(v) = &patch.model {
                set("model", v)?;
            }
            if let Some(v) = &patch.env {
                set("env_json", &json(v))?;
            }
            if let Some(v) = &patch.allow_out {
                set("allow_out_json", &json(v))?;
            }
            if let Some(v) = &patch.deny_out {
                set("deny_out_json", &json(v))?;
            }
            if let Some(v) = &patch.volumes {
                set("volumes_json", &json(v))?;
            }
            if let Some(v) = &patch.limits {
                set("limits_json", &json(v))?;
            }
            for cred in &patch.upsert_credentials {
                upsert_credential(&tx, sealer, id, cred)?;
            }
            for (name, hosts) in &patch.rebind {
                tx.execute(
                    "UPDATE credentials SET hosts_json = ?1 WHERE agent_id = ?2 AND name = ?3",
                    params![json(hosts), key, name],
                )?;
            }
            for (name, inject) in &patch.reinject {
                tx.execute(
                    "UPDATE credentials SET inject_json = ?1 WHERE agent_id = ?2 AND name = ?3",
                    params![json(inject), key, name],
                )?;
            }
            for (name, rules) in &patch.rerule {
                tx.execute(
                    "UPDATE credentials SET rules_json = ?1 WHERE agent_id = ?2 AND name = ?3",
                    params![json(rules), key, name],
                )?;
            }
            for name in &patch.remove_credentials {
                tx.execute(
                    "DELETE FROM credentials WHERE agent_id = ?1 AND name = ?2",
                    params![key, name],
                )?;
            }
            set("updated_at", &now)?;
            let out = get_agent(&tx, id)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// Deletes an agent and, by cascade, its credentials and sessions. Returns whether it existed.
    pub async fn delete_agent(&self, id: Uuid) -> Result<bool, StoreError> {
        self.call(move |conn, _| Ok(conn.execute("DELETE FROM agents WHERE id = ?1", [id.to_string()])? > 0))
            .await
    }

    /// The real credential values of an agent, for binding into a sandbox's vault.
    pub async fn agent_credentials(&self, agent_id: Uuid) -> Result<Vec<NewCredential>, StoreError> {
        self.call(move |conn, sealer| {
            type Row = (String, String, Vec<u8>, Option<String>, String);
            let rows: Vec<Row> = conn
                .prepare(
                    "SELECT name, hosts_json, sealed, inject_json, rules_json FROM credentials
                     WHERE agent_id = ?1 ORDER BY name",
                )?
                .query_map([agent_id.to_string()], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
                })?
                .collect::<Result<_, _>>()?;
            rows.into_iter()
                .map(|(name, hosts, sealed, inject, rules)| {
                    let value = sealer.open(&credential_context(agent_id, &name), &sealed)?;
                    Ok(NewCredential {
                        hosts: from_json(&hosts),
                        inject: stored_injection(&name, inject.as_deref()),
                        rules: from_json(&rules),
                        name,
                        value,
                    })
                })
                .collect()
        })
        .await
    }

    pub async fn insert_session(&self, row: SessionRow) -> Result<(), StoreError> {
        self.call(move |conn, _| {
            conn.execute(
                "INSERT INTO sessions (id, agent_id, status, phase, tty_token, title, created_at, last_seen_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                params![
                    row.id.to_string(),
                    row.agent_id.to_string(),
                    row.status.as_str(),
                    row.phase,
                    row.tty_token,
                    row.title,
                    row.created_at,
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// The sessions of `ids` that exist, by id: one call to the store, however many ids.
    pub async fn get_sessions(&self, ids: Vec<Uuid>) -> Result<HashMap<Uuid, SessionRow>, StoreError> {
        self.call(move |conn, _| {
            let mut statement = conn.prepare_cached(&format!("{SESSION_SELECT} WHERE s.id = ?1"))?;
            let mut found = HashMap::with_capacity(ids.len());
            for id in ids {
                if let Some(row) = statement.query_row([id.to_string()], session_row).optional()? {
                    found.insert(id, row);
                }
            }
            Ok(found)
        })
        .await
    }

    pub async fn get_session(&self, id: Uuid) -> Result<Option<SessionRow>, StoreError> {
        self.call(move |conn, _| {
            conn.query_row(
                &format!("{SESSION_SELECT} WHERE s.id = ?1"),
                [id.to_string()],
                session_row,
            )
            .optional()
            .map_err(Into::into)
        })
        .await
    }

    /// Sessions newest first, optionally of one agent.
    pub async fn list_sessions(
        &self,
        agent_id: Option<Uuid>,
        limit: u32,
        scope: Scope,
    ) -> Result<Vec<SessionRow>, StoreError> {
        self.call(move |conn, _| {
            let agent = agent_id.map(|id| id.to_string());
            conn.prepare(&format!(
                "{SESSION_SELECT} WHERE (?1 IS NULL OR s.agent_id = ?1)
                   AND (?3 IS NULL OR s.id IN (SELECT object_id FROM owners WHERE kind = 'session' AND user_id = ?3))
                 ORDER BY s.created_at DESC, s.rowid DESC LIMIT ?2"
            ))?
            .query_map(params![agent, limit, scope.member()], session_row)?
            .collect::<Result<_, _>>()
            .map_err(Into::into)
        })
        .await
    }

    /// Sessions in any of `statuses`, oldest first.
    pub async fn sessions_with_status(&self, statuses: &[SessionStatus]) -> Result<Vec<SessionRow>, StoreError> {
        let wanted: Vec<&'static str> = statuses.iter().map(|s| s.as_str()).collect();
        self.call(move |conn, _| {
            let mut out = Vec::new();
            let mut stmt = conn.prepare(&format!("{SESSION_SELECT} WHERE s.status = ?1 ORDER BY s.created_at"))?;
            for status in wanted {
                for row in stmt.query_map([status], session_row)? {
                    out.push(row?);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Applies `update` when its condition holds (none applies to a terminal session, but a
    /// restart). Returns whether it applied, with the row after the call, or `None` when the session
    /// does not exist.
    pub async fn update_session(&self, id: Uuid, update: SessionUpdate) -> Result<Option<Updated>, StoreError> {
        let now = self.timestamp();
        self.call(move |conn, _| {
            let tx = conn.transaction()?;
            let key = id.to_string();
            let sandbox_before: Option<Option<String>> = tx
                .query_row("SELECT sandbox_id FROM sessions WHERE id = ?1", [&key], |row| {
                    row.get(0)
                })
                .optional()?;
            let Some(sandbox_before) = sandbox_before else {
                return Ok(None);
            };
            let live = "status IN ('creating', 'ready', 'paused', 'hibernated')";
            let changed = match &update {
                SessionUpdate::Phase(phase) => tx.execute(
                    &format!("UPDATE sessions SET phase = ?1 WHERE id = ?2 AND {live}"),
                    params![phase, key],
                )?,
                SessionUpdate::Ready {
                    sandbox_id,
                    sandbox_url,
                    harness_session_id,
                } => tx.execute(
                    "UPDATE sessions SET status = 'ready', phase = NULL, sandbox_id = ?1, sandbox_url = ?2,
                        harness_session_id = ?3 WHERE id = ?4 AND status = 'creating'",
                    params![sandbox_id, sandbox_url, harness_session_id, key],
                )?,
                SessionUpdate::Failed { reason } => tx.execute(
                    &format!(
                        "UPDATE sessions SET status = 'failed', failure_reason = ?1, stopped_at = ?2
                         WHERE id = ?3 AND {live}"
                    ),
                    params![reason, now, key],
                )?,
                SessionUpdate::Dead { reason } => tx.execute(
                    &format!(
                        "UPDATE sessions SET status = 'dead', failure_reason = ?1, stopped_at = ?2
                         WHERE id = ?3 AND {live}"
                    ),
                    params![reason, now, key],
                )?,
                SessionUpdate::SandboxDied { sandbox_id, reason } => tx.execute(
                    "UPDATE sessions SET status = 'dead', failure_reason = ?1, stopped_at = ?2
                     WHERE id = ?3 AND status IN ('ready', 'paused') AND sandbox_id = ?4",
                    params![reason, now, key, sandbox_id],
                )?,
                SessionUpdate::Paused => tx.execute(
                    "UPDATE sessions SET status = 'paused' WHERE id = ?1 AND status = 'ready'",
                    [&key],
                )?,
                SessionUpdate::Thawed => tx.execute(
                    "UPDATE sessions SET status = 'ready', last_seen_at = ?1 WHERE id = ?2 AND status = 'paused'",
                    params![now, key],
                )?,
                SessionUpdate::Hibernated => tx.execute(
                    "UPDATE sessions SET status = 'hibernated', sandbox_id = NULL, sandbox_url = NULL
                     WHERE id = ?1 AND status IN ('ready', 'paused')",
                    [&key],
                )?,
                SessionUpdate::Restarted => tx.execute(
                    "UPDATE sessions SET status = 'creating', phase = 'creating_sandbox', failure_reason = NULL,
                        stopped_at = NULL, sandbox_id = NULL, sandbox_url = NULL, last_seen_at = ?1
                     WHERE id = ?2 AND status IN ('ready', 'dead', 'failed', 'hibernated')",
                    params![now, key],
                )?,
            };
            let row = tx.query_row(&format!("{SESSION_SELECT} WHERE s.id = ?1"), [&key], session_row)?;
            tx.commit()?;
            Ok(Some(Updated {
                applied: changed == 1,
                sandbox_before,
                row,
            }))
        })
        .await
    }

    /// Replaces the stubs a session's sandbox was given: `(credential name, stub)`.
    pub async fn set_session_stubs(&self, session: Uuid, stubs: Vec<(String, String)>) -> Result<(), StoreError> {
        self.call(move |conn, _| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM session_stubs WHERE session_id = ?1", [session.to_string()])?;
            for (name, stub) in &stubs {
                tx.execute(
                    "INSERT INTO session_stubs (session_id, name, stub) VALUES (?1, ?2, ?3)",
                    params![session.to_string(), name, stub],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The stubs of a session, by credential name.
    pub async fn session_stubs(&self, session: Uuid) -> Result<Vec<(String, String)>, StoreError> {
        self.call(move |conn, _| {
            conn.prepare("SELECT name, stub FROM session_stubs WHERE session_id = ?1 ORDER BY name")?
                .query_map([session.to_string()], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()
                .map_err(Into::into)
        })
        .await
    }

    /// Puts a `ready`, `dead`, `failed` or `hibernated` session back to `creating` for a fresh
    /// sandbox ([`SessionUpdate::Restarted`]). Returns the row after the call; `None` when there is
    /// no such session or it could not be restarted (it is `creating` or `paused`).
    pub async fn restart_session(&self, id: Uuid) -> Result<Option<SessionRow>, StoreError> {
        let updated = self.update_session(id, SessionUpdate::Restarted).await?;
        Ok(updated.filter(|u| u.applied).map(|u| u.row))
    }

    /// How many sessions are in each status.
    pub async fn session_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.call(|conn, _| {
            conn.prepare("SELECT status, count(*) FROM sessions GROUP BY status ORDER BY status")?
                .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64)))?
                .collect::<Result<_, _>>()
                .map_err(Into::into)
        })
        .await
    }

    /// Appends vault records to a session's egress log, in one transaction, keeping only its newest
    /// [`MAX_INTERCEPTIONS`] records.
    pub async fn insert_interceptions(&self, session: Uuid, records: Vec<Interception>) -> Result<(), StoreError> {
        self.call(move |conn, _| {
            let tx = conn.transaction()?;
            append_interceptions(&tx, session, &records)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Keeps records pulled from the vault of sandbox `sandbox` up to its position `position`: into
    /// `session`'s egress log (`None`: a warm sandbox's, dropped), with the position, in one
    /// transaction, so after a restart each record is pulled on from exactly once.
    pub async fn keep_pulled(
        &self,
        session: Option<Uuid>,
        sandbox: String,
        position: u64,
        records: Vec<Interception>,
    ) -> Result<(), StoreError> {
        self.call(move |conn, _| {
            let tx = conn.transaction()?;
            if let Some(session) = session {
                append_interceptions(&tx, session, &records)?;
            }
            tx.execute(
                "INSERT INTO vault_cursors (sandbox_id, position) VALUES (?1, ?2)
                 ON CONFLICT (sandbox_id) DO UPDATE SET position = max(position, excluded.position)",
                params![sandbox, position as i64],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The position of the last record kept from sandbox `sandbox`'s vault (0: none).
    pub async fn pulled_position(&self, sandbox: String) -> Result<u64, StoreError> {
        self.call(move |conn, _| {
            let position: Option<i64> = conn
                .query_row(
                    "SELECT position FROM vault_cursors WHERE sandbox_id = ?1",
                    [sandbox],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(position.unwrap_or(0).max(0) as u64)
        })
        .await
    }

    /// Forgets the pull positions of every sandbox but `sandboxes` (those that still exist).
    pub async fn forget_pulled_except(&self, sandboxes: Vec<String>) -> Result<(), StoreError> {
        self.call(move |conn, _| {
            let tx = conn.transaction()?;
            let kept: std::collections::HashSet<String> = sandboxes.into_iter().collect();
            let known: Vec<String> = tx
                .prepare("SELECT sandbox_id FROM vault_cursors")?
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            for sandbox in known.iter().filter(|s| !kept.contains(*s)) {
                tx.execute("DELETE FROM vault_cursors WHERE sandbox_id = ?1", [sandbox])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Forgets the pull position of a deleted sandbox.
    pub async fn forget_pulled(&self, sandbox: String) -> Result<(), StoreError> {
        self.call(move |conn, _| {
            conn.execute("DELETE FROM vault_cursors WHERE sandbox_id = ?1", [sandbox])?;
            Ok(())
        })
        .await
    }

    /// A session's egress log after position `after`, oldest first, at most `limit` records.
    pub async fn interceptions(&self, session: Uuid, after: u64, limit: u32) -> Result<Vec<Interception>, StoreError> {
        self.call(move |conn, _| {
            let rows: Vec<(i64, String)> = conn
                .prepare("SELECT id, record FROM interceptions WHERE session_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3")?
                .query_map(params![session.to_string(), after as i64, limit], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows
                .into_iter()
                .filter_map(|(id, text)| {
                    let mut record: Interception = serde_json::from_str(&text).ok()?;
                    record.id = id as u64;
                    Some(record)
                })
                .collect())
        })
        .await
    }

    /// Records activity on a session (a message, TTY input, an attach).
    pub async fn touch_session(&self, id: Uuid) -> Result<(), StoreError> {
        let now = self.timestamp();
        self.call(move |conn, _| {
            conn.execute(
                "UPDATE sessions SET last_seen_at = ?1 WHERE id = ?2",
                params![now, id.to_string()],
            )?;
            Ok(())
        })
        .await
    }
}

const SESSION_SELECT: &str = "SELECT s.id, s.agent_id, a.name, a.harness_id, s.status, s.phase, s.phase_detail,
    s.sandbox_id, s.sandbox_url, s.tty_token, s.harness_session_id, s.failure_reason, s.title,
    s.created_at, s.last_seen_at, s.stopped_at,
    (SELECT u.name FROM owners o JOIN users u ON u.id = o.user_id WHERE o.kind = 'session' AND o.object_id = s.id)
    FROM sessions s JOIN agents a ON a.id = s.agent_id";

fn session_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    let uuid = |i: usize| -> rusqlite::Result<Uuid> {
        let text: String = row.get(i)?;
        Uuid::parse_str(&text)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into()))
    };
    let status: String = row.get(4)?;
    Ok(SessionRow {
        id: uuid(0)?,
        agent_id: uuid(1)?,
        agent_name: row.get(2)?,
        harness_id: row.get(3)?,
        status: SessionStatus::parse(&status).unwrap_or(SessionStatus::Dead),
        phase: row.get(5)?,
        phase_detail: row.get(6)?,
        sandbox_id: row.get(7)?,
        sandbox_url: row.get(8)?,
        tty_token: row.get(9)?,
        harness_session_id: row.get(10)?,
        failure_reason: row.get(11)?,
        title: row.get(12)?,
        created_at: row.get(13)?,
        last_seen_at: row.get(14)?,
        stopped_at: row.get(15)?,
        owner: row.get(16)?,
    })
}

fn get_agent(conn: &Connection, id: Uuid) -> Result<Option<Agent>, StoreError> {
    let key = id.to_string();
    let row = conn
        .query_row(
            "SELECT name, harness_id, command, repo_url, branch, prompt, model, env_json,
                allow_out_json, deny_out_json, created_at, updated_at, limits_json, volumes_json,
                (SELECT u.name FROM owners o JOIN users u ON u.id = o.user_id
                 WHERE o.kind = 'agent' AND o.object_id = agents.id)
             FROM agents WHERE id = ?1",
            [&key],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, Option<String>>(5)?,
                    row.get::<_, Option<String>>(6)?,
                    row.get::<_, String>(7)?,
                    row.get::<_, String>(8)?,
                    row.get::<_, String>(9)?,
                    row.get::<_, String>(10)?,
                    row.get::<_, String>(11)?,
                    row.get::<_, String>(12)?,
                    row.get::<_, String>(13)?,
                    row.get::<_, Option<String>>(14)?,
                ))
            },
        )
        .optional()?;
    let Some((
        name,
        harness_id,
        command,
        repo_url,
        branch,
        prompt,
        model,
        env,
        allow,
        deny,
        created,
        updated,
        limits,
        volumes,
        owner,
    )) = row
    else {
        return Ok(None);
    };
    let credentials: Vec<CredentialInfo> = conn
        .prepare(
            "SELECT name, hosts_json, fingerprint, inject_json, rules_json FROM credentials
             WHERE agent_id = ?1 ORDER BY name",
        )?
        .query_map([&key], |row| {
            let name: String = row.get(0)?;
            Ok(CredentialInfo {
                hosts: from_json(&row.get::<_, String>(1)?),
                fingerprint: row.get(2)?,
                inject: stored_injection(&name, row.get::<_, Option<String>>(3)?.as_deref()),
                rules: from_json(&row.get::<_, String>(4)?),
                name,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(Agent {
        id,
        supports_tui: tools::find(&harness_id).is_none_or(|h| h.supports_tui()),
        name,
        harness_id,
        command,
        repo_url,
        branch,
        prompt,
        model,
        env: from_json(&env),
        env_var_hosts: credentials.iter().map(|c| (c.name.clone(), c.hosts.clone())).collect(),
        credentials,
        allow_out: from_json(&allow),
        deny_out: from_json(&deny),
        limits: from_json(&limits),
        volumes: from_json(&volumes),
        created_at: created,
        updated_at: updated,
        session_count: None,
        has_active_session: None,
        owner,
    }))
}

fn upsert_credential(
    conn: &Connection,
    sealer: &Sealer,
    agent_id: Uuid,
    cred: &NewCredential,
) -> Result<(), StoreError> {
    let sealed = sealer.seal(&credential_context(agent_id, &cred.name), &cred.value)?;
    conn.execute(
        "INSERT INTO credentials (agent_id, name, hosts_json, sealed, fingerprint, inject_json, rules_json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (agent_id, name) DO UPDATE SET hosts_json = ?3, sealed = ?4, fingerprint = ?5,
             inject_json = ?6, rules_json = ?7",
        params![
            agent_id.to_string(),
            cred.name,
            json(&cred.hosts),
            sealed,
            sealer.fingerprint(&cred.value),
            json(&cred.inject),
            json(&cred.rules),
        ],
    )?;
    Ok(())
}

/// A row's injection points; a row the migration has not reached (`NULL`) has its preset's.
fn stored_injection(name: &str, inject_json: Option<&str>) -> Vec<Injection> {
    match inject_json {
        Some(text) => from_json(text),
        None => default_injection(name),
    }
}

/// Gives every credential row without injection points its preset's ([`default_injection`]), in
/// `tx`; returns how many.
fn backfill_injection(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<usize> {
    let rows: Vec<(String, String)> = tx
        .prepare("SELECT agent_id, name FROM credentials WHERE inject_json IS NULL")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (agent_id, name) in &rows {
        tx.execute(
            "UPDATE credentials SET inject_json = ?1 WHERE agent_id = ?2 AND name = ?3",
            params![json(&default_injection(name)), agent_id, name],
        )?;
    }
    Ok(rows.len())
}

fn credential_context(agent_id: Uuid, name: &str) -> String {
    format!("lap credential v1/{agent_id}/{name}")
}

/// Appends `records` to `session`'s egress log in `tx`, keeping only its newest
/// [`MAX_INTERCEPTIONS`].
fn append_interceptions(
    tx: &rusqlite::Transaction<'_>,
    session: Uuid,
    records: &[Interception],
) -> rusqlite::Result<()> {
    let key = session.to_string();
    for record in records {
        tx.execute(
            "INSERT INTO interceptions (session_id, record) VALUES (?1, ?2)",
            params![key, json(record)],
        )?;
    }
    tx.execute(
        "DELETE FROM interceptions WHERE session_id = ?1 AND id <= (
            SELECT id FROM interceptions WHERE session_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        params![key, MAX_INTERCEPTIONS],
    )?;
    Ok(())
}

/// Brings the database to the newest schema; returns how many credentials it gave their preset
/// injection points (non-zero only on the open that crosses [`INJECTION_MIGRATION`]).
fn migrate(conn: &mut Connection) -> Result<usize, StoreError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::TooNew { found: current, known });
    }
    let mut migrated = 0;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if index + 1 == INJECTION_MIGRATION {
            migrated += backfill_injection(&tx)?;
        }
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(migrated)
}

fn map_unique(result: rusqlite::Result<usize>, name: &str) -> Result<usize, StoreError> {
    match result {
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
            Err(StoreError::NameTaken(name.to_owned()))
        }
        other => Ok(other?),
    }
}

/// `text` with LIKE's wildcards escaped by a backslash, so a search matches it literally.
fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn parse_uuid(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|_| StoreError::Crypto("a stored id is not a UUID"))
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

fn from_json<T: serde::de::DeserializeOwned + Default>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_default()
}

/// Now (wall clock), as stored.
pub fn now() -> String {
    format_timestamp(time::OffsetDateTime::now_utc())
}

/// A time as stored: RFC 3339 UTC with milliseconds, so text order is time order.
pub fn format_timestamp(now: time::OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    now.format(&format).expect("timestamp formats")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data dir whose `lap.db` has the schema of before injection points (the migrations up to
    /// [`INJECTION_MIGRATION`] − 1, as a build of then made it), with one agent holding
    /// `credentials` (name, value) sealed under the dir's key.
    fn old_store(dir: &Path, credentials: &[(&str, &str)]) -> Uuid {
        let sealer = Sealer::open_or_create(&dir.join("credential.key")).unwrap();
        let mut conn = Connection::open(dir.join("lap.db")).unwrap();
        for (index, sql) in MIGRATIONS[..INJECTION_MIGRATION - 1].iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", index as i64 + 1).unwrap();
        }
        let agent = Uuid::new_v4();
        let tx = conn.transaction().unwrap();
        tx.execute(
            "INSERT INTO agents (id, name, harness_id, branch, env_json, allow_out_json, deny_out_json, created_at, updated_at)
             VALUES (?1, 'old', 'shell', 'main', '{}', '[]', '[]', 'then', 'then')",
            [agent.to_string()],
        )
        .unwrap();
        for (name, value) in credentials {
            let value = Secret::new(*value);
            tx.execute(
                "INSERT INTO credentials (agent_id, name, hosts_json, sealed, fingerprint) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    agent.to_string(),
                    name,
                    r#"["h.test"]"#,
                    sealer.seal(&credential_context(agent, name), &value).unwrap(),
                    sealer.fingerprint(&value)
                ],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        agent
    }

    #[test]
    fn the_injection_migration_is_the_one_that_adds_the_columns() {
        assert!(MIGRATIONS[INJECTION_MIGRATION - 1].contains("inject_json"));
    }

    #[tokio::test]
    async fn stored_credentials_of_before_get_their_preset_injection_points_once() {
        let dir = tempfile::tempdir().unwrap();
        let agent = old_store(
            dir.path(),
            &[
                ("ANTHROPIC_API_KEY", "sk-ant-old"),
                ("GITLAB_TOKEN", "glpat-old"),
                ("CUSTOM", "c"),
            ],
        );
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.migrated_credentials(), 3);
        let stored = store.agent_credentials(agent).await.unwrap();
        let by_name = |n: &str| stored.iter().find(|c| c.name == n).unwrap();
        assert_eq!(
            by_name("ANTHROPIC_API_KEY").inject,
            default_injection("ANTHROPIC_API_KEY")
        );
        assert_eq!(by_name("GITLAB_TOKEN").inject, default_injection("GITLAB_TOKEN"));
        assert_eq!(by_name("CUSTOM").inject, vec![Injection::Authorization]);
        assert!(stored.iter().all(|c| c.rules.is_empty()));
        assert_eq!(by_name("GITLAB_TOKEN").value.expose(), "glpat-old", "values survive");
        // The rows hold the points themselves, not a NULL read as the preset.
        let nulls: i64 = {
            let conn = store.conn.lock().unwrap();
            conn.query_row("SELECT COUNT(*) FROM credentials WHERE inject_json IS NULL", [], |r| {
                r.get(0)
            })
            .unwrap()
        };
        assert_eq!(nulls, 0);
        drop(store);
        let again = Store::open(dir.path()).unwrap();
        assert_eq!(again.migrated_credentials(), 0, "a second open migrates nothing");
        let info = again.find_agent("old").await.unwrap().unwrap();
        assert_eq!(info.credentials[0].inject, default_injection("ANTHROPIC_API_KEY"));
    }

    #[tokio::test]
    async fn a_fresh_store_migrates_nothing_and_keeps_injection_points_and_rules() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.migrated_credentials(), 0);
        let rules: Vec<RequestRule> = vec!["GET /repos/acme/**".parse().unwrap()];
        let agent = store
            .create_agent(NewAgent {
                name: "a".into(),
                harness_id: "shell".into(),
                command: None,
                repo_url: None,
                branch: "main".into(),
                prompt: None,
                model: None,
                env: BTreeMap::new(),
                credentials: vec![NewCredential {
                    name: "GITHUB_TOKEN".into(),
                    hosts: vec!["api.github.com".into()],
                    value: Secret::new("ghp_x"),
                    inject: vec![Injection::Authorization, Injection::Query("access_token".into())],
                    rules: rules.clone(),
                }],
                allow_out: Vec::new(),
                deny_out: Vec::new(),
                limits: Default::default(),
                volumes: Vec::new(),
            })
            .await
            .unwrap();
        assert_eq!(agent.credentials[0].inject[1], Injection::Query("access_token".into()));
        assert_eq!(agent.credentials[0].rules, rules);
        let patch = AgentPatch {
            reinject: BTreeMap::from([("GITHUB_TOKEN".to_owned(), vec![Injection::Body])]),
            rerule: BTreeMap::from([("GITHUB_TOKEN".to_owned(), Vec::new())]),
            ..AgentPatch::default()
        };
        let changed = store.update_agent(agent.id, patch).await.unwrap().unwrap();
        assert_eq!(changed.credentials[0].inject, vec![Injection::Body]);
        assert!(changed.credentials[0].rules.is_empty());
        let stored = store.agent_credentials(agent.id).await.unwrap();
        assert_eq!(stored[0].inject, vec![Injection::Body]);
        assert_eq!(stored[0].value.expose(), "ghp_x");
    }

    /// A store in `dir` with one agent and one `ready` session on sandbox `sb-1`.
    async fn store_with_session(dir: &Path) -> (Store, Uuid) {
        let store = Store::open(dir).unwrap();
        let agent = store
            .create_agent(NewAgent {
                name: "a".into(),
                harness_id: "shell".into(),
                command: None,
                repo_url: None,
                branch: "main".into(),
                prompt: None,
                model: None,
                env: BTreeMap::new(),
                credentials: Vec::new(),
                allow_out: Vec::new(),
                deny_out: Vec::new(),
                limits: Default::default(),
                volumes: Vec::new(),
            })
            .await
            .unwrap();
        let session = Uuid::new_v4();
        store
            .insert_session(SessionRow {
                id: session,
                agent_id: agent.id,
                agent_name: agent.name.clone(),
                harness_id: "shell".into(),
                status: SessionStatus::Creating,
                phase: None,
                phase_detail: None,
                sandbox_id: None,
                sandbox_url: None,
                tty_token: "t".into(),
                harness_session_id: None,
                failure_reason: None,
                title: None,
                created_at: now(),
                last_seen_at: now(),
                stopped_at: None,
                owner: None,
            })
            .await
            .unwrap();
        let ready = SessionUpdate::Ready {
            sandbox_id: "sb-1".into(),
            sandbox_url: "local://sb-1".into(),
            harness_session_id: None,
        };
        store.update_session(session, ready).await.unwrap();
        (store, session)
    }

    fn record(n: u32) -> Interception {
        Interception {
            id: n.into(),
            timestamp: now(),
            method: "GET".into(),
            host: "h.test".into(),
            port: 443,
            path: format!("/{n}"),
            status: Some(200),
            swapped: Vec::new(),
            stubs_swapped: Vec::new(),
            scrubbed: Vec::new(),
            bytes_up: None,
            bytes_down: None,
            duration_ms: None,
            blocked: None,
            block_kind: None,
            alert: false,
        }
    }

    #[tokio::test]
    async fn the_egress_log_keeps_only_the_newest_records() {
        let dir = tempfile::tempdir().unwrap();
        let (store, session) = store_with_session(dir.path()).await;
        let total = MAX_INTERCEPTIONS + 5;
        let records: Vec<_> = (0..total).map(record).collect();
        store.insert_interceptions(session, records).await.unwrap();
        let kept = store.interceptions(session, 0, u32::MAX).await.unwrap();
        assert_eq!(kept.len() as u32, MAX_INTERCEPTIONS);
        assert_eq!(kept[0].path, "/5", "the oldest five are gone");
        assert_eq!(kept.last().unwrap().path, format!("/{}", total - 1));
    }

    #[tokio::test]
    async fn records_pulled_from_a_sandbox_vault_are_kept_with_their_position_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let (store, session) = store_with_session(dir.path()).await;
        assert_eq!(store.pulled_position("sb-1".into()).await.unwrap(), 0);
        store
            .keep_pulled(Some(session), "sb-1".into(), 2, vec![record(1), record(2)])
            .await
            .unwrap();
        assert_eq!(store.pulled_position("sb-1".into()).await.unwrap(), 2);
        // A warm sandbox's records only move its position.
        store
            .keep_pulled(None, "sb-warm".into(), 7, vec![record(7)])
            .await
            .unwrap();
        assert_eq!(store.pulled_position("sb-warm".into()).await.unwrap(), 7);
        // A late, older batch never moves a position back.
        store.keep_pulled(None, "sb-warm".into(), 3, Vec::new()).await.unwrap();
        assert_eq!(store.pulled_position("sb-warm".into()).await.unwrap(), 7);
        let kept = store.interceptions(session, 0, u32::MAX).await.unwrap();
        assert_eq!(kept.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["/1", "/2"]);
        store.forget_pulled_except(vec!["sb-1".into()]).await.unwrap();
        assert_eq!(store.pulled_position("sb-warm".into()).await.unwrap(), 0);
        assert_eq!(store.pulled_position("sb-1".into()).await.unwrap(), 2);
        store.forget_pulled("sb-1".into()).await.unwrap();
        assert_eq!(store.pulled_position("sb-1".into()).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_sandbox_that_died_kills_only_the_session_still_ready_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, session) = store_with_session(dir.path()).await;
        let died = |sandbox: &str| SessionUpdate::SandboxDied {
            sandbox_id: sandbox.into(),
            reason: format!("{sandbox} failed"),
        };
        let other = store.update_session(session, died("sb-old")).await.unwrap().unwrap();
        assert!(!other.applied, "another sandbox's death is no news");
        assert_eq!(other.row.status, SessionStatus::Ready);
        let died_here = store.update_session(session, died("sb-1")).await.unwrap().unwrap();
        assert!(died_here.applied);
        assert_eq!(died_here.row.status, SessionStatus::Dead);
        assert_eq!(died_here.row.failure_reason.as_deref(), Some("sb-1 failed"));
        // The same news again changes nothing, and says so (its reason is the same).
        let again = store.update_session(session, died("sb-1")).await.unwrap().unwrap();
        assert!(!again.applied);
        assert!(
            store
                .update_session(Uuid::new_v4(), died("sb-1"))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_update_says_whether_it_applied_and_which_sandbox_the_session_had() {
        let dir = tempfile::tempdir().unwrap();
        let (store, session) = store_with_session(dir.path()).await;
        let paused = store
            .update_session(session, SessionUpdate::Paused)
            .await
            .unwrap()
            .unwrap();
        assert!(paused.applied);
        let again = store
            .update_session(session, SessionUpdate::Paused)
            .await
            .unwrap()
            .unwrap();
        assert!(!again.applied, "paused already");
        let hibernated = store
            .update_session(session, SessionUpdate::Hibernated)
            .await
            .unwrap()
            .unwrap();
        assert!(hibernated.applied);
        assert_eq!(hibernated.sandbox_before.as_deref(), Some("sb-1"));
        assert_eq!(hibernated.row.sandbox_id, None, "a hibernated session names no sandbox");
        let restarted = store.restart_session(session).await.unwrap().unwrap();
        assert_eq!(restarted.status, SessionStatus::Creating);
        assert!(
            store.restart_session(session).await.unwrap().is_none(),
            "creating already"
        );
        let dead = SessionUpdate::Dead {
            reason: "deleted".into(),
        };
        assert!(
            store
                .update_session(session, dead.clone())
                .await
                .unwrap()
                .unwrap()
                .applied
        );
        assert!(
            !store.update_session(session, dead).await.unwrap().unwrap().applied,
            "dead already"
        );
    }
}
