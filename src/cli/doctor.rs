//! `lap doctor`: which harness tools this machine has where local sandboxes see them, and how to
//! install the missing ones.

use serde::Serialize;

use crate::error::Error;
use crate::harness::{CATALOG, tools};
use crate::output::Printer;

#[derive(Debug, Serialize)]
struct Tool {
    harness: &'static str,
    program: &'static str,
    /// Where a local sandbox finds it (`null`: missing).
    path: Option<String>,
    install_hint: &'static str,
}

pub fn run(out: &Printer) -> Result<(), Error> {
    let tools: Vec<Tool> = CATALOG
        .iter()
        .map(|harness| {
            let program = tools::program(harness);
            Tool {
                harness: harness.id,
                program,
                path: tools::find(program).map(|p| p.display().to_string()),
                install_hint: harness.install_hint,
            }
        })
        .collect();
    if out.json {
        out.json(&tools);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = tools
        .iter()
        .map(|t| {
            vec![
                t.harness.to_owned(),
                t.program.to_owned(),
                t.path.clone().unwrap_or_else(|| "missing".to_owned()),
                if t.path.is_some() {
                    String::new()
                } else {
                    t.install_hint.to_owned()
                },
            ]
        })
        .collect();
    out.table(&["HARNESS", "TOOL", "FOUND", "INSTALL"], &rows);
    out.status(format!(
        "local sandboxes run the host's tools from PATH={}; a session of a harness whose tool is missing is refused",
        tools::SANDBOX_PATH
    ));
    Ok(())
}
