//! The conformance harness, and the sandbox that lets ufw run without touching the host.
//!
//! ufw has no option to write elsewhere than `/etc/ufw`, `/etc/default/ufw` and `/run`, so the
//! tests give it private copies through a mount namespace. The conformance suite runs every
//! behaviour on its own thread of the one test process; a mount namespace normally belongs to a
//! whole process, but `unshare(CLONE_NEWNS)` on one thread works in a multithreaded process as
//! long as the thread also stops sharing its filesystem context with the others, which the
//! kernel does for us (`CLONE_NEWNS` implies `CLONE_FS`; only `CLONE_NEWUSER` and `CLONE_VM`
//! need a single-threaded caller). [`Sandbox::enter`] therefore, on the calling thread only:
//! copies the host's ufw files into a private temporary folder (reading them, never writing),
//! unshares the mount and network namespaces, makes every mount private so nothing propagates
//! back, and bind-mounts the copies over `/run` (first: `ufw.lock` and iptables' lock live
//! there), `/etc/ufw`, `/usr/lib/ufw` and `/etc/default/ufw`. Every process the thread starts
//! afterwards (ufw, `ip netns exec …`, the CLI) inherits both namespaces; other threads of the
//! test process see the host as before. The mounts are made with `mount(2)` directly, because
//! `mount(8)` writes `/run/mount`.
//!
//! The sandbox keeps descriptors of the host's folders opened before the overmount, and when it
//! is dropped it compares the host's files, read through those descriptors, with what they held
//! before: the host's ufw files must stay byte-identical.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use cf_allowlist_backend::conformance::Harness;
use cf_allowlist_backend::{Backend, Family, Policy, Ranges};
use cf_allowlist_testkit::must;

use crate::{UfwBackend, UfwOptions, Write, names, rules};

/// What the sandbox hides from the host: host path and the copy's name.
const BOUND: [(&str, &str); 4] = [
    ("/run", "run"),
    ("/etc/ufw", "etc-ufw"),
    ("/usr/lib/ufw", "lib-ufw"),
    ("/etc/default/ufw", "default-ufw"),
];

