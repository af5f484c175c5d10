//! A session's ports over HTTP: the list of what its sandbox listens on, the port-forward
//! WebSocket, the HTTP/WebSocket proxy path, signed preview URLs, and the preview origin.
//!
//! Routes (under [`PREFIX`]):
//! - `GET …/sessions/{id}/ports`: [`ListeningPorts`] (master key or the UI's cookie).
//! - `POST …/sessions/{id}/preview_urls`, `DELETE …/sessions/{id}/preview_urls[?port=N]`: mint a
//!   signed preview URL for one port, revoke a port's (or every port's) URLs.
//! - `GET …/sessions/{id}/portforward/{port}`: a WebSocket carrying one TCP connection to the
//!   sandbox's `127.0.0.1:PORT` (what `lap port-forward` opens per local connection). Binary
//!   messages are the connection's bytes, each way, at most [`MAX_FORWARD_MESSAGE`] bytes; an empty
//!   binary message is that direction's end (half-close). The server closes the WebSocket once both
//!   directions have ended.
//! - `ANY …/sessions/{id}/ports/{port}/{path}`: the request is sent to the sandbox's
//!   `127.0.0.1:PORT` as `/{path}` (HTTP/1.1, body streamed both ways, `Upgrade` — WebSocket — passed
//!   through and spliced).
//!
//! Trust. What a sandbox serves is hostile (DESIGN §0, invariant 8). The proxy path and the
//! port-forward take only `Authorization: Bearer` with the master key or a member's API key
//! ([`auth::require_bearer`]) — never the UI's cookie, so no
//! browser tab can be made to load sandbox content on the API's origin with the user's session —
//! and their responses lose `Set-Cookie` and carry `Content-Security-Policy: sandbox` (an opaque
//! origin) as a second wall. Browsers get previews: a separate listener, the *preview origin*
//! ([`preview_router`]), on which a signed URL ([`crate::control::ports::Previews`]) sets a cookie
//! of that origin only and redirects to `/`; every later request there is checked again (expiry,
//! revocation) and proxied to the granted session and port. The preview origin knows no master key
//! and no UI session. Toward the sandbox, neither origin ever forwards `Authorization`, the UI's
//! cookie or the preview cookie.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Path, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::control::ports::{PortConnection, Previews};
use crate::wire::api::{ErrorBody, PREFIX, SessionStatus};
use crate::wire::ports::{
    CreatePreviewUrl, DEFAULT_PREVIEW_TTL_SECS, ListeningPorts, MAX_PREVIEW_TTL_SECS, PREVIEW_COOKIE,
    PREVIEW_OPEN_PATH, PreviewUrl, RevokedPreviewUrls,
};

use super::json::{ApiJson, ApiQuery};
use super::{ApiError, AppState, ui};

/// Largest WebSocket message of a port-forward, each way.
pub const MAX_FORWARD_MESSAGE: usize = 64 * 1024;
/// How long the sandbox's server may take to send its response head.
const RESPONSE_HEAD_TIMEOUT: Duration = Duration::from_secs(300);
/// How often an idle port-forward WebSocket is pinged (keeps proxies from closing it).
const FORWARD_KEEPALIVE: Duration = Duration::from_secs(30);
/// What the API origin's proxied responses are confined to: an opaque origin.
const API_ORIGIN_CSP: &str = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";
/// WebSocket close code of a normal end.
const CLOSE_NORMAL: u16 = 1000;
/// WebSocket close code when the API key a port-forward was opened with stops being let in.
const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code when the sandbox's connection failed.
const CLOSE_INTERNAL: u16 = 1011;

/// Headers that belong to one hop (RFC 9110 §7.6.1), never passed on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The preview origin's state.
#[derive(Clone)]
pub struct PreviewState {
    pub app: AppState,
    pub previews: Arc<Previews>,
}

/// Adds the preview service to the API's router (mint and revoke need it).
pub fn with_previews(router: axum::Router, previews: Arc<Previews>) -> axum::Router {
    router.layer(Extension(previews))
}

fn parse_session(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| session_not_found(id))
}

fn session_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("session `{id}` not found")).hint("`lap sessions list` shows the sessions that exist")
}

