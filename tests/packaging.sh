#!/usr/bin/env bash
# The packaging tests (issue 12): completions and man page, the example config, the systemd
# units (systemd-analyze verify, and a sync under the units' sandbox), the cron file, the Debian
# package (built with cargo-deb, inspected, extracted, run), and the Ansible module with real
# ansible-core: one host step by step, then a fleet, each host a network namespace of its own,
# proved with real TCP connections.
#
# Run as root from anywhere: tests/packaging.sh [SECTION]...   (sections: rust config systemd
# systemd-backends cron deb ansible-doc ansible-sanity ansible fleet; default: all). It installs what it needs:
# Debian packages via apt-get (only if missing), cargo-deb via `cargo install --locked`,
# ansible-core into target/test-venv via pip. Everything it creates (namespaces, listeners,
# temporary folders) it deletes on exit. Fails loudly; never skips.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

ANSIBLE_CORE_VERSION=2.19.14
sections=("$@")
[ "${#sections[@]}" -gt 0 ] || sections=(rust config systemd systemd-backends cron deb ansible-doc ansible-sanity ansible fleet)

fail() { echo "tests/packaging.sh: FAILED: $*" >&2; exit 1; }
step() { printf '\n== %s\n' "$*"; }
want() { local section; for section in "${sections[@]}"; do [ "$section" = "$1" ] && return 0; done; return 1; }

[ "$(id -u)" -eq 0 ] || fail "must run as root (network namespaces and netfilter): run it as root, or 'sudo tests/packaging.sh'"

started=$SECONDS
work=$(mktemp -d /tmp/cf-allowlist-packaging.XXXXXX)
prefix="cfapk$$"
# Outside /tmp, which the sandbox test replaces with a private one (the checkout itself may be
# under /tmp, so the binary is copied here too).
sandbox=$(mktemp -d /var/tmp/cf-allowlist-sandbox.XXXXXX)
lab="$root/tests/packaging/lab.py"
cleanup() {
  local status=$?
  python3 "$lab" down "$prefix" "$work" || true
  rm -rf "$work" "$sandbox"
  exit "$status"
}
trap cleanup EXIT

# --- prerequisites --------------------------------------------------------------------------
missing=()
for pair in nft:nftables ip:iproute2 python3:python3 systemd-analyze:systemd dpkg-deb:dpkg \
  dpkg-shlibdeps:dpkg-dev lintian:lintian unshare:util-linux setpriv:util-linux ufw:ufw nginx:nginx-light; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then missing+=(python3-venv); fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "tests/packaging.sh: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "build"
cargo build --quiet --features full
bin="$root/target/debug/cf-allowlist"
[ -x "$bin" ] || fail "no binary at $bin"

venv="$root/target/test-venv"
if want ansible-doc || want ansible-sanity || want ansible || want fleet; then
  if ! "$venv/bin/python" -c "import ansible.release as r; assert r.__version__ == '$ANSIBLE_CORE_VERSION'" 2>/dev/null; then
    step "ansible-core $ANSIBLE_CORE_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "ansible-core==$ANSIBLE_CORE_VERSION"
  fi
  export ANSIBLE_HOME="$work/ansible-home" ANSIBLE_LOCAL_TEMP="$work/ansible-tmp" \
    ANSIBLE_REMOTE_TEMP="$work/ansible-remote-tmp" ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0 \
    ANSIBLE_LIBRARY="$root/packaging/ansible/plugins/modules" ANSIBLE_INVENTORY_UNPARSED_WARNING=0
  # Collections layout for ansible-doc and ansible-test: ansible_collections/NAMESPACE/NAME.
  collection="$work/collections/ansible_collections/cf_allowlist/ops"
  mkdir -p "$collection"
  cp -a "$root/packaging/ansible/." "$collection/"
fi

# --- completions and man page ---------------------------------------------------------------
if want rust; then
  step "completions and man page"
  for shell in bash zsh fish; do
    "$bin" completions "$shell" >"$work/completion.$shell"
    grep -q 'sync' "$work/completion.$shell" || fail "$shell completion does not mention sync"
  done
  bash -n "$work/completion.bash" || fail "bash completion has a syntax error"
  # shellcheck disable=SC1091
  bash -c "source '$work/completion.bash' && complete -p cf-allowlist" >/dev/null \
    || fail "bash completion does not register for cf-allowlist"
  if command -v zsh >/dev/null; then zsh -n "$work/completion.zsh" || fail "zsh completion"; fi
  if command -v fish >/dev/null; then fish -n "$work/completion.fish" || fail "fish completion"; fi
  "$bin" manpage >"$work/cf-allowlist.1"
  grep -q '^\.TH cf-allowlist 1' "$work/cf-allowlist.1" || fail "man page has no .TH header"
  for command in sync status history rollback restore unpin purge completions; do
    grep -q "$command" "$work/cf-allowlist.1" || fail "man page does not list $command"
  done
  man_warnings=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l "$work/cf-allowlist.1" 2>&1 >/dev/null || true)
  [ -z "$man_warnings" ] || fail "man reports: $man_warnings"
  if "$bin" completions tcsh >/dev/null 2>&1; then fail "completions accepted an unknown shell"; fi
  echo "completions: bash $(wc -c <"$work/completion.bash") B, zsh $(wc -c <"$work/completion.zsh") B, fish $(wc -c <"$work/completion.fish") B; man page $(wc -l <"$work/cf-allowlist.1") lines"
