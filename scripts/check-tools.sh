#!/usr/bin/env bash
# Version drift, by hand (not in CI): installs the NEWEST release of each harness tool of
# scripts/tool-versions into a scratch prefix, runs the tests that drive that tool (its
# tests/it/*_e2e.rs; tests/it/messages.rs for claude, codex and opencode; tests/it/send_abort.rs for
# claude) against it, prints a table (tool, pinned, newest, each test's result) and exits 1 when a
# test fails against a newer version (0 when all pass; 2 when the check itself cannot run).
#
#   scripts/check-tools.sh                      every tool, at its newest release
#   scripts/check-tools.sh codex opencode-ai    only these (a package name or its program)
#   scripts/check-tools.sh @openai/codex@0.170.0  a given version instead of the newest
#
# It never touches the pinned installs the suite uses (npm's global prefix, /usr/local/bin/hermes):
# it records their versions first and fails if they differ afterwards. Sandboxes see the host's /usr
# and /usr/local only (read-only), so the scratch prefix lives under /usr/local: it is
# /usr/local/lib/lap-check (LAP_CHECK_PREFIX changes it), made by this script and removed on exit.
# Its bin/ goes first on PATH for the tests and, through LAP_TEST_TOOL_PATH, first on the PATH of
# every agent the tests create. While a test module runs, the script watches the process table for
# programs from the prefix: a test that passes without ever running the scratch tool is reported
# `UNUSED` (a failure), since it proved nothing about the newer version.
#
# Every step has a deadline (seconds; env overrides): LAP_CHECK_INSTALL_TIMEOUT (600, each install),
# LAP_CHECK_BUILD_TIMEOUT (3600, building the test binary), LAP_CHECK_TEST_TIMEOUT (1500, each
# test module; nextest also ends a single test after 5 minutes). LAP_CHECK_TEST_THREADS (1): tests
# run at once within a module; modules always run one at a time. LAP_CHECK_KEEP=1 keeps the prefix.
# Full logs go to a directory under /tmp, named at the end. Interrupted or not, it stops what it
# started (a killed test leaves its `lap serve` and sandboxes behind) and removes the prefix.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
# The check itself cannot run: exit 2, so that 1 always means a tool broke a test.
die() { printf 'error: %s\n' "$1" >&2; [ -n "${2:-}" ] && printf 'hint: %s\n' "$2" >&2; exit 2; }

prefix=${LAP_CHECK_PREFIX:-/usr/local/lib/lap-check}
install_timeout=${LAP_CHECK_INSTALL_TIMEOUT:-600}
build_timeout=${LAP_CHECK_BUILD_TIMEOUT:-3600}
test_timeout=${LAP_CHECK_TEST_TIMEOUT:-1500}
test_threads=${LAP_CHECK_TEST_THREADS:-1}
# What a local sandbox's commands get as PATH (src/tools/installed.rs SANDBOX_PATH): where the
# pinned tools are found.
sandbox_path=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin
# The file that marks a directory as this script's prefix: only such a directory is ever removed.
marker=.lap-check-prefix

for n in "$install_timeout" "$build_timeout" "$test_timeout" "$test_threads"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "LAP_CHECK_*: \`$n\` is not a positive whole number" \
    "give the timeouts in seconds, e.g. LAP_CHECK_TEST_TIMEOUT=1500"
done
prefix=${prefix%/}
case $prefix in
  /usr/local/?*/?*|/usr/lib/?*|/usr/share/?*) ;;
  *) die "LAP_CHECK_PREFIX=$prefix is not a scratch directory under /usr or /usr/local" \
       "sandboxes see only /usr and /usr/local: use a new directory such as /usr/local/lib/lap-check" ;;
esac
case $prefix in *..*|*' '*) die "LAP_CHECK_PREFIX=$prefix must be a plain absolute path" \
  "use a new directory such as /usr/local/lib/lap-check" ;; esac
if [ -e "$prefix" ] && [ ! -e "$prefix/$marker" ]; then
  die "$prefix exists and was not made by scripts/check-tools.sh; refusing to use (and later remove) it" \
    "set LAP_CHECK_PREFIX to a directory that does not exist yet"
