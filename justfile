# Developer and operator commands. `just --list` shows them; `nix develop` has every tool.

set shell := ["bash", "-euo", "pipefail", "-c"]

# `just dry_run=true k8s-deploy ...` prints the kubectl commands instead of running them.
dry_run := "false"
# Rollout wait per workload.
rollout_timeout := "10m"
# The services `guardyn serve --service` knows (crates/guardyn/src/app.rs).
services := "auth messaging presence media notification admin"

default:
    @just --list

# Release build of the one binary.
build:
    cargo build --release --locked -p guardyn

# The whole test suite (README "Two commands"; .ci/run starts what it needs first).
test:
    cargo test --workspace --locked

# Format, clippy, the layout rule and the Kubernetes manifests.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    for src in crates/*/src services/*/src; do python3 .ci/check-layout.py "$src"; done
    python3 .ci/check-k8s.py

# Every service in one process on 127.0.0.1:50051, data in ./data.
run *args:
    cargo run -p guardyn -- {{ args }} serve

# Load generator against a running server (see README "Load generator").
bench server="http://127.0.0.1:50051" *args:
    cargo run --release -p guardyn -- bench --server {{ server }} {{ args }}

# The container image (./build-docker.sh --help: tags, --push, --platform).
docker-build *args:
    ./build-docker.sh {{ args }}

# SERVICE is `all` or one service: then only its objects and the shared ones (namespace,
# ConfigMap, ServiceAccount, default NetworkPolicies) are applied.
# `kubectl apply -k` an overlay to the current context, then wait for its rollouts.
k8s-deploy service="all" overlay="single-node":
    #!/usr/bin/env bash
    set -euo pipefail
    run() { if [ "{{ dry_run }}" = true ]; then printf '%s\n' "$*"; else "$@"; fi; }
    dir="k8s/overlays/{{ overlay }}"
    if [ ! -d "$dir" ]; then
        echo "no overlay {{ overlay }} (have: $(ls k8s/overlays | tr '\n' ' '))" >&2
        exit 2
    fi
    if [ "{{ service }}" != all ]; then
        case " {{ services }} " in
            *" {{ service }} "*) ;;
            *) echo "unknown service {{ service }} (have: {{ services }})" >&2; exit 2 ;;
        esac
    fi
    # The workloads this apply touches, from the rendered overlay.
    workloads="$(kubectl kustomize "$dir" | python3 -c '
    import sys, yaml
    want = sys.argv[1]
    for o in yaml.safe_load_all(sys.stdin):
        if not o or o.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        m = o["metadata"]
        if want in ("all", m.get("labels", {}).get("app.kubernetes.io/component")):
            print(m.get("namespace", "default"), o["kind"].lower() + "/" + m["name"])
    ' "{{ service }}")"
    if [ -z "$workloads" ]; then
        echo "overlay {{ overlay }} runs no separate {{ service }} workload (deploy all)" >&2
        exit 2
    fi
    if [ "{{ service }}" = all ]; then
        run kubectl apply -k "$dir"
    else
        run kubectl apply -k "$dir" -l "app.kubernetes.io/component in (shared,{{ service }})"
    fi
    while read -r ns workload; do
        run kubectl -n "$ns" rollout status "$workload" --timeout={{ rollout_timeout }}
    done <<<"$workloads"

# Pods, workloads, Services, autoscalers and budgets of every overlay.
k8s-status:
    kubectl get pods,deployments,statefulsets,services,hpa,pdb -A -l app.kubernetes.io/part-of=guardyn -o wide

# Recent and following logs of one service (`all` in the single-node overlay).
k8s-logs service:
    kubectl -n guardyn logs -f --tail=200 --prefix --all-containers --max-log-requests=20 -l app.kubernetes.io/name=guardyn,app.kubernetes.io/component={{ service }}

# PersistentVolumeClaims of StatefulSets (embedded data, NATS, PostgreSQL) survive this;
# delete them by hand once backed up.
# Delete an overlay's objects from the current context.
k8s-delete overlay:
    #!/usr/bin/env bash
    set -euo pipefail
    run() { if [ "{{ dry_run }}" = true ]; then printf '%s\n' "$*"; else "$@"; fi; }
    run kubectl delete -k "k8s/overlays/{{ overlay }}" --ignore-not-found