/// The sandbox of a ready session.
async fn ready_sandbox(state: &AppState, uuid: Uuid) -> Result<String, ApiError> {
    let row = state
        .store
        .get_session(uuid)
        .await?
        .ok_or_else(|| session_not_found(&uuid.to_string()))?;
    match (&row.status, row.sandbox_id) {
        (SessionStatus::Ready, Some(sandbox)) => Ok(sandbox),
        (status, _) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("session {uuid} is {}, not ready", status.as_str()),
        )
        .hint("wait until `lap sessions show` says ready")),
    }
}

async fn connect(state: &AppState, uuid: Uuid, sandbox: &str, port: u16) -> Result<PortConnection, ApiError> {
    state.control.connect_port(uuid, sandbox, port).await.map_err(|err| {
        ApiError::from(err).hint(format!(
            "is a server listening on 127.0.0.1:{port} inside the sandbox? `lap sessions ports {uuid}` lists \
                 the ports it listens on"
        ))
    })
}

/// List the TCP ports the session's sandbox listens on (reachable at its `127.0.0.1`), read from
/// the sandbox's own network namespace. lap's own ports (the egress proxy's) are left out.
#[utoipa::path(get, path = "/api/v1/managed_agents/sessions/{id}/ports", tag = "ports",
    params(("id" = String, Path, description = "session UUID")),
    security(("master_key" = [])),
    responses((status = 200, body = ListeningPorts), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the session is not ready"),
        (status = 502, body = ErrorBody, description = "the sandbox cannot be reached")))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<ListeningPorts>, ApiError> {
    let uuid = parse_session(&id)?;
    let sandbox = ready_sandbox(&state, uuid).await?;
    let ports = state.control.listening_ports(&sandbox).await?;
    Ok(axum::Json(ListeningPorts { ports }))
}

fn previews_or_503(previews: Option<Extension<Arc<Previews>>>) -> Result<Arc<Previews>, ApiError> {
    previews.map(|Extension(p)| p).ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "this server has no preview origin")
            .hint("start `lap serve` with `--preview-listen ADDR`")
    })
}

fn rfc3339(unix_secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Mint a signed, expiring preview URL for one port of the session: it opens in a browser without
/// the master key, on the preview origin only (never the API's), for that session and port only,
/// until it expires or is revoked.
#[utoipa::path(post, path = "/api/v1/managed_agents/sessions/{id}/preview_urls", tag = "ports",
    params(("id" = String, Path, description = "session UUID")),
    request_body = CreatePreviewUrl,
    security(("master_key" = [])),
    responses((status = 201, body = PreviewUrl), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "the server runs no preview listener")))]
pub async fn create_preview(
    State(state): State<AppState>,
    previews: Option<Extension<Arc<Previews>>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CreatePreviewUrl>,
) -> Result<(StatusCode, axum::Json<PreviewUrl>), ApiError> {
    let previews = previews_or_503(previews)?;
    let uuid = parse_session(&id)?;
    if state.store.get_session(uuid).await?.is_none() {
        return Err(session_not_found(&id));
    }
    if body.port == 0 {
        return Err(ApiError::bad_request("`port` must be 1-65535"));
    }
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_PREVIEW_TTL_SECS);
    if ttl == 0 || ttl > MAX_PREVIEW_TTL_SECS {
        return Err(ApiError::bad_request(format!(
            "`ttl_seconds` must be 1-{MAX_PREVIEW_TTL_SECS}"
        )));
    }
    let (token, expires) = previews.mint(uuid, body.port, ttl);
    Ok((
        StatusCode::CREATED,
        axum::Json(PreviewUrl {
            url: format!("{}{PREVIEW_OPEN_PATH}/{token}", previews.origin_of(uuid, body.port)),
            session_id: uuid.to_string(),
            port: body.port,
            expires_at: rfc3339(expires),
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevokeQuery {
    /// Revoke this port's URLs only (default: every port's).
    #[param(minimum = 0, maximum = 65535)]
    port: Option<u16>,
}

/// Revoke the session's preview URLs issued until now: one port's, or every port's. Browsers that
/// opened one lose access with their next request.
#[utoipa::path(delete, path = "/api/v1/managed_agents/sessions/{id}/preview_urls", tag = "ports",
    params(("id" = String, Path, description = "session UUID"), RevokeQuery),
    security(("master_key" = [])),
    responses((status = 200, body = RevokedPreviewUrls), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "the server runs no preview listener")))]
pub async fn revoke_previews(
    State(state): State<AppState>,
    previews: Option<Extension<Arc<Previews>>>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<RevokeQuery>,
) -> Result<axum::Json<RevokedPreviewUrls>, ApiError> {
    let previews = previews_or_503(previews)?;
    let uuid = parse_session(&id)?;
    if state.store.get_session(uuid).await?.is_none() {
        return Err(session_not_found(&id));
    }
    let before_ms = previews.revoke(uuid, query.port).await?;
    let revoked_before = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(before_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    Ok(axum::Json(RevokedPreviewUrls {
        session_id: uuid.to_string(),
        port: query.port,
        revoked_before,
    }))
}

/// Open one TCP connection to the sandbox's `127.0.0.1:{port}`, carried by this WebSocket: binary
/// messages are its bytes, an empty one ends a direction. Master key as bearer only.
#[utoipa::path(get, path = "/api/v1/managed_agents/sessions/{id}/portforward/{port}", tag = "ports",
    params(("id" = String, Path, description = "session UUID"), ("port" = u16, Path, maximum = 65535, description = "sandbox port")),
    security(("master_key" = [])),
    responses(
        (status = 101, description = "switching to the WebSocket that carries the connection"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 426, body = ErrorBody, description = "not a WebSocket upgrade"),
        (status = 502, body = ErrorBody, description = "nothing accepts connections on that port")))]
