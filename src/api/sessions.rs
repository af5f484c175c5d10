//! Session routes: create (under an agent), list, show, delete, exec; and the workspace's: pause,
//! resume, hibernate, fork and the workspace's path and size (`control/workspace.rs`).
//!
//! `tty_token` is minted per session and opens that session's terminal only; `tty_url` is the
//! absolute `ws://`/`wss://` URL of the terminal WebSocket on this server (built from the request's
//! `Host`, `wss` when served over TLS or behind a proxy that says `X-Forwarded-Proto: https`; a
//! relative path when there is no `Host`), set for TUI harnesses once `ready`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::sandbox::{ExecChunk, ExecSpec};
use crate::store::SessionRow;
use crate::store::teams::Owned;
use crate::tools;
use crate::wire::api::{
    CreateSession, DeletedSession, ErrorBody, ExecCommand, ExecEvent, Interception, MAX_EXEC_STDIN, PREFIX,
    SESSION_PAGE_DEFAULT, SESSION_PAGE_MAX, Session, SessionStatus, Workspace,
};
use crate::wire::teams::Role;

use super::auth::Principal;
use super::json::{ApiJson, ApiQuery, bytes_rejection, parse_optional};
use super::{ApiError, AppState, agents};

/// How long an idle session lives before it is reaped, as LAP's `idle_timeout_ms` reports it.
pub const IDLE_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;
/// Output chunks (and response lines) of one exec buffered before the command is slowed down.
const EXEC_QUEUE: usize = 16;

/// Start a session of an agent. Returns at once with status `creating`; poll until `ready`.
#[utoipa::path(post, path = "/api/v1/managed_agents/agents/{id}/session", tag = "sessions",
    params(("id" = String, Path, description = "agent UUID or name")),
    request_body(content = Option<CreateSession>, description = "optional; an empty body means `{}`"),
    security(("master_key" = [])),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    origin: Origin,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Session>, ApiError> {
    let body: CreateSession = parse_optional(&body.map_err(bytes_rejection)?)?;
    let agent = agents::find(&state, &id).await?;
    let _turn = super::teams::within_quota(&state, &principal, &agent).await?;
    let mut row = state.control.create_session(&agent, body.title).await?;
    row.owner = principal.owns(&state.store, Owned::Session, row.id).await?;
    Ok(Json(to_api(row, &origin, &principal)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only sessions of this agent (UUID or name).
    agent_id: Option<String>,
    /// At most this many (default 50); values outside 1..=200 are clamped into it, as LAP does.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    limit: Option<u32>,
}

/// List sessions, newest first (a bare array, as in LAP).
#[utoipa::path(get, path = "/api/v1/managed_agents/sessions", tag = "sessions", params(ListQuery),
    security(("master_key" = [])), responses((status = 200, body = Vec<Session>), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    origin: Origin,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<Session>>, ApiError> {
    let agent_id = match &query.agent_id {
        Some(id) => Some(agents::find(&state, id).await?.id),
        None => None,
    };
    let limit = query.limit.unwrap_or(SESSION_PAGE_DEFAULT).clamp(1, SESSION_PAGE_MAX);
    let rows = state.store.list_sessions(agent_id, limit, principal.scope()).await?;
    Ok(Json(
        rows.into_iter().map(|row| to_api(row, &origin, &principal)).collect(),
    ))
}

/// Show one session.
#[utoipa::path(get, path = "/api/v1/managed_agents/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "session UUID")), security(("master_key" = [])),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    origin: Origin,
    Path(id): Path<String>,
) -> Result<Json<Session>, ApiError> {
    let uuid = parse_id(&id)?;
    let row = state.store.get_session(uuid).await?.ok_or_else(|| not_found(&id))?;
    Ok(Json(to_api(row, &origin, &principal)))
}

/// Stop a session: its sandbox is deleted and it becomes `dead`.
#[utoipa::path(delete, path = "/api/v1/managed_agents/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "session UUID")), security(("master_key" = [])),
    responses((status = 200, body = DeletedSession), (status = 404, body = ErrorBody)))]
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<DeletedSession>, ApiError> {
    let uuid = parse_id(&id)?;
    let before = state
        .control
        .delete_session(uuid)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let status = if before.status.is_terminal() {
        before.status.as_str()
    } else {
        "deleted"
    };
    Ok(Json(DeletedSession {
        id: uuid,
        status: status.to_owned(),
    }))
}

