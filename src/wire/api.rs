//! REST JSON shapes of `lap serve`, LAP-compatible.
//!
//! Paths live under [`PREFIX`] (`/api/v1/managed_agents`) and keep LAP's field names, lowercase status
//! strings and the `{"error": …}` envelope, so LAP's CLI and scripts keep working. Our additions are
//! `hint` on errors, `env` (plain variables), `credentials` (names, bound hosts, injection points,
//! request rules and fingerprints — values are write-only and never come back), `env_var_inject` and
//! `env_var_rules` beside LAP's `env_var_hosts`, and `command`.
//!
//! Request bodies reject unknown fields, so a typo is a 400 that names the field instead of a silent
//! no-op. Timestamps are RFC 3339 strings in UTC with millisecond precision.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Prefix of the LAP-compatible routes.
pub const PREFIX: &str = "/api/v1/managed_agents";

/// Largest JSON request body the server reads.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Default and largest page sizes of the agent list.
pub const AGENT_PAGE_DEFAULT: u32 = 50;
pub const AGENT_PAGE_MAX: u32 = 200;
/// Default and largest page sizes of the session list.
pub const SESSION_PAGE_DEFAULT: u32 = 50;
pub const SESSION_PAGE_MAX: u32 = 200;

pub use super::vault::{CREDENTIAL_PRESETS, preset_hosts};
use super::vault::{Injection, RequestRule};

/// The error envelope of every non-2xx response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// `GET /api/v1/health` (unauthenticated).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub ok: bool,
    pub version: String,
    pub backend: String,
}

/// `GET /api/v1/health/k8s` (unauthenticated): whether the Kubernetes API server of the `kube`
/// backend answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct K8sHealth {
    /// The API server answered.
    pub ok: bool,
    pub backend: String,
    /// The namespace sandboxes are made in (`kube` backend only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The API server's version, e.g. `v1.35.0`, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Why it is not reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A credential as the API shows it: never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CredentialInfo {
    pub name: String,
    /// Host patterns the credential is bound to: `host`, `*.suffix`, optionally `:port`.
    pub hosts: Vec<String>,
    /// A short keyed hash of the value, to tell two values apart without revealing either.
    pub fingerprint: String,
    /// Where in a request to a bound host the vault swaps its stub: `authorization`, `header:NAME`,
    /// `query:NAME`, `body`. A stub anywhere else is refused.
    #[serde(default)]
    #[schema(value_type = Vec<String>, example = json!(["authorization", "header:x-api-key"]))]
    pub inject: Vec<Injection>,
    /// Requests it may be swapped into, `METHODS /glob` (empty: any).
    #[serde(default)]
    #[schema(value_type = Vec<String>, example = json!(["GET,POST /repos/acme/**"]))]
    pub rules: Vec<RequestRule>,
}

/// A credential as a client sends it. The value is write-only.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialInput {
    /// An environment variable name.
    #[schema(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")]
    pub name: String,
    /// The real value: at most 16384 bytes, no control characters.
    #[schema(min_length = 1, max_length = 16384, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub value: String,
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Injection points (`authorization`, `header:NAME`, `query:NAME`, `body`); left out: the
    /// preset's for a new credential, the stored ones for an existing one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject: Option<Vec<String>>,
    /// Request rules (`METHODS /glob`); left out: none for a new credential, the stored ones for an
    /// existing one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<String>>,
}

/// `ApiAgent`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    pub id: Uuid,
    pub name: String,
    pub harness_id: String,
    pub supports_tui: bool,
    /// A custom agent command instead of the harness's own.
    pub command: Option<String>,
    pub repo_url: Option<String>,
    pub branch: String,
    pub prompt: Option<String>,
    pub model: Option<String>,
    /// Plain, non-secret environment variables.
    pub env: BTreeMap<String, String>,
    pub credentials: Vec<CredentialInfo>,
    /// LAP's view of the bindings: credential name → hosts.
    pub env_var_hosts: BTreeMap<String, Vec<String>>,
    pub allow_out: Vec<String>,
    pub deny_out: Vec<String>,
    /// Resource limits of the agent's sandboxes over the server's defaults (absent: none set).
    #[serde(default, skip_serializing_if = "AgentLimits::is_empty", deserialize_with = "object")]
    pub limits: AgentLimits,
    /// Named directories of the agent kept on the server and mounted into each of its sessions'
    /// sandboxes (absent: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<AgentVolume>,
    /// The user who made it with an API key; absent: the team's (made with the master key or the
    /// web UI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Only in list responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_count: Option<u64>,
    /// Only in list responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_active_session: Option<bool>,
}

