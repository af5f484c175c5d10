//! The HTTP surface of `lap serve`: an axum router with thin handlers.
//!
//! Every route under `/api/v1/managed_agents` and `/api/v1/admin` requires `Authorization: Bearer`
//! with the master key (compared in constant time) or an API key whose role the route allows
//! (`roles.rs`, one table; `auth.rs`); failures are 401 `{"error":"unauthorized"}` as in LAP, and
//! 403 for a role below the route's. `GET /api/v1/health` and
//! `GET /api/v1/openapi.json` are open. The terminal WebSocket (`…/sessions/{id}/tty`) takes the
//! session's own `tty_token` instead, and refuses the master key. Every error, including unknown routes, wrong methods,
//! malformed or oversized JSON, uses the `{"error": …, "hint": …}` envelope. The OpenAPI document is
//! generated from the same handler annotations the router is built from, so the two cannot drift.
//! The web UI (`ui`) is served at `/` beside the API, and its session cookie is accepted wherever a
//! key is (acting as what signed in); its own routes (`/api/ui/…`) and OIDC sign-in's (`oidc`,
//! `/auth/oidc/…`) are not part of the documented API.

mod admin;
mod agents;
mod auth;
mod doc;
mod error;
mod files;
mod health;
mod json;
mod messages;
// Issue 19 part 3: OIDC sign-in.
pub mod oidc;
mod owners;
// Issue 17 part 1 (ports).
pub mod ports;
pub mod roles;
mod sessions;
mod snapshots;
// Issue 19 part 1: users and API keys with roles.
mod teams;
mod tty;
mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::control::Control;
use crate::secret::Secret;
use crate::store::Store;
use crate::wire::api::MAX_BODY_BYTES;

use auth::SecurityAddon;
pub use error::ApiError;
pub use files::FileLimits;
pub use health::K8sProbe;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub control: Arc<Control>,
    pub master_key: Arc<Secret>,
    /// OIDC sign-in, when `lap serve` was given a provider.
    pub oidc: Option<Arc<oidc::Oidc>>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "lap", description = "LAP-compatible control plane of lap: agents, sessions, terminals"),
    modifiers(&SecurityAddon)
)]
struct ApiDoc;

/// Every documented route, with its OpenAPI annotations.
fn documented_routes() -> OpenApiRouter<AppState> {
    let protected = OpenApiRouter::new()
        .routes(routes!(agents::list, agents::create))
        .routes(routes!(agents::show, agents::update, agents::delete))
        .routes(routes!(sessions::create))
        .routes(routes!(sessions::list))
        .routes(routes!(sessions::show, sessions::delete))
        .routes(routes!(sessions::restart))
        .routes(routes!(sessions::vault_keys))
        .routes(routes!(sessions::interceptions))
        .routes(routes!(sessions::exec))
        // Workspaces (issue 16).
        .routes(routes!(sessions::pause))
        .routes(routes!(sessions::resume))
        .routes(routes!(sessions::hibernate))
        .routes(routes!(sessions::fork))
        .routes(routes!(sessions::workspace))
        .routes(routes!(snapshots::create))
        .routes(routes!(snapshots::list))
        .routes(routes!(snapshots::delete))
        .routes(routes!(snapshots::session))
        .routes(routes!(admin::stats))
        .routes(routes!(messages::send))
        .routes(routes!(messages::stream))
        .routes(routes!(messages::history))
        .routes(routes!(messages::events))
        .routes(routes!(messages::abort))
        .routes(routes!(messages::opencode_send, messages::opencode_history))
        .routes(routes!(messages::opencode_abort))
        // Files in and out (issue 17).
        .routes(routes!(files::list, files::delete))
        .routes(routes!(files::stat))
        .routes(routes!(files::download, files::upload))
        .routes(routes!(teams::list_users, teams::create_user))
        .routes(routes!(teams::update_user))
        .routes(routes!(teams::list_keys, teams::create_key))
        .routes(routes!(teams::revoke_key))
        .routes(routes!(teams::audit))
        .routes(routes!(teams::set_quota))
        .route_layer(axum::middleware::from_fn(auth::authenticate));
    let public = OpenApiRouter::new()
        .routes(routes!(health::health))
        .routes(routes!(health::k8s))
        .routes(routes!(health::openapi_json))
        .routes(routes!(health::vault_ca))
        .routes(routes!(health::metrics))
        // Authenticated by the session's own `tty_token`, never the master key.
        .routes(routes!(tty::tty));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(protected)
        .merge(public)
        .merge(port_routes())
}