/// Names of the credentials this session's sandbox holds stubs for (LAP's `vault-keys`).
#[utoipa::path(get, path = "/api/v1/managed_agents/sessions/{id}/vault-keys", tag = "vault",
    params(("id" = String, Path, description = "session UUID")), security(("master_key" = [])),
    responses((status = 200, body = Vec<String>), (status = 404, body = ErrorBody)))]
pub async fn vault_keys(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Vec<String>>, ApiError> {
    let uuid = existing(&state, &id).await?;
    Ok(Json(state.control.vault_keys(uuid).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InterceptionQuery {
    /// Only records after this position (`id` of the last record seen), to follow the log.
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<u64>,
    /// At most this many (default 500); values outside 1..=5000 are clamped into it.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    limit: Option<u32>,
}

/// Requests that went through this session's vault, oldest first, blocked ones included. Kept in the
/// store, so the log outlives the session's sandbox and restarts of `lap serve`.
#[utoipa::path(get, path = "/api/v1/managed_agents/sessions/{id}/interceptions", tag = "vault",
    params(("id" = String, Path, description = "session UUID"), InterceptionQuery), security(("master_key" = [])),
    responses((status = 200, body = Vec<Interception>), (status = 404, body = ErrorBody)))]
pub async fn interceptions(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<InterceptionQuery>,
) -> Result<Json<Vec<Interception>>, ApiError> {
    let after = super::json::position(query.after)?;
    let uuid = existing(&state, &id).await?;
    let limit = query.limit.unwrap_or(500).clamp(1, 5000);
    Ok(Json(
        state.control.interceptions(uuid, after.unwrap_or(0), limit).await?,
    ))
}

/// How long `restart` waits for the fresh sandbox before answering with the session as it is.
const RESTART_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Give a session a fresh sandbox (from `ready`, `dead` or `failed`): the old one is deleted and
/// bring-up runs again. Answers once the session has settled (`ready` or `failed`), as LAP does.
#[utoipa::path(post, path = "/api/v1/managed_agents/sessions/{id}/restart", tag = "sessions",
    params(("id" = String, Path, description = "session UUID")), security(("master_key" = [])),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn restart(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    origin: Origin,
    Path(id): Path<String>,
) -> Result<Json<Session>, ApiError> {
    let uuid = parse_id(&id)?;
    let _turn = quota_to_wake(&state, &principal, uuid, &id).await?;
    let mut row = state
        .control
        .restart_session(uuid)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let deadline = tokio::time::Instant::now() + RESTART_WAIT;
    while row.status == SessionStatus::Creating && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        row = state.store.get_session(uuid).await?.ok_or_else(|| not_found(&id))?;
    }
    Ok(Json(to_api(row, &origin, &principal)))
}

/// The quota turn to bring session `uuid` back on a new sandbox: a hibernated session's memory and
/// CPUs count again, a dead or failed one counts as a new session; one that holds a sandbox changes
/// nothing.
async fn quota_to_wake(
    state: &AppState,
    principal: &Principal,
    uuid: Uuid,
    id: &str,
) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, ApiError> {
    let session = state.store.get_session(uuid).await?.ok_or_else(|| not_found(id))?;
    quota_to_bring_back(state, principal, &session).await
}

/// [`quota_to_wake`] for what an attach, an exec or a message wakes by itself (a hibernated
/// session), by id; nothing for a session that is not there (the caller reports it).
pub(super) async fn quota_to_wake_by_itself(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, ApiError> {
    let Ok(uuid) = Uuid::parse_str(id) else { return Ok(None) };
    match state.store.get_session(uuid).await? {
        Some(session) => quota_to_wake_row(state, principal, &session).await,
        None => Ok(None),
    }
}

/// [`quota_to_wake_by_itself`] for a session already read.
pub(super) async fn quota_to_wake_row(
    state: &AppState,
    principal: &Principal,
    session: &crate::store::SessionRow,
) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, ApiError> {
    if session.status != SessionStatus::Hibernated {
        return Ok(None);
    }
    quota_to_bring_back(state, principal, session).await
}

async fn quota_to_bring_back(
    state: &AppState,
    principal: &Principal,
    session: &crate::store::SessionRow,
) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, ApiError> {
    let new_session = match session.status {
        SessionStatus::Hibernated => false,
        SessionStatus::Dead | SessionStatus::Failed => true,
        _ => return Ok(None),
    };
    let agent = agents::find(state, &session.agent_id.to_string()).await?;
    super::teams::quota_check(state, principal, &agent, new_session).await
}

/// The id of a session that exists, or 404.
async fn existing(state: &AppState, id: &str) -> Result<Uuid, ApiError> {
    let uuid = parse_id(id)?;
    state.store.get_session(uuid).await?.ok_or_else(|| not_found(id))?;
    Ok(uuid)
}

/// Run a command in a ready session's sandbox, as the sandbox user. The response streams
/// newline-delimited JSON (`application/x-ndjson`), one [`ExecEvent`] per line: `{"stdout": b64}` and
/// `{"stderr": b64}` chunks as the command writes them, then one `{"exit_code": N}` or `{"error": …}`.
/// Closing the response early kills the command.
#[utoipa::path(post, path = "/api/v1/managed_agents/sessions/{id}/exec", tag = "sessions",
    params(("id" = String, Path, description = "session UUID")),
    request_body = ExecCommand,
    security(("master_key" = [])),
    responses(
        (status = 200, content_type = "application/x-ndjson", body = ExecEvent,
            description = "one ExecEvent per line, ending with `exit_code` or `error`"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn exec(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExecCommand>,
) -> Result<axum::response::Response, ApiError> {
    use base64::Engine;
    let uuid = parse_id(&id)?;
    if body.command.is_empty() {
        return Err(ApiError::bad_request("`command` is empty").hint("give the program and its arguments"));
    }
    let stdin = match &body.stdin {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| ApiError::bad_request(format!("`stdin` is not base64: {e}")))?,
        None => Vec::new(),
    };
    if stdin.len() > MAX_EXEC_STDIN {
        return Err(ApiError::bad_request(format!("`stdin` is over {MAX_EXEC_STDIN} bytes")));
    }
    let row = state.store.get_session(uuid).await?.ok_or_else(|| not_found(&id))?;
    // A paused or hibernated session wakes by itself for an exec (within its user's quota).
    let turn = quota_to_wake_row(&state, &principal, &row).await?;
    let row = state.control.wake(row).await?;
    drop(turn);
    let sandbox = match (&row.status, row.sandbox_id) {
        (SessionStatus::Ready, Some(sandbox)) => sandbox,
        (status, _) => {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                format!("session {id} is {}, not ready", status.as_str()),
            )
            .hint("wait until `lap sessions show` says ready"));
        }
    };
    let spec = ExecSpec {
        argv: body.command,
        cwd: body.cwd,
        stdin,
        env: Vec::new(),
    };
    let (chunk_tx, mut chunk_rx) = tokio::sync::mpsc::channel::<ExecChunk>(EXEC_QUEUE);
    let (line_tx, line_rx) = tokio::sync::mpsc::channel::<Bytes>(EXEC_QUEUE);
    // Owned by the response: when the client goes, the response's receiver is dropped; the task
    // then drops `run` (which kills the command) at once, even while the command writes nothing.
    tokio::spawn(async move {
        let run = state.control.exec(&sandbox, spec, chunk_tx);
        let forward = async {
            while let Some(chunk) = chunk_rx.recv().await {
                let event = match chunk {
                    ExecChunk::Stdout(data) => {
                        ExecEvent::Stdout(base64::engine::general_purpose::STANDARD.encode(data))
                    }
                    ExecChunk::Stderr(data) => {
                        ExecEvent::Stderr(base64::engine::general_purpose::STANDARD.encode(data))
                    }
                };
                if line_tx.send(event_line(&event)).await.is_err() {
                    break;
                }
            }
            drop(chunk_rx);
        };
        let both = async { tokio::join!(run, forward) };
        let (result, ()) = tokio::select! {
            done = both => done,
            () = line_tx.closed() => return,
        };
        let last = match result {
            Ok(code) => ExecEvent::ExitCode(code),
            Err(err) => ExecEvent::Error(err.to_string()),
        };
        let _ = line_tx.send(event_line(&last)).await;
    });
    let lines = futures_util::stream::unfold(line_rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, std::convert::Infallible>(line), rx))
    });
    axum::response::Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(axum::body::Body::from_stream(lines))
        .map_err(|_| ApiError::internal())
}

