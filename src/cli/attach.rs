//! `lap attach SESSION`: this terminal becomes the session's terminal, like ssh.
//!
//! Raw mode while attached (only when stdin is a terminal), restored on every exit path; the window
//! size follows SIGWINCH; the detach keys (Ctrl-D alone by default) leave the agent running and say
//! how to come back. When the agent exits, `lap` exits with its code. When stdin is not a terminal,
//! it is streamed as is and its end is sent as the terminal's end-of-file (Ctrl-D), so
//! `printf 'ls\nexit\n' | lap attach ID` works in scripts. [`attach`] is shared with `lap <agent>`.

use std::io::{IsTerminal, Read, Write};

use clap::Args as ClapArgs;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::Ctx;
use crate::client::{Client, NoTerminal, TtyLocation, locate_tty, session_target};
use crate::error::Error;
use crate::platform::{TerminalSignal, TerminalSignals};
use crate::term::{DEFAULT_DETACH_KEYS, DetachKeys, DetachMatcher, Keys, RawMode};
use crate::wire::api::{Session, SessionStatus};
use crate::wire::tty::{Control, KEEPALIVE, ServerMessage};

/// Bytes read from stdin at once.
const STDIN_CHUNK: usize = 4096;
/// Chunks of stdin buffered before reading pauses.
const STDIN_QUEUE: usize = 16;
/// Reconnection attempts after a dropped connection before giving up.
const RECONNECT_ATTEMPTS: u32 = 5;
/// The first reconnection delay; each next one doubles, up to [`RECONNECT_CAP`].
const RECONNECT_BASE: std::time::Duration = std::time::Duration::from_millis(250);
const RECONNECT_CAP: std::time::Duration = std::time::Duration::from_secs(4);
/// What a terminal sends for end-of-file.
const EOT: u8 = 0x04;
/// After piped stdin ended: how long the agent's terminal must have been quiet (and the last
/// Ctrl-D ago) before Ctrl-D is sent again. A Ctrl-D that reaches a shell while it runs a command, or
/// before its line editor is up, is swallowed by the terminal's mode switch; sent again once the
/// shell is waiting at its prompt, it ends the input as a pipe's end would.
const EOF_REPEAT: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Session id, or its URL (`<server>/sessions/<id>`, as LAP's CLI and the web UI show it)
    #[arg(value_name = "ID|URL")]
    pub session: String,
    #[command(flatten)]
    pub detach: DetachArgs,
}

impl Args {
    /// `lap attach TARGET` with the default detach keys (what `lap --resume TARGET` means).
    pub fn new(session: String) -> Self {
        Self {
            session,
            detach: DetachArgs {
                detach_keys: DEFAULT_DETACH_KEYS.to_owned(),
            },
        }
    }
}

#[derive(Debug, Clone, ClapArgs)]
pub struct DetachArgs {
    /// Keys that detach, e.g. `ctrl-d`, `ctrl-p,ctrl-q`; `none` never detaches
    #[arg(long, value_name = "KEYS", default_value = DEFAULT_DETACH_KEYS)]
    pub detach_keys: String,
}

