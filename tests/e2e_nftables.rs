//! nftables end to end: the tool run as an admin or cron would, inside the origin namespace,
//! proven by TCP connects from the edge.

use crate::support::cmd::cf_sync;
use crate::support::fixture::Reply;
use crate::support::lab::{IN_FIRST_LIST, IN_SECOND_LIST, LIST_V4, Lab, SECOND_V4, expect_open};
use crate::support::netns::Netns;
use crate::support::require_root;
use crate::support::snapshot_files;

#[test]
fn nftables_sync_opens_exactly_the_listed_ranges_and_converges() {
    let lab = Lab::new();
    lab.load_nft_ruleset();
    lab.assert_only_admin_ssh_open();

    // A dry run shows the plan and changes nothing, not even the state directory.
    let before = lab.origin.ruleset();
    lab.sync("nftables", &["--dry-run"])
        .code(0)
        .stdout_has("+ 198.51.100.0/25")
        .stdout_has("+ 2001:db8:cf::/48")
        .stdout_has("dry run: nothing was changed");
    lab.sync("nftables", &["--dry-run", "--detailed-exitcode"])
        .code(2);
    assert_eq!(lab.origin.ruleset(), before, "dry run changed the ruleset");
    assert!(
        !lab.state_dir().exists(),
        "dry run created the state directory"
    );

    // The first sync opens exactly the listed ranges on exactly the managed ports, despite the
    // chain's own drop for those ports.
    lab.sync("nftables", &[])
        .code(0)
        .stdout_has("applied generation 1 (3 IPv4, 1 IPv6)");
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));

    // A second sync is silent and writes nothing (handles included).
    let applied = lab.origin.ruleset();
    lab.sync("nftables", &[]).code(0).silent();
    assert_eq!(
        lab.origin.ruleset(),
        applied,
        "a no-op sync rewrote the ruleset"
    );
    lab.sync("nftables", &["--dry-run", "--detailed-exitcode"])
        .code(0);

    // Upstream moves a range: the new one opens, the removed one closes, and JSON says so.
    lab.fixture.set("/ips-v4", Reply::ok(SECOND_V4));
    let json = lab.sync("nftables", &["--output", "json"]).code(0).json();
    assert_eq!(json["changed"], true);
    assert_eq!(json["dry_run"], false);
    assert_eq!(json["generation"], 2);
    let backend = &json["backends"][0];
    assert_eq!(backend["added"], serde_json::json!(["203.0.113.128/25"]));
    assert_eq!(backend["removed"], serde_json::json!(["203.0.113.0/25"]));
    assert_eq!(lab.open(), expect_open(&IN_SECOND_LIST));

    // An admin reloads the firewall (flush and load the saved file): our rules are gone, status
    // sees it, and the next sync restores exactly one copy of each.
    lab.load_nft_ruleset();
    let reloaded = lab.origin.ruleset();
    assert_eq!(lab.open(), expect_open(&[]));
    lab.cf(&["status"]).code(0).stdout_has("drift: missing");
    lab.sync("nftables", &[])
        .code(0)
        .stdout_has("~ create set cf_allowlist_v4");
    assert_eq!(lab.open(), expect_open(&IN_SECOND_LIST));
    let repaired = lab.origin.ruleset();
    for rule in [
        "comment \"cf-allowlist ipv4 owner=",
        "comment \"cf-allowlist ipv6 owner=",
        "set cf_allowlist_v4 ",
    ] {
        assert_eq!(
            repaired.matches(rule).count(),
            1,
            "{rule} after repair:\n{repaired}"
        );
    }
    lab.cf(&["status"]).code(0).stdout_has("in sync (4 ranges)");

    // Upstream shrinks by more than half: refused, nothing changes, the state stays as it was.
    let state_before = snapshot_files(&lab.state_dir());
    lab.fixture.set("/ips-v4", Reply::ok("203.0.113.128/25\n"));
    lab.sync("nftables", &[])
        .code(3)
        .stderr_has("refused to apply")
        .stderr_has("would remove 2 of its 3 IPv4 ranges")
        .stderr_has("--force");
    assert_eq!(
        lab.origin.ruleset(),
        repaired,
        "a refused sync changed the ruleset"
    );
    assert_eq!(
        snapshot_files(&lab.state_dir()),
        state_before,
        "a refused sync changed the state"
    );
    assert_eq!(lab.open(), expect_open(&IN_SECOND_LIST));
    // --force overrides the guard.
    lab.sync("nftables", &["--force"])
        .code(0)
        .stdout_has("applied generation 3");
    assert_eq!(
        lab.open(),
        expect_open(&["203.0.113.200", "2001:db8:cf::10"])
    );

    // Rollback to generation 2 restores that set and pins it: sync keeps it while pinned.
    lab.cf(&["rollback", "--to", "2"])
        .code(0)
        .stdout_has("rolled back to generation 2");
    assert_eq!(lab.open(), expect_open(&IN_SECOND_LIST));
    // A pinned no-op sync is quiet for cron; the pin shows in status, -v and JSON warnings.
    lab.sync("nftables", &[]).code(0).says_nothing();
    lab.sync("nftables", &["-v"])
        .code(0)
        .stderr_has("warning: pinned to generation 2");
    lab.cf(&["status"])
        .code(0)
        .stdout_has("pinned to generation 2 since");
    assert_eq!(lab.open(), expect_open(&IN_SECOND_LIST));
    lab.cf(&["history"]).code(0).stdout_has("(current, pinned)");
    // Unpinned, sync follows upstream again (the shrunken list is what upstream serves, and the
    // firewall now holds generation 2, so the guard asks for --force once more).
    lab.cf(&["unpin"])
        .code(0)
        .stdout_has("unpinned generation 2");
    lab.fixture.set("/ips-v4", Reply::ok(LIST_V4));
    lab.sync("nftables", &[])
        .code(0)
        .stdout_has("applied generation 4");
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
    // Default rollback goes to the generation before the current one.
    lab.cf(&["rollback"])
        .code(0)
        .stdout_has("rolled back to generation 3");
    assert_eq!(
        lab.open(),
        expect_open(&["203.0.113.200", "2001:db8:cf::10"])
    );
    lab.cf(&["unpin"]).code(0);

    // Purge removes every trace and keeps the foreign rule.
    lab.cf(&["purge"]).code(0).stdout_has("purged nftables");
    assert_eq!(lab.origin.ruleset(), reloaded, "purge left a trace");
    assert_eq!(lab.open(), expect_open(&[]));
}

