//! `lap snapshots create|list|delete`: named copies of a session's workspace, kept by `lap serve`
//! under its data dir; `lap sessions create AGENT --from SNAPSHOT` starts a session on one.

use clap::Subcommand;

use super::Ctx;
use crate::error::Error;
use crate::wire::api::{CreateSnapshot, Snapshot};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy a session's workspace into a new snapshot (a running session is paused for the copy)
    Create {
        /// Session id
        session: String,
        /// A unique name: letters, digits, `.`, `_`, `-` (default: generated)
        #[arg(long)]
        name: Option<String>,
    },
    /// List snapshots, newest first
    List,
    /// Delete a snapshot and its copy
    Delete {
        /// Snapshot name or id
        name: String,
    },
}

pub async fn run(command: Command, ctx: &Ctx) -> Result<(), Error> {
    let client = ctx.client()?;
    match command {
        Command::Create { session, name } => {
            let snapshot = client.create_snapshot(&session, &CreateSnapshot { name }).await?;
            if ctx.out.json {
                ctx.out.json(&snapshot);
            } else {
                ctx.out.status(format!(
                    "snapshot of session {session}: {} ({})",
                    snapshot.path,
                    human_bytes(snapshot.size_bytes)
                ));
                ctx.out.line(&snapshot.name);
            }
        }
        Command::List => {
            let snapshots = client.list_snapshots().await?;
            if ctx.out.json {
                ctx.out.json(&snapshots);
            } else if snapshots.is_empty() {
                ctx.out
                    .status("no snapshots yet; take one with `lap snapshots create SESSION`");
            } else {
                let rows: Vec<Vec<String>> = snapshots.iter().map(row).collect();
                ctx.out.table(&["NAME", "SESSION", "AGENT", "SIZE", "CREATED"], &rows);
            }
        }
        Command::Delete { name } => {
            let deleted = client.delete_snapshot(&name).await?;
            if ctx.out.json {
                ctx.out.json(&deleted);
            } else {
                ctx.out.status(format!(
                    "deleted snapshot `{}` ({} freed)",
                    deleted.name,
                    human_bytes(deleted.size_bytes)
                ));
            }
        }
    }
    Ok(())
}

fn row(s: &Snapshot) -> Vec<String> {
    vec![
        s.name.clone(),
        s.session_id.to_string(),
        s.agent_name.clone(),
        human_bytes(s.size_bytes),
        s.created_at.clone(),
    ]
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_counts_read_in_binary_units() {
        assert_eq!(super::human_bytes(512), "512 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(10 * 1024 * 1024), "10.0 MiB");
    }
}