impl DetachArgs {
    pub fn keys(&self) -> Result<DetachKeys, Error> {
        DetachKeys::parse(&self.detach_keys).map_err(|e| Error::usage(e.to_string(), "see `lap attach --help`"))
    }
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<(), Error> {
    let keys = args.detach.keys()?;
    let target = session_target(&args.session).ok_or_else(|| {
        Error::usage(
            format!("'{}' is not a session id or sessions URL", args.session),
            "give the id from `lap sessions list`, or a URL such as http://127.0.0.1:3000/sessions/<id>",
        )
    })?;
    let client = match &target.server {
        Some(server) if server.trim_end_matches('/') != ctx.settings.url.value.trim_end_matches('/') => {
            ctx.out.status(format!("using the server from the URL: {server}"));
            ctx.client_for(server)?
        }
        _ => ctx.client()?,
    };
    let session = client.get_session(&target.id).await?;
    attach(ctx, &client, &session, keys).await
}

/// How an attachment ended.
enum End {
    Exit(i32),
    Detached,
    Closed(String),
    Signal(i32),
}

/// The error for a session that cannot be attached to (not `ready`).
fn not_ready(session: &Session) -> Error {
    let id = session.id;
    Error::failed_with_hint(
        format!(
            "session {id} is {}{}",
            session.status.as_str(),
            session
                .failure_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        format!("`lap sessions show {id}` has the details"),
    )
}

/// What this side types: stdin, once for all connections, and the detach keys watched in it.
struct Input {
    stdin: tokio::sync::mpsc::Receiver<Vec<u8>>,
    open: bool,
    matcher: DetachMatcher,
    interactive: bool,
}

/// Attaches this terminal to a ready session until the agent exits or the user detaches. A dropped
/// connection is retried, visibly, with backoff while the session stays ready.
pub async fn attach(ctx: &Ctx, client: &Client, session: &Session, keys: DetachKeys) -> Result<(), Error> {
    let id = session.id;
    // A paused or hibernated session is woken by the server on attach.
    if !matches!(
        session.status,
        SessionStatus::Ready | SessionStatus::Paused | SessionStatus::Hibernated
    ) {
        return Err(not_ready(session));
    }
    if !session.supports_tui {
        return Err(Error::failed_with_hint(
            format!("session {id} has no terminal"),
            format!("its harness is driven through the message API: `lap chat {id}` or `lap send {id} TEXT`"),
        ));
    }
    let env = &ctx.settings.env;
    let url = match locate_tty(client.base(), session, env.tty_fallback.as_deref()) {
        Ok(TtyLocation::Url(url)) => url,
        Ok(TtyLocation::Fallback(url)) => {
            ctx.out.status("(sandbox_url is in-cluster — using LAP_TTY_FALLBACK)");
            url
        }
        Err(err @ NoTerminal::InCluster(_)) => {
            return Err(Error::failed_with_hint(
                err.to_string(),
                "export LAP_TTY_FALLBACK=ws://host:port/tty (your platform operator has it), or upgrade the server; \
                 see docs/troubleshooting.md#tty-fallback",
            ));
        }
        Err(err) => {
            return Err(Error::failed_with_hint(
                err.to_string(),
                "upgrade the server, or set LAP_TTY_FALLBACK=ws://host:port/tty",
            ));
        }
    };
    let token = session
        .tty_token
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| env.tty_token.clone())
        .unwrap_or_default();
    let interactive = std::io::stdin().is_terminal();
    if interactive && !keys.is_none() {
        ctx.out.status(format!("attached to {id}; press {keys} to detach"));
    }
    let mut input = Input {
        stdin: read_stdin(),
        open: true,
        matcher: DetachMatcher::new(keys),
        interactive,
    };
    let mut failures = 0u32;
    let end = loop {
        let reason = match client.connect_tty(&url, &token).await {
            Ok(mut tty) => {
                failures = 0;
                let end = session_pump(&mut tty, &mut input).await;
                let _ = tty.socket.close(None).await;
                match end? {
                    End::Closed(reason) => reason,
                    other => break other,
                }
            }
            // The first connection's error is the answer (e.g. 401); later ones are retried.
            Err(err) if failures == 0 && input.open && !reconnecting_allowed(&err) => return Err(err.into()),
            Err(err) => err.to_string(),
        };
        failures += 1;
        if failures > RECONNECT_ATTEMPTS {
            break End::Closed(reason);
        }
        let delay = RECONNECT_BASE.saturating_mul(1 << (failures - 1)).min(RECONNECT_CAP);
        ctx.out.status(format!(
            "\r\n[ws closed{}] reconnecting in {:.1}s (attempt {failures} of {RECONNECT_ATTEMPTS})",
            if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            },
            delay.as_secs_f32()
        ));
        tokio::time::sleep(delay).await;
        match client.get_session(&id.to_string()).await {
            Ok(now)
                if matches!(
                    now.status,
                    SessionStatus::Ready | SessionStatus::Paused | SessionStatus::Hibernated
                ) => {}
            Ok(now) => return Err(not_ready(&now)),
            // The server itself may be what is down: keep trying.
            Err(_) => {}
        }
    };
    match end {
        End::Exit(0) => Ok(()),
        // Like ssh: our exit code is the agent's.
        End::Exit(code) => std::process::exit(code),
        End::Detached => {
            ctx.out.status(format!(
                "\ndetached; the session keeps running: `lap attach {id}` to come back"
            ));
            Ok(())
        }
        End::Signal(signal) => std::process::exit(128 + signal),
        End::Closed(reason) => Err(Error::failed_with_hint(
            format!(
                "[ws closed{}]",
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                }
            ),
            format!("`lap attach {id}` tries again; see docs/troubleshooting.md#terminal-dropped"),
        )),
    }
}

