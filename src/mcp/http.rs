//! `/mcp` on `lap serve`: the tools of [`super::LapTools`] over MCP's streamable HTTP transport.
//!
//! Every request must carry `Authorization: Bearer` with the master key (compared in constant time)
//! or an API key let in now (not revoked, not expired, its user enabled); the web UI's cookie is not
//! accepted. Otherwise it gets the API's 401 envelope. The tools call the server's own REST API
//! through a [`Client`] pointed at its listener — the same code `lap mcp` runs over stdio — with the
//! caller's key ([`super::CallerKey`]), so `/mcp` can do nothing the API would refuse that key: an
//! API key's tools act with its user's role and ownership, and the audit log names the user. Since
//! only a bearer key opens it (a browser cannot be made to send one), the SDK's `Host` check against
//! DNS rebinding is off: `lap serve` answers whatever name it is reached by.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use super::{CallerKey, LapTools};
use crate::client::Client;
use crate::secret::Secret;
use crate::store::Store;

/// Where the MCP endpoint is mounted.
pub const PATH: &str = "/mcp";

/// The `/mcp` routes: the tools over `client`, behind the master key or an API key of `store`; they
/// stop on `shutdown`.
pub fn router(client: Client, master_key: Arc<Secret>, store: Store, shutdown: CancellationToken) -> Router {
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
            let (key, store) = (master_key.clone(), store.clone());
            async move { require_bearer(&key, &store, req, next).await }
        }))
}

async fn require_bearer(key: &Secret, store: &Store, mut req: Request, next: Next) -> Response {
    match crate::api::bearer_admitted(req.headers(), key, store).await {
        Ok(Some(api_key)) => {
            req.extensions_mut().insert(CallerKey(api_key));
            next.run(req).await
        }
        Ok(None) => next.run(req).await,
        Err(refused) => refused.into_response(),
    }
}
