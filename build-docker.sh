#!/usr/bin/env bash
# Build the Guardyn container image (one image for every service) with docker or buildah.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./build-docker.sh [OPTIONS] [-- EXTRA BUILDER ARGS]

Builds the image from ./Dockerfile and tags it twice:
  <name>:<version>          the workspace version (Cargo.toml [workspace.package])
  <name>:<version>-<rev>    plus the git revision (12 hex digits, "-dirty" with local changes)
<name> is $IMAGE_NAME (default "guardyn"), prefixed with "$REGISTRY/" when REGISTRY is set.
Every service runs from this image: `guardyn serve --service NAME`.

Options:
  --push             push both tags to $REGISTRY (required with --push)
  --platform LIST    comma-separated target platforms, e.g. linux/amd64,linux/arm64.
                     docker: `docker buildx build --platform LIST` (foreign platforms need
                     QEMU binfmt on the builder; a multi-platform result is not loaded into
                     the local image store, so combine it with --push).
                     buildah: one build per platform into a manifest list named after the
                     tags (`buildah bud --manifest`); --push pushes the list with all images.
                     Without --platform: the host's platform.
  --tool NAME        docker or buildah (default: docker when its daemon answers, else buildah)
  --build-arg K=V    passed to the builder (repeatable), e.g. RUNTIME_BASE=... BINARY_FROM=...
                     CONSOLE_FROM=... (an image with the built web console in /out/console)
  -h, --help         this text

Environment: REGISTRY, IMAGE_NAME; for buildah also BUILDAH_ISOLATION (e.g. chroot where no
OCI runtime can create namespaces) and CONTAINERS_STORAGE_CONF (another image store).
Arguments after `--` go to the builder unchanged.
EOF
}

die() {
  printf 'build-docker.sh: %s\n' "$*" >&2
  exit 2
}

cd "$(dirname "$0")"

push=false
platform=""
tool=""
build_args=()
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --push) push=true ;;
    --platform)
      [ $# -ge 2 ] || die "--platform needs a value"
      platform="$2"
      shift
      ;;
    --platform=*) platform="${1#*=}" ;;
    --tool)
      [ $# -ge 2 ] || die "--tool needs a value"
      tool="$2"
      shift
      ;;
    --tool=*) tool="${1#*=}" ;;
    --build-arg)
      [ $# -ge 2 ] || die "--build-arg needs a value"
      build_args+=(--build-arg "$2")
      shift
      ;;
    --build-arg=*) build_args+=(--build-arg "${1#*=}") ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      extra=("$@")
      break
      ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

if [ -z "$tool" ]; then
  # A docker client without a reachable daemon cannot build.
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    tool=docker
  elif command -v buildah >/dev/null 2>&1; then
    tool=buildah
  else
    die "neither a running docker daemon nor buildah found"
  fi
fi
case "$tool" in
  docker | buildah) ;;
  *) die "--tool must be docker or buildah, not $tool" ;;
esac
if $push && [ -z "${REGISTRY:-}" ]; then
  die "--push needs REGISTRY (e.g. REGISTRY=registry.example.com/team)"
fi

