//! A fake Anthropic Messages API that echoes, for the tests that drive the real `claude` CLI
//! (npm `@anthropic-ai/claude-code`, scripts/tool-versions) through lap's `claude-agent-sdk`
//! harness to check lap's own message API: replies, streaming, history, abort, resume, the chat
//! UI. It is served by [`super::vendor`] on `api.anthropic.com:443` (a loopback address, TLS from a
//! test CA, reached through the vault), and answers as Anthropic documents `POST /v1/messages`:
//! with `stream: true` an SSE stream (`message_start`, `content_block_start`, `ping`,
//! `content_block_delta`s, `content_block_stop`, `message_delta` with `stop_reason` and `usage`,
//! `message_stop`), else one `message` object; a missing or wrong `x-api-key` gets 401 with the
//! error object, another path 404, an overloaded model 529 `overloaded_error`.
//!
//! What it says is a function of what the user said last (the CLI's own `<system-reminder>` texts
//! aside), so a test can read lap's replies as the tool's. A marker counts only at the start, so a
//! conversation replayed into a fresh sandbox (which quotes earlier messages) is simply echoed:
//! - anything else: `echo: TEXT`, streamed in two pieces;
//! - text starting with [`HANG`]: the start of a reply, [`HANG_FIRST`], and then nothing, the response
//!   held open (a model that stalls), until the CLI gives up the request (an abort);
//! - text starting with [`RUN_PWD`]: a `Bash` tool call of `pwd`; the request that carries its result
//!   gets `ran: OUTPUT`;
//! - text starting with [`RUN_LAP_MCP`] `SESSION COMMAND`: a call of lap's MCP tool `run_command`
//!   ([`LAP_MCP_TOOL`]) with that session and shell command; the request that carries its result
//!   gets `ran: OUTPUT` (tests/it/mcp.rs);
//! - text starting with [`OVERLOADED`]: 529 to the first [`OVERLOADS`] requests of that text (the CLI
//!   retries them, backing off), then the echo.
//!
//! Its pieces (the error object, the SSE events, the readers of a request) are public for
//! tests/it/claude_e2e.rs, whose own fake answers with fixed words.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::require;
use super::vendor::{Answer, Reply, Seen, World, tool_path_env};

pub const HOST: &str = "api.anthropic.com";
pub const REAL_KEY: &str = "sk-ant-api03-TheRealKeyThatOnlyTheVaultHolds-echo-0123456789";
pub const MODEL: &str = "claude-fake-1";
/// A user message starting with this gets [`HANG_FIRST`], then a response held open.
pub const HANG: &str = "HOLD-THE-LINE";
/// The part of a held reply that is sent.
pub const HANG_FIRST: &str = "working";
/// A user message starting with this gets a `Bash` call of `pwd`, and then `ran: OUTPUT`.
pub const RUN_PWD: &str = "RUN-PWD";
/// A user message `RUN-LAP-MCP SESSION COMMAND` gets a call of [`LAP_MCP_TOOL`], and then `ran: OUTPUT`.
pub const RUN_LAP_MCP: &str = "RUN-LAP-MCP";
/// lap's `run_command` tool as Claude Code names it when the MCP server is called `lap`.
pub const LAP_MCP_TOOL: &str = "mcp__lap__run_command";
/// A user message starting with this is refused with 529 [`OVERLOADS`] times (each text on its own),
/// then answered.
pub const OVERLOADED: &str = "OVERLOADED-AT-FIRST";
pub const OVERLOADS: usize = 2;
/// `usage.output_tokens` of every streamed reply.
pub const OUTPUT_TOKENS: u64 = 7;
/// How long the real CLI may take to start or answer (a large program, started cold).
pub const CLAUDE_WAIT: Duration = Duration::from_secs(60);

/// What the fake answers to `said`.
pub fn echo(said: &str) -> String {
    format!("echo: {said}")
}

