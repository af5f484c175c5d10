//! `lap send AGENT|SESSION TEXT`: one message over the message API, the reply on stdout.
//!
//! The target is a session id, or an agent's name or id; for an agent, its most recent live session
//! is reused (or one is created, `--new` always creates), as `lap <agent>` does. `--stream` prints
//! the reply as it arrives; `--json` prints the reply message (with `--stream`, every frame, one
//! JSON object per line).
//!
//! Ctrl-C while the turn runs aborts that turn (`POST …/abort`) and waits, at most [`ABORT_WAIT`],
//! for it to end, so the session is free for the next message; a second Ctrl-C exits at once.
//! Either way the exit code is 130.
//!
//! Every turn is read as the SSE stream of `message_stream`, also without `--stream` (then only the
//! whole reply is printed), so that while the reply is awaited a spinner on stderr says what the
//! tool is doing — above all that it is retrying a failed model request, which otherwise looks like
//! a hang. Each retry also leaves a line on stderr. Both appear only when stderr is a terminal and
//! `--quiet` is not given: piped, `lap send` prints the reply and nothing else.

use std::future::Future;
use std::io::Write;
use std::task::Poll;
use std::time::Duration;

use clap::Args as ClapArgs;
use indicatif::ProgressBar;

use super::Ctx;
use super::open::{SESSION_TITLE, no_such_agent, wait_until_ready};
use crate::client::{Client, ClientError};
use crate::error::Error;
use crate::wire::api::{CreateSession, SESSION_PAGE_MAX, Session, SessionStatus};
use crate::wire::messages::{DeltaField, EventKind, Message, Part, SendMessage, StreamFrame};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// A session id, or an agent's name or id (its live session is reused, else one is created)
    pub target: String,
    /// The message
    pub text: String,
    /// Print the reply as it arrives
    #[arg(long)]
    pub stream: bool,
    /// Start a new session even when the agent has a live one
    #[arg(long)]
    pub new: bool,
}

/// How long `lap send` waits for a turn it aborted to end: the server gives a tool
/// `ABORT_GRACE` (10 s) to honour the abort before it kills it, so the turn ends well before.
pub const ABORT_WAIT: Duration = Duration::from_secs(30);

pub async fn run(args: Args, ctx: &Ctx) -> Result<(), Error> {
    let client = ctx.client()?;
    let session = target_session(ctx, &client, &args.target, args.new).await?;
    let body = SendMessage::text(args.text);
    let id = session.id.to_string();
    let print = match (args.stream, ctx.out.json) {
        (true, true) => Print::Frames,
        (true, false) => Print::Text,
        (false, _) => Print::Nothing,
    };
    let (message, aborted) = abort_on_ctrl_c(ctx, &client, &id, stream(ctx, &client, &id, &body, print, true)).await?;
    if print == Print::Nothing {
        if ctx.out.json {
            ctx.out.json(&message);
        } else {
            ctx.out.line(message.text());
        }
    }
    if aborted {
        Err(aborted_turn(&id))
    } else {
        turn_result(&message)
    }
}

/// Runs `turn` (the send of one message) to its end; a Ctrl-C meanwhile aborts the session's
/// running turn and keeps waiting, at most [`ABORT_WAIT`], for `turn` to end with the aborted
/// reply; a second Ctrl-C gives up at once. Returns the reply and whether it was aborted.
async fn abort_on_ctrl_c<T>(
    ctx: &Ctx,
    client: &Client,
    id: &str,
    turn: impl Future<Output = Result<T, Error>>,
) -> Result<(T, bool), Error> {
    tokio::pin!(turn);
    tokio::select! {
        reply = &mut turn => return reply.map(|r| (r, false)),
        _ = tokio::signal::ctrl_c() => {}
    }
    // A Ctrl-C counts from the listener's first poll: listen before saying a second one exits, so
    // one pressed right after the message is not lost.
    let mut again = std::pin::pin!(tokio::signal::ctrl_c());
    if std::future::poll_fn(|cx| Poll::Ready(again.as_mut().poll(cx).is_ready())).await {
        return Err(left_running(id));
    }
    ctx.out.status(format!(
        "aborting the turn of session {id} (Ctrl-C again exits at once)"
    ));
    let abort = async { client.abort(id).await.map_err(Error::from) };
    tokio::pin!(abort);
    let aborted = tokio::select! {
        aborted = &mut abort => aborted?,
        _ = &mut again => return Err(left_running(id)),
    };
    if !aborted.aborted {
        // The turn had ended just before the abort arrived: its reply is on its way.
        ctx.out.status("the turn had already ended");
    }
    tokio::select! {
        reply = &mut turn => reply.map(|r| (r, aborted.aborted)),
        _ = &mut again => Err(left_running(id)),
        _ = tokio::time::sleep(ABORT_WAIT) => Err(Error::failed_with_hint(
            format!("the aborted turn of session {id} did not end within {}s", ABORT_WAIT.as_secs()),
            format!("see `lap sessions show {id}`; `lap sessions abort {id}` asks again, `lap sessions delete {id}` stops the session"),
        )),
    }
}

