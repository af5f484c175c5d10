//! The harness server: PID 2 of a sandbox, serving `harness.sock` ([`crate::wire::harness`]).
//!
//! It listens on `/run/lap/harness.sock`, tells the launcher it is ready, and answers pings and
//! exec requests, each connection on its own task of a single-threaded runtime. Commands run as the
//! sandbox user with every privilege dropped and under seccomp ([`super::privs`]), in a session of their own, with a
//! fixed minimal environment ([`AGENT_ENV`]) plus the session's (plain variables, stubs, proxy and CA
//! variables): nothing of `lap serve`'s environment reaches them.
//! It reaps its own children; orphans go to PID 1. The agent starts under a PTY
//! ([`crate::harness::terminal`]) as the sandbox user, in [`start_agent`] only: late, on the `start`
//! op (after the control plane cloned the repo, with the session's environment, so a warm sandbox
//! can be created before its session exists), or at once when the sandbox was created with a
//! command. It opens in `/work/repo` when there is one, else `HOME`, and the server serves its
//! viewers (the `attach` op).
//!
//! The same server also runs as a Kubernetes pod's harness container ([`serve_tcp`], `lap harness
//! --listen`): there it listens on TCP on the pod's loopback (reached by the API server's
//! port-forward), holds no proxy port (the pod's `lap vault sidecar` owns 3128) and drops no
//! privileges, because the container already runs as the unprivileged sandbox user under the Pod's
//! hardened `securityContext` ([`Become::Already`]). Every op but `proxy_listener` behaves alike.

use std::fs::File;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::net::unix::OwnedWriteHalf;

use super::files;
use super::init::READY;
use super::privs;
use super::rootfs::{HOME, USER};
use crate::harness::terminal::{self, Event, Terminal};
use crate::wire::harness::{
    self as proto, AttachRequest, ExecRequest, MAX_FRAME, PROXY_PORT, Pong, ProtoError, Request, StartReply,
    StartRequest,
};

/// Where the agent starts when the sandbox has a repository.
pub const REPO_DIR: &str = "/work/repo";
/// Frames from one viewer buffered before the server stops reading its connection.
const VIEWER_INPUT_QUEUE: usize = 64;
/// The agent's terminal, or why it could not start; unset until the agent is started.
type Agent = std::sync::OnceLock<Result<Terminal, String>>;

/// Where the harness listens, inside the sandbox.
pub const SOCKET_PATH: &str = "/run/lap/harness.sock";
/// The whole environment of a command started in the sandbox.
pub const AGENT_ENV: &[(&str, &str)] = &[
    ("HOME", HOME),
    ("USER", USER),
    ("LOGNAME", USER),
    ("SHELL", "/bin/bash"),
    ("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"),
    ("TERM", "xterm-256color"),
    ("LANG", "C.UTF-8"),
    ("HTTPS_PROXY", PROXY_URL),
    ("https_proxy", PROXY_URL),
    ("HTTP_PROXY", PROXY_URL),
    ("http_proxy", PROXY_URL),
    ("ALL_PROXY", PROXY_URL),
    ("all_proxy", PROXY_URL),
    ("NO_PROXY", "localhost,127.0.0.1"),
    ("no_proxy", "localhost,127.0.0.1"),
    ("NODE_USE_ENV_PROXY", "1"),
];
/// The egress proxy, as the sandbox's commands reach it.
const PROXY_URL: &str = "http://127.0.0.1:3128";
/// What the proxy port answers until `lap serve` has taken the listener.
const NO_PROXY_YET: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: 35\r\nconnection: close\r\n\r\nlap: the egress proxy is not ready\n";

/// The proxy listener, bound inside the sandbox's network namespace.
struct Proxy {
    listener: tokio::net::TcpListener,
    /// Cancelled once a client has taken the listener: the harness stops answering on it.
    handed_over: tokio_util::sync::CancellationToken,
}

/// The session's environment: the one the sandbox was created with, replaced by the `start` op.
/// This process serves one sandbox.
static SESSION_ENV: std::sync::RwLock<Vec<(String, String)>> = std::sync::RwLock::new(Vec::new());

