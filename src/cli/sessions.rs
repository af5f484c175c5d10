//! `lap sessions list|show|create|egress|abort|delete|pause|resume|hibernate|restart|fork`.
//!
//! `create` waits until the session is `ready` (or `failed`), narrating the bring-up phases on a
//! spinner, and prints the session id (`--json`: the whole session). `abort` interrupts the running
//! turn of an API session and says whether there was one. `show` adds the session's workspace (its
//! path on the server and size); `pause`, `resume`, `hibernate` and `fork` drive its lifecycle
//! (`control/workspace.rs`); `create --from SNAPSHOT` starts on a copy of a snapshot.

use std::time::Duration;

use clap::Subcommand;

use super::Ctx;
use crate::error::Error;
use crate::wire::api::{CreateSession, Session, SessionFromSnapshot, SessionStatus};

/// How often `create` polls while waiting.

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List sessions, newest first
    List {
        /// Only sessions of this agent (name or id)
        #[arg(long)]
        agent: Option<String>,
        /// At most this many
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one session
    Show {
        /// Session id
        id: String,
    },
    /// Start a session of an agent and wait until it is ready
    Create {
        /// Agent name or id
        agent: String,
        /// A title for the session
        #[arg(long)]
        title: Option<String>,
        /// Return at once, while the session is still `creating`
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds
        #[arg(long, default_value_t = 600, value_name = "SECS")]
        timeout: u64,
        /// Start on a copy of this snapshot's workspace (name or id; `lap snapshots list`)
        #[arg(long, value_name = "SNAPSHOT")]
        from: Option<String>,
    },
    /// Freeze a session's processes, memory intact (an attach, a message or an exec resumes it)
    Pause {
        /// Session id
        id: String,
    },
    /// Bring a paused or hibernated session back (a hibernated one on a new sandbox over its workspace)
    Resume {
        /// Session id
        id: String,
    },
    /// Give a session a fresh sandbox on its workspace (from ready, dead, failed or hibernated)
    Restart {
        /// Session id
        id: String,
    },
    /// Stop a session's sandbox and keep only its workspace (an attach, a message or an exec brings it back)
    Hibernate {
        /// Session id
        id: String,
    },
    /// Start a new session of the same agent on a copy of this session's workspace
    Fork {
        /// Session id
        id: String,
        /// A title for the new session
        #[arg(long)]
        title: Option<String>,
        /// Return at once, while the new session is still `creating`
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds
        #[arg(long, default_value_t = 600, value_name = "SECS")]
        timeout: u64,
    },
    /// Show what went through a session's vault: requests, swaps, blocks
    Egress {
        /// Session id
        id: String,
        /// Keep printing new records until the session ends (Ctrl-C stops)
        #[arg(short, long)]
        follow: bool,
    },
    /// Interrupt the turn an API session is running (the session stays)
    Abort {
        /// Session id
        id: String,
    },
    /// Stop a session: its sandbox is deleted
    Delete {
        /// Session id
        id: String,
    },
    // Issue 17 part 1 (ports): both live in `cli/port_forward.rs`.
    /// List the ports a session's sandbox listens on
    Ports(super::port_forward::PortsArgs),
    /// Print a signed, expiring preview URL of one sandbox port, or revoke them
    Url(super::port_forward::UrlArgs),
}

