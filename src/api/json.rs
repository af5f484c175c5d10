//! `ApiJson<T>` and `ApiQuery<T>`: the body and query extractors whose rejections speak the error
//! envelope.
//!
//! Malformed JSON and wrong types are 400 with serde's message (which names an unknown field),
//! a missing or wrong `Content-Type` is 415, and a body over [`MAX_BODY_BYTES`] is 413. A body must
//! be a JSON object (serde alone would read a struct from an array too). A query string that does
//! not parse (`?limit=many`) is 400 naming the parameter.

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
        match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(value)) => from_object(value).map(Self),
            Err(rejection) => Err(reject(rejection)),
        }
    }
}

/// `T` from a body that must be a JSON object: serde would also read a struct from an array.
fn from_object<T: DeserializeOwned>(mut value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(not_an_object(&value));
    }
    whole_floats_as_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let err = err.into_inner();
        let message = if path == "." {
            format!("invalid request body: {err}")
        } else {
            format!("invalid request body: {path}: {err}")
        };
        ApiError::bad_request(message).hint("see GET /api/v1/openapi.json for the fields this route takes")
    })
}

/// Rewrites `2.0` as `2` throughout: JSON Schema counts a number with a zero fraction as an integer,
/// and so does the OpenAPI document, but serde's integer types would refuse it.
fn whole_floats_as_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(number) => {
            if let Some(float) = number.as_f64().filter(|f| number.is_f64() && f.fract() == 0.0) {
                // Exact for |f| < 2^63 (and 2^64 unsigned); beyond, the value stays a float.
                if (0.0..18_446_744_073_709_551_616.0).contains(&float) {
                    *number = serde_json::Number::from(float as u64);
                } else if (-9_223_372_036_854_775_808.0..0.0).contains(&float) {
                    *number = serde_json::Number::from(float as i64);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(whole_floats_as_integers),
        serde_json::Value::Object(map) => map.values_mut().for_each(whole_floats_as_integers),
        _ => {}
    }
}

fn not_an_object(value: &serde_json::Value) -> ApiError {
    let kind = match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    };
    ApiError::bad_request(format!("invalid request body: expected a JSON object, got {kind}"))
        .hint("see GET /api/v1/openapi.json for the fields this route takes")
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

/// A `?after=` position as documented (`int64`, at least 0): positions are SQLite integers.
pub fn position(after: Option<u64>) -> Result<Option<u64>, ApiError> {
    match after {
        Some(after) if i64::try_from(after).is_err() => Err(ApiError::bad_request(format!(
            "invalid query string: `after` {after} is larger than {}",
            i64::MAX
        ))
        .hint("pass the `id` (or sequence number) of the last record seen")),
        after => Ok(after),
    }
}

pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than {MAX_BODY_BYTES} bytes"),
    )
}

/// Parses an optional JSON body: empty or `null` means `T::default()` (LAP's session create takes no
/// body).
pub fn parse_optional<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|err| ApiError::bad_request(format!("malformed JSON: {err}")))?;
    if value.is_null() {
        // The document's optional body reads as `oneOf: [object, null]`.
        return Ok(T::default());
    }
    from_object(value)
}
