//! `lap logout`: forgets the saved master key (keyring and file) and the saved server URL.

use super::Ctx;
use crate::error::Error;

pub fn run(ctx: &Ctx) -> Result<(), Error> {
    let removed = ctx.settings.logout()?;
    if removed.is_empty() {
        ctx.out.status("nothing to forget: no saved login");
    }
    for item in removed {
        ctx.out.status(format!("removed {item}"));
    }
    Ok(())
}