version="$(awk '
  /^\[workspace\.package\]/ { section = 1; next }
  /^\[/ { section = 0 }
  section && $1 == "version" { gsub(/"/, "", $3); print $3; exit }
' Cargo.toml)"
[ -n "$version" ] || die "no version in Cargo.toml [workspace.package]"
toolchain="$(awk -F'"' '/^channel *=/ { print $2; exit }' rust-toolchain.toml)"
[ -n "$toolchain" ] || die "no channel in rust-toolchain.toml"
if revision="$(git rev-parse --short=12 HEAD 2>/dev/null)"; then
  # No optional locks: a status refresh must not rewrite the index of a shared checkout.
  if [ -n "$(GIT_OPTIONAL_LOCKS=0 git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    revision="$revision-dirty"
  fi
else
  revision=unknown
fi

name="${IMAGE_NAME:-guardyn}"
if [ -n "${REGISTRY:-}" ]; then
  name="${REGISTRY%/}/$name"
fi
tags=("$name:$version" "$name:$version-$revision")

args=(
  --file Dockerfile
  --build-arg "RUST_VERSION=$toolchain"
  --build-arg "VERSION=$version"
  --build-arg "REVISION=$revision"
  "${build_args[@]}"
)

# Builder output goes to stderr: stdout carries only the tags, for scripts.
run() {
  printf '+ %s\n' "$*" >&2
  "$@" >&2
}

if [ "$tool" = docker ] && docker buildx version >/dev/null 2>&1; then
  cmd=(docker buildx build "${args[@]}" --target runtime --tag "${tags[0]}" --tag "${tags[1]}")
  if [ -n "$platform" ]; then
    cmd+=(--platform "$platform")
  fi
  if $push; then
    cmd+=(--push)
  elif [ -z "$platform" ]; then
    cmd+=(--load)
  fi
  run "${cmd[@]}" "${extra[@]}" .
elif [ "$tool" = docker ]; then
  # Without the buildx plugin: `docker build` with BuildKit (cache mounts need it), one
  # platform only.
  [ -z "$platform" ] || die "--platform needs the docker buildx plugin (or --tool buildah)"
  DOCKER_BUILDKIT=1 run docker build "${args[@]}" --target runtime \
    --tag "${tags[0]}" --tag "${tags[1]}" "${extra[@]}" .
  if $push; then
    for tag in "${tags[@]}"; do
      run docker push "$tag"
    done
  fi
else
  # buildah does not resolve a stage name that an ARG puts in FROM (BuildKit does), so unless
  # the caller names a binary image, the build stage is built and tagged first and the
  # runtime stage takes its binary from that image; the same for the web console's stage
  # and CONSOLE_FROM. Layers are cached for the build stages (the dependency caches); the
  # runtime stage is a few copies, cheaper to redo than to cache.
  own_binary=true
  own_console=true
  for arg in "${build_args[@]}"; do
    case "$arg" in
      BINARY_FROM=*) own_binary=false ;;
      CONSOLE_FROM=*) own_console=false ;;
    esac
  done
  platforms=("")
  if [ -n "$platform" ]; then
    IFS=, read -r -a platforms <<<"$platform"
    # A manifest list holds one image per platform; both tags name the same list.
    if buildah manifest exists "${tags[1]}" 2>/dev/null; then
      run buildah manifest rm "${tags[1]}"
    fi
  fi
  for target_platform in "${platforms[@]}"; do
    per_platform=()
    stages=()
    if [ -n "$target_platform" ]; then
      per_platform=(--platform "$target_platform")
    fi
    platform_tag="${target_platform:-host}"
    if $own_binary; then
      build_image="localhost/${IMAGE_NAME:-guardyn}-build:${platform_tag//\//-}"
      run buildah bud --layers "${args[@]}" "${per_platform[@]}" --target build \
        --tag "$build_image" "${extra[@]}" .
      stages=(--build-arg "BINARY_FROM=$build_image")
    fi
    if $own_console; then
      console_image="localhost/${IMAGE_NAME:-guardyn}-console:${platform_tag//\//-}"
      run buildah bud --layers "${args[@]}" "${per_platform[@]}" --target console \
        --tag "$console_image" "${extra[@]}" .
      stages+=(--build-arg "CONSOLE_FROM=$console_image")
    fi
    if [ -n "$target_platform" ]; then
      run buildah bud "${args[@]}" "${stages[@]}" "${per_platform[@]}" --target runtime \
        --manifest "${tags[1]}" "${extra[@]}" .
    else
      run buildah bud "${args[@]}" "${stages[@]}" --target runtime \
        --tag "${tags[0]}" --tag "${tags[1]}" "${extra[@]}" .
    fi
  done
  if [ -n "$platform" ]; then
    run buildah tag "${tags[1]}" "${tags[0]}"
  fi
  if $push; then
    for tag in "${tags[@]}"; do
      if [ -n "$platform" ]; then
        run buildah manifest push --all "${tags[1]}" "docker://$tag"
      else
        run buildah push "$tag" "docker://$tag"
      fi
    done
  fi
fi
printf '%s\n' "${tags[@]}"
