//! `lap vault ca`: the vault's CA certificate, for tools outside a sandbox that talk to one. The kube
//! backend has none to give (each pod's vault has a CA of its own): `lap serve` refuses, and so does this.
//! `lap vault sidecar` (hidden) runs the vault standalone; it lives in `sidecar.rs`.

use clap::Subcommand;

use super::Ctx;
use crate::error::Error;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the vault CA certificate (PEM) that sandboxes trust for intercepted HTTPS (refused on
    /// the kube backend: each pod trusts a CA of its own)
    Ca,
    /// Run the vault standalone, as a sandbox pod's sidecar (Kubernetes backend)
    #[command(hide = true)]
    Sidecar(Box<super::sidecar::Args>),
}

pub async fn run(command: Command, ctx: &Ctx) -> Result<(), Error> {
    match command {
        Command::Sidecar(_) => unreachable!("dispatched before the client settings are resolved"),
        Command::Ca => {
            let pem = ctx.client()?.vault_ca().await?;
            if ctx.out.json {
                ctx.out.json(&serde_json::json!({ "certificate": pem }));
            } else {
                ctx.out.line(pem.trim_end());
            }
        }
    }
    Ok(())
}
