//! The `codex-app-server` harness: Codex driven through `codex app-server`, JSON-RPC 2.0 over
//! stdio (one message per line, the `"jsonrpc"` member left out, as the server does).
//!
//! The first user turn opens the connection: `initialize`, the `initialized` notification, then
//! `thread/start` (or `thread/resume` with the thread id kept from before). The turn itself,
//! `turn/start`, waits for the thread's id and goes out as a reply to that response. Items
//! (`agentMessage`, `reasoning`, `commandExecution`, `fileChange`, `mcpToolCall`) map onto parts,
//! `item/agentMessage/delta` and the reasoning deltas onto deltas, `thread/tokenUsage/updated`
//! (`last`) onto the turn's usage, and `turn/completed` closes the turn. Approval requests are
//! accepted (the sandbox is the boundary; threads run with `approvalPolicy: never` and Codex's own
//! sandbox off anyway); an abort is `turn/interrupt`.

use serde_json::{Value, json};

use super::{Driver, Output, command_line, unauthorized};
use crate::wire::api::Agent;
use crate::wire::messages::{
    CacheTokens, DeltaField, EventKind, Part, Tokens, ToolState, ToolStatus, TurnError, TurnOutcome,
};

/// The tool's program.
pub const PROGRAM: &str = "codex";
/// The harness this driver runs.
const HARNESS: &str = "codex-app-server";

#[derive(Debug, Default)]
pub struct Codex {
    next_id: u64,
    /// The thread to resume, from the command line.
    resume: Option<String>,
    model: Option<String>,
    prompt: Option<String>,
    /// The handshake went out.
    opened: bool,
    /// The id of the `thread/start` or `thread/resume` request in flight.
    thread_request: Option<u64>,
    /// Whether that request was a resume (a failed one falls back to a new thread).
    resuming: bool,
    thread: Option<String>,
    /// A user turn waiting for the thread.
    pending: Option<String>,
    /// The id of the `turn/start` request in flight.
    turn_request: Option<u64>,
    turn: Option<String>,
    usage: Option<Tokens>,
    last_error: Option<String>,
}

impl Codex {
    fn request(&mut self, method: &str, params: Value) -> (u64, String) {
        self.next_id += 1;
        let id = self.next_id;
        (id, json!({"id": id, "method": method, "params": params}).to_string())
    }

    fn open_thread(&mut self) -> String {
        let (method, params) = match self.resume.clone() {
            Some(thread) => ("thread/resume", json!({"threadId": thread})),
            None => {
                let mut params = json!({"approvalPolicy": "never", "sandbox": "danger-full-access"});
                if let Some(model) = &self.model {
                    params["model"] = json!(model);
                }
                if let Some(prompt) = &self.prompt {
                    params["developerInstructions"] = json!(prompt);
                }
                ("thread/start", params)
            }
        };
        self.resuming = method == "thread/resume";
        let (id, line) = self.request(method, params);
        self.thread_request = Some(id);
        line
    }

    fn start_turn(&mut self, text: &str) -> String {
        let thread = self.thread.clone().unwrap_or_default();
        let (id, line) = self.request(
            "turn/start",
            json!({"threadId": thread, "input": [{"type": "text", "text": text}]}),
        );
        self.turn_request = Some(id);
        self.usage = None;
        self.last_error = None;
        line
    }

    fn failed(&mut self, message: String) -> EventKind {
        self.pending = None;
        EventKind::TurnCompleted {
            status: TurnOutcome::Failed,
            error: Some(TurnError {
                kind: "agent_error".to_owned(),
                message,
                http_status: None,
            }),
            usage: None,
            cost_usd: None,
        }
    }