fn session_env() -> Vec<(String, String)> {
    SESSION_ENV.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// How the processes the server starts become the sandbox user.
#[derive(Clone)]
enum Become {
    /// By dropping every privilege ([`privs::Drop`]): the local backend, whose server is root in the
    /// sandbox's namespaces.
    Drop(std::sync::Arc<privs::Drop>),
    /// They are already: a pod's harness container runs as the sandbox user, non-root, with no
    /// capabilities and `no_new_privs`, under the runtime's seccomp profile (the Pod's
    /// `securityContext`), so there is nothing left to drop. Commands still get a session of their own.
    Already,
}

impl Become {
    /// The sandbox user's uid, for the files written into its home.
    fn uid(&self) -> u32 {
        match self {
            Self::Drop(drop_privs) => drop_privs.uid(),
            Self::Already => nix::unistd::getuid().as_raw(),
        }
    }

    /// In a forked child before `exec`: a session of its own, then the drop. Async-signal-safe.
    fn apply(&self) -> std::io::Result<()> {
        match self {
            Self::Drop(drop_privs) => drop_privs.apply(),
            Self::Already => nix::unistd::setsid().map(|_| ()).map_err(Into::into),
        }
    }

    /// [`Self::apply`] for a child that already leads its session (the agent under its PTY).
    fn apply_in_session(&self) -> std::io::Result<()> {
        match self {
            Self::Drop(drop_privs) => drop_privs.apply_in_session(),
            Self::Already => Ok(()),
        }
    }
}

/// What every connection of one server shares.
struct Server {
    become_user: Become,
    /// The proxy port, held until `lap serve` takes it (`None`: the pod's vault sidecar holds it).
    proxy: Option<std::sync::Arc<Proxy>>,
    agent: Agent,
    /// The sandbox user's home: where commands start, and where the agent starts without a repo.
    home: String,
    /// Ports of lap's own in the sandbox, which the `connect` and `ports` ops never reach.
    reserved_ports: super::ports::Reserved,
}

impl Server {
    /// [`AGENT_ENV`] with this server's home.
    fn base_env(&self) -> impl Iterator<Item = (String, String)> + '_ {
        AGENT_ENV.iter().map(|(k, v)| {
            let v = if *k == "HOME" { self.home.as_str() } else { v };
            ((*k).to_owned(), v.to_owned())
        })
    }
}

/// A connection's write half, which for the proxy listener's hand-over must be a Unix socket.
trait Conn: tokio::io::AsyncWrite + Unpin + Send {
    /// The Unix socket this connection is, to pass a descriptor over (`None` on TCP).
    fn unix(&self) -> Option<&tokio::net::UnixStream>;
}

impl Conn for OwnedWriteHalf {
    fn unix(&self) -> Option<&tokio::net::UnixStream> {
        Some(self.as_ref())
    }
}

impl Conn for tokio::net::tcp::OwnedWriteHalf {
    fn unix(&self) -> Option<&tokio::net::UnixStream> {
        None
    }
}

/// Runs the server until the listener fails; returns the process exit code.
pub fn run(
    mut ready: File,
    settings: privs::Settings,
    session_env: Vec<(String, String)>,
    command: Option<String>,
) -> i32 {
    *SESSION_ENV.write().unwrap_or_else(|p| p.into_inner()) = session_env;
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = write!(ready, "cannot start the harness runtime: {err}");
            return 1;
        }
    };
    let drop_privs = match privs::Drop::prepare(settings) {
        Ok(drop_privs) => std::sync::Arc::new(drop_privs),
        Err(err) => {
            let _ = write!(ready, "{err}");
            return 1;
        }
    };
    runtime.block_on(async move {
        let proxy = match std::net::TcpListener::bind(("127.0.0.1", PROXY_PORT))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
        {
            Ok(listener) => std::sync::Arc::new(Proxy {
                listener,
                handed_over: tokio_util::sync::CancellationToken::new(),
            }),
            Err(err) => {
                let _ = write!(ready, "cannot listen on the proxy port {PROXY_PORT}: {err}");
                return 1;
            }
        };
        tokio::spawn(answer_until_handed_over(proxy.clone()));
        let server = std::sync::Arc::new(Server {
            become_user: Become::Drop(drop_privs),
            proxy: Some(proxy),
            agent: Agent::new(),
            home: HOME.to_owned(),
            reserved_ports: super::ports::Reserved(vec![PROXY_PORT]),
        });
        if let Some(command) = command {
            let _ = server
                .agent
                .set(start_agent(&server, command, None).map_err(|err| err.to_string()));
        }
        // A socket left by an earlier harness of this sandbox (one sandbox, one harness at a time).
        let _ = std::fs::remove_file(SOCKET_PATH);
        let listener = match UnixListener::bind(SOCKET_PATH) {
            Ok(listener) => listener,
            Err(err) => {
                let _ = write!(ready, "cannot listen on {SOCKET_PATH}: {err}");
                return 1;
            }
        };
        if write!(ready, "{READY}").is_err() {
            return 1;
        }
        drop(ready);
        loop {
            match listener.accept().await {
                Ok((conn, _)) => {
                    let (rd, wr) = conn.into_split();
                    tokio::spawn(serve_connection(server.clone(), rd, wr));
                }
                Err(err) => {
                    tracing::error!(error = %err, "accept on harness.sock failed");
                    return 1;
                }
            }
        }
    })
}

