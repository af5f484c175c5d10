//! Shell completion that knows the server: `lap <TAB>` offers agent names, `lap attach <TAB>` (and
//! the other commands that take a session) the live sessions' ids.
//!
//! The completion script (`lap completions SHELL`, committed copies in `completions/`) is a small
//! registration that calls back into `lap` with `COMPLETE=<shell>` set (clap_complete's dynamic
//! completion); [`complete_if_asked`], first thing in `main`, answers those calls. Names and ids
//! come from the server the client is configured for, within [`ASK_TIMEOUT`]; a server that is
//! down, slow or refusing gives no candidates and no message, so completion falls back silently
//! to the subcommands and flags.

use std::time::Duration;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate, SubcommandCandidates};
use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};

use super::Ctx;
use crate::error::Error;
use crate::output::Printer;
use crate::settings::{Env, Paths, Settings};
use crate::wire::api::SESSION_PAGE_MAX;

/// The variable that turns a `lap` run into a completion request.
const VAR: &str = "COMPLETE";
/// How long a completion may wait for the server.
const ASK_TIMEOUT: Duration = Duration::from_millis(700);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell: bash, zsh, fish, elvish or powershell
    pub shell: Shell,
}

pub fn run(args: Args) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    write(args.shell, &mut out).map_err(|e| Error::io("cannot write the completion script", e))
}

/// Writes the completion script of `shell` (also used to generate `completions/`): it asks `lap`
/// itself, found on `PATH`, for each completion.
pub fn write(shell: Shell, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let completer: &dyn EnvCompleter = match shell {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
        Shell::Elvish => &Elvish,
        Shell::PowerShell => &Powershell,
        _ => &Bash,
    };
    completer.write_registration(VAR, "lap", "lap", "lap", out)
}

/// Answers a completion request and exits when `COMPLETE` is set; returns otherwise.
pub fn complete_if_asked() {
    clap_complete::CompleteEnv::with_factory(command).var(VAR).complete();
}

/// The command line as completion sees it: the parser's, with the server's names attached.
fn command() -> clap::Command {
    let sessions = || ArgValueCandidates::new(live_sessions);
    super::Cli::command()
        .add(SubcommandCandidates::new(agent_names))
        .mut_subcommand("attach", |c| c.mut_arg("session", |a| a.add(sessions())))
        .mut_subcommand("exec", |c| c.mut_arg("session", |a| a.add(sessions())))
        .mut_subcommand("sessions", |c| {
            ["show", "delete", "egress"].into_iter().fold(c, |c, name| {
                c.mut_subcommand(name, |s| s.mut_arg("id", |a| a.add(sessions())))
            })
        })
}

fn agent_names() -> Vec<CompletionCandidate> {
    ask(|ctx| async move {
        let agents = ctx.client()?.list_agents(None).await?;
        Ok(agents
            .into_iter()
            .map(|a| CompletionCandidate::new(a.name).help(Some(format!("agent ({})", a.harness_id).into())))
            .collect())
    })
}

fn live_sessions() -> Vec<CompletionCandidate> {
    ask(|ctx| async move {
        let sessions = ctx.client()?.list_sessions(None, SESSION_PAGE_MAX).await?;
        Ok(sessions
            .into_iter()
            .filter(|s| s.status.is_live())
            .map(|s| {
                let help = format!("{} ({})", s.agent_name, s.status.as_str());
                CompletionCandidate::new(s.id.to_string()).help(Some(help.into()))
            })
            .collect())
    })
}

/// Runs `query` against the configured server within [`ASK_TIMEOUT`]; nothing on any failure.
fn ask<F, Fut>(query: F) -> Vec<CompletionCandidate>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<Vec<CompletionCandidate>, Error>>,
{
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Ok(paths) = Paths::discover() else {
        return Vec::new();
    };
    let Ok(settings) = Settings::resolve(paths, Env::capture(), None) else {
        return Vec::new();
    };
    let ctx = Ctx {
        out: Printer::new(false, true, true),
        settings,
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return Vec::new();
    };
    runtime
        .block_on(async { tokio::time::timeout(ASK_TIMEOUT, query(ctx)).await })
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}
