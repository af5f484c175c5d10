//! Open routes: health and the OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};

use crate::sandbox::kube::Kube;
use crate::wire::api::{Health, K8sHealth};

use super::AppState;

/// Liveness of the server and the backend it runs.
#[utoipa::path(get, path = "/api/v1/health", tag = "meta", responses((status = 200, body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        ok: true,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        backend: state.control.backend().to_owned(),
    })
}

/// How long `GET /api/v1/health/k8s` waits for the API server.
const K8S_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The `kube` backend, for `GET /api/v1/health/k8s`: put in the router's extensions by the composition root when it
/// runs that backend.
#[derive(Clone)]
pub struct K8sProbe(pub Arc<Kube>);

/// Whether the Kubernetes API server answers: 200 when it does, 503 when it does not or the server
/// runs another backend.
#[utoipa::path(get, path = "/api/v1/health/k8s", tag = "meta",
    responses((status = 200, body = K8sHealth), (status = 503, body = K8sHealth)))]
pub async fn k8s(
    State(state): State<AppState>,
    probe: Option<Extension<K8sProbe>>,
) -> (axum::http::StatusCode, Json<K8sHealth>) {
    use axum::http::StatusCode;
    let backend = state.control.backend().to_owned();
    let Some(Extension(K8sProbe(kube))) = probe else {
        let error = format!("the server runs the `{backend}` backend, not `kube`");
        let health = K8sHealth {
            ok: false,
            backend,
            namespace: None,
            server_version: None,
            error: Some(error),
        };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(health));
    };
    let namespace = Some(kube.namespace().to_owned());
    let answer = tokio::time::timeout(K8S_PROBE_TIMEOUT, kube.server_version()).await;
    let (status, server_version, error) = match answer {
        Ok(Ok(version)) => (StatusCode::OK, Some(version), None),
        Ok(Err(err)) => (StatusCode::SERVICE_UNAVAILABLE, None, Some(err.to_string())),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            Some(format!(
                "the API server did not answer within {}s",
                K8S_PROBE_TIMEOUT.as_secs()
            )),
        ),
    };
    let health = K8sHealth {
        ok: status == StatusCode::OK,
        backend,
        namespace,
        server_version,
        error,
    };
    (status, Json(health))
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI document")))]
pub async fn openapi_json(Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>) -> Json<utoipa::openapi::OpenApi> {
    Json((*doc).clone())
}

/// The vault's CA certificate (PEM): what every sandbox trusts for intercepted TLS. Public by
/// nature. On the Kubernetes backend each sandbox pod's vault has a CA of its own and there is none
/// to give: 409.
#[utoipa::path(get, path = "/api/v1/vault/ca.pem", tag = "vault",
    responses((status = 200, description = "PEM certificate", content_type = "application/x-pem-file"),
        (status = 409, description = "the backend gives each sandbox a CA of its own (Kubernetes)", body = crate::wire::api::ErrorBody)))]
pub async fn vault_ca(State(state): State<AppState>) -> Result<impl axum::response::IntoResponse, super::ApiError> {
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
        state.control.vault_ca_pem()?,
    ))
}

/// Prometheus metrics, text format: sessions by status, bring-up durations, reaped and died sessions,
/// vault requests, swaps, blocks by reason and alerts. Open to loopback peers; from anywhere else it
/// needs the master key.
#[utoipa::path(get, path = "/metrics", tag = "meta", security((), ("master_key" = [])),
    responses((status = 200, description = "OpenMetrics text exposition", content_type = "application/openmetrics-text"),
        (status = 401, body = crate::wire::api::ErrorBody)))]
pub async fn metrics(
    State(state): State<AppState>,
    peer: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    Extension(key): Extension<Arc<crate::secret::Secret>>,
    headers: axum::http::HeaderMap,
) -> Result<impl axum::response::IntoResponse, super::ApiError> {
    let loopback = peer.is_some_and(|Extension(axum::extract::ConnectInfo(addr))| addr.ip().is_loopback());
    if !loopback && !super::auth::has_master_key(&headers, &key) {
        return Err(super::auth::unauthorized());
    }
    let text = state.control.metrics_text().await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}
