//! The nftables backend's first apply over netlink (no table of ours yet): everything created
//! in one netlink transaction instead of `nft -f`, and the kernel holding exactly what nft's
//! batch makes. Each test runs in namespaces of its own.

use std::cell::Cell;
use std::rc::Rc;

use cf_allowlist_backend::{Backend, Change, Policy, Ranges};
use cf_allowlist_nftables::{NftablesBackend, NftablesOptions, harness};

use crate::support::cmd::cf;
use crate::support::lab::{IN_FIRST_LIST, Lab, PORTS, SOURCES, expect_open};
use crate::support::netns::Netns;
use crate::support::require_root;

fn ranges(texts: &[String]) -> Ranges {
    let mut set = Ranges::new();
    set.extend(texts.iter().map(|range| range.parse().unwrap()));
    set
}

/// The 22 ranges of issue 19's first apply: 15 IPv4 and 7 IPv6 prefixes, all documentation.
fn twenty_two() -> Vec<String> {
    let mut texts: Vec<String> = ["192.0.2", "198.51.100", "203.0.113"]
        .iter()
        .flat_map(|net| (0..5).map(move |block| format!("{net}.{}/27", block * 32)))
        .collect();
    texts.extend((0..7).map(|index| format!("2001:db8:{:x}::/48", index + 1)));
    texts
}

/// Observes and applies `target` in `netns` with a fresh backend; returns how many times the
/// apply was about to write over netlink.
fn first_apply(
    netns: &Netns,
    policy: &Policy,
    owner: Option<&str>,
    target: &Ranges,
    with_nft: bool,
) -> usize {
    first_apply_in(
        netns,
        NftablesOptions::default(),
        policy,
        owner,
        target,
        with_nft,
    )
}

/// [`first_apply`] into the table and chain of `options`.
fn first_apply_in(
    netns: &Netns,
    options: NftablesOptions,
    policy: &Policy,
    owner: Option<&str>,
    target: &Ranges,
    with_nft: bool,
) -> usize {
    let (policy, owner, target) = (policy.clone(), owner.map(str::to_owned), target.clone());
    netns.run_inside(move || {
        harness::create_with_nft(with_nft);
        let writes = Rc::new(Cell::new(0));
        let counter = writes.clone();
        harness::on_element_write(move || counter.set(counter.get() + 1));
        let backend = NftablesBackend::new(options, policy).owned_by(owner);
        let observed = backend.observe().unwrap();
        backend.apply(&Change::between(&observed, &target)).unwrap();
        writes.get()
    })
}

/// What nft lists of a namespace's ruleset: JSON, the bytecode, and text with handles.
fn listings(netns: &Netns) -> [String; 3] {
    [
        netns.exec("nft", &["-j", "list", "ruleset"]),
        netns.exec("nft", &["--debug=netlink", "list", "ruleset"]),
        netns.exec("nft", &["-a", "list", "ruleset"]),
    ]
}