    fn response(&mut self, id: u64, value: &Value, out: &mut Output) {
        let error = value
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if Some(id) == self.thread_request {
            self.thread_request = None;
            if let Some(error) = error {
                if self.resuming {
                    // The thread is gone (e.g. a new sandbox): a new one, the turn still waiting.
                    self.resume = None;
                    let line = self.open_thread();
                    out.replies.push(line);
                } else {
                    out.events
                        .push(self.failed(format!("codex could not start a thread: {error}")));
                }
                return;
            }
            let Some(thread) = value.pointer("/result/thread/id").and_then(Value::as_str) else {
                out.events
                    .push(self.failed("codex answered without a thread id".to_owned()));
                return;
            };
            self.thread = Some(thread.to_owned());
            out.events.push(EventKind::SessionStarted {
                native_session_id: thread.to_owned(),
                model: value
                    .pointer("/result/model")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| self.model.clone()),
                cwd: value.pointer("/result/cwd").and_then(Value::as_str).map(str::to_owned),
            });
            if let Some(text) = self.pending.take() {
                let line = self.start_turn(&text);
                out.replies.push(line);
            }
        } else if Some(id) == self.turn_request {
            self.turn_request = None;
            match error {
                Some(error) => out.events.push(self.failed(format!("codex refused the turn: {error}"))),
                None => {
                    if let Some(turn) = value.pointer("/result/turn/id").and_then(Value::as_str) {
                        self.turn = Some(turn.to_owned());
                    }
                }
            }
        }
    }

    /// A request the server makes of its client.
    fn server_request(&mut self, id: &Value, method: &str, out: &mut Output) {
        let reply = if method.ends_with("/requestApproval") {
            json!({"id": id, "result": {"decision": "accept"}})
        } else {
            json!({"id": id, "error": {"code": -32601, "message": format!("lap does not answer `{method}`")}})
        };
        out.replies.push(reply.to_string());
    }

    fn notification(&mut self, method: &str, params: &Value, out: &mut Output) {
        match method {
            "turn/started" => {
                if let Some(turn) = params.pointer("/turn/id").and_then(Value::as_str) {
                    self.turn = Some(turn.to_owned());
                }
            }
            "item/started" | "item/completed" => {
                let Some(item) = params.get("item") else { return };
                let completed = method == "item/completed";
                if let Some(part) = part_of(item, completed) {
                    out.events.push(if completed {
                        EventKind::ItemCompleted { item: part }
                    } else {
                        EventKind::ItemStarted { item: part }
                    });
                }
            }
            "item/agentMessage/delta" | "item/reasoning/summaryTextDelta" | "item/reasoning/textDelta" => {
                let (Some(item_id), Some(delta)) = (
                    params.get("itemId").and_then(Value::as_str),
                    params.get("delta").and_then(Value::as_str),
                ) else {
                    return;
                };
                let field = if method == "item/agentMessage/delta" {
                    DeltaField::Text
                } else {
                    DeltaField::Reasoning
                };
                out.events.push(EventKind::ItemDelta {
                    item_id: item_id.to_owned(),
                    field,
                    delta: delta.to_owned(),
                });
            }
            "thread/tokenUsage/updated" => {
                if let Some(last) = params.pointer("/tokenUsage/last") {
                    let n = |key: &str| last.get(key).and_then(Value::as_u64).unwrap_or(0);
                    self.usage = Some(Tokens {
                        input: n("inputTokens"),
                        output: n("outputTokens"),
                        reasoning: n("reasoningOutputTokens"),
                        cache: CacheTokens {
                            read: n("cachedInputTokens"),
                            write: 0,
                        },
                    });
                }
            }
            "error" => {
                self.last_error = params
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if params.get("willRetry").and_then(Value::as_bool) == Some(true) {
                    out.events.push(EventKind::TurnStatus {
                        status: "retrying".to_owned(),
                        attempt: None,
                        delay_ms: None,
                        http_status: None,
                    });
                }
            }
            "turn/completed" => {
                let turn = params.get("turn").cloned().unwrap_or_default();
                let status = match turn.get("status").and_then(Value::as_str) {
                    Some("completed") => TurnOutcome::Completed,
                    Some("interrupted") => TurnOutcome::Interrupted,
                    _ => TurnOutcome::Failed,
                };
                let error = (status != TurnOutcome::Completed).then(|| {
                    let message = turn
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .or_else(|| self.last_error.take())
                        .unwrap_or_else(|| format!("the turn ended {}", status.finish()));
                    let status_code = turn
                        .pointer("/error/codexErrorInfo/responseStreamDisconnected/httpStatusCode")
                        .or_else(|| turn.pointer("/error/codexErrorInfo/httpConnectionFailed/httpStatusCode"))
                        .and_then(Value::as_u64)
                        .and_then(|c| u16::try_from(c).ok());
                    let (message, http_status) = unauthorized(HARNESS, message, status_code);
                    TurnError {
                        kind: if status == TurnOutcome::Interrupted {
                            "aborted".to_owned()
                        } else {
                            "agent_error".to_owned()
                        },
                        message,
                        http_status,
                    }
                });
                self.turn = None;
                out.events.push(EventKind::TurnCompleted {
                    status,
                    error,
                    usage: self.usage.take(),
                    cost_usd: None,
                });
            }
            _ => {}
        }
    }
}