/// Serves the harness protocol on `listener` (TCP) as a Kubernetes pod's harness container does
/// (`lap harness --listen`): the same ops, framing and limits as on `harness.sock`, but no proxy
/// port (the pod's vault sidecar owns it; the `proxy_listener` op is refused) and no privilege drop
/// ([`Become::Already`]). With a `token`, each connection must first send it ([`proto::Auth`],
/// compared in constant time). The session's environment is empty until the first `start` binds
/// it. Commands start in `home` (which must exist), also their `HOME`. Returns only when accepting
/// fails.
pub async fn serve_tcp(listener: tokio::net::TcpListener, home: String, token: Option<String>) -> std::io::Result<()> {
    // The pod's own ports: this harness's, and its vault sidecar's proxy and admin ports.
    let mut reserved = vec![
        crate::sandbox::kube::manifest::PROXY_PORT,
        crate::sandbox::kube::manifest::ADMIN_PORT,
    ];
    reserved.extend(listener.local_addr().map(|a| a.port()));
    let server = std::sync::Arc::new(Server {
        become_user: Become::Already,
        proxy: None,
        agent: Agent::new(),
        home,
        reserved_ports: super::ports::Reserved(reserved),
    });
    let token = std::sync::Arc::new(token);
    loop {
        let (conn, _) = listener.accept().await?;
        let _ = conn.set_nodelay(true);
        let (rd, mut wr) = conn.into_split();
        let (server, token) = (server.clone(), token.clone());
        tokio::spawn(async move {
            let mut rd = BufReader::new(rd);
            if let Some(token) = token.as_deref()
                && !authorized(&mut rd, token).await
            {
                let _ = proto::write_frame(
                    &mut wr,
                    proto::ERROR,
                    b"this harness needs its token: the one sent is wrong or missing",
                )
                .await;
                return;
            }
            if let Err(err) = handle(rd, wr, &server).await {
                tracing::debug!(error = %err, "harness connection failed");
            }
        });
    }
}

/// Whether the connection's first line is the [`proto::Auth`] with `token`.
async fn authorized<R: tokio::io::AsyncRead + Unpin>(rd: &mut BufReader<R>, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    match proto::read_line_json::<proto::Auth, _>(rd).await {
        Ok(auth) => bool::from(auth.auth.as_bytes().ct_eq(token.as_bytes())),
        Err(_) => false,
    }
}

async fn serve_connection<R, W>(server: std::sync::Arc<Server>, rd: R, wr: W)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: Conn + 'static,
{
    if let Err(err) = handle(BufReader::new(rd), wr, &server).await {
        tracing::debug!(error = %err, "harness connection failed");
    }
}

