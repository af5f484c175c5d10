//! `lap <agent-name>`: open an agent's terminal, the product's front door.
//!
//! Resolves the agent by name (or id), reconnects to its most recent live session — the documented
//! behaviour — or creates one (`--new` always creates), narrating the bring-up phases on a spinner
//! with the elapsed time, then attaches as `lap attach` does.

use std::time::{Duration, Instant};

use clap::Parser;

use super::Ctx;
use super::attach::{DetachArgs, attach};
use crate::client::{Client, ClientError};
use crate::error::Error;
use crate::wire::api::{CreateSession, SESSION_PAGE_MAX, Session, SessionStatus};

/// How long a session may take to become ready (LAP's CLI gives up after 90 s).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Agent names listed when the wanted one does not exist.
const NAMES_SHOWN: usize = 8;
/// The title of sessions this command creates, as LAP's CLI names them.
pub(super) const SESSION_TITLE: &str = "lap-cli";

/// Open an agent's terminal: `lap <agent-name> [--new] [--detach-keys KEYS]`
#[derive(Debug, Parser)]
#[command(name = "lap <agent-name>", no_binary_name = true)]
pub struct Args {
    /// The agent's name or id
    pub agent: String,
    /// Start a new session even when the agent has a live one
    #[arg(long)]
    pub new: bool,
    #[command(flatten)]
    pub detach: DetachArgs,
}

pub async fn run(words: Vec<String>, ctx: &Ctx) -> Result<(), Error> {
    let args =
        Args::try_parse_from(&words).map_err(|e| Error::usage(e.to_string().trim().to_owned(), "see `lap --help`"))?;
    let keys = args.detach.keys()?;
    let client = ctx.client()?;
    let agent = match client.get_agent(&args.agent).await {
        Ok(agent) => agent,
        Err(ClientError::Api { status: 404, .. }) => return Err(no_such_agent(&client, &args.agent).await),
        Err(err) => return Err(err.into()),
    };
    let live = if args.new {
        None
    } else {
        let id = agent.id.to_string();
        // Newest first: the first live one is the most recent.
        client
            .list_sessions(Some(&id), SESSION_PAGE_MAX)
            .await?
            .into_iter()
            .find(|s| {
                matches!(
                    s.status,
                    SessionStatus::Ready | SessionStatus::Creating | SessionStatus::Paused | SessionStatus::Hibernated
                )
            })
    };
    let session = match live {
        Some(session) => {
            ctx.out.status(format!("reconnecting to session {}", session.id));
            session
        }
        None => {
            let body = CreateSession {
                title: Some(SESSION_TITLE.to_owned()),
            };
            client.create_session(&agent.id.to_string(), &body).await?
        }
    };
    let session = wait_until_ready(ctx, &client, session, &agent.name).await?;
    attach(ctx, &client, &session, keys).await
}

pub(super) async fn no_such_agent(client: &Client, name: &str) -> Error {
    let names: Vec<String> = client
        .list_agents(None)
        .await
        .map(|agents| agents.into_iter().map(|a| a.name).collect())
        .unwrap_or_default();
    let mut shown = names.iter().take(NAMES_SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > NAMES_SHOWN {
        shown.push_str(&format!(" (+{} more)", names.len() - NAMES_SHOWN));
    }
    if names.is_empty() {
        Error::failed_with_hint(
            format!("no agent named '{name}'"),
            "create one with `lap agents create NAME --harness shell`",
        )
    } else {
        Error::failed_with_hint(
            format!("no agent named '{name}'"),
            format!("available: {shown}; see docs/troubleshooting.md#no-agent-named"),
        )
    }
}

pub(super) async fn wait_until_ready(
    ctx: &Ctx,
    client: &Client,
    session: Session,
    agent: &str,
) -> Result<Session, Error> {
    if session.status != SessionStatus::Creating {
        return Ok(session);
    }
    let id = session.id;
    let started = Instant::now();
    let spinner = ctx.out.spinner(format!("starting `{agent}`"));
    let waited = client
        .wait_while_creating(session, READY_TIMEOUT, |s| {
            spinner.set_message(format!(
                "starting `{agent}`: {} ({:.1}s)",
                s.phase.as_deref().unwrap_or("creating"),
                started.elapsed().as_secs_f32()
            ));
        })
        .await;
    spinner.finish_and_clear();
    waited?.ok_or_else(|| {
        Error::failed_with_hint(
            format!("session {id} did not reach ready in {}s", READY_TIMEOUT.as_secs()),
            format!("check it with `lap sessions show {id}`"),
        )
    })
}
