//! `lap harness` (hidden): the in-sandbox side of a sandbox, started by `lap serve` (local backend)
//! or as a Kubernetes pod's harness container.
//!
//! Like `serve.rs` it is a composition root, so it may reach into `sandbox`: it only hands its
//! arguments to [`crate::sandbox::local`]. It runs before any async runtime exists, because creating
//! namespaces needs a single-threaded process. With `--config` it launches a sandbox and returns
//! once the sandbox is ready (the sandbox's PID 1 and harness server are forks of it that never
//! return here); with `--probe` it only checks that namespaces can be created; with `--listen` it
//! is the harness server itself, on TCP, as the Kubernetes backend's pods run it (no namespaces, no
//! proxy port, no privilege drop: see [`crate::sandbox::local::serve_tcp`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::error::Error;
use crate::sandbox::local;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sandbox's `config.json`, written by `lap serve`
    #[arg(long, value_name = "FILE", required_unless_present_any = ["probe", "listen"])]
    pub config: Option<PathBuf>,
    /// Only check that this process can create the sandbox namespaces
    #[arg(long, conflicts_with_all = ["config", "listen"])]
    pub probe: bool,
    /// Serve the harness protocol on this TCP address, as a Kubernetes pod's harness container
    #[arg(long, value_name = "ADDR", conflicts_with = "config")]
    pub listen: Option<SocketAddr>,
    /// The sandbox user's home with `--listen`: where commands start (created when missing)
    #[arg(long, value_name = "DIR", default_value = crate::sandbox::AGENT_HOME, requires = "listen")]
    pub home: PathBuf,
    /// With `--listen`: every connection must first send the token in this file (the pod's harness
    /// token, from its Secret)
    #[arg(long, value_name = "FILE", requires = "listen")]
    pub token_file: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<(), Error> {
    if let Some(listen) = args.listen {
        let token = match &args.token_file {
            Some(path) => {
                let token = std::fs::read_to_string(path)
                    .map_err(|e| Error::io(format!("cannot read the harness token `{}`", path.display()), e))?;
                let token = token.trim().to_owned();
                if token.is_empty() {
                    return Err(Error::failed(format!(
                        "the harness token file `{}` is empty",
                        path.display()
                    )));
                }
                Some(token)
            }
            None => None,
        };
        return listen_on(listen, args.home, token);
    }
    let result = match &args.config {
        Some(config) => local::launch(config).map(|_| ()),
        None => local::probe(),
    };
    result.map_err(|err| Error::failed(err.to_string()))
}

/// `--listen`: makes the home, binds, says where on stderr (`lap harness: listening on ADDR`), and serves until
/// accepting fails.
fn listen_on(listen: SocketAddr, home: PathBuf, token: Option<String>) -> Result<(), Error> {
    let home = home
        .into_os_string()
        .into_string()
        .map_err(|_| Error::failed("the `--home` directory must be valid UTF-8"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the harness runtime", e))?;
    std::fs::create_dir_all(&home).map_err(|e| Error::io(format!("cannot make the home `{home}`"), e))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {listen}"), e))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the harness address", e))?;
        eprintln!("lap harness: listening on {bound}");
        local::serve_tcp(listener, home, token)
            .await
            .map_err(|e| Error::io("the harness server stopped", e))
    })
}
