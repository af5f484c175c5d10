#!/usr/bin/env bash
# Regenerates the committed shell completions (completions/), man pages (man/), the reference pages
# docs/reference/cli.md and the generated part of docs/reference/configuration.md (from the clap
# command tree), and the harness table of docs/guide/harnesses.md (from the harness catalog).
# tests/it/generated_docs.rs fails when they are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --quiet
lap="${CARGO_TARGET_DIR:-target}"/debug/lap
for shell in bash zsh fish elvish powershell; do
  case $shell in bash) f=lap.bash ;; zsh) f=_lap ;; fish) f=lap.fish ;; elvish) f=lap.elv ;; powershell) f=_lap.ps1 ;; esac
  "$lap" completions "$shell" > "completions/$f"
done
rm -rf man && "$lap" man --out man --quiet
echo "regenerated completions/ and man/"
"$lap" reference cli > docs/reference/cli.md
echo "regenerated docs/reference/cli.md"

# Replaces the lines between `<!-- NAME:begin` and `<!-- NAME:end` in FILE with stdin (through the
# environment: awk -v would read backslashes as escapes).
splice() {
  local name=$1 file=$2 block
  block=$(cat)
  BLOCK=$block awk -v begin="^<!-- $name:begin" -v end="^<!-- $name:end" '
    $0 ~ begin { print; print ENVIRON["BLOCK"]; skip = 1; next }
    $0 ~ end { skip = 0 }
    !skip { print }
  ' "$file" > "$file.new" && mv "$file.new" "$file"
}
"$lap" reference configuration | splice configuration docs/reference/configuration.md
echo "regenerated the settings tables in docs/reference/configuration.md"
"$lap" doctor --harnesses | splice harness-table docs/guide/harnesses.md
echo "regenerated the harness table in docs/guide/harnesses.md"
