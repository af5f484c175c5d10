//! The `claude-agent-sdk` harness: the `claude` CLI in headless streaming mode, the protocol the
//! Agent SDK speaks (`-p --input-format stream-json --output-format stream-json --verbose`).
//!
//! One process serves many turns: a user turn is one JSON line on stdin, the turn ends with the
//! `result` line, and the process waits for the next. `--include-partial-messages` adds the raw
//! Anthropic stream (`stream_event`) for text deltas; the complete `assistant` line for each block
//! then arrives too and is taken as the block's final form. The conversation id (`session_id` of
//! `system/init`) is kept so a new process continues it with `--resume`. An interrupt is the
//! `control_request` `interrupt`; Claude answers it with a `result` whose `terminal_reason` is
//! `aborted_streaming`. Permission requests (`can_use_tool`) are allowed: the sandbox is the
//! boundary, and the tool runs with `bypassPermissions` anyway.
//!
//! A refused key ends the turn at once: Claude Code retries a 401 like a transient error (ten
//! times, backing off, some three minutes, printing `system/api_retry` lines), but through the
//! vault the key it sends cannot change between attempts. On the first 401 retry the driver
//! interrupts the turn and closes it failed, with the 401 and the harness's hint.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{Driver, Output, command_line, new_id, unauthorized};
use crate::wire::api::Agent;
use crate::wire::messages::{DeltaField, EventKind, Part, Tokens, ToolState, ToolStatus, TurnError, TurnOutcome};

/// The tool's program.
pub const PROGRAM: &str = "claude";
/// The harness this driver serves (its catalog row holds the hint for a refused key).
const HARNESS: &str = "claude-agent-sdk";

#[derive(Debug, Default)]
pub struct Claude {
    native_session: Option<String>,
    /// The message id of the current `message_start`.
    message: Option<String>,
    /// Our part id of each streamed block, by (Claude message id, block index).
    blocks: HashMap<(String, u64), String>,
    /// Parts started from the stream and not completed yet, in order: (Claude message id, our id,
    /// kind).
    open: Vec<(String, String, &'static str)>,
    /// Our part id and tool name of each tool call, by `tool_use_id`.
    tools: HashMap<String, (String, String, Value)>,
    /// `total_cost_usd` of the last `result`: Claude reports it cumulative per process.
    total_cost: f64,
    /// The model's API refused the key in this turn (Claude's own words for it): the turn was
    /// interrupted and its `result` closes it as failed with a 401.
    refused: Option<String>,
}

impl Driver for Claude {
    fn argv(&mut self, agent: &Agent, resume: Option<&str>) -> Vec<String> {
        let mut args: Vec<String> = [
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
            "--permission-mode",
            "bypassPermissions",
            // Headless loops park on it forever.
            "--disallowedTools",
            "AskUserQuestion",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if let Some(model) = agent.model.as_deref().filter(|m| !m.is_empty()) {
            args.extend(["--model".to_owned(), model.to_owned()]);
        }
        if let Some(prompt) = agent.prompt.as_deref().filter(|p| !p.trim().is_empty()) {
            args.extend(["--append-system-prompt".to_owned(), prompt.to_owned()]);
        }
        if let Some(resume) = resume {
            args.extend(["--resume".to_owned(), resume.to_owned()]);
        }
        command_line(agent, PROGRAM, args)
    }

    fn user_turn(&mut self, text: &str) -> Vec<String> {
        vec![
            json!({
                "type": "user",
                "message": {"role": "user", "content": text},
                "parent_tool_use_id": null,
                "session_id": self.native_session.clone().unwrap_or_default(),
            })
            .to_string(),
        ]
    }

    fn interrupt(&mut self) -> Option<String> {
        Some(interrupt_request())
    }

    fn line(&mut self, line: &str) -> Output {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            return Output::default();
        };
        let mut out = Output::default();
        match (str_at(&value, "type"), str_at(&value, "subtype")) {
            (Some("system"), Some("init")) => self.init(&value, &mut out),
            (Some("system"), Some("api_retry")) => self.api_retry(&value, &mut out),
            (Some("stream_event"), _) => {
                if let Some(event) = value.get("event") {
                    self.stream_event(event, &mut out);
                }
            }
            (Some("assistant"), _) => self.assistant(&value, &mut out),
            (Some("user"), _) => self.tool_results(&value, &mut out),
            (Some("result"), _) => self.result(&value, &mut out),
            (Some("control_request"), _) => self.control_request(&value, &mut out),
            _ => {}
        }
        out
    }
}

impl Claude {
    /// Claude is about to retry a failed request: reported as the turn's status; a 401 instead
    /// interrupts the turn (retrying cannot help), which its `result` then closes as refused.
    fn api_retry(&mut self, value: &Value, out: &mut Output) {
        let http_status = value.get("error_status").and_then(Value::as_u64).map(|s| s as u16);
        if http_status == Some(UNAUTHORIZED) {
            if self.refused.is_none() {
                let said = str_at(value, "error").unwrap_or("authentication_failed");
                self.refused = Some(format!(
                    "401 Unauthorized (claude: `{said}`); lap stopped claude's retries, which cannot help"
                ));
                out.replies.push(interrupt_request());
            }
            return;
        }
        out.events.push(EventKind::TurnStatus {
            status: "retrying".to_owned(),
            attempt: value.get("attempt").and_then(Value::as_u64),
            delay_ms: value.get("retry_delay_ms").and_then(Value::as_u64),
            http_status,
        });
    }