fi
[ "$(id -u)" = 0 ] || die "scripts/check-tools.sh installs under $prefix and needs root" \
  "run it as root: sudo scripts/check-tools.sh"
command -v timeout >/dev/null 2>&1 || die "\`timeout\` (coreutils) is missing" "install coreutils"
ensure_cargo
command -v npm >/dev/null 2>&1 || die "npm is missing" "install Node.js 20 or newer with npm (scripts/test.sh does)"
cargo nextest --version >/dev/null 2>&1 ||
  die "cargo-nextest is missing" "install it: cargo install --locked cargo-nextest"

# One run at a time: two would share (and remove) one prefix.
lock=/tmp/lap-check-tools.$(tr / % <<<"$prefix").lock
exec 9>"$lock"
flock -n 9 || die "another scripts/check-tools.sh is running with $prefix (it holds $lock)" \
  "wait for it to end, or set LAP_CHECK_PREFIX to another directory"

# The tools: what each package's program is called and which test module proves it.
program_of() {
  case $1 in
    @anthropic-ai/claude-code) echo claude ;;
    @openai/codex) echo codex ;;
    opencode-ai) echo opencode ;;
    @google/gemini-cli) echo gemini ;;
    hermes-agent) echo hermes ;;
    *) echo "" ;;
  esac
}
# The test modules (tests/it) that drive a program for real: its end-to-end test, and the
# message-API tests (messages.rs drives claude, codex app-server and opencode; send_abort.rs
# claude).
tests_of() {
  case $1 in
    claude) echo claude_e2e messages send_abort ;; codex) echo codex_e2e messages ;;
    opencode) echo opencode_e2e messages ;; gemini) echo gemini_e2e ;; hermes) echo hermes_e2e ;;
    *) echo "" ;;
  esac
}

# `VERSION` printed by `PROGRAM --version` (first N.N.N), `?` when it does not run in 30 s.
version_of() {
  local out re='([0-9]+[.][0-9]+[.][0-9]+[-.0-9A-Za-z]*)'
  out=$(timeout -k 5 30 "$@" --version </dev/null 2>/dev/null 9>&-) || { echo '?'; return; }
  if [[ $out =~ $re ]]; then echo "${BASH_REMATCH[1]}"; else echo '?'; fi
}

# The pinned installs, as the suite's sandboxes see them: `PROGRAM PATH VERSION` lines.
pinned_installs() {
  local registry package pinned program found
  while read -r registry package pinned _; do
    case $registry in ''|'#'*) continue ;; esac
    program=$(program_of "$package")
    [ -n "$program" ] || continue
    found=$(PATH=$sandbox_path command -v "$program" || true)
    if [ -n "$found" ]; then
      echo "$program $(readlink -f "$found") $(PATH=$sandbox_path version_of "$found")"
    else
      echo "$program missing -"
    fi
  done < scripts/tool-versions
}

