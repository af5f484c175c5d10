//! The Kubernetes backend's use of the harness client ([`crate::sandbox::harness`]): in this
//! backend its stream is a port-forward or a TCP connection to the harness container's port
//! [`super::manifest::HARNESS_PORT`], on which [`super::Kube::harness_stream`] has sent the pod's
//! harness token. This module only turns the client's errors into [`SandboxError`]s, in [`failed`].
//!
//! The server end is the pod's harness container, `lap harness --listen ADDR`: the local backend's
//! harness server on TCP ([`crate::sandbox::local::serve_tcp`]).

pub use crate::sandbox::harness::HarnessStream;
use crate::sandbox::harness::{self, OutputSink};
use crate::sandbox::{ExecChunk, SandboxError, TtyChannel};
use crate::wire::harness::{ExecRequest, ProtoError, StartRequest};

/// The one place a harness error becomes this backend's error.
fn failed(err: ProtoError) -> SandboxError {
    match err {
        ProtoError::AgentStart(error) => SandboxError::Backend(format!("the agent could not start: {error}")),
        ProtoError::Refused(message) => SandboxError::Backend(message),
        start @ ProtoError::Start(_) => SandboxError::Backend(start.to_string()),
        other => SandboxError::Backend(format!("the harness of the pod: {other}")),
    }
}

/// `start`: binds the session's environment and starts the agent.
pub async fn start_agent(stream: impl HarnessStream, request: StartRequest) -> Result<(), SandboxError> {
    harness::start_agent(stream, request).await.map_err(failed)
}

/// `wait`: the agent's exit code, once it exits.
pub async fn wait_agent(stream: impl HarnessStream) -> Result<i32, SandboxError> {
    harness::wait_agent(stream).await.map_err(failed)
}

/// Output for the channel of an `exec`; a caller that stopped listening does not end the command.
struct LossySink(tokio::sync::mpsc::Sender<ExecChunk>);

impl OutputSink for LossySink {
    async fn output(&mut self, chunk: ExecChunk) -> Result<(), ProtoError> {
        let _ = self.0.send(chunk).await;
        Ok(())
    }
}

/// `exec`: runs a command, feeding it what comes on `stdin` (its end closes the command's stdin) and
/// sending its output to `output`; returns its exit code. Dropping the future closes the connection,
/// which the harness takes as the client leaving: it kills the command.
pub async fn exec(
    stream: impl HarnessStream,
    request: ExecRequest,
    stdin: tokio::sync::mpsc::Receiver<Vec<u8>>,
    output: tokio::sync::mpsc::Sender<ExecChunk>,
) -> Result<i32, SandboxError> {
    harness::exec_channel(stream, request, stdin, &mut LossySink(output))
        .await
        .map_err(failed)
}

/// `attach`: a viewer of the agent's terminal, `cols`×`rows` cells.
pub async fn attach(stream: impl HarnessStream, cols: u16, rows: u16) -> Result<TtyChannel, SandboxError> {
    harness::attach(stream, cols, rows).await.map_err(failed)
}
