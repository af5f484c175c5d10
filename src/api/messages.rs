//! The message API (LAP §2.3): send a message and wait for the reply, or stream it as SSE; read
//! the conversation and the event log; abort the running turn.
//!
//! SSE frames are LAP's: `data: {"type":"ready"}`, then `{"type":"harness_event","event":…}` (our
//! event schema, [`crate::wire::messages::Event`]), then `{"type":"done","message":…}` or
//! `{"type":"error","message":…}`. A TUI session answers as LAP's TUI harnesses do: `POST /message`
//! returns `{"text":"this is a TUI harness — connect to /tty"}`, the history is empty, abort is a
//! no-op and the event stream only keeps the connection alive.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use crate::control::messages::{MessageError, Turn};
use crate::wire::api::ErrorBody;
use crate::wire::messages::{
    AbortReply, Event, EventKind, Message, MessageReply, SendMessage, StreamFrame, TuiReply, opencode_events,
};

use super::auth::Principal;
use super::json::{ApiQuery, bytes_rejection, parse_optional};
use super::{ApiError, AppState};

/// LAP's reply to a message sent to a terminal harness.
pub const TUI_REPLY: &str = "this is a TUI harness — connect to /tty";
/// How long `POST /message` waits for the reply (LAP's 30 minutes).
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Keep-alive comments on idle SSE streams.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

impl From<MessageError> for ApiError {
    fn from(err: MessageError) -> Self {
        match err {
            MessageError::NotFound(_) => {
                ApiError::not_found(err.to_string()).hint("`lap sessions list` shows the sessions that exist")
            }
            MessageError::NotReady { .. } => ApiError::new(StatusCode::CONFLICT, err.to_string())
                .hint("wait until `lap sessions show` says ready, or `lap sessions restart` a dead one"),
            MessageError::Busy(ref id) => {
                let hint = format!("wait for the reply, or stop the running turn with `lap sessions abort {id}` (POST …/abort)");
                ApiError::new(StatusCode::CONFLICT, err.to_string()).hint(hint)
            }
            MessageError::Unsupported(_) => ApiError::new(StatusCode::NOT_IMPLEMENTED, err.to_string())
                .hint("the message API drives claude-agent-sdk, codex-app-server and opencode agents; open a TUI agent with `lap <agent>`"),
            MessageError::Tui(_) => ApiError::new(StatusCode::CONFLICT, err.to_string())
                .hint("open its terminal with `lap <agent>` or `lap attach`"),
            MessageError::Store(err) => err.into(),
            MessageError::Wake(err) => (*err).into(),
        }
    }
}

fn input(body: Result<Bytes, BytesRejection>) -> Result<String, ApiError> {
    let body: SendMessage = parse_optional(&body.map_err(bytes_rejection)?)?;
    body.input().map_err(|e| {
        ApiError::bad_request(e).hint("send {\"text\": \"…\"} or {\"parts\": [{\"type\": \"text\", \"text\": \"…\"}]}")
    })
}

/// Send a message and wait for the agent's reply (opencode's `{info, parts}`). A TUI session answers
/// `{"text": …}` as LAP does.
#[utoipa::path(post, path = "/api/v1/managed_agents/sessions/{id}/message", tag = "messages",
    params(("id" = String, Path, description = "session UUID")),
    request_body = SendMessage,
    security(("master_key" = [])),
    responses((status = 200, body = MessageReply, description = "the reply; `{text}` for a TUI session"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 501, body = ErrorBody), (status = 502, body = ErrorBody, description = "the turn ended without a reply"),
        (status = 504, body = ErrorBody)))]
pub async fn send(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let text = input(body)?;
    let turn = match send_message(&state, &principal, &id, text).await? {
        Ok(turn) => turn,
        Err(MessageError::Tui(_)) => {
            return Ok(Json(TuiReply {
                text: TUI_REPLY.to_owned(),
            })
            .into_response());
        }
        Err(err) => return Err(err.into()),
    };
    match tokio::time::timeout(MESSAGE_TIMEOUT, turn.done).await {
        Ok(Ok(message)) => Ok(Json(message).into_response()),
        Ok(Err(_)) => Err(ApiError::new(StatusCode::BAD_GATEWAY, "the turn ended without a reply")
            .hint("see GET …/events for what the agent did")),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "no reply within 30 minutes; the turn goes on",
        )
        .hint("follow it with GET …/events, or stop it with POST …/abort")),
    }
}

/// Send a message and stream the turn as SSE: `ready`, `harness_event`…, then `done` (with the
/// reply) or `error`. `?format=opencode` puts opencode bus events in the `harness_event` frames.
#[utoipa::path(post, path = "/api/v1/managed_agents/sessions/{id}/message_stream", tag = "messages",
    params(("id" = String, Path, description = "session UUID"), FormatQuery),
    request_body = SendMessage,
    security(("master_key" = [])),
    responses((status = 200, content_type = "text/event-stream", body = StreamFrame,
            description = "one StreamFrame per `data:` line"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 501, body = ErrorBody)))]