pub async fn forward(
    State(state): State<AppState>,
    Extension(principal): Extension<super::auth::Principal>,
    Path((id, port)): Path<(String, u16)>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let uuid = parse_session(&id)?;
    let sandbox = ready_sandbox(&state, uuid).await?;
    let upgrade = upgrade.map_err(|_| {
        ApiError::new(StatusCode::UPGRADE_REQUIRED, "this endpoint speaks WebSocket only")
            .hint("use `lap port-forward SESSION PORT`")
    })?;
    // Connected before the upgrade, so a port nobody listens on is an HTTP error the client shows.
    let conn = connect(&state, uuid, &sandbox, port).await?;
    let ended = principal.ended(&state.store);
    Ok(upgrade
        .max_frame_size(MAX_FORWARD_MESSAGE)
        .max_message_size(MAX_FORWARD_MESSAGE)
        .on_upgrade(move |socket| relay_forward(socket, conn, ended)))
}

/// Pipes one port-forward WebSocket and its sandbox connection until both directions have ended,
/// or the API key it was opened with stops being let in (`ended`).
async fn relay_forward(
    mut socket: WebSocket,
    conn: PortConnection,
    mut ended: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) {
    let PortConnection { stream, tunnel } = conn;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = vec![0u8; MAX_FORWARD_MESSAGE];
    let (mut from_sandbox_open, mut to_sandbox_open) = (true, true);
    let mut keepalive = tokio::time::interval(FORWARD_KEEPALIVE);
    keepalive.tick().await;
    let close = |code: u16, reason: &str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_owned().into(),
        }))
    };
    while from_sandbox_open || to_sandbox_open {
        tokio::select! {
            read = rd.read(&mut buf), if from_sandbox_open => match read {
                Ok(n) => {
                    if n == 0 {
                        from_sandbox_open = false;
                    }
                    if socket.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        break;
                    }
                }
                Err(_) => {
                    let _ = socket.send(close(CLOSE_INTERNAL, "the connection in the sandbox failed")).await;
                    break;
                }
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(data))) if to_sandbox_open => {
                    if data.is_empty() {
                        to_sandbox_open = false;
                        let _ = wr.shutdown().await;
                    } else if wr.write_all(&data).await.is_err() {
                        to_sandbox_open = false;
                    }
                }
                Some(Ok(Message::Binary(_) | Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            },
            _ = keepalive.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            () = &mut ended => {
                let _ = socket
                    .send(close(CLOSE_POLICY, "the API key of this port-forward was revoked, expired or its user disabled"))
                    .await;
                drop(tunnel);
                return;
            }
        }
    }
    let _ = socket.send(close(CLOSE_NORMAL, "")).await;
    drop(tunnel);
}

