//! The drivers of API harnesses: tools driven by programs through their own streaming protocol.
//!
//! Where the driver lives: in the control plane. The tool itself runs inside the sandbox, started
//! through the backend's `exec_stream` (the local backend's `exec` op on `harness.sock`, as the
//! sandbox user with the session's environment, stubs and proxy); its stdin and stdout are the
//! protocol. `lap serve` writes the user's turns and reads the tool's stream, maps it onto our
//! event schema ([`crate::wire::messages::Event`]) here, and keeps history and events in its
//! store. So nothing in the sandbox holds more than the tool does, a Kubernetes backend only needs
//! a streaming exec (the API server's exec does exactly that), and history outlives the tool.
//!
//! Each tool has a [`Driver`]: the command line that starts it, how a user turn and an interrupt are
//! written, and a normaliser that turns each line it prints into events (and, for requests the
//! tool makes of its client, replies).

pub mod claude;
pub mod codex;
pub mod opencode;

use crate::wire::api::Agent;
use crate::wire::messages::EventKind;

/// What one line of the tool's output produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    pub events: Vec<EventKind>,
    /// Lines to write back to the tool (answers to its control requests).
    pub replies: Vec<String>,
}

/// Environment variables every API tool gets in front of its command: no update checks, no
/// telemetry, no traffic but the model's (a sealed sandbox would refuse it anyway).
pub const QUIET_ENV: &[(&str, &str)] = &[
    ("IS_SANDBOX", "1"),
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ("DISABLE_AUTOUPDATER", "1"),
    ("DISABLE_TELEMETRY", "1"),
    ("DISABLE_ERROR_REPORTING", "1"),
    ("DISABLE_BUG_COMMAND", "1"),
    ("OPENCODE_DISABLE_AUTOUPDATE", "1"),
    ("OPENCODE_DISABLE_SHARE", "1"),
    ("OPENCODE_DISABLE_LSP_DOWNLOAD", "1"),
    ("OPENCODE_DISABLE_MODELS_FETCH", "1"),
];

/// How one tool is driven.
pub trait Driver: Send {
    /// The argv that starts the tool inside the sandbox, resuming `resume` when given.
    fn argv(&mut self, agent: &Agent, resume: Option<&str>) -> Vec<String>;
    /// The lines that hand the tool a user turn (a tool that needs a handshake first gets it
    /// here; lines that must wait for an answer come later as [`Output::replies`]).
    fn user_turn(&mut self, text: &str) -> Vec<String>;
    /// The line that asks the tool to stop the running turn (`None`: it has no such request; the
    /// process is killed).
    fn interrupt(&mut self) -> Option<String>;
    /// Maps one line the tool printed.
    fn line(&mut self, line: &str) -> Output;
}

/// The driver of an API harness, by harness id (`None`: not an API harness this build drives).
pub fn driver(harness_id: &str) -> Option<Box<dyn Driver>> {
    match harness_id {
        "claude-agent-sdk" => Some(Box::new(claude::Claude::default())),
        "codex-app-server" => Some(Box::new(codex::Codex::default())),
        "opencode" => Some(Box::new(opencode::OpenCode::default())),
        _ => None,
    }
}

/// `env NAME=VALUE… PROGRAM ARGS…`, with the agent's own `command` (a shell word list) standing in
/// for the tool's program when it has one.
pub fn command_line(agent: &Agent, program: &str, args: Vec<String>) -> Vec<String> {
    let mut argv = vec!["env".to_owned()];
    argv.extend(QUIET_ENV.iter().map(|(k, v)| format!("{k}={v}")));
    match agent.command.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        Some(command) => {
            argv.extend(["bash".to_owned(), "-c".to_owned(), format!("exec {command} \"$@\"")]);
            argv.push(program.to_owned());
        }
        None => argv.push(program.to_owned()),
    }
    argv.extend(args);
    argv
}

/// A fresh id with a prefix (`msg_`, `prt_`, `req_`): 24 random hex digits.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..24])
}

/// A turn's error message with the harness's hint when the model's API answered 401 (the tool's own
/// message names the status: `401 Unauthorized`, `status 401`, or a `statusCode` the driver found),
/// and the status itself.
pub fn unauthorized(harness_id: &str, message: String, status: Option<u16>) -> (String, Option<u16>) {
    let said_401 = status == Some(401) || message.contains("401 Unauthorized") || message.contains("status 401");
    if !said_401 {
        return (message, status);
    }
    let hint = crate::tools::find(harness_id)
        .map(|h| h.hint_for_unauthorized())
        .unwrap_or_else(|| crate::tools::UNAUTHORIZED_HINT.to_owned());
    (
        format!("{message} (hint: the model's API refused the key: {hint})"),
        Some(401),
    )
}
