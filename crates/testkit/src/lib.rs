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

fn c_path(path: &std::path::Path) -> std::ffi::CString {
    std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path without NUL")
}

/// Moves the calling thread into new mount and network namespaces, with every mount private,
/// so that nothing it mounts propagates back to the host. `unshare(CLONE_NEWNS)` works on one
/// thread of a multithreaded process because it implies `CLONE_FS`: the thread gets its own
/// root and working directory, and the process's other threads keep seeing the host.
#[allow(unsafe_code)]
pub fn unshare_thread_mount_and_net() {
    // SAFETY: unshare changes only the calling thread's namespaces; no pointers.
    let result = unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWNET) };
    assert_eq!(
        result,
        0,
        "unshare(CLONE_NEWNS | CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
    let root = c_path(std::path::Path::new("/"));
    // SAFETY: a valid NUL-terminated path; null source, type and data are allowed for a
    // propagation change.
    let result = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    assert_eq!(
        result,
        0,
        "make / private: {}",
        std::io::Error::last_os_error()
    );
}

/// Mounts `source` over `target` (a bind mount; `source` `None`: a fresh tmpfs), in the
/// calling thread's mount namespace. With `mount(2)` directly: `mount(8)` writes `/run/mount`.
#[allow(unsafe_code)]
pub fn mount_over(source: Option<&std::path::Path>, target: &std::path::Path) {
    let target_c = c_path(target);
    let (source_c, kind, flags) = match source {
        Some(source) => (c_path(source), None, libc::MS_BIND),
        None => (
            c_path(std::path::Path::new("tmpfs")),
            Some(c_path(std::path::Path::new("tmpfs"))),
            0,
        ),
    };
    // SAFETY: valid NUL-terminated strings; a bind mount takes no type, neither takes data.
    let result = unsafe {
        libc::mount(
            source_c.as_ptr(),
            target_c.as_ptr(),
            kind.as_ref().map_or(std::ptr::null(), |kind| kind.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    assert_eq!(
        result,
        0,
        "mount {} over {}: {}",
        source.map_or("a tmpfs".into(), |source| source.display().to_string()),
        target.display(),
        std::io::Error::last_os_error()
    );
}

/// Detaches every mount strictly under `prefix` (a folder ending in `/`) in the calling
/// thread's mount namespace, deepest first, so that a sandbox folder holding their points can
/// be removed (`ip netns add` mounts `/run/netns` onto itself). Failures are ignored.
#[allow(unsafe_code)]
pub fn detach_mounts_under(prefix: &str) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/thread-self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(prefix))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.len()));
    for point in points {
        let point = c_path(std::path::Path::new(point));
        // SAFETY: a valid NUL-terminated path; the caller's mount namespace is private, so a
        // detach cannot reach the host.
        unsafe { libc::umount2(point.as_ptr(), libc::MNT_DETACH) };
    }
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

/// Every file under `root` (or `root` itself, if it is a file) with its bytes, keyed by
/// `label` and the path below it, sorted; a missing `root` is recorded as `LABEL (missing)`.
/// `keep(label, name)` chooses which entries of a folder are read. For a harness's dump of the
/// configuration a backend may touch, to prove a run left it byte for byte.
pub fn read_tree(
    label: &str,
    root: &std::path::Path,
    files: &mut std::collections::BTreeMap<String, Vec<u8>>,
    keep: &dyn Fn(&str, &str) -> bool,
) {
    let Ok(meta) = std::fs::metadata(root) else {
        files.insert(format!("{label} (missing)"), Vec::new());
        return;
    };
    if meta.is_file() {
        files.insert(label.to_owned(), std::fs::read(root).unwrap_or_default());
        return;
    }
    let mut entries: Vec<_> = std::fs::read_dir(root)
        .map(|entries| entries.flatten().collect())
        .unwrap_or_default();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if keep(label, &name) {
            read_tree(&format!("{label}/{name}"), &entry.path(), files, keep);
        }
    }
}