/// Which origin a proxied response is served on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    /// The API's (the proxy path): no cookies, an opaque origin.
    Api,
    /// The preview listener's.
    Preview,
}

/// Proxy an HTTP request (WebSocket upgrades included) to the sandbox's `127.0.0.1:{port}` as
/// `/{path}`. The master key or an API key as bearer (a WebSocket spliced for an API key ends when
/// the key does); the UI's cookie is refused. The response comes from the
/// sandbox's server unchanged but for `Set-Cookie` (dropped) and `Content-Security-Policy: sandbox`
/// (added): for a browser, use a preview URL. Every method is proxied; `GET` is shown.
#[utoipa::path(get, path = "/api/v1/managed_agents/sessions/{id}/ports/{port}/{path}", tag = "ports",
    params(("id" = String, Path, description = "session UUID"), ("port" = u16, Path, maximum = 65535, description = "sandbox port"),
        ("path" = String, Path, description = "path on the sandbox's server (may be empty, and contain `/`)")),
    security(("master_key" = [])),
    responses(
        (status = 200, description = "whatever the sandbox's server answers (any status)"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "nothing accepts connections on that port, or it broke the response")))]
pub async fn proxy_doc() {}

/// The proxy path's handler (`/ports/{port}` and `/ports/{port}/{*path}`).
pub async fn proxy_path(State(state): State<AppState>, req: Request) -> Response {
    match proxy_path_inner(state, req).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn proxy_path_inner(state: AppState, req: Request) -> Result<Response, ApiError> {
    // `{PREFIX}/sessions/{id}/ports/{port}[/{path}]`, read from the URI itself so the path reaches
    // the sandbox exactly as sent (percent-encoding kept).
    let path = req.uri().path();
    let rest = path
        .strip_prefix(PREFIX)
        .and_then(|p| p.strip_prefix("/sessions/"))
        .ok_or_else(|| ApiError::not_found("no such proxy path"))?;
    let mut parts = rest.splitn(4, '/');
    let (id, ports, port) = (parts.next(), parts.next(), parts.next());
    let (Some(id), Some("ports"), Some(port)) = (id, ports, port) else {
        return Err(ApiError::not_found("no such proxy path"));
    };
    let uuid = parse_session(id)?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ApiError::bad_request(format!("`{port}` is not a port")))?;
    let Some(tail) = parts.next() else {
        // `/ports/8000` → `/ports/8000/`, so relative links resolve under it.
        let location = format!(
            "{path}/{}",
            req.uri().query().map(|q| format!("?{q}")).unwrap_or_default()
        );
        return Ok((StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, location)]).into_response());
    };
    let target = format!(
        "/{tail}{}",
        req.uri().query().map(|q| format!("?{q}")).unwrap_or_default()
    );
    let sandbox = ready_sandbox(&state, uuid).await?;
    proxy(&state, uuid, &sandbox, port, req, &target, Served::Api).await
}

