#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cf-allowlist contributors
# MIT License or Apache License 2.0 (see https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT OR Apache-2.0

# This file is self-contained apart from ansible.module_utils, so it also works from a plain
# library path: ANSIBLE_LIBRARY=packaging/ansible/plugins/modules, module name cf_allowlist.

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: cf_allowlist
short_description: Keep a host's firewall open to Cloudflare's ranges with cf-allowlist
version_added: "0.1.0"
description:
  - Runs the C(cf-allowlist) binary on the target host with C(--output json).
  - With O(state=present) it runs C(cf-allowlist sync), which fetches the sources, validates
    them and brings every selected firewall backend to exactly those ranges.
  - With O(state=absent) it runs C(cf-allowlist purge), which removes everything the tool
    created in the firewall and nothing else.
  - The tool's warnings become Ansible warnings, exactly those the tool prints itself. A warning
    that repeats on every run while nothing changes (the builtin list's age) is left out of a
    run whose result is C(ok), as the tool leaves it out of a quiet cron run. A tool error fails
    the task with the tool's message and hint. A change refused by a safety guard (exit code 3)
    fails the task with the refusal, unless O(force) overrides that guard.
  - In check mode a sync runs as a dry run (C(sync --dry-run --detailed-exitcode)) and reports
    the pending change without changing anything. A purge in check mode runs C(status) and
    reports whether anything would be removed.
  - Serialise runs per host is not needed; the tool takes its own lock (exit code 4 when
    another run holds it longer than C(lock_timeout_secs)).
author:
  - cf-allowlist contributors (@cf-allowlist)
requirements:
  - cf-allowlist on the target host (the Debian package, C(cargo install), or a path in
    O(executable)).
  - Root on the target host (use C(become)), since the tool changes the firewall.
options:
  state:
    description:
      - V(present) runs C(sync); V(absent) runs C(purge).
    type: str
    choices: [present, absent]
    default: present
  sources:
    description:
      - Sources of ranges, each an C(https://) or C(http://) URL, a file path, a C(file://)
        URL, or V(builtin). Replaces the sources of the config file.
      - Omitted, the config file's sources are used, else Cloudflare's published lists.
      - Ignored with O(state=absent).
    type: list
    elements: str
  backends:
    description:
      - The backends to act on, each a kind the tool knows (C(cf-allowlist sync --help) lists
        them). Replaces the backends of the config file; each takes its options from the
        config file's C([[backend]]) table of that kind, or the tool's defaults.
      - With O(state=absent), omitted means the backends of the last sync.
    type: list
    elements: str
    choices: [nftables, iptables, nginx-realip, apache-realip, caddy-realip, ufw, firewalld, aws]
  ports:
    description:
      - TCP ports to open on every selected backend (the tool's default is 80 and 443).
      - Ignored with O(state=absent).
    type: list
    elements: int
  restrict:
    description:
      - V(true) also drops every other source on the managed ports (C(--restrict)).
      - V(false) turns a restrict set in the config file off for this run (C(--no-restrict)).
      - Omitted, the config file's choice applies.
      - Ignored with O(state=absent).
    type: bool
  force:
    description:
      - Override safety guards that refuse the change. Each refusal names its guard.
      - V(true) passes C(--force), which overrides every guard except C(ssh) (the guard
        against restricting the port SSH listens on), which must be named.
      - A list of guard names passes C(--force=NAME,...) and overrides only those. The names
        are C(shrink) (the list lost many ranges), C(owner) (another state directory's parts),
        C(ssh) and C(reach) (the change would let fewer listed sources reach a managed port).
      - V(false), an empty list, or omitted overrides nothing.
    type: raw
    default: false
  config:
    description:
      - The config file (C(--config)); it must exist. Omitted, the tool reads
        C(/etc/cf-allowlist/config.toml) if it exists.
    type: path
  state_dir:
    description:
      - The state directory (C(--state-dir)); omitted, the config file's or
        C(/var/lib/cf-allowlist).
    type: path
  executable:
    description:
      - The cf-allowlist binary, a path or a name looked up in E(PATH) (and C(/usr/local/bin),
        C(/usr/bin)).
    type: path
    default: cf-allowlist
attributes:
  check_mode:
    support: full
    description: A dry run; the pending change is reported and nothing is changed.
  diff_mode:
    support: full
    description:
      - With O(state=present), C(before) and C(after) list the ranges each backend held and
        holds. With O(state=absent), C(before) counts the ranges each backend holds.
notes:
  - For many hosts, roll out with C(serial) and C(max_fail_percentage); see the tool's
    docs/running.md ("Many hosts"), installed in /usr/share/doc/cf-allowlist/docs/.
  - The module passes E(PATH) through from the task environment; the tool finds C(nft),
    C(iptables) and C(ipset) there, then in C(/usr/sbin) and C(/sbin).
seealso:
  - name: cf-allowlist README
    description: Commands, exit codes, safety guards, and the fleet recipe.
    link: https://example.invalid/cf-allowlist
"""

EXAMPLES = r"""
- name: Keep nftables open to Cloudflare on 80 and 443
  cf_allowlist:
    backends: [nftables]
  become: true

- name: Air-gapped host, from the embedded list, restricting the web ports to Cloudflare
  cf_allowlist:
    sources: [builtin]
    backends: [nftables]
    ports: [443]
    restrict: true

- name: A host whose origin only sees Cloudflare through iptables
  cf_allowlist:
    backends: [iptables]
    config: /etc/cf-allowlist/config.toml
    executable: /usr/local/bin/cf-allowlist

- name: ufw and nginx's real-IP list, adopting the parts another state directory wrote
  cf_allowlist:
    backends: [ufw, nginx-realip]
    restrict: false
    force: [owner]

- name: Remove every rule and set the tool created
  cf_allowlist:
    state: absent
"""

RETURN = r"""
changed:
  description: Whether the firewall was (or, in check mode, would be) changed.
  returned: always
  type: bool
generation:
  description: The state generation the firewall now holds (null in check mode or after purge).
  returned: when state is present
  type: int
  sample: 3
backends:
  description: One entry per backend.
  returned: when state is present
  type: list
  elements: dict
  contains:
    backend:
      description: The kind, V(nftables) or V(iptables).
      type: str
    description:
      description: The backend with its options, as the tool describes it.
      type: str
    changed:
      description: Whether this backend changed (or would change).
      type: bool
    added:
      description: Ranges added (or to add).
      type: list
      elements: str
      sample: ["198.51.100.0/24"]
    removed:
      description: Ranges removed (or to remove).
      type: list
      elements: str
    unchanged:
      description: How many ranges were already in place.
      type: int
ranges:
  description: The target list, as C(ranges) in the tool's JSON (C(ipv4), C(ipv6), C(list)).
  returned: when state is present
  type: dict
purged:
  description: The backends purged, as the tool describes them.
  returned: when state is absent and not in check mode
  type: list
  elements: str
exit_code:
  description:
    - The tool's exit code (0 ok, 1 error, 2 changes pending in check mode, 3 refused by a
      safety guard, 4 lock busy, 5 applied but not effective). Named so because Ansible
      treats a non-zero C(rc) as a failure, and 2 in check mode is not one.
  returned: always
  type: int
cmd:
  description: The command line run.
  returned: always
  type: list
  elements: str
result:
  description: The tool's JSON object, as printed.
  returned: when the tool printed one
  type: dict
"""

import ipaddress
import json
import os

from ansible.module_utils.basic import AnsibleModule

# The tool's documented exit codes.
EXIT_OK = 0
EXIT_PENDING = 2
EXIT_REFUSED = 3
EXIT_LOCK_BUSY = 4
EXIT_NOT_EFFECTIVE = 5


def parse_json(stdout):
    """The tool's one JSON object on stdout, or None (an older binary prints nothing on error)."""
    text = stdout.strip()
    if not text:
        return None
    try:
        value = json.JSONDecoder().raw_decode(text)[0]
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_stderr(stderr):
    """Splits the tool's stderr into warnings and the error (message, causes, hint)."""
    warnings, causes = [], []
    message = hint = None
    for line in stderr.splitlines():
        stripped = line.strip()
        if stripped.startswith("warning: "):
            warnings.append(stripped[len("warning: "):])
        elif line.startswith("error: "):
            message = line[len("error: "):].strip()
        elif stripped.startswith("caused by: "):
            causes.append(stripped[len("caused by: "):])
        elif line.startswith("hint: "):
            hint = line[len("hint: "):].strip()
    return warnings, {"message": message, "causes": causes, "hint": hint}


def collect_warnings(result, stderr_warnings):
    """The warnings the tool itself shows (its JSON `warnings_shown`), else every warning of
    the JSON (an older tool), else those on stderr; deduplicated, in order."""
    found = []
    if result is not None and isinstance(result.get("warnings_shown"), list):
        found.extend(str(warning) for warning in result["warnings_shown"])
    elif result is not None and isinstance(result.get("warnings"), list):
        found.extend(str(warning) for warning in result["warnings"])
        for backend in result.get("backends") or []:
            if isinstance(backend, dict):
                for warning in backend.get("warnings") or []:
                    found.append("%s: %s" % (backend.get("description", backend.get("backend")), warning))
    else:
        found.extend(stderr_warnings)
    seen, unique = set(), []
    for warning in found:
        if warning not in seen:
            seen.add(warning)
            unique.append(warning)
    return unique


def error_text(error):
    """One line: the message, its causes, and the hint."""
    message = error.get("message") or "cf-allowlist failed"
    causes = [cause for cause in error.get("causes") or [] if cause]
    if causes:
        message += ": " + ": ".join(causes)
    if error.get("hint"):
        message += " (hint: %s)" % error["hint"]
    return message


def network_key(text):
    try:
        network = ipaddress.ip_network(text, strict=False)
        return (network.version, network.network_address.packed, network.prefixlen, text)
    except ValueError:
        return (9, b"", 0, text)


def sorted_ranges(ranges):
    return sorted(set(ranges), key=network_key)


def sync_diff(result):
    """before = what each backend held (the target less what was added, plus what was
    removed), after = the target; one block per backend."""
    target = list((result.get("ranges") or {}).get("list") or [])
    before_lines, after_lines = [], []
    backends = [backend for backend in result.get("backends") or [] if isinstance(backend, dict)]
    for backend in backends:
        added = set(backend.get("added") or [])
        removed = set(backend.get("removed") or [])
        before = [cidr for cidr in target if cidr not in added] + list(removed)
        if len(backends) > 1:
            header = "# %s" % backend.get("description", backend.get("backend"))
            before_lines.append(header)
            after_lines.append(header)
        before_lines.extend(sorted_ranges(before))
        after_lines.extend(sorted_ranges(target))
    if not backends:
        after_lines.extend(sorted_ranges(target))
    return {
        "before": "\n".join(before_lines) + ("\n" if before_lines else ""),
        "after": "\n".join(after_lines) + ("\n" if after_lines else ""),
        "before_header": "firewall before",
        "after_header": "firewall after",
    }


def backend_summaries(result):
    summaries = []
    for backend in result.get("backends") or []:
        if not isinstance(backend, dict):
            continue
        summaries.append({
            "backend": backend.get("backend"),
            "description": backend.get("description"),
            "changed": bool(backend.get("changed", backend.get("added") or backend.get("removed"))),
            "added": list(backend.get("added") or []),
            "removed": list(backend.get("removed") or []),
            "unchanged": backend.get("unchanged"),
        })
    return summaries


class Tool:
    """Runs cf-allowlist with the options every command shares."""

    def __init__(self, module):
        self.module = module
        executable = module.params["executable"]
        if os.sep in executable:
            if not os.access(executable, os.X_OK):
                module.fail_json(msg="cf-allowlist executable %s does not exist or is not executable" % executable)
            self.executable = executable
        else:
            self.executable = module.get_bin_path(executable, required=True, opt_dirs=["/usr/local/bin", "/usr/bin"])

    def command(self, *args):
        cmd = [self.executable, "--output", "json"]
        if self.module.params["config"]:
            cmd += ["--config", self.module.params["config"]]
        if self.module.params["state_dir"]:
            cmd += ["--state-dir", self.module.params["state_dir"]]
        return cmd + list(args)

    def run(self, cmd):
        rc, stdout, stderr = self.module.run_command(cmd, environ_update={"NO_COLOR": "1"})
        result = parse_json(stdout)
        stderr_warnings, stderr_error = parse_stderr(stderr)
        for warning in collect_warnings(result, stderr_warnings):
            self.module.warn(warning)
        error = None
        if result is not None and isinstance(result.get("error"), dict):
            error = result["error"]
        elif stderr_error["message"]:
            error = stderr_error
        return rc, result, error, stderr

    def fail(self, cmd, rc, result, error, stderr, prefix=None):
        if error is not None:
            message = error_text(error)
        else:
            message = "cf-allowlist exited with code %d%s" % (rc, (": " + stderr.strip()) if stderr.strip() else "")
        if prefix:
            message = "%s: %s" % (prefix, message)
        extra = {"exit_code": rc, "cmd": cmd, "stderr": stderr}
        if result is not None:
            extra["result"] = result
        self.module.fail_json(msg=message, **extra)


# The guards `--force=NAME` names (the tool's refusals name theirs).
GUARDS = ("shrink", "owner", "ssh", "reach")


def force_args(module, force):
    """`--force` for true, `--force=a,b` for a list of guard names, nothing for false."""
    if force is None or force is False or force == []:
        return []
    if force is True:
        return ["--force"]
    if isinstance(force, str):
        lowered = force.strip().lower()
        if lowered in ("true", "yes", "on", "1"):
            return ["--force"]
        if lowered in ("false", "no", "off", "0", ""):
            return []
        force = [name.strip() for name in force.split(",")]
    if not isinstance(force, list):
        module.fail_json(msg="force must be true, false or a list of guard names (%s)" % ", ".join(GUARDS))
    names = [str(name) for name in force]
    unknown = [name for name in names if name not in GUARDS]
    if unknown:
        module.fail_json(msg="force names unknown guards %s: the guards are %s" % (
            ", ".join(unknown), ", ".join(GUARDS)))
    unique = []
    for name in names:
        if name not in unique:
            unique.append(name)
    return ["--force=" + ",".join(unique)]


def sync(module, tool):
    params = module.params
    args = ["sync"]
    if module.check_mode:
        args += ["--dry-run", "--detailed-exitcode"]
    for source in params["sources"] or []:
        args += ["--source", source]
    for backend in params["backends"] or []:
        args += ["--backend", backend]
    if params["ports"]:
        args += ["--ports", ",".join(str(port) for port in params["ports"])]
    if params["restrict"] is True:
        args.append("--restrict")
    elif params["restrict"] is False:
        args.append("--no-restrict")
    args.extend(force_args(module, params["force"]))
    cmd = tool.command(*args)
    rc, result, error, stderr = tool.run(cmd)

    if rc == EXIT_REFUSED:
        refused = (result or {}).get("refused") or []
        reason = "; ".join(refused) if refused else error_text(error or {"message": stderr.strip()})
        module.fail_json(
            msg="cf-allowlist refused the change (a safety guard): %s; nothing was changed. "
                "If the change is intended, set force to the guard's name (force: [NAME]), "
                "or force: true for every guard but ssh" % reason,
            exit_code=rc, cmd=cmd, stderr=stderr, result=result, refused=refused)
    if rc == EXIT_NOT_EFFECTIVE:
        tool.fail(cmd, rc, result, error, stderr, prefix="applied but not effective")
    if rc == EXIT_LOCK_BUSY:
        tool.fail(cmd, rc, result, error, stderr, prefix="another cf-allowlist run holds the lock")
    if rc not in (EXIT_OK, EXIT_PENDING) or (rc == EXIT_PENDING and not module.check_mode) or result is None:
        tool.fail(cmd, rc, result, error, stderr)

    if module.check_mode:
        changed = rc == EXIT_PENDING or bool(result.get("changed"))
    else:
        changed = bool(result.get("changed"))
    output = {
        "changed": changed,
        "generation": result.get("generation"),
        "backends": backend_summaries(result),
        "ranges": result.get("ranges"),
        "exit_code": rc,
        "cmd": cmd,
        "result": result,
    }
    if module._diff:
        output["diff"] = sync_diff(result)
    module.exit_json(**output)


def held_counts(status):
    """Ranges each backend holds, from `status`: the generation's count less what is missing,
    plus what is unexpected."""
    ranges = status.get("ranges") or {}
    target = int(ranges.get("ipv4") or 0) + int(ranges.get("ipv6") or 0)
    counts = []
    for backend in status.get("backends") or []:
        if not isinstance(backend, dict):
            continue
        held = max(target - len(backend.get("missing") or []), 0) + len(backend.get("unexpected") or [])
        counts.append((backend.get("description", backend.get("backend")), held))
    return counts


def purge(module, tool):
    params = module.params
    backend_args = []
    for backend in params["backends"] or []:
        backend_args += ["--backend", backend]

    status_cmd = tool.command("status", *backend_args)
    rc, status, error, stderr = tool.run(status_cmd)
    counts = held_counts(status) if rc == EXIT_OK and status is not None else None
    diff = None
    if counts is not None:
        diff = {
            "before": "".join("# %s: %d ranges\n" % (name, held) for name, held in counts),
            "after": "",
            "before_header": "firewall before",
            "after_header": "firewall after",
        }
        if not counts:
            # Never synced and no backend named: nothing of ours can be in the firewall.
            module.exit_json(changed=False, purged=[], exit_code=rc, cmd=status_cmd, **({"diff": diff} if module._diff else {}))

    if module.check_mode:
        if counts is None:
            tool.fail(status_cmd, rc, status, error, stderr)
        changed = any(held for name, held in counts)
        output = {"changed": changed, "exit_code": rc, "cmd": status_cmd, "result": status}
        if module._diff:
            output["diff"] = diff
        module.exit_json(**output)

    cmd = tool.command("purge", *backend_args)
    rc, result, error, stderr = tool.run(cmd)
    if rc != EXIT_OK or result is None:
        tool.fail(cmd, rc, result, error, stderr)
    if "changed" in result:
        changed = bool(result["changed"])
    elif counts is not None:
        changed = any(held for name, held in counts)
    else:
        changed = bool(result.get("purged"))
    output = {"changed": changed, "purged": result.get("purged") or [], "exit_code": rc, "cmd": cmd, "result": result}
    if module._diff and diff is not None:
        output["diff"] = diff
    module.exit_json(**output)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="present", choices=["present", "absent"]),
            sources=dict(type="list", elements="str"),
            backends=dict(
                type="list",
                elements="str",
                choices=["nftables", "iptables", "nginx-realip", "apache-realip", "caddy-realip", "ufw", "firewalld", "aws"],
            ),
            ports=dict(type="list", elements="int"),
            restrict=dict(type="bool"),
            force=dict(type="raw", default=False),
            config=dict(type="path"),
            state_dir=dict(type="path"),
            executable=dict(type="path", default="cf-allowlist"),
        ),
        supports_check_mode=True,
    )
    tool = Tool(module)
    if module.params["state"] == "present":
        sync(module, tool)
    else:
        purge(module, tool)


if __name__ == "__main__":
    main()
