//! `lap mcp`: an MCP server on stdin and stdout whose tools drive sessions of the configured
//! `lap serve` (see [`crate::mcp`]). It is a client like every other command: `--server`/`LAP_URL`,
//! the config file and the master key pick the server. Stdout carries only the protocol; logs go to
//! stderr.

use clap::Args as ClapArgs;

use super::Ctx;
use crate::error::Error;

/// Serve lap's sessions as MCP tools over stdio (for `claude mcp add lap -- lap mcp`)
#[derive(Debug, ClapArgs)]
pub struct Args {}

pub async fn run(_args: Args, ctx: &Ctx) -> Result<(), Error> {
    crate::mcp::serve_stdio(ctx.client()?).await
}
