//! Helpers for the integration tests: running the CLI, network namespaces that the tests make
//! and delete, a fixture HTTP server and TCP listeners inside them, and packets from chosen
//! source addresses.

#![allow(dead_code)]

pub mod cmd;
pub mod docker;
pub mod fixture;
pub mod lab;
pub mod netns;

/// Fails loudly, never skips, when a test that needs root runs without it.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "this end-to-end test needs root (network namespaces and netfilter): run the suite as root, \
         e.g. `sudo tests/run`"
    );
}

/// Every file under `dir` with its bytes, to prove a run left the state untouched.
pub fn snapshot_files(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.display().to_string(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}
