#!/usr/bin/env bash
# Runs `cargo test` (or the command given) as an unprivileged user, to check that plain
# `cargo test` passes without root (issue 20). Needs root to set up, changes nothing outside
# a temporary folder: in a private mount namespace, the user gets its own copy of the tree
# (and of target/debug, so the build is incremental) at the same path, and /root becomes a
# tmpfs holding read-only binds of root's rustup toolchains and cargo registry, so the same
# toolchain and crates are used without network and without opening /root.
#   tests/as_user.sh                  # cargo test, as uid/gid 65534 (nobody)
#   AS_USER=tester tests/as_user.sh cargo test --workspace
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
[ "$(id -u)" -eq 0 ] || { echo "tests/as_user.sh: run as root (it sets up the user's view)" >&2; exit 1; }
user="${AS_USER:-nobody}"
uid=$(id -u "$user") gid=$(id -g "$user")
[ "$#" -gt 0 ] || set -- cargo test
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tree/target" "$work/cargo" "$work/rustup"
cd "$root"
git ls-files -z --cached --others --exclude-standard | tar --null -cf - -T - | tar -xf - -C "$work/tree"
[ -d target/debug ] && cp -a --reflink=auto target/debug "$work/tree/target/"
chown -R "$uid:$gid" "$work/tree"
chmod 755 "$work"
export uid gid root work
unshare -m --propagation private bash -euo pipefail -c '
  mount --bind "${CARGO_HOME:-/root/.cargo}" "$work/cargo"
  mount --bind "${RUSTUP_HOME:-/root/.rustup}" "$work/rustup"
  mount -t tmpfs -o "uid=$uid,gid=$gid,mode=755" tmpfs /root
  mkdir -p /root/.rustup /root/.cargo/bin /root/.cargo/registry
  mount --bind -o ro "$work/rustup" /root/.rustup
  mount --bind -o ro "$work/cargo/bin" /root/.cargo/bin
  mount --bind -o ro "$work/cargo/registry" /root/.cargo/registry
  mount --bind "$work/tree" "$root"
  cd "$root"
  exec setpriv --reuid="$uid" --regid="$gid" --clear-groups \
    env -i HOME=/root PATH=/root/.cargo/bin:/usr/local/bin:/usr/bin:/bin \
    RUSTUP_HOME=/root/.rustup CARGO_HOME=/root/.cargo "$@"
' as_user "$@"
