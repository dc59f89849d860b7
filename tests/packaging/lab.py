#!/usr/bin/env python3
"""A lab of origin hosts for the packaging tests, each a network namespace of its own, and one
client namespace that connects to them from allowed and non-allowed documentation addresses
(the Python twin of tests/support/lab.rs).

    client (PREFIX-c)  lo: 198.51.100.10, 203.0.113.10, 2001:db8:cf::10, 2001:db8:bad::10
      v<i> 192.0.2.<100+i>, fe80::2  ── veth ──  eth0 192.0.2.<i>, 2001:db8:1::<i>, fe80::1
                                                 host PREFIX-h<i>: Debian-like nftables
                                                 (policy drop, logging what it drops),
                                                 listeners on 80 and 443

Commands (as root): up PREFIX DIR N | down PREFIX DIR | probe PREFIX I open|closed
  | serve (inside a host namespace) | connect (inside the client namespace).
Everything it creates is named after PREFIX, and `down` deletes it; listener PIDs are kept in
DIR/listeners.pids and ended one by one.
"""

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time

ALLOWED = ["198.51.100.10", "2001:db8:cf::10"]
NOT_ALLOWED = ["203.0.113.10", "2001:db8:bad::10"]
PORTS = [80, 443]
RULESET = """flush ruleset
table inet filter {
  chain input {
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iif lo accept
    meta l4proto ipv6-icmp accept
    log prefix "lab input drop: "
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
  }
  chain output {
    type filter hook output priority filter; policy accept;
  }
}
"""


def sh(*args, ns=None, stdin=None):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    subprocess.run(cmd, check=True, input=stdin, text=True)


def host_addresses(index):
    return "192.0.2.%d" % index, "2001:db8:1::%d" % index


def up(prefix, workdir, count):
    client = prefix + "-c"
    sh("ip", "netns", "add", client)
    for name in ("net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"):
        sh("sysctl", "-qw", name + "=0", ns=client)
    sh("ip", "link", "set", "lo", "up", ns=client)
    for address in ["198.51.100.10/32", "203.0.113.10/32"]:
        sh("ip", "addr", "add", address, "dev", "lo", ns=client)
    for address in ["2001:db8:cf::10/128", "2001:db8:bad::10/128"]:
        sh("ip", "-6", "addr", "add", address, "dev", "lo", ns=client)
    pids = []
    for index in range(1, count + 1):
        host = "%s-h%d" % (prefix, index)
        v4, v6 = host_addresses(index)
        peer = "192.0.2.%d" % (100 + index)
        sh("ip", "netns", "add", host)
        for name in ("net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"):
            sh("sysctl", "-qw", name + "=0", ns=host)
        sh("ip", "link", "add", "eth0", "netns", host, "type", "veth", "peer", "name", "v%d" % index, "netns", client)
        sh("ip", "link", "set", "lo", "up", ns=host)
        sh("ip", "addr", "add", v4 + "/32", "peer", peer + "/32", "dev", "eth0", ns=host)
        sh("ip", "-6", "addr", "add", v6 + "/128", "dev", "eth0", "nodad", ns=host)
        sh("ip", "-6", "addr", "add", "fe80::1/64", "dev", "eth0", "nodad", ns=host)
        sh("ip", "link", "set", "eth0", "up", ns=host)
        sh("ip", "route", "add", "default", "via", peer, "dev", "eth0", ns=host)
        sh("ip", "-6", "route", "add", "default", "via", "fe80::2", "dev", "eth0", ns=host)
        link = "v%d" % index
        sh("ip", "addr", "add", peer + "/32", "peer", v4 + "/32", "dev", link, ns=client)
        sh("ip", "-6", "addr", "add", "fe80::2/64", "dev", link, "nodad", ns=client)
        sh("ip", "link", "set", link, "up", ns=client)
        sh("ip", "-6", "route", "add", v6 + "/128", "via", "fe80::1", "dev", link, ns=client)
        sh("nft", "-f", "-", ns=host, stdin=RULESET)
        listener = subprocess.Popen(
            ["ip", "netns", "exec", host, sys.executable, os.path.abspath(__file__), "serve"],
            stdin=subprocess.DEVNULL, start_new_session=True)
        pids.append(listener.pid)
    with open(os.path.join(workdir, "listeners.pids"), "w") as handle:
        handle.write("".join("%d\n" % pid for pid in pids))
    # The listeners bind within a second; wait until each answers on its own loopback (the
    # firewall lets loopback through).
    deadline = time.time() + 10
    while time.time() < deadline:
        if all(listening(prefix, index) for index in range(1, count + 1)):
            return
        time.sleep(0.1)
    sys.exit("lab: listeners did not come up")