pub async fn stream(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<FormatQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let text = input(body)?;
    let turn = match send_message(&state, &principal, &id, text).await? {
        Ok(turn) => turn,
        Err(MessageError::Tui(_)) => {
            let frames = vec![
                StreamFrame::Ready,
                StreamFrame::Error {
                    message: TUI_REPLY.to_owned(),
                },
            ];
            let frames = frames
                .into_iter()
                .map(|f| serde_json::to_string(&f).unwrap_or_default());
            return Ok(sse(&state, futures_util::stream::iter(frames.map(frame))));
        }
        Err(err) => return Err(err.into()),
    };
    Ok(sse(&state, turn_frames(turn, query.format.unwrap_or_default())))
}

fn turn_frames(turn: Turn, format: Format) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let Turn { id, mut events, done } = turn;
    async_stream(format, move |tx| async move {
        if !tx.send(StreamFrame::Ready).await {
            return;
        }
        loop {
            match events.recv().await {
                Ok(event) if event.turn_id.as_deref() == Some(id.as_str()) => {
                    let closing = matches!(event.kind, EventKind::TurnCompleted { .. });
                    if !tx.event(event).await {
                        return;
                    }
                    if closing {
                        break;
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    let message = format!("the stream fell {n} events behind; read the reply with GET …/messages");
                    let _ = tx.send(StreamFrame::Error { message }).await;
                    return;
                }
                Err(RecvError::Closed) => break,
            }
        }
        let last = match done.await {
            Ok(message) => StreamFrame::Done { message: Some(message) },
            Err(_) => StreamFrame::Error {
                message: "the turn ended without a reply".to_owned(),
            },
        };
        let _ = tx.send(last).await;
    })
}

/// The conversation so far, oldest first, as `[{info, parts}]`; kept in the store, so it survives
/// restarts of the agent and of `lap serve`.
#[utoipa::path(get, path = "/api/v1/managed_agents/sessions/{id}/messages", tag = "messages",
    params(("id" = String, Path, description = "session UUID")), security(("master_key" = [])),
    responses((status = 200, body = Vec<Message>), (status = 404, body = ErrorBody)))]
