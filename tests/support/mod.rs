//! Helpers for the integration tests: running the CLI, network namespaces that the tests make
//! and delete, a fixture HTTP server and TCP listeners inside them, and packets from chosen
//! source addresses.

// Without the `e2e` feature most of this is unused: the tests that need it are not built.
#![allow(dead_code, unused_imports)]

pub mod cmd;
pub mod docker;
pub mod fixture;
pub mod lab;
pub mod netns;
pub mod server;

pub use cf_allowlist_testkit::require_root;

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

/// The admin's own ufw rules the ufw tests start from, run through `ufw`: default deny, ssh
/// from the admin range, and an explicit deny for 443 that our allows must come before.
pub fn admin_ufw_rules(ufw: impl Fn(&[&str]) -> String) {
    admin_ssh_ufw_rules(&ufw);
    ufw(&["deny", "443/tcp"]);
}

/// Default deny plus ssh from the admin range (192.0.2.0/24), run through `ufw`.
pub fn admin_ssh_ufw_rules(ufw: impl Fn(&[&str]) -> String) {
    ufw(&["default", "deny", "incoming"]);
    let ssh = "allow proto tcp from 192.0.2.0/24 to any port 22 comment";
    let mut args: Vec<&str> = ssh.split(' ').collect();
    args.push("admin ssh");
    ufw(&args);
}