#[test]
fn nftables_a_first_apply_over_netlink_holds_what_nft_makes_of_the_batch() {
    require_root();
    let many: Vec<String> = (0..5_000u32)
        .map(|index| format!("2001:db8:{:x}:{:x}::/64", 1 + (index >> 12), index & 0xfff))
        .chain(std::iter::once("198.51.100.0/24".to_owned()))
        .collect();
    // Ports, restrict, owner, ranges.
    type Shape = (Vec<u16>, bool, Option<&'static str>, Vec<String>);
    let shapes: Vec<Shape> = vec![
        (vec![80, 443], false, None, twenty_two()),
        (vec![22], false, None, twenty_two()),
        (vec![80, 443], true, None, twenty_two()),
        (vec![22], true, Some("0123456789abcdef"), twenty_two()),
        (
            vec![22, 80, 81, 443, 8080],
            true,
            None,
            vec!["203.0.113.7/32".to_owned()],
        ),
        (vec![443], false, None, vec!["2001:db8:cf::/48".to_owned()]),
        (vec![80, 443], true, None, many),
    ];
    for (ports, restrict, owner, target) in shapes {
        let policy = Policy {
            ports: ports.clone(),
            restrict,
        };
        let target = ranges(&target);
        let ours = Netns::new("nlc-ours");
        let nfts = Netns::new("nlc-nft");
        let shape = format!("ports {ports:?}, restrict {restrict}, owner {owner:?}");
        assert_eq!(
            first_apply(&ours, &policy, owner, &target, false),
            1,
            "{shape}: written over netlink"
        );
        assert_eq!(
            first_apply(&nfts, &policy, owner, &target, true),
            0,
            "{shape}: written by nft -f"
        );
        let [json, bytecode, text] = listings(&ours);
        let [nft_json, nft_bytecode, nft_text] = listings(&nfts);
        assert_eq!(text, nft_text, "{shape}");
        assert_eq!(json, nft_json, "{shape}");
        assert_eq!(bytecode, nft_bytecode, "{shape}");
        assert!(text.contains("cf-allowlist"), "{shape}: {text}");
    }
    // Another table and chain than Debian's, next to a table of somebody else's.
    let options = NftablesOptions {
        table: "cf-web".to_owned(),
        chain: "allow_in".to_owned(),
    };
    let policy = Policy {
        ports: vec![80, 443],
        restrict: true,
    };
    let target = ranges(&twenty_two());
    let ours = Netns::new("nlc-ours");
    let nfts = Netns::new("nlc-nft");
    for netns in [&ours, &nfts] {
        netns.nft_batch("table inet filter {\n  chain input {\n    type filter hook input priority filter; policy drop;\n  }\n}\n");
    }
    assert_eq!(
        first_apply_in(&ours, options.clone(), &policy, None, &target, false),
        1
    );
    assert_eq!(
        first_apply_in(&nfts, options, &policy, None, &target, true),
        0
    );
    assert_eq!(listings(&ours), listings(&nfts));
}

#[test]
fn nftables_a_first_apply_into_the_hosts_own_table_over_netlink_holds_what_nft_makes() {
    require_root();
    // The host's table (HOST), and in turn: our chain is the host's input chain (the default),
    // or a chain the creation adds to the host's table.
    let chains = [
        NftablesOptions::default(),
        NftablesOptions {
            table: "filter".to_owned(),
            chain: "cf_in".to_owned(),
        },
    ];
    for options in chains {
        for (ports, restrict) in [(vec![80, 443], false), (vec![443], true)] {
            let policy = Policy {
                ports: ports.clone(),
                restrict,
            };
            let target = ranges(&twenty_two());
            let ours = Netns::new("nlc-ours");
            let nfts = Netns::new("nlc-nft");
            for netns in [&ours, &nfts] {
                netns.nft_batch(HOST);
            }
            let shape = format!(
                "chain {}, ports {ports:?}, restrict {restrict}",
                options.chain
            );
            assert_eq!(
                first_apply_in(&ours, options.clone(), &policy, None, &target, false),
                1,
                "{shape}: written over netlink"
            );
            assert_eq!(
                first_apply_in(&nfts, options.clone(), &policy, None, &target, true),
                0,
                "{shape}: written by nft -f"
            );
            let [json, bytecode, text] = listings(&ours);
            assert_eq!(
                [&json, &bytecode, &text],
                listings(&nfts).each_ref(),
                "{shape}"
            );
            assert!(
                text.contains("tcp dport { 22, 2222 } accept"),
                "{shape}: {text}"
            );
        }
    }
}

#[test]
fn nftables_a_first_sync_over_netlink_opens_the_listed_sources_without_nft_f() {
    // With `nft -f` refusing to run, a first sync on an empty ruleset with restrict creates
    // table, chain, sets and rules over netlink: the listed sources reach 80 and 443, the
    // others do not; 22 and 8080 are not managed and stay open (no drop of the admin's).
    let lab = Lab::new();
    let path = lab.path_refusing_nft_f();
    let sources = lab.source_args();
    let mut args = vec!["sync", "--backend", "nftables", "--restrict"];
    args.extend(sources.iter().map(String::as_str));
    cf(&args)
        .state(&lab.state_dir())
        .in_netns(&lab.origin.name)
        .env("PATH", &path)
        .run()
        .code(0)
        .stdout_has("+ 198.51.100.0/25");
    let mut expected = std::collections::BTreeSet::new();
    for source in SOURCES {
        for port in PORTS {
            if !matches!(port, 80 | 443) || IN_FIRST_LIST.contains(&source) {
                expected.insert(format!("{source} {port}"));
            }
        }
    }
    assert_eq!(lab.open(), expected);
    let ruleset = lab.origin.ruleset();
    assert!(
        ruleset.contains("drop comment \"cf-allowlist restrict"),
        "{ruleset}"
    );
}

#[test]
fn nftables_a_first_sync_into_the_hosts_policy_drop_table_over_netlink_lets_exactly_the_list_in() {
    // The origin's own policy-drop `inet filter` (the admin's SSH allow included), `nft -f`
    // refusing to run: our sets and rules go into the host's chain over netlink, and real
    // connects pass from the listed sources to 80 and 443 only.
    let lab = Lab::new();
    lab.load_nft_ruleset();
    assert_eq!(lab.open(), expect_open(&[]));
    let path = lab.path_refusing_nft_f();
    let sources = lab.source_args();
    let mut args = vec!["sync", "--backend", "nftables"];
    args.extend(sources.iter().map(String::as_str));
    cf(&args)
        .state(&lab.state_dir())
        .in_netns(&lab.origin.name)
        .env("PATH", &path)
        .run()
        .code(0);
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
}

#[test]
fn nftables_a_foreign_commit_before_the_creation_is_refused_then_retried_then_left_to_nft() {
    // Another writer commits after the first apply's reading and before its netlink creation:
    // the kernel refuses the whole transaction (the generation moved) and nothing is written.
    // Once: read again and create over netlink. Every time: after the second refusal, nft's
    // batch made from a fresh reading. Either way the other writer's table stays.
    require_root();
    let policy = Policy {
        ports: vec![80, 443],
        restrict: true,
    };
    let target = ranges(&twenty_two());
    for commit_every_time in [false, true] {
        let netns = Netns::new("nlc-genid");
        let reference = Netns::new("nlc-genid-ref");
        let (inside_policy, inside_target) = (policy.clone(), target.clone());
        let (writes, generations) = netns.run_inside(move || {
            let writes = Rc::new(Cell::new(0));
            let generations = Rc::new(Cell::new((0u32, 0u32)));
            let (counter, seen) = (writes.clone(), generations.clone());
            harness::on_element_write(move || {
                counter.set(counter.get() + 1);
                if counter.get() == 1 || commit_every_time {
                    let table = format!("elsewhere{}", counter.get());
                    std::process::Command::new("nft")
                        .args(["add", "table", "ip", &table])
                        .status()
                        .unwrap();
                }
                let generation = cf_allowlist_nftables::netlink::generation().unwrap();
                let (first, _) = seen.get();
                seen.set((if first == 0 { generation } else { first }, generation));
            });
            let backend = NftablesBackend::new(NftablesOptions::default(), inside_policy);
            let observed = backend.observe().unwrap();
            backend
                .apply(&Change::between(&observed, &inside_target))
                .unwrap();
            let after = cf_allowlist_nftables::netlink::generation().unwrap();
            let (_, last_hook) = generations.get();
            (writes.get(), (last_hook, after))
        });
        assert_eq!(writes, 2, "refused once, tried once more over netlink");
        // One transaction after the second try's foreign commit: ours (the netlink creation
        // or nft's batch), nothing refused moves the generation.
        assert_eq!(generations.1, generations.0.wrapping_add(1));
        let listed = netns.exec("nft", &["list", "tables"]);
        assert!(listed.contains("table ip elsewhere1"), "{listed}");
        assert_eq!(
            listed.contains("table ip elsewhere2"),
            commit_every_time,
            "{listed}"
        );
        // Our table is what nft makes of the batch, whichever wrote it.
        first_apply(&reference, &policy, None, &target, true);
        let ours = netns.exec(
            "nft",
            &["--debug=netlink", "list", "table", "inet", "filter"],
        );
        let nft = reference.exec(
            "nft",
            &["--debug=netlink", "list", "table", "inet", "filter"],
        );
        assert_eq!(ours, nft, "commit every time: {commit_every_time}");
    }
}

/// Debian's stock table with a drop policy and rules of the admin's, one with an anonymous set
/// of its own (so the kernel numbers ours after it).
const HOST: &str = "table inet filter {\n  chain input {\n    type filter hook input priority filter; policy drop;\n    ct state established,related accept\n    iif lo accept\n    tcp dport { 22, 2222 } accept\n  }\n}\n";

/// A first apply with restrict in `netns` (created over netlink), then: the proven reading
/// says what a listing says and names our rules by the handles the kernel gave them, and a
/// purge planned from it (rules deleted by handle) leaves the ruleset as it was before.
fn a_creation_is_proven_and_purged_by_the_kernels_handles(netns: &Netns) {
    let before_sync = netns.exec("nft", &["list", "ruleset"]);
    let target = ranges(&twenty_two());
    netns.run_inside(move || {
        let policy = Policy {
            ports: vec![80, 443],
            restrict: true,
        };
        let writes = Rc::new(Cell::new(0));
        let counter = writes.clone();
        harness::on_element_write(move || counter.set(counter.get() + 1));
        let backend = NftablesBackend::new(NftablesOptions::default(), policy.clone());
        let observed = backend.observe().unwrap();
        let before = cf_allowlist_nftables::netlink::generation().unwrap();
        backend.apply(&Change::between(&observed, &target)).unwrap();
        assert_eq!(writes.get(), 1, "created over netlink");
        assert_eq!(
            cf_allowlist_nftables::netlink::generation().unwrap(),
            before.wrapping_add(1)
        );
        let proven = backend.observe().unwrap();
        let listed = NftablesBackend::new(NftablesOptions::default(), policy)
            .observe()
            .unwrap();
        assert_eq!(proven.ranges, target);
        assert_eq!(proven.ranges, listed.ranges);
        assert_eq!(proven.repairs, listed.repairs);
        assert!(proven.repairs.is_empty(), "{:?}", proven.repairs);
        assert_eq!(proven.owners, listed.owners);
        assert_eq!(proven.basis, listed.basis);
        assert_eq!(proven.warnings, listed.warnings);
        let output = std::process::Command::new("nft")
            .args(["-a", "list", "chain", "inet", "filter", "input"])
            .output()
            .unwrap();
        let listed_rules: Vec<(String, u64)> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter_map(|line| {
                let (_, comment) = line.split_once("comment \"")?;
                let (comment, rest) = comment.split_once('"')?;
                let handle = rest.trim().strip_prefix("# handle ")?.parse().ok()?;
                Some((comment.to_owned(), handle))
            })
            .collect();
        assert_eq!(listed_rules.len(), 3, "{listed_rules:?}");
        assert_eq!(harness::proven_rules(&backend), Some(listed_rules));
        // The purge uses the proven reading (same generation): the handles must be the kernel's.
        backend.purge().unwrap();
    });
    assert_eq!(netns.exec("nft", &["list", "ruleset"]), before_sync);
}

#[test]
fn nftables_the_reading_proven_after_a_creation_has_the_real_rule_handles() {
    // On an empty ruleset: table, chain, sets and rules are ours, and the purge removes all.
    require_root();
    a_creation_is_proven_and_purged_by_the_kernels_handles(&Netns::new("nlc-proof"));
}

#[test]
fn nftables_the_reading_proven_after_a_creation_in_the_hosts_chain_is_a_listings() {
    // In Debian's policy-drop chain with the admin's rules after ours: the purge leaves exactly
    // the admin's table.
    require_root();
    let netns = Netns::new("nlc-proof-host");
    netns.nft_batch(HOST);
    a_creation_is_proven_and_purged_by_the_kernels_handles(&netns);
}

#[test]
fn nftables_a_table_created_by_another_writer_before_the_creation_makes_the_apply_stale() {
    // The admin creates the table between the first apply's reading and its netlink creation:
    // the kernel refuses the creation (generation moved), the fresh reading differs from the
    // plan's, so the apply is stale and is planned again (as the core does), never written on
    // the old reading; the plan made anew adds our chain, sets and rules to the admin's table,
    // over netlink again (without an `add table`: the admin's comment stays).
    use cf_allowlist_backend::ErrorKind;
    require_root();
    let netns = Netns::new("nlc-stale");
    let target = ranges(&twenty_two());
    netns.run_inside(move || {
        let policy = Policy {
            ports: vec![80, 443],
            restrict: false,
        };
        let writes = Rc::new(Cell::new(0));
        let counter = writes.clone();
        harness::on_element_write(move || {
            counter.set(counter.get() + 1);
            if counter.get() == 1 {
                std::process::Command::new("nft")
                    .args([
                        "add",
                        "table",
                        "inet",
                        "filter",
                        "{ comment \"the admin's\"; }",
                    ])
                    .status()
                    .unwrap();
            }
        });
        let backend = NftablesBackend::new(NftablesOptions::default(), policy);
        let observed = backend.observe().unwrap();
        let error = backend
            .apply(&Change::between(&observed, &target))
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Stale, "{error}");
        assert_eq!(writes.get(), 1);
        let observed = backend.observe().unwrap();
        backend.apply(&Change::between(&observed, &target)).unwrap();
        assert_eq!(
            writes.get(),
            2,
            "the table exists: created in it over netlink"
        );
        let output = std::process::Command::new("nft")
            .args(["list", "table", "inet", "filter"])
            .output()
            .unwrap();
        let listed = String::from_utf8(output.stdout).unwrap();
        assert!(listed.contains("comment \"the admin's\""), "{listed}");
        assert!(listed.contains("cf-allowlist ipv4"), "{listed}");
        assert_eq!(backend.observe().unwrap().ranges, target);
    });
}
