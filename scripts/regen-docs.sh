#!/usr/bin/env bash
# Regenerates the committed shell completions (completions/), man pages (man/) and the README's
# harness table from the CLI and the harness catalog. tests/generated_docs.rs fails when they are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --quiet
for shell in bash zsh fish elvish powershell; do
  case $shell in bash) f=lap.bash ;; zsh) f=_lap ;; fish) f=lap.fish ;; elvish) f=lap.elv ;; powershell) f=_lap.ps1 ;; esac
  "${CARGO_TARGET_DIR:-target}"/debug/lap completions "$shell" > "completions/$f"
done
rm -rf man && "${CARGO_TARGET_DIR:-target}"/debug/lap man --out man --quiet
echo "regenerated completions/ and man/"
# The README's harness table, between its markers, from the harness catalog.
table=$("${CARGO_TARGET_DIR:-target}"/debug/lap doctor --harnesses)
awk -v table="$table" '
  /^<!-- harness-table:begin/ { print; print table; skip = 1; next }
  /^<!-- harness-table:end/ { skip = 0 }
  !skip { print }
' README.md > README.md.new && mv README.md.new README.md
echo "regenerated the harness table in README.md"
