//! The client's dependency tree on macOS and Windows, checked from this Linux machine.
//!
//! These machines have only the Linux standard library, so a macOS or Windows build cannot be
//! compiled here. What can be checked is what Cargo would build: `cargo tree --locked --target T
//! -e normal` resolves the target-specific dependencies of `lap` for each target. The invariant
//! kept: no Linux-only crate (the sandbox's `landlock` and `seccompiler`, the D-Bus Secret Service
//! keyring store, `lap`'s own `nix`) is in a macOS or Windows tree, and each platform's OS keyring
//! store is. The Linux tree is checked too, the other way round, so a check that never matches
//! cannot pass by accident. The code side (the portable set compiled with `--cfg lap_portable`, and
//! the Windows set with `--cfg lap_windows` linted by `scripts/clippy-windows/clippy.toml`) is a step
//! of `scripts/test.sh`; the last test here shows that lint list refuses a Unix API for real.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::try_wait_until;

/// How long one `cargo tree` may take (it may have to fetch a crate's manifest from crates.io).
const CARGO_TREE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long clippy may take on a one-file crate.
const CLIPPY_TIMEOUT: Duration = Duration::from_secs(300);

/// Crates that only the Linux sandbox, `lap harness` or the Linux keyring need.
const LINUX_ONLY: &[&str] = &["landlock", "seccompiler", "zbus-secret-service-keyring-store", "zbus"];
/// `lap`'s own direct dependencies that only Linux code uses (a dependency of a portable crate,
/// e.g. rustyline's `nix` on Unix, is that crate's business).
const LINUX_ONLY_DIRECT: &[&str] = &["nix", "landlock", "seccompiler", "zbus-secret-service-keyring-store"];

const MACOS_KEYRING: &str = "apple-native-keyring-store";
const WINDOWS_KEYRING: &str = "windows-native-keyring-store";
const LINUX_KEYRING: &str = "zbus-secret-service-keyring-store";

/// The package names in `lap`'s normal dependency tree for `target`, down to `depth` when given.
fn tree(target: &str, depth: Option<u32>) -> BTreeSet<String> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(manifest_dir)
        .args([
            "tree", "--locked", "--target", target, "-e", "normal", "--prefix", "none",
        ])
        .args(["--format", "{p}", "--package", "lap"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(depth) = depth {
        command.args(["--depth", &depth.to_string()]);
    }
    let mut child = command.spawn().expect("spawn `cargo tree` (is cargo on PATH?)");
    let exited = try_wait_until(CARGO_TREE_TIMEOUT, || child.try_wait().expect("wait for `cargo tree`"));
    if exited.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "`cargo tree --target {target}` did not finish within {CARGO_TREE_TIMEOUT:?}\n\
             hint: it may be fetching from crates.io; run it by hand to see where it waits"
        );
    }
    let output = child.wait_with_output().expect("read `cargo tree` output");
    assert!(
        output.status.success(),
        "`cargo tree --locked --target {target} -e normal` failed: {}\n\
         hint: a changed Cargo.toml needs `cargo update -w` (Cargo.lock must stay in step)",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn present<'a>(tree: &BTreeSet<String>, crates: &[&'a str]) -> Vec<&'a str> {
    crates.iter().copied().filter(|name| tree.contains(*name)).collect()
}

/// The tree of a non-Linux target: no Linux-only crate anywhere, no Linux-only direct dependency,
/// and the platform's keyring store.
fn assert_portable_tree(target: &str, keyring_store: &str) {
    let full = tree(target, None);
    let direct = tree(target, Some(1));
    assert!(
        full.contains("lap"),
        "`cargo tree` for {target} did not list `lap` itself: {full:?}"
    );
    let linux_only = present(&full, LINUX_ONLY);
    assert!(
        linux_only.is_empty(),
        "Linux-only crates in the {target} tree: {linux_only:?}\n\
         hint: move them to [target.'cfg(target_os = \"linux\")'.dependencies] in Cargo.toml; \
         `cargo tree --target {target} -i CRATE` shows who pulls them in"
    );
    let linux_direct = present(&direct, LINUX_ONLY_DIRECT);
    assert!(
        linux_direct.is_empty(),
        "`lap` depends directly on Linux-only crates for {target}: {linux_direct:?}\n\
         hint: move them to [target.'cfg(target_os = \"linux\")'.dependencies] in Cargo.toml"
    );
    assert!(
        direct.contains(keyring_store),
        "the {target} tree has no OS keyring store `{keyring_store}`\n\
         hint: add it under its [target.'cfg(…)'.dependencies] in Cargo.toml"
    );
}

