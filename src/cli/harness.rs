//! `lap harness` (hidden): the in-sandbox side of the local backend, started by `lap serve`.
//!
//! Like `serve.rs` it is a composition root, so it may reach into `sandbox`: it only hands its
//! arguments to [`crate::sandbox::local`]. It runs before any async runtime exists, because creating
//! namespaces needs a single-threaded process. With `--config` it launches a sandbox and returns
//! once the sandbox is ready (the sandbox's PID 1 and harness server are forks of it that never
//! return here); with `--probe` it only checks that namespaces can be created.

use std::path::PathBuf;

use crate::error::Error;
use crate::sandbox::local;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sandbox's `config.json`, written by `lap serve`
    #[arg(long, value_name = "FILE", required_unless_present = "probe")]
    pub config: Option<PathBuf>,
    /// Only check that this process can create the sandbox namespaces
    #[arg(long, conflicts_with = "config")]
    pub probe: bool,
}

pub fn run(args: Args) -> Result<(), Error> {
    let result = match &args.config {
        Some(config) => local::launch(config).map(|_| ()),
        None => local::probe(),
    };
    result.map_err(|err| Error::failed(err.to_string()))
}