/// A `lap serve` whose vault sends `api.anthropic.com` to this fake; `None` (the test skipped) when
/// `claude` is not installed outside a strict run.
pub fn start() -> Option<World> {
    if !require("claude", "npm install -g @anthropic-ai/claude-code") {
        return None;
    }
    let overloaded = Arc::new(Mutex::new(HashMap::new()));
    Some(World::start(HOST, move |seen: &Seen| api(seen, &overloaded)))
}

/// The fake's answers as a handler of [`super::vendor::serve_plain`].
pub fn handler() -> super::vendor::Handler {
    let overloaded = Arc::new(Mutex::new(HashMap::new()));
    Arc::new(move |seen: &Seen| api(seen, &overloaded))
}

/// Creates agent `name` on the `claude-agent-sdk` harness with [`MODEL`], its `ANTHROPIC_API_KEY`
/// the real key (bound to api.anthropic.com by the preset), allowed out to that host only.
pub fn agent(world: &World, name: &str) {
    let path = tool_path_env();
    let mut args = vec![
        "agents",
        "create",
        name,
        "--harness",
        "claude-agent-sdk",
        "--model",
        MODEL,
        "--credential",
        "ANTHROPIC_API_KEY",
        "--allow-out",
        HOST,
    ];
    if let Some(path) = &path {
        args.extend(["--env", path]);
    }
    world.home.lap().env("ANTHROPIC_API_KEY", REAL_KEY).run(args).success();
}

/// Sends `signal` (`KILL`, `STOP`…) to the `claude` processes in session `id`'s sandbox (the
/// harness starts them with `--input-format stream-json`): a crash or a hang of the real tool, on
/// cue. Returns how many it signalled.
pub fn signal_claude(home: &super::Home, id: &str, signal: &str) -> usize {
    let script = format!(
        "n=0; for d in /proc/[0-9]*; do \
           if tr '\\0' ' ' < $d/cmdline 2>/dev/null | grep -q -- '--input-forma[t] stream-json'; then \
             kill -{signal} ${{d#/proc/}} && n=$((n+1)); \
           fi; \
         done; echo SIGNALLED=$n"
    );
    let out = super::lap(home, ["exec", id, "--", "sh", "-c", &script]).success();
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("SIGNALLED="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{out}"))
}

/// The streamed model requests (`POST /v1/messages`, `stream: true`) the fake saw, as JSON.
pub fn model_requests(world: &World) -> Vec<Value> {
    world
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path.split('?').next() == Some("/v1/messages"))
        .map(|s| s.json())
        .filter(|body| body["stream"] == true)
        .collect()
}

/// What the fake saw, and the server's log, for a failure message.
pub fn context(world: &World) -> String {
    let seen: Vec<(String, String, String)> = world
        .seen()
        .iter()
        .map(|s| {
            (
                s.path.clone(),
                s.header("x-api-key").unwrap_or("-").to_owned(),
                last_user_text(&s.json()),
            )
        })
        .collect();
    format!(
        "the fake Anthropic API saw: {seen:#?}\nserver log:\n{}",
        world.server.log()
    )
}

/// Anthropic's error object, with `status`.
pub fn error(status: u16, kind: &str, message: &str) -> Answer {
    let error = json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"});
    (status, "application/json", error.to_string())
}

/// How many times each text was refused as overloaded.
type Overloads = Mutex<HashMap<String, usize>>;

