//! The MCP server: lap's sessions as tools for an MCP client (Claude Code, Claude Desktop, Cursor,
//! an agent framework), built on the official Rust SDK (`rmcp`).
//!
//! One implementation, two transports. [`LapTools`] holds a REST [`Client`] of a `lap serve` and
//! each tool is a call (or a few) of that client, so the tools do exactly what the CLI does, with
//! the same errors and hints. `lap mcp` serves them over stdio ([`serve_stdio`]) with the client the
//! CLI configures (`--server`/`LAP_URL`, the config file, the master key); `lap serve` mounts them
//! over streamable HTTP at `/mcp` ([`http`]), its client pointed at its own listener (loopback, with
//! its master key). It does not reach into the control layer: the REST API stays the one door.
//!
//! A tool never fails the protocol for a failure of the thing it was asked to do: an unknown
//! session, a refused key, a command that cannot run come back as a tool result with `isError` set
//! and a JSON body `{"error", "hint", "status"}` carrying the API's own error and hint, so the model
//! can read it and try again. Inputs that do not match a tool's JSON schema are refused by the SDK
//! as invalid parameters. Every wait has a deadline, and what comes back to the model is bounded
//! ([`MAX_OUTPUT`], [`MAX_READ`]).

pub mod http;

use std::time::Duration;

use base64::Engine;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{Client, ClientError};
use crate::error::Error;
use crate::wire::api::{CreateSession, ExecCommand, ExecEvent, SESSION_PAGE_MAX, Session, SessionStatus};
use crate::wire::messages::{SendMessage, StreamFrame};

/// How much of a command's stdout (and, apart, of its stderr) comes back; the rest is cut.
pub const MAX_OUTPUT: usize = 256 * 1024;
/// How much of a file `read_file` returns at most.
pub const MAX_READ: usize = 4 * 1024 * 1024;
/// How long `create_session` waits for `ready` unless told.
const READY_WAIT: u64 = 90;
/// How long `run_command` lets a command run unless told.
const COMMAND_WAIT: u64 = 120;
/// The longest wait a caller may ask for, of either.
const MAX_WAIT: u64 = 3600;
/// The title of the sessions this server creates.
const SESSION_TITLE: &str = "lap-mcp";

/// The tools, over one REST client of a `lap serve`.
#[derive(Clone)]
pub struct LapTools {
    client: Client,
}

impl LapTools {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The same tools calling the API with `key` instead.
    fn acting_as(&self, key: &crate::secret::Secret) -> Self {
        Self {
            client: self.client.with_key(key.clone()),
        }
    }
}

/// The API key an `/mcp` request carries (its middleware puts it in the request), which the tools
/// then call the API with: they act as that key's user, with its role. Without one (the master
/// key), they use the server's own client.
#[derive(Clone)]
pub struct CallerKey(pub crate::secret::Secret);

/// Serves the tools on stdin/stdout until the client closes them (`lap mcp`).
pub async fn serve_stdio(client: Client) -> Result<(), Error> {
    let service = LapTools::new(client)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| Error::failed_with_hint(format!("the MCP handshake failed: {e}"), STDIO_HINT))?;
    service
        .waiting()
        .await
        .map_err(|e| Error::failed(format!("the MCP server stopped: {e}")))?;
    Ok(())
}

