//! Admin routes (master key): `GET /api/v1/admin/stats`, the warm pool and sessions at a glance.

use axum::Json;
use axum::extract::State;

use crate::wire::admin::AdminStats;

use super::{ApiError, AppState};

/// The warm pool (configured size, warm sandboxes per agent and harness, hits, misses, recent claim
/// latencies) and sessions by status.
#[utoipa::path(get, path = "/api/v1/admin/stats", tag = "admin", security(("master_key" = [])),
    responses((status = 200, body = AdminStats), (status = 401, body = crate::wire::api::ErrorBody)))]
pub async fn stats(State(state): State<AppState>) -> Result<Json<AdminStats>, ApiError> {
    Ok(Json(state.control.admin_stats().await?))
}
