//! `lap config`: the effective client settings, where each came from, the key masked.

use super::Ctx;
use crate::error::Error;

pub fn run(ctx: &Ctx) -> Result<(), Error> {
    let report = ctx.settings.report();
    if ctx.out.json {
        ctx.out.json(&report);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = report
        .values
        .iter()
        .map(|(name, v)| {
            vec![
                (*name).to_owned(),
                v.value.clone().unwrap_or_else(|| "(not set)".into()),
                v.source.as_ref().map(ToString::to_string).unwrap_or_default(),
            ]
        })
        .collect();
    ctx.out.table(&["SETTING", "VALUE", "SOURCE"], &rows);
    Ok(())
}