#[test]
fn macos_x86_64_tree_has_no_linux_only_crate_and_has_the_keychain_store() {
    assert_portable_tree("x86_64-apple-darwin", MACOS_KEYRING);
}

#[test]
fn macos_aarch64_tree_has_no_linux_only_crate_and_has_the_keychain_store() {
    assert_portable_tree("aarch64-apple-darwin", MACOS_KEYRING);
}

#[test]
fn windows_tree_has_no_linux_only_crate_and_has_the_credential_manager_store() {
    assert_portable_tree("x86_64-pc-windows-msvc", WINDOWS_KEYRING);
}

/// The other way round: the Linux tree has what the sandbox and the Secret Service need and none
/// of the other platforms' stores. This proves the names checked above are the names Cargo prints.
#[test]
fn linux_tree_has_the_sandbox_crates_and_only_the_secret_service_store() {
    let target = "x86_64-unknown-linux-gnu";
    let full = tree(target, None);
    let direct = tree(target, Some(1));
    for name in LINUX_ONLY_DIRECT {
        assert!(
            direct.contains(*name),
            "the Linux tree lacks `{name}` as a direct dependency: {direct:?}"
        );
    }
    assert!(direct.contains(LINUX_KEYRING), "the Linux tree lacks `{LINUX_KEYRING}`");
    let foreign = present(&full, &[MACOS_KEYRING, WINDOWS_KEYRING]);
    assert!(
        foreign.is_empty(),
        "other platforms' keyring stores in the Linux tree: {foreign:?}"
    );
}

/// `scripts/clippy-windows/clippy.toml`, the Windows set's lint list, refuses Unix APIs for real: a
/// one-file crate that uses a few (a trait method, a function, a type) is linted with it, and clippy
/// names each. Without this a path clippy cannot resolve would silently refuse nothing.
#[test]
fn the_windows_lint_list_refuses_unix_apis_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("src")).expect("mkdir src");
    std::fs::write(
        dir.path().join("Cargo.toml"),
        "[package]\nname = \"unix_user\"\nversion = \"0.0.0\"\nedition = \"2024\"\n[workspace]\n",
    )
    .expect("write Cargo.toml");
    std::fs::write(
        dir.path().join("src/lib.rs"),
        "use std::os::unix::fs::PermissionsExt;\n\
         pub fn mode(meta: &std::fs::Metadata) -> u32 { meta.permissions().mode() }\n\
         pub fn link() -> std::io::Result<()> { std::os::unix::fs::symlink(\"a\", \"b\") }\n\
         pub fn socket(s: std::os::unix::net::UnixStream) -> std::os::unix::net::UnixStream { s }\n",
    )
    .expect("write lib.rs");
    let lints = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/clippy-windows");
    let mut child = Command::new(env!("CARGO"))
        .current_dir(dir.path())
        .args(["clippy", "--offline", "--quiet"])
        .env("CLIPPY_CONF_DIR", &lints)
        .env("CARGO_TARGET_DIR", dir.path().join("target"))
        .env_remove("RUSTFLAGS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn `cargo clippy` (is clippy installed?)");
    let exited = try_wait_until(CLIPPY_TIMEOUT, || child.try_wait().expect("wait for `cargo clippy`"));
    if exited.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("`cargo clippy` on a one-file crate did not finish within {CLIPPY_TIMEOUT:?}");
    }
    let output = child.wait_with_output().expect("read `cargo clippy` output");
    let said = String::from_utf8_lossy(&output.stderr);
    for refused in [
        "use of a disallowed method `std::os::unix::fs::PermissionsExt::mode`",
        "use of a disallowed method `std::os::unix::fs::symlink`",
        "use of a disallowed type `std::os::unix::net::UnixStream`",
    ] {
        assert!(said.contains(refused), "clippy did not say {refused:?}:\n{said}");
    }
}