/// A private mount and network namespace for the calling thread, holding copies of ufw's
/// files; see the module documentation.
#[derive(Debug)]
pub struct Sandbox {
    dir: tempfile::TempDir,
    host_dirs: Vec<(&'static str, File)>,
    host_before: BTreeMap<String, Vec<u8>>,
}

/// [`cf_allowlist_testkit::read_tree`] of what ufw may touch: under `/run` only ufw's and
/// xtables' files.
fn read_tree(label: &str, root: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
    cf_allowlist_testkit::read_tree(label, root, files, &|label, name| {
        label != "/run" || name.starts_with("ufw") || name.starts_with("xtables")
    });
}

impl Sandbox {
    /// Enters a fresh sandbox on the calling thread (which must be one the test owns, as the
    /// conformance suite's are): ufw inactive, no user rules but what the host's copy holds,
    /// loopback up.
    pub fn enter() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("cf-allowlist-ufw-")
            .tempdir()
            .expect("sandbox folder");
        for (host, copy) in BOUND {
            let target = dir.path().join(copy);
            if host == "/run" {
                std::fs::create_dir(&target).expect("sandbox run folder");
            } else {
                must(
                    "cp",
                    &["-a", host, target.to_str().expect("utf-8 sandbox path")],
                );
            }
        }
        // ufw as Debian installs it: disabled.
        let conf = dir.path().join("etc-ufw").join(names::CONF_FILE);
        let text = std::fs::read_to_string(&conf).expect("ufw.conf");
        let text: String = text
            .lines()
            .map(|line| {
                if line.starts_with("ENABLED=") {
                    "ENABLED=no\n".to_owned()
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        std::fs::write(&conf, text).expect("write ufw.conf copy");

        let host_dirs: Vec<(&'static str, File)> = BOUND
            .iter()
            .map(|(host, _)| (*host, File::open(host).expect("open host path")))
            .collect();
        let mut host_before = BTreeMap::new();
        for (host, _) in BOUND {
            read_tree(host, Path::new(host), &mut host_before);
        }

        cf_allowlist_testkit::unshare_thread_mount_and_net();
        for (host, copy) in BOUND {
            cf_allowlist_testkit::mount_over(Some(&dir.path().join(copy)), Path::new(host));
        }
        must("ip", &["link", "set", "lo", "up"]);
        Sandbox {
            dir,
            host_dirs,
            host_before,
        }
    }

    /// The private folder holding the copies (and free for other test files).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The host's files as they are now, read through descriptors opened before the overmount.
    pub fn host_files(&self) -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        for (host, file) in &self.host_dirs {
            let through = PathBuf::from(format!("/proc/thread-self/fd/{}", file.as_raw_fd()));
            read_tree(host, &through, &mut files);
        }
        files
    }

    /// Panics unless the host's ufw files are byte-identical to what they were before.
    pub fn assert_host_untouched(&self) {
        let now = self.host_files();
        let changed: Vec<&String> = self
            .host_before
            .keys()
            .chain(now.keys())
            .filter(|key| self.host_before.get(*key) != now.get(*key))
            .collect();
        assert!(
            changed.is_empty(),
            "the sandbox leaked: host files changed: {changed:?}"
        );
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // `ip netns add` mounts `/run/netns` onto itself: detached, the sandbox folder can go.
        cf_allowlist_testkit::detach_mounts_under("/run/");
        if !std::thread::panicking() {
            self.assert_host_untouched();
        }
    }
}

/// Runs `ufw ARGS…` in the sandbox and panics if it fails.
pub fn ufw(args: &[&str]) -> String {
    must("ufw", args)
}

/// The arguments of `ufw [VERB] allow proto tcp from SOURCE to any port PORTS` (no verb when
/// `verb` is empty): the spec of an allow like ours, to add, insert or delete it.
pub fn tcp_allow<'a>(verb: &'a str, source: &'a str, ports: &'a str) -> Vec<&'a str> {
    let allow = [
        "allow", "proto", "tcp", "from", source, "to", "any", "port", ports,
    ];
    let verb = Some(verb).filter(|verb| !verb.is_empty());
    verb.into_iter().chain(allow).collect()
}

/// Both rules files, as ufw wrote them.
pub fn rules_files() -> String {
    Family::ALL
        .iter()
        .map(|family| {
            std::fs::read_to_string(
                Path::new(names::DEFAULT_RULES_DIR).join(names::rules_file(*family)),
            )
            .expect("read rules file")
        })
        .collect()
}

/// Runs the ufw backend in a [`Sandbox`] on the calling thread, starting from ufw as installed
/// (inactive), with backends whose `enable` option is set. In `calls` mode its program is a
/// wrapper around ufw that copies both rules files after every call, so that the states an
/// apply passes through can be examined; in `batch` mode it is ufw itself (a shell wrapper would
/// make the backend fall back to calls), and a batch's intermediate states are not observable.
#[derive(Debug)]
pub struct UfwHarness {
    sandbox: Sandbox,
    wrapper: PathBuf,
    log: PathBuf,
    write: Write,
}

impl UfwHarness {
    /// Enters a sandbox and builds the harness in it, for one call per rule.
    pub fn new() -> UfwHarness {
        UfwHarness::writing(Write::Calls)
    }

    /// Enters a sandbox and builds the harness in it, for `write`.
    pub fn writing(write: Write) -> UfwHarness {
        let sandbox = Sandbox::enter();
        let log = sandbox.path().join("states");
        std::fs::create_dir(&log).expect("log folder");
        let wrapper = sandbox.path().join("ufw-wrapper");
        let ufw = cf_allowlist_backend::tool::locate("ufw").expect("ufw is installed");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\n{} \"$@\"\nstatus=$?\nn=$(ls {log} | wc -l)\n\
                 {{ echo \"$*\"; cat {dir}/user.rules {dir}/user6.rules; }} > {log}/$(printf %06d \"$n\")\n\
                 exit $status\n",
                ufw.display(),
                log = log.display(),
                dir = names::DEFAULT_RULES_DIR,
            ),
        )
        .expect("write wrapper");
        must("chmod", &["0755", wrapper.to_str().expect("utf-8 path")]);
        UfwHarness {
            sandbox,
            wrapper,
            log,
            write,
        }
    }

    /// The sandbox.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    fn our_exact_ranges(text: &str) -> Ranges {
        text.lines()
            .filter_map(rules::parse_tuple_line)
            .filter(|tuple| tuple.comment.as_deref() == Some(names::COMMENT))
            .filter_map(|tuple| tuple.src.parse().ok())
            .collect()
    }
}

impl Default for UfwHarness {
    fn default() -> UfwHarness {
        UfwHarness::new()
    }
}