fn api(request: &Seen, overloaded: &Overloads) -> Reply {
    let path = request.path.split('?').next().unwrap_or("");
    if request.method != "POST" || path != "/v1/messages" {
        return error(404, "not_found_error", &format!("{} {path} not found", request.method)).into();
    }
    if request.header("x-api-key") != Some(REAL_KEY) {
        return error(401, "authentication_error", "invalid x-api-key").into();
    }
    let body = request.json();
    let model = body["model"].as_str().unwrap_or(MODEL).to_owned();
    if body["stream"] != true {
        let message = json!({
            "id": "msg_fake_whole", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "a whole answer"}], "stop_reason": "end_turn",
            "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": OUTPUT_TOKENS}
        });
        return (200, "application/json", message.to_string()).into();
    }
    if let Some(output) = tool_result(&body) {
        return streamed_text(&model, &[&format!("ran: {}", output.trim())]);
    }
    let said = last_user_text(&body);
    if said.starts_with(RUN_PWD) {
        return streamed_tool_call(&model, "toolu_fake_pwd", "Bash", json!({"command": "pwd"}));
    }
    if let Some(rest) = said.strip_prefix(RUN_LAP_MCP) {
        let (session, command) = rest.trim().split_once(' ').unwrap_or((rest.trim(), "true"));
        let input = json!({"session_id": session, "command": command});
        return streamed_tool_call(&model, "toolu_fake_lap_mcp", LAP_MCP_TOOL, input);
    }
    if said.starts_with(HANG) {
        let events = vec![
            message_start(&model),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": HANG_FIRST}}),
        ];
        return Reply {
            hang: true,
            ..streamed(events)
        };
    }
    if said.starts_with(OVERLOADED) {
        let mut overloaded = overloaded.lock().unwrap();
        let refused = overloaded.entry(said.clone()).or_insert(0);
        if *refused < OVERLOADS {
            *refused += 1;
            return error(529, "overloaded_error", "Overloaded").into();
        }
    }
    let reply = echo(&said);
    let half = reply
        .char_indices()
        .nth(reply.chars().count() / 2)
        .map_or(0, |(i, _)| i);
    streamed_text(&model, &[&reply[..half], &reply[half..]])
}

/// The texts of a message's `content` (a string, or blocks with `text`).
pub fn texts_of(content: &Value) -> Vec<String> {
    match content {
        Value::String(text) => vec![text.clone()],
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Every text of the request's messages, user's and assistant's, in order.
pub fn conversation(request: &Value) -> Vec<String> {
    request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| texts_of(&m["content"]))
        .collect()
}

/// What the user said last: the last text of the last user message that is not one of the CLI's
/// own `<system-reminder>`s.
pub fn last_user_text(request: &Value) -> String {
    request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .filter(|m| m["role"] == "user")
        .flat_map(|m| texts_of(&m["content"]).into_iter().rev())
        .find(|t| !t.trim_start().starts_with("<system-reminder>"))
        .unwrap_or_default()
}

/// The output of the tool call the request answers, if its last block (the CLI's
/// `<system-reminder>` texts aside) is a `tool_result`.
pub fn tool_result(request: &Value) -> Option<String> {
    let last = request["messages"].as_array()?.last()?;
    let block = last["content"].as_array()?.iter().rev().find(|b| {
        b["text"]
            .as_str()
            .is_none_or(|t| !t.trim_start().starts_with("<system-reminder>"))
    })?;
    (block["type"] == "tool_result").then(|| texts_of(&block["content"]).join("\n"))
}

/// The `message_start` event of a streamed reply.
pub fn message_start(model: &str) -> Value {
    json!({"type": "message_start", "message": {
        "id": "msg_fake_stream", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 1}}})
}

/// The events of a streamed reply, one event a piece as the API flushes them.
pub fn streamed(events: Vec<Value>) -> Reply {
    Reply {
        status: 200,
        content_type: "text/event-stream; charset=utf-8",
        pieces: events
            .iter()
            .map(|e| {
                let kind = e["type"].as_str().unwrap_or_default();
                (Duration::ZERO, format!("event: {kind}\ndata: {e}\n\n"))
            })
            .collect(),
        hang: false,
        silent: false,
    }
}

/// A text reply streamed in `pieces`.
pub fn streamed_text(model: &str, pieces: &[&str]) -> Reply {
    let mut events = vec![
        message_start(model),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
    ];
    for piece in pieces {
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}));
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": OUTPUT_TOKENS}}),
    );
    events.push(json!({"type": "message_stop"}));
    streamed(events)
}

/// A streamed `tool_use` `id` of `name` with `input` (its JSON in one `input_json_delta`).
pub fn streamed_tool_call(model: &str, id: &str, name: &str, input: Value) -> Reply {
    streamed(vec![
        message_start(model),
        json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
        json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": OUTPUT_TOKENS}}),
        json!({"type": "message_stop"}),
    ])
}
