//! Builds the web UI's asset table for `src/api/ui.rs`.
//!
//! The UI is plain ES modules in `web/src/` (ours, committed) plus xterm.js from npm (third-party,
//! never committed: `web/package-lock.json` pins it and `npm ci` fetches it into `web/node_modules`
//! when that is missing or older than the lockfile). Every file is copied into `$OUT_DIR/ui/` and
//! listed in `$OUT_DIR/ui_assets.rs` as `(path, content type, etag, include_bytes!)`, so the binary
//! carries the whole UI. When Node/npm is missing or `npm ci` fails, the build still succeeds: it
//! warns, and embeds one page that says the UI was not built and how to fix it. `LAP_SKIP_WEB_UI=1`
//! asks for that page on purpose (no npm run at all); `NPM` names another npm program.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The vendored files the UI loads, from `web/node_modules`, and where it loads them from.
const VENDOR: &[(&str, &str)] = &[
    ("@xterm/xterm/lib/xterm.mjs", "vendor/xterm.mjs"),
    ("@xterm/xterm/css/xterm.css", "vendor/xterm.css"),
    ("@xterm/addon-fit/lib/addon-fit.mjs", "vendor/addon-fit.mjs"),
];

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let web = root.join("web");
    println!("cargo:rerun-if-changed=web/src");
    println!("cargo:rerun-if-changed=web/package.json");
    println!("cargo:rerun-if-changed=web/package-lock.json");
    // What `npm ci` leaves behind: a build without it (no npm yet) is redone once it appears, and
    // a deleted `node_modules` is fetched again.
    println!("cargo:rerun-if-changed=web/node_modules/.package-lock.json");
    println!("cargo:rerun-if-env-changed=LAP_SKIP_WEB_UI");
    println!("cargo:rerun-if-env-changed=NPM");

    let dest = out.join("ui");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).expect("create $OUT_DIR/ui");
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let built = match vendor(&web) {
        Ok(()) => {
            for (from, to) in VENDOR {
                let text = std::fs::read_to_string(web.join("node_modules").join(from))
                    .unwrap_or_else(|e| panic!("read web/node_modules/{from}: {e}"));
                // The source maps are not embedded; do not send browsers looking for them.
                let text: String = text
                    .lines()
                    .filter(|l| !l.starts_with("//# sourceMappingURL="))
                    .collect::<Vec<_>>()
                    .join("\n");
                files.push(((*to).to_owned(), write(&dest, to, text.as_bytes())));
            }
            for entry in walk(&web.join("src")) {
                let rel = entry
                    .strip_prefix(web.join("src"))
                    .expect("under web/src")
                    .to_string_lossy()
                    .replace('\\', "/");
                let bytes = std::fs::read(&entry).expect("read web/src file");
                files.push((rel.clone(), write(&dest, &rel, &bytes)));
            }
            true
        }
        Err(why) => {
            println!("cargo:warning=the web UI is not built into this binary: {why}");
            println!(
                "cargo:warning=install Node.js (18 or newer) and npm (scripts/serve.sh and scripts/test.sh \
                 install them with apt), then rebuild"
            );
            files.push((
                "index.html".to_owned(),
                write(&dest, "index.html", unbuilt_page(&why).as_bytes()),
            ));
            false
        }
    };

    let mut table = String::new();
    writeln!(
        table,
        "/// Whether the UI was built (else only a page that says how to build it)."
    )
    .unwrap();
    writeln!(table, "pub const BUILT: bool = {built};").unwrap();
    writeln!(
        table,
        "/// Every embedded file: path under the UI root, content type, ETag, bytes."
    )
    .unwrap();
    writeln!(table, "pub static ASSETS: &[(&str, &str, &str, &[u8])] = &[").unwrap();
    for (rel, path) in &files {
        let bytes = std::fs::read(path).expect("read copied asset");
        writeln!(
            table,
            "    ({rel:?}, {:?}, \"\\\"{:016x}\\\"\", include_bytes!({:?})),",
            content_type(rel),
            fnv1a(&bytes),
            path.display().to_string()
        )
        .unwrap();
    }
    writeln!(table, "];").unwrap();
    std::fs::write(out.join("ui_assets.rs"), table).expect("write ui_assets.rs");
}

/// Makes sure `web/node_modules` holds what the lockfile pins, running `npm ci` when it does not.
fn vendor(web: &Path) -> Result<(), String> {
    if std::env::var_os("LAP_SKIP_WEB_UI").is_some_and(|v| v == "1") {
        return Err("LAP_SKIP_WEB_UI=1 is set".to_owned());
    }
    let installed = web.join("node_modules/.package-lock.json");
    let fresh = modified(&installed)
        .is_some_and(|done| modified(&web.join("package-lock.json")).is_some_and(|lock| done >= lock))
        && VENDOR
            .iter()
            .all(|(from, _)| web.join("node_modules").join(from).is_file());
    if fresh {
        return Ok(());
    }
    let npm = std::env::var_os("NPM").unwrap_or_else(|| "npm".into());
    let output = Command::new(&npm)
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(web)
        .output()
        .map_err(|e| format!("cannot run `npm` ({e})"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        return Err(format!("`npm ci` in web/ failed ({}): {last}", output.status));
    }
    Ok(())
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn write(dest: &Path, rel: &str, bytes: &[u8]) -> PathBuf {
    let path = dest.join(rel);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create asset dir");
    std::fs::write(&path, bytes).expect("write asset");
    path
}

/// Files under `dir`, sorted, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// 64-bit FNV-1a, for ETags.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The page embedded instead of the UI when it could not be built.
fn unbuilt_page(why: &str) -> String {
    let why = why.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lap — web UI not built</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:4rem auto;padding:0 1rem}}code,pre{{background:#f3f3f3;padding:.1rem .3rem}}</style></head>
<body><h1>The web UI was not built into this <code>lap</code></h1>
<p>Building it needs Node.js (18 or newer) and npm, and the build could not use them: {why}.</p>
<p>The REST API and <code>lap</code> CLI work as usual. To get the UI, install Node.js and npm (on Debian or Ubuntu:
<code>apt-get install nodejs npm</code>), then rebuild:</p>
<pre>npm ci --prefix web
cargo build --release</pre>
<p><code>scripts/serve.sh</code> does all of this for you.</p></body></html>
"#
    )
}
