#!/usr/bin/env python3
"""Regenerates the subsets in this folder from the full MLS interop vectors.

Usage: python3 extract.py /path/to/mls-implementations/test-vectors
"""
import json
import sys

src = sys.argv[1]


def load(name):
    with open(f"{src}/{name}") as f:
        return json.load(f)


def dump(name, value):
    with open(name, "w") as f:
        json.dump(value, f, indent=1)
        f.write("\n")


dump("messages.json", load("messages.json")[:3])
dump("deserialization.json", load("deserialization.json"))
dump("welcome.json", [c for c in load("welcome.json") if c["cipher_suite"] == 1])
passive = load("passive-client-handling-commit.json")
dump("passive-client-handling-commit.json", [passive[i] for i in (0, 7, 12)])
