//! The committed completions (`completions/`), man pages (`man/`), reference pages
//! (`docs/reference/cli.md` and the generated part of `docs/reference/configuration.md`) and the
//! harness table of `docs/guide/harnesses.md` (rendered from the harness catalog by
//! `lap doctor --harnesses`) match what the CLI generates (when they do not, run
//! `scripts/regen-docs.sh` and commit the result); every environment variable named in `src/` is in
//! the configuration page; the documentation's relative links lead to files that exist, and the
//! troubleshooting rows that hints link to exist; DEVELOPMENT.md's layout tree lists exactly the
//! files of `src/`.

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

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read `{}`: {e}", path.display()))
}

/// The text between the line holding `<!-- NAME:begin` and the one holding `<!-- NAME:end`.
fn between_markers<'a>(text: &'a str, name: &str, file: &str) -> &'a str {
    let begin = text
        .find(&format!("<!-- {name}:begin"))
        .unwrap_or_else(|| panic!("{file} has no {name}:begin marker"));
    let start = begin + text[begin..].find('\n').unwrap() + 1;
    let end = text
        .find(&format!("<!-- {name}:end"))
        .unwrap_or_else(|| panic!("{file} has no {name}:end marker"));
    &text[start..end]
}

#[test]
fn the_harness_table_is_the_catalogs() {
    let file = "docs/guide/harnesses.md";
    let page = read(file);
    let committed = between_markers(&page, "harness-table", file);
    let generated = String::from_utf8(generate(&["doctor", "--harnesses"])).unwrap();
    assert!(
        committed == generated,
        "the harness table of `{file}` is stale; {HINT}\ncommitted:\n{committed}\ngenerated:\n{generated}"
    );
}

#[test]
fn the_cli_reference_is_the_command_lines() {
    let file = "docs/reference/cli.md";
    let generated = String::from_utf8(generate(&["reference", "cli"])).unwrap();
    assert!(read(file) == generated, "`{file}` is stale; {HINT}");
}

#[test]
fn the_configuration_reference_is_the_command_lines() {
    let file = "docs/reference/configuration.md";
    let page = read(file);
    let committed = between_markers(&page, "configuration", file);
    let generated = String::from_utf8(generate(&["reference", "configuration"])).unwrap();
    assert!(
        committed == generated,
        "the generated part of `{file}` is stale; {HINT}\ncommitted:\n{committed}\ngenerated:\n{generated}"
    );
}

/// Every `"LAP_…"`/`"WARM_POOL_…"` string literal in `src/`: the names of environment variables.
fn env_var_literals(text: &str, out: &mut Vec<String>) {
    for (i, _) in text.match_indices('"') {
        let rest = &text[i + 1..];
        let Some(end) = rest.find('"') else { continue };
        let name = &rest[..end];
        let is_name = (name.starts_with("LAP_") || name.starts_with("WARM_POOL_"))
            && name.len() > 4
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if is_name && !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
}

#[test]
fn every_environment_variable_in_src_is_in_the_configuration_reference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    source_files(&root.join("src"), "", &mut files);
    let mut names = Vec::new();
    for file in files {
        env_var_literals(&read(&format!("src/{file}")), &mut names);
    }
    assert!(names.len() > 20, "found only {names:?}");
    let page = read("docs/reference/configuration.md");
    let missing: Vec<&String> = names.iter().filter(|n| !page.contains(&format!("`{n}`"))).collect();
    assert!(
        missing.is_empty(),
        "environment variables read in src/ but not in docs/reference/configuration.md: {missing:?}\n\
         hint: add each to `settings::ENVIRONMENT` (or give its flag `env =`), then {HINT}"
    );
}

/// The Markdown files of the user documentation: README.md, DEVELOPMENT.md and `docs/`.
fn documentation() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec!["README.md".to_owned(), "DEVELOPMENT.md".to_owned()];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read docs/") {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// The targets of the inline links `[text](target)` of a Markdown text, outside code.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced {
            continue;
        }
        for (i, _) in line.match_indices("](") {
            let rest = &line[i + 2..];
            if let Some(end) = rest.find(')') {
                out.push(rest[..end].to_owned());
            }
        }
    }
    out
}