# Which tools to try: every line of scripts/tool-versions, or those named on the command line.
declare -a packages=() registries=() pinneds=() wanted=()
declare -A requested=()
for arg in "$@"; do
  case $arg in
    @*/*@*|[!@]*@*) name=${arg%@*}; version=${arg##*@} ;;  # PACKAGE@VERSION
    *) name=$arg; version= ;;
  esac
  [ -n "$name" ] || die "\`$arg\` names no tool" "name a package or its program, e.g. codex or @openai/codex@0.170.0"
  requested[$name]=${version:-latest}
done
while read -r registry package pinned _; do
  case $registry in ''|'#'*) continue ;; esac
  program=$(program_of "$package")
  [ -n "$program" ] || die "scripts/tool-versions names $package, which scripts/check-tools.sh does not know" \
    "add it to program_of in scripts/check-tools.sh"
  want=
  if [ $# -eq 0 ]; then want=latest
  elif [ -n "${requested[$package]:-}" ]; then want=${requested[$package]}; unset "requested[$package]"
  elif [ -n "${requested[$program]:-}" ]; then want=${requested[$program]}; unset "requested[$program]"
  fi
  [ -n "$want" ] || continue
  packages+=("$package"); registries+=("$registry"); pinneds+=("$pinned"); wanted+=("$want")
done < scripts/tool-versions
for name in "${!requested[@]}"; do
  die "\`$name\` is not a tool of scripts/tool-versions" \
    "name a package or its program: claude, codex, opencode, gemini, hermes"
done

# `PID PROGRAM` of each process run from the prefix (a program under it, or a script under it:
# `node $prefix/bin/codex`), but a `--version`.
from_prefix() {
  local dir exe args
  {
    find /proc/[0-9]*/exe -maxdepth 0 -lname "$prefix/*" -printf '%h %l\n' 2>/dev/null |
      while read -r dir exe; do
        args=$(tr '\0' ' ' 2>/dev/null <"$dir/cmdline") || continue
        [[ $args == *--version* ]] || echo "${dir#/proc/} $exe"
      done
    ps -eo pid=,comm=,args= | awk -v p="$prefix/" '$2 !~ /^(grep|awk|mawk|gawk|find|sort|ps|sed)$/ && !/--version/ {
      for (i = 3; i <= NF; i++) if (index($i, p) == 1) { print $1, $i; break } }' || true
  } | sort -u -k1,1n
}

# Runs a command under a deadline of $1 seconds (TERM, KILL 30 s later). In the background and
# waited for, so that Ctrl-C or a TERM to this script stops it at once: `timeout` puts it in a
# process group of its own, which the terminal's Ctrl-C does not reach. It does not inherit the
# lock (fd 9): a process it leaves behind must not keep the next run out.
running=
limit() {
  local secs=$1 rc=0
  shift
  timeout -k 30 "$secs" "$@" 9>&- &
  running=$!
  wait "$running" || rc=$?
  running=
  return $rc
}