async fn handle<R, W>(mut rd: BufReader<R>, mut wr: W, server: &Server) -> Result<(), ProtoError>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: Conn + 'static,
{
    let agent = &server.agent;
    match proto::read_line_json::<Request, _>(&mut rd).await? {
        Request::Attach(request) => match agent.get() {
            Some(Ok(terminal)) => attach(rd, wr, terminal, request).await,
            Some(Err(reason)) => proto::write_frame(&mut wr, proto::ERROR, reason.as_bytes()).await,
            None => proto::write_frame(&mut wr, proto::ERROR, b"this sandbox runs no agent").await,
        },
        Request::Start(request) => {
            let reply = StartReply {
                error: start(request, server).err(),
            };
            let mut line = serde_json::to_vec(&reply).map_err(|e| ProtoError::Protocol(e.to_string()))?;
            line.push(b'\n');
            wr.write_all(&line).await?;
            Ok(())
        }
        Request::Wait => match agent.get() {
            Some(Ok(terminal)) => {
                let code = terminal.wait().await;
                proto::write_frame(&mut wr, proto::EXIT, &code.to_be_bytes()).await
            }
            Some(Err(reason)) => proto::write_frame(&mut wr, proto::ERROR, reason.as_bytes()).await,
            None => proto::write_frame(&mut wr, proto::ERROR, b"this sandbox runs no agent").await,
        },
        Request::ProxyListener => match (&server.proxy, wr.unix()) {
            (Some(proxy), Some(conn)) => {
                send_listener(conn, &proxy.listener).await?;
                proxy.handed_over.cancel();
                Ok(())
            }
            _ => {
                let message = b"this harness holds no proxy port: the sandbox's vault runs beside it";
                proto::write_frame(&mut wr, proto::ERROR, message).await
            }
        },
        Request::Ping => {
            let mut line =
                serde_json::to_vec(&Pong { pong: proto::VERSION }).map_err(|e| ProtoError::Protocol(e.to_string()))?;
            line.push(b'\n');
            wr.write_all(&line).await?;
            Ok(())
        }
        Request::Exec(request) => exec(rd, wr, request, server).await,
        // Issue 17 part 1 (ports).
        Request::Connect(request) => super::ports::serve_connect(rd, wr, request, &server.reserved_ports).await,
        Request::Ports => super::ports::serve_ports(wr, &server.reserved_ports).await,
        // File operations (issue 17).
        Request::FsStat(request) => files(files::Op::Stat(request), rd, wr, server).await,
        Request::FsList(request) => files(files::Op::List(request), rd, wr, server).await,
        Request::FsRead(request) => files(files::Op::Read(request), rd, wr, server).await,
        Request::FsWrite(request) => files(files::Op::Write(request), rd, wr, server).await,
        Request::FsDelete(request) => files(files::Op::Delete(request), rd, wr, server).await,
    }
}

/// A file operation ([`files`]), as the sandbox user.
async fn files<R, W>(op: files::Op, rd: BufReader<R>, wr: W, server: &Server) -> Result<(), ProtoError>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin,
{
    let uid = match &server.become_user {
        Become::Drop(drop_privs) => Some(drop_privs.uid()),
        Become::Already => None,
    };
    let who = files::Who {
        uid,
        home: server.home.clone(),
    };
    files::serve(op, rd, wr, who).await
}

/// The `start` op: binds the session's environment, then starts the agent when a command is given.
/// Runs without awaiting, so two `start`s on this single-threaded server cannot interleave.
fn start(request: StartRequest, server: &Server) -> Result<(), String> {
    let agent = &server.agent;
    if request.command.is_some() && agent.get().is_some() {
        return Err("the agent of this sandbox has already started".to_owned());
    }
    *SESSION_ENV.write().unwrap_or_else(|p| p.into_inner()) = request.env;
    write_home_files(&request.home_files, &server.home, server.become_user.uid())?;
    let Some(command) = request.command else {
        return Ok(());
    };
    let started = start_agent(server, command, request.cwd.as_deref()).map_err(|err| err.to_string());
    let result = started.as_ref().map(|_| ()).map_err(Clone::clone);
    let _ = agent.set(started);
    result
}

