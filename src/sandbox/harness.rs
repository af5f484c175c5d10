//! The client of the harness protocol ([`crate::wire::harness`]) over any byte stream: one for every
//! backend. The local backend hands it a connection to a sandbox's `harness.sock`, the Kubernetes
//! backend a port-forward or a TCP connection to a pod's harness on which the pod's token was sent.
//! One request per connection; the framing, limits and ordering are the protocol's.
//!
//! Every call answers with the protocol's [`ProtoError`]; each backend turns it into its
//! [`super::SandboxError`] in one place. The file operations' client is [`super::files`], the ports'
//! is [`super::local::ports`]; what only a Unix socket can carry (the proxy listener) is the local
//! backend's.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::{ExecChunk, TtyChannel, TtyInput, TtyOutput};
use crate::wire::harness::{
    AttachRequest, ERROR, EXIT, ExecRequest, MAX_FRAME, Pong, ProtoError, REPAINT, RESIZE, Request, STDERR, STDIN,
    STDOUT, StartReply, StartRequest, VERSION, VIEWERS, read_frame, read_line_json, resize_payload, write_frame,
    write_request,
};

/// A stream to a sandbox's harness, ready for one request.
pub trait HarnessStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> HarnessStream for T {}

/// Frames buffered each way between a viewer and its harness connection.
const VIEWER_QUEUE: usize = 64;

/// `ping`: whether the harness is up and speaks this protocol's version.
pub async fn ping(stream: impl HarnessStream) -> Result<(), ProtoError> {
    let (rd, mut wr) = tokio::io::split(stream);
    write_request(&mut wr, &Request::Ping).await?;
    let pong: Pong = read_line_json(&mut BufReader::new(rd)).await?;
    if pong.pong != VERSION {
        return Err(ProtoError::Protocol(format!("harness protocol version {}", pong.pong)));
    }
    Ok(())
}

/// `start`: binds the session's environment and starts the agent (late binding).
pub async fn start_agent(stream: impl HarnessStream, request: StartRequest) -> Result<(), ProtoError> {
    let (rd, mut wr) = tokio::io::split(stream);
    write_request(&mut wr, &Request::Start(request)).await?;
    let reply: StartReply = read_line_json(&mut BufReader::new(rd)).await?;
    match reply.error {
        None => Ok(()),
        Some(error) => Err(ProtoError::AgentStart(error)),
    }
}

/// The exit code an [`EXIT`] frame carries.
fn exit_code(data: Vec<u8>) -> Result<i32, ProtoError> {
    let code: [u8; 4] = data
        .try_into()
        .map_err(|_| ProtoError::Protocol("exit frame of the wrong size".into()))?;
    Ok(i32::from_be_bytes(code))
}

/// `wait`: the agent's exit code, once it exits.
pub async fn wait_agent(mut stream: impl HarnessStream) -> Result<i32, ProtoError> {
    write_request(&mut stream, &Request::Wait).await?;
    match read_frame(&mut stream).await? {
        Some((EXIT, code)) => exit_code(code),
        Some((ERROR, message)) => Err(ProtoError::Refused(String::from_utf8_lossy(&message).into_owned())),
        Some((kind, _)) => Err(ProtoError::Protocol(format!("frame kind {kind} instead of the exit"))),
        None => Err(ProtoError::Protocol(
            "the harness closed before the agent exited".into(),
        )),
    }
}

/// `attach`: a viewer of the agent's terminal, `cols`×`rows` cells.
pub async fn attach(mut stream: impl HarnessStream, cols: u16, rows: u16) -> Result<TtyChannel, ProtoError> {
    write_request(&mut stream, &Request::Attach(AttachRequest { cols, rows })).await?;
    let repaint = match read_frame(&mut stream).await? {
        Some((REPAINT, screen)) => screen,
        Some((ERROR, message)) => return Err(ProtoError::Refused(String::from_utf8_lossy(&message).into_owned())),
        Some((kind, _)) => return Err(ProtoError::Protocol(format!("frame kind {kind} before the repaint"))),
        None => return Err(ProtoError::Protocol("the harness closed before the repaint".into())),
    };
    let (rd, wr) = tokio::io::split(stream);
    Ok(viewer_channel(rd, wr, repaint))
}

