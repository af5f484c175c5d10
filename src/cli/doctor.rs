//! `lap doctor`: which harness tools this machine has where local sandboxes see them, which
//! version each is and whether the test suite proved that version (`scripts/tool-versions`,
//! compiled in), and how to install the missing ones. `--harnesses` prints how lap runs each
//! harness (the table of `docs/guide/harnesses.md`, rendered from the catalog).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Error;
use crate::output::Printer;
use crate::tools::{CATALOG, installed};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print how lap runs each harness (first-run files, environment, model flag) as Markdown
    #[arg(long)]
    pub harnesses: bool,
}

#[derive(Debug, Serialize)]
struct Tool {
    harness: &'static str,
    program: &'static str,
    /// Where a local sandbox finds it (`null`: missing).
    path: Option<String>,
    /// What `TOOL --version` says (`null`: missing, or it could not be told: see `version_error`).
    version: Option<String>,
    version_error: Option<String>,
    /// The version the test suite proved (`null`: not a published tool).
    proven_version: Option<&'static str>,
    /// Whether the installed version is the proven one (`null`: not known).
    proven: Option<bool>,
    install_hint: &'static str,
}

pub fn run(args: Args, out: &Printer) -> Result<(), Error> {
    if args.harnesses {
        out.line(crate::tools::markdown_table().trim_end());
        return Ok(());
    }
    // Each program once, all at the same time: a slow `--version` holds up no other.
    let paths: BTreeMap<&'static str, Option<std::path::PathBuf>> = CATALOG
        .iter()
        .map(|h| (installed::program(h), installed::find(installed::program(h))))
        .collect();
    let versions: BTreeMap<&'static str, Result<String, String>> = std::thread::scope(|scope| {
        let running: Vec<_> = paths
            .iter()
            .filter_map(|(program, path)| {
                let path = path.as_ref()?;
                Some((
                    *program,
                    scope.spawn(move || installed::version(path, installed::VERSION_DEADLINE)),
                ))
            })
            .collect();
        running
            .into_iter()
            .map(|(program, thread)| {
                let version = thread
                    .join()
                    .unwrap_or_else(|_| {
                        Err(installed::VersionError::Unreadable {
                            program: program.to_owned(),
                            output: "the check panicked".to_owned(),
                        })
                    })
                    .map_err(|e| e.to_string());
                (program, version)
            })
            .collect()
    });
    let tools: Vec<Tool> = CATALOG
        .iter()
        .map(|harness| {
            let program = installed::program(harness);
            let version = versions.get(program);
            let proven_version = harness.package.as_ref().and_then(installed::proven);
            let installed = version.and_then(|v| v.as_ref().ok()).cloned();
            Tool {
                harness: harness.id,
                program,
                path: paths[program].as_ref().map(|p| p.display().to_string()),
                proven: match (&installed, proven_version) {
                    (Some(v), Some(p)) => Some(v == p),
                    _ => None,
                },
                version: installed,
                version_error: version.and_then(|v| v.as_ref().err()).cloned(),
                proven_version,
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
            let note = match (&t.path, t.proven, t.proven_version) {
                (None, _, _) => format!("install: {}", t.install_hint),
                (Some(_), Some(true), _) => "proven".to_owned(),
                (Some(_), Some(false), Some(proven)) => format!("untested: the suite proved {proven}"),
                (Some(_), _, _) if t.version_error.is_some() => "version unknown".to_owned(),
                (Some(_), _, _) => String::new(),
            };
            vec![
                t.harness.to_owned(),
                t.program.to_owned(),
                t.path.clone().unwrap_or_else(|| "missing".to_owned()),
                t.version.clone().unwrap_or_else(|| "-".to_owned()),
                note,
            ]
        })
        .collect();
    out.table(&["HARNESS", "TOOL", "FOUND", "VERSION", "NOTE"], &rows);
    let mut errors: Vec<&String> = tools.iter().filter_map(|t| t.version_error.as_ref()).collect();
    errors.dedup();
    for error in errors {
        out.warn(error.clone());
    }
    out.status(format!(
        "local sandboxes run the host's tools from PATH={}; a session of a harness whose tool is missing is refused",
        installed::SANDBOX_PATH
    ));
    if tools.iter().any(|t| t.proven == Some(false)) {
        out.status("an untested version may speak a changed protocol: install the proven one (scripts/test.sh does), or try the newest with scripts/check-tools.sh");
    }
    Ok(())
}