/// Whether a failed first connection is worth retrying (the network, not a refusal).
fn reconnecting_allowed(err: &crate::client::ClientError) -> bool {
    !matches!(
        err,
        crate::client::ClientError::Api { .. } | crate::client::ClientError::BadUrl(_)
    )
}

/// One connection: the initial size, raw mode while it lasts, then the relay.
async fn session_pump(tty: &mut crate::client::TtySocket, input: &mut Input) -> Result<End, Error> {
    let (cols, rows) = crate::term::size();
    if tty
        .socket
        .send(Message::Text(Control::resize(cols, rows).to_text().into()))
        .await
        .is_err()
    {
        return Ok(End::Closed("the connection closed at once".to_owned()));
    }
    let raw = if input.interactive {
        Some(RawMode::enable().map_err(|e| Error::io("cannot put the terminal in raw mode", e))?)
    } else {
        None
    };
    let end = pump(tty, input).await;
    drop(raw);
    end
}

/// Relays stdin, stdout, window changes and keepalives until the attachment ends.
async fn pump(tty: &mut crate::client::TtySocket, input: &mut Input) -> Result<End, Error> {
    let mut signals = TerminalSignals::new().map_err(|e| Error::io("cannot watch signals", e))?;
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    let mut eof_check = tokio::time::interval(EOF_REPEAT / 4);
    let (mut last_output, mut last_eot) = (std::time::Instant::now(), None::<std::time::Instant>);
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            chunk = input.stdin.recv(), if input.open => {
                let (data, detach) = match chunk {
                    Some(data) if input.interactive => match input.matcher.feed(&data) {
                        Keys::Forward(data) => (data, false),
                        Keys::Detach(data) => (data, true),
                    },
                    Some(data) => (data, false),
                    None => {
                        input.open = false;
                        last_eot = Some(std::time::Instant::now());
                        (vec![EOT], false)
                    }
                };
                if !data.is_empty() && let Err(err) = tty.socket.send(Message::Binary(data.into())).await {
                    return Ok(End::Closed(err.to_string()));
                }
                if detach {
                    return Ok(End::Detached);
                }
            }
            _ = eof_check.tick(), if !input.open && !input.interactive => {
                let quiet = last_output.elapsed() >= EOF_REPEAT;
                if quiet && last_eot.is_none_or(|at| at.elapsed() >= EOF_REPEAT) {
                    last_eot = Some(std::time::Instant::now());
                    if let Err(err) = tty.socket.send(Message::Binary(vec![EOT].into())).await {
                        return Ok(End::Closed(err.to_string()));
                    }
                }
            }
            msg = tty.socket.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    last_output = std::time::Instant::now();
                    write_out(&mut stdout, &data)?
                }
                Some(Ok(Message::Text(text))) => match tty.typed.then(|| ServerMessage::parse(text.as_str())).flatten() {
                    Some(ServerMessage::Exit { code }) => return Ok(End::Exit(code)),
                    Some(ServerMessage::Error { message }) => return Ok(End::Closed(message)),
                    Some(ServerMessage::Repaint | ServerMessage::Viewers { .. }) => {}
                    None => write_out(&mut stdout, text.as_bytes())?,
                },
                Some(Ok(Message::Close(frame))) => {
                    return Ok(End::Closed(frame.map(|f| format!("code={} {}", u16::from(f.code), f.reason)).unwrap_or_default()));
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Ok(End::Closed(err.to_string())),
                None => return Ok(End::Closed(String::new())),
            },
            signal = signals.recv() => match signal {
                TerminalSignal::Resize => {
                    let (cols, rows) = crate::term::size();
                    let resize = Message::Text(Control::resize(cols, rows).to_text().into());
                    if let Err(err) = tty.socket.send(resize).await {
                        return Ok(End::Closed(err.to_string()));
                    }
                }
                TerminalSignal::End(signal) => return Ok(End::Signal(signal)),
            },
            _ = keepalive.tick() => {
                if let Err(err) = tty.socket.send(Message::Ping(Vec::new().into())).await {
                    return Ok(End::Closed(err.to_string()));
                }
            }
        }
    }
}

fn write_out(stdout: &mut std::io::Stdout, data: &[u8]) -> Result<(), Error> {
    let mut lock = stdout.lock();
    lock.write_all(data)
        .and_then(|()| lock.flush())
        .map_err(|e| Error::io("cannot write to the terminal", e))
}

/// Reads stdin on a thread of its own (reads block); the channel closes at end-of-file.
fn read_stdin() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(STDIN_QUEUE);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; STDIN_CHUNK];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}
