//! The message API's service: one conversation per session of an API harness.
//!
//! A [`Conversation`] owns the tool process of its session (started inside the sandbox through the
//! backend's `exec_stream` on the first message, started again — resuming the tool's own
//! conversation id — after it exited or after a restart of `lap serve`), the open turn, and the
//! event log. Events are numbered under one lock, folded into the turn's assistant message, kept
//! in memory for late subscribers, written to the store in order by one writer task, and broadcast
//! to live subscribers. A turn ends with exactly one `turn.completed`: the tool's own, or one
//! synthesised when the process exits, is killed, or an abort is not honoured in time. Every wait
//! on the tool has a deadline: it must name its conversation within [`ToolDeadlines::start`]
//! (handshake, server readiness, resume), a turn may not go [`ToolDeadlines::silence`] without a
//! line from it (both resolved with `lap serve`'s settings), and an
//! interrupted turn must end within [`ABORT_GRACE`]; past one, the tool is stopped and the turn
//! fails with an error naming the tool, what it waited for, and a hint. Messages count as activity
//! for the idle reaper.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::{Control, REPO_DIR};
use crate::drivers::{Driver, new_id};
use crate::sandbox::{ExecChunk, ExecSpec, Sandbox};
use crate::settings::ToolDeadlines;
use crate::store::{SessionRow, Store, StoreError};
use crate::wire::api::{Agent, SessionStatus};
use crate::wire::messages::{
    Event, EventKind, Message, MessageBuilder, MessageInfo, MessageTime, Part, Role, TurnError, TurnOutcome,
};

/// Live subscribers fall behind after this many events.
const BROADCAST: usize = 4096;
/// Recent events kept in memory, for subscribers that ask for them.
const RECENT: usize = 2048;
/// How long an interrupted tool has to end its turn before it is killed.
const ABORT_GRACE: Duration = Duration::from_secs(10);
/// How often a tool's deadlines are checked.
const WATCH_TICK: Duration = Duration::from_secs(1);
/// How much of the tool's stderr is kept for the error of a turn it ended by exiting.
const STDERR_TAIL: usize = 2048;
/// Longest line the tool may print.
const MAX_LINE: usize = 32 * 1024 * 1024;
/// Writes and lines queued for a tool process.
const PIPE_QUEUE: usize = 64;

/// The conversations of `lap serve`, by session.
pub struct Messages {
    conversations: Registry,
    owner: Owner,
}

/// What every conversation's tasks answer to: the deadlines its tool is held to, and the tracker
/// and shutdown token of `lap serve` ([`super::Services::session_tasks`]). Each task ends on
/// shutdown: the tool's (its process runs in the sandbox, which outlives `lap serve`), its deadline
/// watcher and abort timer at once, its writer once it stored what was queued.
#[derive(Clone)]
struct Owner {
    deadlines: ToolDeadlines,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Messages {
    /// No conversation yet; each one's tool is held to `deadlines`, its tasks spawned on `tasks`
    /// and ended by `shutdown`.
    pub fn new(deadlines: ToolDeadlines, tasks: TaskTracker, shutdown: CancellationToken) -> Self {
        Self {
            conversations: Registry::default(),
            owner: Owner {
                deadlines,
                tasks,
                shutdown,
            },
        }
    }
}

/// Conversations by session; a conversation whose session has ended takes itself out.
type Registry = Arc<Mutex<HashMap<Uuid, Arc<Conversation>>>>;
/// What a conversation holds of its registry.
type WeakRegistry = std::sync::Weak<Mutex<HashMap<Uuid, Arc<Conversation>>>>;

/// Why a message request cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("session `{0}` not found")]
    NotFound(String),
    #[error("session {id} is {status}, not ready")]
    NotReady { id: Uuid, status: String },
    /// The session runs a terminal harness; LAP answers with a pointer to the terminal.
    #[error("session {0} runs a TUI harness")]
    Tui(Uuid),
    #[error("the `{0}` harness cannot be driven through the message API by this build")]
    Unsupported(String),
    #[error("a turn is already running in session {0}")]
    Busy(Uuid),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The session was paused or hibernated and could not be woken.
    #[error(transparent)]
    Wake(Box<super::ControlError>),
}