fi

# --- the example config ---------------------------------------------------------------------
if want config; then
  step "packaging/config.example.toml parses with the current binary"
  # Every key the config file accepts must appear in the example (ConfigFile and BackendEntry
  # in src/settings.rs); a new key without documentation fails here.
  keys=$(awk '/^pub struct (ConfigFile|BackendEntry)/,/^}/' src/settings.rs \
    | sed -n 's/^ *pub \([a-z_0-9]*\):.*/\1/p' | sed 's/^backends$/backend/' | sort -u)
  for key in $keys; do
    grep -Eq "^(\[\[?)?$key( =|\]\]?)" packaging/config.example.toml \
      || fail "config.example.toml does not set '$key'"
  done
  # The example names both backends, so its dry run observes them: inside a namespace of its own.
  unshare -n "$bin" --config packaging/config.example.toml --state-dir "$work/state-config" \
    sync --dry-run --source builtin >"$work/config.out" 2>"$work/config.err" \
    || { cat "$work/config.err" >&2; fail "the example config does not work"; }
  grep -q 'nftables (inet filter input, tcp 80,443)' "$work/config.out" || fail "example: nftables backend not resolved"
  grep -q 'iptables (auto variant, auto mode, tcp 80,443)' "$work/config.out" || fail "example: iptables backend not resolved"
  echo "example config: $(echo "$keys" | wc -w) keys documented, dry run exit 0"
  "$bin" config check packaging/config.example.toml >"$work/check.out" \
    || fail "config check refused the example config"
  grep -q '^packaging/config.example.toml: valid$' "$work/check.out" || fail "config check: $(cat "$work/check.out")"
  "$bin" --output json config check packaging/config.example.toml \
    | python3 -c 'import json,sys; j=json.load(sys.stdin); assert j["exit_code"] == 0 and len(j["settings"]["backends"]) == 2, j' \
    || fail "config check --output json"
  # Uncommented, the other kinds' examples are valid too.
  sed 's/^# \(kind\|rules_dir\|program\|enable\|write\|path\|test_command\|reload_command\|security_group_ids\|region\|mode\|max_rules\) /\1 /; s/^# \[\[backend\]\]/[[backend]]/' \
    packaging/config.example.toml >"$work/all-kinds.toml"
  "$bin" config check "$work/all-kinds.toml" >/dev/null || fail "the commented backend examples are not valid"
  echo "config check: the example and its commented kinds are valid"
fi