#[test]
fn nftables_restrict_drops_other_sources_even_where_the_chain_accepts_them() {
    let lab = Lab::new();
    // A permissive origin: everything is accepted, so only restrict mode closes the web ports.
    lab.origin.nft_batch(
        "flush ruleset\ntable inet filter {\n chain input {\n  type filter hook input priority filter; policy accept;\n }\n}\n",
    );
    let everything = lab.open();
    assert_eq!(
        everything.len(),
        7 * 4,
        "the permissive origin should accept every probe: {everything:?}"
    );
    lab.sync("nftables", &["--restrict"]).code(0);
    let open = lab.open();
    for source in crate::support::lab::SOURCES {
        for port in [22, 8080] {
            assert!(
                open.contains(&format!("{source} {port}")),
                "restrict closed {source} {port}"
            );
        }
        let listed = IN_FIRST_LIST.contains(&source);
        for port in [80, 443] {
            assert_eq!(
                open.contains(&format!("{source} {port}")),
                listed,
                "{source} {port} with restrict"
            );
        }
    }
    // Loopback is not restricted: the host's own health checks keep working.
    lab.sync("nftables", &["--restrict"]).code(0).silent();
    lab.cf(&["purge"]).code(0);
    assert_eq!(lab.open(), everything);
}

#[test]
fn nftables_sync_on_an_empty_ruleset_creates_an_accepting_chain_and_purge_removes_it() {
    let lab = Lab::new();
    lab.origin.nft_batch("flush ruleset\n");
    lab.sync("nftables", &[]).code(0);
    let ruleset = lab.origin.ruleset();
    assert!(ruleset.contains("policy accept"), "{ruleset}");
    lab.cf(&["purge"]).code(0);
    assert_eq!(lab.origin.ruleset(), "", "purge left our table behind");
}

