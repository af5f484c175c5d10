//! `lap ls SESSION[:PATH]`: lists a directory in a session's sandbox (a file: that file), like
//! `ls -l`: mode, size, modification time, name (`name/` for a directory, `name -> target` for a
//! link). A bare `SESSION` lists the sandbox user's home, `/work/home`. `--json` prints the
//! [`crate::wire::files::FileList`].

use clap::Args as ClapArgs;

use super::Ctx;
use super::cp::{Location, parse_location};
use crate::error::Error;
use crate::wire::files::{FileEntry, FileKind, parse_mode};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// `SESSION:PATH` (absolute under /work or /tmp, or relative to /work/home); `SESSION` alone
    /// lists /work/home
    pub target: String,
}

pub async fn run(args: Args, ctx: &Ctx) -> Result<(), Error> {
    let (session, path) = match parse_location(&args.target) {
        Location::Remote { session, path } => (session, path),
        Location::Local(_) if !args.target.is_empty() && !args.target.contains('/') => {
            (args.target.clone(), ".".into())
        }
        Location::Local(_) => {
            return Err(Error::usage(
                format!("`{}` is not `SESSION:PATH`", args.target),
                "e.g. `lap ls 1b4e…:/work`; `lap sessions list` shows the sessions",
            ));
        }
    };
    let listing = ctx.client()?.list_files(&session, &path).await?;
    if ctx.out.json {
        ctx.out.json(&listing);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = listing
        .entries
        .iter()
        .map(|e| vec![mode_string(e), e.size.to_string(), e.modified.clone(), display_name(e)])
        .collect();
    ctx.out.table(&["MODE", "SIZE", "MODIFIED", "NAME"], &rows);
    if listing.truncated > 0 {
        ctx.out.warn(format!(
            "{} more entries are not shown (a listing stops at {})",
            listing.truncated,
            listing.entries.len()
        ));
    }
    Ok(())
}

/// `drwxr-xr-x` from the entry's type and mode.
pub fn mode_string(entry: &FileEntry) -> String {
    let kind = match entry.kind {
        FileKind::Directory => 'd',
        FileKind::Symlink => 'l',
        FileKind::File => '-',
        FileKind::Other => '?',
    };
    let mode = parse_mode(&entry.mode).unwrap_or(0);
    let mut text = String::from(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 0o7;
        text.push(if bits & 4 != 0 { 'r' } else { '-' });
        text.push(if bits & 2 != 0 { 'w' } else { '-' });
        text.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    text
}

fn display_name(entry: &FileEntry) -> String {
    match (&entry.kind, &entry.target) {
        (FileKind::Directory, _) => format!("{}/", entry.name),
        (FileKind::Symlink, Some(target)) => format!("{} -> {target}", entry.name),
        _ => entry.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_like_ls() {
        let entry = FileEntry {
            name: "d".into(),
            path: "/work/d".into(),
            kind: FileKind::Directory,
            size: 0,
            mode: "0750".into(),
            modified: String::new(),
            target: None,
        };
        assert_eq!(mode_string(&entry), "drwxr-x---");
        assert_eq!(display_name(&entry), "d/");
    }
}
