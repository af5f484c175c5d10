//! The command line: one file per subcommand under `cli/`, each an `Args` struct and a `run` fn.
//!
//! `Command` only dispatches. Global flags (`--server`, `--json`, `--quiet`, `-v`, `--no-color`) are
//! resolved with the environment and config file into a [`Ctx`] once, before any command runs.
//! `lap <agent-name>` arrives as an external subcommand.

mod admin;
mod agents;
mod attach;
mod audit;
mod chat;
pub mod completions;
mod config;
mod cp;
mod doctor;
#[cfg_attr(
    not(all(target_os = "linux", not(lap_portable))),
    path = "cli/harness_unsupported.rs"
)]
mod harness;
mod login;
mod logout;
mod ls;
mod man;
mod mcp;
mod open;
// Issue 17 part 1 (ports).
mod port_forward;
mod reference;
mod reserved;
mod send;
pub mod serve;
mod sessions;
pub(crate) mod sidecar;
mod snapshots;
mod users;
mod vault;

use clap::{Args, Parser, Subcommand};

use crate::client::Client;
use crate::error::Error;
use crate::output::Printer;
use crate::settings::{Env, Paths, Settings};

/// Run coding agents in sandboxes where they never hold a real credential.
#[derive(Debug, Parser)]
#[command(
    name = "lap",
    version,
    arg_required_else_help = true,
    after_help = "Open an agent's terminal with `lap <agent-name>`.\nStart the control plane with `lap serve`."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// Open an agent's terminal, as `lap <agent-name>` does (LAP's CLI spelling)
    #[arg(long, value_name = "NAME", conflicts_with = "resume")]
    pub agent: Option<String>,
    /// Attach to a session by id or by its URL (`<server>/sessions/<id>`), as `lap attach` does
    #[arg(long, value_name = "ID|URL")]
    pub resume: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The command to run: the subcommand, or what `--agent` and `--resume` stand for.
    fn into_command(self) -> Result<(GlobalArgs, Command), Error> {
        let command = match (self.command, self.agent, self.resume) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(Error::usage(
                    "`--agent` and `--resume` take the place of a command",
                    "drop the command, or the flag: `lap --agent NAME` is `lap NAME`",
                ));
            }
            (Some(command), None, None) => command,
            (None, Some(agent), _) => Command::Open(vec![agent]),
            (None, None, Some(target)) => Command::Attach(attach::Args::new(target)),
            (None, None, None) => {
                return Err(Error::usage(
                    "usage: lap <agent-name>  (or `lap --agent <name>`)",
                    "list the agents with `lap agents list`, or see `lap --help`",
                ));
            }
        };
        Ok((self.global, command))
    }
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Server URL [default: the config file's, else http://127.0.0.1:3000; env: LAP_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// Print data as JSON
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only data and errors: no status lines, no spinners
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output on stderr (-v info, -vv debug, -vvv trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Never use colour (also when NO_COLOR is set)
    #[arg(long, global = true)]
    pub no_color: bool,
}

// Parsed once per process; the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane: REST and WebSocket API, store, sandboxes
    Serve(serve::Args),
    /// Save a server URL and its master key (or your API key) for this user
    Login(login::Args),
    /// Forget the saved master key and server URL
    Logout,
    /// Show the effective client settings and where each comes from
    Config,
    /// Create, list, show, edit and delete agents
    #[command(subcommand)]
    Agents(agents::Command),
    /// Create, list, show and delete sessions
    #[command(subcommand)]
    Sessions(sessions::Command),
    /// Create, list and delete snapshots of session workspaces
    #[command(subcommand)]
    Snapshots(snapshots::Command),
    /// The credential vault: its CA certificate
    #[command(subcommand)]
    Vault(vault::Command),
    /// Server administration: warm pool and session statistics
    #[command(subcommand)]
    Admin(admin::Command),
    /// Create, list, disable and enable users (admin)
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Create, list and revoke users' API keys (admin)
    #[command(subcommand)]
    Keys(users::KeysCommand),
    /// The audit log: who did what, when and from where (admin)
    Audit(audit::Args),
    /// Attach this terminal to a session by id or URL
    #[command(alias = "resume")]
    Attach(attach::Args),
    /// Run a command inside a session's sandbox
    Exec(reserved::ExecArgs),
    // Files in and out (issue 17).
    /// Copy files and directories into or out of a session's sandbox (`SESSION:PATH`)
    Cp(cp::Args),
    /// List a directory in a session's sandbox (`SESSION:PATH`)
    Ls(ls::Args),
    /// Send one message to an API agent (or session) and print the reply
    Send(send::Args),
    /// Chat with an API agent: a line-editing REPL over the message API
    Chat(chat::Args),
    /// Show which harness tools are installed for local sandboxes, their versions, and how to install the others
    Doctor(doctor::Args),
    /// Print a shell completion script
    Completions(completions::Args),
    /// Write man pages
    Man(man::Args),
    /// Forward local ports to a session's sandbox, like `kubectl port-forward`
    PortForward(port_forward::Args),
    /// Serve lap's sessions as tools to an MCP client over stdio: `claude mcp add lap -- lap mcp`
    Mcp(mcp::Args),
    /// Run a sandbox's harness (started by `lap serve`)
    #[command(hide = true)]
    Harness(harness::Args),
    /// Print a Markdown reference page of `docs/reference/` (scripts/regen-docs.sh)
    #[command(hide = true)]
    Reference(reference::Args),
    /// Open an agent's terminal: `lap <agent-name>`
    #[command(external_subcommand)]
    Open(Vec<String>),
}

