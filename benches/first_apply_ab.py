#!/usr/bin/env python3
"""The 22-range first apply of several cf-allowlist binaries against each other and a bare
`nft -f`, interleaved: for each round, a fresh state directory and network namespace for each
binary in turn (the order rotates), then the bare load in its own. Medians. Run as root:

    sudo python3 benches/first_apply_ab.py --runs 60 OLD_BINARY target/release/cf-allowlist

perf.py's row measures one binary at a time, minutes apart from any other; this compares
builds under the same load (the bare reference moves by a millisecond between minutes)."""

import argparse
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import perf  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("binaries", nargs="+")
    args = parser.parse_args()
    work = perf.Work(perf.NFT_CONFIG)
    try:
        source = work.source("a", perf.ranges(22))
        ruleset = os.path.join(work.dir, "ruleset.nft")
        times = {binary: [] for binary in args.binaries}
        bare = []
        for attempt in range(args.runs):
            turn = attempt % len(args.binaries)
            for binary in args.binaries[turn:] + args.binaries[:turn]:
                perf.fresh_state(work)
                with perf.Namespace() as netns:
                    command = [binary, "--config", work.config, "--state-dir", work.state, "sync", "--source", source]
                    times[binary].append(perf.timed([*netns.prefix(), *command])[0])
                    if not os.path.exists(ruleset):
                        with open(ruleset, "w") as file:
                            subprocess.run([*netns.prefix(), "nft", "list", "ruleset"], stdout=file, check=True)
            with perf.Namespace() as netns:
                bare.append(perf.timed([*netns.prefix(), "nft", "-f", ruleset])[0])
        reference = statistics.median(bare)
        print(f"| binary | first apply, 22 ranges | ratio to bare `nft -f` ({reference * 1000:.2f} ms) |")
        print("| --- | ---: | ---: |")
        for binary in args.binaries:
            ours = statistics.median(times[binary])
            print(f"| {binary} | {ours * 1000:.2f} ms | {ours / reference:.2f}x |")
    finally:
        work.close()


if __name__ == "__main__":
    main()