/// Sends `req` to the sandbox's port as `target` and streams the answer back; a `101` splices the
/// two upgraded connections.
async fn proxy(
    state: &AppState,
    uuid: Uuid,
    sandbox: &str,
    port: u16,
    mut req: Request,
    target: &str,
    served: Served,
) -> Result<Response, ApiError> {
    let client_upgrade = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
    let upgrading = req.headers().contains_key(header::UPGRADE);
    // A connection spliced for an API key ends when the key does (revoked, expired, user disabled).
    let ended = req
        .extensions()
        .get::<super::auth::Principal>()
        .map(|principal| principal.ended(&state.store));
    let uri: Uri = target
        .parse()
        .map_err(|_| ApiError::bad_request(format!("`{target}` is not a request target")))?;
    let conn = connect(state, uuid, sandbox, port).await?;
    let PortConnection { stream, tunnel } = conn;
    let tunnel = Arc::new(tunnel);
    let bad_gateway = |what: String| {
        ApiError::new(StatusCode::BAD_GATEWAY, what).hint(format!(
            "the server on 127.0.0.1:{port} in the sandbox did not answer as HTTP/1.1"
        ))
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream))
        .await
        .map_err(|e| bad_gateway(format!("cannot speak HTTP to the sandbox's port {port}: {e}")))?;
    let held = tunnel.clone();
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
        drop(held);
    });

    let (parts, body) = req.into_parts();
    let mut out = axum::http::Request::builder()
        .method(parts.method)
        .uri(uri)
        .version(axum::http::Version::HTTP_11)
        .body(body)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    *out.headers_mut() = request_headers(&parts.headers, port, upgrading);

    let mut response = tokio::time::timeout(RESPONSE_HEAD_TIMEOUT, sender.send_request(out))
        .await
        .map_err(|_| bad_gateway(format!("no response head within {RESPONSE_HEAD_TIMEOUT:?}")))?
        .map_err(|e| bad_gateway(format!("the sandbox's port {port} broke the response: {e}")))?;

    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        let Some(client_upgrade) = client_upgrade else {
            return Err(bad_gateway(
                "the sandbox switched protocols on a request that asked for none".into(),
            ));
        };
        let sandbox_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let (Ok(client), Ok(sandbox)) = tokio::join!(client_upgrade, sandbox_upgrade) else {
                return;
            };
            let (mut client, mut sandbox) = (TokioIo::new(client), TokioIo::new(sandbox));
            let ended = ended.unwrap_or_else(|| Box::pin(std::future::pending()));
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut sandbox) => {}
                () = ended => {}
            }
            drop(tunnel);
        });
    }
    let (mut parts, body) = response.into_parts();
    parts.headers = response_headers(&parts.headers, switching, served);
    // The sandbox's server may speak HTTP/1.0; the client's connection is this server's.
    parts.version = axum::http::Version::default();
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// The names listed in `Connection`, which are hop-by-hop too.
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

/// What the sandbox is sent: the client's headers but hop-by-hop ones, `Authorization` (the master
/// key never reaches a sandbox), and lap's own cookies; `Host` is the sandbox's loopback.
fn request_headers(incoming: &HeaderMap, port: u16, upgrading: bool) -> HeaderMap {
    let listed = connection_listed(incoming);
    let mut out = HeaderMap::new();
    for (name, value) in incoming {
        let lower = name.as_str();
        if HOP_BY_HOP.contains(&lower)
            || listed.iter().any(|l| l == lower)
            || *name == header::AUTHORIZATION
            || *name == header::HOST
            || *name == header::COOKIE
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if let Some(cookies) = strip_lap_cookies(incoming) {
        out.insert(header::COOKIE, cookies);
    }
    if let Ok(host) = HeaderValue::from_str(&format!("127.0.0.1:{port}")) {
        out.insert(header::HOST, host);
    }
    if upgrading && let Some(upgrade) = incoming.get(header::UPGRADE) {
        out.insert(header::UPGRADE, upgrade.clone());
        out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    out
}

/// The request's cookies but the UI's and the preview's (`None`: nothing left).
fn strip_lap_cookies(headers: &HeaderMap) -> Option<HeaderValue> {
    let kept: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or_default().trim();
            !pair.is_empty() && name != ui::COOKIE && name != PREVIEW_COOKIE
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

/// What the client is sent: the sandbox's headers but hop-by-hop ones (kept for a `101`), and, on
/// the API's origin, no cookie and an opaque origin; on the preview origin, no cookie named like
/// lap's.
fn response_headers(incoming: &HeaderMap, switching: bool, served: Served) -> HeaderMap {
    let listed = connection_listed(incoming);
    let mut out = HeaderMap::new();
    for (name, value) in incoming {
        let lower = name.as_str();
        let hop = HOP_BY_HOP.contains(&lower) || listed.iter().any(|l| l == lower);
        if hop && !(switching && (*name == header::UPGRADE || *name == header::CONNECTION)) {
            continue;
        }
        if *name == header::SET_COOKIE {
            let cookie_name = value
                .to_str()
                .ok()
                .and_then(|v| v.split('=').next())
                .map(str::trim)
                .unwrap_or_default();
            if served == Served::Api || cookie_name == ui::COOKIE || cookie_name == PREVIEW_COOKIE {
                continue;
            }
        }
        out.append(name.clone(), value.clone());
    }
    if served == Served::Api {
        out.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(API_ORIGIN_CSP),
        );
        out.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    }
    out
}

// ---- the preview origin ----

/// The preview listener's whole application: `GET {PREVIEW_OPEN_PATH}/{token}` opens a preview
/// (sets the origin's cookie, redirects to `/`); every other request is proxied to the session and
/// port its cookie grants, checked again each time. Nothing of the API is served here.
pub fn preview_router(state: PreviewState) -> axum::Router {
    axum::Router::new()
        .route(
            &format!("{PREVIEW_OPEN_PATH}/{{token}}"),
            axum::routing::get(open_preview),
        )
        .fallback(serve_preview)
        .with_state(state)
}

/// The answer to a link that does not work: the same whatever the reason.
fn preview_refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        "lap: this preview link is not valid (expired, revoked, or not a preview link); ask for a new one with \
         `lap sessions url SESSION PORT`\n",
    )
        .into_response()
}

