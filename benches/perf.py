#!/usr/bin/env python3
"""Issue 14's table: cf-allowlist against the bare firewall tool doing the same job.

Run as root from the repository: `sudo python3 benches/perf.py` (builds the release binary).
Options: `--runs N` (repetitions for 22-range rows, default 9), `--big-runs N` (100,000-range
rows, default 5), `--sizes 22,100000`, `--only nftables,iptables,ufw,aws`.

Every row is measured in fresh network namespaces (`ip netns add`, deleted afterwards), each
repetition running ours and the reference alternately (order swapped every repetition), and
reports the median of each and their ratio. Times are wall clock, process start included,
except the first row (CPU time of the process and the children it waited for, from wait4).
Counts (processes spawned, firewall transactions, peak RSS of each child) come from one
separate run with counting wrappers in PATH and `nft monitor` watching, so that the wrappers
never slow the timed runs. Our own peak RSS is sampled from /proc/PID/status (VmHWM, the
kernel's high-water mark, read until the process exits).

Only documentation ranges are used (198.51.100.0/24 split up, 2001:db8::/32 /64s), from local
files: nothing leaves the machine. `--family v4` makes the 100,000-range list IPv4 /32s of
198.18.0.0/15, RFC 2544's benchmarking range (100,000 do not fit in the documentation ranges);
they only fill sets, no packet is sent. `--scattered` spreads the big list over its range. ufw runs in a mount namespace over copies of its files
(the host's /etc/ufw is never touched). The ufw and AWS rows are skipped, saying so, when
this binary does not accept `--backend ufw` / `--backend aws`.
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "cf-allowlist")
TOOLS = [
    "nft", "iptables", "ip6tables", "iptables-save", "ip6tables-save", "iptables-restore",
    "ip6tables-restore", "iptables-nft", "ip6tables-nft", "iptables-nft-save",
    "ip6tables-nft-save", "iptables-nft-restore", "ip6tables-nft-restore", "iptables-legacy",
    "ip6tables-legacy", "iptables-legacy-save", "ip6tables-legacy-save",
    "iptables-legacy-restore", "ip6tables-legacy-restore", "ipset", "ufw",
]
# Lists of 100,000 ranges are ~2.5 MB: above the default 1 MiB source cap.
LIMITS = "max_body_bytes = 67108864\n"
NFT_CONFIG = LIMITS + '[[backend]]\nkind = "nftables"\n'
IPTABLES_CONFIG = LIMITS + '[[backend]]\nkind = "iptables"\nvariant = "nft"\nmode = "{mode}"\n'
ROWS = []
# The host of issue 19's table: Debian's stock ruleset with a drop policy.
DROP_HOST = """table inet filter {
  chain input {
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iif lo accept
  }
}
"""


SCATTERED = False
# Which family carries the big list: "v6" (2001:db8::/32 /64s) or "v4" (198.18.0.0/15 /32s).
FAMILY = "v6"
# RFC 2544's benchmarking range: 131,072 addresses, room for 100,000 /32s and the replaces'
# shifts; the validation accepts it (it is neither private nor reserved), and no packet is
# ever sent to or from it.
BENCH_V4 = 0xC6120000  # 198.18.0.0


def ranges(count, offset=0, small_offset=0):
    """`count` ranges: a few (at most 15, shifted by `small_offset`) of the other family, then
    the big family's ranges shifted by `offset`. IPv6 (the default): IPv4 /29s of
    198.51.100.0/24, then /64s from 2001:db8::/32, adjacent or with `--scattered` spread over
    the whole /32 (no two adjacent, so nft merges none). With `--family v4`: IPv6 /48s of
    2001:db8::/32, then /32s from 198.18.0.0/15 (RFC 2544's benchmarking range: 100,000 IPv4
    ranges do not fit in the documentation ranges), adjacent or with `--scattered` permuted
    over the whole /15."""
    small = min(15, count)
    if FAMILY == "v4":
        lines = [f"2001:db8:{index + small_offset:x}::/48" for index in range(small)]
        for i in range(count - small):
            host = i + offset
            if SCATTERED:
                # An odd multiplier permutes the 17-bit host numbers.
                host = (host * 40503) % (1 << 17)
            address = BENCH_V4 + host
            lines.append(f"{address >> 24}.{(address >> 16) & 255}.{(address >> 8) & 255}.{address & 255}/32")
        return "\n".join(lines) + "\n"
    lines = [f"198.51.100.{(index + small_offset) * 8}/29" for index in range(small)]
    for i in range(count - small):
        subnet = i + offset
        if SCATTERED:
            # An odd multiplier permutes the 32-bit subnet numbers; doubling keeps gaps.
            subnet = (subnet * 40503 * 2) % (1 << 32)
        lines.append(f"2001:db8:{subnet // 65536:x}:{subnet % 65536:x}::/64")
    return "\n".join(lines) + "\n"


class Namespace:
    """A fresh network namespace, deleted on exit."""

    counter = 0

    def __enter__(self):
        Namespace.counter += 1
        self.name = f"cfa-perf-{os.getpid()}-{Namespace.counter}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"], check=True)
        return self

    def __exit__(self, *_):
        subprocess.run(["ip", "netns", "delete", self.name], check=True)

    def prefix(self):
        return ["ip", "netns", "exec", self.name]


def sample_hwm(pid, result):
    """Reads VmHWM of `pid` until it is gone; keeps the largest (KiB)."""
    path = f"/proc/{pid}/status"
    while True:
        try:
            with open(path) as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        result[0] = max(result[0], int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            return
        except ValueError:
            pass
        time.sleep(0.001)


def timed(command, env=None, stdin=None, check=True, hwm=False):
    """Runs `command`; returns (wall seconds, cpu seconds incl. waited-for children,
    largest RSS of it and its children KiB, own VmHWM KiB or 0)."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE if check else subprocess.DEVNULL,
                             stdin=stdin, env=env)
    own = [0]
    sampler = None
    if hwm:
        sampler = threading.Thread(target=sample_hwm, args=(own_pid(child.pid), own))
        sampler.start()
    stderr = child.stderr.read() if check else b""
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if sampler:
        sampler.join()
    if check and os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(command)}\n{stderr.decode(errors='replace')}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, own[0]


