//! Users and their API keys (`/api/v1/admin/users`, `/api/v1/admin/keys`, admin only).
//!
//! A key is `lap_key_` and 43 characters of base64url randomness (256 bits). It is shown once, in
//! the answer to its creation; `lap serve` keeps only its SHA-256 digest. A key acts as its user
//! with its [`Role`]: a `viewer` reads, a `member` also makes agents, sessions and snapshots of their
//! own and drives them, an `admin` does everything, users and keys included. The master key stays the
//! bootstrap admin.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// The path of the users collection.
pub const USERS_PATH: &str = "/api/v1/admin/users";
/// The path of the keys collection.
pub const KEYS_PATH: &str = "/api/v1/admin/keys";
/// What every API key begins with (the master key never does).
pub const KEY_PREFIX: &str = "lap_key_";
/// The path of the audit log.
pub const AUDIT_PATH: &str = "/api/v1/admin/audit";
/// The most audit entries one request answers.
pub const AUDIT_PAGE_MAX: u32 = 1000;
/// The longest user name.
pub const MAX_USER_NAME: usize = 64;

/// What a key may do, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
// `Role` is the message API's (user, assistant) in the document.
#[schema(as = KeyRole)]
pub enum Role {
    /// Reads: lists, shows, histories, event streams; changes nothing.
    Viewer,
    /// A viewer who also makes agents, sessions and snapshots of their own and drives them
    /// (terminals, exec, messages, files, ports), and starts sessions of the team's agents.
    Member,
    /// Everything, agents, users and keys included.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Member => "member",
            Self::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "viewer" => Some(Self::Viewer),
            "member" => Some(Self::Member),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /api/v1/admin/users`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Letters, digits, `.`, `_`, `-` and `@`; 1 to 64 characters; unique.
    pub name: String,
}

/// A user.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    /// A disabled user's keys are refused.
    pub disabled: bool,
    pub created_at: String,
    /// What their sessions may hold at once.
    #[serde(default)]
    pub quota: Quota,
}

/// What one user's sessions may hold at once (`PUT /api/v1/admin/users/{name}/quota`); a field left
/// out is not limited. A session that is not over (creating, ready, paused, hibernated) counts as
/// live; one that holds a sandbox (all but hibernated) counts its agent's `limits.memory_mb` and
/// `limits.cpus`, or [`QUOTA_DEFAULT_MEMORY_MB`] and [`QUOTA_DEFAULT_CPUS`] when the agent sets none.
/// A session made over quota is refused with 429, naming the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Live sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000000)]
    pub sessions: Option<u32>,
    /// Memory of their sandboxes together, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1073741824)]
    pub memory_mb: Option<u64>,
    /// CPUs of their sandboxes together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 1000000.0)]
    pub cpus: Option<f64>,
}

/// What a session of an agent without a memory limit counts against a quota: the local backend's
/// default sandbox memory.
pub const QUOTA_DEFAULT_MEMORY_MB: u64 = 4096;
/// The same for CPUs.
pub const QUOTA_DEFAULT_CPUS: f64 = 2.0;

/// `PATCH /api/v1/admin/users/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// `true` refuses every key of the user at once; `false` lets them in again.
    pub disabled: bool,
}

/// `POST /api/v1/admin/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// The user the key acts as (by name).
    pub user: String,
    pub role: Role,
    /// Seconds until the key is refused; none: it does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<u64>,
}

/// An API key as listed: never the key itself.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    /// Its user's name.
    pub user: String,
    pub role: Role,
    /// The key's first characters (`lap_key_` and 4 more), to tell keys apart.
    pub prefix: String,
    pub created_at: String,
    /// When it stops working (RFC 3339), if ever.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// When it was revoked, if it was.
    #[serde(default)]
    pub revoked_at: Option<String>,
}

/// The answer to `POST /api/v1/admin/keys`: the key itself, this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    /// The key: send it as `Authorization: Bearer <key>`. It is not stored and not shown again.
    pub key: String,
    #[serde(flatten)]
    pub info: ApiKey,
}

/// Whether `name` is a valid user name, and why not.
pub fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_USER_NAME {
        return Err(format!("a user name has 1 to {MAX_USER_NAME} characters"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(format!(
            "a user name holds letters, digits, `.`, `_`, `-` and `@`, not {bad:?}"
        ));
    }
    Ok(())
}

/// One control-plane action, as the audit log keeps it: who, when, from where, what, on which
/// object, and how it ended. Never a request body, so never a credential value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Increasing: `?after=` the last one seen gives what came since.
    pub id: u64,
    /// RFC 3339, UTC.
    pub at: String,
    /// `master` (the master key or the web UI) or a user's name.
    pub actor: String,
    /// The API key the actor used, if any.
    #[serde(default)]
    pub key_id: Option<Uuid>,
    /// The peer address the request came from, when known.
    #[serde(default)]
    pub peer: Option<String>,
    /// Method and route, e.g. `POST /api/v1/managed_agents/agents/{id}/session`, or `sign-in`,
    /// `attach`.
    pub action: String,
    /// The route's parameters, e.g. `id=3f0c…`, when it has any.
    #[serde(default)]
    pub target: Option<String>,
    /// The answer's HTTP status (101 for a terminal opened).
    pub status: u16,
}

/// `GET /api/v1/admin/audit`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditLog {
    /// Oldest first.
    pub entries: Vec<AuditEntry>,
}

/// Where `lap login --oidc` starts a sign-in (`POST`, no body, no key): the answer is an
/// [`OidcStart`]. Not part of the documented API: it serves the CLI only.
pub const OIDC_CLI_PATH: &str = "/auth/oidc/cli";
/// Where `lap login --oidc` waits for it (`POST` an [`OidcPoll`]).
pub const OIDC_POLL_PATH: &str = "/auth/oidc/cli/poll";

/// A sign-in started for the CLI.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OidcStart {
    /// The secret the CLI polls with; never shown.
    pub poll: String,
    /// The page the person opens in a browser.
    pub url: String,
    /// Shown by the CLI and by the page that asks to approve the sign-in, to tell them apart from a
    /// sign-in someone else started.
    pub code: String,
    /// How long the sign-in may take.
    pub expires_in_seconds: u64,
}

/// The body of a poll.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcPoll {
    pub poll: String,
}

/// The answer to a poll once the sign-in is approved: an API key of the user, this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OidcIssued {
    pub key: String,
    pub user: String,
    pub role: Role,
    pub expires_at: Option<String>,
}
