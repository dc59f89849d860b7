#!/bin/sh
# Records the listings the unit tests judge (testdata/recorded/), each from a fresh network
# namespace holding one of the rulesets beside this script. Run as root from this folder:
#   unshare -n sh record.sh
# (Every scenario flushes what the previous one loaded; nothing outside the namespace is
# touched.)
set -eu
out=recorded
mkdir -p "$out"
# iptables-nft's tables are nft tables: flushing the ruleset removes them too. (Never touch
# the legacy tools here: listing or flushing a legacy table creates it.)
reset() {
    nft flush ruleset
}
# Loads NAME.nft into a flushed ruleset and records its listing as NAME.json.
record_nft() {
    reset
    nft -f "$1.nft"
    nft -j list ruleset > "$out/$1.json"
}

# 1. Debian's policy drop, nothing else.
record_nft debian

# 2. ufw's layout in iptables-nft, plus a separate inet table accepting the ranges.
reset
iptables-nft-restore < ufw4.rules
ip6tables-nft-restore < ufw6.rules
nft -f separate-table.nft
nft -j list ruleset > "$out/ufw-nft.json"
iptables-nft-save -t filter > "$out/ufw-nft.filter4.save"
ip6tables-nft-save -t filter > "$out/ufw-nft.filter6.save"

# 3. firewalld's layout.
record_nft firewalld

# 4. Our iptables chain reached by a jump from a policy-DROP INPUT, then with Debian's
#    inet filter input policy drop added.
reset
iptables-nft-restore < ours4.rules
nft -j list ruleset > "$out/ours.json"
iptables-nft-save -t filter > "$out/ours.filter4.save"
nft -f debian.nft
nft -j list ruleset > "$out/ours-debian.json"

# 5. Expressions beyond the simple cases.
record_nft mixed

# 6. An iptables-nft table with a rule added by nft that iptables-nft-save mistranslates.
reset
nft -f mixed-iptables.nft
iptables-nft -A INPUT -p tcp -m conntrack --ctstate NEW -m multiport --dports 80,443 -j ACCEPT
nft -j list ruleset > "$out/mixed-iptables.json"
iptables-nft-save -t filter > "$out/mixed-iptables.filter4.save"

# 7. Corners: prerouting drop, NAT, statements, limit, a device-bound ingress chain.
record_nft edges

# 8. ufw's layout in iptables-legacy (this creates legacy tables: last, in this namespace).
reset
iptables-legacy-restore < ufw4.rules
iptables-legacy-save -t filter > "$out/ufw-legacy.filter4.save"