logs=$(mktemp -d /tmp/lap-check-tools.XXXXXX)
# Every process this run starts inherits fd 8, open on this file (unless it closes it): how the
# clean-up finds what a killed test left behind (its `lap serve`, its sandboxes).
exec 8>"$logs/run"
# `PID` lines of the processes started by this run that still run (but this script's own shells
# and its helpers).
leftovers() {
  local mine dir pid
  mine=$(tr '\0' ' ' </proc/$$/cmdline)
  find /proc/[0-9]*/fd -maxdepth 1 -lname "$logs/run" -printf '%h\n' 2>/dev/null |
    while read -r dir; do
      pid=${dir#/proc/}; pid=${pid%/fd}
      [ "$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" = "$mine" ] && continue
      case $(cat 2>/dev/null "/proc/$pid/comm") in find|awk|sort|ps|sed|tr|cat|sleep|'') continue ;; esac
      echo "$pid"
    done
  from_prefix | awk '{ print $1 }'
}
poller=
cleanup() {
  set +e
  [ -n "$poller" ] && kill "$poller" 2>/dev/null && wait "$poller" 2>/dev/null
  # Interrupted: stop what runs (timeout passes the TERM on to it) and wait until it has.
  if [ -n "$running" ]; then kill -TERM "$running" 2>/dev/null; wait "$running" 2>/dev/null; fi
  # What a killed test left running (its `lap serve`, its sandboxes and their agents): TERM, then
  # KILL what is still there 10 s later.
  local pids
  pids=$(leftovers | sort -un)
  if [ -n "$pids" ]; then
    say "stopping what this run left running: $(ps -o pid=,comm= -p "${pids//$'\n'/,}" | tr -s ' \n' ' ')"
    kill -TERM $pids 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      pids=$(leftovers | sort -un); [ -z "$pids" ] && break
      sleep 1
    done
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
  fi
  if [ "${LAP_CHECK_KEEP:-}" = 1 ]; then
    say "kept the scratch prefix $prefix (LAP_CHECK_KEEP=1); remove it with: rm -rf $prefix"
  elif [ -e "$prefix/$marker" ]; then
    rm -rf "$prefix"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pinned_before=$(pinned_installs)
printf '%s\n' "$pinned_before" >"$logs/pinned-before"
if [ -e "$prefix/$marker" ]; then rm -rf "$prefix"; fi
mkdir -p "$prefix/bin"
touch "$prefix/$marker"

# Install each tool into the prefix: the newest release (or the version asked for).
declare -A newest=() status=()
for i in "${!packages[@]}"; do
  package=${packages[$i]}; registry=${registries[$i]}; want=${wanted[$i]}
  program=$(program_of "$package")
  log="$logs/install-$program.log"
  case $registry in
    npm)
      # The exact version first, so the table names what was installed.
      if [ "$want" = latest ]; then
        want=$(limit 120 npm view "$package@latest" version 2>>"$log") || want=
      fi
      if [ -z "$want" ]; then
        status[$package]="cannot ask npm for the newest release (see $log)"; continue
      fi
      say "installing $package@$want (npm) into $prefix"
      if ! limit "$install_timeout" npm install -g --prefix "$prefix" --no-fund --no-audit --no-update-notifier "$package@$want" >>"$log" 2>&1; then
        status[$package]="npm install failed or took over ${install_timeout}s (see $log)"; continue
      fi
      newest[$package]=$(node -p "require('$prefix/lib/node_modules/$package/package.json').version" 2>>"$log" || echo '?')
      # An npm that skipped a package's install script leaves a placeholder binary: run the script
      # (as scripts/test.sh does for the pinned ones).
      if [ "$(version_of "$prefix/bin/$program")" = '?' ]; then
        for script in install.cjs postinstall.mjs; do
          [ -f "$prefix/lib/node_modules/$package/$script" ] || continue
          (cd "$prefix/lib/node_modules/$package" && limit "$install_timeout" node "$script") >>"$log" 2>&1 || true
        done
      fi ;;
    pypi)
      [ "$want" = latest ] && spec=$package || spec="$package==$want"
      say "installing $spec (PyPI) into $prefix/$package"
      if ! { limit 120 /usr/bin/python3 -m venv "$prefix/$package" &&
        limit "$install_timeout" "$prefix/$package/bin/pip" install --quiet --disable-pip-version-check \
          --no-input "$spec"; } >>"$log" 2>&1; then
        status[$package]="pip install failed or took over ${install_timeout}s (see $log)"; continue
      fi
      newest[$package]=$("$prefix/$package/bin/pip" show "$package" 2>>"$log" | awk '/^Version:/ { print $2 }')
      [ -x "$prefix/$package/bin/$program" ] && ln -sf "$prefix/$package/bin/$program" "$prefix/bin/$program" ;;
    *)
      status[$package]="unknown registry $registry"; continue ;;
  esac
  runs=$(version_of "$prefix/bin/$program")
  if [ "$runs" = '?' ]; then
    status[$package]="installed, but \`$prefix/bin/$program --version\` does not run (see $log)"
  elif [ "$runs" != "${newest[$package]:-}" ]; then
    status[$package]="installed $package ${newest[$package]:-?}, but \`$program --version\` says $runs"
  fi
  printf '%-28s pinned %-10s newest %s\n' "$package" "${pinneds[$i]}" "${newest[$package]:-?}" >&2
done

# The test binary first (not under a test's deadline), then each module against its tool.
tests=()
for package in "${packages[@]}"; do
  for t in $(tests_of "$(program_of "$package")"); do
    [ -f "tests/it/$t.rs" ] && [[ " ${tests[*]} " != *" $t "* ]] && tests+=("$t")
  done
