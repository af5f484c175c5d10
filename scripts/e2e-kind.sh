#!/usr/bin/env bash
# End to end against a real kind cluster: brings the cluster up (scripts/kind-up.sh), runs
# `lap serve --backend kube` against it and walks the scenarios tests/it/kube_e2e.rs runs against the
# fake API server: the API server is reachable (`GET /api/v1/health/k8s`); an agent's session becomes
# `ready` in a sandbox pod with its Secret and NetworkPolicy; a command runs in it as the sandbox
# user, seeing a stub where the credential is and no Secret or service-account token; a restart of
# `lap serve` adopts the pod; `lap <agent>` attaches (piped) and the agent's exit ends the session
# and deletes its objects; a warm pod is claimed by its label patch; a pod deleted behind lap's back
# ends its session with the reason; deleting a session deletes every object.
#
# Then the same cluster in gateway mode (`--kube-vault gateway`), which needs `lap serve` inside the
# cluster (the gateway knows a connection by its pod's source address, which kind's masquerading
# hides from a `lap serve` on the host): the namespace enforces Pod Security `restricted`;
# `deploy/overlays/kind` runs `lap serve` with `LAP_KUBE_VAULT=gateway`, reached through a
# port-forward; a session's pod is the harness alone, admitted at `restricted`, with no CA key in its
# Secret; its proxy credential names its pod; a request through the gateway is attributed to its
# session (the internal address it asks for is refused there, and recorded in its egress log); another
# pod's name as the credential is refused 407; a way out around the gateway is cut by the
# NetworkPolicy; and after a restart of `lap serve` the session is re-adopted and its connections are
# attributed again.
#
# The credential is a made-up value bound to a host nothing here talks to, and the only destination
# asked for is the cluster's own API server, which the gateway refuses: no request leaves the cluster.
#
# Without Docker or kind it says loudly that it skipped, and exits 0: this project's CI machines have
# neither (see docs/operating/kubernetes.md).
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
forward_pid=
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  [ -n "$forward_pid" ] && kill "$forward_pid" 2>/dev/null && wait "$forward_pid" 2>/dev/null
  rm -rf "$work"
  [ "${LAP_E2E_KEEP:-}" = 1 ] || scripts/kind-down.sh
}
trap cleanup EXIT
lap=${CARGO_TARGET_DIR:-target}/release/lap
key=e2e-kind-master-key-$RANDOM$RANDOM
real=ghp_e2e_kind_not_a_real_token_$RANDOM$RANDOM
port=3939
base=http://127.0.0.1:$port
mkdir -p "$work/home"

# `lap serve` with ARGS after the common ones (e.g. `--warm-pool-size 1`).
start_serve() {
  LAP_MASTER_KEY=$key "$lap" serve --backend kube --kube-context "$context" --kube-namespace lap \
    --listen 127.0.0.1:$port --data-dir "$work/data" "$@" 2>>"$work/serve.log" &
  serve_pid=$!
  for _ in $(seq 100); do curl -fs "$base/api/v1/health" >/dev/null 2>&1 && return 0; sleep 0.2; done
  cat "$work/serve.log" >&2
  die "lap serve did not start"
}
stop_serve() { kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true; serve_pid=; }
# The lap CLI as a user of this server, in a home of its own.
cli() {
  env -i PATH="$PATH" HOME="$work/home" LAP_URL="$base" LAP_MASTER_KEY="$key" LAP_CREDENTIAL_STORE=file \
    GITHUB_TOKEN="$real" "$lap" "$@"
}
fail() { cat "$work/serve.log" >&2; kubectl get pods,secrets,networkpolicies -o wide >&2 || true; die "$1"; }
show() { cli --json sessions show "$1" | jq -r ".$2"; }
# Waits until session $1's status is $2.
await_status() {
  for _ in $(seq 120); do [ "$(show "$1" status)" = "$2" ] && return 0; sleep 1; done
  fail "session $1 is \`$(show "$1" status)\`, not \`$2\`: $(show "$1" failure_reason)"
}
pod_of() { kubectl get pods -l "lap.dev/session=$1" -o jsonpath='{.items[0].metadata.name}'; }
# Waits until nothing labelled with sandbox $1 is left.
await_gone() {
  for _ in $(seq 60); do
    [ -z "$(kubectl get pods,secrets,networkpolicies -l "lap.dev/sandbox=$1" -o name)" ] && return 0
    sleep 1
  done
  fail "objects of $1 are left"
}

start_serve --warm-pool-size 0
say "GET /api/v1/health/k8s"
curl -fsS "$base/api/v1/health/k8s" | jq -e '.ok == true' >/dev/null || fail "the API server is not reachable"

