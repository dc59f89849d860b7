//! firewalld end to end, proven by TCP connects from the edge through the table a real
//! firewalld wrote.
//!
//! Each test runs on one thread inside a `cf_allowlist_firewalld::harness::Sandbox`: a private
//! mount namespace with a copy of `/etc/firewalld`, a tmpfs on `/run` and its own D-Bus system
//! bus; the lab's namespaces are made from that thread and firewalld runs in the origin. The
//! sandbox ends firewalld and dbus-daemon by their PIDs, also when a test fails, and checks that
//! the host's `/etc/firewalld` is untouched.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cf_allowlist_firewalld::harness::{both, firewall_cmd};

use crate::support::cmd::Outcome;
use crate::support::fixture::Reply;
use crate::support::lab::{
    IN_FIRST_LIST, IN_SECOND_LIST, Lab, SECOND_V4, expect_open, with_firewalld_lab,
};

/// The admin's own ssh rule: the lab expects only the admin range to reach 22.
const ADMIN_SSH: &str =
    "rule family=\"ipv4\" source address=\"192.0.2.0/24\" port port=\"22\" protocol=\"tcp\" accept";

/// The admin's firewalld: the public zone without its ssh service, ssh from the admin range.
fn admin_setup() {
    both(&["--remove-service=ssh"]);
    both(&[&format!("--add-rich-rule={ADMIN_SSH}")]);
}

/// A Python that records which client command each start runs (`observe`, `apply`), then runs
/// firewall-cmd's own interpreter.
fn counting_python(dir: &Path) -> (PathBuf, PathBuf) {
    let calls = dir.join("client-calls");
    std::fs::write(&calls, "").unwrap();
    let wrapper = dir.join("python-counting");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$3\" >> {}\nexec {} \"$@\"\n",
            calls.display(),
            cf_allowlist_firewalld::harness::python().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, calls)
}

/// The client starts recorded since the last call, emptied.
fn take_calls(calls: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(calls).unwrap();
    std::fs::write(calls, "").unwrap();
    text.lines().map(str::to_owned).collect()
}