impl Driver for Codex {
    fn argv(&mut self, agent: &Agent, resume: Option<&str>) -> Vec<String> {
        self.resume = resume.map(str::to_owned);
        self.model = agent.model.clone().filter(|m| !m.is_empty());
        self.prompt = agent.prompt.clone().filter(|p| !p.trim().is_empty());
        command_line(agent, PROGRAM, vec!["app-server".to_owned()])
    }

    fn user_turn(&mut self, text: &str) -> Vec<String> {
        if self.thread.is_some() {
            return vec![self.start_turn(text)];
        }
        self.pending = Some(text.to_owned());
        if self.opened {
            return Vec::new();
        }
        self.opened = true;
        let (_, initialize) = self.request(
            "initialize",
            json!({"clientInfo": {"name": "lap", "title": "lap", "version": env!("CARGO_PKG_VERSION")}}),
        );
        let initialized = json!({"method": "initialized"}).to_string();
        vec![initialize, initialized, self.open_thread()]
    }

    fn interrupt(&mut self) -> Option<String> {
        let (thread, turn) = (self.thread.clone()?, self.turn.clone()?);
        Some(
            self.request("turn/interrupt", json!({"threadId": thread, "turnId": turn}))
                .1,
        )
    }

    fn line(&mut self, line: &str) -> Output {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            return Output::default();
        };
        let mut out = Output::default();
        match (value.get("id"), value.get("method").and_then(Value::as_str)) {
            (Some(id), Some(method)) => self.server_request(id, method, &mut out),
            (Some(id), None) => {
                if let Some(id) = id.as_u64() {
                    self.response(id, &value, &mut out);
                }
            }
            (None, Some(method)) => {
                let params = value.get("params").cloned().unwrap_or_default();
                self.notification(method, &params, &mut out);
            }
            (None, None) => {}
        }
        out
    }
}