const STDIO_HINT: &str =
    "`lap mcp` speaks MCP on stdin and stdout for an MCP client, e.g. `claude mcp add lap -- lap mcp`";

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListAgents {
    /// Only agents whose name contains this text.
    #[serde(default)]
    pub search: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateSessionInput {
    /// The agent's name or id (see `list_agents`).
    pub agent: String,
    /// A title for the session.
    #[serde(default)]
    pub title: Option<String>,
    /// How long to wait for the session to be ready, in seconds (default 90, at most 3600).
    #[serde(default)]
    pub wait_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListSessions {
    /// Only this agent's sessions (its name or id).
    #[serde(default)]
    pub agent: Option<String>,
    /// At most this many, newest first (default 50, at most 200).
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SessionInput {
    /// The session's id (see `list_sessions`).
    pub session_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunCommand {
    /// The session's id.
    pub session_id: String,
    /// A shell command line, run with `sh -c` in the session's sandbox.
    pub command: String,
    /// Working directory inside the sandbox (default: the sandbox user's home).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Text given to the command on its stdin (default: none).
    #[serde(default)]
    pub stdin: Option<String>,
    /// How long the command may run, in seconds (default 120, at most 3600).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadFile {
    /// The session's id.
    pub session_id: String,
    /// The file's path in the sandbox (relative paths are from the sandbox user's home).
    pub path: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The content is the text itself.
    #[default]
    Text,
    /// The content is base64 (standard alphabet, padded), for bytes that are not text.
    Base64,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WriteFile {
    /// The session's id.
    pub session_id: String,
    /// Where to write in the sandbox (its directory must exist); a file there is replaced.
    pub path: String,
    /// The file's content.
    pub content: String,
    /// How `content` is written: `text` (default) or `base64`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Permission bits in octal, e.g. `755` (default: 644).
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SendMessageInput {
    /// The session's id; its agent must run an API harness (e.g. `claude-agent-sdk`), not a terminal one.
    pub session_id: String,
    /// The message.
    pub text: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct EgressLog {
    /// The session's id.
    pub session_id: String,
    /// Only records after this position (each record's `id`), to read on from an earlier answer.
    #[serde(default)]
    pub after: Option<u64>,
}

#[tool_router]
impl LapTools {
    #[tool(
        description = "List the agents a session can be started of: name, harness, whether it has a terminal (TUI) or takes messages (API)",
        annotations(read_only_hint = true)
    )]
    async fn list_agents(&self, Parameters(input): Parameters<ListAgents>) -> CallToolResult {
        answer(async {
            let agents = self.client.list_agents(input.search.as_deref()).await?;
            let agents: Vec<Value> = agents
                .iter()
                .map(|a| {
                    json!({
                        "id": a.id, "name": a.name, "harness": a.harness_id,
                        "kind": if a.supports_tui { "tui" } else { "api" },
                        "model": a.model, "has_active_session": a.has_active_session,
                    })
                })
                .collect();
            Ok(json!({ "agents": agents }))
        })
        .await
    }

    #[tool(
        description = "Start a session of an agent (a fresh sandbox) and wait until it is ready; returns the session"
    )]
    async fn create_session(&self, Parameters(input): Parameters<CreateSessionInput>) -> CallToolResult {
        answer(async {
            let wait = wait_of(input.wait_seconds, READY_WAIT, "wait_seconds")?;
            let body = CreateSession {
                title: Some(input.title.unwrap_or_else(|| SESSION_TITLE.to_owned())),
            };
            let session = self.client.create_session(&input.agent, &body).await?;
            let session = self.wait_until_ready(session, wait).await?;
            Ok(session_json(&session))
        })
        .await
    }

    #[tool(
        description = "List sessions, newest first: id, agent, status (creating, ready, paused, hibernated, failed, dead)",
        annotations(read_only_hint = true)
    )]
    async fn list_sessions(&self, Parameters(input): Parameters<ListSessions>) -> CallToolResult {
        answer(async {
            let limit = input.limit.unwrap_or(50);
            if limit == 0 || limit > SESSION_PAGE_MAX {
                return Err(ToolError::input(
                    format!("`limit` {limit} is out of range"),
                    format!("give 1 to {SESSION_PAGE_MAX}"),
                ));
            }
            let agent = match input.agent {
                // The API filters by agent id; a name is resolved first.
                Some(agent) => Some(self.client.get_agent(&agent).await?.id.to_string()),
                None => None,
            };
            let sessions = self.client.list_sessions(agent.as_deref(), limit).await?;
            let sessions: Vec<Value> = sessions.iter().map(session_json).collect();
            Ok(json!({ "sessions": sessions }))
        })
        .await
    }

    #[tool(
        description = "Stop a session and delete its sandbox",
        annotations(destructive_hint = true)
    )]
    async fn delete_session(&self, Parameters(input): Parameters<SessionInput>) -> CallToolResult {
        answer(async {
            let deleted = self.client.delete_session(&input.session_id).await?;
            Ok(json!({ "id": deleted.id, "status": deleted.status }))
        })
        .await
    }

    #[tool(
        description = "Run a shell command (`sh -c`) in a session's sandbox and wait for it; returns its exit code, stdout and stderr"
    )]
    async fn run_command(&self, Parameters(input): Parameters<RunCommand>) -> CallToolResult {
        answer(async {
            let wait = wait_of(input.timeout_seconds, COMMAND_WAIT, "timeout_seconds")?;
            let b64 = base64::engine::general_purpose::STANDARD;
            let body = ExecCommand {
                command: vec!["sh".into(), "-c".into(), input.command.clone()],
                stdin: input.stdin.map(|text| b64.encode(text)),
                cwd: input.cwd,
            };
            let run = async {
                let mut stream = self.client.exec(&input.session_id, &body).await?;
                let (mut stdout, mut stderr) = (Captured::default(), Captured::default());
                while let Some(event) = stream.next().await? {
                    match event {
                        ExecEvent::Stdout(data) => stdout.push(&decode(&data)?),
                        ExecEvent::Stderr(data) => stderr.push(&decode(&data)?),
                        ExecEvent::ExitCode(code) => {
                            return Ok(json!({
                                "exit_code": code,
                                "stdout": stdout.text(), "stderr": stderr.text(),
                                "stdout_truncated": stdout.cut, "stderr_truncated": stderr.cut,
                            }));
                        }
                        ExecEvent::Error(message) => {
                            return Err(ToolError::failed(
                                format!("the command could not run: {message}"),
                                "check the session with `list_sessions`; a dead session needs a new one",
                            ));
                        }
                    }
                }
                Err(ToolError::failed(
                    "the command's output ended without an exit code",
                    "the sandbox may have gone away; check the session with `list_sessions`",
                ))
            };
            match tokio::time::timeout(wait, run).await {
                Ok(result) => result,
                Err(_) => Err(ToolError::failed(
                    format!("the command did not finish within {}s and was abandoned", wait.as_secs()),
                    "give a larger `timeout_seconds`, or run it in the background (`nohup … &`) and read its output later",
                )),
            }
        })
        .await
    }

    #[tool(
        description = "Read a file from a session's sandbox; text comes back as text, other bytes as base64 (at most 4 MiB)",
        annotations(read_only_hint = true)
    )]
    async fn read_file(&self, Parameters(input): Parameters<ReadFile>) -> CallToolResult {
        answer(async {
            let mut resp = self.client.download_file(&input.session_id, &input.path, false).await?;
            let mut bytes = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| ToolError::failed(
                format!("the download of `{}` broke off: {e}", input.path),
                "try again; the sandbox may have gone away",
            ))? {
                if bytes.len() + chunk.len() > MAX_READ {
                    return Err(ToolError::input(
                        format!("`{}` is over {} MiB", input.path, MAX_READ / (1024 * 1024)),
                        "read a part of it with `run_command` (e.g. `head -c 100000 FILE`), or copy it out with `lap cp`",
                    ));
                }
                bytes.extend_from_slice(&chunk);
            }
            let size = bytes.len();
            Ok(match String::from_utf8(bytes) {
                Ok(text) => json!({ "path": input.path, "size": size, "encoding": "text", "content": text }),
                Err(err) => json!({
                    "path": input.path, "size": size, "encoding": "base64",
                    "content": base64::engine::general_purpose::STANDARD.encode(err.into_bytes()),
                }),
            })
        })
        .await
    }

    #[tool(
        description = "Write a file in a session's sandbox (created or replaced; its directory must exist, `run_command` `mkdir -p` makes one); content is text, or base64 with `encoding: base64`"
    )]
    async fn write_file(&self, Parameters(input): Parameters<WriteFile>) -> CallToolResult {
        answer(async {
            let bytes = match input.encoding {
                Encoding::Text => input.content.into_bytes(),
                Encoding::Base64 => base64::engine::general_purpose::STANDARD
                    .decode(input.content.trim())
                    .map_err(|e| {
                        ToolError::input(
                            format!("`content` is not base64: {e}"),
                            "give standard, padded base64, or `encoding: text` for text",
                        )
                    })?,
            };
            let mode = match input.mode.as_deref() {
                None => None,
                Some(text) => Some(crate::wire::files::parse_mode(text).ok_or_else(|| {
                    ToolError::input(
                        format!("`mode` `{text}` is not permission bits in octal"),
                        "write it like `644` or `0755`",
                    )
                })?),
            };
            let length = bytes.len() as u64;
            let uploaded = self
                .client
                .upload_file(&input.session_id, &input.path, false, mode, Some(length), bytes.into())
                .await?;
            Ok(json!({ "path": uploaded.path, "bytes": uploaded.bytes }))
        })
        .await
    }

    #[tool(
        description = "Send a message to an API agent's session (e.g. `claude-agent-sdk`) and wait for its reply; returns the reply's text"
    )]
    async fn send_message(&self, Parameters(input): Parameters<SendMessageInput>) -> CallToolResult {
        answer(async {
            let id = &input.session_id;
            let mut frames = self
                .client
                .message_stream(id, &SendMessage::text(input.text))
                .await?;
            while let Some(frame) = frames.next().await? {
                match frame {
                    StreamFrame::Done { message: Some(message) } => {
                        if let Some(error) = &message.info.error {
                            return Err(ToolError::failed(
                                format!("the agent's turn failed ({}): {}", error.name, error.data.message),
                                "see the session's egress with `egress_log`, or start another session",
                            ));
                        }
                        return Ok(json!({ "session_id": id, "reply": message.text() }));
                    }
                    StreamFrame::Error { message } => {
                        return Err(ToolError::failed(
                            message,
                            "a terminal (TUI) agent takes no messages: use `run_command`, or an agent with an API harness",
                        ));
                    }
                    _ => {}
                }
            }
            Err(ToolError::failed(
                "the reply stream ended before the reply",
                "the session may have gone away; check it with `list_sessions`",
            ))
        })
        .await
    }

    #[tool(
        description = "Read a session's egress log: each request that went out through its credential vault (host, path, status, credentials swapped, blocked)",
        annotations(read_only_hint = true)
    )]
    async fn egress_log(&self, Parameters(input): Parameters<EgressLog>) -> CallToolResult {
        answer(async {
            let records = self
                .client
                .interceptions(&input.session_id, input.after.unwrap_or(0))
                .await?;
            Ok(json!({ "records": records }))
        })
        .await
    }
}

