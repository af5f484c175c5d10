//! A fake OpenAI API on this machine's loopback, for the end-to-end tests of the real `codex` and
//! `opencode` CLIs (reached through the vault, which resolves `api.openai.com:443` to it).
//!
//! It listens on port 443 of a loopback address of its own (127.0.0.x, the first free one), with
//! TLS from a test CA, and behaves as OpenAI documents the parts these tools use:
//! - the Responses API, `POST /v1/responses`: streamed (`stream: true`, SSE whose `event:` is the
//!   event's `type`, each with a `sequence_number`: `response.created`, `response.in_progress`,
//!   `response.output_item.added`, `response.content_part.added`, `response.output_text.delta`…,
//!   `response.output_text.done`, `response.content_part.done`, `response.output_item.done`,
//!   `response.completed` with `usage`), or one `response` object;
//! - its WebSocket mode (`GET /v1/responses` with `Upgrade: websocket`) is not served: the upgrade
//!   is refused with 426 Upgrade Required, as a server without it does, and codex then falls back
//!   to `POST` at once (with a 404 it retries the upgrade 7 times first);
//! - Chat Completions, `POST /v1/chat/completions` (`stream: true`: `chat.completion.chunk`s, a
//!   usage chunk, `data: [DONE]`), and `GET /v1/models`;
//! - 401 with OpenAI's error JSON for a missing or wrong key (`invalid_api_key`), 404 for any
//!   other path.
//!
//! It answers only the real key, records what it saw ([`Seen`]: path, `Authorization`, model, the
//! texts of the input), and replies with [`REPLY`]. A user message containing [`SLOW`] gets a long
//! reply streamed one piece every [`SLOW_PIECE`], for the abort tests.

use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lap::vault::ca::CertificateAuthority;
use serde_json::{Value, json};

/// The fixed reply, in the pieces it is streamed in.
pub const REPLY: &[&str] = &["Hello from the ", "fake OpenAI API", ", through the vault."];
/// A user message containing this gets a slow reply (to be aborted).
pub const SLOW: &str = "TAKE-YOUR-TIME";
/// The slow reply's pieces and the pause before each.
pub const SLOW_PIECES: usize = 600;
pub const SLOW_PIECE: Duration = Duration::from_millis(100);
/// The first piece of the slow reply (the tests wait for it before they abort).
pub const SLOW_FIRST: &str = "Thinking slowly";
/// A user message containing this gets a function call that runs `pwd` (codex's `exec_command`,
/// opencode's `bash`, whichever the request offers); the call's output then gets the reply
/// `ran pwd: OUTPUT`.
pub const RUN_PWD: &str = "RUN-PWD";

/// What the fake saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub model: Option<String>,
    pub stream: bool,
    /// Every text of the user's messages in the request's `input` (Responses) or `messages` (Chat
    /// Completions), in order.
    pub texts: Vec<String>,
    /// The names of the function tools the request offered.
    pub tools: Vec<String>,
    /// The output of the function call the request's `input` ends with, if it does.
    pub tool_output: Option<String>,
    pub status: u16,
}

/// A running fake; it stops with the test's runtime.
pub struct FakeOpenAi {
    /// The loopback address it listens on, port 443.
    pub addr: Ipv4Addr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeOpenAi {
    /// Starts the fake on the first free 127.0.0.x:443 (x from 20), answering `key` only.
    pub async fn start(ca: Arc<CertificateAuthority>, key: &'static str) -> Self {
        let (addr, listener, acceptor) = super::vendor::bind_443(20, "the fake OpenAI API", ca).await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, seen) = (acceptor.clone(), recorded.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(req, key, seen.clone()));
                    let Ok(stream) = acceptor.accept(tcp).await else { return };
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    /// What it saw so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The model requests (`POST /v1/responses` or `/v1/chat/completions`) it saw so far.
    pub fn turns(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "POST" && (s.path == "/v1/responses" || s.path == "/v1/chat/completions"))
            .collect()
    }

