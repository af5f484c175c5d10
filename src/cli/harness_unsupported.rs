//! `lap harness` (hidden) on a system without the Linux sandbox: it only says so.
//!
//! The real command (`cli/harness.rs`) runs inside a sandbox as its PID 1 and needs Linux
//! namespaces; `cli.rs` picks this file instead on any other system (and under `--cfg lap_portable`),
//! so the command line stays the same everywhere and the error names the ways forward.

use std::ffi::OsString;

use crate::error::Error;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Whatever arguments the Linux `lap harness` takes
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<OsString>,
}

pub fn run(_args: Args) -> Result<(), Error> {
    let err = crate::platform::harness_unsupported();
    Err(Error::failed_with_hint(err.to_string(), err.hint()))
}