    fn init(&mut self, value: &Value, out: &mut Output) {
        let Some(id) = str_at(value, "session_id") else {
            return;
        };
        if self.native_session.as_deref() == Some(id) {
            return;
        }
        self.native_session = Some(id.to_owned());
        out.events.push(EventKind::SessionStarted {
            native_session_id: id.to_owned(),
            model: str_at(value, "model").map(str::to_owned),
            cwd: str_at(value, "cwd").map(str::to_owned),
        });
    }

    fn stream_event(&mut self, event: &Value, out: &mut Output) {
        match str_at(event, "type") {
            Some("message_start") => {
                self.message = event.pointer("/message/id").and_then(Value::as_str).map(str::to_owned);
            }
            Some("content_block_start") => {
                let (Some(message), Some(index), Some(block)) = (
                    self.message.clone(),
                    event.get("index").and_then(Value::as_u64),
                    event.get("content_block"),
                ) else {
                    return;
                };
                let id = new_id("prt_");
                let item = match str_at(block, "type") {
                    Some("text") => Part::Text {
                        id: id.clone(),
                        text: String::new(),
                    },
                    Some("thinking") => Part::Reasoning {
                        id: id.clone(),
                        text: String::new(),
                    },
                    Some("tool_use") => {
                        let call_id = str_at(block, "id").unwrap_or_default().to_owned();
                        let tool = str_at(block, "name").unwrap_or_default().to_owned();
                        self.tools
                            .insert(call_id.clone(), (id.clone(), tool.clone(), json!({})));
                        Part::Tool {
                            id: id.clone(),
                            tool,
                            call_id,
                            state: ToolState {
                                status: ToolStatus::Pending,
                                input: json!({}),
                                output: None,
                                error: None,
                            },
                        }
                    }
                    _ => return,
                };
                let kind = kind_of(&item);
                self.blocks.insert((message.clone(), index), id.clone());
                if kind != "tool" {
                    self.open.push((message, id, kind));
                }
                out.events.push(EventKind::ItemStarted { item });
            }
            Some("content_block_delta") => {
                let (Some(message), Some(index), Some(delta)) = (
                    self.message.clone(),
                    event.get("index").and_then(Value::as_u64),
                    event.get("delta"),
                ) else {
                    return;
                };
                let Some(item_id) = self.blocks.get(&(message, index)).cloned() else {
                    return;
                };
                let (field, text) = match str_at(delta, "type") {
                    Some("text_delta") => (DeltaField::Text, str_at(delta, "text")),
                    Some("thinking_delta") => (DeltaField::Reasoning, str_at(delta, "thinking")),
                    Some("input_json_delta") => (DeltaField::ToolInput, str_at(delta, "partial_json")),
                    _ => return,
                };
                if let Some(text) = text.filter(|t| !t.is_empty()) {
                    out.events.push(EventKind::ItemDelta {
                        item_id,
                        field,
                        delta: text.to_owned(),
                    });
                }
            }
            _ => {}
        }
    }

