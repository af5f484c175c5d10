//! The message API's shapes: what programs send to an API harness, what they get back, and the one
//! event schema every harness's native stream is mapped onto.
//!
//! Messages keep the opencode shape LAP's clients read (`{info, parts}`, `sessionID`, `callID`,
//! millisecond times, `tokens{input,output,reasoning,cache{read,write}}`, `cost`), so a LAP client
//! prints our replies unchanged. Events are ours: [`Event`] is sequence-numbered per session (the
//! numbers survive restarts of `lap serve`), every item is started before its deltas, and every
//! turn ends with exactly one `turn.completed`, synthesised when the tool crashed or was killed.
//! [`MessageBuilder`] folds a turn's events into its assistant message, the same way for every
//! harness.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Longest message text accepted.
pub const MAX_MESSAGE_CHARS: usize = 256 * 1024;

/// `POST /sessions/{id}/message` and `…/message_stream`: the user's turn. Either `text`, or
/// `parts` of type `text` (LAP's body); both may be given and are joined. A given text must not be
/// blank (only [`char::is_whitespace`] characters). Its schema is written by hand
/// ([`SendMessage::schema`]): "text or parts" is an `anyOf` the derive cannot state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SendMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `[{"type":"text","text":…}]`; other part types are refused with a 400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<Vec<serde_json::Value>>,
}

/// A string that is not blank: it holds a character outside [`char::is_whitespace`], spelled out so
/// that every regex dialect reads it alike.
const NOT_BLANK: &str =
    "[^\\t\\n\\u000B\\f\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]";

impl utoipa::PartialSchema for SendMessage {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, SchemaType, Type};
        let text = |nullable: bool| {
            let kind = if nullable {
                SchemaType::from_iter([Type::String, Type::Null])
            } else {
                SchemaType::new(Type::String)
            };
            ObjectBuilder::new()
                .schema_type(kind)
                .pattern(Some(NOT_BLANK))
                .max_length(Some(MAX_MESSAGE_CHARS))
        };
        let part = || {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    "type",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(["text"])),
                )
                .required("type")
                .property("text", text(false))
                .required("text")
        };
        let parts = |required: bool| {
            let kind = if required {
                SchemaType::new(Type::Array)
            } else {
                SchemaType::from_iter([Type::Array, Type::Null])
            };
            ArrayBuilder::new()
                .schema_type(kind)
                .items(part())
                .min_items(required.then_some(1))
        };
        let with_text = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("text", text(false))
            .required("text")
            .property("parts", parts(false));
        let with_parts = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("text", text(true))
            .property("parts", parts(true))
            .required("parts");
        AnyOfBuilder::new()
            .item(with_text)
            .item(with_parts)
            .description(Some(
                "The user's turn: a non-blank `text`, or `parts` of type `text` (each non-blank), or both \
                 (joined by a blank line); at most 262144 characters in all.",
            ))
            .into()
    }
}

impl ToSchema for SendMessage {}

impl SendMessage {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            parts: None,
        }
    }

    /// The message's text, or why it cannot be sent.
    pub fn input(&self) -> Result<String, String> {
        let mut pieces: Vec<String> = Vec::new();
        if let Some(text) = &self.text {
            if text.trim().is_empty() {
                return Err("the message is empty: `text` is blank".to_owned());
            }
            pieces.push(text.clone());
        }
        for (index, part) in self.parts.iter().flatten().enumerate() {
            match part.get("type").and_then(|t| t.as_str()) {
                Some("text") => match part.get("text").and_then(|t| t.as_str()) {
                    Some(text) if text.trim().is_empty() => {
                        return Err(format!("`parts[{index}]` is empty: its `text` is blank"));
                    }
                    Some(text) => pieces.push(text.to_owned()),
                    None => return Err(format!("`parts[{index}]` has no string `text`")),
                },
                Some(other) => {
                    return Err(format!(
                        "`parts[{index}]` is of type `{other}`; only `text` parts are taken"
                    ));
                }
                None => return Err(format!("`parts[{index}]` has no `type`")),
            }
        }
        let text = pieces.join("\n\n");
        if text.trim().is_empty() {
            return Err("the message is empty".to_owned());
        }
        if text.chars().count() > MAX_MESSAGE_CHARS {
            return Err(format!("the message is over {MAX_MESSAGE_CHARS} characters"));
        }
        Ok(text)
    }
}

/// A message of the conversation: the user's turn or the agent's reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub info: MessageInfo,
    pub parts: Vec<Part>,
}

