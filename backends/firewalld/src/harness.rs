//! The conformance harness, and the sandbox that runs a real firewalld without touching the
//! host.
//!
//! firewalld has no option to use another configuration folder or bus, and this host's
//! firewalld must never run; so [`Sandbox::enter`], on the calling thread only (see
//! `cf_allowlist_testkit::unshare_thread_mount_and_net`), unshares the mount and network
//! namespaces, bind-mounts a private copy of `/etc/firewalld` over it, mounts a tmpfs on `/run`
//! (the D-Bus socket, firewalld's lock) and a private folder over `/var/log` (firewalld's log),
//! then starts its own `dbus-daemon --system` and `firewalld --nofork --nopid` as children of
//! the test and waits until `firewall-cmd --state` answers (~1.5 s). Every process the thread
//! starts afterwards (firewall-cmd, the backend's client, the CLI) talks to that firewalld.
//!
//! Dropping the sandbox (also when the test fails) ends firewalld and dbus-daemon by their
//! PIDs, waits for them, and detaches the mounts; the network namespace goes with the thread.
//! It also checks that the host's `/etc/firewalld` is byte-identical to what it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cf_allowlist_backend::conformance::Harness;
use cf_allowlist_backend::{Backend, Family, Policy};
use cf_allowlist_testkit::{mount_over, must, unshare_thread_mount_and_net};

use crate::{FirewalldBackend, FirewalldOptions, names};

/// A private mount and network namespace for the calling thread, with its own D-Bus system
/// bus and firewalld; see the module documentation.
#[derive(Debug)]
pub struct Sandbox {
    dir: tempfile::TempDir,
    /// Started by us, ended by their PIDs on drop (firewalld first).
    children: Vec<Child>,
    host_before: BTreeMap<String, Vec<u8>>,
}

/// Every file under `root` with its bytes ([`cf_allowlist_testkit::read_tree`]).
fn read_tree(label: &str, root: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
    cf_allowlist_testkit::read_tree(label, root, files, &|_, _| true);
}

fn host_config() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    read_tree("/etc/firewalld", Path::new("/etc/firewalld"), &mut files);
    files
}

impl Sandbox {
    /// Enters a fresh sandbox on the calling thread (one the test owns) and starts firewalld in
    /// it with the host's configuration as Debian installs it; loopback up.
    pub fn enter() -> Sandbox {
        let mut sandbox = Sandbox::enter_stopped();
        must("ip", &["link", "set", "lo", "up"]);
        sandbox.start_firewalld(None);
        sandbox
    }

    /// Enters a fresh sandbox with its D-Bus system bus running but no firewalld yet: the
    /// caller makes its network namespaces first (see [`Sandbox::start_firewalld`]).
    pub fn enter_stopped() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("cf-allowlist-firewalld-")
            .tempdir()
            .expect("sandbox folder");
        let etc = dir.path().join("etc-firewalld");
        let log = dir.path().join("log");
        std::fs::create_dir(&log).expect("sandbox log folder");
        must(
            "cp",
            &[
                "-a",
                "/etc/firewalld",
                etc.to_str().expect("utf-8 sandbox path"),
            ],
        );
        let host_before = host_config();
        unshare_thread_mount_and_net();
        // /run first: the mounts below must not write the host's /run.
        mount_over(None, Path::new("/run"));
        mount_over(Some(&etc), Path::new("/etc/firewalld"));
        mount_over(Some(&log), Path::new("/var/log"));
        std::fs::create_dir_all("/run/dbus").expect("/run/dbus in the sandbox");
        let mut sandbox = Sandbox {
            dir,
            children: Vec::new(),
            host_before,
        };
        sandbox.start(
            "dbus-daemon",
            &["--system", "--nofork", "--nopidfile", "--nosyslog"],
        );
        wait_for(
            Duration::from_secs(20),
            "the sandbox's D-Bus system bus",
            || Path::new("/run/dbus/system_bus_socket").exists(),
        );
        sandbox
    }

    /// Starts firewalld in the sandbox, in the network namespace `netns` (made with `ip netns
    /// add` from this thread; `None`: the sandbox's own), and waits until it answers.
    pub fn start_firewalld(&mut self, netns: Option<&str>) {
        match netns {
            // `ip netns exec` execs firewalld in place: the child's PID is firewalld's.
            Some(netns) => self.start(
                "ip",
                &["netns", "exec", netns, "firewalld", "--nofork", "--nopid"],
            ),
            None => self.start("firewalld", &["--nofork", "--nopid"]),
        }
        wait_for(Duration::from_secs(60), "firewalld in the sandbox", || {
            Command::new("firewall-cmd")
                .arg("--state")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        });
    }

    fn start(&mut self, program: &str, args: &[&str]) {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {program}: {error}"));
        self.children.push(child);
    }

    /// The private folder (free for other test files).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Ends firewalld, as `systemctl stop` would (SIGTERM, so that it removes its table), and
    /// waits for it; the sandbox's D-Bus stays up.
    pub fn stop_firewalld(&mut self) {
        for child in self.children.iter_mut().skip(1) {
            end(child);
        }
    }

    /// Ends firewalld and then the sandbox's D-Bus system bus.
    pub fn stop_bus(&mut self) {
        self.stop_firewalld();
        if let Some(bus) = self.children.first_mut() {
            end(bus);
        }
    }
}