pub async fn history(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Vec<Message>>, ApiError> {
    Ok(Json(state.control.message_history(&id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Replay the events after this sequence number first (default: only new events).
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<u64>,
    /// `lap` (default): our events; `opencode`: the opencode bus events LAP's clients read.
    format: Option<Format>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FormatQuery {
    /// `lap` (default): our events; `opencode`: the opencode bus events LAP's clients read.
    format: Option<Format>,
}

/// What `harness_event` frames carry.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One frame per event of ours ([`Event`]).
    #[default]
    Lap,
    /// The opencode bus events of each of ours ([`opencode_events`]), one frame each.
    Opencode,
}

/// The session's events as SSE, read-only: `ready`, then a `harness_event` per event (those after
/// `?after=` first), until the client leaves.
#[utoipa::path(get, path = "/api/v1/managed_agents/sessions/{id}/events", tag = "messages",
    params(("id" = String, Path, description = "session UUID"), EventsQuery), security(("master_key" = [])),
    responses((status = 200, content_type = "text/event-stream", body = StreamFrame,
            description = "one StreamFrame per `data:` line"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 501, body = ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let after = super::json::position(query.after)?;
    let subscription = state.control.subscribe_events(&id, after).await?;
    let backlog = subscription.backlog;
    let live = subscription.live;
    Ok(sse(
        &state,
        async_stream(query.format.unwrap_or_default(), move |tx| async move {
            if !tx.send(StreamFrame::Ready).await {
                return;
            }
            let mut last = 0;
            for event in backlog {
                last = event.seq;
                if !tx.event(event).await {
                    return;
                }
            }
            let Some(mut live) = live else {
                // A TUI session: nothing will come; keep-alives until the client leaves.
                tx.closed().await;
                return;
            };
            loop {
                match live.recv().await {
                    Ok(event) if event.seq > last => {
                        last = event.seq;
                        if !tx.event(event).await {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        let message = format!("the stream fell {n} events behind; reconnect with ?after={last}");
                        let _ = tx.send(StreamFrame::Error { message }).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }),
    ))
}

/// Interrupt the running turn. Its stream ends with `turn.completed` `interrupted`.
#[utoipa::path(post, path = "/api/v1/managed_agents/sessions/{id}/abort", tag = "messages",
    params(("id" = String, Path, description = "session UUID")), security(("master_key" = [])),
    responses((status = 200, body = AbortReply), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn abort(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<AbortReply>, ApiError> {
    let aborted = state.control.abort_turn(&id).await?;
    Ok(Json(AbortReply { ok: true, aborted }))
}

/// LAP's opencode passthrough, as LAP's own CLI chat uses it: send a message to the session's
/// agent and wait for the reply (`{info, parts}`). `{hsid}` is the session's `harness_session_id`;
/// any value reaches the session's one conversation.
#[utoipa::path(post, path = "/api/v1/managed_agents/sessions/{id}/opencode/session/{hsid}/message", tag = "messages",
    params(("id" = String, Path, description = "session UUID"),
        ("hsid" = String, Path, description = "the session's harness_session_id")),
    request_body = SendMessage,
    security(("master_key" = [])),
    responses((status = 200, body = MessageReply, description = "the reply; `{text}` for a TUI session"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 501, body = ErrorBody), (status = 502, body = ErrorBody, description = "the turn ended without a reply"),
        (status = 504, body = ErrorBody)))]
pub async fn opencode_send(
    state: State<AppState>,
    principal: Extension<Principal>,
    Path((id, _hsid)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    send(state, principal, Path(id), body).await
}

/// Starts a turn: a hibernated session wakes by itself for it, within its user's quota (the
/// quota's turn is held until the turn has started, not while it runs).
async fn send_message(
    state: &AppState,
    principal: &Principal,
    id: &str,
    text: String,
) -> Result<Result<Turn, MessageError>, ApiError> {
    let _turn = super::sessions::quota_to_wake_by_itself(state, principal, id).await?;
    Ok(state.control.send_message(id, text).await)
}

/// LAP's opencode passthrough: the conversation, `[{info, parts}]`.
#[utoipa::path(get, path = "/api/v1/managed_agents/sessions/{id}/opencode/session/{hsid}/message", tag = "messages",
    params(("id" = String, Path, description = "session UUID"),
        ("hsid" = String, Path, description = "the session's harness_session_id")),
    security(("master_key" = [])),
    responses((status = 200, body = Vec<Message>), (status = 404, body = ErrorBody)))]
pub async fn opencode_history(
    state: State<AppState>,
    Path((id, _hsid)): Path<(String, String)>,
) -> Result<Json<Vec<Message>>, ApiError> {
    history(state, Path(id)).await
}

/// LAP's opencode passthrough: interrupt the running turn.
#[utoipa::path(post, path = "/api/v1/managed_agents/sessions/{id}/opencode/session/{hsid}/abort", tag = "messages",
    params(("id" = String, Path, description = "session UUID"),
        ("hsid" = String, Path, description = "the session's harness_session_id")),
    security(("master_key" = [])),
    responses((status = 200, body = AbortReply), (status = 404, body = ErrorBody)))]
pub async fn opencode_abort(
    state: State<AppState>,
    Path((id, _hsid)): Path<(String, String)>,
) -> Result<Json<AbortReply>, ApiError> {
    abort(state, Path(id)).await
}

fn frame(frame: String) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().data(frame))
}

/// Where a stream's frames go, in its format.
struct Frames {
    tx: tokio::sync::mpsc::Sender<String>,
    format: Format,
}

impl Frames {
    /// Sends a frame; `false` when the client has left.
    async fn send(&self, frame: StreamFrame) -> bool {
        self.tx
            .send(serde_json::to_string(&frame).unwrap_or_default())
            .await
            .is_ok()
    }

    /// Sends an event as `harness_event` frames in the stream's format.
    async fn event(&self, event: Event) -> bool {
        match self.format {
            Format::Lap => self.send(StreamFrame::HarnessEvent { event }).await,
            Format::Opencode => {
                for bus in opencode_events(&event) {
                    let frame = serde_json::json!({"type": "harness_event", "event": bus});
                    if self.tx.send(frame.to_string()).await.is_err() {
                        return false;
                    }
                }
                true
            }
        }
    }

    async fn closed(&self) {
        self.tx.closed().await
    }
}

/// `stream` as an SSE response that ends when `lap serve` shuts down (a follower would otherwise
/// hold its shutdown for the whole grace period).
fn sse<S: Stream<Item = Result<SseEvent, Infallible>> + Send + 'static>(state: &AppState, stream: S) -> Response {
    use futures_util::StreamExt;
    Sse::new(stream.take_until(state.control.stopping()))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// A stream of SSE frames produced by `body`, which sends them on a channel (the stream ends when
/// `body` returns; `body` learns that the client left when a send fails).
fn async_stream<F, Fut>(format: Format, body: F) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static
where
    F: FnOnce(Frames) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(64);
    tokio::spawn(body(Frames { tx, format }));
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (frame(f), rx)) })
}
