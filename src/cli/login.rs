//! `lap login [--url URL] [--key-stdin]`: checks a key against the server, then saves both: the
//! master key, or a user's API key (`lap keys create`), which acts as that user with its role.
//!
//! The key is read with hidden input on a terminal, or from stdin with `--key-stdin`; never from
//! argv, where other users could see it in `ps`.

use std::io::{BufRead, IsTerminal};

use super::Ctx;
use crate::client::{Client, ClientError};
use crate::error::Error;
use crate::secret::Secret;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server URL to log in to [default: the effective server URL]
    #[arg(long)]
    pub url: Option<String>,
    /// Read the key (the master key, or an API key) from the first line of stdin
    #[arg(long)]
    pub key_stdin: bool,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<(), Error> {
    let url = args
        .url
        .unwrap_or_else(|| ctx.settings.url.value.clone())
        .trim_end_matches('/')
        .to_owned();
    let key = read_key(&url, args.key_stdin)?;
    let ca = ctx.settings.ca_cert.as_ref().map(|c| c.value.clone());
    let client = Client::new(&url, Some(key.clone()), ca.as_deref())?;
    match client.verify_key().await {
        Ok(()) => {}
        Err(ClientError::Unauthorized { url }) => {
            return Err(Error::failed_with_hint(
                format!("`{url}` rejected this master key; nothing was saved"),
                "copy the key `lap serve` printed on its first start, or from `LAP_MASTER_KEY` of the server",
            ));
        }
        Err(other) => return Err(other.into()),
    }
    let notice = ctx.settings.save_login(&url, &key, ca.as_deref())?;
    ctx.out.status(notice);
    ctx.out.status(format!("logged in to {url}"));
    Ok(())
}

fn read_key(url: &str, from_stdin: bool) -> Result<Secret, Error> {
    let key = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::io("cannot read the key from stdin", e))?;
        line
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("master key or API key for {url}: "))
            .map_err(|e| Error::io("cannot read the key from the terminal", e))?
    } else {
        return Err(Error::usage(
            "stdin is not a terminal, so the key cannot be prompted for",
            "pipe it in with `lap login --key-stdin`, or set `LAP_MASTER_KEY`",
        ));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(Error::usage(
            "the key is empty",
            "paste the key `lap serve` printed on its first start, or the API key an admin made for you",
        ));
    }
    Ok(Secret::new(key))
}
