#!/usr/bin/env bash
# Deletes the kind cluster `scripts/kind-up.sh` made (LAP_KIND_CLUSTER, default `lap`), with every
# sandbox pod in it. The sandbox image stays in Docker; `docker image rm lap-sandbox:dev` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

cluster=${LAP_KIND_CLUSTER:-lap}
command -v kind >/dev/null 2>&1 || die "kind is not installed" "nothing to remove, or install kind to remove the cluster"
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  kind delete cluster --name "$cluster" >&2
  say "deleted kind cluster \`$cluster\`"
else
  say "no kind cluster \`$cluster\`; nothing to do"
fi
