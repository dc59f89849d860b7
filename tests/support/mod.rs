//! Helpers for the integration tests: running the CLI, network namespaces that the tests make
//! and delete, a fixture HTTP server and TCP listeners inside them, and packets from chosen
//! source addresses.

#![allow(dead_code)]

pub mod cmd;
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
