#!/usr/bin/env bash
# Checks ARCHITECTURE.md's "Adding a backend": in a temporary copy of the tree, adds a
# throwaway backend (`null`, which holds nothing and writes nothing) as a new crate, one
# feature (with its optional dependency) and one registry line, then shows that nothing else
# changed and that a build with only that backend runs `sync --dry-run --backend null`.
# Builds into target/sixth-backend (kept between runs, so only the first run is slow).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
cd "$root"
git ls-files -z --cached --others --exclude-standard | tar --null -cf - -T - | tar -xf - -C "$copy"
cd "$copy"
git init -q && git add -A && git -c user.name=check -c user.email=check@example.invalid commit -qm tree

# 1. The crate.
mkdir -p backends/null/src
cat >backends/null/Cargo.toml <<'TOML'
[package]
name = "cf-allowlist-null"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
cf-allowlist-backend.workspace = true
serde.workspace = true
TOML
cat >backends/null/src/lib.rs <<'RUST'
//! A backend that holds nothing and writes nothing: the throwaway sixth backend.
#![allow(missing_docs)]
use cf_allowlist_backend::{Backend, BackendError, BackendOptions, Change, Observed, Policy};

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullOptions {}

pub struct NullBackend;

impl Backend for NullBackend {
    fn label(&self) -> String {
        "null".to_owned()
    }
    fn observe(&self) -> Result<Observed, BackendError> {
        Ok(Observed::default())
    }
    fn apply(&self, _change: &Change) -> Result<(), BackendError> {
        Ok(())
    }
    fn purge(&self) -> Result<Vec<String>, BackendError> {
        Ok(Vec::new())
    }
}

impl BackendOptions for NullOptions {
    fn build(&self, _policy: &Policy, _owner: Option<&str>) -> Box<dyn Backend> {
        Box::new(NullBackend)
    }
    fn describe(&self) -> String {
        "nowhere".to_owned()
    }
}
RUST

# 2. The feature, with its optional dependency.
sed -i 's/^\[features\]$/[features]\nnull = ["dep:cf-allowlist-null"]/' Cargo.toml
sed -i 's/^\[dependencies\]$/[dependencies]\ncf-allowlist-null = { path = "backends\/null", optional = true }/' Cargo.toml

# 3. The registry line.
sed -i 's/^registry! {$/registry! {\n    #[cfg(feature = "null")] Null = "null", null: cf_allowlist_null::NullOptions, "The throwaway sixth backend.";/' src/backends.rs

git add -A
# Outside the new crate: the feature and its dependency, and the registry line.
changed=$(git diff --cached --numstat | awk '$3 !~ /^backends\/null\// {print $3 " +" $1 " -" $2}')
echo "$changed"
expected=$'Cargo.toml +2 -0\nsrc/backends.rs +1 -0'
if [ "$changed" != "$expected" ]; then
  echo "tests/sixth_backend.sh: adding a backend changed more than a crate, a feature and a registry line" >&2
  exit 1
fi

export CARGO_TARGET_DIR="$root/target/sixth-backend"
output=$(cargo run --quiet --no-default-features --features null -- \
  sync --dry-run --backend null --source builtin --state-dir "$copy/state" 2>&1) || {
  echo "$output" >&2
  echo "tests/sixth_backend.sh: the build with only the new backend failed" >&2
  exit 1
}
grep -q "null (nowhere" <<<"$output" || {
  echo "$output" >&2
  echo "tests/sixth_backend.sh: the plan does not name the new backend" >&2
  exit 1
}
echo "sixth backend: one crate, one feature, one registry line; built and planned with it"
