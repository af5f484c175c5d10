//! `lap exec ID -- CMD…`: runs
//! the command in the session's sandbox, copies its stdout and stderr to ours, and exits with its
//! exit code; stdin is sent along (at most [`MAX_EXEC_STDIN`] bytes) when it is not a terminal.

use std::io::{IsTerminal, Read, Write};

use base64::Engine;
use clap::Args;

use super::Ctx;
use crate::error::Error;
use crate::wire::api::{ExecCommand, ExecEvent, MAX_EXEC_STDIN};

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Session id
    pub session: String,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub async fn exec(args: ExecArgs, ctx: &Ctx) -> Result<(), Error> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let stdin = if std::io::stdin().is_terminal() {
        None
    } else {
        let data = tokio::task::spawn_blocking(|| {
            let mut data = Vec::new();
            std::io::stdin()
                .take(MAX_EXEC_STDIN as u64 + 1)
                .read_to_end(&mut data)
                .map(|_| data)
        })
        .await
        .map_err(|e| Error::failed(format!("cannot read stdin: {e}")))?
        .map_err(|e| Error::io("cannot read stdin", e))?;
        if data.len() > MAX_EXEC_STDIN {
            return Err(Error::usage(
                format!("stdin is over {MAX_EXEC_STDIN} bytes"),
                "put large input in a file under /work and read it from there",
            ));
        }
        Some(b64.encode(data))
    };
    let body = ExecCommand {
        command: args.command,
        stdin,
        cwd: None,
    };
    let mut events = ctx.client()?.exec(&args.session, &body).await?;
    let write = |mut to: Box<dyn Write>, data: &str| -> Result<(), Error> {
        let bytes = b64
            .decode(data)
            .map_err(|e| Error::failed(format!("the server sent bad output: {e}")))?;
        to.write_all(&bytes)
            .and_then(|()| to.flush())
            .map_err(|e| Error::io("cannot write the command's output", e))
    };
    loop {
        match events.next().await? {
            Some(ExecEvent::Stdout(data)) => write(Box::new(std::io::stdout()), &data)?,
            Some(ExecEvent::Stderr(data)) => write(Box::new(std::io::stderr()), &data)?,
            Some(ExecEvent::ExitCode(0)) => return Ok(()),
            // Like `kubectl exec`: our exit code is the command's.
            Some(ExecEvent::ExitCode(code)) => std::process::exit(code),
            Some(ExecEvent::Error(message)) => return Err(Error::failed(message)),
            None => {
                return Err(Error::failed(
                    "the server ended the command's output without an exit code",
                ));
            }
        }
    }
}