#[tool_handler(
    name = "lap",
    instructions = "lap runs coding agents in isolated sandboxes. Start a session of an agent with `create_session` (see `list_agents`), then run commands in its sandbox (`run_command`), read and write its files, message an API agent (`send_message`), and see what went out through its credential vault (`egress_log`). Delete sessions you no longer need with `delete_session`."
)]
impl rmcp::ServerHandler for LapTools {
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        let caller = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<CallerKey>())
            .map(|CallerKey(key)| self.acting_as(key));
        let tools = caller.as_ref().unwrap_or(self);
        let call = rmcp::handler::server::tool::ToolCallContext::new(tools, request, context);
        Self::tool_router().call(call).await
    }
}

impl LapTools {
    /// Polls a starting session until it leaves `creating`, at most `wait`; an error unless `ready`.
    async fn wait_until_ready(&self, session: Session, wait: Duration) -> Result<Session, ToolError> {
        let id = session.id;
        let session = self
            .client
            .wait_while_creating(session, wait, |_| {})
            .await?
            .ok_or_else(|| {
                ToolError::failed(
                    format!("session {id} was not ready after {}s", wait.as_secs()),
                    "give a larger `wait_seconds`, or look again with `list_sessions`",
                )
            })?;
        if session.status != SessionStatus::Ready {
            return Err(ToolError::failed(
                format!(
                    "session {} is {}: {}",
                    session.id,
                    session.status.as_str(),
                    session.failure_reason.as_deref().unwrap_or("no reason recorded")
                ),
                "`lap sessions show ID` has the details; `lap doctor` says whether the agent's tool is installed",
            ));
        }
        Ok(session)
    }
}

