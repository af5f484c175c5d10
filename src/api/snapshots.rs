//! Snapshot routes: take one of a session's workspace, list, delete, and start a session on a copy
//! of one (`control/workspace.rs` does the copying; a snapshot never holds a real credential, as the
//! workspace it copies never had one).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};

use crate::store::snapshots::SnapshotRow;
use crate::store::teams::Owned;
use crate::wire::api::{CreateSnapshot, ErrorBody, Session, SessionFromSnapshot, Snapshot};

use super::auth::Principal;
use super::json::{ApiJson, bytes_rejection, parse_optional};
use super::sessions::{Origin, parse_id, to_api};
use super::{ApiError, AppState, agents};

fn to_api_snapshot(row: SnapshotRow, path: Option<std::path::PathBuf>) -> Snapshot {
    Snapshot {
        id: row.id,
        name: row.name,
        session_id: row.session_id,
        agent_name: row.agent_name,
        path: path.map(|p| p.display().to_string()).unwrap_or_default(),
        size_bytes: row.size_bytes,
        created_at: row.created_at,
        owner: row.owner,
    }
}

/// Copy a session's workspace into a new snapshot (a running session is paused for the copy).
#[utoipa::path(post, path = "/api/v1/managed_agents/sessions/{id}/snapshots", tag = "snapshots",
    params(("id" = String, Path, description = "session UUID")),
    request_body(content = Option<CreateSnapshot>, description = "optional; an empty body means `{}`"),
    security(("master_key" = [])),
    responses((status = 200, body = Snapshot), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 410, body = ErrorBody), (status = 507, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Snapshot>, ApiError> {
    let body: CreateSnapshot = parse_optional(&body.map_err(bytes_rejection)?)?;
    let uuid = parse_id(&id)?;
    let mut row = state.control.create_snapshot(uuid, body.name).await?;
    row.owner = principal.owns(&state.store, Owned::Snapshot, row.id).await?;
    let path = state.control.snapshot_path(row.id);
    Ok(Json(to_api_snapshot(row, path)))
}

/// List snapshots, newest first.
#[utoipa::path(get, path = "/api/v1/managed_agents/snapshots", tag = "snapshots",
    security(("master_key" = [])), responses((status = 200, body = Vec<Snapshot>), (status = 409, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Vec<Snapshot>>, ApiError> {
    let rows = state.control.snapshots(principal.scope()).await?;
    Ok(Json(
        rows.into_iter()
            .map(|(row, path)| to_api_snapshot(row, Some(path)))
            .collect(),
    ))
}

/// Delete a snapshot (by name or id) and its copy.
#[utoipa::path(delete, path = "/api/v1/managed_agents/snapshots/{name}", tag = "snapshots",
    params(("name" = String, Path, description = "snapshot name or id")), security(("master_key" = [])),
    responses((status = 200, body = Snapshot), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the backend keeps no workspaces")))]
pub async fn delete(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Snapshot>, ApiError> {
    let row = state.control.delete_snapshot(&name).await?;
    let path = state.control.snapshot_path(row.id);
    Ok(Json(to_api_snapshot(row, path)))
}

/// Start a session of an agent on a copy of a snapshot. Returns at once with status `creating`;
/// poll until `ready`.
#[utoipa::path(post, path = "/api/v1/managed_agents/snapshots/{name}/session", tag = "snapshots",
    params(("name" = String, Path, description = "snapshot name or id")),
    request_body = SessionFromSnapshot,
    security(("master_key" = [])),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the backend keeps no workspaces"), (status = 507, body = ErrorBody)))]
pub async fn session(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    origin: Origin,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<SessionFromSnapshot>,
) -> Result<Json<Session>, ApiError> {
    let agent = agents::find(&state, &body.agent).await?;
    super::owners::may_use_agent(&state.store, &principal, &agent, &body.agent).await?;
    let _turn = super::teams::within_quota(&state, &principal, &agent).await?;
    let mut row = state.control.session_from_snapshot(&agent, &name, body.title).await?;
    row.owner = principal.owns(&state.store, Owned::Session, row.id).await?;
    Ok(Json(to_api(row, &origin, &principal)))
}