fn aborted_turn(id: &str) -> Error {
    Error::Interrupted {
        message: format!("aborted the turn of session {id}"),
        hint: Some(format!(
            "the session stays; send the next message with `lap send {id} …`"
        )),
    }
}

fn left_running(id: &str) -> Error {
    Error::Interrupted {
        message: format!("stopped waiting; the abort of the turn of session {id} may still be under way"),
        hint: Some(format!(
            "`lap sessions show {id}` says how the session is; `lap sessions abort {id}` asks again"
        )),
    }
}

/// The session a message goes to: `target` as a session id, else the live session of the agent
/// `target` names (created when there is none, or with `new`), once ready.
pub async fn target_session(ctx: &Ctx, client: &Client, target: &str, new: bool) -> Result<Session, Error> {
    if uuid::Uuid::parse_str(target).is_ok() {
        match client.get_session(target).await {
            Ok(session) => return wait_until_ready(ctx, client, session, target).await,
            Err(ClientError::Api { status: 404, .. }) => {}
            Err(err) => return Err(err.into()),
        }
    }
    let agent = match client.get_agent(target).await {
        Ok(agent) => agent,
        Err(ClientError::Api { status: 404, .. }) => return Err(no_such_agent(client, target).await),
        Err(err) => return Err(err.into()),
    };
    if agent.supports_tui {
        return Err(Error::failed_with_hint(
            format!("agent `{}` runs the TUI harness `{}`", agent.name, agent.harness_id),
            format!(
                "open its terminal with `lap {}`, or use an API harness such as claude-agent-sdk",
                agent.name
            ),
        ));
    }
    let live = if new {
        None
    } else {
        client
            .list_sessions(Some(&agent.id.to_string()), SESSION_PAGE_MAX)
            .await?
            .into_iter()
            .find(|s| s.status.is_live())
    };
    let session = match live {
        Some(session) => session,
        None => {
            let body = CreateSession {
                title: Some(SESSION_TITLE.to_owned()),
            };
            let session = client.create_session(&agent.id.to_string(), &body).await?;
            ctx.out.status(format!("started session {}", session.id));
            session
        }
    };
    let session = wait_until_ready(ctx, client, session, &agent.name).await?;
    // A paused or hibernated session is woken by the server for the message.
    if !matches!(
        session.status,
        SessionStatus::Ready | SessionStatus::Paused | SessionStatus::Hibernated
    ) {
        return Err(Error::failed_with_hint(
            format!(
                "session {} is {}: {}",
                session.id,
                session.status.as_str(),
                session.failure_reason.as_deref().unwrap_or("no reason given")
            ),
            format!(
                "see `lap sessions show {}`; `lap send --new` starts another",
                session.id
            ),
        ));
    }
    Ok(session)
}

/// What [`stream`] prints on stdout as the turn goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Print {
    /// The reply's text as it arrives.
    Text,
    /// Every frame, as one JSON object a line.
    Frames,
    /// Nothing: the caller prints the reply.
    Nothing,
}

/// Sends `body` with `message_stream`, printing as `print` says while stderr (a terminal only)
/// tells what the tool is doing: retry lines, and with `spinner` a spinner; returns the reply.
pub async fn stream(
    ctx: &Ctx,
    client: &Client,
    id: &str,
    body: &SendMessage,
    print: Print,
    spinner: bool,
) -> Result<Message, Error> {
    let mut frames = client.message_stream(id, body).await?;
    let mut progress = Progress::new(ctx, spinner);
    let mut stdout = std::io::stdout();
    let mut printed_any = false;
    let mut at_line_start = true;
    while let Some(frame) = frames.next().await? {
        if print == Print::Frames {
            ctx.out.line(serde_json::to_string(&frame).unwrap_or_default());
        }
        match frame {
            StreamFrame::HarnessEvent { event } => {
                let text = match &event.kind {
                    EventKind::ItemDelta {
                        field: DeltaField::Text,
                        delta,
                        ..
                    } => Some(delta.clone()),
                    EventKind::ItemStarted { .. } if printed_any && !at_line_start => Some("\n".to_owned()),
                    _ => None,
                };
                if let Some(text) = text.filter(|_| print == Print::Text) {
                    progress.clear();
                    printed_any = true;
                    at_line_start = text.ends_with('\n');
                    let _ = stdout.write_all(text.as_bytes());
                    let _ = stdout.flush();
                }
                progress.event(&event.kind, at_line_start);
            }
            StreamFrame::Done { message: Some(message) } => {
                progress.clear();
                if print == Print::Text {
                    if !printed_any {
                        // No deltas came (a tool that sends only whole parts): print the reply.
                        let _ = write!(stdout, "{}", message.text());
                        at_line_start = message.text().ends_with('\n');
                    }
                    if !at_line_start || !printed_any {
                        let _ = writeln!(stdout);
                    }
                }
                return Ok(message);
            }
            StreamFrame::Error { message } => {
                progress.clear();
                if message.contains("TUI harness") {
                    return Err(tui_session(id, &message));
                }
                return Err(Error::failed_with_hint(
                    message,
                    format!("see the conversation with GET …/sessions/{id}/messages"),
                ));
            }
            _ => {}
        }
    }
    Err(Error::failed_with_hint(
        "the stream ended before the reply",
        format!("see the conversation with GET …/sessions/{id}/messages"),
    ))
}

