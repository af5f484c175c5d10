#!/usr/bin/env bash
# Benchmarks, run by hand (not in CI; timing never gates a test). Each prints its figures beside a
# peer measured in the same run.
#   scripts/bench.sh vault   the vault against a direct connection and mitmproxy (installed here,
#                            in target/bench-venv, from PyPI)
#   scripts/bench.sh pool    `lap demo` attached after a fresh `lap serve`, warm pool on vs off,
#                            beside LAP's published warm start (real sandboxes: run as root)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_cargo
case "${1:-vault}" in
  vault)
    venv=target/bench-venv
    if [ ! -x "$venv/bin/mitmdump" ]; then
      ensure_apt python3:python3
      python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
      say "installing mitmproxy 11.0.2 into $venv"
      "$venv/bin/pip" install --quiet mitmproxy==11.0.2
    fi
    LAP_BENCH_MITMDUMP="$PWD/$venv/bin/mitmdump" cargo bench --locked --bench vault
    ;;
  pool)
    cargo bench --locked --bench pool
    ;;
  *) die "unknown benchmark \`$1\`" "use \`scripts/bench.sh vault\` or \`scripts/bench.sh pool\`" ;;
esac
