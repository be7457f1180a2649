# One image for every Guardyn service: the binary is one, `guardyn serve --service NAME`
# picks what a container hosts. Build it with ./build-docker.sh (tags, labels, --push,
# --platform); .ci/image-check.sh builds and runs the runtime stage in CI.
#
# The runtime stage takes its binary from the stage or image named by BINARY_FROM: the
# `build` stage by default, or an image with an already compiled binary (what CI does,
# since base images cannot be pulled there). Such an image must hold `/out/guardyn` and an
# empty directory `/out/data`, as the build stage does. BuildKit resolves the default stage
# name; buildah does not, so build-docker.sh builds `--target build` first there and passes
# the result as BINARY_FROM.
#
# The web admin console (web/admin, TypeScript) is built the same way in the `console` stage
# (node: buf generate from proto/, tsc, esbuild) or taken from the image named by CONSOLE_FROM,
# which must hold the built files in `/out/console` (CI: web/admin/dist). The runtime image
# serves them on 50080 from every process that hosts the admin service.

# Every ARG used in a FROM is declared here, before the first FROM: only then do all
# builders (BuildKit, buildah) resolve it in every stage.
# Must equal the channel of rust-toolchain.toml (.ci/image-check.sh checks it).
ARG RUST_VERSION=1.95.0
# distroless/cc: glibc, libgcc, CA certificates and tzdata, no shell; `nonroot` = 65532.
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARY_FROM=build
# node:20 builds the console (web/admin/package.json's toolchain: esbuild, typescript, buf).
ARG NODE_VERSION=20
ARG CONSOLE_FROM=console

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
# The toolchain file also asks for rustfmt and clippy; a release build needs neither, so
# the image's toolchain (the same version) is used as it is.
ARG RUST_VERSION
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never
WORKDIR /src
COPY . .
# Cache mounts keep the crate downloads and the compiled dependencies between builds, so a
# source change recompiles only the workspace crates. target/ is a cache mount, hence the
# copy out of it.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p guardyn --bin guardyn \
    && mkdir -p /out/data \
    && cp target/release/guardyn /out/guardyn

FROM docker.io/library/node:${NODE_VERSION}-bookworm-slim AS console
WORKDIR /src/web/admin
# Dependencies first (a layer cached until the lock file changes), then the sources: the
# contract in proto/ that build.mjs generates the TypeScript from, and the console itself.
COPY web/admin/package.json web/admin/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY proto /src/proto
COPY web/admin /src/web/admin
RUN node build.mjs \
    && mkdir -p /out \
    && cp -r dist /out/console

FROM ${BINARY_FROM} AS binary

FROM ${CONSOLE_FROM} AS console-files

FROM ${RUNTIME_BASE} AS runtime
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="guardyn" \
      org.opencontainers.image.description="End-to-end-encrypted messaging backend (every service; pick with serve --service)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="AGPL-3.0-only" \
      org.opencontainers.image.source="https://example.invalid/guardyn"
COPY --from=binary /out/guardyn /usr/local/bin/guardyn
# Read-only static files: the console's page, script and stylesheet.
COPY --from=console-files /out/console /usr/share/guardyn/console
# The only writable path: the embedded engine, blobs of the fs engine and the generated
# auth master key live here. Owned by the runtime user so a fresh volume inherits it.
COPY --from=binary --chown=65532:65532 /out/data /var/lib/guardyn
# Inside a container the loopback default would make the server unreachable; publishing a
# port is the deliberate choice here. The mesh listener stays off until configured
# (GUARDYN_MESH__LISTEN=0.0.0.0:50061 with mesh.tls, see README). The web admin console is
# served on 50080 by a process hosting the admin service (plain HTTP unless
# GUARDYN_ADMIN__CONSOLE_TLS_CERT_PATH/_KEY_PATH name a certificate: put it behind the TLS
# gateway otherwise); GUARDYN_ADMIN__CONSOLE_DIR= (empty) turns it off.
ENV GUARDYN_SERVER__HOST=0.0.0.0 \
    GUARDYN_METRICS__HOST=0.0.0.0 \
    GUARDYN_STORAGE__DATA_DIR=/var/lib/guardyn \
    GUARDYN_ADMIN__CONSOLE_DIR=/usr/share/guardyn/console \
    GUARDYN_ADMIN__CONSOLE_LISTEN=0.0.0.0:50080
USER 65532:65532
WORKDIR /var/lib/guardyn
VOLUME ["/var/lib/guardyn"]
# gRPC and gRPC-web, Prometheus /metrics, mesh listener (internal services), web console.
EXPOSE 50051 9464 50061 50080
# guardyn drains on SIGTERM (health NOT_SERVING, GOAWAY, shutdown grace) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/guardyn"]
CMD ["serve"]
