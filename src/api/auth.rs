//! Master-key authentication: `Authorization: Bearer <master key>`, compared in constant time, or
//! the web UI's session cookie (see [`super::ui`] for the cookie and its CSRF rule).

use std::sync::Arc;

use axum::Extension;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::secret::Secret;

use super::{ApiError, ui};

pub async fn require_master_key(
    Extension(key): Extension<Arc<Secret>>,
    Extension(sessions): Extension<Arc<ui::Sessions>>,
    req: Request,
    next: Next,
) -> Response {
    if has_master_key(req.headers(), &key) {
        return next.run(req).await;
    }
    match ui::cookie_auth(&sessions, req.method(), req.headers()).await {
        ui::CookieAuth::Ok => next.run(req).await,
        ui::CookieAuth::MissingCsrfHeader => ui::csrf_refused().into_response(),
        ui::CookieAuth::None => unauthorized().into_response(),
    }
}

/// Whether `headers` carry `Authorization: Bearer <key>`, compared in constant time.
pub fn has_master_key(headers: &HeaderMap, key: &Secret) -> bool {
    headers
        .get(AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|token| key.ct_eq(token))
}

/// The 401 every master-key route answers.
pub fn unauthorized() -> ApiError {
    ApiError::unauthorized()
        .hint("send `Authorization: Bearer <master key>`; `lap config` shows where the CLI keeps it")
}

/// Declares the bearer scheme in the OpenAPI document.
pub struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "master_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
