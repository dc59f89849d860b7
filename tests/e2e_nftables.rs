//! nftables end to end: the tool run as an admin or cron would, inside the origin namespace,
//! proven by TCP connects from the edge.

use crate::support::fixture::Reply;
use crate::support::lab::{IN_FIRST_LIST, IN_SECOND_LIST, LIST_V4, Lab, SECOND_V4, expect_open};
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
