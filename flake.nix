{
  description = "Guardyn: end-to-end-encrypted messaging backend";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-utils.url = "github:numtide/flake-utils";
    # The Rust toolchain of rust-toolchain.toml, not whatever nixpkgs ships.
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, flake-utils, rust-overlay }:
    flake-utils.lib.eachDefaultSystem (system:
      let
        pkgs = import nixpkgs {
          inherit system;
          overlays = [ rust-overlay.overlays.default ];
        };
        # channel, components and profile from the file CI and the Dockerfile also read.
        toolchain = pkgs.rust-bin.fromRustupToolchainFile ./rust-toolchain.toml;
        rustPlatform = pkgs.makeRustPlatform {
          cargo = toolchain;
          rustc = toolchain;
        };
        cargoToml = builtins.fromTOML (builtins.readFile ./Cargo.toml);
        # Test and CI helpers from PyPI: the Web Push decryptor, the S3 server, YAML for
        # .ci/check-k8s.py and the justfile.
        python = pkgs.python3.withPackages (ps: with ps; [
          pyyaml
          moto
          http-ece
        ]);
      in
      {
        # The one binary; `guardyn serve --service NAME` picks the services.
        packages.default = rustPlatform.buildRustPackage {
          pname = "guardyn";
          version = cargoToml.workspace.package.version;
          src = pkgs.lib.cleanSource ./.;
          cargoLock.lockFile = ./Cargo.lock;
          cargoBuildFlags = [ "-p" "guardyn" "--bin" "guardyn" ];
          # The test suite starts NATS, PostgreSQL, moto and Node: run it with `just test`.
          doCheck = false;
          meta = {
            description = "End-to-end-encrypted messaging backend";
            mainProgram = "guardyn";
          };
        };

        # Every tool .ci/run installs (.ci/check-flake.py keeps this list complete).
        devShells.default = pkgs.mkShell {
          packages = with pkgs; [
            toolchain
            protobuf
            buf
            nats-server
            postgresql
            grpcurl
            just
            kubectl
            kustomize
            nodejs
            chromium
            hadolint
            shellcheck
            buildah
            nix
            curl
            python
          ];
          # kubernetes-validate (offline Kubernetes schemas) is not packaged in nixpkgs.
          shellHook = ''
            export PATH="$PATH:$PWD/.venv-dev/bin"
            if [ ! -x .venv-dev/bin/kubernetes-validate ]; then
              python3 -m venv --system-site-packages .venv-dev
              .venv-dev/bin/pip install -q kubernetes-validate
            fi
          '';
        };
      });
}
