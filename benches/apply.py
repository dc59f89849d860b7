#!/usr/bin/env python3
"""Apply-time benchmark: cf-allowlist sync against each backend, in fresh network namespaces.

For each backend and list size it runs, 5 times, each in a new namespace with an empty state
directory: a first sync (nothing there yet), a replacing sync (10% of the ranges swapped), and a
no-op sync; and reports the median wall time of each, process start included, and the largest
peak RSS of any process in the runs (cf-allowlist or the firewall tool it starts).

Run as root from the repository: `sudo python3 benches/apply.py` (it builds the release binary).
Only namespaces it creates are touched, and it deletes them. Ranges are IPv6 /64s from the
documentation prefix 2001:db8::/32.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "cf-allowlist")
RUNS = 5
SIZES = [22, 10_000]
BACKENDS = {
    "nftables": '[[backend]]\nkind = "nftables"\n',
    "iptables-nft rules": '[[backend]]\nkind = "iptables"\nvariant = "nft"\nmode = "rules"\n',
    "iptables-nft ipset": '[[backend]]\nkind = "iptables"\nvariant = "nft"\nmode = "ipset"\n',
    "iptables-legacy rules": '[[backend]]\nkind = "iptables"\nvariant = "legacy"\nmode = "rules"\n',
    "iptables-legacy ipset": '[[backend]]\nkind = "iptables"\nvariant = "legacy"\nmode = "ipset"\n',
}


def ranges(count, offset):
    return "".join(f"2001:db8:{(index + offset) // 65536:x}:{(index + offset) % 65536:x}::/64\n" for index in range(count))


def run(netns, args):
    started = time.perf_counter()
    child = subprocess.Popen(["ip", "netns", "exec", netns, BINARY, *args], stdout=subprocess.DEVNULL)
    # wait4 gives this run's own peak RSS (the largest of cf-allowlist and the tools it ran).
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"cf-allowlist {' '.join(args)} failed")
    return elapsed, usage.ru_maxrss


def main():
    if os.geteuid() != 0:
        sys.exit("benches/apply.py needs root (network namespaces)")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    print(f"| backend | ranges | first sync (ms) | replace 10% (ms) | no-op sync (ms) |")
    print(f"| --- | ---: | ---: | ---: | ---: |")
    peak = 0
    for name, backend in BACKENDS.items():
        for size in SIZES:
            times = {"first": [], "replace": [], "noop": []}
            for attempt in range(RUNS):
                netns = f"cfa-bench-{os.getpid()}-{attempt}"
                subprocess.run(["ip", "netns", "add", netns], check=True)
                try:
                    with tempfile.TemporaryDirectory() as work:
                        config = os.path.join(work, "config.toml")
                        with open(config, "w") as file:
                            file.write(backend)
                        first, second = os.path.join(work, "a"), os.path.join(work, "b")
                        with open(first, "w") as file:
                            file.write(ranges(size, 0))
                        with open(second, "w") as file:
                            file.write(ranges(size, max(1, size // 10)))
                        common = ["--config", config, "--state-dir", os.path.join(work, "state")]
                        for step, source in (("first", first), ("replace", second), ("noop", second)):
                            extra = ["--force"] if step == "replace" else []
                            elapsed, rss = run(netns, [*common, "sync", "--source", source, *extra])
                            times[step].append(elapsed * 1000)
                            peak = max(peak, rss)
                finally:
                    subprocess.run(["ip", "netns", "delete", netns], check=True)
            medians = [f"{statistics.median(times[step]):.0f}" for step in ("first", "replace", "noop")]
            print(f"| {name} | {size} | {' | '.join(medians)} |")
    print(f"\nlargest peak RSS of any process: {peak / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