/// Writes files into the sandbox user's home, each only when nothing is at its path yet, as that
/// user: this thread's filesystem uid and gid are the user's while it writes (which also drops the
/// capabilities that would bypass file permissions), so a link planted in the home leads nowhere
/// the user could not write anyway. Paths are relative and plain (no `..`).
fn write_home_files(files: &[crate::sandbox::HomeFile], home: &str, uid: u32) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    use std::path::{Component, Path};
    if files.is_empty() {
        return Ok(());
    }
    for file in files {
        let relative = Path::new(&file.path);
        let plain = relative.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain || file.path.is_empty() {
            return Err(format!("refusing to write `{}` outside the home directory", file.path));
        }
    }
    let (user, group) = (nix::unistd::Uid::from_raw(uid), nix::unistd::Gid::from_raw(uid));
    let old_group = nix::unistd::setfsgid(group);
    let old_user = nix::unistd::setfsuid(user);
    let written = files.iter().try_for_each(|file| {
        let path = Path::new(home).join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut out) => out.write_all(file.contents.as_bytes()),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(err) => Err(err),
        }
        .map_err(|err| std::io::Error::new(err.kind(), format!("{}: {err}", path.display())))
    });
    nix::unistd::setfsuid(old_user);
    nix::unistd::setfsgid(old_group);
    written.map_err(|err| format!("cannot write the agent's settings: {err}"))
}

/// Starts the agent under a PTY as the sandbox user, with the session's environment (the same as
/// exec'd commands get), in `cwd`, else `/work/repo` when it exists, else `HOME`. The one place an
/// agent starts.
fn start_agent(server: &Server, command: String, cwd: Option<&str>) -> Result<Terminal, terminal::TerminalError> {
    let cwd = match cwd {
        Some(cwd) => cwd,
        None if std::path::Path::new(REPO_DIR).is_dir() => REPO_DIR,
        None => server.home.as_str(),
    };
    let env = server.base_env().chain(session_env()).collect();
    let become_user = server.become_user.clone();
    let terminal = Terminal::spawn(terminal::Command {
        command,
        env,
        cwd: cwd.to_owned(),
        pre_exec: Box::new(move || become_user.apply_in_session()),
    });
    if let Err(err) = &terminal {
        tracing::error!(error = %err, "cannot start the agent");
    }
    terminal
}

/// Serves one viewer of the agent's terminal until it leaves.
async fn attach<R, W>(
    mut rd: BufReader<R>,
    mut wr: W,
    terminal: &Terminal,
    request: AttachRequest,
) -> Result<(), ProtoError>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut viewer = terminal.attach(terminal::Size::clamped(request.cols, request.rows));
    let (input_tx, mut input) = tokio::sync::mpsc::channel(VIEWER_INPUT_QUEUE);
    // Frames are read on their own task: a half-read frame must not be lost to `select!`.
    let reader = tokio::spawn(async move {
        while let Ok(Some(frame)) = proto::read_frame(&mut rd).await {
            if input_tx.send(frame).await.is_err() {
                break;
            }
        }
    });
    let result = loop {
        tokio::select! {
            event = viewer.recv() => {
                let written = match event {
                    Event::Repaint(screen) => {
                        // A repaint larger than a frame continues as output.
                        let (first, rest) = screen.split_at(screen.len().min(MAX_FRAME));
                        match proto::write_frame(&mut wr, proto::REPAINT, first).await {
                            Ok(()) => write_chunked(&mut wr, rest).await,
                            Err(err) => Err(err),
                        }
                    }
                    Event::Output(data) => write_chunked(&mut wr, &data).await,
                    Event::Viewers(n) => proto::write_frame(&mut wr, proto::VIEWERS, &n.to_be_bytes()).await,
                    Event::Exit(code) => proto::write_frame(&mut wr, proto::EXIT, &code.to_be_bytes()).await,
                };
                if let Err(err) = written {
                    break Err(err);
                }
            }
            frame = input.recv() => match frame {
                Some((proto::STDIN, data)) => {
                    // After the agent exits, typing goes nowhere; that is not the viewer's error.
                    let _ = viewer.input(&data).await;
                }
                Some((proto::RESIZE, payload)) => {
                    if let Some((cols, rows)) = proto::parse_resize(&payload) {
                        viewer.resize(terminal::Size::clamped(cols, rows));
                    }
                }
                Some((kind, _)) => break Err(ProtoError::Protocol(format!("frame kind {kind} from a viewer"))),
                None => break Ok(()),
            },
        }
    };
    reader.abort();
    result
}

/// Writes PTY output as [`proto::STDOUT`] frames of at most [`MAX_FRAME`] bytes.
async fn write_chunked(wr: &mut (impl tokio::io::AsyncWrite + Unpin), data: &[u8]) -> Result<(), ProtoError> {
    for chunk in data.chunks(MAX_FRAME) {
        proto::write_frame(wr, proto::STDOUT, chunk).await?;
    }
    Ok(())
}