/// Resource limits of an agent's sandboxes. A field left out takes the server's default (memory
/// 4096 MiB, 1024 processes and threads, 2 CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentLimits {
    /// Memory, in MiB (16 to 1048576).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 16, maximum = 1048576)]
    pub memory_mb: Option<u64>,
    /// Processes and threads (16 to 1000000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 16, maximum = 1000000)]
    pub pids: Option<u64>,
    /// CPUs, fractions allowed (0.01 to 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.01, maximum = 1024.0)]
    pub cpus: Option<f64>,
}

/// A volume of an agent: a directory kept on the server under its name, mounted at `path` in every
/// sandbox of the agent's sessions, so what one session writes there the next finds (a package
/// cache, say). Sessions running at once share it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentVolume {
    /// 1-32 characters of a-z, 0-9, `-` and `_`, starting with a letter or digit; unique in the agent.
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,31}$")]
    pub name: String,
    /// Where it is mounted: an absolute path under `/work`, such as `/work/home/.cache` — not
    /// `/work` itself, `/work/home` itself, nor `/work/repo` or anything in it; no `.` or `..`.
    #[schema(max_length = 256)]
    pub path: String,
    /// Bytes it holds on the server (only in `GET /agents/{id}`; ignored in a request body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

impl AgentLimits {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `GET /agents` response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentList {
    pub data: Vec<Agent>,
    pub total: u64,
    pub limit: u32,
    pub offset: u32,
}

/// `POST /agents` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// 1-63 characters of a-z, 0-9 and `-`, starting with a letter or digit; unique, and not a UUID.
    #[schema(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")]
    pub name: String,
    /// Defaults to `opencode`, as in LAP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    /// Defaults to `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "objects")]
    pub credentials: Vec<CredentialInput>,
    /// LAP's form of credentials: name → real value (vaulted, never returned).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, String>,
    /// LAP's form of bindings: credential name → hosts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_var_hosts: BTreeMap<String, Vec<String>>,
    /// Credential name → injection points (`authorization`, `header:NAME`, `query:NAME`, `body`).
    /// A credential left out gets its preset's (`authorization` for a name no preset knows).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_var_inject: BTreeMap<String, Vec<String>>,
    /// Credential name → request rules (`METHODS /glob`, e.g. `GET,POST /repos/acme/**`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_var_rules: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_out: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_out: Vec<String>,
    #[serde(default, skip_serializing_if = "AgentLimits::is_empty", deserialize_with = "object")]
    pub limits: AgentLimits,
    /// The agent's volumes (see `AgentVolume`).
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "objects")]
    pub volumes: Vec<AgentVolume>,
}

/// `PATCH /agents/{id}` body. A field left out is left alone; an empty string clears an optional
/// text field; `env`, `allow_out` and `deny_out` replace the stored value; credentials are upserted
/// by name and removed with `remove_credentials`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgent {
    /// A new name: 1-63 characters of a-z, 0-9 and `-`, starting with a letter or digit; unique, and
    /// not a UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "objects")]
    pub credentials: Vec<CredentialInput>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_var_hosts: BTreeMap<String, Vec<String>>,
    /// Credential name → injection points; replaces that credential's set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_var_inject: BTreeMap<String, Vec<String>>,
    /// Credential name → request rules; replaces that credential's set (`[]`: any request).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_var_rules: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_credentials: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
    /// Replaces the agent's limits (`{}` clears them); applies to sessions created afterwards.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_object"
    )]
    pub limits: Option<AgentLimits>,
    /// Replaces the agent's volumes (`[]`: none); the data of a volume left out is deleted, that of
    /// one kept (by name) stays, even when its path changes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_objects"
    )]
    pub volumes: Option<Vec<AgentVolume>>,
}