/// What the person at the terminal sees of a turn on stderr: a spinner while the reply is awaited,
/// saying what the tool does (retrying a model request, running a tool), and one line per retry
/// that stays. Taken down while reply text is printed, and back (on a line of its own) at the next
/// retry or tool call. Nothing at all when stderr is no terminal or with `--quiet`. Without
/// `spinner` (`lap chat`, whose line editor owns the terminal) only the retry lines.
struct Progress<'a> {
    ctx: &'a Ctx,
    bar: Option<ProgressBar>,
    spinner: bool,
}

/// The spinner's message while nothing else is known.
const WAITING: &str = "waiting for the reply";

impl<'a> Progress<'a> {
    fn new(ctx: &'a Ctx, spinner: bool) -> Self {
        Self {
            ctx,
            bar: spinner.then(|| ctx.out.spinner(WAITING)),
            spinner,
        }
    }

    /// Shows what `kind` says the tool is doing; `at_line_start` is whether the reply printed so
    /// far ends a line (else the spinner opens a line of its own).
    fn event(&mut self, kind: &EventKind, at_line_start: bool) {
        let message = match kind {
            EventKind::TurnStatus {
                status,
                attempt,
                delay_ms,
                http_status,
            } => {
                let line = status_line(status, *attempt, *delay_ms, *http_status);
                if self.spinner {
                    self.show(&line, at_line_start).println(format!("[{line}]"));
                } else if self.ctx.out.on_terminal() {
                    let open = if at_line_start { "" } else { "\n" };
                    eprintln!("{open}[{line}]");
                }
                return;
            }
            EventKind::ItemStarted {
                item: Part::Tool { tool, .. },
            } => format!("running `{tool}`"),
            EventKind::ItemCompleted {
                item: Part::Tool { .. },
            } => WAITING.to_owned(),
            _ => return,
        };
        if self.spinner {
            self.show(&message, at_line_start);
        }
    }

    /// The spinner, with `message`; started again if reply text took it down.
    fn show(&mut self, message: &str, at_line_start: bool) -> &ProgressBar {
        let ctx = self.ctx;
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ctx.out.spinner("");
            if !bar.is_hidden() && !at_line_start {
                eprintln!();
            }
            bar
        });
        bar.set_message(message.to_owned());
        bar
    }

    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress<'_> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A `turn.status` event in words: `retrying the model request (attempt 2, HTTP 529) in 1.5 s`.
fn status_line(status: &str, attempt: Option<u64>, delay_ms: Option<u64>, http_status: Option<u16>) -> String {
    let what = match status {
        "retrying" => "retrying the model request".to_owned(),
        other => format!("the agent is {other}"),
    };
    let details: Vec<String> = [
        attempt.map(|a| format!("attempt {a}")),
        http_status.map(|s| format!("HTTP {s}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut line = what;
    if !details.is_empty() {
        line.push_str(&format!(" ({})", details.join(", ")));
    }
    if let Some(ms) = delay_ms {
        line.push_str(&format!(" in {:.1} s", ms as f64 / 1000.0));
    }
    line
}

/// A reply whose turn failed is an error (after its text was printed).
pub fn turn_result(message: &Message) -> Result<(), Error> {
    match &message.info.error {
        Some(error) => Err(Error::failed_with_hint(
            format!("the agent's turn failed ({}): {}", error.name, error.data.message),
            "see `lap sessions show` for the session, and its egress with `lap sessions egress`",
        )),
        None => Ok(()),
    }
}

fn tui_session(id: &str, text: &str) -> Error {
    Error::failed_with_hint(
        format!("session {id} answered: {text}"),
        format!("attach its terminal with `lap attach {id}`"),
    )
}

#[cfg(test)]
mod tests {
    use super::status_line;

    #[test]
    fn a_retry_reads_with_its_attempt_status_and_delay() {
        assert_eq!(
            status_line("retrying", Some(2), Some(1500), Some(529)),
            "retrying the model request (attempt 2, HTTP 529) in 1.5 s"
        );
        assert_eq!(status_line("retrying", None, None, None), "retrying the model request");
        assert_eq!(status_line("compacting", None, None, None), "the agent is compacting");
    }
}