/// Ends a child by its PID: SIGTERM, then SIGKILL after ten seconds; waits for it.
#[allow(unsafe_code)]
fn end(child: &mut Child) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    // SAFETY: kill takes no pointers; the PID is our own child's, not yet reaped, so it cannot
    // name another process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_for(limit: Duration, what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} did not come up within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // firewalld first: it talks to the bus while it stops.
        for child in self.children.iter_mut().rev() {
            end(child);
        }
        cf_allowlist_testkit::detach_mounts_under("/run/");
        let host_now = {
            // The host's folder is hidden by our bind: read it through the host's root.
            let mut files = BTreeMap::new();
            let root = format!("/proc/{}/root/etc/firewalld", std::process::id());
            read_tree("/etc/firewalld", Path::new(&root), &mut files);
            files
        };
        if !std::thread::panicking() {
            assert_eq!(
                host_now.keys().collect::<Vec<_>>(),
                self.host_before.keys().collect::<Vec<_>>(),
                "the sandbox leaked: the host's /etc/firewalld changed"
            );
            assert!(
                host_now == self.host_before,
                "the sandbox leaked: a file of the host's /etc/firewalld changed"
            );
        }
    }
}

/// Runs `firewall-cmd ARGS…` in the sandbox and panics if it fails.
pub fn firewall_cmd(args: &[&str]) -> String {
    must("firewall-cmd", args)
}

/// Runs `firewall-cmd ARGS…` at runtime and again with `--permanent`.
pub fn both(args: &[&str]) {
    firewall_cmd(args);
    let mut permanent = vec!["--permanent"];
    permanent.extend_from_slice(args);
    firewall_cmd(&permanent);
}

/// The admin's own rich rule the harness adds.
pub const FOREIGN_RULE: &str =
    "rule family=\"ipv4\" source address=\"192.0.2.0/24\" port port=\"22\" protocol=\"tcp\" accept";

/// Lines of `text` with the lines inside each `{ … }` block sorted: firewalld's order of rules
/// within a chain follows the order they were added, which a repair changes.
fn sorted_blocks(text: &str) -> String {
    let mut out = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.trim_end().ends_with('{') || line.trim() == "}" {
            block.sort_unstable();
            out.append(&mut block);
            out.push(line);
        } else {
            block.push(line);
        }
    }
    block.sort_unstable();
    out.append(&mut block);
    out.join("\n")
}

/// The kernel's ruleset and firewalld's permanent configuration, as text: equal dumps mean
/// nothing was changed (up to the order of rules within a chain or list).
pub fn dump() -> String {
    let ipsets = firewall_cmd(&["--permanent", "--get-ipsets"]);
    let mut text = sorted_blocks(&must("nft", &["list", "ruleset"]));
    text.push_str("\n--- permanent zones\n");
    text.push_str(&sorted_blocks(&firewall_cmd(&[
        "--permanent",
        "--list-all-zones",
    ])));
    for ipset in ipsets.split_whitespace() {
        text.push_str(&format!("\n--- permanent ipset {ipset}\n"));
        text.push_str(&firewall_cmd(&[
            "--permanent",
            &format!("--info-ipset={ipset}"),
        ]));
    }
    text
}

