//! The client side of the harness protocol (version 1, specified in
//! [`crate::sandbox::local::proto`]) over any byte stream: in this backend, a port-forward or a TCP
//! connection to the harness container's port [`super::manifest::HARNESS_PORT`], on which
//! [`super::Kube::harness_stream`] has sent the pod's harness token. One request per connection, as
//! on the local backend's Unix socket; the framing, limits and ordering are that module's.
//!
//! The server end is the pod's harness container, `lap harness --listen ADDR`: the local backend's
//! harness server on TCP ([`crate::sandbox::local::serve_tcp`]).

use tokio::io::{AsyncRead, AsyncWrite, BufReader};

use crate::sandbox::local::proto::{
    self, AttachRequest, ERROR, EXIT, ExecRequest, MAX_FRAME, REPAINT, Request, STDERR, STDIN, STDOUT, StartReply,
    StartRequest,
};
use crate::sandbox::{ExecChunk, SandboxError, TtyChannel};

/// A stream to a pod's harness.
pub trait HarnessStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> HarnessStream for T {}

fn failed(err: proto::ProtoError) -> SandboxError {
    SandboxError::Backend(format!("the harness of the pod: {err}"))
}

fn exit_code(data: Vec<u8>) -> Result<i32, SandboxError> {
    let code: [u8; 4] = data
        .try_into()
        .map_err(|_| SandboxError::Backend("the harness sent an exit frame of the wrong size".into()))?;
    Ok(i32::from_be_bytes(code))
}

/// `start`: binds the session's environment and starts the agent.
pub async fn start_agent(stream: impl HarnessStream, request: StartRequest) -> Result<(), SandboxError> {
    let (rd, mut wr) = tokio::io::split(stream);
    proto::write_request(&mut wr, &Request::Start(request))
        .await
        .map_err(failed)?;
    let reply: StartReply = proto::read_line_json(&mut BufReader::new(rd)).await.map_err(failed)?;
    match reply.error {
        None => Ok(()),
        Some(error) => Err(SandboxError::Backend(format!("the agent could not start: {error}"))),
    }
}

/// `wait`: the agent's exit code, once it exits.
pub async fn wait_agent(mut stream: impl HarnessStream) -> Result<i32, SandboxError> {
    proto::write_request(&mut stream, &Request::Wait)
        .await
        .map_err(failed)?;
    match proto::read_frame(&mut stream).await.map_err(failed)? {
        Some((EXIT, code)) => exit_code(code),
        Some((ERROR, message)) => Err(SandboxError::Backend(String::from_utf8_lossy(&message).into_owned())),
        Some((kind, _)) => Err(SandboxError::Backend(format!(
            "the harness sent frame kind {kind} instead of the exit"
        ))),
        None => Err(SandboxError::Backend(
            "the harness closed before the agent exited".into(),
        )),
    }
}

/// `exec`: runs a command, feeding it what comes on `stdin` (its end closes the command's stdin) and
/// sending its output to `output`; returns its exit code. Dropping the future closes the connection,
/// which the harness takes as the client leaving: it kills the command.
pub async fn exec(
    stream: impl HarnessStream,
    request: ExecRequest,
    mut stdin: tokio::sync::mpsc::Receiver<Vec<u8>>,
    output: tokio::sync::mpsc::Sender<ExecChunk>,
) -> Result<i32, SandboxError> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    proto::write_request(&mut wr, &Request::Exec(request))
        .await
        .map_err(failed)?;
    let feed = async move {
        while let Some(chunk) = stdin.recv().await {
            for piece in chunk.chunks(MAX_FRAME) {
                if piece.is_empty() {
                    continue;
                }
                proto::write_frame(&mut wr, STDIN, piece).await?;
            }
        }
        proto::write_frame(&mut wr, STDIN, &[]).await?;
        // The connection stays open: its closing would kill the command.
        std::future::pending::<Result<(), proto::ProtoError>>().await
    };
    let run = async move {
        loop {
            match proto::read_frame(&mut rd).await.map_err(failed)? {
                Some((STDOUT, data)) => {
                    let _ = output.send(ExecChunk::Stdout(data)).await;
                }
                Some((STDERR, data)) => {
                    let _ = output.send(ExecChunk::Stderr(data)).await;
                }
                Some((EXIT, data)) => return exit_code(data),
                Some((ERROR, data)) => {
                    return Err(SandboxError::Backend(format!(
                        "the command could not start: {}",
                        String::from_utf8_lossy(&data)
                    )));
                }
                Some((kind, _)) => return Err(SandboxError::Backend(format!("the harness sent frame kind {kind}"))),
                None => return Err(SandboxError::Backend("the harness closed before the exit code".into())),
            }
        }
    };
    tokio::pin!(feed);
    tokio::pin!(run);
    let mut fed = false;
    loop {
        tokio::select! {
            code = &mut run => return code,
            result = &mut feed, if !fed => {
                fed = true;
                result.map_err(failed)?;
            }
        }
    }
}

/// `attach`: a viewer of the agent's terminal, `cols`×`rows` cells.
pub async fn attach(mut stream: impl HarnessStream, cols: u16, rows: u16) -> Result<TtyChannel, SandboxError> {
    proto::write_request(&mut stream, &Request::Attach(AttachRequest { cols, rows }))
        .await
        .map_err(failed)?;
    let repaint = match proto::read_frame(&mut stream).await.map_err(failed)? {
        Some((REPAINT, screen)) => screen,
        Some((ERROR, message)) => return Err(SandboxError::Backend(String::from_utf8_lossy(&message).into_owned())),
        Some((kind, _)) => {
            return Err(SandboxError::Backend(format!(
                "the harness sent frame kind {kind} before the repaint"
            )));
        }
        None => return Err(SandboxError::Backend("the harness closed before the repaint".into())),
    };
    let (rd, wr) = tokio::io::split(stream);
    Ok(proto::viewer_channel(rd, wr, repaint))
}