impl Message {
    /// The text parts, joined by blank lines.
    pub fn text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|part| match part {
                Part::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MessageInfo {
    /// `msg_…`.
    pub id: String,
    /// The lap session's id.
    #[serde(rename = "sessionID")]
    pub session_id: String,
    pub role: Role,
    pub time: MessageTime,
    /// The harness that answered (assistant messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness: Option<String>,
    #[serde(rename = "modelID", default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Tokens>,
    /// This turn's cost in US dollars, as the tool reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// `stop` (completed), `interrupted`, `failed` or `max_turns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<MessageError>,
}

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageTime {
    pub created: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    #[serde(default)]
    pub reasoning: u64,
    #[serde(default)]
    pub cache: CacheTokens,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CacheTokens {
    pub read: u64,
    pub write: u64,
}

/// opencode's error shape: `{name, data:{message}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageError {
    pub name: String,
    pub data: ErrorData,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorData {
    pub message: String,
}

/// One part of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Part {
    Text {
        id: String,
        text: String,
    },
    Reasoning {
        id: String,
        text: String,
    },
    Tool {
        id: String,
        /// The tool's name, as the agent calls it (`Bash`, `Read`, …).
        tool: String,
        /// The tool call's native id.
        #[serde(rename = "callID")]
        call_id: String,
        state: ToolState,
    },
}

impl Part {
    pub fn id(&self) -> &str {
        match self {
            Part::Text { id, .. } | Part::Reasoning { id, .. } | Part::Tool { id, .. } => id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolState {
    pub status: ToolStatus,
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ToolStatus {
    Pending,
    Running,
    Completed,
    Error,
}

/// One event of a session's conversation, in our schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Increases by one per event of the session, across restarts of the tool and of `lap serve`.
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub session_id: Uuid,
    /// The turn the event belongs to: the id of its assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. Serialised as `"type"` plus `"data"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum EventKind {
    /// The tool is up and named its own conversation id (e.g. Claude's `session_id`).
    #[serde(rename = "session.started")]
    SessionStarted {
        native_session_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
    },
    /// A user message was handed to the tool.
    #[serde(rename = "turn.started")]
    TurnStarted { message_id: String, input: String },
    /// A part of the reply begins (empty text, or a tool call with its input so far).
    #[serde(rename = "item.started")]
    ItemStarted { item: Part },
    /// More of a part: appended to its `text` (or to the tool's input JSON, `tool_input`).
    #[serde(rename = "item.delta")]
    ItemDelta {
        item_id: String,
        field: DeltaField,
        delta: String,
    },
    /// A part in its final form; it replaces whatever the deltas built.
    #[serde(rename = "item.completed")]
    ItemCompleted { item: Part },
    /// The tool is retrying a failed model request.
    #[serde(rename = "turn.status")]
    TurnStatus {
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delay_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        http_status: Option<u16>,
    },
    /// The turn is over: exactly one per `turn.started`.
    #[serde(rename = "turn.completed")]
    TurnCompleted {
        status: TurnOutcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<TurnError>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Tokens>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost_usd: Option<f64>,
    },
    /// The tool's process ended (it is started again for the next message, resuming the
    /// conversation).
    #[serde(rename = "session.ended")]
    SessionEnded {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stderr_tail: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeltaField {
    Text,
    Reasoning,
    ToolInput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TurnOutcome {
    Completed,
    Interrupted,
    Failed,
    MaxTurns,
}

impl TurnOutcome {
    /// opencode's `finish` word for it.
    pub fn finish(self) -> &'static str {
        match self {
            TurnOutcome::Completed => "stop",
            TurnOutcome::Interrupted => "interrupted",
            TurnOutcome::Failed => "failed",
            TurnOutcome::MaxTurns => "max_turns",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TurnError {
    /// `api_error`, `agent_exited`, `aborted`, `max_turns`, …
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

/// One frame of `message_stream` and `events` (SSE `data:` lines), LAP's framing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamFrame {
    /// The stream is open (for `message_stream`: the message was handed to the agent).
    Ready,
    HarnessEvent {
        event: Event,
    },
    /// The turn is over; `message` is the agent's reply as `GET /messages` keeps it.
    Done {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<Message>,
    },
    Error {
        message: String,
    },
}

/// What `POST /message` answers, for the OpenAPI document: the agent's reply, or a TUI session's
/// [`TuiReply`].
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum MessageReply {
    Message(Box<Message>),
    Tui(TuiReply),
}

/// What a TUI session answers on `POST /message`, as LAP's TUI harnesses do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TuiReply {
    pub text: String,
}

/// `POST /sessions/{id}/abort`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AbortReply {
    pub ok: bool,
    /// Whether a turn was running and is being interrupted.
    pub aborted: bool,
}

/// The opencode bus events LAP's clients read, for one of our events (`{type, properties}`; none
/// for events opencode has no word for): `message.part.updated` for a started or completed item
/// (the empty part before any delta, as LAP's UI wants), `message.part.delta`,
/// `message.updated` with the assistant's final info and `session.idle` for `turn.completed`,
/// `session.error` for a turn that failed or was interrupted (`MessageAbortedError`), and
/// `session.status` `busy` for `turn.started`.
pub fn opencode_events(event: &Event) -> Vec<serde_json::Value> {
    use serde_json::json;
    let session = event.session_id.to_string();
    let message = event.turn_id.clone().unwrap_or_default();
    let part = |item: &Part| {
        let mut part = serde_json::to_value(item).unwrap_or_default();
        part["messageID"] = json!(message);
        part["sessionID"] = json!(session);
        part
    };
    match &event.kind {
        EventKind::TurnStarted { .. } => vec![json!({"type": "session.status",
            "properties": {"sessionID": session, "status": {"type": "busy"}}})],
        EventKind::ItemStarted { item } | EventKind::ItemCompleted { item } => {
            vec![json!({"type": "message.part.updated", "properties": {"sessionID": session, "part": part(item)}})]
        }
        EventKind::ItemDelta { item_id, field, delta } => vec![json!({"type": "message.part.delta", "properties": {
            "sessionID": session, "messageID": message, "partID": item_id,
            "field": match field { DeltaField::Text => "text", DeltaField::Reasoning => "reasoning", DeltaField::ToolInput => "input" },
            "delta": delta}})],
        EventKind::TurnCompleted {
            status,
            error,
            usage,
            cost_usd,
        } => {
            let mut out = Vec::new();
            let info = json!({"id": message, "sessionID": session, "role": "assistant",
                "time": {"completed": event.time}, "tokens": usage, "cost": cost_usd, "finish": status.finish(),
                "error": error.as_ref().map(|e| json!({"name": e.kind, "data": {"message": e.message}}))});
            out.push(json!({"type": "message.updated", "properties": {"sessionID": session, "info": info}}));
            if let Some(error) = error {
                let name = if *status == TurnOutcome::Interrupted {
                    "MessageAbortedError"
                } else {
                    error.kind.as_str()
                };
                out.push(json!({"type": "session.error", "properties": {"sessionID": session,
                    "error": {"name": name, "data": {"message": error.message}}}}));
            }
            out.push(json!({"type": "session.idle", "properties": {"sessionID": session}}));
            out
        }
        _ => Vec::new(),
    }
}

/// Folds one turn's events into the assistant message, the same way for every harness: parts in
/// the order they started, deltas appended, completed parts replacing what the deltas built.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    message: Message,
}

impl MessageBuilder {
    pub fn new(info: MessageInfo) -> Self {
        Self {
            message: Message {
                info,
                parts: Vec::new(),
            },
        }
    }

    pub fn apply(&mut self, kind: &EventKind) {
        match kind {
            EventKind::ItemStarted { item } | EventKind::ItemCompleted { item } => {
                match self.message.parts.iter_mut().find(|p| p.id() == item.id()) {
                    Some(part) => *part = item.clone(),
                    None => self.message.parts.push(item.clone()),
                }
            }
            EventKind::ItemDelta { item_id, field, delta } => {
                let Some(part) = self.message.parts.iter_mut().find(|p| p.id() == item_id) else {
                    return;
                };
                match (part, field) {
                    (Part::Text { text, .. }, DeltaField::Text)
                    | (Part::Reasoning { text, .. }, DeltaField::Reasoning) => text.push_str(delta),
                    _ => {}
                }
            }
            EventKind::TurnCompleted {
                status,
                error,
                usage,
                cost_usd,
            } => {
                let info = &mut self.message.info;
                info.finish = Some(status.finish().to_owned());
                info.tokens = *usage;
                info.cost = *cost_usd;
                info.error = error.as_ref().map(|e| MessageError {
                    name: e.kind.clone(),
                    data: ErrorData {
                        message: e.message.clone(),
                    },
                });
            }
            EventKind::SessionStarted { model: Some(model), .. } => {
                self.message.info.model_id = Some(model.clone());
            }
            _ => {}
        }
    }

    /// The message so far.
    pub fn message(&self) -> &Message {
        &self.message
    }

    pub fn finish(mut self, completed_ms: i64) -> Message {
        self.message.info.time.completed = Some(completed_ms);
        self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> MessageInfo {
        MessageInfo {
            id: "msg_1".into(),
            session_id: "s".into(),
            role: Role::Assistant,
            time: MessageTime {
                created: 1,
                completed: None,
            },
            harness: None,
            model_id: None,
            tokens: None,
            cost: None,
            finish: None,
            error: None,
        }
    }

    #[test]
    fn input_joins_text_and_text_parts_and_refuses_empty_or_other_parts() {
        let body: SendMessage = serde_json::from_str(r#"{"text":"a","parts":[{"type":"text","text":"b"}]}"#).unwrap();
        assert_eq!(body.input().unwrap(), "a\n\nb");
        assert!(SendMessage::default().input().unwrap_err().contains("empty"));
        assert!(SendMessage::text("  \n").input().is_err());
        let image: SendMessage = serde_json::from_str(r#"{"parts":[{"type":"image"}]}"#).unwrap();
        assert!(image.input().unwrap_err().contains("image"));
    }

    #[test]
    fn events_serialise_as_type_and_data_and_parse_back() {
        let event = Event {
            seq: 7,
            time: "t".into(),
            session_id: Uuid::nil(),
            turn_id: Some("msg_1".into()),
            kind: EventKind::ItemDelta {
                item_id: "prt_1".into(),
                field: DeltaField::Text,
                delta: "hi".into(),
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "item.delta");
        assert_eq!(json["data"]["delta"], "hi");
        assert_eq!(json["seq"], 7);
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
        let frame = serde_json::to_value(StreamFrame::Ready).unwrap();
        assert_eq!(frame, serde_json::json!({"type": "ready"}));
    }

    #[test]
    fn the_opencode_view_carries_message_and_session_ids_and_ends_a_turn_with_idle() {
        let event = |kind| Event {
            seq: 1,
            time: "t".into(),
            session_id: Uuid::nil(),
            turn_id: Some("msg_1".into()),
            kind,
        };
        let started = opencode_events(&event(EventKind::ItemStarted {
            item: Part::Text {
                id: "prt_1".into(),
                text: String::new(),
            },
        }));
        assert_eq!(started[0]["type"], "message.part.updated");
        assert_eq!(started[0]["properties"]["part"]["messageID"], "msg_1");
        assert_eq!(started[0]["properties"]["part"]["type"], "text");
        let delta = opencode_events(&event(EventKind::ItemDelta {
            item_id: "prt_1".into(),
            field: DeltaField::Text,
            delta: "hi".into(),
        }));
        assert_eq!(delta[0]["properties"]["partID"], "prt_1");
        assert_eq!(delta[0]["properties"]["field"], "text");
        let aborted = opencode_events(&event(EventKind::TurnCompleted {
            status: TurnOutcome::Interrupted,
            error: Some(TurnError {
                kind: "aborted".into(),
                message: "stopped".into(),
                http_status: None,
            }),
            usage: None,
            cost_usd: None,
        }));
        let types: Vec<&str> = aborted.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["message.updated", "session.error", "session.idle"]);
        assert_eq!(aborted[1]["properties"]["error"]["name"], "MessageAbortedError");
        assert!(
            opencode_events(&event(EventKind::SessionEnded {
                reason: "x".into(),
                exit_code: None,
                stderr_tail: None
            }))
            .is_empty()
        );
    }

    #[test]
    fn the_builder_appends_deltas_and_lets_the_final_form_win() {
        let mut builder = MessageBuilder::new(info());
        let started = Part::Text {
            id: "prt_1".into(),
            text: String::new(),
        };
        builder.apply(&EventKind::ItemStarted { item: started });
        for delta in ["Hel", "lo"] {
            builder.apply(&EventKind::ItemDelta {
                item_id: "prt_1".into(),
                field: DeltaField::Text,
                delta: delta.into(),
            });
        }
        assert_eq!(builder.message().text(), "Hello");
        builder.apply(&EventKind::ItemCompleted {
            item: Part::Text {
                id: "prt_1".into(),
                text: "Hello!".into(),
            },
        });
        builder.apply(&EventKind::TurnCompleted {
            status: TurnOutcome::Completed,
            error: None,
            usage: Some(Tokens {
                input: 3,
                output: 2,
                ..Tokens::default()
            }),
            cost_usd: Some(0.5),
        });
        let message = builder.finish(9);
        assert_eq!(message.text(), "Hello!");
        assert_eq!(message.parts.len(), 1);
        assert_eq!(message.info.finish.as_deref(), Some("stop"));
        assert_eq!(message.info.tokens.unwrap().output, 2);
        assert_eq!(message.info.time.completed, Some(9));
    }
}
