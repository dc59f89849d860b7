#!/bin/sh
# Records a real ufw's rule set (Debian's ufw 0.36, iptables-nft) for the unit tests, in a
# network namespace and a mount namespace over copies of ufw's files, so the host's firewall
# and ufw configuration stay untouched (the recipe of PLATFORM-FACTS.md). Run as root:
#   sh record-ufw.sh SANDBOX_DIR
# SANDBOX_DIR must not sit under a world-writable folder (ufw refuses to run from /tmp).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
sb=$1
mkdir -p "$sb/run"
cp -a /etc/ufw "$sb/etc-ufw"
cp -a /usr/lib/ufw "$sb/lib-ufw"
cp -a /etc/default/ufw "$sb/default-ufw"
unshare --net --mount --propagation private sh -c "
  set -eu
  mount --bind '$sb/run' /run
  mount --bind '$sb/etc-ufw' /etc/ufw
  mount --bind '$sb/lib-ufw' /usr/lib/ufw
  mount --bind '$sb/default-ufw' /etc/default/ufw
  ip link set lo up
  ufw --force enable >/dev/null
  ufw allow proto tcp from 192.0.2.0/24 to any port 22 comment 'admin ssh' >/dev/null
  ufw allow proto tcp from 203.0.113.0/25 to any port 80,443 comment cf-allowlist >/dev/null
  ufw allow proto tcp from 2001:db8:cf::/48 to any port 80,443 comment cf-allowlist >/dev/null
  nft -j list ruleset > '$here/recorded/ufw-real.json'
  iptables-nft-save -t filter > '$here/recorded/ufw-real.filter4.save'
  ip6tables-nft-save -t filter > '$here/recorded/ufw-real.filter6.save'
"
rm -rf "$sb"
