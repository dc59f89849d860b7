#!/usr/bin/env python3
"""A stand-in for cf-allowlist that answers in the JSON contract the core team is moving to
(`command`, `exit_code`, `warnings` on every object, an `error` object on stdout for errors,
exit code 5), so the module is tested against it before the real binary speaks it.
FAKE_CF_MODE picks the answer: ok, quiet-ok, error, not-effective, refused."""

import json
import os
import sys

mode = os.environ.get("FAKE_CF_MODE", "ok")
dry_run = "--dry-run" in sys.argv
if mode == "ok":
    code = 2 if dry_run and "--detailed-exitcode" in sys.argv else 0
    print(json.dumps({
        "command": "sync", "exit_code": code, "changed": True, "dry_run": dry_run,
        "generation": None if dry_run else 7, "sources": ["fake"],
        "ranges": {"ipv4": 2, "ipv6": 1, "list": ["198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"]},
        "upstream": None,
        "backends": [{"backend": "nftables", "description": "nftables (inet filter input, tcp 80,443)",
                      "changed": True, "added": ["203.0.113.0/24"], "removed": ["192.0.2.0/24"],
                      "unchanged": 2, "repairs": [], "warnings": ["another base chain drops"]}],
        "refused": [], "warnings": ["a top-level warning"]}))
    sys.exit(code)
if mode == "quiet-ok":
    # A no-op run: the repeating warning is in `warnings`, and not in `warnings_shown`.
    print(json.dumps({
        "command": "sync", "exit_code": 0, "changed": False, "dry_run": dry_run, "generation": 7,
        "sources": ["builtin"], "ranges": {"ipv4": 1, "ipv6": 0, "list": ["198.51.100.0/24"]},
        "upstream": None, "backends": [], "refused": [],
        "warnings": ["a repeating warning"], "warnings_shown": []}))
    sys.exit(0)
if mode == "refused":
    print(json.dumps({"command": "sync", "exit_code": 3, "changed": False, "dry_run": dry_run,
                      "refused": ["the list would remove 9 of 10 IPv4 ranges"], "warnings": []}))
    sys.exit(3)
code = 5 if mode == "not-effective" else 1
print(json.dumps({"command": "sync", "exit_code": code, "changed": False,
                  "error": {"message": "the backend failed" if code == 1 else "applied but another chain drops the traffic",
                            "causes": ["nft: exit 1"], "hint": "run `cf-allowlist status`"},
                  "warnings": []}))
print("error: this stderr copy must not be needed", file=sys.stderr)
sys.exit(code)
