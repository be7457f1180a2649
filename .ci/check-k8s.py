#!/usr/bin/env python3
"""Render every kustomize overlay under k8s/overlays and check what an operator relies on.

Each overlay is rendered with `kubectl kustomize`, every object is validated offline with
kubernetes-validate (strict: unknown fields fail), and the rendered objects must hold the
deployment rules: non-root, no privilege escalation, read-only root, no capabilities, probes,
resource limits, pinned images, no secret in git, NetworkPolicies around every pod, a
PodDisruptionBudget per workload, autoscalers for the stateless services, headless Services
in front of the gRPC ports. With --guardyn BIN the configuration each guardyn container gets
(ConfigMap + env) is loaded by `BIN config`, so a misspelt GUARDYN_ key fails here.

--self-test breaks a rendered overlay in one way at a time and requires each break to be
reported: the checker itself is checked.

Usage: check-k8s.py [--guardyn BIN] [--self-test] [OVERLAY_DIR...]
"""

import argparse
import copy
import os
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUARDYN_IMAGE = "ghcr.io/guardyn/guardyn"
# Custom resources of operators the offline schemas do not know; only these skip validation.
CRD_KINDS = {
    ("cert-manager.io", "Certificate"),
    ("pingcap.com", "TidbCluster"),
    ("scylla.scylladb.com", "ScyllaCluster"),
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
# Services whose replicas share nothing local (shared store, NATS, S3): they must autoscale.
STATELESS = ["messaging", "presence", "media", "notification"]
# A name word that marks a value as secret; such a variable comes from a Secret. Names ending
# in a path suffix name a file (a mounted Secret) instead, which must lie in a Secret volume.
SECRET_WORDS = {"KEY", "SECRET", "PASSWORD", "PASSWD", "TOKEN", "DSN", "PASSPHRASE", "CREDENTIALS"}
PATH_SUFFIXES = ("_FILE", "_PATH", "_DIR")
NOT_SECRET_SUFFIXES = ("_SECS", "_MS", "_TTL", "_ID", "_ENV", "_LEN", "_BYTES", "_PREFIX")


def kubernetes_version():
    return os.environ.get("K8S_VALIDATE_VERSION", "1.32.0")


def workspace_version():
    text = open(os.path.join(ROOT, "Cargo.toml")).read()
    m = re.search(r'\[workspace\.package\][^\[]*?\bversion\s*=\s*"([^"]+)"', text, re.S)
    if not m:
        sys.exit("check-k8s: no [workspace.package] version in Cargo.toml")
    return m.group(1)


def known_services():
    """`guardyn serve --service` names, from crates/guardyn/src/app.rs."""
    text = open(os.path.join(ROOT, "crates/guardyn/src/app.rs")).read()
    m = re.search(r"pub const SERVICES: &\[&str\] = &\[([^\]]*)\]", text)
    if not m:
        sys.exit("check-k8s: SERVICES not found in crates/guardyn/src/app.rs")
    return re.findall(r'"([^"]+)"', m.group(1))


def proto_services(service):
    """Fully qualified gRPC service names of one Guardyn service's public contract."""
    names = set()
    d = os.path.join(ROOT, "proto", "guardyn", service, "v1")
    for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if f.endswith(".proto"):
            for s in re.findall(r"^service\s+(\w+)", open(os.path.join(d, f)).read(), re.M):
                names.add(f"guardyn.{service}.v1.{s}")
    return names


def render(overlay):
    out = subprocess.run(
        ["kubectl", "kustomize", overlay], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        sys.exit(f"check-k8s: kubectl kustomize {overlay} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def ident(obj):
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')}/{meta.get('namespace', '-')}/{meta.get('name')}"


def api_group(obj):
    api = obj.get("apiVersion", "")
    return api.split("/")[0] if "/" in api else ""


def validate_schemas(objs, problems):
    import kubernetes_validate

    for obj in objs:
        if (api_group(obj), obj.get("kind")) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, kubernetes_version(), strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{ident(obj)}: schema: {e.message} at {list(e.path)}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(
                f"{ident(obj)}: no offline schema for {obj.get('apiVersion')} {obj.get('kind')}"
                " (a custom resource must be listed in CRD_KINDS)"
            )


def pod_spec(obj):
    kind = obj.get("kind")
    spec = obj.get("spec", {})
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("template", {}).get("spec", {})


def pod_labels(obj):
    if obj.get("kind") == "Pod":
        return obj.get("metadata", {}).get("labels", {})
    if obj.get("kind") == "CronJob":
        t = obj["spec"].get("jobTemplate", {}).get("spec", {}).get("template", {})
    else:
        t = obj.get("spec", {}).get("template", {})
    return t.get("metadata", {}).get("labels", {})


def is_guardyn(container):
    return container.get("image", "").split(":")[0].split("@")[0] == GUARDYN_IMAGE


def secret_name(name):
    last = name.split("__")[-1].upper()
    if last.endswith(NOT_SECRET_SUFFIXES):
        return False
    return bool(SECRET_WORDS & set(last.split("_")))


def is_path_name(name):
    return name.upper().endswith(PATH_SUFFIXES)


def check_image(where, image, version, problems):
    if "@sha256:" in image:
        return
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        problems.append(f"{where}: image {image!r} has no tag")
        return
    tag = last.split(":", 1)[1]
    if tag == "latest" or not tag:
        problems.append(f"{where}: image {image!r} uses :latest")
    if image.split(":")[0] == GUARDYN_IMAGE and tag != version:
        problems.append(
            f"{where}: image {image!r}: tag must be the workspace version {version} (Cargo.toml)"
        )


def check_container(where, c, pod, ctx, problems):
    psc = pod.get("securityContext", {}) or {}
    sc = c.get("securityContext", {}) or {}

    def eff(key):
        return sc.get(key, psc.get(key))

    if eff("runAsNonRoot") is not True:
        problems.append(f"{where}: runAsNonRoot must be true")
    uid = eff("runAsUser")
    if not isinstance(uid, int) or uid == 0:
        problems.append(f"{where}: runAsUser must be a numeric non-root uid")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation must be false")
    if sc.get("privileged"):
        problems.append(f"{where}: privileged")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: readOnlyRootFilesystem must be true")
    caps = sc.get("capabilities", {}) or {}
    if "ALL" not in (caps.get("drop") or []):
        problems.append(f"{where}: capabilities must drop ALL")
    if caps.get("add"):
        problems.append(f"{where}: capabilities added: {caps['add']}")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append(f"{where}: seccompProfile must be RuntimeDefault")

    res = c.get("resources", {}) or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(kind) or {}):
                problems.append(f"{where}: resources.{kind}.{r} not set")

    check_image(where, c.get("image", ""), ctx["version"], problems)

    for probe in ("livenessProbe", "readinessProbe"):
        if not c.get(probe):
            problems.append(f"{where}: no {probe}")
    if is_guardyn(c):
        check_guardyn_probes(where, c, ctx, problems)

    check_env(where, c, pod, ctx, problems)
    check_mounts(where, c, pod, problems)


def guardyn_selection(c):
    args = list(c.get("command", []) or []) + list(c.get("args", []) or [])
    selected = []
    for i, a in enumerate(args):
        if a == "--service" and i + 1 < len(args):
            selected.append(args[i + 1])
        elif a.startswith("--service="):
            selected.append(a.split("=", 1)[1])
    return args, selected


def check_guardyn_probes(where, c, ctx, problems):
    args, selected = guardyn_selection(c)
    if "serve" not in args:
        problems.append(f"{where}: a guardyn server container must run `serve`")
    for s in selected:
        if s not in ctx["services"]:
            problems.append(f"{where}: --service {s!r} is not one of {ctx['services']}")
    grpc_ports = {p.get("containerPort") for p in c.get("ports", []) if p.get("name") == "grpc"}
    if not grpc_ports:
        problems.append(f"{where}: no container port named grpc")
    if len(selected) == 1:
        allowed = proto_services(selected[0])
    else:
        allowed = {""}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        p = c.get(probe)
        if not p:
            continue
        g = p.get("grpc")
        if not g:
            problems.append(f"{where}: {probe} must be a native gRPC health probe")
            continue
        if g.get("port") not in grpc_ports:
            problems.append(f"{where}: {probe} probes port {g.get('port')}, not the gRPC port")
        if g.get("service", "") not in allowed:
            problems.append(
                f"{where}: {probe} asks health for {g.get('service', '')!r}; expected one of "
                f"{sorted(allowed)}"
            )


def secret_mounts(c, pod):
    vols = {v["name"]: v for v in pod.get("volumes", []) or []}
    out = []
    for m in c.get("volumeMounts", []) or []:
        v = vols.get(m["name"], {})
        if "secret" in v:
            out.append(m["mountPath"].rstrip("/") + "/")
    return out


def check_env(where, c, pod, ctx, problems):
    smounts = secret_mounts(c, pod)
    entries = []
    for e in c.get("env", []) or []:
        entries.append((e["name"], e.get("value"), e.get("valueFrom"), "env"))
    for ef in c.get("envFrom", []) or []:
        if "secretRef" in ef:
            continue
        cm = ef.get("configMapRef", {}).get("name")
        data = ctx["configmaps"].get(cm)
        if data is None:
            problems.append(f"{where}: envFrom names ConfigMap {cm!r}, which is not rendered")
            continue
        for k, v in data.items():
            entries.append((ef.get("prefix", "") + k, v, None, f"ConfigMap {cm}"))
    for name, value, value_from, origin in entries:
        if not secret_name(name):
            continue
        if is_path_name(name):
            path = value or ""
            if value_from or not any(path.startswith(m) for m in smounts):
                problems.append(
                    f"{where}: {name} ({origin}) names a secret file; it must point into a "
                    f"mounted Secret volume, not {path!r}"
                )
            continue
        if not (value_from and "secretKeyRef" in value_from):
            problems.append(
                f"{where}: {name} ({origin}) looks secret: it must come from a secretKeyRef"
            )


def check_mounts(where, c, pod, problems):
    vols = {v["name"]: v for v in pod.get("volumes", []) or []}
    claims = pod.get("_claims", set())
    for m in c.get("volumeMounts", []) or []:
        v = vols.get(m["name"])
        if v is None and m["name"] in claims:
            continue
        if v is None:
            problems.append(f"{where}: mount {m['name']!r} has no volume")
            continue
        if "hostPath" in v:
            problems.append(f"{where}: hostPath volume {m['name']!r}")
        writable = not m.get("readOnly", False)
        if writable and not ("emptyDir" in v or "persistentVolumeClaim" in v or "ephemeral" in v):
            problems.append(
                f"{where}: volume {m['name']!r} mounted writable; only emptyDir or claims may be"
            )


def selects(selector, labels):
    match = (selector or {}).get("matchLabels", {}) or {}
    exprs = (selector or {}).get("matchExpressions", []) or []
    if not all(labels.get(k) == v for k, v in match.items()):
        return False
    for e in exprs:
        val = labels.get(e["key"])
        op = e["operator"]
        if op == "In" and val not in e.get("values", []):
            return False
        if op == "NotIn" and val in e.get("values", []):
            return False
        if op == "Exists" and e["key"] not in labels:
            return False
        if op == "DoesNotExist" and e["key"] in labels:
            return False
    return True


def check_objects(objs, ctx):
    problems = []
    ctx["configmaps"] = {
        o["metadata"]["name"]: o.get("data", {}) or {} for o in objs if o.get("kind") == "ConfigMap"
    }
    netpols = [o for o in objs if o.get("kind") == "NetworkPolicy"]
    pdbs = [o for o in objs if o.get("kind") == "PodDisruptionBudget"]
    hpas = [o for o in objs if o.get("kind") == "HorizontalPodAutoscaler"]
    services = [o for o in objs if o.get("kind") == "Service"]

    for o in objs:
        kind = o.get("kind")
        if kind == "Secret":
            problems.append(f"{ident(o)}: a Secret in the manifests; secrets are created by the"
                            " operator, never kept in git")
        if kind == "ConfigMap":
            for k, v in (o.get("data") or {}).items():
                if re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", str(v)):
                    problems.append(f"{ident(o)}: {k} holds a private key")
        if kind not in WORKLOAD_KINDS:
            continue
        pod = pod_spec(o)
        ns = o["metadata"].get("namespace")
        claims = {t["metadata"]["name"] for t in o.get("spec", {}).get("volumeClaimTemplates", [])}
        pod = dict(pod, _claims=claims)
        labels = pod_labels(o)
        if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
            problems.append(f"{ident(o)}: host namespaces")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{ident(o)}: automountServiceAccountToken must be false")
        for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
            check_container(f"{ident(o)} container {c.get('name')}", c, pod, ctx, problems)
        covering = [
            n for n in netpols
            if n["metadata"].get("namespace") == ns
            and "Ingress" in n["spec"].get("policyTypes", ["Ingress"])
            and selects(n["spec"].get("podSelector"), labels)
            and n["spec"].get("podSelector", {}).get("matchLabels")
        ]
        if not covering:
            problems.append(f"{ident(o)}: no NetworkPolicy selects its pods by label")
        if kind in ("Deployment", "StatefulSet") and not any(
            p["metadata"].get("namespace") == ns and selects(p["spec"].get("selector"), labels)
            for p in pdbs
        ):
            problems.append(f"{ident(o)}: no PodDisruptionBudget selects its pods")

    for n in netpols:
        for rule in n["spec"].get("ingress", []) or []:
            if not rule.get("from"):
                problems.append(f"{ident(n)}: an ingress rule open to every source")
            for peer in rule.get("from") or []:
                if "ipBlock" in peer and peer["ipBlock"].get("cidr") in ("0.0.0.0/0", "::/0"):
                    problems.append(f"{ident(n)}: an ingress rule open to the internet")
            ports = {p.get("port") for p in rule.get("ports", []) or []}
            if "metrics" in ports:
                for peer in rule.get("from") or []:
                    nsel = (peer.get("namespaceSelector") or {}).get("matchLabels", {})
                    if nsel.get("kubernetes.io/metadata.name") != "monitoring":
                        problems.append(f"{ident(n)}: metrics reachable from beyond monitoring")

    deployments = {
        o["metadata"]["name"]: o for o in objs if o.get("kind") == "Deployment"
        and any(is_guardyn(c) for c in pod_spec(o).get("containers", []))
    }
    if deployments:
        by_service = {}
        for name, d in deployments.items():
            for c in pod_spec(d).get("containers", []):
                for s in guardyn_selection(c)[1]:
                    by_service[s] = name
        for s in ctx["services"]:
            if s not in by_service:
                problems.append(f"cluster layout: no Deployment runs --service {s}")
        for s in STATELESS:
            target = by_service.get(s)
            if target and not any(
                h["spec"]["scaleTargetRef"].get("kind") == "Deployment"
                and h["spec"]["scaleTargetRef"].get("name") == target
                for h in hpas
            ):
                problems.append(f"Deployment {target}: stateless service {s} has no autoscaler")

    for svc in services:
        sel = svc["spec"].get("selector") or {}
        grpc = any(p.get("name") == "grpc" for p in svc["spec"].get("ports", []))
        if grpc and sel.get("app.kubernetes.io/name") == "guardyn":
            if svc["spec"].get("clusterIP") != "None":
                problems.append(
                    f"{ident(svc)}: gRPC Service must be headless so the gateway balances per"
                    " request"
                )
    return problems


def check_config(objs, ctx, binary):
    """Load each guardyn container's configuration with `guardyn config`."""
    problems = []
    for o in objs:
        if o.get("kind") not in WORKLOAD_KINDS:
            continue
        pod = pod_spec(o)
        for c in pod.get("containers", []) or []:
            if not is_guardyn(c):
                continue
            where = f"{ident(o)} container {c.get('name')}"
            with tempfile.TemporaryDirectory() as tmp:
                env = {"PATH": os.environ.get("PATH", ""), "HOME": tmp}
                values = {}
                for ef in c.get("envFrom", []) or []:
                    cm = ef.get("configMapRef", {}).get("name")
                    values.update(ctx["configmaps"].get(cm, {}))
                for e in c.get("env", []) or []:
                    if "value" in e:
                        values[e["name"]] = e["value"]
                    elif "secretKeyRef" in e.get("valueFrom", {}):
                        ref = e["valueFrom"]["secretKeyRef"]
                        values[e["name"]] = (
                            "postgres://guardyn@db.invalid:5432/guardyn"
                            if ref["key"] == "url" else "placeholder-" + ref["key"]
                        )
                    elif "fieldRef" in e.get("valueFrom", {}):
                        values[e["name"]] = "pod-0"
                mounts = [m["mountPath"] for m in c.get("volumeMounts", []) or []]
                for k, v in values.items():
                    v = str(v)
                    for m in mounts:
                        if v.startswith(m.rstrip("/") + "/"):
                            local = tmp + v
                            os.makedirs(os.path.dirname(local), exist_ok=True)
                            open(local, "w").close()
                            v = local
                        elif v == m:
                            os.makedirs(tmp + v, exist_ok=True)
                            v = tmp + v
                    env[k] = v
                out = subprocess.run(
                    [binary, "config"], env=env, capture_output=True, text=True, check=False
                )
                if out.returncode != 0:
                    problems.append(
                        f"{where}: `guardyn config` refuses its configuration: "
                        f"{out.stderr.strip() or out.stdout.strip()}"
                    )
    return problems


def check_overlay(overlay, ctx, binary):
    objs = render(overlay)
    problems = []
    validate_schemas(objs, problems)
    problems += check_objects(objs, ctx)
    if binary:
        problems += check_config(objs, ctx, binary)
    return objs, problems


def find(objs, kind, pred=lambda o: True):
    for o in objs:
        if o.get("kind") == kind and pred(o):
            return o
    raise SystemExit(f"check-k8s self-test: no {kind} to break")


def guardyn_container(objs):
    d = find(objs, "Deployment")
    return d, pod_spec(d)["containers"][0]


def self_test(overlay, ctx, binary):
    """Each break must be reported with the expected words."""
    base = render(overlay)
    assert not check_objects(copy.deepcopy(base), dict(ctx)), "the unbroken overlay must pass"

    def b_root(objs):
        d, c = guardyn_container(objs)
        c["securityContext"]["runAsNonRoot"] = False
        pod_spec(d)["securityContext"]["runAsNonRoot"] = False

    def b_uid(objs):
        d, c = guardyn_container(objs)
        pod_spec(d)["securityContext"]["runAsUser"] = 0

    def b_escalation(objs):
        guardyn_container(objs)[1]["securityContext"]["allowPrivilegeEscalation"] = True

    def b_rootfs(objs):
        del guardyn_container(objs)[1]["securityContext"]["readOnlyRootFilesystem"]

    def b_caps(objs):
        guardyn_container(objs)[1]["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}

    def b_liveness(objs):
        del guardyn_container(objs)[1]["livenessProbe"]

    def b_readiness(objs):
        del find(objs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0][
            "readinessProbe"]

    def b_http_probe(objs):
        guardyn_container(objs)[1]["readinessProbe"] = {"tcpSocket": {"port": 50051}}

    def b_health_name(objs):
        guardyn_container(objs)[1]["livenessProbe"]["grpc"]["service"] = "guardyn.nope.v1.X"

    def b_latest(objs):
        find(objs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["image"] = (
            "docker.io/library/nats:latest")

    def b_untagged(objs):
        find(objs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["image"] = (
            "docker.io/library/nats")

    def b_version(objs):
        c = guardyn_container(objs)[1]
        c["image"] = GUARDYN_IMAGE + ":0.0.0-other"

    def b_literal_secret(objs):
        guardyn_container(objs)[1]["env"].append(
            {"name": "GUARDYN_STORAGE__POSTGRES__PASSWORD", "value": "hunter2"})

    def b_configmap_secret(objs):
        find(objs, "ConfigMap", lambda o: o["metadata"]["name"].startswith("guardyn-config"))[
            "data"]["GUARDYN_STORAGE__BLOB__SECRET_ACCESS_KEY"] = "abc"

    def b_key_path(objs):
        find(objs, "ConfigMap", lambda o: o["metadata"]["name"].startswith("guardyn-config"))[
            "data"]["GUARDYN_MESH__TLS__KEY_PATH"] = "/var/lib/guardyn/tls.key"

    def b_secret_object(objs):
        objs.append({"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "x", "namespace": "guardyn"},
                     "data": {"password": "aHVudGVyMg=="}})

    def b_limits(objs):
        del guardyn_container(objs)[1]["resources"]["limits"]

    def b_netpol(objs):
        objs[:] = [o for o in objs if o.get("kind") != "NetworkPolicy"]

    def b_open_netpol(objs):
        n = find(objs, "NetworkPolicy", lambda o: o["metadata"]["name"] == "guardyn-public")
        n["spec"]["ingress"][0].pop("from")

    def b_pdb(objs):
        objs[:] = [o for o in objs if not (
            o.get("kind") == "PodDisruptionBudget" and o["metadata"]["name"] == "guardyn-nats")]

    def b_hpa(objs):
        objs[:] = [o for o in objs if not (
            o.get("kind") == "HorizontalPodAutoscaler"
            and o["metadata"]["name"] == "guardyn-presence")]

    def b_clusterip(objs):
        find(objs, "Service", lambda o: o["metadata"]["name"] == "guardyn-media")["spec"].pop(
            "clusterIP")

    def b_writable_secret(objs):
        d, c = guardyn_container(objs)
        for m in c["volumeMounts"]:
            if m["name"] == "mesh-tls":
                m["readOnly"] = False

    def b_unknown_service(objs):
        guardyn_container(objs)[1]["args"] = ["serve", "--service", "chat"]

    breaks = [
        (b_root, "runAsNonRoot"), (b_uid, "runAsUser"),
        (b_escalation, "allowPrivilegeEscalation"), (b_rootfs, "readOnlyRootFilesystem"),
        (b_caps, "drop ALL"), (b_liveness, "no livenessProbe"),
        (b_readiness, "no readinessProbe"), (b_http_probe, "native gRPC"),
        (b_health_name, "asks health"), (b_latest, ":latest"), (b_untagged, "no tag"),
        (b_version, "workspace version"), (b_literal_secret, "secretKeyRef"),
        (b_configmap_secret, "secretKeyRef"), (b_key_path, "mounted Secret volume"),
        (b_secret_object, "a Secret in the manifests"), (b_limits, "resources.limits"),
        (b_netpol, "no NetworkPolicy"), (b_open_netpol, "open to every source"),
        (b_pdb, "no PodDisruptionBudget"), (b_hpa, "no autoscaler"),
        (b_clusterip, "headless"), (b_writable_secret, "mounted writable"),
        (b_unknown_service, "is not one of"),
    ]
    failed = 0
    for brk, words in breaks:
        objs = copy.deepcopy(base)
        brk(objs)
        found = check_objects(objs, dict(ctx))
        if not any(words in p for p in found):
            failed += 1
            print(f"self-test: {brk.__name__} was not reported (want {words!r}; got {found})")
    # The schema validation must refuse an unknown field too.
    objs = copy.deepcopy(base)
    guardyn_container(objs)[1]["livenessProbe"]["grpcc"] = {}
    problems = []
    validate_schemas(objs, problems)
    if not any("schema" in p for p in problems):
        failed += 1
        print("self-test: an unknown field passed schema validation")
    total = len(breaks) + 1
    if binary:
        # A misspelt configuration key must stop `guardyn config`.
        total += 1
        objs = copy.deepcopy(base)
        find(objs, "ConfigMap", lambda o: o["metadata"]["name"].startswith("guardyn-config"))[
            "data"]["GUARDYN_EVENTS__NATS_URLS"] = "nats://guardyn-nats:4222"
        c = dict(ctx)
        check_objects(objs, c)
        if not any("refuses its configuration" in p for p in check_config(objs, c, binary)):
            failed += 1
            print("self-test: a misspelt GUARDYN_ key was accepted")
    print(f"check-k8s self-test: {total - failed} passed, {failed} failed")
    return failed == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--guardyn", help="guardyn binary: load every container's configuration")
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("overlays", nargs="*")
    args = ap.parse_args()
    overlays = args.overlays or sorted(
        os.path.join(ROOT, "k8s", "overlays", d)
        for d in os.listdir(os.path.join(ROOT, "k8s", "overlays"))
    )
    ctx = {"version": workspace_version(), "services": known_services()}
    ok = True
    for overlay in overlays:
        objs, problems = check_overlay(overlay, ctx, args.guardyn)
        name = os.path.relpath(overlay, ROOT)
        for p in problems:
            print(f"{name}: {p}")
        print(f"{name}: {len(objs)} objects, {len(problems)} problems")
        ok = ok and not problems
    if args.self_test:
        ok = self_test(os.path.join(ROOT, "k8s", "overlays", "cluster"), ctx, args.guardyn) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