/// Freeze a `ready` session's processes (cgroup freezer; memory intact). An attach, a message or an
/// exec resumes it by itself.
#[utoipa::path(post, path = "/api/v1/managed_agents/sessions/{id}/pause", tag = "sessions",
    params(("id" = String, Path, description = "session UUID")), security(("master_key" = [])),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    origin: Origin,
    Path(id): Path<String>,
) -> Result<Json<Session>, ApiError> {
    let uuid = parse_id(&id)?;
    let row = state.control.pause_session(uuid).await?;
    Ok(Json(to_api(row, &origin, &principal)))
}

/// Bring a `paused` or `hibernated` session back to `ready` (a hibernated one on a new sandbox over
/// its workspace); answers once it is ready.
#[utoipa::path(post, path = "/api/v1/managed_agents/sessions/{id}/resume", tag = "sessions",
    params(("id" = String, Path, description = "session UUID")), security(("master_key" = [])),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    origin: Origin,
    Path(id): Path<String>,
) -> Result<Json<Session>, ApiError> {
    let uuid = parse_id(&id)?;
    let _turn = quota_to_wake(&state, &principal, uuid, &id).await?;
    let row = state.control.resume_session(uuid).await?;
    Ok(Json(to_api(row, &origin, &principal)))
}

/// Stop a `ready` or `paused` session's sandbox and keep only its workspace.
#[utoipa::path(post, path = "/api/v1/managed_agents/sessions/{id}/hibernate", tag = "sessions",
    params(("id" = String, Path, description = "session UUID")), security(("master_key" = [])),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn hibernate(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    origin: Origin,
    Path(id): Path<String>,
) -> Result<Json<Session>, ApiError> {
    let uuid = parse_id(&id)?;
    let row = state.control.hibernate_session(uuid).await?;
    Ok(Json(to_api(row, &origin, &principal)))
}