    /// `--vault-resolve` for `api.openai.com:443`.
    pub fn resolve(&self) -> String {
        format!("api.openai.com:443:{}", self.addr)
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn respond(status: u16, content_type: &str, body: String) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-request-id", "req_fake")
        .header("openai-version", "2020-10-01")
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap()
}

fn error(status: u16, message: &str, kind: &str, code: Value) -> hyper::Response<Body> {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    respond(status, "application/json", body.to_string())
}

/// How OpenAI shows a wrong key in its 401: the first 7 characters, `****`, the last 4.
fn masked(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 11 {
        return "****".to_owned();
    }
    let head: String = chars[..7].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    key: &'static str,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<hyper::Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let authorization = parts
        .headers
        .get("authorization")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let websocket = parts
        .headers
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let path = parts.uri.path().to_owned();
    let mut texts = Vec::new();
    collect_texts(request.get("input").or_else(|| request.get("messages")), &mut texts);
    let tools = request
        .get("tools")
        .and_then(Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| {
                    t.get("name")
                        .or_else(|| t.pointer("/function/name"))
                        .and_then(Value::as_str)
                })
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let tool_output = request
        .get("input")
        .and_then(Value::as_array)
        .and_then(|items| items.last())
        .filter(|item| item.get("type").and_then(Value::as_str) == Some("function_call_output"))
        .map(|item| match item.get("output") {
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        });
    let mut record = Seen {
        method: parts.method.to_string(),
        path: path.clone(),
        authorization: authorization.clone(),
        model: request.get("model").and_then(Value::as_str).map(str::to_owned),
        stream: request.get("stream").and_then(Value::as_bool).unwrap_or(false),
        texts,
        tools,
        tool_output,
        status: 0,
    };
    let response = route(&parts.method, &path, authorization.as_deref(), websocket, &record, key);
    record.status = response.status().as_u16();
    seen.lock().unwrap().push(record);
    Ok(response)
}

fn route(
    method: &hyper::Method,
    path: &str,
    authorization: Option<&str>,
    websocket: bool,
    seen: &Seen,
    key: &str,
) -> hyper::Response<Body> {
    match authorization.and_then(|a| a.strip_prefix("Bearer ")) {
        None => {
            return error(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header \
                 using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank \
                 username) if you're accessing the API from your browser and are prompted for a username and \
                 password. You can obtain an API key from https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                Value::Null,
            );
        }
        Some(given) if given != key => {
            let message = format!(
                "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                masked(given)
            );
            return error(401, &message, "invalid_request_error", json!("invalid_api_key"));
        }
        Some(_) => {}
    }
    let model = seen.model.clone().unwrap_or_else(|| "gpt-fake".to_owned());
    let slow = seen.texts.last().is_some_and(|t| t.contains(SLOW));
    let call = (seen.tool_output.is_none() && seen.texts.last().is_some_and(|t| t.contains(RUN_PWD)))
        .then(|| pwd_call(&seen.tools))
        .flatten();
    if let (Some(call), ("POST", "/v1/responses")) = (call, (method.as_str(), path)) {
        return sse(function_call_events(&model, call), false);
    }
    let reply = seen
        .tool_output
        .as_ref()
        .map(|output| format!("ran pwd: {}", pwd_of(output)));
    if let (Some(reply), ("POST", "/v1/responses")) = (reply, (method.as_str(), path)) {
        return sse(text_events(&model, vec![(Duration::ZERO, reply)]), false);
    }
    match (method.as_str(), path) {
        ("GET", "/v1/responses") if websocket => error(
            426,
            "WebSocket mode is not available here; use POST /v1/responses.",
            "invalid_request_error",
            json!("upgrade_required"),
        ),
        ("POST", "/v1/responses") if seen.stream => sse(responses_events(&model, slow), false),
        ("POST", "/v1/responses") => {
            let text: String = REPLY.concat();
            respond(
                200,
                "application/json",
                response_object(&model, "completed", &text).to_string(),
            )
        }
        ("POST", "/v1/chat/completions") if seen.stream => sse(chat_chunks(&model, slow), true),
        ("POST", "/v1/chat/completions") => {
            let body = json!({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY.concat(), "refusal": null},
                    "logprobs": null, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
            });
            respond(200, "application/json", body.to_string())
        }
        ("GET", "/v1/models") => {
            let models: Vec<Value> = ["gpt-fake-1", "gpt-fake-2"]
                .iter()
                .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "system"}))
                .collect();
            respond(
                200,
                "application/json",
                json!({"object": "list", "data": models}).to_string(),
            )
        }
        _ => error(
            404,
            &format!("Invalid URL ({method} {path})"),
            "invalid_request_error",
            Value::Null,
        ),
    }
}