/// A tool's failure: what the model reads.
#[derive(Debug)]
struct ToolError {
    message: String,
    hint: Option<String>,
    /// The API's HTTP status, when the API refused.
    status: Option<u16>,
}

impl ToolError {
    fn failed(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: Some(hint.into()),
            status: None,
        }
    }

    fn input(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::failed(message, hint)
    }
}

impl From<ClientError> for ToolError {
    fn from(err: ClientError) -> Self {
        Self {
            message: crate::error::chain(&err),
            hint: err.hint(),
            status: err.status(),
        }
    }
}

/// The result of a tool's work: its JSON, or its error as a tool error (`isError`).
async fn answer(work: impl Future<Output = Result<Value, ToolError>>) -> CallToolResult {
    match work.await {
        Ok(value) => CallToolResult::structured(value),
        Err(err) => CallToolResult::structured_error(json!({
            "error": err.message,
            "hint": err.hint,
            "status": err.status,
        })),
    }
}

/// A caller's wait in seconds, or `default`; refused past [`MAX_WAIT`].
fn wait_of(given: Option<u64>, default: u64, name: &str) -> Result<Duration, ToolError> {
    match given.unwrap_or(default) {
        0 => Err(ToolError::input(
            format!("`{name}` is 0"),
            format!("give 1 to {MAX_WAIT}"),
        )),
        secs if secs > MAX_WAIT => Err(ToolError::input(
            format!("`{name}` {secs} is over {MAX_WAIT}"),
            format!("give 1 to {MAX_WAIT}"),
        )),
        secs => Ok(Duration::from_secs(secs)),
    }
}

fn decode(data: &str) -> Result<Vec<u8>, ToolError> {
    base64::engine::general_purpose::STANDARD.decode(data).map_err(|e| {
        ToolError::failed(
            format!("the server sent output that is not base64: {e}"),
            "is the server a lap serve of this version?",
        )
    })
}

/// The part of a session a model needs: never its terminal token.
fn session_json(s: &Session) -> Value {
    json!({
        "id": s.id, "agent": s.agent_name, "agent_id": s.agent_id, "status": s.status.as_str(),
        "phase": s.phase, "kind": if s.supports_tui { "tui" } else { "api" },
        "failure_reason": s.failure_reason, "title": s.title_preview,
        "created_at": s.created_at, "last_seen_at": s.last_seen_at,
    })
}

/// One output stream of a command, kept up to [`MAX_OUTPUT`] bytes.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    cut: bool,
}

impl Captured {
    fn push(&mut self, data: &[u8]) {
        let room = MAX_OUTPUT.saturating_sub(self.bytes.len());
        self.cut |= data.len() > room;
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}