done
if [ ${#tests[@]} -gt 0 ]; then
  say "building the tests (${build_timeout}s deadline)"
  limit "$build_timeout" cargo nextest run --locked --no-run --test it >"$logs/build.log" 2>&1 ||
    die "the tests do not build (or took over ${build_timeout}s); see $logs/build.log" \
      "build them yourself: cargo nextest run --no-run --test it"
fi

# Watches for processes run from the prefix other than a `--version`, and notes their programs in
# $1 until killed.
watch_prefix() {
  while :; do
    from_prefix | awk '{ print $2 }' | sort -u >>"$1" || true
    sleep 2
  done
}

declare -A results=()  # package -> "STATUS TEST" lines
failed=0
for package in "${packages[@]}"; do
  program=$(program_of "$package")
  if [ -n "${status[$package]:-}" ]; then failed=1; continue; fi
  for t in $(tests_of "$program"); do
    if [ ! -f "tests/it/$t.rs" ]; then status[$package]="no tests/it/$t.rs in this checkout"; failed=1; continue 2; fi
    log="$logs/$program-$t.log"
    say "running tests/it/$t.rs against $program ${newest[$package]} (${test_timeout}s deadline; log: $log)"
    : >"$logs/$program-$t.used"
    watch_prefix "$logs/$program-$t.used" &
    poller=$!
    rc=0
    PATH="$prefix/bin:$PATH" LAP_TEST_TOOL_PATH="$prefix/bin" LAP_TEST_STRICT=1 \
      limit "$test_timeout" cargo nextest run --locked --no-fail-fast --color never \
        --test-threads "$test_threads" --test it -E "test(/^$t::/)" >"$log" 2>&1 || rc=$?
    kill "$poller" 2>/dev/null; wait "$poller" 2>/dev/null || true; poller=
    # nextest's status lines: `    PASS [  12.345s] (1/3) lap::it codex_e2e::NAME` (the last one of a test wins).
    lines=$(awk -v prefix="$t::" '
      $1 ~ /^(PASS|FAIL|TIMEOUT|ABORT|LEAK|LEAK-FAIL|SIGKILL|SIGTERM|SIGSEGV|SIGABRT|SIGBUS|SIGILL)$/ &&
      $2 ~ /^\[/ && $(NF-1) == "lap::it" && index($NF, prefix) == 1 { seen[$NF] = $1 }
      END { for (name in seen) print seen[name], name }' "$log" | sort -k2)
    if [ $rc = 124 ] || [ $rc = 137 ]; then
      lines+=${lines:+$'\n'}"DEADLINE (the module's tests ran over ${test_timeout}s)"
    elif [ -z "$lines" ]; then
      lines="ERROR (no test ran: exit $rc; see $log)"
    fi
    # A test proves the newer tool only if the tool ran.
    if ! grep -qF "$prefix/" "$logs/$program-$t.used"; then
      lines=$(sed 's/^PASS /UNUSED /' <<<"$lines")
    fi
    grep -qvE '^(PASS|LEAK) ' <<<"$lines" && failed=1
    [ $rc = 0 ] || failed=1
    results[$package]+=${results[$package]:+$'\n'}$lines
  done
done

pinned_after=$(pinned_installs)
printf '%s\n' "$pinned_after" >"$logs/pinned-after"

# The summary, on stdout.
echo
# NEWEST, or TRIED when a version was asked for.
version_header=NEWEST
for want in "${wanted[@]}"; do [ "$want" = latest ] || version_header=TRIED; done
printf '%-26s %-10s %-10s %-8s %s\n' TOOL PINNED "$version_header" RESULT TEST
for i in "${!packages[@]}"; do
  package=${packages[$i]}
  if [ -n "${status[$package]:-}" ]; then
    printf '%-26s %-10s %-10s %-8s %s\n' "$package" "${pinneds[$i]}" "${newest[$package]:-?}" ERROR "${status[$package]}"
    continue
  fi
  while read -r result name; do
    printf '%-26s %-10s %-10s %-8s %s\n' "$package" "${pinneds[$i]}" "${newest[$package]}" "$result" "$name"
  done <<<"${results[$package]}"
done
echo
if [ "$pinned_before" != "$pinned_after" ]; then
  printf 'error: the pinned installs changed during the check\nbefore:\n%s\nafter:\n%s\n' \
    "$pinned_before" "$pinned_after" >&2
  printf 'hint: reinstall the pinned versions with scripts/test.sh (it installs scripts/tool-versions)\n' >&2
  failed=1
fi
echo "logs: $logs"
if [ $failed = 0 ]; then
  echo "every tool tried passed its tests; to adopt a newer version, run scripts/test.sh with it and change scripts/tool-versions"
else
  echo "not every test passed with the versions tried (see RESULT and the logs); the pins in scripts/tool-versions stay"
fi
exit $failed
