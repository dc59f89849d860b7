//! What cf-allowlist's integration tests (`tests/support`) and the backends' conformance
//! harnesses share, in one place instead of a copy each: running a command that must succeed,
//! a fresh network namespace for the calling thread, and the check that fails (never skips) a
//! test that needs root. The in-memory backend stays in `cf-allowlist-memory`, which the core's
//! unit tests use too.

use std::process::Command;

/// Runs `program args…` and panics with its output if it fails; returns its stdout.
#[track_caller]
pub fn must(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Moves the calling thread into a new, empty network namespace (freed when the thread ends).
pub fn unshare_thread_netns() {
    // SAFETY: unshare only changes the calling thread's namespaces; it takes no pointers.
    #[allow(unsafe_code)]
    let result = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        result,
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
}

/// Fails loudly, never skips, when a test that needs root runs without it.
#[track_caller]
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

/// Runs `work` on a new thread and waits for it, passing its panic on: namespaces belong to a
/// thread, so one that a test enters never leaks into the test harness's own threads.
pub fn on_new_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(work)
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Runs `work`, which needs root, on a new thread in a fresh, empty network namespace.
#[track_caller]
pub fn in_fresh_netns<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    require_root();
    on_new_thread(move || {
        unshare_thread_netns();
        work()
    })
}

/// Property-test strategies shared by the tests of crates that parse or render ranges.
#[cfg(feature = "strategies")]
pub mod strategies {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use ipnet::IpNet;
    use proptest::prelude::*;

    /// Canonical networks (host bits cleared) of both families, with a prefix length of at
    /// least `shortest` (0 allows the whole address space).
    pub fn network(shortest: u8) -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u32>(), shortest..=32).prop_map(|(bits, length)| {
                IpNet::new(Ipv4Addr::from(bits).into(), length)
                    .unwrap()
                    .trunc()
            }),
            (any::<u128>(), shortest..=128).prop_map(|(bits, length)| {
                IpNet::new(Ipv6Addr::from(bits).into(), length)
                    .unwrap()
                    .trunc()
            }),
        ]
    }
}
