//! Master-key authentication: `Authorization: Bearer <master key>`, compared in constant time.

use std::sync::Arc;

use axum::Extension;
use axum::extract::Request;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::secret::Secret;

use super::ApiError;

pub async fn require_master_key(Extension(key): Extension<Arc<Secret>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(token) if key.ct_eq(token) => next.run(req).await,
        _ => ApiError::unauthorized()
            .hint("send `Authorization: Bearer <master key>`; `lap config` shows where the CLI keeps it")
            .into_response(),
    }
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
