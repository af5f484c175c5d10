//! `lap man [--out DIR]`: writes one man page per command (`lap.1`, `lap-agents-create.1`, …).

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::error::Error;
use crate::output::Printer;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write the pages to
    #[arg(long, default_value = "man")]
    pub out: PathBuf,
}

pub fn run(args: Args, out: &Printer) -> Result<(), Error> {
    let written = write_all(&args.out)?;
    out.status(format!("wrote {written} man pages to `{}`", args.out.display()));
    Ok(())
}

/// Writes every page into `dir`; returns how many.
pub fn write_all(dir: &Path) -> Result<usize, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("cannot create `{}`", dir.display()), e))?;
    let mut count = 0;
    let mut stack = vec![("lap".to_owned(), super::Cli::command().name("lap"))];
    while let Some((name, cmd)) = stack.pop() {
        if cmd.is_hide_set() {
            continue;
        }
        for sub in cmd.get_subcommands() {
            let sub_name = format!("{name}-{}", sub.get_name());
            stack.push((sub_name.clone(), sub.clone().name(sub_name)));
        }
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut page)
            .map_err(|e| Error::io("cannot render a man page", e))?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page).map_err(|e| Error::io(format!("cannot write `{}`", path.display()), e))?;
        count += 1;
    }
    Ok(count)
}
