use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    lap::cli::completions::complete_if_asked();
    let cli = lap::cli::Cli::parse();
    lap::cli::init_tracing(&cli);
    match lap::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => lap::error::report(&err),
    }
}