/// Turns an attached harness connection (its `repaint` already read) into a viewer's channel: input
/// (keystrokes in frames of at most [`MAX_FRAME`], resizes) goes out on `wr`, output frames come in on
/// `rd`, the repaint first. Both pumps end with the viewer: dropping its input closes the connection
/// (detach), and a closed connection ends its output.
fn viewer_channel<R, W>(rd: R, mut wr: W, repaint: Vec<u8>) -> TtyChannel
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // A frame's header and payload in one read when they came together.
    let mut rd = BufReader::with_capacity(MAX_FRAME + 5, rd);
    let (input_tx, mut input) = tokio::sync::mpsc::channel::<TtyInput>(VIEWER_QUEUE);
    let (output, output_rx) = tokio::sync::mpsc::channel::<TtyOutput>(VIEWER_QUEUE);
    tokio::spawn(async move {
        while let Some(message) = input.recv().await {
            let written = match message {
                TtyInput::Data(data) => {
                    let mut result = Ok(());
                    for chunk in data.chunks(MAX_FRAME) {
                        result = write_frame(&mut wr, STDIN, chunk).await;
                        if result.is_err() {
                            break;
                        }
                    }
                    result
                }
                TtyInput::Resize { cols, rows } => write_frame(&mut wr, RESIZE, &resize_payload(cols, rows)).await,
            };
            if written.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        if output.send(TtyOutput::Repaint(repaint)).await.is_err() {
            return;
        }
        while let Ok(Some((kind, data))) = read_frame(&mut rd).await {
            let message = match kind {
                STDOUT => TtyOutput::Data(data),
                REPAINT => TtyOutput::Repaint(data),
                VIEWERS => match <[u8; 4]>::try_from(data) {
                    Ok(n) => TtyOutput::Viewers(u32::from_be_bytes(n)),
                    Err(_) => break,
                },
                EXIT => match <[u8; 4]>::try_from(data) {
                    Ok(code) => TtyOutput::Exit(i32::from_be_bytes(code)),
                    Err(_) => break,
                },
                _ => break,
            };
            if output.send(message).await.is_err() {
                break;
            }
        }
    });
    TtyChannel {
        input: input_tx,
        output: output_rx,
    }
}

/// Where [`exec`] puts a command's output.
pub trait OutputSink {
    /// Takes one [`STDOUT`] or [`STDERR`] chunk; an error ends the `exec` (and so the command).
    fn output(&mut self, chunk: ExecChunk) -> impl Future<Output = Result<(), ProtoError>> + Send;
}

/// A pair of writers: stdout and stderr.
impl<O, E> OutputSink for (O, E)
where
    O: AsyncWrite + Unpin + Send,
    E: AsyncWrite + Unpin + Send,
{
    async fn output(&mut self, chunk: ExecChunk) -> Result<(), ProtoError> {
        match chunk {
            ExecChunk::Stdout(data) => {
                self.0.write_all(&data).await?;
                self.0.flush().await?;
            }
            ExecChunk::Stderr(data) => {
                self.1.write_all(&data).await?;
                self.1.flush().await?;
            }
        }
        Ok(())
    }
}

/// `exec`: runs a command, feeding it `stdin` (its end closes the command's stdin) and sending its
/// output to `sink`; returns its exit code. Dropping the future closes the connection, which the
/// harness takes as the client leaving: it kills the command.
pub async fn exec<I, S>(
    stream: impl HarnessStream,
    request: ExecRequest,
    mut stdin: I,
    sink: &mut S,
) -> Result<i32, ProtoError>
where
    I: AsyncRead + Unpin + Send,
    S: OutputSink + Send,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    write_request(&mut wr, &Request::Exec(request)).await?;
    let feed = async move {
        let mut buf = vec![0u8; MAX_FRAME];
        loop {
            let fed = async {
                let n = stdin.read(&mut buf).await?;
                write_frame(&mut wr, STDIN, &buf[..n]).await?;
                Ok::<_, ProtoError>(n)
            };
            match fed.await {
                Ok(0) => break,
                Ok(_) => {}
                // The command's end is for the harness to tell (its exit code may already be on the
                // way: a command that exits without reading its stdin closes the connection under
                // our feet). Closing our side is the client leaving: the harness kills the command.
                Err(_) => {
                    let _ = wr.shutdown().await;
                    break;
                }
            }
        }
        // After stdin's end the connection stays open: its closing would kill the command.
        std::future::pending::<std::convert::Infallible>().await
    };
    let run = async move {
        loop {
            match read_frame(&mut rd).await? {
                Some((STDOUT, data)) => sink.output(ExecChunk::Stdout(data)).await?,
                Some((STDERR, data)) => sink.output(ExecChunk::Stderr(data)).await?,
                Some((EXIT, data)) => return exit_code(data),
                Some((ERROR, data)) => return Err(ProtoError::Start(String::from_utf8_lossy(&data).into_owned())),
                Some((kind, _)) => return Err(ProtoError::Protocol(format!("frame kind {kind}"))),
                None => return Err(ProtoError::Protocol("the harness closed before the exit code".into())),
            }
        }
    };
    tokio::pin!(feed);
    tokio::pin!(run);
    tokio::select! {
        code = &mut run => code,
        never = &mut feed => match never {},
    }
}

