#!/usr/bin/env python3
"""Runs a command under a systemd unit's file-system sandbox, on a machine whose PID 1 is not
systemd (issue 18.5): the unit and its drop-ins are read, and what their settings amount to is
built by hand in a private mount namespace, so a backend that needs a path the unit does not
open fails here as it would under systemd.

    unit_sandbox.py UNIT [DROPIN...] [--bind SRC:DST]... -- COMMAND...

Emulated: ProtectSystem=strict (every mount read-only except /dev, /proc, /sys), ProtectHome=
(yes: /home, /root and /run/user empty and inaccessible; read-only; tmpfs), PrivateTmp=,
ProtectKernelTunables= (/proc/sys read-only), ReadWritePaths=, ReadOnlyPaths=,
BindReadOnlyPaths=, StateDirectory=, Environment=, EnvironmentFile=, NoNewPrivileges= and
CapabilityBoundingSet= (via setpriv). Not emulated: seccomp and address-family filters
(SystemCallFilter=, RestrictAddressFamilies=, MemoryDenyWriteExecute=), which no backend's file
access depends on. `--bind SRC:DST` puts a test's file or folder at DST before the sandbox is
built (a config at /etc/cf-allowlist/config.toml, a state directory at /var/lib/cf-allowlist).
Run it as root inside a network namespace of the test's own.
"""

import os
import shlex
import subprocess
import sys


def parse(paths):
    """The [Service] settings of a unit and its drop-ins, in order: list-valued settings
    accumulate and an empty assignment resets them, as systemd does; others are replaced."""
    lists = {"ReadWritePaths", "ReadOnlyPaths", "BindReadOnlyPaths", "Environment",
             "EnvironmentFile", "InaccessiblePaths"}
    settings = {key: [] for key in lists}
    for path in paths:
        section = None
        with open(path, encoding="utf-8") as unit:
            for raw in unit:
                line = raw.strip()
                if not line or line.startswith(("#", ";")):
                    continue
                if line.startswith("["):
                    section = line
                    continue
                if section != "[Service]" or "=" not in line:
                    continue
                key, value = (part.strip() for part in line.split("=", 1))
                if key in lists:
                    if value == "":
                        settings[key] = []
                    else:
                        settings[key].extend(shlex.split(value) if key != "Environment" else shlex.split(value))
                else:
                    settings[key] = value
    return settings