/// What every client command gets.
pub struct Ctx {
    pub out: Printer,
    pub settings: Settings,
}

impl Ctx {
    /// A REST client for the configured server, with the master key when one is known.
    pub fn client(&self) -> Result<Client, Error> {
        let key = self.settings.master_key.as_ref().map(|k| k.value.clone());
        let ca = self.settings.ca_cert.as_ref().map(|c| c.value.as_path());
        Ok(Client::new(&self.settings.url.value, key, ca)?)
    }

    /// [`Ctx::client`] for another server, named by a URL the user gave (`lap attach URL`).
    pub fn client_for(&self, server: &str) -> Result<Client, Error> {
        let key = self.settings.master_key.as_ref().map(|k| k.value.clone());
        let ca = self.settings.ca_cert.as_ref().map(|c| c.value.as_path());
        Ok(Client::new(server, key, ca)?)
    }
}

/// Sets up logging on stderr: warnings by default (info for `lap serve`), more with `-v`,
/// `RUST_LOG` for full control.
pub fn init_tracing(cli: &Cli) {
    let base = if matches!(cli.command, Some(Command::Serve(_))) {
        2
    } else {
        1
    };
    let level = match base + cli.global.verbose {
        0 | 1 => "warn",
        2 => "info",
        3 => "debug",
        _ => "trace",
    };
    // Without -v, the TLS verifier's and the kube client's own error logs would repeat the errors
    // lap reports itself (a Kubernetes API that does not answer is said once, with what to do).
    let quiet_verifier = if cli.global.verbose == 0 {
        ",rustls_platform_verifier=off,kube_client=off"
    } else {
        ""
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "lap={level},{}{quiet_verifier}",
            if level == "trace" { "debug" } else { "warn" }
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (global, command) = cli.into_command()?;
    // Before any runtime thread exists: creating namespaces needs a single-threaded process.
    if let Command::Harness(args) = command {
        return harness::run(args);
    }
    let env = Env::capture();
    let out = Printer::new(global.json, global.quiet, global.no_color || env.no_color);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", e))?;
    let settings = || -> Result<Settings, Error> {
        Ok(Settings::resolve(
            Paths::discover()?,
            env.clone(),
            global.server.clone(),
        )?)
    };
    match command {
        Command::Serve(args) => runtime.block_on(serve::run(args, &env, &out)),
        Command::Vault(vault::Command::Sidecar(args)) => runtime.block_on(sidecar::run(*args, &out)),
        Command::Completions(args) => completions::run(args),
        Command::Doctor(args) => doctor::run(args, &out),
        Command::Man(args) => man::run(args, &out),
        Command::Reference(args) => reference::run(args),
        command => {
            let ctx = Ctx {
                out,
                settings: settings()?,
            };
            runtime.block_on(async move {
                match command {
                    Command::Login(args) => login::run(args, &ctx).await,
                    Command::Logout => logout::run(&ctx),
                    Command::Config => config::run(&ctx),
                    Command::Agents(command) => agents::run(command, &ctx).await,
                    Command::Sessions(command) => sessions::run(command, &ctx).await,
                    Command::Snapshots(command) => snapshots::run(command, &ctx).await,
                    Command::Users(command) => users::run_users(command, &ctx).await,
                    Command::Keys(command) => users::run_keys(command, &ctx).await,
                    Command::Audit(args) => audit::run(args, &ctx).await,
                    Command::Vault(command) => vault::run(command, &ctx).await,
                    Command::Admin(command) => admin::run(command, &ctx).await,
                    Command::Attach(args) => attach::run(args, &ctx).await,
                    Command::Exec(args) => reserved::exec(args, &ctx).await,
                    Command::Cp(args) => cp::run(args, &ctx).await,
                    Command::Ls(args) => ls::run(args, &ctx).await,
                    Command::Send(args) => send::run(args, &ctx).await,
                    Command::Chat(args) => chat::run(args, &ctx).await,
                    Command::Open(words) => open::run(words, &ctx).await,
                    Command::PortForward(args) => port_forward::run(args, &ctx).await,
                    Command::Mcp(args) => mcp::run(args, &ctx).await,
                    Command::Serve(_)
                    | Command::Completions(_)
                    | Command::Man(_)
                    | Command::Reference(_)
                    | Command::Harness(_)
                    | Command::Doctor(_) => {
                        unreachable!("dispatched above")
                    }
                }
            })
        }
    }
}
