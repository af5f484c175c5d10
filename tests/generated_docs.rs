//! The committed completions (`completions/`), man pages (`man/`) and the README's harness table
//! (rendered from the harness catalog by `lap doctor --harnesses`) match what the CLI generates
//! (when they do not, run `scripts/regen-docs.sh` and commit the result); DEVELOPMENT.md's layout
//! tree lists exactly the files of `src/`.

use std::path::Path;
use std::process::Command;

const LAP: &str = env!("CARGO_BIN_EXE_lap");
const HINT: &str = "run `scripts/regen-docs.sh` and commit the result";

fn generate(args: &[&str]) -> Vec<u8> {
    let out = Command::new(LAP).args(args).output().expect("run lap");
    assert!(
        out.status.success(),
        "lap {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn committed_completions_are_current() {
    for (shell, file) in [
        ("bash", "lap.bash"),
        ("zsh", "_lap"),
        ("fish", "lap.fish"),
        ("elvish", "lap.elv"),
        ("powershell", "_lap.ps1"),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("completions").join(file);
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == generate(&["completions", shell]),
            "`{}` is stale; {HINT}",
            path.display()
        );
    }
}

#[test]
fn committed_man_pages_are_current() {
    let fresh = tempfile::tempdir().unwrap();
    generate(&["man", "--quiet", "--out", fresh.path().to_str().unwrap()]);
    let committed_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let names = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    assert_eq!(
        names(&committed_dir),
        names(fresh.path()),
        "the set of man pages changed; {HINT}"
    );
    for name in names(fresh.path()) {
        let committed = std::fs::read(committed_dir.join(&name)).unwrap();
        let generated = std::fs::read(fresh.path().join(&name)).unwrap();
        assert!(committed == generated, "`man/{name}` is stale; {HINT}");
    }
}

#[test]
fn the_readme_harness_table_is_the_catalogs() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let begin = readme
        .find("<!-- harness-table:begin")
        .expect("README.md has the harness-table:begin marker");
    let start = begin + readme[begin..].find('\n').unwrap() + 1;
    let end = readme
        .find("<!-- harness-table:end")
        .expect("README.md has the harness-table:end marker");
    let committed = &readme[start..end];
    let generated = String::from_utf8(generate(&["doctor", "--harnesses"])).unwrap();
    assert!(
        committed == generated,
        "the README's harness table is stale; {HINT}\ncommitted:\n{committed}\ngenerated:\n{generated}"
    );
}

/// The files of `src/`, as paths under it (`vault/intercept.rs`).
fn source_files(dir: &Path, under: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let path = format!("{under}{name}");
        if entry.file_type().unwrap().is_dir() {
            source_files(&entry.path(), &format!("{path}/"), out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The files DEVELOPMENT.md's layout tree names: an indented line per file or directory (two
/// spaces a level, directories ending in `/`), under `src/`.
fn layout_files(development: &str) -> Vec<String> {
    let begin = development
        .find("<!-- layout:begin -->")
        .expect("DEVELOPMENT.md has no layout:begin marker");
    let end = development
        .find("<!-- layout:end -->")
        .expect("DEVELOPMENT.md has no layout:end marker");
    let mut dirs: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for line in development[begin..end].lines() {
        let indent = line.len() - line.trim_start().len();
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if indent == 0 || name.starts_with("```") || name.starts_with("<!--") {
            continue;
        }
        let depth = indent / 2;
        dirs.truncate(depth - 1);
        match name.strip_suffix('/') {
            Some(dir) => dirs.push(format!("{dir}/")),
            None => out.push(format!("{}{name}", dirs.concat())),
        }
    }
    out
}

#[test]
fn development_md_layout_lists_exactly_the_modules_in_src() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut actual = Vec::new();
    source_files(&root.join("src"), "", &mut actual);
    actual.sort();
    let development = std::fs::read_to_string(root.join("DEVELOPMENT.md")).expect("read DEVELOPMENT.md");
    let mut listed = layout_files(&development);
    listed.sort();
    let missing: Vec<&String> = actual.iter().filter(|f| !listed.contains(f)).collect();
    let gone: Vec<&String> = listed.iter().filter(|f| !actual.contains(f)).collect();
    assert!(
        missing.is_empty() && gone.is_empty(),
        "DEVELOPMENT.md's layout and src/ differ: not in the layout {missing:?}; in the layout but not in src/ {gone:?}\n\
         hint: add (or remove) the file's line in DEVELOPMENT.md's tree, with the first line of its module doc"
    );
    assert_eq!(listed.len(), actual.len(), "a file is listed twice in DEVELOPMENT.md");
}
