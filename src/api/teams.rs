//! Users, their API keys, quotas and the audit log (admin only): `GET|POST /api/v1/admin/users`,
//! `PATCH /api/v1/admin/users/{name}`, `PUT /api/v1/admin/users/{name}/quota`, `GET|POST
//! /api/v1/admin/keys`, `DELETE /api/v1/admin/keys/{id}`, `GET /api/v1/admin/audit`. A key is shown
//! once, in the answer to its creation; `lap serve` keeps its SHA-256 digest. [`within_quota`] is
//! what session creation asks.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::store::teams::NewKeyRow;
use crate::wire::api::{Agent, ErrorBody};
use crate::wire::teams::{
    AUDIT_PAGE_MAX, ApiKey, AuditLog, CreatedApiKey, KEY_PREFIX, NewApiKey, NewUser, QUOTA_DEFAULT_CPUS,
    QUOTA_DEFAULT_MEMORY_MB, Quota, Role, User, UserPatch, check_user_name,
};

use super::auth::Principal;
use super::json::{ApiJson, ApiQuery};
use super::{ApiError, AppState};

/// The largest session quota (as documented on [`Quota`]).
const MAX_QUOTA_SESSIONS: u32 = 1_000_000;
/// The largest memory quota, in MiB (1 PiB).
const MAX_QUOTA_MEMORY_MB: u64 = 1_073_741_824;
/// The longest a key may be made to last: ten years.
const MAX_EXPIRY_SECONDS: u64 = 10 * 365 * 24 * 3600;
/// Characters of a key kept to tell it apart (after `lap_key_`).
const PREFIX_CHARS: usize = 4;

/// The SHA-256 digest of a key, as stored.
pub fn digest(key: &[u8]) -> [u8; 32] {
    let hash = ring::digest::digest(&ring::digest::SHA256, key);
    hash.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

fn new_key() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).expect("system random generator");
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn no_user(name: &str) -> ApiError {
    ApiError::not_found(format!("no user named `{name}`"))
        .hint("`lap users list` shows the users; `lap users create NAME` adds one")
}

