//! `lap audit [--limit N] [-f] [--json]` (admin): the audit log of `lap serve`, every control-plane
//! action with who did it, when and from where; `-f` keeps printing new ones as they happen.

use std::time::Duration;

use super::Ctx;
use crate::error::Error;
use crate::wire::teams::{AUDIT_PAGE_MAX, AuditEntry};

/// How often `-f` asks for new entries.
const FOLLOW_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many of the latest entries to show first (at most 1000)
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Keep printing new entries as they happen, until interrupted (with --json: one object per line)
    #[arg(short, long)]
    pub follow: bool,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<(), Error> {
    let client = ctx.client()?;
    let limit = args.limit.clamp(1, AUDIT_PAGE_MAX);
    let entries = client.audit(None, limit).await?.entries;
    if !args.follow {
        if ctx.out.json {
            ctx.out.json(&entries);
        } else if entries.is_empty() {
            ctx.out.status("the audit log is empty");
        } else {
            let rows: Vec<Vec<String>> = entries.iter().map(row).collect();
            ctx.out.table(&HEADERS, &rows);
        }
        return Ok(());
    }
    let mut last = entries.last().map_or(0, |e| e.id);
    print(ctx, &entries);
    loop {
        tokio::time::sleep(FOLLOW_POLL).await;
        let entries = client.audit(Some(last), AUDIT_PAGE_MAX).await?.entries;
        if let Some(entry) = entries.last() {
            last = entry.id;
        }
        print(ctx, &entries);
    }
}

const HEADERS: [&str; 6] = ["AT", "ACTOR", "ACTION", "TARGET", "STATUS", "FROM"];

/// Entries as they come, one line each: a JSON object per line with `--json`.
fn print(ctx: &Ctx, entries: &[AuditEntry]) {
    for entry in entries {
        if ctx.out.json {
            ctx.out
                .line(serde_json::to_string(entry).expect("an audit entry serialises"));
        } else {
            ctx.out.line(row(entry).join("  "));
        }
    }
}

fn row(entry: &AuditEntry) -> Vec<String> {
    vec![
        entry.at.clone(),
        entry.actor.clone(),
        entry.action.clone(),
        entry.target.clone().unwrap_or_default(),
        entry.status.to_string(),
        entry.peer.clone().unwrap_or_default(),
    ]
}