# --- systemd --------------------------------------------------------------------------------
if want systemd; then
  step "systemd units"
  # systemd-analyze checks that ExecStart's binary exists and that Documentation=man:... opens:
  # give it a root with the binary where the package puts it and the system's own units, and a
  # MANPATH with the generated man page.
  sysroot="$work/sysroot"
  mkdir -p "$sysroot/usr/bin" "$sysroot/etc/systemd/system" "$sysroot/usr/lib/systemd" "$work/man/man1"
  cp "$bin" "$sysroot/usr/bin/cf-allowlist"
  cp -a /usr/lib/systemd/system "$sysroot/usr/lib/systemd/"
  cp packaging/systemd/*.service packaging/systemd/*.timer "$sysroot/etc/systemd/system/"
  "$bin" manpage >"$work/man/man1/cf-allowlist.1"
  (cd "$sysroot/etc/systemd/system" && MANPATH="$work/man" SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --root="$sysroot" \
    cf-allowlist-sync.service cf-allowlist-sync.timer cf-allowlist-restore.service) >"$work/verify.log" 2>&1 \
    || { cat "$work/verify.log" >&2; fail "systemd-analyze verify"; }
  if grep -v -e 'Failed to load.*nftables.service' "$work/verify.log" | grep -q .; then
    cat "$work/verify.log" >&2; fail "systemd-analyze verify printed warnings"
  fi
  echo "systemd-analyze verify: 3 units clean"
  # The same with every backend's drop-in installed for both services (issue 18.5).
  for service in cf-allowlist-sync cf-allowlist-restore; do
    mkdir -p "$sysroot/etc/systemd/system/$service.service.d"
    cp packaging/systemd/drop-ins/*.conf "$sysroot/etc/systemd/system/$service.service.d/"
  done
  (cd "$sysroot/etc/systemd/system" && MANPATH="$work/man" SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --root="$sysroot" \
    cf-allowlist-sync.service cf-allowlist-restore.service) >"$work/verify-dropins.log" 2>&1 \
    || { cat "$work/verify-dropins.log" >&2; fail "systemd-analyze verify with the drop-ins"; }
  if grep -v -e 'Failed to load.*nftables.service' "$work/verify-dropins.log" | grep -q .; then
    cat "$work/verify-dropins.log" >&2; fail "systemd-analyze verify with the drop-ins printed warnings"
  fi
  echo "systemd-analyze verify: the units with drop-ins/{ufw,nginx-realip,aws}.conf clean"
  grep -q '^ExecStart=/usr/bin/cf-allowlist restore$' packaging/systemd/cf-allowlist-restore.service || fail "restore unit"
  # Security exposure as systemd scores it (lower is better), for the report.
  systemd-analyze security --offline=yes --root="$sysroot" \
    "$sysroot/etc/systemd/system/cf-allowlist-sync.service" 2>/dev/null | tail -1 || true

  step "sync under the sync unit's sandbox (no systemd here: the same restrictions by hand)"
  # This machine's PID 1 is not systemd, so the unit cannot be started; instead run its
  # ExecStart with what its hardening amounts to: a read-only file system except the state
  # directory and a private /tmp (ProtectSystem=strict, ReadWritePaths, PrivateTmp), only
  # CAP_NET_ADMIN and CAP_NET_RAW (CapabilityBoundingSet), no new privileges
  # (NoNewPrivileges), in a network namespace with a Debian-like ruleset.
  mkdir -p "$sandbox/state" && chmod 700 "$sandbox/state"
  cp "$bin" "$sandbox/cf-allowlist"
  printf '198.51.100.0/24\n2001:db8:cf::/48\n' >"$sandbox/list.txt"
  unshare -n -m --propagation private bash -euo pipefail -c '
    ip link set lo up
    nft -f - <<<"table inet filter { chain input { type filter hook input priority filter; policy drop; ct state established,related accept; iif lo accept; }; }"
    mount --bind "$1" "$1"
    mount -t tmpfs tmpfs /tmp
    mount -o remount,bind,ro / 2>/dev/null || mount --bind -o remount,ro / 
    for dir in /usr /etc /var /root /home /work; do
      [ -d "$dir" ] && mount --bind -o remount,ro "$dir" 2>/dev/null || true
    done
    mount -o remount,bind,rw "$1"
    if touch /etc/cf-allowlist-sandbox-probe 2>/dev/null; then rm -f /etc/cf-allowlist-sandbox-probe; echo "sandbox: / is writable" >&2; exit 1; fi
    setpriv --no-new-privs --inh-caps=-all --bounding-set=-all,+net_admin,+net_raw -- \
      "$2" --state-dir "$1" sync --backend nftables --source "$3"
    held=$(nft list set inet filter cf_allowlist_v4)
    grep -q "198.51.100.0/24" <<<"$held"
  ' sandbox "$sandbox/state" "$sandbox/cf-allowlist" "$sandbox/list.txt" >"$work/sandbox.out" 2>&1 \
    || { cat "$work/sandbox.out" >&2; fail "sync under the unit's restrictions"; }
  [ -f "$sandbox/state/state.json" ] || fail "the sandboxed sync wrote no state"
  echo "sandboxed sync: applied, state written; output:"; sed 's/^/  /' "$work/sandbox.out"
fi

# --- every backend under the units' sandbox (issue 18.5) ------------------------------------
if want systemd-backends; then
  step "each backend under the sync unit's sandbox: refused without its drop-in, working with it"
  # tests/packaging/unit_sandbox.py reads the unit and the drop-ins and builds what they amount
  # to (ProtectSystem=strict, ProtectHome=, PrivateTmp=, the writable paths, the capabilities)
  # in a private mount namespace; each backend's own world (a copy of /etc/ufw, of /etc/nginx,
  # a moto server) is bound in place first, inside a network namespace of the test's own.
  sb="$sandbox/backends"
  mkdir -p "$sb"
  cp "$bin" "$sb/cf-allowlist"
  printf '198.51.100.0/24\n2001:db8:cf::/48\n' >"$sb/list.txt"
  unit="$root/packaging/systemd/cf-allowlist-sync.service"
  dropins="$root/packaging/systemd/drop-ins"
  # under_unit DIR [DROPIN...]: `cf-allowlist sync` as the sync unit (plus drop-ins) runs it,
  # with DIR/config.toml as /etc/cf-allowlist/config.toml and DIR/state as its state directory.
  under_unit() {
    local dir=$1; shift
    local units=("$unit")
    for dropin in "$@"; do units+=("$dropins/$dropin"); done
    python3 "$root/tests/packaging/unit_sandbox.py" "${units[@]}" \
      --bind "$dir/config.toml:/etc/cf-allowlist/config.toml" --bind "$dir/state:/var/lib/cf-allowlist" \
      --bind "$sb/cf-allowlist:/usr/bin/cf-allowlist" --bind "$sb/list.txt:/etc/cf-allowlist/list.txt" \
      -- /usr/bin/cf-allowlist sync --source /etc/cf-allowlist/list.txt
  }
  export -f under_unit
  export unit dropins sb root

  # ufw: a copy of ufw's files, enabled, in a network namespace; /run/ufw.lock as the package's
  # tmpfiles entry creates it at boot.
  ufw_case() {
    local dir="$sb/ufw-$1"
    rm -rf "$dir" && mkdir -p "$dir/state" "$dir/run"
    cp -a /etc/ufw "$dir/etc" && cp -a /usr/lib/ufw "$dir/lib" && cp /etc/default/ufw "$dir/default"
    touch "$dir/run/ufw.lock" "$dir/run/xtables.lock"
    printf '[[backend]]\nkind = "ufw"\nenable = true\n' >"$dir/config.toml"
    unshare -n -m --propagation private bash -c '
      dir=$1; shift
      ip link set lo up
      mount --bind "$dir/etc" /etc/ufw; mount --bind "$dir/lib" /usr/lib/ufw
      mount --bind "$dir/default" /etc/default/ufw; mount --bind "$dir/run" /run
      ufw --force enable >/dev/null
      under_unit "$dir" "$@"' ufw "$dir" "${@:2}" >"$dir/out" 2>&1
  }
  if ufw_case bare; then cat "$sb/ufw-bare/out" >&2; fail "ufw under the bare unit succeeded: the test cannot tell"; fi
  grep -q 'Read-only file system' "$sb/ufw-bare/out" || { cat "$sb/ufw-bare/out" >&2; fail "ufw under the bare unit failed for another reason"; }
  grep -q 'hint: a read-only file system: under the shipped systemd units, install the ufw drop-in' "$sb/ufw-bare/out" \
    || { cat "$sb/ufw-bare/out" >&2; fail "ufw under the bare unit: no hint naming the drop-in"; }
  ufw_case dropin ufw.conf || { cat "$sb/ufw-dropin/out" >&2; fail "ufw under the unit with drop-ins/ufw.conf"; }
  grep -q '198.51.100.0/24' "$sb/ufw-dropin/etc/user.rules" || fail "ufw: user.rules lacks the range"
  grep -q '2001:db8:cf::/48' "$sb/ufw-dropin/etc/user6.rules" || fail "ufw: user6.rules lacks the range"
  echo "ufw: bare unit -> $(grep -m1 -o 'Read-only file system[^)]*' "$sb/ufw-bare/out"); with ufw.conf -> applied"

  # nginx-realip: a copy of nginx's configuration and logs (owned by www-data, as Debian has
  # them), a running nginx in the namespace that the backend tests and reloads.
  nginx_case() {
    local dir="$sb/nginx-$1"
    rm -rf "$dir" && mkdir -p "$dir/state" "$dir/run" "$dir/log"
    cp -a /etc/nginx "$dir/etc"
    touch "$dir/log/error.log" "$dir/log/access.log"
    chown www-data:adm "$dir/log/"*.log && chmod 640 "$dir/log/"*.log && chown root:adm "$dir/log"
    printf '[[backend]]\nkind = "nginx-realip"\n' >"$dir/config.toml"
    unshare -n -m --propagation private bash -c '
      dir=$1; shift
      ip link set lo up
      mount --bind "$dir/etc" /etc/nginx; mount --bind "$dir/log" /var/log/nginx; mount --bind "$dir/run" /run
      nginx
      status=0; under_unit "$dir" "$@" || status=$?
      nginx -s quit; exit $status' nginx "$dir" "${@:2}" >"$dir/out" 2>&1
  }
  if nginx_case bare; then cat "$sb/nginx-bare/out" >&2; fail "nginx-realip under the bare unit succeeded"; fi
  grep -q 'Read-only file system' "$sb/nginx-bare/out" || { cat "$sb/nginx-bare/out" >&2; fail "nginx-realip under the bare unit failed for another reason"; }
  grep -q 'install the nginx-realip drop-in' "$sb/nginx-bare/out" \
    || { cat "$sb/nginx-bare/out" >&2; fail "nginx-realip under the bare unit: no hint naming the drop-in"; }
  nginx_case dropin nginx-realip.conf || { cat "$sb/nginx-dropin/out" >&2; fail "nginx-realip under the unit with drop-ins/nginx-realip.conf"; }
  grep -q 'set_real_ip_from 198.51.100.0/24;' "$sb/nginx-dropin/etc/conf.d/cf-allowlist-realip.conf" || fail "nginx-realip: the include file lacks the range"
  [ ! -e "$sb/nginx-dropin/etc/conf.d/.cf-allowlist-realip.conf.reload-pending" ] || fail "nginx-realip: the reload did not happen (marker left)"
  echo "nginx-realip: bare unit -> read-only /etc/nginx; with nginx-realip.conf -> written, tested, reloaded"

  # aws: moto on the namespace's loopback, credentials, region and endpoint in a profile under
  # /root/.aws, as an admin who ran `aws configure` has them.
  aws_case() {
    local dir="$sb/aws-$1"
    rm -rf "$dir" && mkdir -p "$dir/state" "$dir/aws"
    printf '[default]\naws_access_key_id = AKIDCFALLOWLISTTEST\naws_secret_access_key = cf-allowlist-test-secret\n' >"$dir/aws/credentials"
    printf '[default]\nregion = us-east-1\nendpoint_url = http://127.0.0.1:5077\n' >"$dir/aws/config"
    unshare -n -m --propagation private bash -c '
      dir=$1; shift
      ip link set lo up
      # /root/.aws appears in an overlay, in this namespace only: the real /root stays as it is.
      mkdir -p "$dir/overlay/upper" "$dir/overlay/work"
      mount -t overlay overlay -o "lowerdir=/root,upperdir=$dir/overlay/upper,workdir=$dir/overlay/work" /root
      mkdir -p /root/.aws && mount --bind "$dir/aws" /root/.aws
      "$CF_TEST_VENV/bin/moto_server" -H 127.0.0.1 -p 5077 >"$dir/moto.log" 2>&1 & moto=$!
      for _ in $(seq 100); do "$CF_TEST_VENV/bin/python" -c "import socket; socket.create_connection((\"127.0.0.1\", 5077))" 2>/dev/null && break; sleep 0.1; done
      group=$("$CF_TEST_VENV/bin/python" -c "
import boto3
ec2 = boto3.client(\"ec2\", endpoint_url=\"http://127.0.0.1:5077\", region_name=\"us-east-1\", aws_access_key_id=\"x\", aws_secret_access_key=\"y\")
print(ec2.create_security_group(GroupName=\"web\", Description=\"test\")[\"GroupId\"])")
      printf "[[backend]]\nkind = \"aws\"\nregion = \"us-east-1\"\nsecurity_group_ids = [\"%s\"]\n" "$group" >"$dir/config.toml"
      status=0; under_unit "$dir" "$@" || status=$?
      "$CF_TEST_VENV/bin/python" -c "
import boto3
ec2 = boto3.client(\"ec2\", endpoint_url=\"http://127.0.0.1:5077\", region_name=\"us-east-1\", aws_access_key_id=\"x\", aws_secret_access_key=\"y\")
rules = ec2.describe_security_group_rules(Filters=[{\"Name\": \"group-id\", \"Values\": [\"$group\"]}])[\"SecurityGroupRules\"]
print(\"rules:\", sorted(r.get(\"CidrIpv4\") or r.get(\"CidrIpv6\") or \"\" for r in rules if not r[\"IsEgress\"]))" >"$dir/rules"
      kill "$moto"; wait "$moto" 2>/dev/null; exit $status' aws "$dir" "${@:2}" >"$dir/out" 2>&1
  }
  export CF_TEST_VENV="${CF_TEST_VENV:-$venv}"
  [ -x "$CF_TEST_VENV/bin/moto_server" ] || fail "no moto in $CF_TEST_VENV (tests/run installs tests/requirements.txt there)"
  if aws_case bare; then cat "$sb/aws-bare/out" >&2; fail "aws under the bare unit succeeded"; fi
  grep -q 'no AWS credentials' "$sb/aws-bare/out" || { cat "$sb/aws-bare/out" >&2; fail "aws under the bare unit failed for another reason"; }
  aws_case dropin aws.conf || { cat "$sb/aws-dropin/out" >&2; fail "aws under the unit with drop-ins/aws.conf"; }
  grep -q "198.51.100.0/24', '198.51.100.0/24', '2001:db8:cf::/48', '2001:db8:cf::/48'" "$sb/aws-dropin/rules" \
    || fail "aws: the group does not hold the ranges on both ports: $(cat "$sb/aws-dropin/rules")"
  echo "aws: bare unit -> no credentials (/root hidden); with aws.conf -> profile read, group written"
fi

# --- cron -----------------------------------------------------------------------------------
if want cron; then
  step "cron.d file"
  cronfile=packaging/cron/cf-allowlist
  # A cron.d line: five time fields, a user, a command; run-parts ignores names with dots.
  job=$(grep -Ev '^\s*(#|$|[A-Z_]+=)' "$cronfile")
  [ "$(echo "$job" | wc -l)" -eq 1 ] || fail "cron file must hold exactly one job"
  echo "$job" | grep -Eq '^[0-9*/,-]+ [0-9*/,-]+ [0-9*/,-]+ [0-9*/,-]+ [0-9*/,-]+ root /usr/bin/cf-allowlist ' \
    || fail "cron line is not 'M H DOM MON DOW root /usr/bin/cf-allowlist ...': $job"
  grep -q '^MAILTO=' "$cronfile" || fail "cron file sets no MAILTO"
  command=$(echo "$job" | cut -d' ' -f7-)
  # Cron mails whatever the job prints: first run (a change) prints the plan, a second run
  # prints nothing, an error prints the error. Run the job's command in a namespace of its own.
  printf '198.51.100.0/24\n' >"$work/cron-list.txt"
  run_cron() {
    # shellcheck disable=SC2086
    unshare -n bash -c "nft -f - <<<'table inet filter { chain input { type filter hook input priority filter; policy drop; }; }'; \
      PATH=/usr/bin:/bin; ${command/\/usr\/bin\/cf-allowlist/$bin} --state-dir $work/cron-state --backend nftables --source $1" 2>&1
  }
  first=$(run_cron "$work/cron-list.txt") || fail "cron job failed: $first"
  [ -n "$first" ] || fail "a changing cron run printed nothing (cron would mail nothing)"
  # The second run must see the first one's rules: both in one namespace.
  out=$(unshare -n bash -c "
    nft -f - <<<'table inet filter { chain input { type filter hook input priority filter; policy drop; }; }'
    PATH=/usr/bin:/bin
    ${command/\/usr\/bin\/cf-allowlist/$bin} --state-dir $work/cron-state2 --backend nftables --source $work/cron-list.txt >/dev/null 2>&1
    ${command/\/usr\/bin\/cf-allowlist/$bin} --state-dir $work/cron-state2 --backend nftables --source $work/cron-list.txt 2>&1" ) \
    || fail "second cron run failed: $out"
  [ -z "$out" ] || fail "an unchanged cron run printed (cron would mail): $out"
  if err=$(run_cron "$work/does-not-exist.txt"); then fail "a cron run with a missing source succeeded"; fi
  echo "$err" | grep -q '^error: ' || fail "a failing cron run printed no error: $err"
  echo "cron: change -> $(echo "$first" | wc -l) lines mailed, no change -> silent, error -> '$(echo "$err" | head -1)'"
fi

# --- Debian package -------------------------------------------------------------------------
if want deb; then
  step "Debian package"
  command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
  deb_started=$SECONDS
  deb=$(packaging/deb/build.sh)
  echo "built $deb ($(stat -c %s "$deb") bytes) in $((SECONDS - deb_started)) s"
  dpkg-deb -I "$deb" >"$work/deb-info"
  dpkg-deb -c "$deb" >"$work/deb-contents"
  sed 's/^/  /' "$work/deb-info"
  awk '{print "  " $1, $6}' "$work/deb-contents"
  for path in ./usr/bin/cf-allowlist ./usr/lib/systemd/system/cf-allowlist-sync.service \
    ./usr/lib/systemd/system/cf-allowlist-sync.timer ./usr/lib/systemd/system/cf-allowlist-restore.service \
    ./usr/lib/tmpfiles.d/cf-allowlist.conf ./usr/share/doc/cf-allowlist/examples/cron.d/cf-allowlist \
    ./usr/share/doc/cf-allowlist/examples/config.toml ./usr/share/man/man1/cf-allowlist.1.gz \
    ./usr/share/doc/cf-allowlist/examples/systemd/ufw.conf ./usr/share/doc/cf-allowlist/examples/systemd/nginx-realip.conf \
    ./usr/share/doc/cf-allowlist/examples/systemd/aws.conf \
    ./usr/share/bash-completion/completions/cf-allowlist ./usr/share/zsh/vendor-completions/_cf-allowlist \
    ./usr/share/fish/vendor_completions.d/cf-allowlist.fish ./usr/share/doc/cf-allowlist/copyright \
    ./usr/share/doc/cf-allowlist/docs/commands.md ./usr/share/doc/cf-allowlist/docs/backends/nftables.md; do
    grep -q " $path\$" "$work/deb-contents" || fail "package lacks $path"
  done
  grep -q '^ Package: cf-allowlist$' "$work/deb-info" || fail "control: Package"
  grep -q '^ Depends:.*libc6' "$work/deb-info" || fail "control: Depends on libc6 (shlibdeps)"
  grep -q '^ Recommends:.*nftables' "$work/deb-info" || fail "control: Recommends nftables"
  for script in postinst postrm prerm; do
    dpkg-deb --ctrl-tarfile "$deb" | tar -xO "./$script" >"$work/$script" || fail "no $script"
    sh -n "$work/$script" || fail "$script has a syntax error"
  done
  grep -q 'install -d -m 0700 .*/var/lib/cf-allowlist' "$work/postinst" || fail "postinst does not create the state directory 0700"
  if grep -v '^\s*#' "$work/postinst" | grep -Eq 'systemctl.*(enable|start)|deb-systemd-(invoke start|helper enable)'; then
    fail "postinst enables or starts a unit; the admin decides"
  fi
  # Nothing under /etc: no job runs and no config applies until the admin puts one there.
  if grep -q ' \./etc/' "$work/deb-contents"; then fail "the package installs files under /etc"; fi
  mkdir "$work/extracted"
  dpkg -x "$deb" "$work/extracted"
  "$work/extracted/usr/bin/cf-allowlist" --version | tee "$work/deb-version"
  grep -q "^cf-allowlist $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)\$" "$work/deb-version" || fail "--version"
  unshare -n "$work/extracted/usr/bin/cf-allowlist" --state-dir "$work/deb-state" sync --dry-run --source builtin \
    >"$work/deb-dry-run" 2>&1 || { cat "$work/deb-dry-run" >&2; fail "the packaged binary's dry run"; }
  grep -q '15 IPv4' "$work/deb-dry-run" || grep -q '104.16.0.0/13' "$work/deb-dry-run" || fail "dry run output: $(cat "$work/deb-dry-run")"
  echo "extracted binary: --version and dry run ok"
  if lintian --fail-on error --suppress-tags-from-file packaging/deb/lintian-suppressed "$deb" >"$work/lintian.out" 2>&1; then
    echo "lintian: no errors ($(grep -c '^W:' "$work/lintian.out" || true) warnings)"
    sed 's/^/  /' "$work/lintian.out"
  else
    cat "$work/lintian.out" >&2; fail "lintian"
  fi
fi

# --- Ansible --------------------------------------------------------------------------------
if want ansible-doc; then
  step "ansible-doc"
  "$venv/bin/ansible-doc" -t module cf_allowlist >"$work/doc-library.txt" || fail "ansible-doc from ANSIBLE_LIBRARY"
  ANSIBLE_COLLECTIONS_PATH="$work/collections" "$venv/bin/ansible-doc" cf_allowlist.ops.cf_allowlist >"$work/doc-collection.txt" \
    || fail "ansible-doc from the collection"
  for word in state sources backends ports restrict force config state_dir executable EXAMPLES 'RETURN VALUES'; do
    grep -q "$word" "$work/doc-collection.txt" || fail "ansible-doc output lacks $word"
  done
  echo "ansible-doc: $(wc -l <"$work/doc-collection.txt") lines, every option documented"
  # The module follows the CLI (issue 18.8): its backends choices are exactly the kinds
  # `cf-allowlist sync --help` lists, so a kind added to the tool and not to the module fails.
  cli_kinds=$("$bin" sync --help | awk '
    /--backend <KIND>/ { in_backend = 1; next }
    in_backend && /Possible values:/ { in_values = 1; next }
    in_values && /^ *- / { sub(/^ *- /, ""); sub(/:.*/, ""); print; next }
    in_values { exit }' | sort)
  module_kinds=$("$venv/bin/ansible-doc" -j -t module cf_allowlist \
    | "$venv/bin/python" -c 'import json, sys; print("\n".join(sorted(json.load(sys.stdin)["cf_allowlist"]["doc"]["options"]["backends"]["choices"])))')
  [ "$(echo "$cli_kinds" | wc -l)" -ge 2 ] || fail "could not read the backend kinds from 'cf-allowlist sync --help'"
  [ "$cli_kinds" = "$module_kinds" ] \
    || fail "the module's backends choices ($(echo $module_kinds)) differ from the tool's kinds ($(echo $cli_kinds))"
  echo "backends: the module's choices are the tool's kinds: $(echo $cli_kinds)"
  (cd "$work/collections/ansible_collections/cf_allowlist/ops" && "$venv/bin/ansible-galaxy" collection build --output-path "$work" >/dev/null) \
    || fail "ansible-galaxy collection build"
  echo "collection builds: $(basename "$work"/cf_allowlist-ops-*.tar.gz)"
  for example in site fleet; do
    ANSIBLE_COLLECTIONS_PATH="$work/collections" "$venv/bin/ansible-playbook" --syntax-check \
      -i packaging/ansible/examples/inventory.yml "packaging/ansible/examples/$example.yml" >/dev/null \
      || fail "examples/$example.yml does not pass --syntax-check"
  done
  echo "examples: site.yml and fleet.yml pass --syntax-check"
fi

if want ansible-sanity; then
  step "ansible-test sanity (every test, with its pinned requirements from PyPI)"
  # ansible-test wants the collection in ansible_collections/NS/NAME, as a git work tree. It
  # creates one venv per sanity test and bootstraps pip into each with get-pip.py, downloaded
  # from a host that is not a package registry: a stand-in (tests/packaging/get_pip_shim.py,
  # ensurepip then pip from PyPI) sits where ansible-test looks for its cached copy. The venvs
  # live under target/ansible-test-home (HOME for ansible-test), so later runs reuse them.
  sanity_home="$root/target/ansible-test-home"
  mkdir -p "$sanity_home/.ansible/test/cache"
  # ansible-test 2.19 pins pip 24.2 for its venvs ("Downloading pip 24.2 bootstrap script").
  cp tests/packaging/get_pip_shim.py "$sanity_home/.ansible/test/cache/get_pip_24_2.py"
  t=$SECONDS
  (cd "$collection" && git init -q . && git add -A >/dev/null && \
    HOME="$sanity_home" "$venv/bin/ansible-test" sanity --requirements --python 3.11 --color no) >"$work/sanity.log" 2>&1 \
    || { cat "$work/sanity.log" >&2; fail "ansible-test sanity"; }
  tests_run=$(grep -c '^Running sanity test' "$work/sanity.log")
  echo "ansible-test sanity: $tests_run tests run, all passed ($((SECONDS - t)) s)"
  grep -E '^(Running sanity test|WARNING: Skipping)' "$work/sanity.log" | sed 's/^/  /'
fi

if want ansible || want fleet; then
  step "lab: $prefix, five hosts"
  python3 "$lab" up "$prefix" "$work" 5
  printf '198.51.100.0/24\n2001:db8:cf::/48\n' >"$work/list-one.txt"
  printf '198.51.100.0/24\n203.0.113.0/24\n2001:db8:cf::/48\n' >"$work/list-two.txt"
  printf '<html><body>Checking your browser</body></html>\n' >"$work/broken.txt"
  printf '198.51.100.0/24\n' >"$work/shrunk.txt"
  # Each host's python runs inside that host's namespace: the module, the tool and nft see
  # only that host's firewall.
  inventory="$work/inventory.yml"
  {
    echo "all:"
    echo "  vars:"
    echo "    ansible_connection: local"
    echo "    cf_bin: $bin"
    echo "    cf_sources: [$work/list-one.txt]"
    echo "    lab: python3 $lab"
    echo "    prefix: $prefix"
    echo "    workdir: $work"
    echo "  children:"
    echo "    fleet:"
    echo "      hosts:"
    for index in 1 2 3 4; do
      printf '#!/bin/sh\nexec ip netns exec %s-h%d %s "$@"\n' "$prefix" "$index" "$venv/bin/python" >"$work/python-h$index"
      chmod +x "$work/python-h$index"
      mkdir -p "$work/bin-h$index"
      # A firewall that can break: nft fails while $work/broken-hN exists. The hosts' ruleset
      # logs what its policy drops, which the netlink reading does not render, so every sync
      # lists it with nft (a first apply would otherwise write over netlink alone, never
      # running nft).
      printf '#!/bin/sh\nif [ -e %s/broken-h%d ]; then echo "nft: netlink: Error: Could not process rule: Operation not supported" >&2; exit 1; fi\nexec /usr/sbin/nft "$@"\n' \
        "$work" "$index" >"$work/bin-h$index/nft"
      chmod +x "$work/bin-h$index/nft"
      echo "        h$index:"
      echo "          ansible_python_interpreter: $work/python-h$index"
      echo "          cf_state_dir: $work/state-h$index"
      echo "          cf_path: $work/bin-h$index:$PATH"
      echo "          index: $index"
    done
    echo "    single:"
    echo "      hosts:"
    printf '#!/bin/sh\nexec ip netns exec %s-h5 %s "$@"\n' "$prefix" "$venv/bin/python" >"$work/python-h5"
    chmod +x "$work/python-h5"
    echo "        h5:"
    echo "          ansible_python_interpreter: $work/python-h5"
    echo "          index: 5"
  } >"$inventory"
fi

playbook() {
  # The packet probes run on the controller (delegate_to: localhost), in this namespace.
  "$venv/bin/ansible-playbook" -i "$inventory" "$@"
}

if want ansible; then
  step "ansible: the module on one host, step by step"
  t=$SECONDS
  playbook tests/packaging/ansible/module.yml >"$work/module.log" 2>&1 || { cat "$work/module.log" >&2; fail "module playbook"; }
  grep -q 'WARNING.*builtin' "$work/module.log" || { cat "$work/module.log" >&2; fail "the builtin list's warning did not reach Ansible"; }
  recap=$(grep -E '^h5 ' "$work/module.log")
  echo "$recap"
  echo "$recap" | grep -q 'failed=0' || fail "module playbook recap"
  echo "module playbook: $(grep -c '^TASK' "$work/module.log") tasks, $((SECONDS - t)) s"
  # The same module through ansible-playbook --check --diff, as an admin would preview.
  playbook tests/packaging/ansible/fleet.yml -e fleet_hosts=single -e "cf_state_dir=$work/state-h5-diff" --check --diff \
    >"$work/diff.log" 2>&1 || { cat "$work/diff.log" >&2; fail "--check --diff"; }
  grep -q '^+198.51.100.0/24' "$work/diff.log" || { cat "$work/diff.log" >&2; fail "--diff does not show the ranges"; }
  grep -q '^+2001:db8:cf::/48' "$work/diff.log" || fail "--diff does not show the IPv6 range"
  python3 "$lab" probe "$prefix" 5 closed
  echo "--check --diff: ranges shown, nothing applied"
  # The JSON contract the tool is moving to, from a stand-in binary.
  playbook tests/packaging/ansible/contract.yml >"$work/contract.log" 2>&1 || { cat "$work/contract.log" >&2; fail "contract playbook"; }
  grep -q 'WARNING.*a top-level warning' "$work/contract.log" || fail "contract: top-level warning not passed on"
  grep -q 'WARNING.*another base chain drops' "$work/contract.log" || fail "contract: backend warning not passed on"
  if grep -q 'WARNING.*a repeating warning' "$work/contract.log"; then fail "contract: a warning outside warnings_shown was passed on"; fi
  echo "future JSON contract: $(grep -E '^localhost ' "$work/contract.log" | tr -s ' ')"
fi

recap_of() { grep -E "^$1 +:" "$2" || fail "no recap line for $1 in $2"; }

if want fleet; then
  step "ansible: fleet of four hosts, serial 2, max_fail_percentage 50"
  t=$SECONDS
  for index in 1 2 3 4; do python3 "$lab" probe "$prefix" "$index" closed; done

  # Round 1: both hosts of the first batch have a broken firewall: the rollout stops there.
  touch "$work/broken-h1" "$work/broken-h2"
  if playbook tests/packaging/ansible/fleet.yml >"$work/fleet1.log" 2>&1; then cat "$work/fleet1.log" >&2; fail "round 1 succeeded"; fi
  grep -q 'Operation not supported' "$work/fleet1.log" || { cat "$work/fleet1.log" >&2; fail "round 1: nft's error not in the task's message"; }
  grep -Eq '^h3 ' "$work/fleet1.log" && { cat "$work/fleet1.log" >&2; fail "round 1 reached the second batch"; }
  for index in 1 2 3 4; do python3 "$lab" probe "$prefix" "$index" closed; done
  echo "round 1: first batch failed (2 of 2), the rollout stopped before h3 and h4"

  # Round 2: one broken host in the first batch (50%, not more): the others converge.
  rm "$work/broken-h1"
  if playbook tests/packaging/ansible/fleet.yml >"$work/fleet2.log" 2>&1; then cat "$work/fleet2.log" >&2; fail "round 2 succeeded despite h2"; fi
  for host in h1 h3 h4; do recap_of "$host" "$work/fleet2.log" | grep -q 'changed=1 .*failed=0' || { cat "$work/fleet2.log" >&2; fail "round 2: $host"; }; done
  recap_of h2 "$work/fleet2.log" | grep -q 'failed=1' || fail "round 2: h2 did not fail"
  for index in 1 3 4; do python3 "$lab" probe "$prefix" "$index" open; done
  python3 "$lab" probe "$prefix" 2 closed
  echo "round 2: h2 failed, h1 h3 h4 converged; h2's message:"
  grep -o '"msg": "[^"]*"' "$work/fleet2.log" | head -1 | sed 's/^/  /'
  grep -q '"msg": ".*Operation not supported' "$work/fleet2.log" || fail "round 2: nft's error is not in h2's message"

  # Round 3: h2's firewall repaired; re-running converges it and leaves the others alone.
  rm "$work/broken-h2"
  playbook tests/packaging/ansible/fleet.yml >"$work/fleet3.log" 2>&1 || { cat "$work/fleet3.log" >&2; fail "round 3"; }
  recap_of h2 "$work/fleet3.log" | grep -q 'changed=1 .*failed=0' || fail "round 3: h2 not converged"
  for host in h1 h3 h4; do recap_of "$host" "$work/fleet3.log" | grep -q 'changed=0 .*failed=0' || fail "round 3: $host changed"; done
  for index in 1 2 3 4; do python3 "$lab" probe "$prefix" "$index" open; done
  grep -E '^h[1-4] ' "$work/fleet3.log"
  echo "round 3: h2 converged, the others unchanged; fleet test $((SECONDS - t)) s"
fi

printf '\ntests/packaging.sh: all passed (%s) in %d s\n' "${sections[*]}" "$((SECONDS - started))"