/// Issue 17 part 1: a session's ports (`api/ports.rs`). The list and the preview URLs take the
/// master key, an API key or the UI's cookie; the port-forward and the proxy path a key only (never the
/// cookie), each as its role allows (`roles.rs`).
fn port_routes() -> OpenApiRouter<AppState> {
    use axum::routing::any;
    #[derive(OpenApi)]
    #[openapi(paths(ports::proxy_doc))]
    struct ProxyDoc;
    const PROXY: &str = "/api/v1/managed_agents/sessions/{id}/ports/{port}";
    let cookie_or_key = OpenApiRouter::new()
        .routes(routes!(ports::list))
        .routes(routes!(ports::create_preview, ports::revoke_previews))
        .route_layer(axum::middleware::from_fn(auth::authenticate));
    let key_only = OpenApiRouter::with_openapi(ProxyDoc::openapi())
        .routes(routes!(ports::forward))
        .route(PROXY, any(ports::proxy_path))
        .route(&format!("{PROXY}/"), any(ports::proxy_path))
        .route(&format!("{PROXY}/{{*path}}"), any(ports::proxy_path))
        .route_layer(axum::middleware::from_fn(auth::require_bearer));
    cookie_or_key.merge(key_only)
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let (router, doc) = split();
    if !ui::BUILT {
        tracing::warn!(
            "the web UI was not built into this binary; / says how to build it (docs/troubleshooting.md#web-ui-not-built)"
        );
    }
    router
        .merge(ui::routes())
        .merge(oidc::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::Extension(Arc::new(doc)))
        .layer(axum::Extension(state.master_key.clone()))
        .layer(axum::Extension(state.oidc.clone()))
        .layer(axum::Extension(state.store.clone()))
        .layer(axum::Extension(Arc::new(ui::Sessions::persistent(state.store.clone()))))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The check of `/mcp` (`mcp/http.rs`): `Ok(None)` for the master key, the key for an API key let in
/// now, else the 401 that says why.
pub async fn bearer_admitted(
    headers: &axum::http::HeaderMap,
    master_key: &Secret,
    store: &Store,
) -> Result<Option<Secret>, ApiError> {
    match auth::bearer(headers, master_key, store).await? {
        Some(auth::Principal::Master) => Ok(None),
        Some(auth::Principal::Key { .. }) => {
            let token = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .unwrap_or_default();
            Ok(Some(Secret::new(token)))
        }
        None => Err(ApiError::unauthorized().hint(
            "send `Authorization: Bearer <master key or API key>` (an MCP client's headers setting); `lap config` \
             shows where the CLI keeps it",
        )),
    }
}

/// Marks requests as having arrived over TLS, so the URLs handed out are `wss://`.
#[derive(Debug, Clone, Copy)]
pub struct ServedOverTls;

/// [`router`] for a server that terminates TLS itself.
pub fn over_tls(router: Router) -> Router {
    router.layer(axum::Extension(ServedOverTls))
}

/// The OpenAPI document of [`router`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    split().1
}

/// The documented routes and their document, completed with the errors shared by kinds of routes.
fn split() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = documented_routes().split_for_parts();
    doc::complete(&mut doc);
    (router, doc)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
        .hint("the API lives under /api/v1/managed_agents; see GET /api/v1/openapi.json")
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
    .hint("see GET /api/v1/openapi.json for the methods each path takes")
}
