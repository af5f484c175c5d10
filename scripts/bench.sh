#!/usr/bin/env bash
# Benchmarks, run by hand (not in CI; timing never gates a test). Each prints its figures beside a
# peer measured in the same run.
#   scripts/bench.sh vault   the vault against a direct connection and mitmproxy (installed here,
#                            in target/bench-venv, from PyPI)
#   scripts/bench.sh sandbox the local sandbox backend: create -> harness ready p50/p99, and memory
#                            and descriptors of lap serve with 1000 idle sandboxes (root or user
#                            namespaces needed; LAP_BENCH_SANDBOXES=N changes the 1000)
#   scripts/bench.sh pool    `lap demo` attached after a fresh `lap serve`, warm pool on vs off,
#                            beside LAP's published warm start (real sandboxes: run as root)
#   scripts/bench.sh tty     keystroke echo and `cat` throughput through `lap attach`, beside
#                            `ssh localhost` to an sshd of its own (openssh from apt; run as root)
#   scripts/bench.sh workspace  pause -> resume and hibernate -> resume to the first terminal byte
#                            (p50/p99, beside E2B's ~1 s) and fork time by workspace size
#                            (real sandboxes: run as root; LAP_BENCH_FORK_MB=10,1024 by default, add 10240 for 10 GB)
#   scripts/bench.sh ports   `lap port-forward` connection latency, round trip and throughput,
#                            beside `ssh -L` to an sshd of its own (openssh from apt; run as root)
#   scripts/bench.sh files   `lap cp` upload and download MB/s beside `scp` to an sshd of its own
#                            (openssh from apt; run as root; LAP_BENCH_FILES_MB=N changes the 512)
#   scripts/bench.sh kube    the Kubernetes backend against the tests' fake API server on 127.0.0.1:
#                            API calls per create, claim, binding and records pull; list and watcher
#                            sync after a restart and the heap the watcher keeps, at a quarter, half
#                            and all of 2000 pods (LAP_BENCH_KUBE_SESSIONS=N changes the 2000)
#   scripts/bench.sh all     every one of them in one sitting, then the figures table of
#                            docs/benchmarks.md written anew from that run (each figure beside its
#                            peer and its goal, with the date and the machine)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_cargo
case "${1:-vault}" in
  all)
    table="$PWD/target/bench-table.md"
    mkdir -p target && : > "$table"
    failed=()
    for bench in vault sandbox pool tty workspace ports files kube; do
      say "scripts/bench.sh $bench"
      # One that fails is named in the table, and the others still run.
      if ! LAP_BENCH_TABLE="$table" "$0" "$bench"; then
        echo "| \`scripts/bench.sh $bench\` | **failed**: see its output | — | — |" >> "$table"
        failed+=("$bench")
      fi
    done
    cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
    mem=$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
    {
      echo "Written by \`scripts/bench.sh all\` on $(date -u +%Y-%m-%d) from one run, release builds, all on"
      echo "127.0.0.1: $(nproc) cores ($cpu), $mem, Linux $(uname -r). Your numbers will differ — run it."
      echo
      echo "| what | lap | peer in the same run | goal |"
      echo "|---|---|---|---|"
      cat "$table"
    } > "$table.block"
    # The lines between `<!-- figures:begin` and `<!-- figures:end` in docs/benchmarks.md.
    BLOCK=$(cat "$table.block") awk '
      /^<!-- figures:begin/ { print; print ENVIRON["BLOCK"]; skip = 1; next }
      /^<!-- figures:end/ { skip = 0 }
      !skip { print }
    ' docs/benchmarks.md > docs/benchmarks.md.new && mv docs/benchmarks.md.new docs/benchmarks.md
    say "wrote the figures table of docs/benchmarks.md ($(wc -l < "$table") rows)"
    [ ${#failed[@]} -eq 0 ] || die "these benchmarks failed: ${failed[*]}" "their output above says why; the table names them"
    ;;
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
  sandbox)
    # `lap serve` holds 4 descriptors per sandbox: thousands of sandboxes need more than a
    # distribution's default hard limit (root may raise it; otherwise it stays as it is).
    ulimit -Hn 1048576 2>/dev/null || true
    ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
    cargo bench --locked --bench sandbox
    ;;
  pool)
    cargo bench --locked --bench pool
    ;;
  tty)
    ensure_apt sshd:openssh-server ssh:openssh-client
    cargo bench --locked --bench tty
    ;;
  workspace)
    cargo bench --locked --bench workspace
    ;;
  ports)
    ensure_apt sshd:openssh-server ssh:openssh-client
    cargo bench --locked --bench ports
    ;;
  files)
    ensure_apt sshd:openssh-server ssh:openssh-client
    cargo bench --locked --bench files
    ;;
  kube)
    cargo bench --locked --bench kube
    ;;
  *) die "unknown benchmark \`$1\`" "use \`scripts/bench.sh all\`, \`vault\`, \`sandbox\`, \`pool\`, \`tty\`, \`workspace\`, \`ports\`, \`files\` or \`kube\`" ;;
esac