say "an agent and a session"
cli agents create e2e-kind --harness shell --credential GITHUB_TOKEN@api.github.com >/dev/null
session=$(cli sessions create e2e-kind --timeout 300) || fail "the session did not become ready"
sandbox=$(pod_of "$session")
[ -n "$sandbox" ] || fail "no pod is labelled with the session"
kubectl get secret "$sandbox-vault" >/dev/null || fail "the sandbox has no Secret"
kubectl get networkpolicy "$sandbox-egress" >/dev/null || fail "the sandbox has no NetworkPolicy"

say "a command in the sandbox: the sandbox user, a stub, no Secret, no service-account token"
[ "$(cli exec "$session" -- id -u)" = 1000 ] || fail "exec does not run as the sandbox user"
stub=$(cli exec "$session" -- printenv GITHUB_TOKEN)
case $stub in stub_*) ;; *) fail "GITHUB_TOKEN in the sandbox is \`$stub\`, not a stub" ;; esac
cli exec "$session" -- sh -c 'test ! -e /var/run/secrets/kubernetes.io/serviceaccount' ||
  fail "the harness container has a service-account token"
cli exec "$session" -- sh -c "! grep -rqsF -- '$real' /etc /work /tmp /var/run /proc/self/environ" ||
  fail "the real credential is readable in the harness container"

say "a restarted lap serve adopts the pod"
stop_serve
start_serve --warm-pool-size 0
[ "$(show "$session" status)" = ready ] || fail "the session did not survive the restart"

say "lap <agent> attaches; the agent's exit ends the session and deletes its pod"
set +e
out=$(printf 'echo e2e-$((6 * 7))\nexit 7\n' | cli e2e-kind 2>&1)
code=$?
set -e
[ "$code" = 7 ] || fail "lap e2e-kind exited with $code, not the agent's 7: $out"
case $out in *e2e-42*) ;; *) fail "the agent's output did not come back: $out" ;; esac
await_status "$session" dead
[ "$(show "$session" failure_reason)" = "the agent exited with code 7" ] || fail "dead for another reason"
await_gone "$sandbox"

say "a warm pod is claimed by its label patch"
stop_serve
start_serve --warm-pool-size 1
warm=
for _ in $(seq 300); do
  warm=$(kubectl get pods -l lap.dev/warm=true -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)
  [ -n "$warm" ] && [ "$(cli --json admin stats | jq -r .warm_pool.ready)" = 1 ] && break
  sleep 1
done
[ -n "$warm" ] || fail "no warm pod appeared"
claimed=$(cli sessions create e2e-kind)
[ "$(pod_of "$claimed")" = "$warm" ] || fail "the session did not claim the warm pod $warm"
[ "$(kubectl get pod "$warm" -o jsonpath='{.metadata.labels.lap\.dev/warm}')" = false ] ||
  fail "the claimed pod is still labelled warm"

say "a pod deleted behind lap's back ends its session"
kubectl delete pod "$warm" --wait=false >/dev/null
await_status "$claimed" dead
# The watcher sees the deletion first; a kubelet that stopped the containers just before may have
# made the pod report them failed.
case $(show "$claimed" failure_reason) in
  "the sandbox was deleted outside lap" | "the sandbox failed: "*) ;;
  *) fail "dead for another reason: $(show "$claimed" failure_reason)" ;;
esac

say "deleting a session deletes every object"
other=$(cli sessions create e2e-kind --timeout 300) || fail "the session did not become ready"
sandbox=$(pod_of "$other")
cli sessions delete "$other" >/dev/null
await_gone "$sandbox"
say "sidecar mode passed"

# ---- gateway mode: lap serve in the cluster ----
stop_serve
# The warm pool's pod (and anything else of the host lap serve's) goes: a `restricted` namespace
# would not admit a sidecar pod again, and the in-cluster lap serve starts from its own store.
kubectl delete pods,secrets,networkpolicies -l lap.dev/sandbox --wait=true --timeout=120s >/dev/null
# In gateway mode `lap serve` reads its logs from the cluster, not from a file.
fail() {
  kubectl logs deployment/lap-serve --tail=200 >&2 || true
  kubectl get pods,secrets,networkpolicies -o wide >&2 || true
  die "$1"
}
say "gateway mode: lap serve in the cluster, the namespace at restricted"
kubectl create secret generic lap-master-key --from-literal=master-key="$key" --dry-run=client -o yaml |
  kubectl apply -f - >/dev/null