pub async fn run(command: Command, ctx: &Ctx) -> Result<(), Error> {
    let client = ctx.client()?;
    match command {
        Command::List { agent, limit } => {
            let sessions = client.list_sessions(agent.as_deref(), limit).await?;
            if ctx.out.json {
                ctx.out.json(&sessions);
            } else if sessions.is_empty() {
                ctx.out
                    .status("no sessions yet; start one with `lap sessions create AGENT`");
            } else {
                let rows: Vec<Vec<String>> = sessions
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.to_string(),
                            s.agent_name.clone(),
                            s.status.as_str().to_owned(),
                            s.phase
                                .clone()
                                .or_else(|| s.failure_reason.clone())
                                .unwrap_or_else(|| "-".into()),
                            s.created_at.clone(),
                        ]
                    })
                    .collect();
                ctx.out
                    .table(&["ID", "AGENT", "STATUS", "PHASE/REASON", "CREATED"], &rows);
            }
        }
        Command::Show { id } => {
            let session = client.get_session(&id).await?;
            // Backends without workspaces of their own answer 409: the session is shown without.
            let workspace = client.workspace(&id).await.ok();
            if ctx.out.json {
                let mut value = serde_json::to_value(&session).expect("plain data serialises");
                if let (Some(map), Some(workspace)) = (value.as_object_mut(), &workspace) {
                    map.insert(
                        "workspace".into(),
                        serde_json::to_value(workspace).expect("plain data serialises"),
                    );
                }
                ctx.out.json(&value);
            } else {
                print_session(ctx, &session);
                if let Some(w) = workspace {
                    let size = if w.exists {
                        super::snapshots::human_bytes(w.size_bytes)
                    } else {
                        "deleted".to_owned()
                    };
                    ctx.out.line(format!("{:<10} {} ({size})", "workspace", w.path));
                }
            }
        }
        Command::Pause { id } => lifecycle(ctx, &client, &id, "pause", "paused").await?,
        Command::Resume { id } => lifecycle(ctx, &client, &id, "resume", "resumed").await?,
        Command::Hibernate { id } => lifecycle(ctx, &client, &id, "hibernate", "hibernated").await?,
        Command::Restart { id } => lifecycle(ctx, &client, &id, "restart", "restarted").await?,
        Command::Fork {
            id,
            title,
            no_wait,
            timeout,
        } => {
            let session = client.fork_session(&id, &CreateSession { title }).await?;
            let label = format!("a fork of session {id}");
            finish_create(ctx, &client, session, &label, no_wait, timeout).await?;
        }
        Command::Create {
            agent,
            title,
            no_wait,
            timeout,
            from,
        } => {
            let session = match &from {
                Some(snapshot) => {
                    let body = SessionFromSnapshot {
                        agent: agent.clone(),
                        title,
                    };
                    client.session_from_snapshot(snapshot, &body).await?
                }
                None => client.create_session(&agent, &CreateSession { title }).await?,
            };
            let label = format!("a session of `{agent}`");
            finish_create(ctx, &client, session, &label, no_wait, timeout).await?;
        }
        Command::Egress { id, follow } => egress(&client, ctx, &id, follow).await?,
        Command::Ports(args) => super::port_forward::ports(args, ctx).await?,
        Command::Url(args) => super::port_forward::url(args, ctx).await?,
        Command::Abort { id } => {
            let reply = client.abort(&id).await?;
            if ctx.out.json {
                ctx.out.json(&reply);
            } else if reply.aborted {
                ctx.out.line(format!("aborted the running turn of session {id}"));
            } else {
                ctx.out.line(format!("session {id} had no turn running"));
            }
        }
        Command::Delete { id } => {
            let deleted = client.delete_session(&id).await?;
            if ctx.out.json {
                ctx.out.json(&deleted);
            } else if deleted.status == "deleted" {
                ctx.out.status(format!("stopped session {id}"));
            } else {
                ctx.out.status(format!("session {id} was already {}", deleted.status));
            }
        }
    }
    Ok(())
}

