//! The terminal WebSocket proxy: `GET /api/v1/managed_agents/sessions/{id}/tty`.
//!
//! Authenticates the session's own `tty_token` (never the master key) before the upgrade, attaches a
//! viewer to the agent's terminal through the backend ([`crate::sandbox::Sandbox::attach`]) and
//! relays frames both ways as [`crate::wire::tty`] specifies. Attaching and typing bump the
//! session's `last_seen_at`, at most once per [`TOUCH_INTERVAL`] per connection. When a viewer sees
//! the agent exit, the session becomes `dead` with the exit code as its reason, and its sandbox is
//! deleted.
//!
//! The token a session shows to an API key is bound to that key ([`key_bound_token`]): a terminal
//! opened with it is refused once the key is, and closed (code 1008) when the key is revoked,
//! expires or its user is disabled. The session's own token, which the master key and the web UI
//! see, is never shown to a key.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use base64::Engine;

use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use axum::response::Response;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::sandbox::{TtyChannel, TtyInput, TtyOutput};
use crate::store::Store;
use crate::store::teams::NewAuditEntry;
use crate::wire::api::{ErrorBody, SessionStatus};
use crate::wire::tty::{
    ClientFrame, DEFAULT_COLS, DEFAULT_ROWS, KEEPALIVE, MAX_FRAME, SUBPROTOCOL, ServerMessage, exit_line,
};

use super::auth::Principal;
use super::json::ApiQuery;
use super::{ApiError, AppState};

/// Least time between two `last_seen_at` writes of one connection.
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(60);
/// WebSocket close code of a normal end (the agent exited).
const CLOSE_NORMAL: u16 = 1000;
/// WebSocket close code when the sandbox connection is lost.
const CLOSE_INTERNAL: u16 = 1011;
/// WebSocket close code of a frame over the limit.
const CLOSE_TOO_BIG: u16 = 1009;
/// WebSocket close code when the API key the terminal was opened with stops being let in.
const CLOSE_POLICY: u16 = 1008;
/// How long a closing terminal waits for the viewer's own close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// What a key-bound terminal token starts with: `lapk.<key id>.<tag>`.
const KEY_BOUND: &str = "lapk.";

/// The terminal token of session token `session_token` for API key `key`: the key's id and an
/// HMAC-SHA256 of it keyed by the session's token, so it opens this session only, names its key,
/// and does not reveal the session's own token.
pub fn key_bound_token(session_token: &str, key: Uuid) -> String {
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, session_token.as_bytes()),
        key.as_bytes(),
    );
    format!(
        "{KEY_BOUND}{key}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    )
}

/// The key a key-bound token names, when `presented` is one of `session_token`'s.
fn bound_key(session_token: &str, presented: &str) -> Option<Uuid> {
    let (key, tag) = presented.strip_prefix(KEY_BOUND)?.split_once('.')?;
    let key = Uuid::parse_str(key).ok()?;
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag).ok()?;
    ring::hmac::verify(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, session_token.as_bytes()),
        key.as_bytes(),
        &tag,
    )
    .ok()?;
    Some(key)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TtyQuery {
    /// The session's `tty_token`, for proxies that strip `Authorization` on upgrades.
    token: Option<String>,
}

/// Open the session's terminal as a WebSocket (see `wire::tty` for the frames). Authenticated by
/// the session's own `tty_token`, as `Authorization: Bearer` or `?token=`; the master key is refused.
#[utoipa::path(get, path = "/api/v1/managed_agents/sessions/{id}/tty", tag = "sessions",
    params(("id" = String, Path, description = "session UUID"), TtyQuery),
    responses(
        (status = 101, description = "switching to the terminal WebSocket (subprotocol `lap.tty.v1` when offered)"),
        (status = 401, body = ErrorBody, description = "no token, or not this session's token"),
        (status = 409, body = ErrorBody, description = "the session is not ready"),
        (status = 426, body = ErrorBody, description = "not a WebSocket upgrade"),
        (status = 502, body = ErrorBody, description = "the sandbox's terminal cannot be reached")))]
pub async fn tty(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<TtyQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let unauthorized =
        || ApiError::unauthorized().hint("send the session's `tty_token` as `Authorization: Bearer` or `?token=`");
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.get(..7)
                .filter(|p| p.eq_ignore_ascii_case("bearer "))
                .map(|_| v[7..].trim())
        })
        .or(query.token.as_deref().map(str::trim))
        .ok_or_else(unauthorized)?;
    let uuid = Uuid::parse_str(&id).map_err(|_| unauthorized())?;
    let row = state.store.get_session(uuid).await?.ok_or_else(unauthorized)?;
    if row.tty_token.is_empty() {
        return Err(unauthorized());
    }
    // The session's own token opens it for as long as it lives; a key-bound one while its key does.
    let principal = if bool::from(row.tty_token.as_bytes().ct_eq(presented.as_bytes())) {
        Principal::Master
    } else {
        let key = bound_key(&row.tty_token, presented).ok_or_else(unauthorized)?;
        let owner = state.store.key_by_id(key).await?.ok_or_else(unauthorized)?;
        super::auth::admitted(owner, &state.store)?
    };
    let ended = principal.ended(&state.store);
    // A paused or hibernated session wakes by itself for an attach (control/workspace.rs), within
    // its user's quota.
    let turn = super::sessions::quota_to_wake_row(&state, &principal, &row).await?;
    let row = state.control.wake(row).await?;
    drop(turn);
    let sandbox = match (&row.status, &row.sandbox_id) {
        (SessionStatus::Ready, Some(sandbox)) => sandbox.clone(),
        (status, _) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("session {id} is {}, not ready", status.as_str()),
            )
            .hint("wait until `lap sessions show` says ready"));
        }
    };
    let upgrade = upgrade.map_err(|_| {
        ApiError::new(StatusCode::UPGRADE_REQUIRED, "this endpoint speaks WebSocket only")
            .hint("connect with a WebSocket client, e.g. `lap attach SESSION`")
    })?;
    let channel = state
        .control
        .attach(&sandbox, DEFAULT_COLS, DEFAULT_ROWS)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("cannot attach to the terminal: {e}")))?;
    touch(&state.store, uuid).await;
    let attached = NewAuditEntry {
        actor: principal.name().to_owned(),
        key_id: principal.key_id(),
        peer: peer.map(|Extension(ConnectInfo(peer))| peer.to_string()),
        action: "attach".to_owned(),
        target: Some(format!("id={uuid}")),
        status: StatusCode::SWITCHING_PROTOCOLS.as_u16(),
    };
    if let Err(err) = state.store.record_audit(attached).await {
        tracing::error!(error = %err, "cannot record an attach in the audit log");
    }
    Ok(upgrade
        .protocols([SUBPROTOCOL])
        .max_frame_size(MAX_FRAME)
        .max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| async move {
            let typed = socket
                .protocol()
                .is_some_and(|p| p.as_bytes() == SUBPROTOCOL.as_bytes());
            relay(socket, channel, typed, &state, uuid, ended).await;
        }))
}