"$LAP_KUBECTL" --context "$context" apply -k deploy/overlays/kind >/dev/null
# deploy/base's namespace admits privileged pods (sidecar mode's fence); gateway mode's enforces
# restricted, which lap serve's own pod meets too.
"$LAP_KUBECTL" --context "$context" apply -f kind/namespace-gateway.yaml >/dev/null
kubectl set env deployment/lap-serve LAP_KUBE_VAULT=gateway >/dev/null
# The port-forward to the Service (a new one after each rollout: it follows one pod).
forward() {
  [ -n "$forward_pid" ] && { kill "$forward_pid" 2>/dev/null; wait "$forward_pid" 2>/dev/null || true; }
  kubectl rollout status deployment/lap-serve --timeout=300s >/dev/null || fail "lap serve did not roll out"
  kubectl port-forward svc/lap-serve "$port:3000" >>"$work/forward.log" 2>&1 &
  forward_pid=$!
  for _ in $(seq 100); do curl -fs "$base/api/v1/health" >/dev/null 2>&1 && return 0; sleep 0.3; done
  cat "$work/forward.log" >&2
  fail "lap serve in the cluster did not answer through the port-forward"
}
forward
# The agent made in sidecar mode lives in the host lap serve's store; the in-cluster one has its own.
cli agents create e2e-kind --harness shell --credential GITHUB_TOKEN@api.github.com >/dev/null
session=$(cli sessions create e2e-kind --timeout 300) || fail "the gateway-mode session did not become ready"
sandbox=$(pod_of "$session")
[ -n "$sandbox" ] || fail "no pod is labelled with the session"

say "a gateway pod: the harness alone, no init container, no CA key"
[ "$(kubectl get pod "$sandbox" -o jsonpath='{.spec.containers[*].name}')" = harness ] ||
  fail "the gateway pod has containers other than the harness"
[ -z "$(kubectl get pod "$sandbox" -o jsonpath='{.spec.initContainers}')" ] || fail "the gateway pod has an init container"
kubectl get secret "$sandbox-vault" -o json | jq -e '.data | has("ca.key") or has("binding.json") | not' >/dev/null ||
  fail "the gateway pod's Secret holds CA key or real values"
stub=$(cli exec "$session" -- printenv GITHUB_TOKEN)
case $stub in stub_*) ;; *) fail "GITHUB_TOKEN in the sandbox is \`$stub\`, not a stub" ;; esac
proxy=$(cli exec "$session" -- printenv HTTPS_PROXY)
case $proxy in "http://lap:$sandbox@"*) ;; *) fail "the proxy credential is \`$proxy\`, not the pod's name" ;; esac
gateway=${proxy#*@}

# A request through the gateway for the cluster's API server: the gateway refuses the internal
# address (nothing is sent to it) and records the refusal in this session's egress log.
attributed() {
  local code
  code=$(cli exec "$session" -- curl -s -o /dev/null -w '%{http_code}' --max-time 20 https://kubernetes.default.svc/) || true
  [ "$code" != 200 ] || fail "the gateway let a sandbox reach the API server"
  for _ in $(seq 30); do
    cli --json sessions egress "$session" | jq -e 'any(.[]; .host == "kubernetes.default.svc")' >/dev/null && return 0
    sleep 1
  done
  fail "the gateway did not record the sandbox's request in its session's egress log"
}
say "a request through the gateway is its session's, and an internal address is refused"
attributed

say "another pod's name as the proxy credential is refused 407"
code=$(cli exec "$session" -- curl -s -o /dev/null -w '%{http_connect}' --max-time 20 \
  --proxy "http://lap:lap-0000000000000000@$gateway" https://api.github.com/) || true
[ "$code" = 407 ] || fail "a foreign proxy credential got $code, not 407"

say "around the gateway, the NetworkPolicy cuts the way out"
if cli exec "$session" -- curl -sk --noproxy '*' --max-time 10 -o /dev/null https://kubernetes.default.svc/; then
  fail "a gateway pod reached the API server around the gateway: does the CNI enforce NetworkPolicy?"
fi

say "a restarted lap serve re-adopts the session and its gateway route"
kubectl rollout restart deployment/lap-serve >/dev/null
forward
[ "$(show "$session" status)" = ready ] || fail "the gateway-mode session did not survive the restart"
before=$(cli --json sessions egress "$session" | jq length)
code=$(cli exec "$session" -- curl -s -o /dev/null -w '%{http_code}' --max-time 20 https://kubernetes.default.svc/) || true
for _ in $(seq 30); do
  [ "$(cli --json sessions egress "$session" | jq length)" -gt "$before" ] && break
  sleep 1
done
[ "$(cli --json sessions egress "$session" | jq length)" -gt "$before" ] ||
  fail "after the restart the gateway did not attribute the sandbox's request to its session"

cli sessions delete "$session" >/dev/null
await_gone "$sandbox"
say "gateway mode passed"
say "e2e-kind passed"