#[test]
fn the_documentations_relative_links_lead_to_files_and_anchors_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    for file in documentation() {
        let dir = Path::new(&file).parent().unwrap().to_owned();
        for target in link_targets(&read(&file)) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let linked = if path.is_empty() {
                file.clone()
            } else {
                dir.join(path).to_string_lossy().into_owned()
            };
            let full = root.join(&linked);
            if !full.exists() {
                broken.push(format!("{file}: {target} (no file)"));
                continue;
            }
            if !anchor.is_empty() && linked.ends_with(".md") && !anchors(&read(&linked)).contains(&anchor.to_owned()) {
                broken.push(format!("{file}: {target} (no such heading or anchor)"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The anchors of a Markdown page: GitHub's slug of each heading, and each `<a id="…">`.
fn anchors(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced {
            continue;
        }
        if let Some(heading) = line.strip_prefix('#') {
            let heading = heading.trim_start_matches('#').trim();
            let slug: String = heading
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect();
            out.push(slug);
        }
        for (i, _) in line.match_indices("<a id=\"") {
            let rest = &line[i + 7..];
            if let Some(end) = rest.find('"') {
                out.push(rest[..end].to_owned());
            }
        }
    }
    out
}

#[test]
fn every_troubleshooting_link_in_src_has_its_row() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    source_files(&root.join("src"), "", &mut files);
    let rows = anchors(&read("docs/troubleshooting.md"));
    let needle = "docs/troubleshooting.md#";
    let mut links = 0;
    let mut missing = Vec::new();
    for file in files {
        let text = read(&format!("src/{file}"));
        for (i, _) in text.match_indices(needle) {
            let anchor: String = text[i + needle.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            links += 1;
            if !rows.contains(&anchor) {
                missing.push(format!("src/{file}: #{anchor}"));
            }
        }
    }
    assert!(links > 0, "no hint links to docs/troubleshooting.md");
    assert!(
        missing.is_empty(),
        "hints link to troubleshooting rows that do not exist: {missing:?}"
    );
}

/// Troubleshooting rows no message of lap links to, each with why: its symptom is not lap's own
/// message, or lap's message says all of the row in its one hint line.
const ROWS_NOT_LINKED: &[(&str, &str)] = &[
    ("agent-exists", "the hint names both ways out in one line"),
    ("turn-running", "the hint names both ways out in one line"),
    ("certificate", "the symptom is the tool's own error, not lap's"),
    (
        "web-ui-sign-in",
        "the symptom is the browser's sign-in page, no message",
    ),
    (
        "kube-pod-failed",
        "a session's failure reason, which `lap sessions show` prints without a hint line",
    ),
    (
        "kube-vault-bind",
        "a session's failure reason, which `lap sessions show` prints without a hint line",
    ),
];

#[test]
fn every_troubleshooting_row_is_linked_from_its_message_or_says_why_not() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    source_files(&root.join("src"), "", &mut files);
    let sources: String = files.iter().map(|f| read(&format!("src/{f}"))).collect();
    let page = read("docs/troubleshooting.md");
    // The rows, not the page's headings.
    let rows: Vec<String> = anchors(&page)
        .into_iter()
        .filter(|a| page.contains(&format!("<a id=\"{a}\">")))
        .collect();
    let needle = "docs/troubleshooting.md#";
    let linked: Vec<String> = sources
        .match_indices(needle)
        .map(|(i, _)| {
            sources[i + needle.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect()
        })
        .collect();
    let mut unlinked = Vec::new();
    for row in &rows {
        let linked = linked.contains(row);
        let excused = ROWS_NOT_LINKED.iter().any(|(r, _)| r == row);
        assert!(
            !(linked && excused),
            "#{row} is linked from src/ and also listed in ROWS_NOT_LINKED: take it off the list"
        );
        if !linked && !excused {
            unlinked.push(row.clone());
        }
    }
    for (row, _) in ROWS_NOT_LINKED {
        assert!(
            rows.contains(&row.to_string()),
            "ROWS_NOT_LINKED names #{row}, which docs/troubleshooting.md has no row of"
        );
    }
    assert!(
        unlinked.is_empty(),
        "troubleshooting rows no hint links to: {unlinked:?}; end the hint of the message the row is about with \
         `see docs/troubleshooting.md#ROW`, or add the row to ROWS_NOT_LINKED with why"
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