/// [`exec`] with its stdin from a channel: each message is written to the command, and the channel's
/// end (every sender dropped) closes the command's stdin.
pub async fn exec_channel<S>(
    stream: impl HarnessStream,
    request: ExecRequest,
    mut stdin: tokio::sync::mpsc::Receiver<Vec<u8>>,
    sink: &mut S,
) -> Result<i32, ProtoError>
where
    S: OutputSink + Send,
{
    // The channel becomes a byte stream; its end (sender dropped) is the stdin's EOF.
    let (mut pipe_in, pipe_out) = tokio::io::duplex(MAX_FRAME);
    let feed = async move {
        while let Some(chunk) = stdin.recv().await {
            if pipe_in.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = pipe_in.shutdown().await;
    };
    let run = exec(stream, request, pipe_out, sink);
    tokio::pin!(run);
    tokio::pin!(feed);
    let mut fed = false;
    loop {
        tokio::select! {
            code = &mut run => return code,
            () = &mut feed, if !fed => fed = true,
        }
    }
}

/// What [`exec_output`] collects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs a command with empty stdin and collects its output.
pub async fn exec_output(stream: impl HarnessStream, request: ExecRequest) -> Result<ExecOutput, ProtoError> {
    let mut output = (Vec::new(), Vec::new());
    let code = exec(stream, request, tokio::io::empty(), &mut output).await?;
    let (stdout, stderr) = output;
    Ok(ExecOutput { code, stdout, stderr })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    use crate::wire::harness::read_line_json;

    /// A harness on the other end of an in-memory stream: reads the request line, then answers
    /// `frames` and hangs up; the receiver hears when it has.
    fn harness_answering(frames: Vec<(u8, Vec<u8>)>) -> (tokio::io::DuplexStream, oneshot::Receiver<()>) {
        let (client, server) = tokio::io::duplex(MAX_FRAME);
        let (hung_up, hears) = oneshot::channel();
        tokio::spawn(async move {
            let (rd, mut wr) = tokio::io::split(server);
            let _: Request = read_line_json(&mut BufReader::new(rd)).await.unwrap();
            for (kind, payload) in frames {
                write_frame(&mut wr, kind, &payload).await.unwrap();
            }
            drop(wr);
            let _ = hung_up.send(());
        });
        (client, hears)
    }

    /// Keeps stdout, taking its first chunk only once the harness has hung up.
    struct AfterHangUp(Option<oneshot::Receiver<()>>, Vec<u8>);

    impl OutputSink for AfterHangUp {
        async fn output(&mut self, chunk: ExecChunk) -> Result<(), ProtoError> {
            if let Some(hung_up) = self.0.take() {
                let _ = hung_up.await;
                // One more turn, for the feed to meet the closed connection first.
                tokio::task::yield_now().await;
            }
            if let ExecChunk::Stdout(data) = chunk {
                self.1.extend(data);
            }
            Ok(())
        }
    }

    fn request() -> ExecRequest {
        ExecRequest {
            argv: vec!["true".into()],
            cwd: None,
            env: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_command_that_exits_without_reading_its_stdin_reports_its_exit_code() {
        let (stream, hung_up) = harness_answering(vec![(STDOUT, b"out".to_vec()), (EXIT, 3i32.to_be_bytes().to_vec())]);
        // More stdin than the connection buffers: feeding it fails once the harness hangs up, which
        // happens before the output is taken.
        let stdin = vec![b'x'; 16 * MAX_FRAME];
        let mut output = AfterHangUp(Some(hung_up), Vec::new());
        let code = exec(stream, request(), &stdin[..], &mut output).await.unwrap();
        assert_eq!((code, output.1), (3, b"out".to_vec()));
    }

    #[tokio::test]
    async fn refusals_and_broken_answers_are_told_apart() {
        let refused = wait_agent(harness_answering(vec![(ERROR, b"this sandbox runs no agent".to_vec())]).0).await;
        assert!(matches!(refused, Err(ProtoError::Refused(m)) if m == "this sandbox runs no agent"));
        let failed = exec_output(
            harness_answering(vec![(ERROR, b"no such program".to_vec())]).0,
            request(),
        )
        .await;
        assert!(matches!(failed, Err(ProtoError::Start(m)) if m == "no such program"));
        let short = wait_agent(harness_answering(vec![(EXIT, vec![0])]).0).await;
        assert!(matches!(short, Err(ProtoError::Protocol(_))));
        let closed = attach(harness_answering(Vec::new()).0, 80, 24).await;
        assert!(matches!(closed, Err(ProtoError::Protocol(_))));
    }
}