    /// A complete `assistant` line: the final form of its blocks.
    fn assistant(&mut self, value: &Value, out: &mut Output) {
        let message = value
            .pointer("/message/id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let Some(content) = value.pointer("/message/content").and_then(Value::as_array) else {
            return;
        };
        for block in content {
            let kind = match str_at(block, "type") {
                Some("text") => "text",
                Some("thinking") => "reasoning",
                Some("tool_use") => "tool",
                _ => continue,
            };
            let item = if kind == "tool" {
                let call_id = str_at(block, "id").unwrap_or_default().to_owned();
                let tool = str_at(block, "name").unwrap_or_default().to_owned();
                let input = block.get("input").cloned().unwrap_or(json!({}));
                let id = match self.tools.get(&call_id) {
                    Some((id, _, _)) => id.clone(),
                    None => {
                        let id = new_id("prt_");
                        let pending = Part::Tool {
                            id: id.clone(),
                            tool: tool.clone(),
                            call_id: call_id.clone(),
                            state: ToolState {
                                status: ToolStatus::Pending,
                                input: json!({}),
                                output: None,
                                error: None,
                            },
                        };
                        out.events.push(EventKind::ItemStarted { item: pending });
                        id
                    }
                };
                self.tools
                    .insert(call_id.clone(), (id.clone(), tool.clone(), input.clone()));
                Part::Tool {
                    id,
                    tool,
                    call_id,
                    state: ToolState {
                        status: ToolStatus::Running,
                        input,
                        output: None,
                        error: None,
                    },
                }
            } else {
                let text_key = if kind == "text" { "text" } else { "thinking" };
                let text = str_at(block, text_key).unwrap_or_default().to_owned();
                // The first streamed part of this message and kind not completed yet is this block.
                let position = self.open.iter().position(|(m, _, k)| *m == message && *k == kind);
                let id = match position {
                    Some(position) => self.open.remove(position).1,
                    None => {
                        let id = new_id("prt_");
                        out.events.push(EventKind::ItemStarted {
                            item: text_part(kind, id.clone(), String::new()),
                        });
                        id
                    }
                };
                text_part(kind, id, text)
            };
            out.events.push(EventKind::ItemCompleted { item });
        }
    }

