#!/usr/bin/env bash
# Creates a local kind cluster for lap's Kubernetes backend and prints the `lap serve` line to run:
# the cluster (kind/cluster/config.yaml), the sandbox image (kind/Dockerfile, with a release build of
# this checkout's `lap`) loaded into it, and the `lap` namespace with its least-privilege RBAC
# (kind/*.yaml). Safe to run again: an existing cluster is reused, the image rebuilt and reloaded.
#
# Needs Docker (running), kind and kubectl. Environment: LAP_KIND_CLUSTER (default `lap`),
# LAP_KUBE_IMAGE (default `lap-sandbox:dev`), LAP_HARNESS_TOOLS (npm packages baked into the image;
# empty for none).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

cluster=${LAP_KIND_CLUSTER:-lap}
image=${LAP_KUBE_IMAGE:-lap-sandbox:dev}
context=kind-$cluster

command -v docker >/dev/null 2>&1 || die "docker is not installed" "install Docker Engine or Docker Desktop, then run this again"
docker info >/dev/null 2>&1 || die "docker is installed but its daemon does not answer" "start Docker, then run this again"
command -v kind >/dev/null 2>&1 || die "kind is not installed" "see https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
ensure_kubectl
kubectl() { "$LAP_KUBECTL" "$@"; }

if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  say "reusing kind cluster \`$cluster\`"
else
  say "creating kind cluster \`$cluster\`"
  kind create cluster --name "$cluster" --config kind/cluster/config.yaml >&2
fi

ensure_cargo
say "building lap (release)"
cargo build --locked --release --quiet
target=${CARGO_TARGET_DIR:-target}
context_dir=$(mktemp -d)
trap 'rm -rf "$context_dir"' EXIT
cp "$target/release/lap" "$context_dir/lap"
say "building the sandbox image \`$image\`"
docker build --quiet -t "$image" -f kind/Dockerfile \
  ${LAP_HARNESS_TOOLS+--build-arg "HARNESS_TOOLS=$LAP_HARNESS_TOOLS"} "$context_dir" >&2
say "loading \`$image\` into the cluster"
kind load docker-image "$image" --name "$cluster" >&2

say "applying the namespace and RBAC"
kubectl --context "$context" apply -f kind/ >&2
kubectl --context "$context" wait --for=jsonpath='{.status.phase}'=Active namespace/lap --timeout=60s >&2

say "ready; run:"
echo "lap serve --backend kube --kube-context $context --kube-namespace lap --kube-image $image"