def listening(prefix, index):
    result = subprocess.run(
        ["ip", "netns", "exec", "%s-h%d" % (prefix, index), sys.executable, os.path.abspath(__file__),
         "connect", json.dumps([["::1", "::1", port] for port in PORTS])],
        capture_output=True, text=True, check=True)
    return all(json.loads(result.stdout))


def down(prefix, workdir):
    pidfile = os.path.join(workdir, "listeners.pids")
    if os.path.exists(pidfile):
        for line in open(pidfile):
            try:
                os.kill(int(line), signal.SIGTERM)
            except ProcessLookupError:
                pass
        os.unlink(pidfile)
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    for line in names.splitlines():
        name = line.split()[0] if line.split() else ""
        if name == prefix + "-c" or name.startswith(prefix + "-h"):
            subprocess.run(["ip", "netns", "delete", name], check=False)


def serve():
    listeners = []
    for port in PORTS:
        listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(("::", port))
        listener.listen(64)
        listeners.append(listener)
    import selectors
    selector = selectors.DefaultSelector()
    for listener in listeners:
        selector.register(listener, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            connection, _ = key.fileobj.accept()
            connection.close()


def connect_one(source, destination, port):
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as connection:
        connection.settimeout(1.0)
        connection.bind((source, 0))
        try:
            connection.connect((destination, port))
            return True
        except OSError:
            return False


def connect(pairs):
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda pair: connect_one(*pair), pairs))
    print(json.dumps(results))


def probe(prefix, index, expected):
    """Connects from every client source to both ports of host INDEX, over IPv4 and IPv6;
    allowed sources must get through iff EXPECTED is `open`, the others never."""
    v4, v6 = host_addresses(index)
    pairs = []
    for source in ALLOWED + NOT_ALLOWED:
        for port in PORTS:
            pairs.append([source, v6 if ":" in source else v4, port])
    result = subprocess.run(
        ["ip", "netns", "exec", prefix + "-c", sys.executable, os.path.abspath(__file__), "connect",
         json.dumps(pairs)], capture_output=True, text=True, check=True)
    outcomes = json.loads(result.stdout)
    wrong = []
    for (source, destination, port), connected in zip(pairs, outcomes):
        should = expected == "open" and source in ALLOWED
        if connected != should:
            wrong.append("%s -> [%s]:%d %s (expected %s)" % (
                source, destination, port, "connected" if connected else "blocked",
                "connected" if should else "blocked"))
    if wrong:
        sys.exit("probe h%d %s: FAILED\n  %s" % (index, expected, "\n  ".join(wrong)))
    print("probe h%d %s: ok (%d connections: %d through, %d blocked)" % (
        index, expected, len(pairs), sum(outcomes), len(pairs) - sum(outcomes)))


def main():
    command = sys.argv[1]
    if command == "up":
        up(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif command == "down":
        down(sys.argv[2], sys.argv[3])
    elif command == "probe":
        probe(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif command == "serve":
        serve()
    elif command == "connect":
        connect(json.loads(sys.argv[2]))
    else:
        sys.exit("lab.py: unknown command %s" % command)


if __name__ == "__main__":
    main()
