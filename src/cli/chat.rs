//! `lap chat AGENT|SESSION`: a line-editing REPL over the message API.
//!
//! Each line is one message, streamed back as it arrives, followed by a dim line with the turn's
//! time, output tokens and cost. Lines are edited with rustyline (Emacs keys, history search) and
//! kept in `chat_history` under lap's data dir, so earlier messages come back with the up arrow in
//! the next chat. Ctrl-C during a reply aborts the turn and waits (at most [`ABORT_WAIT`], a second
//! Ctrl-C stops waiting) for it to end, so the next line is not refused as busy; Ctrl-C at the
//! prompt clears the line;
//! Ctrl-D on an empty line ends the chat (the session stays, as in LAP).

use std::time::Instant;

use clap::Args as ClapArgs;
use rustyline::error::ReadlineError;

use super::Ctx;
use super::send::{ABORT_WAIT, Print, stream, target_session, turn_result};
use crate::error::Error;
use crate::wire::messages::SendMessage;

/// Lines kept in the history file.
const HISTORY_LINES: usize = 1000;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// An agent's name or id (its live session is reused, else one is created), or a session id
    pub target: String,
    /// Start a new session even when the agent has a live one
    #[arg(long)]
    pub new: bool,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<(), Error> {
    let client = ctx.client()?;
    let session = target_session(ctx, &client, &args.target, args.new).await?;
    let id = session.id.to_string();
    ctx.out.status(format!(
        "chatting with session {id} — Ctrl-D to end, Ctrl-C to stop a reply"
    ));
    let history = history_file();
    let config = rustyline::Config::builder()
        .max_history_size(HISTORY_LINES)
        .map_err(|e| Error::failed(format!("cannot set up line editing: {e}")))?
        .auto_add_history(true)
        .build();
    let mut editor = rustyline::DefaultEditor::with_config(config)
        .map_err(|e| Error::failed(format!("cannot set up line editing: {e}")))?;
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    loop {
        // rustyline blocks: it runs on the blocking pool and hands the editor back.
        let (back, line) = tokio::task::spawn_blocking(move || {
            let line = editor.readline("> ");
            (editor, line)
        })
        .await
        .map_err(|e| Error::failed(format!("the line editor stopped: {e}")))?;
        editor = back;
        let text = match line {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => text,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(err) => return Err(Error::failed(format!("cannot read a line: {err}"))),
        };
        if let Some(path) = &history {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = editor.save_history(path);
        }
        let started = Instant::now();
        let body = SendMessage::text(text);
        let turn = stream(ctx, &client, &id, &body, Print::Text, false);
        tokio::pin!(turn);
        let reply = tokio::select! {
            reply = &mut turn => reply,
            _ = tokio::signal::ctrl_c() => {
                let _ = client.abort(&id).await;
                // The tool takes a moment to honour the abort (lap serve stops it after a grace).
                tokio::select! {
                    ended = tokio::time::timeout(ABORT_WAIT, &mut turn) => if ended.is_err() {
                        ctx.out.warn(format!("the aborted turn has not ended within {}s", ABORT_WAIT.as_secs()));
                    },
                    _ = tokio::signal::ctrl_c() => {}
                }
                ctx.out.status("[aborted]");
                continue;
            }
        };
        match reply {
            Ok(message) => {
                let tokens = message.info.tokens.map(|t| t.output).unwrap_or(0);
                let cost = message.info.cost.unwrap_or(0.0);
                let meta = format!(
                    "{:.1}s · ↓ {tokens} tokens · ${cost:.4}",
                    started.elapsed().as_secs_f32()
                );
                ctx.out.status(if ctx.out.color {
                    format!("\x1b[2m{meta}\x1b[0m")
                } else {
                    meta
                });
                if let Err(err) = turn_result(&message) {
                    ctx.out.warn(err.to_string());
                }
            }
            Err(err) => ctx.out.warn(err.to_string()),
        }
    }
    ctx.out.status("[chat ended]");
    Ok(())
}

/// `chat_history` in lap's data dir (`~/.local/share/lap` on Linux).
fn history_file() -> Option<std::path::PathBuf> {
    let dirs = directories::ProjectDirs::from("dev", "lap", "lap")?;
    Some(dirs.data_dir().join("chat_history"))
}