/// Another writer committing `per_second` nft transactions in `netns` (what fail2ban or
/// CrowdSec do on a busy host: add and delete elements of their own set), until stopped.
struct BusyWriter {
    child: std::process::Child,
    feeder: Option<std::thread::JoinHandle<(u64, std::time::Duration)>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BusyWriter {
    fn start(netns: &Netns, per_second: u32) -> BusyWriter {
        use std::io::Write;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::{Duration, Instant};
        netns.nft_batch(
            "table inet f2b {\n  set banned { type ipv4_addr; }\n  chain input {\n    type filter hook input priority -1; policy accept;\n    ip saddr @banned drop\n  }\n}\n",
        );
        // `nft -i` commits every line it reads as its own transaction, without a process each.
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", &netns.name, "nft", "-i"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nft -i");
        let mut input = child.stdin.take().unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let pause = Duration::from_secs(1) / per_second;
        let feeder = std::thread::spawn(move || {
            let mut written = 0u32;
            let start = Instant::now();
            while !stopping.load(Ordering::Relaxed) {
                let verb = if written.is_multiple_of(2) {
                    "add"
                } else {
                    "delete"
                };
                let line = format!("{verb} element inet f2b banned {{ 192.0.2.77 }}\n");
                if input.write_all(line.as_bytes()).is_err() {
                    break;
                }
                written += 1;
                // Paced against the clock, so that slow writes do not lower the rate.
                let due = start + pause * written;
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            (u64::from(written), start.elapsed())
        });
        BusyWriter {
            child,
            feeder: Some(feeder),
            stop,
        }
    }

    /// Stops the writer; returns the transactions it wrote per second.
    fn stop(mut self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (written, elapsed) = self.feeder.take().unwrap().join().unwrap();
        written as f64 / elapsed.as_secs_f64()
    }
}

impl Drop for BusyWriter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(feeder) = self.feeder.take() {
            let _ = feeder.join();
        }
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn nftables_sync_reads_its_parts_under_200_foreign_changes_per_second() {
    // Issue 18.10: with fail2ban or CrowdSec committing hundreds of transactions a second,
    // almost every sync failed "the ruleset changed during every attempt to read it".
    require_root();
    let netns = Netns::new("busy");
    netns.nft_batch(
        "table inet filter {\n  chain input {\n    type filter hook input priority filter; policy drop;\n    ct state established,related accept\n    iif lo accept\n  }\n}\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[[backend]]\nkind = \"nftables\"\n").unwrap();
    let source = dir.path().join("list");
    let lists = [
        "198.51.100.0/25\n203.0.113.0/24\n2001:db8:cf::/48\n",
        "198.51.100.0/25\n203.0.113.128/25\n2001:db8:cf::/48\n",
    ];
    let writer = BusyWriter::start(&netns, 200);
    std::thread::sleep(std::time::Duration::from_millis(300));
    for round in 0..6 {
        // Alternate lists, so that every run reads, plans and writes.
        std::fs::write(&source, lists[round % 2]).unwrap();
        cf_sync(&config, &source)
            .state(&dir.path().join("state"))
            .in_netns(&netns.name)
            .run()
            .code(0)
            .stderr_lacks("changed during every attempt");
        let set = netns.exec("nft", &["list", "set", "inet", "filter", "cf_allowlist_v4"]);
        let expected = if round % 2 == 0 {
            "203.0.113.0/24"
        } else {
            "203.0.113.128/25"
        };
        assert!(set.contains(expected), "round {round}: {set}");
    }
    let rate = writer.stop();
    assert!(
        rate > 150.0,
        "the other writer managed only {rate:.0} transactions/s"
    );
}

#[test]
fn nftables_the_reading_proven_by_the_generation_matches_a_real_one() {
    // After a write whose generation moved by exactly one, the verifying observation uses the
    // reading predicted from the batch instead of listing: it must say what a listing says.
    use cf_allowlist_backend::{Backend, Change, Policy, Ranges};
    use cf_allowlist_nftables::{NftablesBackend, NftablesOptions};
    require_root();
    let netns = Netns::new("proof");
    netns.nft_batch(
        "table inet filter {\n  chain input {\n    type filter hook input priority filter; policy drop;\n    iif lo accept\n  }\n}\n",
    );
    let policy = Policy {
        ports: vec![80, 443],
        restrict: true,
    };
    let target = |ranges: &[&str]| -> Ranges {
        let mut set = Ranges::new();
        set.extend(ranges.iter().map(|range| range.parse().unwrap()));
        set
    };
    let targets = [
        target(&["198.51.100.0/25", "203.0.113.0/24", "2001:db8:cf::/48"]),
        target(&["198.51.100.128/25", "203.0.113.0/24", "2001:db8:cf::/48"]),
        target(&["203.0.113.7/32"]),
    ];
    netns.run_inside(move || {
        for (round, wanted) in targets.iter().enumerate() {
            let backend = NftablesBackend::new(NftablesOptions::default(), policy.clone());
            let observed = backend.observe().unwrap();
            backend.apply(&Change::between(&observed, wanted)).unwrap();
            let proven = backend.observe().unwrap();
            let listed = NftablesBackend::new(NftablesOptions::default(), policy.clone())
                .observe()
                .unwrap();
            assert_eq!(proven.ranges, *wanted, "round {round}");
            assert_eq!(proven.ranges, listed.ranges, "round {round}");
            assert_eq!(proven.repairs, listed.repairs, "round {round}");
            assert_eq!(proven.owners, listed.owners, "round {round}");
            assert_eq!(proven.basis, listed.basis, "round {round}");
        }
    });
}

#[test]
fn nftables_a_replace_writes_its_elements_without_nft_and_packets_follow() {
    // With `nft -f` refusing to run, a replace of ranges still succeeds: the element changes go
    // to the kernel over netlink. A removed source is refused, an added one connects, an
    // untouched one still connects, and the ruleset moved by exactly one transaction.
    use crate::support::cmd::cf;
    let lab = Lab::synced_with_nftables();
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
    let path = lab.path_refusing_nft_f();
    lab.fixture.set("/ips-v4", Reply::ok(SECOND_V4));
    let origin = lab.origin.name.clone();
    let generation = move || {
        let origin = origin.clone();
        cf_allowlist_testkit::on_new_thread(move || {
            crate::support::netns::enter_named(&origin);
            cf_allowlist_nftables::netlink::generation().unwrap()
        })
    };
    let before = generation();
    let sources = lab.source_args();
    let mut args = vec!["sync", "--backend", "nftables"];
    args.extend(sources.iter().map(String::as_str));
    let sync = cf(&args)
        .state(&lab.state_dir())
        .in_netns(&lab.origin.name)
        .env("PATH", &path)
        .run();
    lab.assert_moved_to_the_second_list(&sync);
    assert_eq!(generation(), before.wrapping_add(1), "one transaction");
    let open = lab.open();
    assert!(!open.contains("203.0.113.10 443"), "removed source refused");
    assert!(open.contains("203.0.113.200 443"), "added source connects");
    assert!(
        open.contains("198.51.100.10 443"),
        "untouched source connects"
    );
}

#[test]
fn nftables_a_foreign_commit_between_reading_and_writing_refuses_the_element_write() {
    // Another writer commits after the apply's reading and before its netlink write: the
    // batch carries the reading's generation, so the kernel refuses it and nothing is written
    // on a stale reading. A commit elsewhere: read again, write again, done. A commit to our
    // set: the fresh reading differs from the plan's, so the apply is stale and is planned
    // again (as the core does), never written blindly.
    use cf_allowlist_backend::{Backend, Change, ErrorKind, Policy, Ranges};
    use cf_allowlist_nftables::{NftablesBackend, NftablesOptions, harness};
    require_root();
    let netns = Netns::new("genid");
    netns.nft_batch(
        "table inet filter {\n  chain input {\n    type filter hook input priority filter; policy drop;\n    iif lo accept\n  }\n}\n",
    );
    let policy = Policy {
        ports: vec![80, 443],
        restrict: false,
    };
    let target = |ranges: &[&str]| -> Ranges {
        let mut set = Ranges::new();
        set.extend(ranges.iter().map(|range| range.parse().unwrap()));
        set
    };
    netns.run_inside(move || {
        let nft = |batch: &str| {
            let status = std::process::Command::new("nft")
                .args(["-f", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write;
                    child.stdin.take().unwrap().write_all(batch.as_bytes())?;
                    child.wait()
                })
                .unwrap();
            assert!(status.success(), "{batch}");
        };
        let backend = || NftablesBackend::new(NftablesOptions::default(), policy.clone());
        let first = target(&["198.51.100.0/25", "203.0.113.0/24", "2001:db8:cf::/48"]);
        let observed = backend().observe().unwrap();
        backend()
            .apply(&Change::between(&observed, &first))
            .unwrap();

        // A commit elsewhere, once: refused, read again, written on the second try.
        let writes = std::rc::Rc::new(std::cell::Cell::new(0));
        let counter = writes.clone();
        harness::on_element_write(move || {
            counter.set(counter.get() + 1);
            if counter.get() == 1 {
                std::process::Command::new("nft")
                    .args(["add", "table", "ip", "elsewhere"])
                    .status()
                    .unwrap();
            }
        });
        let second = target(&["198.51.100.128/25", "203.0.113.0/24", "2001:db8:cf::/48"]);
        let instance = backend();
        let observed = instance.observe().unwrap();
        instance
            .apply(&Change::between(&observed, &second))
            .unwrap();
        assert_eq!(
            writes.get(),
            2,
            "the first write was refused, the second made"
        );
        let fresh = backend().observe().unwrap();
        assert_eq!(fresh.ranges, second);
        assert!(fresh.repairs.is_empty(), "{:?}", fresh.repairs);
        assert!(must_list().contains("table ip elsewhere"));

        // A commit to our set (an admin deletes a range we keep): refused, and the fresh
        // reading makes the apply stale instead of writing on the old one.
        writes.set(0);
        let touched = std::rc::Rc::new(std::cell::Cell::new(false));
        let flag = touched.clone();
        harness::on_element_write(move || {
            if !flag.replace(true) {
                nft("delete element inet filter cf_allowlist_v4 { 203.0.113.0/24 }\n");
            }
        });
        let third = target(&["198.51.100.0/25", "203.0.113.0/24", "2001:db8:cf::/48"]);
        let instance = backend();
        let observed = instance.observe().unwrap();
        let error = instance
            .apply(&Change::between(&observed, &third))
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Stale, "{error}");
        assert!(touched.get());
        // Planned again, as the core does after a stale apply: the sync ends correct.
        let observed = instance.observe().unwrap();
        instance.apply(&Change::between(&observed, &third)).unwrap();
        assert_eq!(backend().observe().unwrap().ranges, third);
    });

    fn must_list() -> String {
        let output = std::process::Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap()
    }
}