/// `POST /agents/{id}/session` body; an empty body means `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// Lifecycle of a session: `creating → ready → dead`, or `creating → failed`; a ready session may be
/// `paused` (its processes frozen, memory kept) or `hibernated` (no sandbox, only its workspace) and
/// comes back to `ready` on a resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Creating,
    Ready,
    Failed,
    Dead,
    Paused,
    Hibernated,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::Paused => "paused",
            Self::Hibernated => "hibernated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "creating" => Some(Self::Creating),
            "ready" => Some(Self::Ready),
            "failed" => Some(Self::Failed),
            "dead" | "stopped" => Some(Self::Dead),
            "paused" => Some(Self::Paused),
            "hibernated" => Some(Self::Hibernated),
            _ => None,
        }
    }

    /// `creating`, `ready`, `paused` or `hibernated`: a session an attach, a message or an exec can
    /// use (a paused or hibernated one is woken by the server first).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Creating | Self::Ready | Self::Paused | Self::Hibernated)
    }

    /// `failed` and `dead` never change again (until a restart gives the session a new sandbox).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Failed | Self::Dead)
    }
}

/// `GET /sessions/{id}/workspace`: where a session's workspace (its `/work`: the repo, the agent's
/// home, the tool's transcripts) lives on the server, and how much it holds. It outlives the
/// session's sandbox and is deleted with the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Workspace {
    pub session_id: Uuid,
    /// Where it lives: the host path of the workspace directory, or, on the Kubernetes backend,
    /// `kube://NAMESPACE/persistentvolumeclaims/NAME` (empty once deleted there).
    pub path: String,
    /// Bytes of its files (apparent sizes; shared reflinked extents are counted in full); on the
    /// Kubernetes backend, the claim's capacity.
    pub size_bytes: u64,
    /// Whether it exists (`false` once deleted with its session).
    pub exists: bool,
}

/// A named copy of a session's workspace (`lap snapshots …`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    pub id: Uuid,
    pub name: String,
    /// The session it was taken from.
    pub session_id: Uuid,
    pub agent_name: String,
    /// Where the copy is: a host path, or, on the Kubernetes backend,
    /// `kube://NAMESPACE/volumesnapshots/NAME`.
    pub path: String,
    pub size_bytes: u64,
    pub created_at: String,
    /// The user who took it with an API key; absent: the team's (taken with the master key or the
    /// web UI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// `POST /sessions/{id}/snapshots` body; an empty body means `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// Unique name, `[A-Za-z0-9._-]`, at most 64 characters, not starting with `.` (default: generated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")]
    pub name: Option<String>,
}

/// `POST /snapshots/{name}/session` body: a new session of `agent` on a copy of the snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionFromSnapshot {
    /// Agent name or id.
    pub agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// `ApiSession`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub agent_name: String,
    pub status: SessionStatus,
    pub phase: Option<String>,
    pub phase_detail: Option<String>,
    pub sandbox_url: Option<String>,
    /// Relative path of the terminal WebSocket; set for TUI harnesses once `ready`.
    pub tty_url: Option<String>,
    /// The bearer token that opens this session's terminal and no other.
    pub tty_token: Option<String>,
    pub harness_session_id: Option<String>,
    pub supports_tui: bool,
    pub failure_reason: Option<String>,
    pub title_preview: Option<String>,
    pub idle_timeout_ms: Option<u64>,
    pub created_at: String,
    pub last_seen_at: String,
    pub stopped_at: Option<String>,
    /// The user who made it with an API key; absent: the team's (made with the master key or the
    /// web UI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// `DELETE /sessions/{id}` response, LAP's shape.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeletedSession {
    pub id: Uuid,
    /// `deleted` when this call stopped it, else the status it already had.
    pub status: String,
}