/// Answers `502` on the proxy port until `lap serve` takes the listener over.
async fn answer_until_handed_over(proxy: std::sync::Arc<Proxy>) {
    loop {
        tokio::select! {
            _ = proxy.handed_over.cancelled() => return,
            accepted = proxy.listener.accept() => {
                if let Ok((mut conn, _)) = accepted {
                    tokio::spawn(async move {
                        let _ = conn.write_all(NO_PROXY_YET).await;
                        let _ = conn.shutdown().await;
                    });
                }
            }
        }
    }
}

/// Sends the proxy listener over `conn` with SCM_RIGHTS.
async fn send_listener(conn: &tokio::net::UnixStream, listener: &tokio::net::TcpListener) -> Result<(), ProtoError> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::os::fd::AsRawFd;
    let fds = [listener.as_raw_fd()];
    loop {
        conn.writable().await?;
        let sent = conn.try_io(tokio::io::Interest::WRITABLE, || {
            let iov = [std::io::IoSlice::new(&[proto::PROXY_LISTENER_BYTE])];
            Ok(sendmsg::<()>(
                conn.as_raw_fd(),
                &iov,
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )?)
        });
        match sent {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

async fn exec<R, W>(mut rd: BufReader<R>, mut wr: W, request: ExecRequest, server: &Server) -> Result<(), ProtoError>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin,
{
    let Some((program, args)) = request.argv.split_first() else {
        return proto::write_frame(&mut wr, proto::ERROR, b"empty command").await;
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(server.base_env())
        .envs(session_env())
        .envs(request.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(request.cwd.as_deref().unwrap_or(&server.home))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let become_user = server.become_user.clone();
    // SAFETY: `apply` only makes raw system calls on data computed before the fork.
    unsafe { command.pre_exec(move || become_user.apply()) };
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            let message = format!("cannot run `{program}`: {err}");
            return proto::write_frame(&mut wr, proto::ERROR, message.as_bytes()).await;
        }
    };
    let pid = child.id();
    let (Some(stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return proto::write_frame(&mut wr, proto::ERROR, b"the command's pipes are missing").await;
    };
    let (gone_tx, mut gone) = tokio::sync::oneshot::channel::<()>();
    // Client → stdin. The connection closing (not an empty STDIN frame) means the client is gone.
    let pump = tokio::spawn(async move {
        // Dropping the pipe is what closes the command's stdin.
        let mut stdin = Some(stdin);
        loop {
            match proto::read_frame(&mut rd).await {
                Ok(Some((proto::STDIN, data))) => {
                    if let Some(pipe) = stdin.as_mut()
                        && (data.is_empty() || pipe.write_all(&data).await.is_err())
                    {
                        stdin = None;
                    }
                }
                _ => {
                    let _ = gone_tx.send(());
                    return;
                }
            }
        }
    });
    let mut out_buf = vec![0u8; MAX_FRAME];
    let mut err_buf = vec![0u8; MAX_FRAME];
    let (mut out_open, mut err_open) = (true, true);
    let status = loop {
        tokio::select! {
            read = stdout.read(&mut out_buf), if out_open => match read {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => if proto::write_frame(&mut wr, proto::STDOUT, &out_buf[..n]).await.is_err() { break None },
            },
            read = stderr.read(&mut err_buf), if err_open => match read {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => if proto::write_frame(&mut wr, proto::STDERR, &err_buf[..n]).await.is_err() { break None },
            },
            _ = &mut gone => break None,
            status = child.wait(), if !out_open && !err_open => break Some(status),
        }
    };
    pump.abort();
    match status {
        Some(Ok(status)) => {
            let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            proto::write_frame(&mut wr, proto::EXIT, &code.to_be_bytes()).await
        }
        Some(Err(err)) => {
            let message = format!("cannot wait for `{program}`: {err}");
            proto::write_frame(&mut wr, proto::ERROR, message.as_bytes()).await
        }
        None => {
            // The client is gone: kill the command's whole session (its process group).
            if let Some(pid) = pid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill().await;
            Ok(())
        }
    }
}