/// List users.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "teams", security(("master_key" = [])),
    responses((status = 200, body = Vec<User>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_users(State(state): State<AppState>) -> Result<Json<Vec<User>>, ApiError> {
    Ok(Json(state.store.list_users().await?))
}

/// Create a user (then give them a key: `POST /api/v1/admin/keys`).
#[utoipa::path(post, path = "/api/v1/admin/users", tag = "teams", request_body = NewUser,
    security(("master_key" = [])),
    responses((status = 201, body = User), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the name is taken")))]
pub async fn create_user(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    check_user_name(&body.name).map_err(|why| ApiError::bad_request(why).hint("e.g. `ada` or `ada@example.com`"))?;
    Ok((StatusCode::CREATED, Json(state.store.create_user(body.name).await?)))
}

/// Disable a user (every key of theirs is refused at once) or enable them again.
#[utoipa::path(patch, path = "/api/v1/admin/users/{name}", tag = "teams", request_body = UserPatch,
    params(("name" = String, Path, description = "user name")), security(("master_key" = [])),
    responses((status = 200, body = User), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn update_user(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<UserPatch>,
) -> Result<Json<User>, ApiError> {
    let user = state.store.set_user_disabled(name.clone(), body.disabled).await?;
    user.map(Json).ok_or_else(|| no_user(&name))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeysQuery {
    /// Only this user's keys.
    pub user: Option<String>,
}

/// List API keys (never the keys themselves: their first characters).
#[utoipa::path(get, path = "/api/v1/admin/keys", tag = "teams", params(KeysQuery), security(("master_key" = [])),
    responses((status = 200, body = Vec<ApiKey>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_keys(
    State(state): State<AppState>,
    Query(query): Query<KeysQuery>,
) -> Result<Json<Vec<ApiKey>>, ApiError> {
    if let Some(user) = &query.user
        && state.store.find_user(user.clone()).await?.is_none()
    {
        return Err(no_user(user));
    }
    Ok(Json(state.store.list_keys(query.user).await?))
}

/// Create an API key acting as a user with a role. The answer holds the key, this once.
#[utoipa::path(post, path = "/api/v1/admin/keys", tag = "teams", request_body = NewApiKey,
    security(("master_key" = [])),
    responses((status = 201, body = CreatedApiKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such user")))]
pub async fn create_key(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let expires_at = match body.expires_in_seconds {
        None => None,
        Some(seconds) if (1..=MAX_EXPIRY_SECONDS).contains(&seconds) => Some(crate::store::format_timestamp(
            state.store.now_utc() + time::Duration::seconds(seconds as i64),
        )),
        Some(seconds) => {
            return Err(ApiError::bad_request(format!(
                "`expires_in_seconds` is {seconds}: a key lasts 1 s to 10 years"
            ))
            .hint("leave it out for a key that does not expire; revoke one with `lap keys revoke ID`"));
        }
    };
    let user = state
        .store
        .find_user(body.user.clone())
        .await?
        .ok_or_else(|| no_user(&body.user))?;
    if user.disabled {
        return Err(
            ApiError::new(StatusCode::CONFLICT, format!("the user `{}` is disabled", user.name))
                .hint(format!("enable them first: `lap users enable {}`", user.name)),
        );
    }
    let created = mint_key(&state.store, &user, body.role, expires_at).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Makes a key of `user` with `role`, lasting until `expires_at` (RFC 3339) if given; the answer
/// holds the key, which is stored only as its digest.
pub async fn mint_key(
    store: &crate::store::Store,
    user: &User,
    role: Role,
    expires_at: Option<String>,
) -> Result<CreatedApiKey, ApiError> {
    let key = new_key();
    let info = store
        .insert_key(NewKeyRow {
            user_id: user.id,
            role,
            digest: digest(key.as_bytes()),
            prefix: key[..KEY_PREFIX.len() + PREFIX_CHARS].to_owned(),
            expires_at,
        })
        .await?;
    tracing::info!(user = %user.name, role = %role, key = %info.id, "API key created");
    Ok(CreatedApiKey { key, info })
}

/// Revoke an API key: refused from the next request on.
#[utoipa::path(delete, path = "/api/v1/admin/keys/{id}", tag = "teams",
    params(("id" = String, Path, description = "key id (from `GET /api/v1/admin/keys`)")), security(("master_key" = [])),
    responses((status = 200, body = ApiKey), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_key(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<ApiKey>, ApiError> {
    let not_found =
        || ApiError::not_found(format!("no API key with id `{id}`")).hint("`lap keys list` shows each key's id");
    let uuid = uuid::Uuid::parse_str(&id).map_err(|_| not_found())?;
    let key = state.store.revoke_key(uuid).await?.ok_or_else(not_found)?;
    tracing::info!(user = %key.user, key = %key.id, "API key revoked");
    Ok(Json(key))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries after this id (oldest first); without it, the last `limit`.
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000; values outside are clamped into it).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    pub limit: Option<u32>,
}

/// The audit log: every control-plane action, who did it, when and from where.
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "teams", params(AuditQuery), security(("master_key" = [])),
    responses((status = 200, body = AuditLog), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn audit(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditLog>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, AUDIT_PAGE_MAX);
    let after = match query.after {
        Some(after) => Some(u64::try_from(after).map_err(|_| {
            ApiError::bad_request(format!("`after` is {after}: an entry id is 0 or more"))
                .hint("pass the `id` of the last entry you have, or leave `after` out for the latest")
        })?),
        None => None,
    };
    Ok(Json(AuditLog {
        entries: state.store.audit(after, limit).await?,
    }))
}

/// Set a user's quota: what their sessions may hold at once. A field left out is not limited.
#[utoipa::path(put, path = "/api/v1/admin/users/{name}/quota", tag = "teams", request_body = Quota,
    params(("name" = String, Path, description = "user name")), security(("master_key" = [])),
    responses((status = 200, body = User), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn set_quota(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(quota): ApiJson<Quota>,
) -> Result<Json<User>, ApiError> {
    if let Some(sessions) = quota.sessions
        && sessions > MAX_QUOTA_SESSIONS
    {
        return Err(ApiError::bad_request(format!(
            "`sessions` is {sessions}: a quota's sessions are 0 to {MAX_QUOTA_SESSIONS}"
        ))
        .hint("leave it out for no limit on sessions"));
    }
    if let Some(mb) = quota.memory_mb
        && mb > MAX_QUOTA_MEMORY_MB
    {
        return Err(ApiError::bad_request(format!(
            "`memory_mb` is {mb}: a quota's memory is 0 to {MAX_QUOTA_MEMORY_MB} MiB"
        ))
        .hint("leave it out for no limit on memory"));
    }
    if let Some(cpus) = quota.cpus
        && !(cpus.is_finite() && (0.0..=1_000_000.0).contains(&cpus))
    {
        return Err(
            ApiError::bad_request(format!("`cpus` is {cpus}: a quota's CPUs are 0 to 1000000"))
                .hint("e.g. `{\"cpus\": 8}`; leave it out for no CPU limit"),
        );
    }
    let user = state.store.set_quota(name.clone(), quota).await?;
    user.map(Json).ok_or_else(|| no_user(&name))
}

/// Whether `principal` may start one more session of `agent` within their user's quota: a 429
/// naming the limit when not. The master key has no quota. Hold the answer until the new session's
/// owner is recorded ([`crate::store::Store::quota_turn`]).
pub async fn within_quota(
    state: &AppState,
    principal: &Principal,
    agent: &Agent,
) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, ApiError> {
    quota_check(state, principal, agent, true).await
}

/// [`within_quota`] for a session of `agent` brought back on a new sandbox: `new_session` when it
/// counts as one more live session (it was over: dead or failed); else only its memory and CPUs
/// count again (it was hibernated, a live session without a sandbox).
pub async fn quota_check(
    state: &AppState,
    principal: &Principal,
    agent: &Agent,
    new_session: bool,
) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, ApiError> {
    let (Some(user), name) = (principal.user_id(), principal.name()) else {
        return Ok(None);
    };
    // Without a quota nothing is counted and no turn is taken; with one, it is read again in turn.
    if state.store.usage(user).await?.0 == Quota::default() {
        return Ok(None);
    }
    let turn = state.store.quota_turn().await;
    let (quota, usage) = state.store.usage(user).await?;
    let raise = |flag: &str| {
        format!(
            "end one of their sessions (`lap sessions delete ID`), or an admin raises it: `lap users quota {name} {flag} …`"
        )
    };
    let over = |what: String, flag: &str| Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, what).hint(raise(flag)));
    if let Some(max) = quota.sessions
        && new_session
        && usage.sessions >= max
    {
        return over(
            format!(
                "`{name}` has {} live sessions, the most their quota allows ({max})",
                usage.sessions
            ),
            "--sessions",
        );
    }
    let memory = agent.limits.memory_mb.unwrap_or(QUOTA_DEFAULT_MEMORY_MB);
    if let Some(max) = quota.memory_mb
        && usage.memory_mb + memory > max
    {
        return over(
            format!(
                "a session of `{}` needs {memory} MiB: `{name}`'s sessions hold {} MiB of their quota's {max} MiB",
                agent.name, usage.memory_mb
            ),
            "--memory-mb",
        );
    }
    let cpus = agent.limits.cpus.unwrap_or(QUOTA_DEFAULT_CPUS);
    if let Some(max) = quota.cpus
        && usage.cpus + cpus > max + 1e-9
    {
        return over(
            format!(
                "a session of `{}` needs {cpus} CPUs: `{name}`'s sessions hold {} of their quota's {max}",
                agent.name, usage.cpus
            ),
            "--cpus",
        );
    }
    Ok(Some(turn))
}