/// A turn just started.
pub struct Turn {
    /// The id of the assistant message the turn produces (`turn_id` of its events).
    pub id: String,
    /// Every event from before the turn started on.
    pub events: broadcast::Receiver<Event>,
    /// The assistant message, once the turn is over and stored.
    pub done: oneshot::Receiver<Message>,
}

/// A live view of a session's events.
pub struct Subscription {
    /// Events already there, oldest first.
    pub backlog: Vec<Event>,
    /// Later events (`None` for a TUI session: there are none).
    pub live: Option<broadcast::Receiver<Event>>,
}

impl Control {
    /// The session, or why it does not exist.
    async fn message_session(&self, id: &str) -> Result<SessionRow, MessageError> {
        let uuid = Uuid::parse_str(id).map_err(|_| MessageError::NotFound(id.to_owned()))?;
        self.store
            .get_session(uuid)
            .await?
            .ok_or_else(|| MessageError::NotFound(id.to_owned()))
    }

    /// The conversation of a ready API session.
    async fn conversation(&self, id: &str) -> Result<Arc<Conversation>, MessageError> {
        let row = self.message_session(id).await?;
        if crate::tools::find(&row.harness_id).is_none_or(|h| h.supports_tui()) {
            return Err(MessageError::Tui(row.id));
        }
        let (SessionStatus::Ready, Some(sandbox_id)) = (&row.status, row.sandbox_id.clone()) else {
            return Err(MessageError::NotReady {
                id: row.id,
                status: row.status.as_str().to_owned(),
            });
        };
        if crate::drivers::driver(&row.harness_id).is_none() {
            return Err(MessageError::Unsupported(row.harness_id));
        }
        let existing = self
            .messages
            .conversations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&row.id)
            .cloned();
        if let Some(conversation) = existing.filter(|c| c.sandbox_id == sandbox_id) {
            return Ok(conversation);
        }
        let agent = self
            .store
            .find_agent(&row.agent_id.to_string())
            .await?
            .ok_or_else(|| MessageError::NotFound(format!("{} (its agent is gone)", row.id)))?;
        let next_seq = self.store.last_event_seq(row.id).await? + 1;
        // A tool that cannot resume (a fresh sandbox after a restart) is told the conversation so
        // far with its first turn.
        let prior = match row.harness_session_id {
            Some(_) => Vec::new(),
            None => self.store.messages(row.id).await?,
        };
        let fresh = Conversation::open(
            &row,
            sandbox_id.clone(),
            agent,
            (
                self.sandbox.clone(),
                self.store.clone(),
                Arc::downgrade(&self.messages.conversations),
                self.messages.owner.clone(),
            ),
            (next_seq, prior),
        );
        let mut conversations = self.messages.conversations.lock().unwrap_or_else(|p| p.into_inner());
        match conversations.get(&row.id) {
            Some(current) if current.sandbox_id == sandbox_id => Ok(current.clone()),
            current => {
                // The session has a new sandbox (restarted): the old tool process goes.
                if let Some(old) = current {
                    old.stop();
                }
                conversations.insert(row.id, fresh.clone());
                Ok(fresh)
            }
        }
    }

    /// Hands a user message to the session's agent and starts a turn.
    pub async fn send_message(&self, id: &str, text: String) -> Result<Turn, MessageError> {
        // A paused or hibernated session wakes by itself for a message (control/workspace.rs).
        self.wake_id(id).await.map_err(|e| MessageError::Wake(Box::new(e)))?;
        let conversation = self.conversation(id).await?;
        let turn = conversation.send(text)?;
        self.store.touch_session(conversation.session).await?;
        Ok(turn)
    }

    /// Interrupts the running turn of a session; `false` when none was running.
    pub async fn abort_turn(&self, id: &str) -> Result<bool, MessageError> {
        match self.conversation(id).await {
            Ok(conversation) => Ok(conversation.abort()),
            Err(MessageError::Tui(_)) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// A session's conversation, oldest first (empty for a TUI session).
    pub async fn message_history(&self, id: &str) -> Result<Vec<Message>, MessageError> {
        let row = self.message_session(id).await?;
        Ok(self.store.messages(row.id).await?)
    }

    /// A session's events after `after` (`None`: only new ones) and the live ones that follow.
    pub async fn subscribe_events(&self, id: &str, after: Option<u64>) -> Result<Subscription, MessageError> {
        let conversation = match self.conversation(id).await {
            Ok(conversation) => conversation,
            Err(MessageError::Tui(_)) => {
                return Ok(Subscription {
                    backlog: Vec::new(),
                    live: None,
                });
            }
            Err(err) => return Err(err),
        };
        let (live, recent) = {
            let state = conversation.lock();
            let recent: Vec<Event> = match after {
                Some(after) => state.recent.iter().filter(|e| e.seq > after).cloned().collect(),
                None => Vec::new(),
            };
            (conversation.events.subscribe(), recent)
        };
        let mut backlog = Vec::new();
        if let Some(after) = after {
            let first_recent = recent.first().map(|e| e.seq);
            if first_recent.is_none_or(|first| first > after + 1) {
                let stored = self
                    .store
                    .events(conversation.session, after, RECENT as u32 * 8)
                    .await?;
                backlog.extend(
                    stored
                        .into_iter()
                        .filter(|e| first_recent.is_none_or(|first| e.seq < first)),
                );
            }
        }
        backlog.extend(recent);
        Ok(Subscription {
            backlog,
            live: Some(live),
        })
    }
}

/// One session's conversation with its tool.
struct Conversation {
    session: Uuid,
    sandbox_id: String,
    agent: Agent,
    sandbox: Arc<dyn Sandbox>,
    store: Store,
    registry: WeakRegistry,
    owner: Owner,
    events: broadcast::Sender<Event>,
    writer: mpsc::UnboundedSender<Write>,
    state: Mutex<State>,
}

struct State {
    next_seq: u64,
    recent: VecDeque<Event>,
    /// The tool's own conversation id, to resume.
    native: Option<String>,
    /// The conversation before this tool's, replayed with its first turn (after a restart).
    prior: Vec<Message>,
    proc: Option<Proc>,
    generation: u64,
    turn: Option<OpenTurn>,
}

/// A running tool process.
struct Proc {
    generation: u64,
    stdin: mpsc::Sender<Vec<u8>>,
    kill: CancellationToken,
    driver: Arc<Mutex<Box<dyn Driver>>>,
    /// Started with `--resume` (or the tool's equivalent).
    resumed: bool,
    /// The tool named its conversation (so a resume worked).
    started: bool,
    /// Resuming failed with an error of the tool's before it named a conversation; the process is
    /// being stopped to start a new one.
    resume_failed: bool,
    /// When it started, and when it last printed a line or was handed a turn.
    since: tokio::time::Instant,
    active: tokio::time::Instant,
    /// Why it was stopped at a deadline (the open turn's error).
    stalled: Option<String>,
}

struct OpenTurn {
    id: String,
    /// The user's message that opened the turn, and what it said.
    user_id: String,
    input: String,
    builder: MessageBuilder,
    done: Option<oneshot::Sender<Message>>,
    aborting: bool,
    /// Sent again to a fresh conversation once, after a resume failed.
    retried: bool,
}

/// What the writer task stores, in order.
enum Write {
    Event(Event),
    Message(Message, Option<oneshot::Sender<Message>>),
    Native(String),
    /// Every stored message, once everything sent before is stored.
    History(oneshot::Sender<Vec<Message>>),
}

/// How a tool process ended.
enum Ended {
    Killed,
    Exited(Result<i32, String>, String),
}

impl Conversation {
    fn open(
        row: &SessionRow,
        sandbox_id: String,
        agent: Agent,
        (sandbox, store, registry, owner): (Arc<dyn Sandbox>, Store, WeakRegistry, Owner),
        (next_seq, prior): (u64, Vec<Message>),
    ) -> Arc<Self> {
        let (writer, writes) = mpsc::unbounded_channel();
        owner
            .tasks
            .spawn(write_loop(store.clone(), row.id, writes, owner.shutdown.clone()));
        Arc::new(Self {
            session: row.id,
            sandbox_id,
            agent,
            sandbox,
            store,
            registry,
            owner,
            events: broadcast::channel(BROADCAST).0,
            writer,
            state: Mutex::new(State {
                next_seq,
                recent: VecDeque::new(),
                native: row.harness_session_id.clone(),
                prior,
                proc: None,
                generation: 0,
                turn: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(self: &Arc<Self>, text: String) -> Result<Turn, MessageError> {
        let events = self.events.subscribe();
        let (done_tx, done) = oneshot::channel();
        let mut state = self.lock();
        if state.turn.is_some() {
            return Err(MessageError::Busy(self.session));
        }
        if state.proc.is_none() {
            self.start(&mut state)?;
        }
        let now = now_ms();
        let user_id = new_id("msg_");
        let user = Message {
            info: self.info(user_id.clone(), Role::User, now),
            parts: vec![Part::Text {
                id: new_id("prt_"),
                text: text.clone(),
            }],
        };
        let _ = self.writer.send(Write::Message(user, None));
        let id = new_id("msg_");
        let mut info = self.info(id.clone(), Role::Assistant, now);
        info.harness = Some(self.agent.harness_id.clone());
        info.model_id = self.agent.model.clone();
        state.turn = Some(OpenTurn {
            id: id.clone(),
            user_id: user_id.clone(),
            input: text.clone(),
            builder: MessageBuilder::new(info),
            done: Some(done_tx),
            aborting: false,
            retried: false,
        });
        self.emit(
            &mut state,
            EventKind::TurnStarted {
                message_id: user_id,
                input: text.clone(),
            },
        );
        let prior = std::mem::take(&mut state.prior);
        let handed = if state.native.is_none() && !prior.is_empty() {
            replay(&prior, &text)
        } else {
            text
        };
        self.hand_over(&mut state, &handed);
        Ok(Turn { id, events, done })
    }

    /// Hands the open turn to the tool process `generation` (just started, its conversation new)
    /// with every stored message before it, once the writer has stored what it holds.
    fn replay_into(self: &Arc<Self>, generation: u64, user_id: String, input: String) {
        let (history, stored) = oneshot::channel();
        let _ = self.writer.send(Write::History(history));
        let this = self.clone();
        // Ends once the writer answers, which it does before it ends (on shutdown too).
        self.owner.tasks.spawn(async move {
            let prior: Vec<Message> = stored
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|m| m.info.id != user_id)
                .collect();
            let handed = match prior.is_empty() {
                true => input,
                false => replay(&prior, &input),
            };
            let mut state = this.lock();
            let current = state.proc.as_ref().is_some_and(|p| p.generation == generation);
            if current && state.turn.as_ref().is_some_and(|t| t.user_id == user_id && !t.aborting) {
                this.hand_over(&mut state, &handed);
            }
        });
    }

    /// Writes a user turn to the running process; a process that is gone fails the turn.
    fn hand_over(&self, state: &mut State, text: &str) {
        let Some(proc) = state.proc.as_mut() else { return };
        proc.active = tokio::time::Instant::now();
        let proc = &*proc;
        let lines = proc.driver.lock().unwrap_or_else(|p| p.into_inner()).user_turn(text);
        let bytes: Vec<u8> = lines.into_iter().flat_map(|line| (line + "\n").into_bytes()).collect();
        // Nothing to write yet: the driver hands the turn over once the tool is ready for it.
        if bytes.is_empty() {
            return;
        }
        if proc.stdin.try_send(bytes).is_err() {
            self.emit(
                state,
                EventKind::TurnCompleted {
                    status: TurnOutcome::Failed,
                    error: Some(TurnError {
                        kind: "agent_exited".to_owned(),
                        message: "cannot hand the message to the agent: its process is gone".to_owned(),
                        http_status: None,
                    }),
                    usage: None,
                    cost_usd: None,
                },
            );
        }
    }

    fn info(&self, id: String, role: Role, created: i64) -> MessageInfo {
        MessageInfo {
            id,
            session_id: self.session.to_string(),
            role,
            time: MessageTime {
                created,
                completed: None,
            },
            harness: None,
            model_id: None,
            tokens: None,
            cost: None,
            finish: None,
            error: None,
        }
    }

    /// Starts the tool process inside the sandbox.
    fn start(self: &Arc<Self>, state: &mut State) -> Result<(), MessageError> {
        let mut driver = crate::drivers::driver(&self.agent.harness_id)
            .ok_or_else(|| MessageError::Unsupported(self.agent.harness_id.clone()))?;
        let resume = state.native.clone();
        let spec = ExecSpec {
            argv: driver.argv(&self.agent, resume.as_deref()),
            cwd: self.agent.repo_url.is_some().then(|| REPO_DIR.to_owned()),
            stdin: Vec::new(),
            env: Vec::new(),
        };
        state.generation += 1;
        let generation = state.generation;
        let (stdin, stdin_rx) = mpsc::channel(PIPE_QUEUE);
        let (output, output_rx) = mpsc::channel(PIPE_QUEUE);
        let kill = CancellationToken::new();
        let driver = Arc::new(Mutex::new(driver));
        let this = self.clone();
        let (replies, stop) = (stdin.clone(), kill.clone());
        let reader_driver = driver.clone();
        let shutdown = self.owner.shutdown.clone();
        self.owner.tasks.spawn(async move {
            let exec = this.sandbox.exec_stream(&this.sandbox_id, spec, stdin_rx, output);
            let read = this.read(output_rx, reader_driver, replies, generation);
            let ended = tokio::select! {
                // `lap serve` stops: the connection to the tool goes, and its turn is left as it is,
                // as when `lap serve` is killed (a restart resumes the conversation).
                () = shutdown.cancelled() => return,
                _ = stop.cancelled() => Ended::Killed,
                (code, tail) = async { tokio::join!(exec, read) } => {
                    Ended::Exited(code.map_err(|e| e.to_string()), tail)
                }
            };
            this.ended(generation, ended);
        });
        let now = tokio::time::Instant::now();
        state.proc = Some(Proc {
            generation,
            stdin,
            kill,
            driver,
            resumed: resume.is_some(),
            started: false,
            resume_failed: false,
            since: now,
            active: now,
            stalled: None,
        });
        self.owner.tasks.spawn(self.clone().watch(generation));
        Ok(())
    }

    /// Stops tool process `generation` at a deadline: when it has not named its conversation
    /// [`ToolDeadlines::start`] after it started, or a turn got no line from it for
    /// [`ToolDeadlines::silence`]. The open
    /// turn then fails with an error naming the tool, what it waited for, and what to do.
    async fn watch(self: Arc<Self>, generation: u64) {
        let ToolDeadlines {
            start: start_limit,
            silence: silence_limit,
        } = self.owner.deadlines;
        let tool = crate::tools::find(&self.agent.harness_id)
            .map(|h| h.command)
            .unwrap_or("the agent's tool");
        loop {
            tokio::select! {
                () = self.owner.shutdown.cancelled() => return,
                () = tokio::time::sleep(WATCH_TICK) => {}
            }
            let mut state = self.lock();
            let turn_open = state.turn.is_some();
            let Some(proc) = state.proc.as_mut().filter(|p| p.generation == generation) else {
                return;
            };
            let reason = if !proc.started && turn_open && proc.since.elapsed() >= start_limit {
                let what = if proc.resumed {
                    "resume its conversation"
                } else {
                    "start its conversation"
                };
                format!(
                    "`{tool}` did not {what} within {} s; it was stopped (hint: run `lap exec SESSION -- {tool} --help` \
                     to see that it runs in the sandbox, and `lap doctor` for its version; send again to start it anew)",
                    start_limit.as_secs()
                )
            } else if turn_open && proc.active.elapsed() >= silence_limit {
                format!(
                    "`{tool}` printed nothing for {} s during the turn; it was stopped (hint: send again to start it \
                     anew; a tool that works silently for longer needs LAP_TOOL_SILENCE_TIMEOUT=SECONDS on `lap serve`)",
                    silence_limit.as_secs()
                )
            } else {
                continue;
            };
            tracing::info!(session = %self.session, "{reason}");
            proc.stalled = Some(reason);
            proc.kill.cancel();
            return;
        }
    }

    /// Reads the tool's output until it closes; returns the tail of its stderr.
    async fn read(
        &self,
        mut output: mpsc::Receiver<ExecChunk>,
        driver: Arc<Mutex<Box<dyn Driver>>>,
        replies: mpsc::Sender<Vec<u8>>,
        generation: u64,
    ) -> String {
        let mut line = Vec::new();
        let mut tail = Vec::new();
        while let Some(chunk) = output.recv().await {
            match chunk {
                ExecChunk::Stdout(data) => {
                    for piece in data.split_inclusive(|b| *b == b'\n') {
                        if line.len() + piece.len() <= MAX_LINE {
                            line.extend_from_slice(piece);
                        }
                        if piece.ends_with(b"\n") {
                            let text = String::from_utf8_lossy(&line).into_owned();
                            line.clear();
                            let out = driver.lock().unwrap_or_else(|p| p.into_inner()).line(text.trim_end());
                            for mut reply in out.replies {
                                reply.push('\n');
                                let _ = replies.send(reply.into_bytes()).await;
                            }
                            let mut state = self.lock();
                            if let Some(proc) = state.proc.as_mut().filter(|p| p.generation == generation) {
                                proc.active = tokio::time::Instant::now();
                            }
                            let retriable = state.turn.as_ref().is_some_and(|t| !t.retried && !t.aborting);
                            for kind in out.events {
                                let proc = state.proc.as_mut().filter(|p| p.generation == generation);
                                match (&kind, proc) {
                                    (EventKind::SessionStarted { .. }, Some(proc)) => proc.started = true,
                                    // A tool that answers a resume with an error instead of exiting
                                    // (claude: "No conversation found"): stopped, and the turn is
                                    // handed to a new conversation (`ended`).
                                    (
                                        EventKind::TurnCompleted {
                                            status: TurnOutcome::Failed,
                                            ..
                                        },
                                        Some(proc),
                                    ) if proc.resumed && !proc.started && retriable => {
                                        proc.resume_failed = true;
                                        proc.kill.cancel();
                                        continue;
                                    }
                                    _ => {}
                                }
                                if state
                                    .proc
                                    .as_ref()
                                    .is_some_and(|p| p.generation == generation && p.resume_failed)
                                {
                                    continue;
                                }
                                self.emit(&mut state, kind);
                            }
                        }
                    }
                }
                ExecChunk::Stderr(data) => {
                    tail.extend_from_slice(&data);
                    let excess = tail.len().saturating_sub(STDERR_TAIL);
                    tail.drain(..excess);
                }
            }
        }
        String::from_utf8_lossy(&tail).trim().to_owned()
    }

    /// The tool process ended: the open turn, if any, is closed (or, when resuming the tool's
    /// conversation failed, sent once more to a fresh one).
    fn ended(self: &Arc<Self>, generation: u64, ended: Ended) {
        let mut state = self.lock();
        let Some(proc) = state.proc.take_if(|p| p.generation == generation) else {
            return;
        };
        self.forget_if_ended();
        let stalled = proc.stalled.clone();
        let (reason, exit_code, stderr_tail) = match &ended {
            Ended::Killed if proc.resume_failed => {
                ("the agent could not resume its conversation".to_owned(), None, None)
            }
            Ended::Killed => (
                stalled.clone().unwrap_or_else(|| "the agent was stopped".to_owned()),
                None,
                None,
            ),
            Ended::Exited(Ok(code), tail) => (
                format!("the agent exited with code {code}"),
                Some(*code),
                Some(tail.clone()).filter(|t| !t.is_empty()),
            ),
            Ended::Exited(Err(err), _) => (format!("cannot run the agent: {err}"), None, None),
        };
        let retry = proc.resumed
            && !proc.started
            && (proc.resume_failed || matches!(ended, Ended::Exited(Ok(_), _)))
            && state.turn.as_ref().is_some_and(|t| !t.retried && !t.aborting);
        self.emit(
            &mut state,
            EventKind::SessionEnded {
                reason: reason.clone(),
                exit_code,
                stderr_tail: stderr_tail.clone(),
            },
        );
        if retry {
            // The tool's conversation could not be resumed (e.g. its transcript is gone): start a
            // new one and hand it the turn again, with the conversation so far (as after a restart
            // into a fresh sandbox).
            tracing::info!(session = %self.session, "resuming the agent's conversation failed; starting a new one");
            state.native = None;
            let turn = state.turn.as_mut().map(|turn| {
                turn.retried = true;
                (turn.user_id.clone(), turn.input.clone())
            });
            if self.start(&mut state).is_ok()
                && let Some((user_id, input)) = turn
            {
                self.replay_into(state.generation, user_id, input);
                return;
            }
        }
        let Some(turn) = &state.turn else { return };
        let (status, kind) = if turn.aborting {
            (TurnOutcome::Interrupted, "aborted")
        } else if stalled.is_some() {
            (TurnOutcome::Failed, "agent_timeout")
        } else {
            (TurnOutcome::Failed, "agent_exited")
        };
        let mut message = match stderr_tail {
            Some(tail) => format!("{reason}: {tail}"),
            None => reason,
        };
        if exit_code == Some(127) {
            let hint = crate::tools::find(&self.agent.harness_id)
                .map(|h| h.install_hint)
                .unwrap_or_default();
            message = format!(
                "{message} (hint: the tool is not installed where the sandbox sees it: {hint}; see docs/troubleshooting.md#tool-missing)"
            );
        }
        self.emit(
            &mut state,
            EventKind::TurnCompleted {
                status,
                error: Some(TurnError {
                    kind: kind.to_owned(),
                    message,
                    http_status: None,
                }),
                usage: None,
                cost_usd: None,
            },
        );
    }

    /// Interrupts the open turn; `false` when there is none.
    fn abort(self: &Arc<Self>) -> bool {
        let mut state = self.lock();
        let Some(turn) = state.turn.as_mut() else {
            return false;
        };
        turn.aborting = true;
        let turn_id = turn.id.clone();
        let Some(proc) = &state.proc else {
            self.emit(
                &mut state,
                EventKind::TurnCompleted {
                    status: TurnOutcome::Interrupted,
                    error: Some(TurnError {
                        kind: "aborted".to_owned(),
                        message: "the turn was aborted".to_owned(),
                        http_status: None,
                    }),
                    usage: None,
                    cost_usd: None,
                },
            );
            return true;
        };
        let interrupt = proc.driver.lock().unwrap_or_else(|p| p.into_inner()).interrupt();
        let asked = interrupt.is_some_and(|mut line| {
            line.push('\n');
            proc.stdin.try_send(line.into_bytes()).is_ok()
        });
        if !asked {
            proc.kill.cancel();
            return true;
        }
        // A tool that does not end the turn in time is killed; the turn then closes as interrupted.
        let this = self.clone();
        self.owner.tasks.spawn(async move {
            tokio::select! {
                () = this.owner.shutdown.cancelled() => return,
                () = tokio::time::sleep(ABORT_GRACE) => {}
            }
            let state = this.lock();
            if state.turn.as_ref().is_some_and(|t| t.id == turn_id)
                && let Some(proc) = &state.proc
            {
                tracing::info!(session = %this.session, "the agent did not stop its turn in time; killing it");
                proc.kill.cancel();
            }
        });
        true
    }

    /// Takes this conversation out of the registry once its session is over (its tool process just
    /// ended, e.g. with its sandbox): nothing will talk to it again, and its memory goes.
    fn forget_if_ended(self: &Arc<Self>) {
        let this = self.clone();
        self.owner.tasks.spawn(async move {
            let ended = match this.store.get_session(this.session).await {
                Ok(Some(row)) => {
                    row.status.is_terminal() || row.sandbox_id.as_deref() != Some(this.sandbox_id.as_str())
                }
                Ok(None) => true,
                Err(_) => false,
            };
            if let (true, Some(registry)) = (ended, this.registry.upgrade()) {
                let mut conversations = registry.lock().unwrap_or_else(|p| p.into_inner());
                if conversations.get(&this.session).is_some_and(|c| Arc::ptr_eq(c, &this)) {
                    conversations.remove(&this.session);
                }
            }
        });
    }

    /// Kills the tool process (the session moved to another sandbox).
    fn stop(&self) {
        if let Some(proc) = &self.lock().proc {
            proc.kill.cancel();
        }
    }

    /// Numbers, records and publishes one event; folds it into the open turn, and closes the turn
    /// on its `turn.completed` (a closing event with no open turn is dropped: one per turn).
    fn emit(&self, state: &mut State, kind: EventKind) {
        let closing = matches!(kind, EventKind::TurnCompleted { .. });
        if closing && state.turn.is_none() {
            return;
        }
        let event = Event {
            seq: state.next_seq,
            time: crate::store::now(),
            session_id: self.session,
            turn_id: state.turn.as_ref().map(|t| t.id.clone()),
            kind,
        };
        state.next_seq += 1;
        if let Some(turn) = state.turn.as_mut() {
            turn.builder.apply(&event.kind);
        }
        if let EventKind::SessionStarted { native_session_id, .. } = &event.kind {
            state.native = Some(native_session_id.clone());
            let _ = self.writer.send(Write::Native(native_session_id.clone()));
        }
        state.recent.push_back(event.clone());
        if state.recent.len() > RECENT {
            state.recent.pop_front();
        }
        let _ = self.writer.send(Write::Event(event.clone()));
        let _ = self.events.send(event);
        if closing && let Some(mut turn) = state.turn.take() {
            let done = turn.done.take();
            let message = turn.builder.finish(now_ms());
            let _ = self.writer.send(Write::Message(message, done));
        }
    }
}

/// A first turn that carries the conversation so far, for a tool that cannot resume it: LAP's
/// `<previous_session_history>` preamble, the messages as JSON `[{role, text}]`.
fn replay(prior: &[Message], text: &str) -> String {
    let messages: Vec<serde_json::Value> = prior
        .iter()
        .filter(|m| !m.text().is_empty())
        .map(|m| serde_json::json!({"role": m.info.role, "text": m.text()}))
        .collect();
    format!(
        "<previous_session_history><msgs>{}</msgs></previous_session_history>\n\n{text}",
        serde_json::Value::Array(messages)
    )
}

/// Stores a conversation's events and messages in order, events in batches, until the conversation
/// is gone, or `shutdown`: then nothing more is taken, and what was queued is stored before it ends.
async fn write_loop(
    store: Store,
    session: Uuid,
    mut writes: mpsc::UnboundedReceiver<Write>,
    shutdown: CancellationToken,
) {
    let mut received = Vec::new();
    let mut open = true;
    loop {
        let count = if open {
            tokio::select! {
                count = writes.recv_many(&mut received, 256) => count,
                () = shutdown.cancelled() => {
                    writes.close();
                    open = false;
                    continue;
                }
            }
        } else {
            writes.recv_many(&mut received, 256).await
        };
        if count == 0 {
            break;
        }
        let mut events = Vec::new();
        for write in received.drain(..) {
            match write {
                Write::Event(event) => events.push(event),
                other => {
                    flush(&store, session, &mut events).await;
                    match other {
                        Write::Message(message, done) => {
                            if let Err(err) = store.put_message(session, message.clone()).await {
                                tracing::warn!(session = %session, error = %err, "cannot keep a message");
                            }
                            if done.is_some() {
                                let _ = store.touch_session(session).await;
                            }
                            if let Some(done) = done {
                                let _ = done.send(message);
                            }
                        }
                        Write::Native(native) => {
                            if let Err(err) = store.set_harness_session_id(session, native).await {
                                tracing::warn!(session = %session, error = %err, "cannot keep the agent's session id");
                            }
                        }
                        Write::History(reply) => {
                            let messages = store.messages(session).await.unwrap_or_else(|err| {
                                tracing::warn!(session = %session, error = %err, "cannot read the conversation to replay");
                                Vec::new()
                            });
                            let _ = reply.send(messages);
                        }
                        Write::Event(_) => unreachable!("matched above"),
                    }
                }
            }
        }
        flush(&store, session, &mut events).await;
    }
}

async fn flush(store: &Store, session: Uuid, events: &mut Vec<Event>) {
    if events.is_empty() {
        return;
    }
    if let Err(err) = store.insert_events(session, std::mem::take(events)).await {
        tracing::warn!(session = %session, error = %err, "cannot keep events");
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
