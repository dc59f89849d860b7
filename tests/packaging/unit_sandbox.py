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

# A folder the namespace covers with a private tmpfs for its own scratch space.
SCRATCH = "/mnt"


def parse(paths):
    """The [Service] settings of a unit and its drop-ins, in order: list-valued settings
    accumulate and an empty assignment resets them, as systemd does; others are replaced."""
    lists = {"ReadWritePaths", "ReadOnlyPaths", "BindReadOnlyPaths", "Environment",
             "EnvironmentFile", "InaccessiblePaths", "CapabilityBoundingSet"}
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
                        settings[key].extend(shlex.split(value))
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

    # Scratch space private to the namespace: stashes, and overlays that let a bind target be
    # created without touching the host's file system.
    sh("mount", "-t", "tmpfs", "tmpfs", SCRATCH)
    overlaid = []

    def ensure(target, is_dir):
        """Creates `target` as a mount point, in an overlay over its nearest existing
        ancestor when it does not exist (the host's own folder stays untouched)."""
        if os.path.exists(target):
            return
        ancestor = os.path.dirname(target)
        while not os.path.exists(ancestor):
            ancestor = os.path.dirname(ancestor)
        if not any(ancestor == done or ancestor.startswith(done + "/") for done in overlaid):
            # An overlay shows the folder without the mounts below it (a test's bind of
            # /etc/ufw under /etc): they are put back from a recursive bind taken before.
            layer = f"{SCRATCH}/overlay{len(overlaid)}"
            sh("mkdir", "-p", f"{layer}/upper", f"{layer}/work", f"{layer}/original")
            sh("mount", "--rbind", ancestor, f"{layer}/original")
            script.append(
                f"below=$(awk '{{print $5}}' /proc/self/mountinfo | grep '^{ancestor}/' || true)")
            sh("mount", "-t", "overlay", "overlay", "-o",
               f"lowerdir={ancestor},upperdir={layer}/upper,workdir={layer}/work", ancestor)
            script.append(
                f"for point in $below; do [ -e \"$point\" ] && "
                f"mount --bind \"{layer}/original/${{point#{ancestor}/}}\" \"$point\" || true; done")
            overlaid.append(ancestor)
        if is_dir:
            sh("mkdir", "-p", target)
        else:
            sh("mkdir", "-p", os.path.dirname(target))
            sh("touch", target)

    # The test's own files first, while everything is writable.
    for source, target in binds:
        ensure(target, os.path.isdir(source))
    for source, target in binds:
        sh("mount", "--bind", source, target)
    # BindReadOnlyPaths= sources may lie under a home that is hidden next: stash them first.
    bound = []
    for index, entry in enumerate(settings["BindReadOnlyPaths"]):
        optional = entry.startswith("-")
        source, _, target = entry.lstrip("-").partition(":")
        target = target or source
        if optional and not os.path.exists(source):
            continue
        place = f"{SCRATCH}/stash{index}"
        if os.path.isdir(source):
            sh("mkdir", "-p", place)
        else:
            sh("touch", place)
        sh("mount", "--bind", source, place)
        bound.append((place, target, os.path.isdir(source)))
    # Writable paths: each its own mount, so that it can stay writable below a read-only /.
    # A `-` path that does not exist is skipped, as systemd does (checked inside: the test's
    # binds may provide it).
    writable = [entry.lstrip("-+") for entry in settings["ReadWritePaths"]]
    if settings.get("StateDirectory"):
        for name in settings["StateDirectory"].split():
            state = f"/var/lib/{name}"
            ensure(state, True)
            writable.append(state)
    for path in writable:
        script.append(f"if [ -e {shlex.quote(path)} ]; then mount --bind {shlex.quote(path)} {shlex.quote(path)}; fi")
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
        if is_dir:
            sh("mkdir", "-p", target)
        else:
            sh("sh", "-c", f"mkdir -p $(dirname {shlex.quote(target)}) && touch {shlex.quote(target)}")
        sh("mount", "--bind", place, target)
        sh("mount", "-o", "remount,bind,ro", target)
    if settings.get("ProtectSystem") == "strict":
        # Every mount read-only (the API file systems aside), then the writable ones back.
        script.append(
            "awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r point; do "
            "case \"$point\" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue;; esac; "
            "mount -o remount,bind,ro \"$point\" 2>/dev/null || true; done")
        for path in writable:
            script.append(f"if [ -e {shlex.quote(path)} ]; then mount -o remount,bind,rw {shlex.quote(path)}; fi")
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
    caps = settings["CapabilityBoundingSet"]
    bounding = ["-all"] + [f"+{cap.lower().removeprefix('cap_')}" for cap in caps]
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
