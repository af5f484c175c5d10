//! Commands whose names are reserved now and implemented by later work: `lap <agent-name>`,
//! `lap attach ID`, `lap exec ID -- CMD…`. They parse their arguments and say so cleanly.

use clap::Args;

use crate::error::Error;

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Session id
    pub session: String,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Session id
    pub session: String,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

const HINT: &str = "this build has no terminal attach yet; use `lap sessions create AGENT` and the REST API meanwhile";

pub fn attach(args: AttachArgs) -> Result<(), Error> {
    Err(Error::NotYet {
        what: format!("`lap attach {}`", args.session),
        hint: HINT,
    })
}

pub fn exec(args: ExecArgs) -> Result<(), Error> {
    Err(Error::NotYet {
        what: format!("`lap exec {}`", args.session),
        hint: HINT,
    })
}

pub fn open(words: Vec<String>) -> Result<(), Error> {
    let agent = words.first().cloned().unwrap_or_default();
    Err(Error::NotYet {
        what: format!("opening agent `{agent}` in this terminal"),
        hint: HINT,
    })
}
