//! `lap completions SHELL`: prints a completion script to stdout.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::error::Error;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell: bash, zsh, fish, elvish or powershell
    pub shell: Shell,
}

pub fn run(args: Args) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    write(args.shell, &mut out);
    Ok(())
}

/// Writes the completion script of `shell` (also used to generate `completions/`).
pub fn write(shell: Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut super::Cli::command(), "lap", out);
}
