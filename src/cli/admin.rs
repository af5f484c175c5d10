//! `lap admin stats`: the warm pool (size, warm sandboxes per agent and harness, hits, misses,
//! recent claim latencies) and sessions by status, from `GET /api/v1/admin/stats`.

use clap::Subcommand;

use super::Ctx;
use crate::error::Error;
use crate::wire::admin::AdminStats;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the warm pool and sessions at a glance
    Stats,
}

pub async fn run(command: Command, ctx: &Ctx) -> Result<(), Error> {
    match command {
        Command::Stats => {
            let stats = ctx.client()?.admin_stats().await?;
            if ctx.out.json {
                ctx.out.json(&stats);
            } else {
                ctx.out.line(render(&stats));
            }
        }
    }
    Ok(())
}

/// The human view: a summary line, one row per warm group, the recent claims.
fn render(stats: &AdminStats) -> String {
    let pool = &stats.warm_pool;
    let mut out = if pool.configured_size == 0 {
        "warm pool: off (--warm-pool-size 0)\n".to_owned()
    } else {
        format!(
            "warm pool: {} of {} ready, {} warming; {} hits, {} misses; recent agents: {}h; max age: {}\n",
            pool.ready,
            pool.configured_size,
            pool.warming,
            pool.hits,
            pool.misses,
            pool.recent_agent_hours,
            humantime::format_duration(std::time::Duration::from_secs(pool.max_age_seconds)),
        )
    };
    if !pool.groups.is_empty() {
        let rows: Vec<Vec<String>> = pool
            .groups
            .iter()
            .map(|g| {
                vec![
                    g.harness_id.clone(),
                    g.agent_name
                        .clone()
                        .or_else(|| g.agent_id.map(|id| id.to_string()))
                        .unwrap_or_else(|| "(any)".to_owned()),
                    g.target.to_string(),
                    g.ready.to_string(),
                    g.warming.to_string(),
                    g.claimed.to_string(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&crate::output::table(
            &["HARNESS", "AGENT", "TARGET", "READY", "WARMING", "CLAIMED"],
            &rows,
        ));
        out.push('\n');
    }
    if !pool.recent_claims.is_empty() {
        let rows: Vec<Vec<String>> = pool
            .recent_claims
            .iter()
            .map(|c| {
                vec![
                    c.at.clone(),
                    c.agent_name.clone(),
                    format!("{:.1} ms", c.latency_ms),
                    if c.agent_warm { "agent" } else { "harness" }.to_owned(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&crate::output::table(
            &["CLAIMED AT", "AGENT", "LATENCY", "WARM FOR"],
            &rows,
        ));
        out.push('\n');
    }
    let sessions: Vec<String> = stats.sessions.iter().map(|(s, n)| format!("{n} {s}")).collect();
    out.push_str(&format!(
        "\nsessions: {}",
        if sessions.is_empty() {
            "none".to_owned()
        } else {
            sessions.join(", ")
        }
    ));
    out
}
