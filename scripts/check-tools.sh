#!/usr/bin/env bash
# Version drift, by hand (not in CI): installs the NEWEST release of each harness tool into a
# scratch prefix, runs the harness end-to-end tests against those versions, prints which passed,
# and removes the prefix. Compare with scripts/tool-versions (the proven versions, which
# scripts/test.sh installs and `lap doctor` checks); when everything passes, raise the pins there.
#
# Sandboxes see the host's /usr and /usr/local only (read-only), so the scratch prefix must live
# under /usr/local: it is /usr/local/lib/lap-check (LAP_CHECK_PREFIX changes it; it must stay
# under /usr or /usr/local). Its bin/ goes first on PATH for the tests themselves and, through
# LAP_TEST_TOOL_PATH, first on the PATH of every agent the tests create.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

prefix=${LAP_CHECK_PREFIX:-/usr/local/lib/lap-check}
case $prefix in
  /usr/local/*|/usr/*) ;;
  *) die "LAP_CHECK_PREFIX=$prefix is outside /usr and /usr/local, where sandboxes cannot see it" \
       "use a directory under /usr/local, e.g. /usr/local/lib/lap-check" ;;
esac
cleanup() { as_root rm -rf "$prefix"; }
trap cleanup EXIT
as_root rm -rf "$prefix"
as_root mkdir -p "$prefix/bin"

# Each line of scripts/tool-versions: install the newest release of that package.
declare -A newest
while read -r registry package proven; do
  case $registry in ''|'#'*) continue ;; esac
  case $registry in
    npm)
      say "installing the newest $package (npm) into $prefix"
      if as_root npm install -g --prefix "$prefix" --no-fund --no-audit "$package@latest" >&2; then
        newest[$package]=$(npm view "$package" version 2>/dev/null || echo '?')
      else
        newest[$package]="install failed"
      fi ;;
    pypi)
      say "installing the newest $package (PyPI) into $prefix/$package"
      if as_root /usr/bin/python3 -m venv "$prefix/$package" >&2 &&
        as_root "$prefix/$package/bin/pip" install --quiet --disable-pip-version-check --upgrade "$package" >&2; then
        newest[$package]=$("$prefix/$package/bin/pip" show "$package" | awk '/^Version:/ { print $2 }')
        for exe in "$prefix/$package/bin/"*; do
          case $(basename "$exe") in hermes) as_root ln -sf "$exe" "$prefix/bin/hermes" ;; esac
        done
      else
        newest[$package]="install failed"
      fi ;;
  esac
  printf '%-28s proven %-10s newest %s\n' "$package" "$proven" "${newest[$package]}" >&2
done < scripts/tool-versions

# The harness end-to-end tests that drive real tools; each binary that exists in this checkout.
tests=()
for t in claude_e2e codex_e2e opencode_e2e gemini_e2e hermes_e2e; do
  [ -f "tests/$t.rs" ] && tests+=("$t")
done

results=()
for t in "${tests[@]}"; do
  say "running tests/$t.rs against the newest tools"
  if PATH="$prefix/bin:$PATH" LAP_TEST_TOOL_PATH="$prefix/bin" LAP_TEST_STRICT=1 \
    cargo nextest run --locked --no-fail-fast --test "$t" >&2; then
    results+=("PASS  $t")
  else
    results+=("FAIL  $t")
  fi
done

echo "tools tried (scratch prefix $prefix, removed on exit):"
while read -r registry package proven; do
  case $registry in ''|'#'*) continue ;; esac
  printf '  %-28s proven %-10s newest %s\n' "$package" "$proven" "${newest[$package]:-?}"
done < scripts/tool-versions
echo "harness tests against them:"
printf '  %s\n' "${results[@]}"