/// The kernel's ruleset in the origin and every file of firewalld's permanent configuration.
fn firewall_state(lab: &Lab) -> (String, Vec<(PathBuf, Vec<u8>)>) {
    let mut files = Vec::new();
    let mut folders = vec![PathBuf::from("/etc/firewalld")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    (lab.origin.exec("nft", &["list", "ruleset"]), files)
}

/// The handle of `table inet firewalld`: a reload deletes and re-creates the table, so a new
/// handle means firewalld was reloaded.
fn table_handle(lab: &Lab) -> String {
    let listing = lab
        .origin
        .exec("nft", &["-a", "list", "table", "inet", "firewalld"]);
    listing
        .lines()
        .next()
        .and_then(|line| line.split("# handle ").nth(1))
        .expect("table inet firewalld with its handle")
        .trim()
        .to_owned()
}

/// One of our ipsets' entries, runtime or permanent.
fn entries(ipset: &str, permanent: bool) -> BTreeSet<String> {
    let ipset = format!("--ipset={ipset}");
    let mut args = vec![ipset.as_str(), "--get-entries"];
    if permanent {
        args.insert(0, "--permanent");
    }
    firewall_cmd(&args)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[track_caller]
fn assert_runtime_equals_permanent() {
    for ipset in ["cf-allowlist-v4", "cf-allowlist-v6"] {
        assert_eq!(entries(ipset, false), entries(ipset, true), "{ipset}");
    }
    let rules = |permanent: bool| -> BTreeSet<String> {
        let mut args = vec!["--list-rich-rules"];
        if permanent {
            args.insert(0, "--permanent");
        }
        firewall_cmd(&args).lines().map(str::to_owned).collect()
    };
    assert_eq!(rules(false), rules(true));
}

fn config(lab: &Lab, python: &Path) -> String {
    lab.write_config(&format!(
        "restrict = true\n[[backend]]\nkind = \"firewalld\"\npython = \"{}\"\n",
        python.display()
    ))
}

fn sync(lab: &Lab, config: &str, extra: &[&str]) -> Outcome {
    lab.sync_config(config, extra)
}

/// The whole story with restrict on: dry run, first sync (one reload, creating the ipsets),
/// a no-op, a list change by difference without a reload while a kept range stays in the
/// live set, and purge leaving the admin's own configuration.
#[test]
fn firewalld_end_to_end() {
    with_firewalld_lab(|lab, sandbox| {
        admin_setup();
        lab.assert_only_admin_ssh_open();
        let (python, calls) = counting_python(sandbox.path());
        let config = config(lab, &python);

        let before = firewall_state(lab);
        sync(lab, &config, &["--dry-run"])
            .code(0)
            .stdout_has("+ 198.51.100.0/25")
            .stdout_has("+ 2001:db8:cf::/48");
        assert_eq!(firewall_state(lab), before, "the dry run changed firewalld");
        assert!(
            !take_calls(&calls).contains(&"apply".to_owned()),
            "the dry run wrote"
        );

        let handle = table_handle(lab);
        sync(lab, &config, &[]).code(0);
        assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
        assert_runtime_equals_permanent();
        assert_ne!(
            table_handle(lab),
            handle,
            "creating the ipsets reloads firewalld once (which the detector must see)"
        );
        let first = take_calls(&calls);
        eprintln!("first sync: client starts {first:?}");

        // Nothing to change: no write, no reload.
        let handle = table_handle(lab);
        let applied = firewall_state(lab);
        sync(lab, &config, &[]).code(0).silent();
        let noop = take_calls(&calls);
        eprintln!("no-op sync: client starts {noop:?}");
        assert!(!noop.contains(&"apply".to_owned()), "a no-op sync wrote");
        assert_eq!(
            firewall_state(lab),
            applied,
            "a no-op sync changed firewalld"
        );

        // A list change: by difference, one apply, no reload, and the kept ranges stay in the
        // live set throughout (read in a loop while the sync runs).
        lab.fixture.set("/ips-v4", Reply::ok(SECOND_V4));
        let done = std::sync::atomic::AtomicBool::new(false);
        let (moved, readings) = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut readings = Vec::new();
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    readings.push(lab.origin.exec(
                        "nft",
                        &["list", "set", "inet", "firewalld", "cf-allowlist-v4"],
                    ));
                }
                readings
            });
            let moved = sync(lab, &config, &[]);
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            (moved, reader.join().unwrap())
        });
        lab.assert_moved_to_the_second_list(&moved);
        assert!(!readings.is_empty());
        for reading in &readings {
            for kept in ["198.51.100.0/25", "198.51.100.128/25"] {
                assert!(
                    reading.contains(kept),
                    "{kept} missing mid-apply: {reading}"
                );
            }
        }
        let change = take_calls(&calls);
        eprintln!(
            "list change: client starts {change:?}, {} live readings",
            readings.len()
        );
        assert_eq!(
            change.iter().filter(|call| *call == "apply").count(),
            1,
            "{change:?}"
        );
        assert_eq!(
            table_handle(lab),
            handle,
            "a list change reloaded firewalld"
        );
        assert_runtime_equals_permanent();

        // An admin's reload keeps ours (it is permanent), and the next sync has nothing to do.
        firewall_cmd(&["--reload"]);
        assert_eq!(lab.open(), expect_open(&IN_SECOND_LIST));
        sync(lab, &config, &[]).code(0).silent();
        assert!(!take_calls(&calls).contains(&"apply".to_owned()));
        lab.cf(&["--config", &config, "status"]).code(0).stdout_has(
            "firewalld (default zone, ipsets cf-allowlist-v4/v6, tcp 80,443, restrict)",
        );

        lab.assert_another_state_directory_refuses_to_adopt("firewalld");

        // Purge: ours gone (runtime and permanent), the admin's configuration as it was.
        lab.cf(&["--config", &config, "purge"]).code(0);
        lab.assert_only_admin_ssh_open();
        assert_eq!(
            firewall_cmd(&["--list-rich-rules"]).trim(),
            ADMIN_SSH,
            "runtime rich rules after purge"
        );
        assert_eq!(
            firewall_cmd(&["--permanent", "--list-rich-rules"]).trim(),
            ADMIN_SSH
        );
        assert!(!firewall_cmd(&["--permanent", "--list-services"]).contains("ssh"));
        assert!(!firewall_cmd(&["--permanent", "--get-ipsets"]).contains("cf-allowlist"));
        assert!(
            !lab.origin
                .exec("nft", &["list", "ruleset"])
                .contains("cf-allowlist")
        );
    });
}