def main(argv):
    if "--" not in argv:
        sys.exit(__doc__)
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    units, binds = [], []
    iterator = iter(options)
    for option in iterator:
        if option == "--bind":
            binds.append(next(iterator).split(":", 1))
        else:
            units.append(option)
    settings = parse(units)
    script = ["set -eu"]

    def sh(*words):
        script.append(" ".join(shlex.quote(word) for word in words))

    # The test's own files first, while everything is writable.
    for source, target in binds:
        if os.path.isdir(source):
            sh("mkdir", "-p", target)
        else:
            sh("mkdir", "-p", os.path.dirname(target))
            script.append(f"[ -e {shlex.quote(target)} ] || touch {shlex.quote(target)}")
        sh("mount", "--bind", source, target)
    # BindReadOnlyPaths= sources may lie under a home that is hidden next: stash them first.
    stash = "/dev/shm/cf-allowlist-unit-sandbox"
    bound = []
    for index, entry in enumerate(settings["BindReadOnlyPaths"]):
        optional = entry.startswith("-")
        source, _, target = entry.lstrip("-").partition(":")
        target = target or source
        if optional and not os.path.exists(source):
            continue
        place = f"{stash}/{index}"
        sh("mkdir", "-p", place) if os.path.isdir(source) else sh("sh", "-c", f"mkdir -p {stash} && touch {place}")
        sh("mount", "--bind", source, place)
        bound.append((place, target, os.path.isdir(source)))
    # Writable paths: each its own mount, so that it can stay writable below a read-only /.
    writable = [entry.lstrip("-+") for entry in settings["ReadWritePaths"]
                if not entry.startswith("-") or os.path.exists(entry.lstrip("-+"))]
    if settings.get("StateDirectory"):
        for name in settings["StateDirectory"].split():
            state = f"/var/lib/{name}"
            sh("mkdir", "-p", state)
            writable.append(state)
    for path in writable:
        sh("mount", "--bind", path, path)
    protect_home = settings.get("ProtectHome", "no")
    homes = [path for path in ("/home", "/root", "/run/user") if os.path.isdir(path)]
    if protect_home in ("yes", "true"):
        for path in homes:
            sh("mount", "-t", "tmpfs", "-o", "mode=000,size=4k", "tmpfs", path)
    elif protect_home == "tmpfs":
        for path in homes:
            sh("mount", "-t", "tmpfs", "-o", "mode=755,size=4m", "tmpfs", path)
    elif protect_home == "read-only":
        for path in homes:
            sh("mount", "--bind", path, path)
    if settings.get("PrivateTmp") in ("yes", "true"):
        sh("mount", "-t", "tmpfs", "tmpfs", "/tmp")
        sh("mount", "-t", "tmpfs", "tmpfs", "/var/tmp")
    for place, target, is_dir in bound:
        sh("mkdir", "-p", target) if is_dir else sh("sh", "-c", f"mkdir -p $(dirname {shlex.quote(target)}) && touch {shlex.quote(target)}")
        sh("mount", "--bind", place, target)
        sh("mount", "-o", "remount,bind,ro", target)
    if settings.get("ProtectSystem") == "strict":
        # Every mount read-only (the API file systems aside), then the writable ones back.
        script.append(
            "awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r point; do "
            "case \"$point\" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue;; esac; "
            "mount -o remount,bind,ro \"$point\" 2>/dev/null || true; done")
        for path in writable:
            sh("mount", "-o", "remount,bind,rw", path)
        if settings.get("PrivateTmp") in ("yes", "true"):
            sh("mount", "-o", "remount,rw", "/tmp")
            sh("mount", "-o", "remount,rw", "/var/tmp")
        if protect_home == "tmpfs":
            for path in homes:
                sh("mount", "-o", "remount,ro", path)
        script.append("if touch /etc/.unit-sandbox-probe 2>/dev/null; then "
                      "echo 'unit_sandbox: / is writable' >&2; exit 1; fi")
    for entry in settings["ReadOnlyPaths"]:
        path = entry.lstrip("-+")
        if os.path.exists(path):
            sh("mount", "--bind", path, path)
            sh("mount", "-o", "remount,bind,ro", path)
    if settings.get("ProtectKernelTunables") in ("yes", "true"):
        sh("mount", "--bind", "/proc/sys", "/proc/sys")
        sh("mount", "-o", "remount,bind,ro", "/proc/sys")
    environment = {}
    for entry in settings["EnvironmentFile"]:
        path = entry.lstrip("-")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as file:
                for line in file:
                    line = line.strip()
                    if line and not line.startswith("#") and "=" in line:
                        key, value = line.split("=", 1)
                        environment[key] = value.strip('"')
    for entry in settings["Environment"]:
        key, _, value = entry.partition("=")
        environment[key] = value
    # systemd gives a system service (no User=) no HOME; PATH is its own.
    exports = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    exports += [f"{key}={value}" for key, value in environment.items()]
    for key in ("AWS_ENDPOINT_URL", "AWS_EC2_METADATA_DISABLED", "AWS_REGION"):
        if key in os.environ and key not in environment:
            exports.append(f"{key}={os.environ[key]}")
    caps = settings.get("CapabilityBoundingSet", "")
    bounding = ["-all"] + [f"+{cap.lower().removeprefix('cap_')}" for cap in caps.split()]
    privileges = ["setpriv"]
    if settings.get("NoNewPrivileges") in ("yes", "true"):
        privileges.append("--no-new-privs")
    if caps:
        privileges += ["--inh-caps=-all", f"--bounding-set={','.join(bounding)}"]
    privileges.append("--")
    script.append("exec " + " ".join(shlex.quote(word) for word in privileges + exports + command))
    return subprocess.call(["unshare", "-m", "--propagation", "private", "sh", "-c", "\n".join(script)])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
