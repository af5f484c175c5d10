#!/usr/bin/env bash
# Regenerates the committed shell completions (completions/) and man pages (man/) from the CLI
# definition. tests/generated_docs.rs fails when they are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --quiet
for shell in bash zsh fish elvish powershell; do
  case $shell in bash) f=lap.bash ;; zsh) f=_lap ;; fish) f=lap.fish ;; elvish) f=lap.elv ;; powershell) f=_lap.ps1 ;; esac
  "${CARGO_TARGET_DIR:-target}"/debug/lap completions "$shell" > "completions/$f"
done
rm -rf man && "${CARGO_TARGET_DIR:-target}"/debug/lap man --out man --quiet
echo "regenerated completions/ and man/"
