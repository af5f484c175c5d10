//! `lap login [--url URL] [--key-stdin | --oidc [--no-browser]]`: checks a key against the server,
//! then saves both: the master key, or a user's API key (`lap keys create`), which acts as that user
//! with its role.
//!
//! The key is read with hidden input on a terminal, or from stdin with `--key-stdin`; never from
//! argv, where other users could see it in `ps`. With `--oidc` there is no key to type: the server's
//! OpenID provider signs the person in, in a browser, and the server hands this command a key of
//! theirs once they approve it there (`api/oidc.rs`).

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
    /// Sign in with the server's OpenID provider in a browser instead of a key: prints a link (and
    /// opens it), and saves the API key the server makes once you approve the sign-in there
    #[arg(long, conflicts_with = "key_stdin")]
    pub oidc: bool,
    /// With --oidc: only print the link, do not open a browser
    #[arg(long, requires = "oidc")]
    pub no_browser: bool,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<(), Error> {
    let url = args
        .url
        .unwrap_or_else(|| ctx.settings.url.value.clone())
        .trim_end_matches('/')
        .to_owned();
    let ca = ctx.settings.ca_cert.as_ref().map(|c| c.value.clone());
    if args.oidc {
        return oidc_login(&url, ca.as_deref(), args.no_browser, ctx).await;
    }
    let key = read_key(&url, args.key_stdin)?;
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

/// `lap login --oidc`: a sign-in in the browser, approved there; then its key is saved.
async fn oidc_login(url: &str, ca: Option<&std::path::Path>, no_browser: bool, ctx: &Ctx) -> Result<(), Error> {
    let client = Client::new(url, None, ca)?;
    let start = client.oidc_start().await?;
    // Shown even with --quiet: without the link there is no sign-in.
    eprintln!("Open this link to sign in to {url}:\n\n    {}\n", start.url);
    eprintln!(
        "Then approve the sign-in of the terminal showing the code {}.",
        start.code
    );
    if !no_browser {
        open_browser(&start.url);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(start.expires_in_seconds);
    let spinner = ctx.out.spinner("waiting for the sign-in in the browser");
    let issued = loop {
        if std::time::Instant::now() >= deadline {
            spinner.finish_and_clear();
            return Err(Error::failed_with_hint(
                format!(
                    "the sign-in was not finished within {} minutes; nothing was saved",
                    start.expires_in_seconds / 60
                ),
                "run `lap login --oidc` again",
            ));
        }
        match client.oidc_poll(&start.poll).await {
            Ok(Some(issued)) => break issued,
            Ok(None) => {}
            Err(err) => {
                spinner.finish_and_clear();
                return Err(err.into());
            }
        }
    };
    spinner.finish_and_clear();
    let notice = ctx.settings.save_login(url, &Secret::new(issued.key), ca)?;
    ctx.out.status(notice);
    let until = issued
        .expires_at
        .map(|at| format!("; the key lasts until {at}"))
        .unwrap_or_default();
    ctx.out.status(format!(
        "logged in to {url} as {} ({}{until})",
        issued.user, issued.role
    ));
    Ok(())
}

/// Opens `url` in the person's browser, when there is one to open; the link is printed either way.
fn open_browser(url: &str) {
    let command = if cfg!(target_os = "macos") {
        Some(("open", vec![url]))
    } else if cfg!(windows) {
        Some(("explorer", vec![url]))
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some() {
        Some(("xdg-open", vec![url]))
    } else {
        None
    };
    if let Some((program, args)) = command
        && let Ok(mut child) = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
    {
        // Reaped beside the sign-in, so it leaves no zombie behind.
        std::thread::spawn(move || child.wait());
    }
}
