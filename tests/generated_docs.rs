//! The committed completions (`completions/`), man pages (`man/`) and the README's harness table
//! (rendered from the harness catalog by `lap doctor --harnesses`) match what the CLI generates.
//! When this fails, run `scripts/regen-docs.sh` and commit the result.

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