/// Waits until a just-created session is `ready` (unless `no_wait`), narrating its phases, then
/// prints its id (`--json`: the whole session).
async fn finish_create(
    ctx: &Ctx,
    client: &crate::client::Client,
    mut session: Session,
    label: &str,
    no_wait: bool,
    timeout: u64,
) -> Result<(), Error> {
    if !no_wait {
        let spinner = ctx.out.spinner(format!("starting {label}"));
        let id = session.id;
        let waited = client
            .wait_while_creating(session, Duration::from_secs(timeout), |s| {
                if let Some(phase) = &s.phase {
                    spinner.set_message(format!("starting {label}: {phase}"));
                }
            })
            .await;
        spinner.finish_and_clear();
        session = waited?.ok_or_else(|| {
            Error::failed_with_hint(
                format!("session {id} was not ready after {timeout}s"),
                format!("check it with `lap sessions show {id}`"),
            )
        })?;
        if session.status != SessionStatus::Ready {
            return Err(Error::failed_with_hint(
                format!(
                    "session {} {}: {}",
                    session.id,
                    session.status.as_str(),
                    session.failure_reason.as_deref().unwrap_or("no reason recorded")
                ),
                format!("`lap sessions show {}` has the details", session.id),
            ));
        }
    }
    if ctx.out.json {
        ctx.out.json(&session);
    } else {
        ctx.out.line(session.id.to_string());
    }
    Ok(())
}

/// `pause`, `resume` or `hibernate`: the call, then one line saying what the session is now.
async fn lifecycle(ctx: &Ctx, client: &crate::client::Client, id: &str, action: &str, done: &str) -> Result<(), Error> {
    let session = client.session_action(id, action).await?;
    if ctx.out.json {
        ctx.out.json(&session);
    } else {
        ctx.out
            .status(format!("{done} session {id}: it is {}", session.status.as_str()));
    }
    Ok(())
}

/// How often `egress --follow` asks for new records.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

async fn egress(client: &crate::client::Client, ctx: &Ctx, id: &str, follow: bool) -> Result<(), Error> {
    let mut after = 0;
    let mut first = true;
    loop {
        let records = client.interceptions(id, after).await?;
        after = records.last().map_or(after, |r| r.id);
        if ctx.out.json && !follow {
            ctx.out.json(&records);
        } else if ctx.out.json {
            for record in &records {
                ctx.out
                    .line(serde_json::to_string(record).expect("plain data serialises"));
            }
        } else {
            let rows: Vec<Vec<String>> = records.iter().map(egress_row).collect();
            if !rows.is_empty() {
                let table = crate::output::table(&["TIME", "METHOD", "HOST", "PATH", "STATUS", "NOTE"], &rows);
                let skip = usize::from(!first);
                for line in table.lines().skip(skip) {
                    ctx.out.line(line);
                }
                first = false;
            } else if first && !follow {
                ctx.out
                    .status(format!("nothing went through the vault of session {id} yet"));
            }
        }
        if !follow {
            return Ok(());
        }
        if records.is_empty() && client.get_session(id).await?.status.is_terminal() {
            ctx.out.status(format!("session {id} has ended"));
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
    }
}

fn egress_row(r: &crate::wire::api::Interception) -> Vec<String> {
    let time = r.timestamp.get(11..19).unwrap_or(&r.timestamp).to_owned();
    let note = match (&r.blocked, r.alert) {
        (Some(reason), true) => format!("ALERT blocked: {reason}"),
        (Some(reason), false) => format!("blocked: {reason}"),
        (None, _) if !r.swapped.is_empty() => format!("swapped {}", r.swapped.join(", ")),
        (None, _) => String::new(),
    };
    vec![
        time,
        r.method.clone(),
        format!("{}:{}", r.host, r.port),
        r.path.clone(),
        r.status.map_or("-".into(), |s| s.to_string()),
        note,
    ]
}

fn print_session(ctx: &Ctx, s: &Session) {
    if ctx.out.json {
        ctx.out.json(s);
        return;
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows = [
        ("id", s.id.to_string()),
        ("agent", format!("{} ({})", s.agent_name, s.agent_id)),
        ("status", s.status.as_str().to_owned()),
        ("phase", dash(&s.phase)),
        ("reason", dash(&s.failure_reason)),
        ("tui", if s.supports_tui { "yes".into() } else { "no".into() }),
        ("tty_url", dash(&s.tty_url)),
        ("created", s.created_at.clone()),
        ("last_seen", s.last_seen_at.clone()),
        ("stopped", dash(&s.stopped_at)),
    ];
    for (key, value) in rows {
        ctx.out.line(format!("{key:<10} {value}"));
    }
}