/// firewalld refuses overlapping entries in a hash:net ipset (INVALID_ENTRY); a list holding a
/// range and one inside it is loaded collapsed.
#[test]
fn firewalld_loads_overlapping_ranges_collapsed() {
    with_firewalld_lab(|lab, _| {
        admin_setup();
        lab.fixture.set(
            "/ips-v4",
            Reply::ok("198.51.100.0/24\n198.51.100.0/25\n198.51.100.128/26\n203.0.113.0/25"),
        );
        lab.sync("firewalld", &[]).code(0);
        assert_eq!(
            entries("cf-allowlist-v4", false),
            BTreeSet::from(["198.51.100.0/24".to_owned(), "203.0.113.0/25".to_owned()])
        );
        assert_runtime_equals_permanent();
        lab.sync("firewalld", &[]).code(0).silent();
    });
}

/// firewalld not running: said in words, with the command that starts it, and nothing written.
#[test]
fn firewalld_not_running_is_said_with_the_hint() {
    with_firewalld_lab(|lab, sandbox| {
        sandbox.stop_firewalld();
        let before = firewall_state(lab);
        lab.sync("firewalld", &[])
            .code(1)
            .stderr_has("error: firewalld backend could not read its ipsets and rich rules")
            .stderr_has("firewalld is not running")
            .stderr_has("hint: start firewalld (`systemctl start firewalld`)");
        assert_eq!(
            firewall_state(lab),
            before,
            "a failed sync changed something"
        );
        // Without the system bus at all, the same words (not a Python traceback).
        sandbox.stop_bus();
        lab.sync("firewalld", &[])
            .code(1)
            .stderr_has("caused by: firewalld is not running: the D-Bus system bus")
            .stderr_lacks("Traceback")
            .stderr_has("hint: start firewalld (`systemctl start firewalld`)");
    });
}

/// The shadowing analysis reads `table inet firewalld` (its zone dispatch, its IPv6
/// reverse-path check, its zones' final reject): accepts of ours beside firewalld, in
/// nftables' own table, are judged blocked by firewalld's reject (and are, by packets); in
/// firewalld's zone they are judged effective, before the first sync and by doctor after it.
#[test]
fn firewalld_hosts_are_judged_by_the_analysis() {
    with_firewalld_lab(|lab, _| {
        admin_setup();
        let beside = lab.sync("nftables", &["--dry-run"]);
        beside
            .code(5)
            .stderr_has("inet firewalld")
            .stderr_has("reject")
            .stderr_has("use `--backend firewalld` (zone = \"public\")")
            .stderr_lacks("table = \"firewalld\"");
        let planned = lab.cf(&[
            "--output",
            "json",
            "sync",
            "--backend",
            "firewalld",
            "--dry-run",
            "--source",
            &lab.fixture.url("/ips-v4"),
            "--source",
            &lab.fixture.url("/ips-v6"),
        ]);
        planned.code(0);
        let json = planned.json();
        assert_eq!(json["backends"][0]["effective"], true, "{json}");
        lab.sync("firewalld", &[]).code(0);
        assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
        lab.cf(&["doctor"]).code(0).stdout_has("shadowing");
    });
}

/// restrict drops other sources after every accept of priority 0: an admin's own rich rule for
/// a managed port keeps working; a service the zone opens to everyone is not closed, and the
/// sync says so with the command that removes it.
#[test]
fn firewalld_restrict_keeps_an_admins_allow_and_names_an_open_service() {
    with_firewalld_lab(|lab, _| {
        admin_setup();
        let partner = "rule family=\"ipv4\" source address=\"203.0.113.200\" port port=\"443\" protocol=\"tcp\" accept";
        both(&[&format!("--add-rich-rule={partner}")]);
        lab.sync("firewalld", &["--restrict"])
            .code(0)
            .stderr_lacks("opens tcp");
        let mut open = expect_open(&IN_FIRST_LIST);
        open.insert("203.0.113.200 443".to_owned());
        assert_eq!(lab.open(), open);
        // restrict's drop is in the zone's _post chain, after the accepts.
        let post = lab.origin.exec(
            "nft",
            &[
                "list",
                "chain",
                "inet",
                "firewalld",
                "filter_IN_public_post",
            ],
        );
        assert!(
            post.contains("saddr != @cf-allowlist-v4 tcp dport 443 drop"),
            "{post}"
        );

        // A warning that repeats on every run is shown when the sync has something to say:
        // here, a list change.
        both(&["--add-service=https"]);
        lab.fixture.set("/ips-v4", Reply::ok(SECOND_V4));
        lab.sync("firewalld", &["--restrict"])
            .code(0)
            .stderr_has(
                "firewalld zone public opens tcp 443 to every source (service https 443/tcp)",
            )
            .stderr_has("--remove-service=https");
        assert!(lab.open().contains("192.0.2.2 443"));
    });
}