/// Sends `frame` (a close) and waits, up to [`CLOSE_GRACE`], for the viewer's close before the
/// socket is dropped: dropped at once, a viewer still sending (keystrokes, a resize) would get a
/// reset, which can discard the last output and the exit code before the viewer reads them.
async fn close_gracefully(socket: &mut WebSocket, frame: Message) {
    if socket.send(frame).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
    })
    .await;
}

async fn touch(store: &Store, id: Uuid) {
    if let Err(err) = store.touch_session(id).await {
        tracing::warn!(session = %id, error = %err, "cannot record terminal activity");
    }
}

/// Pipes one viewer until either side leaves or the agent exits.
async fn relay(
    mut socket: WebSocket,
    mut tty: TtyChannel,
    typed: bool,
    state: &AppState,
    session: Uuid,
    mut ended: Pin<Box<dyn Future<Output = ()> + Send>>,
) {
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    let mut touched = Instant::now();
    let close = |code: u16, reason: String| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    loop {
        tokio::select! {
            out = tty.output.recv() => {
                let sent = match out {
                    Some(TtyOutput::Repaint(screen)) => {
                        if typed {
                            let _ = socket.send(Message::Text(ServerMessage::Repaint.to_text().into())).await;
                        }
                        socket.send(Message::Binary(screen.into())).await
                    }
                    Some(TtyOutput::Data(data)) => socket.send(Message::Binary(data.into())).await,
                    Some(TtyOutput::Viewers(count)) if typed => {
                        socket.send(Message::Text(ServerMessage::Viewers { count }.to_text().into())).await
                    }
                    Some(TtyOutput::Viewers(_)) => Ok(()),
                    Some(TtyOutput::Exit(code)) => {
                        // Dead first: a client that reconnects as soon as it learns of the exit
                        // must not find the session still `ready`.
                        let reason = format!("the agent exited with code {code}");
                        if let Err(err) = state.control.end_session(session, reason).await {
                            tracing::warn!(session = %session, error = %err, "cannot end the session of an exited agent");
                        }
                        let text = if typed { ServerMessage::Exit { code }.to_text() } else { exit_line(code) };
                        let _ = socket.send(Message::Text(text.into())).await;
                        close_gracefully(&mut socket, close(CLOSE_NORMAL, format!("exit {code}"))).await;
                        return;
                    }
                    None => {
                        let message = "the connection to the sandbox was lost".to_owned();
                        if typed {
                            let _ = socket.send(Message::Text(ServerMessage::Error { message: message.clone() }.to_text().into())).await;
                        }
                        close_gracefully(&mut socket, close(CLOSE_INTERNAL, message)).await;
                        return;
                    }
                };
                if sent.is_err() {
                    return;
                }
            }
            msg = socket.recv() => {
                let frame = match msg {
                    Some(Ok(Message::Binary(data))) => ClientFrame::from_binary(&data),
                    Some(Ok(Message::Text(text))) => ClientFrame::from_text(text.as_str()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    // Closed or broken: the viewer detached; the agent keeps running.
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                };
                let input = match frame {
                    Ok(ClientFrame::Input(data)) => TtyInput::Data(data),
                    Ok(ClientFrame::Resize { cols, rows }) => TtyInput::Resize { cols, rows },
                    Ok(ClientFrame::Ignore) => continue,
                    Err(err) => {
                        close_gracefully(&mut socket, close(CLOSE_TOO_BIG, err.to_string())).await;
                        return;
                    }
                };
                if matches!(input, TtyInput::Data(_)) && touched.elapsed() >= TOUCH_INTERVAL {
                    touched = Instant::now();
                    touch(&state.store, session).await;
                }
                if tty.input.send(input).await.is_err() {
                    return;
                }
            }
            _ = keepalive.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
            () = &mut ended => {
                let message = "the API key this terminal was opened with was revoked, expired or its user disabled".to_owned();
                if typed {
                    let _ = socket.send(Message::Text(ServerMessage::Error { message: message.clone() }.to_text().into())).await;
                }
                close_gracefully(&mut socket, close(CLOSE_POLICY, message)).await;
                return;
            }
        }
    }
}
