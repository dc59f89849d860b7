#!/usr/bin/env bash
# First sync, no-op sync and replacing 10% with the ufw backend, for N ranges (default: 22 and
# 1000), in a private mount and network namespace holding copies of ufw's files (the host's ufw
# is never touched). Ranges are documentation ranges only: IPv4 /32s from 192.0.2.0/24,
# 198.51.100.0/24 and 203.0.113.0/24, IPv6 /48s from 2001:db8::/32, read from a local file.
# WRITE="batch calls" (default: both) chooses the backend's write modes.
# Usage: sudo benches/ufw.sh [N...]   (builds and uses target/release; PROFILE=debug uses the
# debug build, which changes nothing measurable here: ufw's own calls are the whole cost)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
if [ "$profile" = release ]; then cargo build --release --quiet; else cargo build --quiet; fi
bin=$PWD/target/$profile/cf-allowlist
work=$(mktemp -d /root/cf-ufw-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

ranges() { # N OFFSET: N ranges, half IPv4 (/32) and half IPv6 (/48), starting at OFFSET
  python3 - "$1" "$2" <<'PY'
import sys
n, offset = int(sys.argv[1]), int(sys.argv[2])
v4 = [f"{net}.{host}/32" for net in ("192.0.2", "198.51.100", "203.0.113") for host in range(1, 255)]
v4n = (n + 1) // 2 if n > 22 else 15
for i in range(v4n): print(v4[(i + offset) % len(v4)])
for i in range(n - v4n): print(f"2001:db8:{i + offset:x}::/48")
PY
}

for write in ${WRITE:-batch calls}; do
for n in ${@:-22 1000}; do
  sb=$work/sb-$write-$n; mkdir -p "$sb/run"
  printf '[[backend]]\nkind = "ufw"\nwrite = "%s"\n' "$write" > "$sb/config.toml"
  cp -a /etc/ufw "$sb/etc-ufw"; cp -a /usr/lib/ufw "$sb/lib-ufw"; cp -a /etc/default/ufw "$sb/default-ufw"
  ranges "$n" 0 > "$sb/list"
  ranges "$n" $((n / 10)) > "$sb/list2"
  unshare --net --mount --propagation private bash -c "
    set -e
    mount --bind $sb/run /run; mount --bind $sb/etc-ufw /etc/ufw; mount --bind $sb/lib-ufw /usr/lib/ufw
    mount --bind $sb/default-ufw /etc/default/ufw; ip link set lo up
    ufw --force enable >/dev/null
    t() { local s=\$(date +%s%N); \"\$@\" >/dev/null; echo \$(( (\$(date +%s%N) - s) / 1000000 )); }
    first=\$(t $bin --config $sb/config.toml --state-dir $sb/state sync --force --source $sb/list)
    noop=\$(t $bin --config $sb/config.toml --state-dir $sb/state sync --source $sb/list)
    replace=\$(t $bin --config $sb/config.toml --state-dir $sb/state sync --force --source $sb/list2)
    echo \"ufw $write $n ranges: first sync \$first ms, no-op \$noop ms, replace 10% \$replace ms\"
  "
done
done