/// Start a new session of the same agent on a copy of this session's workspace (it is paused for
/// the copy). Returns at once with status `creating`; poll until `ready`.
#[utoipa::path(post, path = "/api/v1/managed_agents/sessions/{id}/fork", tag = "sessions",
    params(("id" = String, Path, description = "session UUID")),
    request_body(content = Option<CreateSession>, description = "optional; an empty body means `{}`"),
    security(("master_key" = [])),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 410, body = ErrorBody), (status = 507, body = ErrorBody)))]
pub async fn fork(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    origin: Origin,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Session>, ApiError> {
    let body: CreateSession = parse_optional(&body.map_err(bytes_rejection)?)?;
    let uuid = parse_id(&id)?;
    let parent = state.store.get_session(uuid).await?.ok_or_else(|| not_found(&id))?;
    let agent = agents::find(&state, &parent.agent_id.to_string()).await?;
    let _turn = super::teams::within_quota(&state, &principal, &agent).await?;
    let mut row = state.control.fork_session(uuid, body.title).await?;
    row.owner = principal.owns(&state.store, Owned::Session, row.id).await?;
    Ok(Json(to_api(row, &origin, &principal)))
}

/// Where a session's workspace (its `/work`) lives on the server and how much it holds.
#[utoipa::path(get, path = "/api/v1/managed_agents/sessions/{id}/workspace", tag = "sessions",
    params(("id" = String, Path, description = "session UUID")), security(("master_key" = [])),
    responses((status = 200, body = Workspace), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn workspace(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Workspace>, ApiError> {
    let uuid = parse_id(&id)?;
    let (path, size_bytes, exists) = state.control.workspace(uuid).await?.ok_or_else(|| not_found(&id))?;
    Ok(Json(Workspace {
        session_id: uuid,
        path: path.display().to_string(),
        size_bytes,
        exists,
    }))
}

fn event_line(event: &ExecEvent) -> Bytes {
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

pub(super) fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| not_found(id))
}

pub(super) fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("session `{id}` not found")).hint("`lap sessions list` shows the sessions that exist")
}