/// The request's `Host` (HTTP/1.1) or `:authority` (HTTP/2).
fn request_host(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
}

async fn open_preview(
    State(state): State<PreviewState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let grant = match state.previews.check(&token).await {
        Ok(grant) => grant,
        Err(err) => {
            tracing::debug!(error = %err, "preview link refused");
            return preview_refused();
        }
    };
    if !state
        .previews
        .host_allowed(request_host(&headers, &uri).as_deref(), &grant)
    {
        tracing::debug!("preview link opened on another session's or port's host name");
        return preview_refused();
    }
    let max_age = (grant.expires - time::OffsetDateTime::now_utc().unix_timestamp()).max(0);
    let secure = if state.previews.is_https() { "; Secure" } else { "" };
    let cookie = format!("{PREVIEW_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}");
    let Ok(cookie) = HeaderValue::from_str(&cookie) else {
        return preview_refused();
    };
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, HeaderValue::from_static("/")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ],
    )
        .into_response()
}

/// The preview cookie's value, if any.
fn preview_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == PREVIEW_COOKIE)
        .map(|(_, value)| value)
}

async fn serve_preview(State(state): State<PreviewState>, req: Request) -> Response {
    let Some(token) = preview_cookie(req.headers()).map(str::to_owned) else {
        return preview_refused();
    };
    let grant = match state.previews.check(&token).await {
        Ok(grant) => grant,
        Err(err) => {
            tracing::debug!(error = %err, "preview request refused");
            return preview_refused();
        }
    };
    if !state
        .previews
        .host_allowed(request_host(req.headers(), req.uri()).as_deref(), &grant)
    {
        return preview_refused();
    }
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
    let sandbox = match ready_sandbox(&state.app, grant.session).await {
        Ok(sandbox) => sandbox,
        Err(err) => return err.into_response(),
    };
    match proxy(
        &state.app,
        grant.session,
        &sandbox,
        grant.port,
        req,
        &target,
        Served::Preview,
    )
    .await
    {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_never_gets_the_master_key_or_laps_cookies() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer master"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("lap_ui_session=ui; theme=dark; lap_preview=tok"),
        );
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("hop"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        let out = request_headers(&headers, 8000, false);
        assert_eq!(out.get(header::AUTHORIZATION), None);
        assert_eq!(out.get(header::COOKIE).unwrap(), "theme=dark");
        assert_eq!(out.get("x-secret"), None);
        assert_eq!(out.get(header::HOST).unwrap(), "127.0.0.1:8000");
        assert_eq!(out.get(header::ACCEPT).unwrap(), "text/html");
    }

    #[test]
    fn sandbox_responses_set_no_cookie_on_the_api_origin_and_none_of_laps_on_the_preview_origin() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::SET_COOKIE,
            HeaderValue::from_static("lap_ui_session=evil; Path=/"),
        );
        headers.append(header::SET_COOKIE, HeaderValue::from_static("app=1; Path=/"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let api = response_headers(&headers, false, Served::Api);
        assert_eq!(api.get_all(header::SET_COOKIE).iter().count(), 0);
        assert_eq!(api.get(header::CONTENT_SECURITY_POLICY).unwrap(), API_ORIGIN_CSP);
        let preview = response_headers(&headers, false, Served::Preview);
        let cookies: Vec<_> = preview.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, vec!["app=1; Path=/"]);
        assert_eq!(preview.get(header::CONTENT_SECURITY_POLICY), None);
    }
}
