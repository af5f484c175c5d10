#!/usr/bin/env bash
# End to end against a real kind cluster: brings the cluster up (scripts/kind-up.sh), runs
# `lap serve --backend kube` against it and walks a session through its life — the API server is
# reachable (`GET /api/v1/health/k8s`), an agent's session becomes `ready` in a sandbox pod with its
# Secret and NetworkPolicy, a command runs in it, a restart of `lap serve` adopts the pod, and deleting
# the session deletes every object. Without Docker or kind it says loudly that it skipped, and exits
# 0: this project's CI machines have neither (see README, "Kubernetes backend").
#
# Environment: LAP_KIND_CLUSTER (default `lap`), LAP_E2E_KEEP=1 to keep the cluster afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

skip() {
  printf '\n' >&2
  printf '==================================================================\n' >&2
  printf ' SKIPPED: scripts/e2e-kind.sh ran NOTHING: %s\n' "$1" >&2
  printf ' The Kubernetes backend was NOT tested against a real cluster.\n' >&2
  printf '==================================================================\n\n' >&2
  exit 0
}
command -v docker >/dev/null 2>&1 || skip "docker is not installed"
docker info >/dev/null 2>&1 || skip "the docker daemon does not answer"
command -v kind >/dev/null 2>&1 || skip "kind is not installed"

cluster=${LAP_KIND_CLUSTER:-lap}
context=kind-$cluster
scripts/kind-up.sh >/dev/null
ensure_kubectl
ensure_apt curl:curl jq:jq
kubectl() { "$LAP_KUBECTL" --context "$context" -n lap "$@"; }

work=$(mktemp -d)
serve_pid=
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  rm -rf "$work"
  [ "${LAP_E2E_KEEP:-}" = 1 ] || scripts/kind-down.sh
}
trap cleanup EXIT
lap=${CARGO_TARGET_DIR:-target}/release/lap
key=e2e-kind-master-key-$RANDOM$RANDOM
port=3939
base=http://127.0.0.1:$port

start_serve() {
  LAP_MASTER_KEY=$key "$lap" serve --backend kube --kube-context "$context" --kube-namespace lap \
    --listen 127.0.0.1:$port --data-dir "$work/data" --warm-pool-size 0 2>>"$work/serve.log" &
  serve_pid=$!
  for _ in $(seq 100); do curl -fs "$base/api/v1/health" >/dev/null 2>&1 && return 0; sleep 0.2; done
  cat "$work/serve.log" >&2
  die "lap serve did not start"
}
stop_serve() { kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true; serve_pid=; }
api() { curl -fsS -H "Authorization: Bearer $key" -H 'Content-Type: application/json' "$@"; }
fail() { cat "$work/serve.log" >&2; kubectl get pods,secrets,networkpolicies -o wide >&2 || true; die "$1"; }

start_serve
say "GET /api/v1/health/k8s"
curl -fsS "$base/api/v1/health/k8s" | jq -e '.ok == true' >/dev/null || fail "the API server is not reachable"

say "an agent and a session"
agent=$(api -X POST "$base/api/v1/managed_agents/agents" -d '{"name":"e2e-kind","harness_id":"shell"}' | jq -r .id)
session=$(api -X POST "$base/api/v1/managed_agents/agents/$agent/session" -d '{}' | jq -r .id)
status=
for _ in $(seq 300); do
  status=$(api "$base/api/v1/managed_agents/sessions/$session" | jq -r .status)
  [ "$status" = ready ] || [ "$status" = failed ] && break
  sleep 1
done
[ "$status" = ready ] || fail "the session is \`$status\`: $(api "$base/api/v1/managed_agents/sessions/$session" | jq -r .failure_reason)"
sandbox=$(kubectl get pods -l "lap.dev/session=$session" -o jsonpath='{.items[0].metadata.name}')
[ -n "$sandbox" ] || fail "no pod is labelled with the session"
kubectl get secret "$sandbox-vault" >/dev/null || fail "the sandbox has no Secret"
kubectl get networkpolicy "$sandbox-egress" >/dev/null || fail "the sandbox has no NetworkPolicy"

say "a command in the sandbox"
out=$(api -X POST "$base/api/v1/managed_agents/sessions/$session/exec" -d '{"command":["id","-u"]}' |
  jq -r 'select(.stdout) | .stdout' | while read -r chunk; do printf %s "$chunk" | base64 -d; done | tr -d '\n')
[ "$out" = 1000 ] || fail "exec answered \`$out\`"

say "a restarted lap serve adopts the pod"
stop_serve
start_serve
[ "$(api "$base/api/v1/managed_agents/sessions/$session" | jq -r .status)" = ready ] || fail "the session did not survive the restart"

say "deleting the session deletes every object"
api -X DELETE "$base/api/v1/managed_agents/sessions/$session" >/dev/null
for _ in $(seq 60); do
  [ -z "$(kubectl get pods,secrets,networkpolicies -l "lap.dev/sandbox=$sandbox" -o name)" ] && break
  sleep 1
done
[ -z "$(kubectl get pods,secrets,networkpolicies -l "lap.dev/sandbox=$sandbox" -o name)" ] || fail "objects of $sandbox are left"
say "e2e-kind passed"