/// The part an item becomes (`None`: not shown, e.g. the user's own message).
fn part_of(item: &Value, completed: bool) -> Option<Part> {
    let id = item.get("id").and_then(Value::as_str)?.to_owned();
    let text = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let joined = |key: &str| {
        item.get(key)
            .and_then(Value::as_array)
            .map(|parts| parts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    };
    let tool = |tool: String, input: Value, output: Option<String>| {
        let status = match item.get("status").and_then(Value::as_str) {
            _ if !completed => ToolStatus::Running,
            Some("completed") => ToolStatus::Completed,
            _ => ToolStatus::Error,
        };
        let failed = status == ToolStatus::Error;
        Part::Tool {
            id: id.clone(),
            tool,
            call_id: id.clone(),
            state: ToolState {
                status,
                input,
                output: if failed { None } else { output.clone() },
                error: if failed {
                    Some(output.unwrap_or_else(|| "the tool call failed".to_owned()))
                } else {
                    None
                },
            },
        }
    };
    match item.get("type").and_then(Value::as_str)? {
        "agentMessage" => Some(Part::Text {
            id: id.clone(),
            text: if completed { text("text") } else { String::new() },
        }),
        "reasoning" => {
            let summary = joined("summary");
            let text = if summary.is_empty() { joined("content") } else { summary };
            Some(Part::Reasoning {
                id: id.clone(),
                text: if completed { text } else { String::new() },
            })
        }
        "commandExecution" => Some(tool(
            "commandExecution".to_owned(),
            json!({"command": item.get("command"), "cwd": item.get("cwd")}),
            item.get("aggregatedOutput").and_then(Value::as_str).map(str::to_owned),
        )),
        "fileChange" => Some(tool(
            "fileChange".to_owned(),
            json!({"changes": item.get("changes")}),
            None,
        )),
        "mcpToolCall" => Some(tool(
            format!("{}.{}", text("server"), text("tool")),
            item.get("arguments").cloned().unwrap_or_default(),
            item.get("result").map(|r| r.to_string()),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::messages::{MessageBuilder, MessageInfo, MessageTime, Role};

    fn agent() -> Agent {
        serde_json::from_value(json!({
            "id": uuid::Uuid::nil(), "name": "c", "harness_id": "codex-app-server", "supports_tui": false,
            "command": null, "repo_url": null, "branch": "main", "prompt": "Be brief.", "model": "gpt-x",
            "env": {}, "credentials": [], "env_var_hosts": {}, "allow_out": [], "deny_out": [],
            "created_at": "", "updated_at": ""
        }))
        .unwrap()
    }

    fn parse(line: &str) -> Value {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn the_handshake_then_a_turn_with_a_command_and_streamed_text() {
        let mut codex = Codex::default();
        let argv = codex.argv(&agent(), None);
        assert_eq!(&argv[argv.len() - 2..], ["codex", "app-server"]);
        let lines = codex.user_turn("list files");
        let methods: Vec<Value> = lines.iter().map(|l| parse(l)["method"].clone()).collect();
        assert_eq!(
            methods,
            [json!("initialize"), json!("initialized"), json!("thread/start")]
        );
        let start = parse(&lines[2]);
        assert_eq!(start["params"]["model"], "gpt-x");
        assert_eq!(start["params"]["approvalPolicy"], "never");
        assert_eq!(start["params"]["developerInstructions"], "Be brief.");

        let mut events = Vec::new();
        let mut feed = |codex: &mut Codex, line: Value| {
            let out = codex.line(&line.to_string());
            events.extend(out.events);
            out.replies
        };
        assert!(feed(&mut codex, json!({"id": 1, "result": {"userAgent": "codex"}})).is_empty());
        let replies = feed(
            &mut codex,
            json!({"id": start["id"], "result": {"thread": {"id": "thr_1"}, "model": "gpt-x"}}),
        );
        let turn = parse(&replies[0]);
        assert_eq!(turn["method"], "turn/start");
        assert_eq!(turn["params"]["threadId"], "thr_1");
        assert_eq!(turn["params"]["input"][0]["text"], "list files");
        feed(
            &mut codex,
            json!({"id": turn["id"], "result": {"turn": {"id": "turn_1", "status": "inProgress"}}}),
        );
        let approval = feed(
            &mut codex,
            json!({"id": 90, "method": "item/commandExecution/requestApproval", "params": {"itemId": "c1"}}),
        );
        assert_eq!(parse(&approval[0]), json!({"id": 90, "result": {"decision": "accept"}}));
        for line in [
            json!({"method": "item/started", "params": {"item": {"type": "userMessage", "id": "u1", "content": []}}}),
            json!({"method": "item/started", "params": {"item": {"type": "commandExecution", "id": "c1", "command": "ls", "cwd": "/w", "status": "inProgress"}}}),
            json!({"method": "item/completed", "params": {"item": {"type": "commandExecution", "id": "c1", "command": "ls", "cwd": "/w", "status": "completed", "aggregatedOutput": "README\n", "exitCode": 0}}}),
            json!({"method": "item/started", "params": {"item": {"type": "agentMessage", "id": "a1", "text": ""}}}),
            json!({"method": "item/agentMessage/delta", "params": {"itemId": "a1", "delta": "One "}}),
            json!({"method": "item/agentMessage/delta", "params": {"itemId": "a1", "delta": "file."}}),
            json!({"method": "item/completed", "params": {"item": {"type": "agentMessage", "id": "a1", "text": "One file."}}}),
            json!({"method": "thread/tokenUsage/updated", "params": {"tokenUsage": {"last": {"inputTokens": 7, "outputTokens": 3, "cachedInputTokens": 2}}}}),
            json!({"method": "turn/completed", "params": {"turn": {"id": "turn_1", "status": "completed", "items": []}}}),
        ] {
            feed(&mut codex, line);
        }
        assert!(
            matches!(&events[0], EventKind::SessionStarted { native_session_id, .. } if native_session_id == "thr_1")
        );
        let mut builder = MessageBuilder::new(MessageInfo {
            id: "m".into(),
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
        });
        events.iter().for_each(|e| builder.apply(e));
        let message = builder.finish(1);
        assert_eq!(message.text(), "One file.");
        assert_eq!(message.parts.len(), 2);
        match &message.parts[0] {
            Part::Tool { tool, state, .. } => {
                assert_eq!(tool, "commandExecution");
                assert_eq!(state.status, ToolStatus::Completed);
                assert_eq!(state.output.as_deref(), Some("README\n"));
                assert_eq!(state.input["command"], "ls");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(message.info.finish.as_deref(), Some("stop"));
        assert_eq!(message.info.tokens.unwrap().cache.read, 2);

        // The next turn goes straight out; an interrupt names the thread and the turn.
        let next = codex.user_turn("again");
        assert_eq!(parse(&next[0])["method"], "turn/start");
        codex.line(&json!({"method": "turn/started", "params": {"turn": {"id": "turn_2"}}}).to_string());
        let interrupt = parse(&codex.interrupt().unwrap());
        assert_eq!(interrupt["method"], "turn/interrupt");
        assert_eq!(interrupt["params"], json!({"threadId": "thr_1", "turnId": "turn_2"}));
        let out = codex.line(
            &json!({"method": "turn/completed", "params": {"turn": {"id": "turn_2", "status": "interrupted"}}})
                .to_string(),
        );
        assert!(matches!(
            out.events.as_slice(),
            [EventKind::TurnCompleted {
                status: TurnOutcome::Interrupted,
                ..
            }]
        ));
    }

    #[test]
    fn a_401_from_the_model_api_names_codexs_sign_in_and_the_credentials_binding() {
        let mut codex = Codex::default();
        codex.argv(&agent(), None);
        let out = codex.line(
            &json!({"method": "turn/completed", "params": {"turn": {"id": "t", "status": "failed", "error": {
                "message": "unexpected status 401 Unauthorized: You didn't provide an API key."}}}})
            .to_string(),
        );
        let [EventKind::TurnCompleted { error: Some(error), .. }] = out.events.as_slice() else {
            panic!("{:?}", out.events)
        };
        assert_eq!(error.http_status, Some(401));
        assert!(
            error.message.starts_with("unexpected status 401 Unauthorized"),
            "{}",
            error.message
        );
        assert!(error.message.contains("auth.json"), "{}", error.message);
        assert!(error.message.contains("lap agents show"), "{}", error.message);
    }

    #[test]
    fn a_thread_that_cannot_be_resumed_is_replaced_by_a_new_one() {
        let mut codex = Codex::default();
        codex.argv(&agent(), Some("thr_old"));
        let lines = codex.user_turn("hi");
        let resume = parse(&lines[2]);
        assert_eq!(resume["method"], "thread/resume");
        assert_eq!(resume["params"]["threadId"], "thr_old");
        let out = codex.line(&json!({"id": resume["id"], "error": {"code": -1, "message": "no rollout"}}).to_string());
        assert!(out.events.is_empty());
        assert_eq!(parse(&out.replies[0])["method"], "thread/start");
        let failed = codex
            .line(&json!({"id": parse(&out.replies[0])["id"], "error": {"code": -1, "message": "boom"}}).to_string());
        assert!(matches!(
            failed.events.as_slice(),
            [EventKind::TurnCompleted {
                status: TurnOutcome::Failed,
                ..
            }]
        ));
    }
}