/// Where clients reach this server, as WebSocket origin (`ws://host:port`), from the request.
pub struct Origin(Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let host = header("host").filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()));
        let tls = parts.extensions.get::<super::ServedOverTls>().is_some()
            || header("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https"));
        let scheme = if tls { "wss" } else { "ws" };
        Ok(Self(host.map(|host| format!("{scheme}://{host}"))))
    }
}

/// A session as `principal` may see it: a viewer reads, so gets no `tty_token` to type with; any
/// other key gets a token bound to it, which stops opening the terminal when the key is revoked.
fn shown_to(principal: &Principal, mut session: Session) -> Session {
    match principal {
        Principal::Master => {}
        Principal::Key { role: Role::Viewer, .. } => session.tty_token = None,
        Principal::Key { key_id, .. } => {
            session.tty_token = session
                .tty_token
                .map(|token| super::tty::key_bound_token(&token, *key_id));
        }
    }
    session
}

/// A session as the API shows it to `principal` ([`shown_to`]).
pub(super) fn to_api(row: SessionRow, origin: &Origin, principal: &Principal) -> Session {
    shown_to(principal, session_of(row, origin))
}

fn session_of(row: SessionRow, origin: &Origin) -> Session {
    let supports_tui = tools::find(&row.harness_id).is_none_or(|h| h.supports_tui());
    let ready = row.status == SessionStatus::Ready;
    // A paused or hibernated session's terminal is there to attach to: the attach wakes it.
    let live = matches!(
        row.status,
        SessionStatus::Ready | SessionStatus::Paused | SessionStatus::Hibernated
    );
    let origin = origin.0.as_deref().unwrap_or_default();
    Session {
        tty_url: (live && supports_tui).then(|| format!("{origin}{PREFIX}/sessions/{}/tty", row.id)),
        tty_token: Some(row.tty_token),
        id: row.id,
        agent_id: row.agent_id,
        agent_name: row.agent_name,
        status: row.status,
        phase: row.phase,
        phase_detail: row.phase_detail,
        sandbox_url: row.sandbox_url,
        // An API session whose tool has not named its conversation yet answers with its own id, so
        // LAP's CLI can address the opencode-compatible routes (which take any value) at once.
        harness_session_id: row
            .harness_session_id
            .or_else(|| (ready && !supports_tui).then(|| row.id.to_string())),
        supports_tui,
        failure_reason: row.failure_reason,
        title_preview: row.title.map(|t| t.chars().take(60).collect()),
        idle_timeout_ms: Some(IDLE_TIMEOUT_MS),
        created_at: row.created_at,
        last_seen_at: row.last_seen_at,
        stopped_at: row.stopped_at,
        owner: row.owner,
    }
}