    /// A `user` line carrying tool results: the tool calls are completed.
    fn tool_results(&mut self, value: &Value, out: &mut Output) {
        let Some(content) = value.pointer("/message/content").and_then(Value::as_array) else {
            return;
        };
        for block in content.iter().filter(|b| str_at(b, "type") == Some("tool_result")) {
            let Some(call_id) = str_at(block, "tool_use_id") else {
                continue;
            };
            let Some((id, tool, input)) = self.tools.remove(call_id) else {
                continue;
            };
            let output = match block.get("content") {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|item| str_at(item, "text"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => String::new(),
            };
            let failed = block.get("is_error").and_then(Value::as_bool).unwrap_or(false);
            let state = ToolState {
                status: if failed {
                    ToolStatus::Error
                } else {
                    ToolStatus::Completed
                },
                input,
                output: (!failed).then(|| output.clone()),
                error: failed.then_some(output),
            };
            out.events.push(EventKind::ItemCompleted {
                item: Part::Tool {
                    id,
                    tool,
                    call_id: call_id.to_owned(),
                    state,
                },
            });
        }
    }

    fn result(&mut self, value: &Value, out: &mut Output) {
        let subtype = str_at(value, "subtype").unwrap_or_default();
        let is_error = value.get("is_error").and_then(Value::as_bool).unwrap_or(false);
        let aborted = str_at(value, "terminal_reason") == Some("aborted_streaming");
        let refused = self.refused.take();
        let status = if refused.is_some() {
            TurnOutcome::Failed
        } else if aborted {
            TurnOutcome::Interrupted
        } else if subtype == "error_max_turns" {
            TurnOutcome::MaxTurns
        } else if subtype == "success" && !is_error {
            TurnOutcome::Completed
        } else {
            TurnOutcome::Failed
        };
        let error = (status != TurnOutcome::Completed).then(|| {
            let errors: Vec<&str> = value
                .get("errors")
                .and_then(Value::as_array)
                .map(|e| e.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let message = str_at(value, "result")
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .or_else(|| (!errors.is_empty()).then(|| errors.join("; ")))
                .unwrap_or_else(|| format!("the turn ended with `{subtype}`"));
            let http_status = value.get("api_error_status").and_then(Value::as_u64).map(|s| s as u16);
            if let Some(refused) = refused {
                let (message, http_status) = unauthorized(HARNESS, refused, Some(UNAUTHORIZED));
                return TurnError {
                    kind: "api_error".to_owned(),
                    message,
                    http_status,
                };
            }
            let kind = match status {
                TurnOutcome::Interrupted => "aborted",
                TurnOutcome::MaxTurns => "max_turns",
                _ if http_status.is_some() => "api_error",
                _ => "agent_error",
            };
            let (message, http_status) = unauthorized(HARNESS, message, http_status);
            TurnError {
                kind: kind.to_owned(),
                message,
                http_status,
            }
        });
        let usage = value.get("usage").map(|u| {
            let n = |key: &str| u.get(key).and_then(Value::as_u64).unwrap_or(0);
            Tokens {
                input: n("input_tokens"),
                output: n("output_tokens"),
                reasoning: 0,
                cache: crate::wire::messages::CacheTokens {
                    read: n("cache_read_input_tokens"),
                    write: n("cache_creation_input_tokens"),
                },
            }
        });
        let cost_usd = value.get("total_cost_usd").and_then(Value::as_f64).map(|total| {
            let turn = (total - self.total_cost).max(0.0);
            self.total_cost = total;
            turn
        });
        // Blocks of this turn that never got their final form keep what the deltas built.
        self.open.clear();
        self.blocks.clear();
        out.events.push(EventKind::TurnCompleted {
            status,
            error,
            usage,
            cost_usd,
        });
    }

    /// Requests the CLI makes of its client: tool permissions are granted, anything else refused.
    fn control_request(&mut self, value: &Value, out: &mut Output) {
        let Some(request_id) = str_at(value, "request_id") else {
            return;
        };
        let reply = match value.pointer("/request/subtype").and_then(Value::as_str) {
            Some("can_use_tool") => json!({
                "type": "control_response",
                "response": {
                    "subtype": "success",
                    "request_id": request_id,
                    "response": {
                        "behavior": "allow",
                        "updatedInput": value.pointer("/request/input").cloned().unwrap_or(json!({})),
                    },
                },
            }),
            other => json!({
                "type": "control_response",
                "response": {
                    "subtype": "error",
                    "request_id": request_id,
                    "error": format!("lap does not answer `{}` requests", other.unwrap_or("?")),
                },
            }),
        };
        out.replies.push(reply.to_string());
    }
}

/// The HTTP status of a refused key.
const UNAUTHORIZED: u16 = 401;

/// The `control_request` that interrupts the running turn.
fn interrupt_request() -> String {
    json!({
        "type": "control_request",
        "request_id": new_id("req_"),
        "request": {"subtype": "interrupt"},
    })
    .to_string()
}

fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn kind_of(part: &Part) -> &'static str {
    match part {
        Part::Text { .. } => "text",
        Part::Reasoning { .. } => "reasoning",
        Part::Tool { .. } => "tool",
    }
}

fn text_part(kind: &str, id: String, text: String) -> Part {
    if kind == "reasoning" {
        Part::Reasoning { id, text }
    } else {
        Part::Text { id, text }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::messages::{MessageBuilder, MessageInfo, MessageTime, Role};

    /// A turn as Claude Code 2.1 prints it with `--include-partial-messages`: text streamed, then a
    /// tool call, its result, and the closing `result`.
    const TURN: &[&str] = &[
        r#"{"type":"system","subtype":"init","session_id":"s-1","model":"claude-x","cwd":"/work/repo","tools":["Bash"]}"#,
        r#"{"type":"stream_event","event":{"type":"message_start","message":{"id":"m1","role":"assistant","content":[]}},"session_id":"s-1"}"#,
        r#"{"type":"stream_event","event":{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}},"session_id":"s-1"}"#,
        r#"{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me "}},"session_id":"s-1"}"#,
        r#"{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"look."}},"session_id":"s-1"}"#,
        r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"Let me look."}]},"session_id":"s-1"}"#,
        r#"{"type":"stream_event","event":{"type":"content_block_stop","index":0},"session_id":"s-1"}"#,
        r#"{"type":"stream_event","event":{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"tu1","name":"Bash","input":{}}},"session_id":"s-1"}"#,
        r#"{"type":"stream_event","event":{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"command\":\"ls\"}"}},"session_id":"s-1"}"#,
        r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"tool_use","id":"tu1","name":"Bash","input":{"command":"ls"}}]},"session_id":"s-1"}"#,
        r#"{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"tu1","content":"README.md","is_error":false}]},"session_id":"s-1"}"#,
        r#"{"type":"stream_event","event":{"type":"message_start","message":{"id":"m2","role":"assistant","content":[]}},"session_id":"s-1"}"#,
        r#"{"type":"stream_event","event":{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}},"session_id":"s-1"}"#,
        r#"{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Done."}},"session_id":"s-1"}"#,
        r#"{"type":"assistant","message":{"id":"m2","content":[{"type":"text","text":"Done."}]},"session_id":"s-1"}"#,
        r#"{"type":"result","subtype":"success","is_error":false,"result":"Done.","session_id":"s-1","total_cost_usd":0.25,"usage":{"input_tokens":10,"output_tokens":4,"cache_read_input_tokens":2,"cache_creation_input_tokens":1}}"#,
    ];

    fn run(claude: &mut Claude, lines: &[&str]) -> Vec<EventKind> {
        lines.iter().flat_map(|line| claude.line(line).events).collect()
    }

    fn builder() -> MessageBuilder {
        MessageBuilder::new(MessageInfo {
            id: "msg_1".into(),
            session_id: "s".into(),
            role: Role::Assistant,
            time: MessageTime {
                created: 0,
                completed: None,
            },
            harness: None,
            model_id: None,
            tokens: None,
            cost: None,
            finish: None,
            error: None,
        })
    }

    #[test]
    fn a_turn_maps_onto_items_started_before_deltas_and_one_closing_event() {
        let mut claude = Claude::default();
        let events = run(&mut claude, TURN);
        assert!(
            matches!(&events[0], EventKind::SessionStarted { native_session_id, .. } if native_session_id == "s-1")
        );
        // Every delta's item was started before it.
        let mut started = std::collections::HashSet::new();
        for event in &events {
            match event {
                EventKind::ItemStarted { item } => {
                    started.insert(item.id().to_owned());
                }
                EventKind::ItemDelta { item_id, .. } => assert!(started.contains(item_id), "{event:?}"),
                _ => {}
            }
        }
        let closing = events
            .iter()
            .filter(|e| matches!(e, EventKind::TurnCompleted { .. }))
            .count();
        assert_eq!(closing, 1);
        let mut builder = builder();
        events.iter().for_each(|e| builder.apply(e));
        let message = builder.finish(1);
        // Text never twice: the final `assistant` block replaced what the deltas built.
        assert_eq!(message.text(), "Let me look.\n\nDone.");
        assert_eq!(message.parts.len(), 3);
        match &message.parts[1] {
            Part::Tool {
                tool, call_id, state, ..
            } => {
                assert_eq!((tool.as_str(), call_id.as_str()), ("Bash", "tu1"));
                assert_eq!(state.status, ToolStatus::Completed);
                assert_eq!(state.input, json!({"command": "ls"}));
                assert_eq!(state.output.as_deref(), Some("README.md"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(message.info.finish.as_deref(), Some("stop"));
        assert_eq!(message.info.tokens.unwrap().cache.read, 2);
        assert_eq!(message.info.cost, Some(0.25));
        assert_eq!(message.info.model_id.as_deref(), Some("claude-x"));
    }

    #[test]
    fn cost_is_per_turn_and_api_errors_reported_as_success_are_failures() {
        let mut claude = Claude::default();
        run(&mut claude, TURN);
        let events = run(
            &mut claude,
            &[
                r#"{"type":"system","subtype":"init","session_id":"s-1"}"#,
                r#"{"type":"assistant","message":{"id":"m3","model":"<synthetic>","content":[{"type":"text","text":"Invalid API key"}]}}"#,
                r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":401,"result":"Invalid API key","total_cost_usd":0.25}"#,
            ],
        );
        // The same session id again is not a new session.
        assert!(!events.iter().any(|e| matches!(e, EventKind::SessionStarted { .. })));
        match events.last().unwrap() {
            EventKind::TurnCompleted {
                status,
                error: Some(error),
                cost_usd,
                ..
            } => {
                assert_eq!(*status, TurnOutcome::Failed);
                assert_eq!(error.http_status, Some(401));
                assert_eq!(error.kind, "api_error");
                assert!(
                    error
                        .message
                        .starts_with("Invalid API key (hint: the model's API refused the key")
                );
                assert_eq!(*cost_usd, Some(0.0));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refused_key_interrupts_claudes_retries_and_fails_the_turn_with_the_hint() {
        let mut claude = Claude::default();
        run(&mut claude, TURN);
        let retry = r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":500,"error_status":401,"error":"authentication_failed"}"#;
        let out = claude.line(retry);
        assert!(out.events.is_empty(), "{out:?}");
        let interrupt: Value = serde_json::from_str(&out.replies[0]).unwrap();
        assert_eq!(interrupt["request"]["subtype"], "interrupt");
        // Asked once: the retries that still come before the interrupt lands ask nothing more.
        assert!(claude.line(retry).replies.is_empty());
        let events = run(
            &mut claude,
            &[
                r#"{"type":"result","subtype":"error_during_execution","is_error":true,"terminal_reason":"aborted_streaming","result":""}"#,
            ],
        );
        match events.as_slice() {
            [
                EventKind::TurnCompleted {
                    status: TurnOutcome::Failed,
                    error: Some(error),
                    ..
                },
            ] => {
                assert_eq!(error.http_status, Some(401));
                assert_eq!(error.kind, "api_error");
                assert!(error.message.contains("authentication_failed"), "{}", error.message);
                assert!(
                    error.message.contains("hint: the model's API refused the key"),
                    "{}",
                    error.message
                );
                assert!(error.message.contains("x-api-key"), "{}", error.message);
            }
            other => panic!("{other:?}"),
        }
        // The next turn is on its own again: another status is a retry like any.
        let out = claude.line(
            r#"{"type":"system","subtype":"api_retry","attempt":1,"retry_delay_ms":500,"error_status":529,"error":"overloaded"}"#,
        );
        assert!(out.replies.is_empty());
        assert!(matches!(
            out.events.as_slice(),
            [EventKind::TurnStatus {
                http_status: Some(529),
                ..
            }]
        ));
        let events = run(
            &mut claude,
            &[
                r#"{"type":"result","subtype":"error_during_execution","is_error":true,"terminal_reason":"aborted_streaming"}"#,
            ],
        );
        assert!(matches!(
            events.as_slice(),
            [EventKind::TurnCompleted {
                status: TurnOutcome::Interrupted,
                ..
            }]
        ));
    }

    #[test]
    fn an_interrupted_turn_and_permission_requests() {
        let mut claude = Claude::default();
        let events = run(
            &mut claude,
            &[
                r#"{"type":"result","subtype":"error_during_execution","is_error":true,"terminal_reason":"aborted_streaming"}"#,
            ],
        );
        assert!(matches!(
            events.as_slice(),
            [EventKind::TurnCompleted {
                status: TurnOutcome::Interrupted,
                ..
            }]
        ));
        let out = claude.line(
            r#"{"type":"control_request","request_id":"r1","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"ls"}}}"#,
        );
        let reply: Value = serde_json::from_str(&out.replies[0]).unwrap();
        assert_eq!(reply["response"]["request_id"], "r1");
        assert_eq!(reply["response"]["response"]["behavior"], "allow");
        assert_eq!(reply["response"]["response"]["updatedInput"]["command"], "ls");
        assert!(claude.line("not json").events.is_empty());
    }

    #[test]
    fn the_command_line_resumes_and_applies_model_and_prompt() {
        let agent: Agent = serde_json::from_value(json!({
            "id": uuid::Uuid::nil(), "name": "a", "harness_id": "claude-agent-sdk", "supports_tui": false,
            "command": null, "repo_url": null, "branch": "main", "prompt": "Be brief.", "model": "claude-x",
            "env": {}, "credentials": [], "env_var_hosts": {}, "allow_out": [], "deny_out": [],
            "created_at": "", "updated_at": ""
        }))
        .unwrap();
        let argv = Claude::default().argv(&agent, Some("s-1"));
        assert_eq!(argv[0], "env");
        assert!(argv.contains(&"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1".to_owned()));
        let at = |flag: &str| argv.iter().position(|a| a == flag).map(|i| argv[i + 1].as_str());
        assert_eq!(at("--resume"), Some("s-1"));
        assert_eq!(at("--model"), Some("claude-x"));
        assert_eq!(at("--append-system-prompt"), Some("Be brief."));
        assert_eq!(at("--input-format"), Some("stream-json"));
        let turn: Value = serde_json::from_str(&Claude::default().user_turn("hi")[0]).unwrap();
        assert_eq!(turn["message"]["content"], "hi");
    }
}
