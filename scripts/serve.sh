#!/usr/bin/env bash
# Builds lap (release), installs it as `lap` on PATH, and runs `lap serve` with its embedded
# defaults: local backend, SQLite in the XDG data dir, http://127.0.0.1:3000. Extra arguments go
# to `lap serve` (see `lap serve --help`). Installs a Rust toolchain, Node.js and npm (the web UI's
# build) with apt when they are not found.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_cargo
ensure_node
say "building lap (release; the first build takes a few minutes)"
cargo build --release --locked
bin_dir=${LAP_INSTALL_DIR:-${CARGO_HOME:-$HOME/.cargo}/bin}
mkdir -p "$bin_dir"
install -m 0755 target/release/lap "$bin_dir/lap"
say "installed \`$bin_dir/lap\`"
case ":$PATH:" in *":$bin_dir:"*) ;; *) say "add \`$bin_dir\` to PATH to run \`lap\` from any terminal" ;; esac
exec "$bin_dir/lap" serve "$@"