/// One request that went through a session's vault (`GET /sessions/{id}/interceptions`): LAP's
/// fields (`timestamp`, `method`, `host`, `path`, `stubs_swapped`, `blocked`) plus ours. Never a real
/// value, nor any part of one (LAP's `real_tail` is deliberately absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Interception {
    /// Position in the session's log, increasing; 0 until stored. `?after=` takes it.
    #[serde(default)]
    pub id: u64,
    pub timestamp: String,
    pub method: String,
    pub host: String,
    pub port: u16,
    /// As the sandbox sent it (stubs, never real values), query values redacted.
    pub path: String,
    /// The upstream's status, or the vault's own when it answered itself.
    pub status: Option<u16>,
    /// Credentials whose stubs were swapped for real values, by name.
    pub swapped: Vec<String>,
    /// The stubs that were swapped (LAP's field).
    #[serde(default)]
    pub stubs_swapped: Vec<String>,
    /// Credentials whose real values were scrubbed from the response.
    pub scrubbed: Vec<String>,
    /// Request body bytes sent upstream, when known when the response began.
    #[serde(default)]
    pub bytes_up: Option<u64>,
    /// Response body bytes, when the upstream announced them.
    #[serde(default)]
    pub bytes_down: Option<u64>,
    /// From the request to the response's head, in milliseconds.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Why the vault refused the request, when it did.
    pub blocked: Option<String>,
    /// The kind of refusal, as `X-Lap-Vault-Blocked` said it: `credential-not-bound`,
    /// `credential-not-injectable`, `credential-rule`, `tunnel-limit`, `egress-policy`,
    /// `host-mismatch`, `sni-mismatch`, `compressed-body`, `compressed-response` or (the Kubernetes
    /// gateway) `proxy-credential`.
    #[serde(default)]
    pub block_kind: Option<String>,
    /// A stub was headed somewhere it is not bound to: someone tried to move a credential.
    pub alert: bool,
}

/// Largest stdin `POST /sessions/{id}/exec` carries (before base64), so the request stays under
/// [`MAX_BODY_BYTES`].
pub const MAX_EXEC_STDIN: usize = 512 * 1024;
/// Longest line of the exec response stream a client accepts.
pub const MAX_EXEC_LINE: usize = 256 * 1024;

/// `POST /sessions/{id}/exec` body: a command to run in the session's sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecCommand {
    /// The program and its arguments.
    #[schema(min_items = 1)]
    pub command: Vec<String>,
    /// All of the command's stdin, base64 (standard alphabet, padded); none means empty stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Working directory inside the sandbox (default: the sandbox user's home).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// One line of the `POST /sessions/{id}/exec` response, which is newline-delimited JSON
/// (`application/x-ndjson`): `stdout` and `stderr` chunks (base64) in the order the command wrote
/// them on each stream, then exactly one `exit_code` (128 + the signal number when it was killed)
/// or one `error` (it could not run, or the sandbox failed mid-way), then the end of the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecEvent {
    Stdout(String),
    Stderr(String),
    ExitCode(i32),
    Error(String),
}

/// Reads a struct only from a JSON object: serde's derive would read one from an array too, which
/// the OpenAPI document forbids.
fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let map = serde_json::Map::deserialize(deserializer)?;
    T::deserialize(serde_json::Value::Object(map)).map_err(serde::de::Error::custom)
}

/// [`object`] for an optional field (`null` is none).
fn optional_object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    Option::<serde_json::Map<String, serde_json::Value>>::deserialize(deserializer)?
        .map(|map| T::deserialize(serde_json::Value::Object(map)).map_err(serde::de::Error::custom))
        .transpose()
}

/// [`object`] for each item of a list.
fn objects<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    Vec::<serde_json::Map<String, serde_json::Value>>::deserialize(deserializer)?
        .into_iter()
        .map(|map| T::deserialize(serde_json::Value::Object(map)).map_err(serde::de::Error::custom))
        .collect()
}

/// [`objects`] for an optional field (`null` is none).
fn optional_objects<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    Option::<Vec<serde_json::Map<String, serde_json::Value>>>::deserialize(deserializer)?
        .map(|maps| {
            maps.into_iter()
                .map(|map| T::deserialize(serde_json::Value::Object(map)).map_err(serde::de::Error::custom))
                .collect()
        })
        .transpose()
}