/// The user's texts in a Responses `input` or a Chat Completions `messages` array (strings, or
/// content parts with `text`).
fn collect_texts(value: Option<&Value>, out: &mut Vec<String>) {
    match value {
        Some(Value::String(text)) => out.push(text.clone()),
        Some(Value::Array(items)) => {
            // The user's own words only (the tools' long instructions stay out of the record).
            for item in items
                .iter()
                .filter(|i| i.get("role").and_then(Value::as_str) == Some("user"))
            {
                match item.get("content") {
                    Some(Value::String(text)) => out.push(text.clone()),
                    Some(Value::Array(parts)) => out.extend(
                        parts
                            .iter()
                            .filter_map(|p| p.get("text").and_then(Value::as_str))
                            .map(str::to_owned),
                    ),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

fn response_object(model: &str, status: &str, text: &str) -> Value {
    let output = if text.is_empty() {
        json!([])
    } else {
        json!([{"id": "msg_fake", "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}])
    };
    let usage = if status == "completed" {
        json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 2}, "output_tokens": 9,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 21})
    } else {
        Value::Null
    };
    json!({
        "id": "resp_fake", "object": "response", "created_at": 1_700_000_000, "status": status,
        "error": null, "incomplete_details": null, "model": model, "output": output,
        "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "usage": usage,
    })
}

/// One streamed event: its pause before, and its `data`.
type Piece = (Duration, String);

/// The Responses API's events for the reply, each `event: TYPE` + `data: JSON`.
fn responses_events(model: &str, slow: bool) -> Vec<Piece> {
    text_events(model, reply_pieces(slow))
}

/// The function call that runs `pwd` with one of the offered tools: (name, arguments).
fn pwd_call(tools: &[String]) -> Option<(&'static str, Value)> {
    if tools.iter().any(|t| t == "exec_command") {
        Some(("exec_command", json!({"cmd": "pwd"})))
    } else if tools.iter().any(|t| t == "bash") {
        Some((
            "bash",
            json!({"command": "pwd", "description": "Print the working directory"}),
        ))
    } else {
        None
    }
}

/// The directory a `pwd` call's output names (its first line that starts with `/`).
fn pwd_of(output: &str) -> String {
    let text = serde_json::from_str::<Value>(output)
        .ok()
        .and_then(|v| v.get("output").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| output.to_owned());
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with('/'))
        .unwrap_or(text.trim())
        .to_owned()
}

/// A streamed function call: `output_item.added` (arguments empty), the arguments' delta and done,
/// `output_item.done`, `response.completed` with the call as the output.
fn function_call_events(model: &str, (name, arguments): (&str, Value)) -> Vec<Piece> {
    let arguments = arguments.to_string();
    let mut seq = 0u64;
    let mut out = Vec::new();
    let mut event = |mut data: Value| {
        data["sequence_number"] = json!(seq);
        seq += 1;
        let kind = data["type"].as_str().unwrap_or_default().to_owned();
        out.push((Duration::ZERO, format!("event: {kind}\ndata: {data}\n\n")));
    };
    let item = |status: &str, args: &str| {
        json!({"id": "fc_fake", "type": "function_call", "status": status, "call_id": "call_fake_pwd",
            "name": name, "arguments": args})
    };
    event(json!({"type": "response.created", "response": response_object(model, "in_progress", "")}));
    event(json!({"type": "response.in_progress", "response": response_object(model, "in_progress", "")}));
    event(json!({"type": "response.output_item.added", "output_index": 0, "item": item("in_progress", "")}));
    event(
        json!({"type": "response.function_call_arguments.delta", "item_id": "fc_fake", "output_index": 0,
        "delta": arguments}),
    );
    event(
        json!({"type": "response.function_call_arguments.done", "item_id": "fc_fake", "output_index": 0,
        "arguments": arguments}),
    );
    event(json!({"type": "response.output_item.done", "output_index": 0, "item": item("completed", &arguments)}));
    let mut completed = response_object(model, "completed", "");
    completed["output"] = json!([item("completed", &arguments)]);
    event(json!({"type": "response.completed", "response": completed}));
    out
}

/// The Responses API's events for a text reply streamed in `pieces`.
fn text_events(model: &str, pieces: Vec<(Duration, String)>) -> Vec<Piece> {
    let text: String = pieces.iter().map(|(_, p)| p.as_str()).collect();
    let mut seq = 0u64;
    let mut out = Vec::new();
    let mut event = |pause: Duration, mut data: Value| {
        data["sequence_number"] = json!(seq);
        seq += 1;
        let kind = data["type"].as_str().unwrap_or_default().to_owned();
        out.push((pause, format!("event: {kind}\ndata: {data}\n\n")));
    };
    let zero = Duration::ZERO;
    let item =
        json!({"id": "msg_fake", "type": "message", "status": "in_progress", "role": "assistant", "content": []});
    let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
    event(
        zero,
        json!({"type": "response.created", "response": response_object(model, "in_progress", "")}),
    );
    event(
        zero,
        json!({"type": "response.in_progress", "response": response_object(model, "in_progress", "")}),
    );
    event(
        zero,
        json!({"type": "response.output_item.added", "output_index": 0, "item": item}),
    );
    event(
        zero,
        json!({"type": "response.content_part.added", "item_id": "msg_fake", "output_index": 0,
            "content_index": 0, "part": part("")}),
    );
    for (pause, delta) in &pieces {
        event(
            *pause,
            json!({"type": "response.output_text.delta", "item_id": "msg_fake", "output_index": 0,
                "content_index": 0, "delta": delta, "logprobs": []}),
        );
    }
    event(
        zero,
        json!({"type": "response.output_text.done", "item_id": "msg_fake", "output_index": 0,
            "content_index": 0, "text": text, "logprobs": []}),
    );
    event(
        zero,
        json!({"type": "response.content_part.done", "item_id": "msg_fake", "output_index": 0,
            "content_index": 0, "part": part(&text)}),
    );
    let done = json!({"id": "msg_fake", "type": "message", "status": "completed", "role": "assistant",
        "content": [part(&text)]});
    event(
        zero,
        json!({"type": "response.output_item.done", "output_index": 0, "item": done}),
    );
    event(
        zero,
        json!({"type": "response.completed", "response": response_object(model, "completed", &text)}),
    );
    out
}

/// Chat Completions chunks for the reply, `data: JSON` each, then the usage chunk and `[DONE]`.
fn chat_chunks(model: &str, slow: bool) -> Vec<Piece> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let data = |value: Value| format!("data: {value}\n\n");
    let zero = Duration::ZERO;
    let mut out = vec![(
        zero,
        data(chunk(json!({"role": "assistant", "content": ""}), Value::Null)),
    )];
    for (pause, piece) in reply_pieces(slow) {
        out.push((pause, data(chunk(json!({"content": piece}), Value::Null))));
    }
    out.push((zero, data(chunk(json!({}), json!("stop")))));
    let usage = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": model, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}});
    out.push((zero, data(usage)));
    out.push((zero, "data: [DONE]\n\n".to_owned()));
    out
}

fn reply_pieces(slow: bool) -> Vec<(Duration, String)> {
    if slow {
        std::iter::once((Duration::ZERO, SLOW_FIRST.to_owned()))
            .chain((1..SLOW_PIECES).map(|_| (SLOW_PIECE, ".".to_owned())))
            .collect()
    } else {
        REPLY.iter().map(|p| (Duration::ZERO, (*p).to_owned())).collect()
    }
}

/// A `text/event-stream` response written as its pieces come due (a client that goes away ends it).
fn sse(pieces: Vec<Piece>, _chat: bool) -> hyper::Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        for (pause, data) in pieces {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            if tx.send(Bytes::from(data)).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|data| (Ok::<_, Infallible>(Frame::data(data)), rx))
    });
    hyper::Response::builder()
        .status(200)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("x-request-id", "req_fake")
        .header("openai-version", "2020-10-01")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

/// `lap agents create` arguments `args`, plus `--env PATH=…` when `LAP_TEST_TOOL_PATH` names a
/// directory of tool versions to try (scripts/check-tools.sh), so the agent runs those.
pub fn with_tool_path(args: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    args.extend(
        super::vendor::tool_path_env()
            .into_iter()
            .flat_map(|path| ["--env".to_owned(), path]),
    );
    args
}

/// A `lap serve` (local backend) whose vault resolves `api.openai.com:443` to a [`FakeOpenAi`] and
/// trusts its CA; egress defaults to deny. Its sandboxes are deleted on drop.
pub struct World {
    /// Runs the fake API, for as long as the world lives.
    _rt: tokio::runtime::Runtime,
    pub home: super::Home,
    _dir: tempfile::TempDir,
    pub api: FakeOpenAi,
    pub server: super::TestServer,
}

impl World {
    /// `None` (after saying so) when `program` is missing and the run is not strict.
    pub fn start(program: &str, install: &str, key: &'static str) -> Option<Self> {
        if !super::require(program, install) {
            return None;
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let home = super::Home::new();
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("public-ca")).unwrap());
        let ca_file = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let api = rt.block_on(FakeOpenAi::start(ca, key));
        let resolve = api.resolve();
        let server = super::TestServer::start_local_with(
            &home,
            [
                "--vault-resolve",
                resolve.as_str(),
                "--vault-upstream-ca",
                ca_file.to_str().unwrap(),
                "--egress-default",
                "deny",
            ],
        );
        Some(Self {
            _rt: rt,
            home,
            _dir: dir,
            api,
            server,
        })
    }

    /// `lap ARGS…` in this world's home.
    pub fn lap<I, S>(&self, args: I) -> super::Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        super::lap(&self.home, args)
    }

    /// The id of the newest session.
    pub fn session(&self) -> String {
        self.lap(["--json", "sessions", "list"]).success().json()[0]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `POST` on the server's API (plain HTTP, master key), like `curl -X POST`; returns the status and
    /// the body.
    pub fn post(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.server.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.server.master_key()
        )
        .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, body.to_owned())
    }

    /// `lap send --stream AGENT TEXT` in the background; returns once it printed `first`, with the child
    /// and a thread collecting the rest of its stdout.
    pub fn send_until(
        &self,
        agent: &str,
        text: &str,
        first: &str,
        wait: Duration,
    ) -> (std::process::Child, std::thread::JoinHandle<String>) {
        let mut child = std::process::Command::new(super::LAP)
            .args(["send", "--stream", agent, text])
            .env_clear()
            .envs(self.home.env())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            let mut chunk = [0u8; 256];
            loop {
                match std::io::Read::read(&mut stdout, &mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        all.push_str(&String::from_utf8_lossy(&chunk[..n]));
                        let _ = tx.send(all.clone());
                    }
                }
            }
            all
        });
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(seen) if seen.contains(first) => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    let out = child.wait_with_output().unwrap();
                    panic!(
                        "`lap send --stream {agent}` did not print {first:?} within {wait:?}; stderr:\n{}\n{}",
                        String::from_utf8_lossy(&out.stderr),
                        self.context()
                    );
                }
            }
        }
        (child, reader)
    }

    /// The real key reached the fake, the stub never did; the sandbox's environment and its files
    /// under HOME hold the stub only (`stub_file`, when given, among them).
    pub fn assert_the_sandbox_holds_only_the_stub(&self, session: &str, real_key: &str, stub_file: Option<&str>) {
        let turns = self.api.turns();
        assert!(!turns.is_empty(), "{}", self.context());
        for request in self.api.seen() {
            assert_eq!(
                request.authorization.as_deref(),
                Some(format!("Bearer {real_key}").as_str()),
                "{request:#?}"
            );
        }
        let env = self.lap(["exec", session, "--", "env"]).success();
        let stub = env
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("OPENAI_API_KEY="))
            .unwrap_or_else(|| panic!("no OPENAI_API_KEY in the sandbox:\n{env}"))
            .to_owned();
        assert_ne!(stub, real_key);
        assert!(!env.stdout.contains(real_key), "{env}");
        let files = self
            .lap([
                "exec",
                session,
                "--",
                "sh",
                "-c",
                "grep -rl -- \"$0\" \"$HOME\" || true",
                real_key,
            ])
            .success();
        assert_eq!(files.out(), "", "files under HOME hold the real key: {files}");
        let holding_stub = self
            .lap([
                "exec",
                session,
                "--",
                "sh",
                "-c",
                "grep -rl -- \"$0\" \"$HOME\" || true",
                &stub,
            ])
            .success();
        if let Some(file) = stub_file {
            assert!(holding_stub.stdout.contains(file), "{holding_stub}");
        }
        assert!(!self.server.log().contains(real_key));
    }

    /// What the fake saw, and the server's log, for a failure message.
    pub fn context(&self) -> String {
        format!("seen: {:#?}\nserver log:\n{}", self.api.seen(), self.server.log())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        super::delete_local_sandboxes(self.server.data_dir());
    }
}
