//! The error envelope: `{"error": "...", "hint": "..."}` with the right status.
//!
//! Handlers return [`ApiError`]; store and backend errors convert here, so the mapping from failure
//! to status code lives in one place. Internal failures are logged in full and answered with a
//! generic 500 that leaks no detail.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::control::{ControlError, Refusal};
use crate::sandbox::SandboxError;
use crate::store::StoreError;
use crate::wire::api::ErrorBody;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: error.into(),
                hint: None,
            },
        }
    }

    pub fn bad_request(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error)
    }

    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized")
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.body.hint = Some(hint.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NameTaken(_) => {
                Self::new(StatusCode::CONFLICT, err.to_string()).hint("pick another name, or edit the existing agent")
            }
            StoreError::SnapshotNameTaken(_) => Self::new(StatusCode::CONFLICT, err.to_string())
                .hint("pick another `--name`, or `lap snapshots delete NAME` first"),
            StoreError::UserNameTaken(_) => Self::new(StatusCode::CONFLICT, err.to_string())
                .hint("pick another name; `lap users list` shows the users there are"),
            other => {
                tracing::error!(error = ?other, "store failure");
                Self::internal()
            }
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(err: ControlError) -> Self {
        match err {
            ControlError::Store(err) => err.into(),
            ControlError::Sandbox(err @ SandboxError::Unavailable { .. }) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
                    .hint("run `lap serve --backend local` on Linux, or see `lap serve --help`")
            }
            ControlError::Sandbox(SandboxError::Unsupported { what, hint }) => {
                Self::new(StatusCode::CONFLICT, what).hint(hint)
            }
            ControlError::Sandbox(err) => Self::new(StatusCode::BAD_GATEWAY, err.to_string()),
            ControlError::Conflict(message) => Self::new(StatusCode::CONFLICT, message),
            ControlError::Refused { kind, message, hint } => {
                let status = match kind {
                    Refusal::BadRequest => StatusCode::BAD_REQUEST,
                    Refusal::NotFound => StatusCode::NOT_FOUND,
                    Refusal::Conflict => StatusCode::CONFLICT,
                    Refusal::Gone => StatusCode::GONE,
                    Refusal::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
                };
                Self::new(status, message).hint(hint)
            }
            ControlError::ToolMissing { message, hint } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, message).hint(hint)
            }
            err @ ControlError::NotRecovered(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
                .hint("lap serve keeps trying; `GET /api/v1/health/k8s` says whether the Kubernetes API answers"),
        }
    }
}