def own_pid(pid):
    """`ip netns exec` execs its command, so the pid is ours once it has done so."""
    return pid


def median(values):
    return statistics.median(values) if values else float("nan")


def row(figure, ours, reference, unit, target="", note=""):
    ratio = ours / reference if reference else float("nan")
    ROWS.append((figure, ours, reference, ratio, unit, target, note))
    scale = 1000 if unit == "ms" else 1
    print(f"| {figure} | {ours * scale:.1f} {unit} | {reference * scale:.1f} {unit} | {ratio:.2f}x | {target} | {note} |", flush=True)


def note(text):
    print(f"| {text} | | | | | |", flush=True)


class Work:
    """A temporary folder with a config, source lists and a state directory."""

    def __init__(self, config):
        self.dir = tempfile.mkdtemp(prefix="cfa-perf-")
        self.config = os.path.join(self.dir, "config.toml")
        with open(self.config, "w") as file:
            file.write(config)
        self.state = os.path.join(self.dir, "state")

    def source(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as file:
            file.write(text)
        return path

    def sync(self, source, *extra):
        return [BINARY, "--config", self.config, "--state-dir", self.state, "sync", "--source", source, *extra]

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def wrappers(folder):
    """PATH wrappers that log every tool run and its own peak RSS, then run the real tool."""
    os.makedirs(folder, exist_ok=True)
    log = os.path.join(folder, "calls.log")
    for tool in TOOLS:
        real = shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")
        if not real:
            continue
        with open(os.path.join(folder, tool), "w") as file:
            file.write(f'#!/bin/sh\nexec /usr/bin/time -a -o {log} -f "{tool} %M" {real} "$@"\n')
        os.chmod(os.path.join(folder, tool), 0o755)
    return log


def counted(netns, command, folder):
    """Runs `command` in `netns` once with the wrappers and `nft monitor`; returns (processes by
    tool, largest child RSS by tool KiB, nft transactions, own VmHWM KiB)."""
    log = wrappers(folder)
    open(log, "w").close()
    monitor_out = os.path.join(folder, "monitor.txt")
    with open(monitor_out, "w") as out:
        monitor = subprocess.Popen([*netns.prefix(), "stdbuf", "-oL", "nft", "monitor"], stdout=out, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    env = dict(os.environ, PATH=f"{folder}:/usr/sbin:/usr/bin:/sbin:/bin")
    generation_before = generation(netns)
    _, _, _, hwm = timed([*netns.prefix(), *command], env=env, hwm=True)
    committed = generation(netns) - generation_before
    # nft monitor prints every element it saw added (100,000 lines for a big set) before the
    # generation line: wait until its output stops growing.
    size, still = -1, 0
    for _ in range(600):
        time.sleep(0.1)
        now = os.path.getsize(monitor_out)
        still = still + 1 if now == size else 0
        size = now
        if still >= 5:
            break
    monitor.send_signal(signal.SIGTERM)
    monitor.wait()
    processes, peaks = {}, {}
    with open(log) as file:
        for line in file:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                processes[parts[0]] = processes.get(parts[0], 0) + 1
                peaks[parts[0]] = max(peaks.get(parts[0], 0), int(parts[1]))
    with open(monitor_out) as file:
        seen = sum(1 for line in file if line.startswith("# new generation"))
    return processes, peaks, (committed, seen), hwm


GENERATION = r"""
import socket, struct
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
s.send(struct.pack("IHHIIBBH", 20, (10 << 8) | 16, 1, 1, 0, 0, 0, 0))
data = s.recv(65536)
offset = 20
while offset + 4 <= len(data):
    length, kind = struct.unpack_from("HH", data, offset)
    if kind & 0x3FFF == 1:
        print(struct.unpack_from(">I", data, offset + 4)[0])
        break
    offset += (length + 3) & ~3
"""


def generation(netns):
    """The ruleset generation id of `netns`: +1 per committed nftables transaction (what
    `nft monitor` prints as "# new generation"; iptables-nft's restores count too)."""
    out = subprocess.run([*netns.prefix(), "python3", "-c", GENERATION], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def describe_counts(counts):
    processes, peaks, transactions, hwm = counts
    spawned = sum(processes.values())
    each = ", ".join(f"{tool}×{n} (peak {peaks[tool] / 1024:.1f} MiB)" for tool, n in sorted(processes.items()))
    committed, seen = transactions
    monitor = "" if seen == committed else f" (`nft monitor` printed {seen}: it drops events when 100,000 elements flood it)"
    return f"{spawned} processes [{each}]; {committed} nft transactions{monitor}; our peak RSS {hwm / 1024:.1f} MiB"


def note_counts(work, source, backend):
    """Notes the commands a first apply and then a no-op sync of `source` run, from no state."""
    shutil.rmtree(work.state, ignore_errors=True)
    with Namespace() as netns:
        first_counts = counted(netns, work.sync(source), os.path.join(work.dir, "w1"))
        noop_counts = counted(netns, work.sync(source), os.path.join(work.dir, "w2"))
    note(f"first apply, {backend}, 22: {describe_counts(first_counts)}")
    note(f"no-op, {backend}, 22: {describe_counts(noop_counts)}")


def fresh_state(work):
    """Deletes the last run's state directory and syncs the file system, so that the timed
    first sync does not commit the harness's deletions (its first fsync commits the whole
    journal transaction: up to 0.6 ms for a 22-range run's five files, more for a 100,000-range
    run's snapshots). A real first sync finds no state directory."""
    shutil.rmtree(work.state, ignore_errors=True)
    os.sync()


def bare_nft(netns_ruleset):
    """A reference: `nft -f FILE` in a fresh namespace."""
    with Namespace() as netns:
        return timed([*netns.prefix(), "nft", "-f", netns_ruleset])


def nftables_rows(args):
    runs = args.runs
    # Row 1 and 3: 22 ranges.
    work = Work(NFT_CONFIG)
    try:
        source = work.source("a", ranges(22))
        noop_cpu, true_cpu, first, bare, noop_wall = [], [], [], [], []
        ruleset = os.path.join(work.dir, "ruleset.nft")
        for attempt in range(runs):
            for turn in ((0, 1) if attempt % 2 == 0 else (1, 0)):
                if turn == 0:
                    fresh_state(work)
                    with Namespace() as netns:
                        first.append(timed([*netns.prefix(), *work.sync(source)])[0])
                        if not os.path.exists(ruleset):
                            with open(ruleset, "w") as file:
                                subprocess.run([*netns.prefix(), "nft", "list", "ruleset"], stdout=file, check=True)
                        wall, cpu, _, _ = timed([*netns.prefix(), *work.sync(source)])
                        noop_cpu.append(cpu)
                        noop_wall.append(wall)
                else:
                    with Namespace() as netns:
                        bare.append(timed([*netns.prefix(), "nft", "-f", ruleset])[0])
                        true_cpu.append(timed([*netns.prefix(), "true"])[1])
        row("no-op sync, nftables, 22 ranges, CPU incl. children", median(noop_cpu), median(true_cpu), "ms", "≤ 25 ms")
        first_med = median(first)
        row("first apply, nftables, 22 ranges", first_med, median(bare), "ms", "≤ 1.5x")
        note_counts(work, source, "nftables")
        ufw_reference(args, source, noop_wall)
    finally:
        work.close()
    for size in args.sizes:
        if size > 22:
            nftables_big(args, size)


def ufw_sandbox(work_dir):
    """Copies of ufw's files for a mount namespace; returns the shell prologue that binds them."""
    # Under /root, not /tmp: ufw complains about world-writable folders above its files.
    sandbox = tempfile.mkdtemp(prefix=".cfa-perf-ufw-", dir="/root")
    subprocess.run(["cp", "-a", "/etc/ufw", f"{sandbox}/etc-ufw"], check=True)
    subprocess.run(["cp", "-a", "/usr/lib/ufw", f"{sandbox}/lib-ufw"], check=True)
    subprocess.run(["cp", "-a", "/etc/default/ufw", f"{sandbox}/default-ufw"], check=True)
    os.makedirs(f"{sandbox}/run")
    return sandbox, (
        f"mount --bind {sandbox}/run /run; mount --bind {sandbox}/etc-ufw /etc/ufw; "
        f"mount --bind {sandbox}/lib-ufw /usr/lib/ufw; mount --bind {sandbox}/default-ufw /etc/default/ufw; "
        "ip link set lo up; ufw --force enable >/dev/null; "
    )


def ufw_reference(args, source, noop_wall):
    """Row 2: our no-op against re-running `ufw allow` for each range (what scripts do)."""
    if shutil.which("ufw") is None:
        note("no-op vs `ufw allow`: skipped, ufw is not installed")
        return
    with open(source) as file:
        listed = [line.strip() for line in file if line.strip()]
    sandbox, prologue = ufw_sandbox(os.path.dirname(source))
    allow = "; ".join(f"ufw allow proto tcp from {net} to any port 80,443 >/dev/null" for net in listed)
    times = []
    try:
        for _ in range(max(3, args.runs // 3)):
            child = subprocess.Popen(["unshare", "--net", "--mount", "--propagation", "private", "bash", "-c",
                                      f"{prologue} {allow}; s=$(date +%s%N); {allow}; echo $(( $(date +%s%N) - s ))"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            out, _ = child.communicate()
            times.append(int(out.split()[-1]) / 1e9)
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)
    row("no-op sync, nftables, 22 ranges, vs re-running `ufw allow` for each", median(noop_wall), median(times), "ms",
        "≤ 0.01x (≥ 100x faster)", f"{median(times) / median(noop_wall):.0f}x faster")


def nftables_big(args, size):
    runs = args.big_runs
    work = Work(NFT_CONFIG)
    try:
        base = work.source("a", ranges(size))
        # Each replace also moves one IPv4 /29 (one out, one in).
        one = work.source("b", ranges(size, size // 100, 1))
        ten = work.source("c", ranges(size, size // 100 + size // 10, 2))
        ruleset = os.path.join(work.dir, "ruleset.nft")
        results = {"first": [], "noop": [], "status": [], "replace 1%": [], "replace 10%": [], "bare": [], "rss": [],
                   "noop moved": [], "dry run": [], "doctor": [], "rollback": []}
        host = work.source("host.nft", DROP_HOST)
        for attempt in range(runs):
            for turn in ((0, 1) if attempt % 2 == 0 else (1, 0)):
                if turn == 0:
                    fresh_state(work)
                    with Namespace() as netns:
                        # The host: a policy-drop `inet filter input`, as Debian ships.
                        subprocess.run([*netns.prefix(), "nft", "-f", host], check=True)
                        wall, _, _, hwm = timed([*netns.prefix(), *work.sync(base)], hwm=True)
                        results["first"].append(wall)
                        results["rss"].append(hwm)
                        if not os.path.exists(ruleset):
                            with open(ruleset, "w") as file:
                                subprocess.run([*netns.prefix(), "nft", "list", "ruleset"], stdout=file, check=True)
                        results["noop"].append(timed([*netns.prefix(), *work.sync(base)])[0])
                        status = [BINARY, "--config", work.config, "--state-dir", work.state, "status"]
                        results["status"].append(timed([*netns.prefix(), *status])[0])
                        wall, _, _, hwm = timed([*netns.prefix(), *work.sync(one, "--force")], hwm=True)
                        results["replace 1%"].append(wall)
                        results["rss"].append(hwm)
                        wall, _, _, hwm = timed([*netns.prefix(), *work.sync(ten, "--force")], hwm=True)
                        results["replace 10%"].append(wall)
                        results["rss"].append(hwm)
                        # Another writer's transaction: the stored proof no longer holds, and
                        # the no-op reads and judges the firewall (then records a new proof).
                        subprocess.run([*netns.prefix(), "nft", "add", "table", "inet", "other"], check=True)
                        results["noop moved"].append(timed([*netns.prefix(), *work.sync(ten)])[0])
                        results["dry run"].append(timed([*netns.prefix(), *work.sync(ten, "--dry-run")])[0])
                        doctor = [BINARY, "--config", work.config, "--state-dir", work.state, "doctor"]
                        results["doctor"].append(timed([*netns.prefix(), *doctor], check=False)[0])
                        rollback = [BINARY, "--config", work.config, "--state-dir", work.state, "rollback", "--force"]
                        results["rollback"].append(timed([*netns.prefix(), *rollback])[0])
                else:
                    results["bare"].append(bare_nft(ruleset)[0])
        bare = median(results["bare"])
        row(f"first sync, nftables, {size} ranges (ref: bare `nft -f` of the ruleset it leaves)", median(results["first"]), bare, "ms", "≤ 1.2x")
        row(f"replace 1% of {size}", median(results["replace 1%"]), bare, "ms", "≤ 0.5x")
        row(f"replace 10% of {size}", median(results["replace 10%"]), bare, "ms", "≤ 1.2x")
        row(f"no-op, {size}", median(results["noop"]), bare, "ms", "≤ 0.05x")
        row(f"status, {size}", median(results["status"]), bare, "ms", "≤ 1.0x")
        row(f"no-op after another writer's transaction (no proof: full reading), {size}", median(results["noop moved"]), bare, "ms")
        row(f"sync --dry-run, {size}", median(results["dry run"]), bare, "ms", "< 1.0x")
        row(f"doctor, {size}", median(results["doctor"]), bare, "ms", "< 1.0x")
        row(f"rollback (a 10% change back), {size}", median(results["rollback"]), bare, "ms", "< 1.0x")
        ours_rss = max(results["rss"]) / 1024
        shutil.rmtree(work.state, ignore_errors=True)
        with Namespace() as netns:
            subprocess.run([*netns.prefix(), "nft", "-f", host], check=True)
            # Our process without a backend: the same list, dry run with no backend configured.
            plain = Work(LIMITS)
            try:
                _, _, _, hwm_plain = timed([*netns.prefix(), BINARY, "--config", plain.config, "--state-dir", plain.state,
                                            "sync", "--dry-run", "--source", base], hwm=True)
            finally:
                plain.close()
            first_counts = counted(netns, work.sync(base), os.path.join(work.dir, "w1"))
            noop_counts = counted(netns, work.sync(base), os.path.join(work.dir, "w2"))
            replace_counts = counted(netns, work.sync(ten, "--force"), os.path.join(work.dir, "w3"))
        row(f"peak RSS of cf-allowlist at {size} (nftables; ref: same list, dry run, no backend)", ours_rss, hwm_plain / 1024, "MiB", "≤ 64 MiB")
        note(f"first sync, {size}: {describe_counts(first_counts)}")
        note(f"no-op, {size}: {describe_counts(noop_counts)}")
        note(f"replace 10%, {size}: {describe_counts(replace_counts)}")
    finally:
        work.close()


def iptables_rows(args):
    for mode in ("rules", "ipset"):
        work = Work(IPTABLES_CONFIG.format(mode=mode))
        try:
            source = work.source("a", ranges(22))
            first, noop, bare = [], [], []
            scripts = None
            for attempt in range(args.runs):
                for turn in ((0, 1) if attempt % 2 == 0 else (1, 0)):
                    if turn == 0:
                        fresh_state(work)
                        with Namespace() as netns:
                            first.append(timed([*netns.prefix(), *work.sync(source)])[0])
                            if scripts is None:
                                scripts = iptables_dump(netns, work.dir, mode)
                            noop.append(timed([*netns.prefix(), *work.sync(source)])[0])
                    else:
                        with Namespace() as netns:
                            bare.append(iptables_bare(netns, scripts, mode))
            row(f"first apply, iptables ({mode}), 22 ranges (ref: {'ipset restore + ' if mode == 'ipset' else ''}iptables-restore + ip6tables-restore)",
                median(first), median(bare), "ms", "≤ 1.5x")
            row(f"no-op sync, iptables ({mode}), 22 ranges (ref: the same bare restore)", median(noop), median(bare), "ms")
            note_counts(work, source, f"iptables ({mode})")
        finally:
            work.close()


def iptables_dump(netns, folder, mode):
    """The restore scripts that rebuild what our first sync left."""
    scripts = {}
    for tool in ("iptables-nft-save", "ip6tables-nft-save"):
        out = subprocess.run([*netns.prefix(), tool, "-t", "filter"], capture_output=True, text=True, check=True).stdout
        path = os.path.join(folder, f"{tool}.rules")
        with open(path, "w") as file:
            file.write(out)
        scripts[tool] = path
    if mode == "ipset":
        out = subprocess.run([*netns.prefix(), "ipset", "save"], capture_output=True, text=True, check=True).stdout
        path = os.path.join(folder, "ipset.save")
        with open(path, "w") as file:
            file.write(out)
        scripts["ipset"] = path
    return scripts


def iptables_bare(netns, scripts, mode):
    """The reference: the same restores, in one `ip netns exec` (as ours runs in one)."""
    commands = []
    if mode == "ipset":
        commands.append(f"ipset restore < {scripts['ipset']}")
    commands.append(f"iptables-nft-restore --noflush < {scripts['iptables-nft-save']}")
    commands.append(f"ip6tables-nft-restore --noflush < {scripts['ip6tables-nft-save']}")
    return timed([*netns.prefix(), "sh", "-c", " && ".join(commands)])[0]


def accepts_backend(kind):
    probe = subprocess.run([BINARY, "sync", "--dry-run", "--backend", kind, "--source", "builtin"],
                           capture_output=True, text=True)
    return "invalid value" not in probe.stderr


def ufw_rows(args):
    if not accepts_backend("ufw"):
        note("ufw rows: skipped, `--backend ufw` is not built into this binary")
        return
    # 22 and 1,000 ranges (the sizes), as far as --sizes asks for them.
    for size in [size for size in (22, 1000) if size in args.sizes or (size == 1000 and 100000 in args.sizes)]:
        work = Work('[[backend]]\nkind = "ufw"\n')
        try:
            source = work.source("a", ranges(size))
            listed = [line for line in ranges(size).split("\n") if line]
            allow = "; ".join(f"ufw allow proto tcp from {net} to any port 80,443 >/dev/null" for net in listed)
            ours_first, ours_noop, reference = [], [], []
            for attempt in range(max(3, args.runs // 3)):
                for turn in ((0, 1) if attempt % 2 == 0 else (1, 0)):
                    # A fresh copy of ufw's files for every run: what one run left (our rules,
                    # or the reference's) must not make the next one a no-op.
                    sandbox, prologue = ufw_sandbox(work.dir)
                    shutil.rmtree(work.state, ignore_errors=True)
                    sync = " ".join(work.sync(source))
                    if turn == 0:
                        script = (f"{prologue} s=$(date +%s%N); {sync} >/dev/null; m=$(date +%s%N); {sync} >/dev/null; "
                                  "e=$(date +%s%N); echo $((m - s)) $((e - m))")
                    else:
                        script = f"{prologue} {allow}; s=$(date +%s%N); {allow}; echo $(( $(date +%s%N) - s ))"
                    # Through a file: 1,000 `ufw allow` commands exceed one argument's size limit.
                    script_file = os.path.join(work.dir, "run.sh")
                    with open(script_file, "w") as handle:
                        handle.write(script)
                    out = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "bash", script_file],
                                         capture_output=True, text=True).stdout.split()
                    shutil.rmtree(sandbox, ignore_errors=True)
                    if turn == 0:
                        ours_first.append(int(out[-2]) / 1e9)
                        ours_noop.append(int(out[-1]) / 1e9)
                    else:
                        reference.append(int(out[-1]) / 1e9)
            row(f"no-op sync, ufw, {size} ranges (ref: re-running `ufw allow` for each)", median(ours_noop), median(reference), "ms", "≤ 0.01x",
                f"{median(reference) / median(ours_noop):.0f}x faster")
            row(f"first sync, ufw, {size} ranges (ref: re-running `ufw allow` for each)", median(ours_first), median(reference), "ms")
        finally:
            work.close()


def aws_rows(args):
    if not accepts_backend("aws"):
        note("AWS rows: skipped, `--backend aws` is not built into this binary")
        return
    # moto from the test venv (tests/run makes it), else from PATH.
    venv = os.environ.get("CF_TEST_VENV", os.path.join(ROOT, "target", "test-venv"))
    moto = os.path.join(venv, "bin", "moto_server")
    if not os.path.exists(moto):
        moto = shutil.which("moto_server")
    if moto is None:
        note("AWS rows: skipped, moto_server is not installed (`tests/run` puts it in target/test-venv)")
        return
    python = os.path.join(os.path.dirname(moto), "python")
    import json
    import socket
    import urllib.request

    work = Work("")
    recording = os.path.join(work.dir, "moto.log")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, MOTO_ENABLE_RECORDING="True", MOTO_RECORDER_FILEPATH=recording)
    server = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        aws_env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                       AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1")
        # A security group to keep open, made through moto's API with the venv's boto3.
        group = subprocess.run(
            [python, "-c", "import boto3, sys; ec2 = boto3.client('ec2', endpoint_url=sys.argv[1]); "
             "print(ec2.create_security_group(GroupName='web', Description='bench')['GroupId'])", endpoint],
            env=aws_env, capture_output=True, text=True, check=True).stdout.strip()
        with open(work.config, "w") as file:
            file.write(f'[[backend]]\nkind = "aws"\nsecurity_group_ids = ["{group}"]\n')
        source = work.source("a", ranges(22))

        def calls():
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/recorder/stop-recording", method="POST"))
            entries = []
            if os.path.exists(recording):
                with open(recording) as file:
                    entries = [json.loads(line) for line in file if line.strip()]
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/recorder/reset-recording", method="POST"))
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/recorder/start-recording", method="POST"))
            actions = []
            for entry in entries:
                body = entry.get("body") or ""
                if entry.get("body_encoded"):
                    import base64
                    body = base64.b64decode(body).decode("utf-8", "replace")
                action = next((part.split("=", 1)[1] for part in str(body).split("&") if part.startswith("Action=")), None)
                if action:
                    # moto's own API calls (the recorder's) carry no EC2 action.
                    actions.append(action)
            return actions

        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/recorder/start-recording", method="POST"))
        calls()  # forget the set-up's own calls (the group's creation)
        first = subprocess.run(work.sync(source), env=aws_env, capture_output=True, text=True)
        first_calls = calls()
        noop = subprocess.run(work.sync(source), env=aws_env, capture_output=True, text=True)
        noop_calls = calls()
        if first.returncode != 0 or noop.returncode != 0:
            note(f"AWS rows: the sync failed ({first.stderr.strip()[:200]} {noop.stderr.strip()[:200]}); configure the group in benches/perf.py")
            return
        writes = [action for action in noop_calls if not action.startswith("Describe") and not action.startswith("Get")]
        note(f"AWS (moto), 22 ranges: first sync {len(first_calls)} calls {sorted(set(first_calls))}; "
             f"no-op {len(noop_calls)} calls, {len(writes)} write calls (target 0)")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()
        work.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--big-runs", type=int, default=5)
    parser.add_argument("--sizes", default="22,100000")
    parser.add_argument("--only", default="nftables,iptables,ufw,aws")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--scattered", action="store_true", help="the big family's ranges spread over its whole range")
    parser.add_argument("--family", choices=["v6", "v4"], default="v6",
                        help="the family of the 100,000-range list: v6 (2001:db8::/32 /64s) or v4 (198.18.0.0/15 /32s)")
    args = parser.parse_args()
    global SCATTERED, FAMILY
    SCATTERED = args.scattered
    FAMILY = args.family
    args.sizes = [int(size) for size in args.sizes.split(",")]
    if os.geteuid() != 0:
        sys.exit("benches/perf.py needs root (network namespaces)")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--features", "full"], cwd=ROOT, check=True)
    with open("/proc/loadavg") as file:
        load = file.read().split()[:3]
    print(f"load average at start: {' '.join(load)}; {os.cpu_count()} cores; big list: {FAMILY}"
          f"{', scattered' if SCATTERED else ', adjacent'}; "
          f"{subprocess.run(['nft', '--version'], capture_output=True, text=True).stdout.strip()}")
    print("| figure | ours | reference | ratio | target | note |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    only = args.only.split(",")
    if "nftables" in only:
        nftables_rows(args)
    if "iptables" in only:
        iptables_rows(args)
    if "ufw" in only:
        ufw_rows(args)
    if "aws" in only:
        aws_rows(args)
    with open("/proc/loadavg") as file:
        print(f"load average at end: {' '.join(file.read().split()[:3])}")


if __name__ == "__main__":
    main()