/// An interface bound to another zone takes its traffic there: our rules in the default zone
/// would not be met. The sync names the interface and the zone; with `zone` set to it, the
/// listed ranges connect.
#[test]
fn firewalld_an_interface_in_another_zone_is_named() {
    with_firewalld_lab(|lab, _| {
        admin_setup();
        both(&["--zone=internal", "--add-interface=vo"]);
        both(&["--zone=internal", "--remove-service=ssh"]);
        both(&["--zone=internal", &format!("--add-rich-rule={ADMIN_SSH}")]);
        let default_zone = lab.sync("firewalld", &[]);
        eprintln!("{default_zone}");
        default_zone.stderr_has(
            "firewalld sends what arrives on or from vo to zone internal, not to zone public",
        );
        assert_eq!(lab.open(), expect_open(&[]));
        let config = lab.write_config("[[backend]]\nkind = \"firewalld\"\nzone = \"internal\"\n");
        lab.sync_config(&config, &[])
            .code(0)
            .stderr_lacks("firewalld sends");
        assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
        // Our rules left the public zone.
        assert!(!firewall_cmd(&["--zone=public", "--list-rich-rules"]).contains("cf-allowlist"));
    });
}

/// The backend itself collapses a target holding a range and ranges inside it (the core drops
/// them too, but a backend must not depend on that): firewalld would refuse the second entry
/// with INVALID_ENTRY, as it does here for one added by hand.
#[test]
fn firewalld_backend_collapses_an_overlapping_target() {
    crate::support::require_root();
    cf_allowlist_testkit::on_new_thread(|| {
        use cf_allowlist_backend::conformance::{Harness, default_policy};
        use cf_allowlist_backend::{Change, Ranges};
        let harness = cf_allowlist_firewalld::harness::FirewalldHarness::new();
        let backend = harness.backend(&default_policy());
        let parse =
            |list: &[&str]| -> Ranges { list.iter().map(|net| net.parse().unwrap()).collect() };
        let target = parse(&[
            "192.0.2.0/24",
            "192.0.2.0/25",
            "192.0.2.128/26",
            "2001:db8::/32",
            "2001:db8:1::/48",
        ]);
        let change = Change::between(&backend.observe().unwrap(), &target);
        backend
            .apply(&change)
            .unwrap_or_else(|error| panic!("{error}: {:?}", error.source));
        assert_eq!(
            backend.observe().unwrap().ranges,
            parse(&["192.0.2.0/24", "2001:db8::/32"])
        );
        let refused = std::process::Command::new("firewall-cmd")
            .args(["--ipset=cf-allowlist-v4", "--add-entry=192.0.2.0/25"])
            .output()
            .unwrap();
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("INVALID_ENTRY"));
    });
}

/// A rich rule of the admin's that names our ipset in a shape we never write is not ours:
/// syncs leave it and say so, and purge removes our rules but keeps the ipset it names
/// (firewalld would refuse to remove it).
#[test]
fn firewalld_leaves_a_hand_made_rule_naming_our_ipset_alone() {
    with_firewalld_lab(|lab, _| {
        admin_setup();
        lab.sync("firewalld", &[]).code(0);
        let borrowed = "rule family=\"ipv4\" source ipset=\"cf-allowlist-v4\" port port=\"8080\" protocol=\"tcp\" log prefix=\"partner\" accept";
        both(&[&format!("--add-rich-rule={borrowed}")]);
        lab.fixture.set("/ips-v4", Reply::ok(SECOND_V4));
        lab.sync("firewalld", &[])
            .code(0)
            .stderr_has("names our ipset but is not one we write");
        let present = |permanent: bool| {
            let mut args = vec!["--list-rich-rules"];
            if permanent {
                args.insert(0, "--permanent");
            }
            firewall_cmd(&args).lines().any(|line| line == borrowed)
        };
        assert!(present(false) && present(true));
        lab.cf(&["purge", "--backend", "firewalld"]).code(0);
        assert!(
            present(false) && present(true),
            "purge removed the admin's rule"
        );
        let rules = firewall_cmd(&["--permanent", "--list-rich-rules"]);
        assert!(!rules.contains("port=\"443\""), "{rules}");
        let ipsets = firewall_cmd(&["--permanent", "--get-ipsets"]);
        assert_eq!(ipsets.trim(), "cf-allowlist-v4", "{ipsets}");
        assert!(entries("cf-allowlist-v4", false).is_empty());
        assert!(entries("cf-allowlist-v4", true).is_empty());
    });
}
