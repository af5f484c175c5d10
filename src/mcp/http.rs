//! `/mcp` on `lap serve`: the tools of [`super::LapTools`] over MCP's streamable HTTP transport.
//!
//! Every request must carry `Authorization: Bearer <master key>` (compared in constant time; the web
//! UI's cookie is not accepted), else it gets the API's 401 envelope. The tools call the server's
//! own REST API through a [`Client`] pointed at its listener with the master key — the same code
//! `lap mcp` runs over stdio — so `/mcp` can do nothing the API would refuse the key. Since only a
//! bearer key opens it (a browser cannot be made to send one), the SDK's `Host` check against DNS
//! rebinding is off: `lap serve` answers whatever name it is reached by.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use super::LapTools;
use crate::api::ApiError;
use crate::client::Client;
use crate::secret::Secret;

/// Where the MCP endpoint is mounted.
pub const PATH: &str = "/mcp";

/// The `/mcp` routes: the tools over `client`, behind the master key; they stop on `shutdown`.
pub fn router(client: Client, master_key: Arc<Secret>, shutdown: CancellationToken) -> Router {
    let tools = LapTools::new(client);
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_cancellation_token(shutdown);
    let service = StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    Router::new()
        .nest_service(PATH, service)
        .layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            let key = master_key.clone();
            async move { require_bearer(&key, req, next).await }
        }))
}

async fn require_bearer(key: &Secret, req: Request, next: Next) -> Response {
    let authorized = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|token| key.ct_eq(token));
    if authorized {
        return next.run(req).await;
    }
    ApiError::unauthorized()
        .hint("send `Authorization: Bearer <master key>` (an MCP client's headers setting); `lap config` shows where the CLI keeps it")
        .into_response()
}