/// The verdicts of the rules naming `set` in the zone's input chains, in the order a packet
/// meets them (`_allow`, then `_post`).
pub fn verdicts_naming(zone: &str, set: &str) -> Vec<String> {
    ["allow", "post"]
        .iter()
        .flat_map(|part| {
            must(
                "nft",
                &[
                    "list",
                    "chain",
                    "inet",
                    names::TABLE,
                    &format!("filter_IN_{zone}_{part}"),
                ],
            )
            .lines()
            .filter(|line| line.contains(&format!("@{set}")))
            .filter_map(|line| line.split_whitespace().last().map(str::to_owned))
            .collect::<Vec<_>>()
        })
        .collect()
}

/// Runs the firewalld backend against a real firewalld in a [`Sandbox`] on the calling thread.
#[derive(Debug)]
pub struct FirewalldHarness {
    sandbox: Sandbox,
}

impl FirewalldHarness {
    /// Enters a sandbox with firewalld running.
    pub fn new() -> FirewalldHarness {
        FirewalldHarness {
            sandbox: Sandbox::enter(),
        }
    }

    /// The sandbox.
    pub fn sandbox(&mut self) -> &mut Sandbox {
        &mut self.sandbox
    }
}

impl Default for FirewalldHarness {
    fn default() -> FirewalldHarness {
        FirewalldHarness::new()
    }
}

/// The first entry of one of our runtime ipsets.
fn first_entry(family: Family, permanent: bool) -> String {
    let mut args = vec![];
    if permanent {
        args.push("--permanent".to_owned());
    }
    args.push(format!("--ipset={}", names::ipset(family)));
    args.push("--get-entries".to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    firewall_cmd(&args)
        .split_whitespace()
        .next()
        .expect("an entry of ours")
        .to_owned()
}

impl Harness for FirewalldHarness {
    fn backend(&self, policy: &Policy) -> Box<dyn Backend> {
        Box::new(FirewalldBackend::new(
            FirewalldOptions::default(),
            policy.clone(),
        ))
    }

    fn dump(&self) -> String {
        dump()
    }

    fn add_foreign_rule(&self) {
        both(&[&format!("--add-rich-rule={FOREIGN_RULE}")]);
        both(&["--add-port=8080/tcp"]);
    }

    fn foreign_rule_present(&self) -> bool {
        [vec![], vec!["--permanent"]].iter().all(|prefix| {
            let mut rules = prefix.clone();
            rules.push("--list-rich-rules");
            let mut ports = prefix.clone();
            ports.push("--list-ports");
            firewall_cmd(&rules)
                .lines()
                .filter(|line| *line == FOREIGN_RULE)
                .count()
                == 1
                && firewall_cmd(&ports)
                    .split_whitespace()
                    .any(|port| port == "8080/tcp")
        })
    }

    fn drift_kinds(&self) -> Vec<&'static str> {
        vec![
            "first IPv4 entry removed at runtime",
            "IPv4 accept for port 443 removed, runtime and permanent",
            "first IPv6 entry removed from the permanent ipset only",
        ]
    }

    fn cause_drift(&self, kind: &str) {
        match kind {
            "first IPv4 entry removed at runtime" => {
                let entry = first_entry(Family::V4, false);
                firewall_cmd(&[
                    &format!("--ipset={}", names::ipset(Family::V4)),
                    &format!("--remove-entry={entry}"),
                ]);
            }
            "IPv4 accept for port 443 removed, runtime and permanent" => {
                both(&[&format!(
                    "--remove-rich-rule={}",
                    crate::accept_rule(Family::V4, 443)
                )]);
            }
            "first IPv6 entry removed from the permanent ipset only" => {
                let entry = first_entry(Family::V6, true);
                firewall_cmd(&[
                    "--permanent",
                    &format!("--ipset={}", names::ipset(Family::V6)),
                    &format!("--remove-entry={entry}"),
                ]);
            }
            other => panic!("unknown drift {other:?}"),
        }
    }

    fn our_verdicts_in_order(&self) -> Vec<Vec<String>> {
        let zone = firewall_cmd(&["--get-default-zone"]).trim().to_owned();
        Family::ALL
            .iter()
            .map(|family| verdicts_naming(&zone, names::ipset(*family)))
            .collect()
    }
}

/// firewall-cmd's Python interpreter, which the backend runs its client with (tests wrap it to
/// count the client's starts).
pub fn python() -> PathBuf {
    crate::client::interpreter_of(Path::new(names::DEFAULT_FIREWALL_CMD))
        .expect("firewall-cmd is a Python program")
}