impl Harness for UfwHarness {
    fn backend(&self, policy: &Policy) -> Box<dyn Backend> {
        Box::new(UfwBackend::new(
            UfwOptions {
                program: match self.write {
                    Write::Calls => self.wrapper.clone(),
                    Write::Batch => {
                        cf_allowlist_backend::tool::locate("ufw").expect("ufw is installed")
                    }
                },
                enable: true,
                write: self.write,
                ..UfwOptions::default()
            },
            policy.clone(),
        ))
    }

    fn dump(&self) -> String {
        rules_files()
    }

    fn add_foreign_rule(&self) {
        for source in ["192.0.2.0/24", "2001:db8:1::/64"] {
            let mut ssh = tcp_allow("", source, "22");
            ssh.extend(["comment", "admin ssh"]);
            ufw(&ssh);
        }
        ufw(&["deny", "443/tcp"]);
    }

    fn foreign_rule_present(&self) -> bool {
        let text = rules_files();
        let tuples: Vec<_> = text.lines().filter_map(rules::parse_tuple_line).collect();
        tuples
            .iter()
            .filter(|tuple| tuple.comment.as_deref() == Some("admin ssh"))
            .count()
            == 2
            && tuples
                .iter()
                .filter(|tuple| tuple.action == "deny" && tuple.comment.is_none())
                .count()
                == 2
    }

    fn drift_kinds(&self) -> Vec<&'static str> {
        vec![
            "first IPv4 allow of ours deleted with ufw delete",
            "first IPv4 allow of ours re-added for port 8080",
            "IPv6 allow of ours deleted with ufw delete",
            "ufw disabled",
        ]
    }

    fn cause_drift(&self, kind: &str) {
        let first = |family: Family| {
            crate::read_rules(Path::new(names::DEFAULT_RULES_DIR), family)
                .expect("rules")
                .into_iter()
                .find(|tuple| tuple.comment.as_deref() == Some(names::COMMENT))
                .expect("a rule of ours")
        };
        match kind {
            "first IPv4 allow of ours deleted with ufw delete"
            | "IPv6 allow of ours deleted with ufw delete" => {
                let family = if kind.starts_with("IPv6") {
                    Family::V6
                } else {
                    Family::V4
                };
                let tuple = first(family);
                ufw(&tcp_allow("delete", &tuple.src, &tuple.dport));
            }
            "first IPv4 allow of ours re-added for port 8080" => {
                let tuple = first(Family::V4);
                ufw(&tcp_allow("delete", &tuple.src, &tuple.dport));
                let mut prepend = tcp_allow("prepend", &tuple.src, "8080");
                prepend.extend(["comment", names::COMMENT]);
                ufw(&prepend);
            }
            "ufw disabled" => {
                ufw(&["disable"]);
            }
            other => panic!("unknown drift {other:?}"),
        }
    }

    fn our_verdicts_in_order(&self) -> Vec<Vec<String>> {
        Family::ALL
            .iter()
            .map(|family| {
                crate::read_rules(Path::new(names::DEFAULT_RULES_DIR), *family)
                    .expect("rules")
                    .into_iter()
                    .filter(|tuple| crate::base_comment(tuple).is_some())
                    .map(|tuple| match tuple.action.as_str() {
                        "allow" => "accept".to_owned(),
                        _ => "drop".to_owned(),
                    })
                    .collect()
            })
            .collect()
    }

    /// The ranges our rules allowed in the files after each ufw call of the last apply: the
    /// order of the steps. Within a call ufw loads its user chains with one `iptables-restore
    /// -n`, which replaces each in one transaction (it flushes only its logging chains first);
    /// `tests/e2e_ufw.rs` reads the live table during applies to prove it. The last
    /// apply is what follows the last `enable` call: the suite's first sync always enables ufw
    /// (the harness starts it inactive), the second never does.
    fn states_during_last_apply(&self) -> Option<Vec<Ranges>> {
        if self.write == Write::Batch {
            return None;
        }
        let mut entries: Vec<_> = std::fs::read_dir(&self.log)
            .expect("log")
            .flatten()
            .map(|entry| entry.path())
            .collect();
        entries.sort();
        let logged: Vec<String> = entries
            .iter()
            .map(|path| std::fs::read_to_string(path).expect("logged state"))
            .collect();
        let start = logged
            .iter()
            .rposition(|text| text.lines().next() == Some("--force enable"))
            .map_or(0, |at| at + 1);
        Some(
            logged[start..]
                .iter()
                .map(|text| UfwHarness::our_exact_ranges(text))
                .collect(),
        )
    }
}
