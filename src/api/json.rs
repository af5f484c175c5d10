//! `ApiJson<T>` and `ApiQuery<T>`: the body and query extractors whose rejections speak the error
//! envelope.
//!
//! Malformed JSON and wrong types are 400 with serde's message (which names an unknown field),
//! a missing or wrong `Content-Type` is 415, and a body over [`MAX_BODY_BYTES`] is 413. A query
//! string that does not parse (`?limit=many`) is 400 naming the parameter.

use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::wire::api::MAX_BODY_BYTES;

use super::ApiError;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(reject(rejection)),
        }
    }
}

fn reject(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(err) => {
            ApiError::bad_request(format!("invalid request body: {}", err.body_text()))
                .hint("see GET /api/v1/openapi.json for the fields this route takes")
        }
        JsonRejection::JsonSyntaxError(err) => ApiError::bad_request(format!("malformed JSON: {}", err.body_text())),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected a JSON body")
                .hint("send `Content-Type: application/json`")
        }
        JsonRejection::BytesRejection(err) => bytes_rejection(err),
        other => ApiError::bad_request(other.body_text()),
    }
}

/// The envelope for a body that could not be read: 413 when it is too large.
pub fn bytes_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        ApiError::new(rejection.status(), rejection.body_text())
    }
}

/// A query string parsed into `T`.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request(format!("invalid query string: {}", rejection.body_text()))
        .hint("see GET /api/v1/openapi.json for the parameters this route takes")
}

pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than {MAX_BODY_BYTES} bytes"),
    )
}

/// Parses an optional JSON body: empty means `T::default()` (LAP's session create takes no body).
pub fn parse_optional<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|err| match err.classify() {
        serde_json::error::Category::Data => ApiError::bad_request(format!("invalid request body: {err}")),
        _ => ApiError::bad_request(format!("malformed JSON: {err}")),
    })
}
