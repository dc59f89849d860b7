//! Paths taken only for large lists, driven through the backend API in a namespace of the test
//! thread's own: the iptables backend's automatic switch between rules and an ipset, and the
//! nftables backend's element writes when many ranges go at once (over netlink, in place; nft's
//! flush-and-refill only where netlink cannot be used).

use cf_allowlist_backend::Ranges;
use cf_allowlist_backend::conformance::{Harness, default_policy, sync};
use cf_allowlist_iptables::harness::IptablesHarness;
use cf_allowlist_iptables::{AUTO_IPSET_ABOVE, Concrete, Mode};

use cf_allowlist_testkit::{in_fresh_netns, must};

/// `count` IPv6 /64s from the documentation prefix.
fn many_v6(count: usize) -> Ranges {
    (0..count)
        .map(|index| format!("2001:db8:0:{index:x}::/64").parse().unwrap())
        .collect()
}

#[test]
fn auto_mode_switches_to_an_ipset_above_the_threshold_and_back() {
    in_fresh_netns(|| {
        for variant in [Concrete::Nft, Concrete::Legacy] {
            let harness = IptablesHarness::new(variant, Mode::Auto);
            let backend = harness.backend(&default_policy());

            let big = many_v6(AUTO_IPSET_ABOVE + 1);
            sync(backend.as_ref(), &big);
            let observed = backend.observe().unwrap();
            assert_eq!(observed.ranges, big);
            assert!(observed.repairs.is_empty(), "{:?}", observed.repairs);
            let sets = must("ipset", &["save", "cf-allowlist-v6"]);
            assert_eq!(
                sets.matches("\nadd cf-allowlist-v6 ").count(),
                AUTO_IPSET_ABOVE + 1
            );
            let rules = must(&variant.tool(cf_allowlist_backend::Family::V6, "save"), &[]);
            assert_eq!(rules.matches("-A CF-ALLOWLIST").count(), 1, "{rules}");

            let small = many_v6(3);
            sync(backend.as_ref(), &small);
            let observed = backend.observe().unwrap();
            assert_eq!(observed.ranges, small);
            assert!(observed.repairs.is_empty(), "{:?}", observed.repairs);
            assert!(!must("ipset", &["list", "-n"]).contains("cf-allowlist-v6"));
            let rules = must(&variant.tool(cf_allowlist_backend::Family::V6, "save"), &[]);
            assert_eq!(
                rules.matches("-A CF-ALLOWLIST -s 2001:db8:").count(),
                3,
                "{rules}"
            );

            backend.purge().unwrap();
            assert!(backend.observe().unwrap().ranges.is_empty());
        }
    });
}

#[test]
fn nftables_replaces_many_ranges_at_once_and_keeps_the_rest() {
    // More than REFILL_ABOVE_REMOVALS go: nft's batch would flush and refill the set; the
    // netlink write deletes them in place. Either way exactly the target remains.
    use cf_allowlist_nftables::REFILL_ABOVE_REMOVALS;
    use cf_allowlist_nftables::harness::NftablesHarness;
    in_fresh_netns(|| {
        let harness = NftablesHarness::with_base_ruleset();
        let backend = harness.backend(&default_policy());
        let before = many_v6(200);
        sync(backend.as_ref(), &before);
        // Drop the first REFILL_ABOVE_REMOVALS + 1 ranges and add as many new ones.
        let after: Ranges = (REFILL_ABOVE_REMOVALS + 1..200 + REFILL_ABOVE_REMOVALS + 1)
            .map(|index| format!("2001:db8:0:{index:x}::/64").parse().unwrap())
            .collect();
        let change = sync(backend.as_ref(), &after);
        assert_eq!(change.remove.len(), REFILL_ABOVE_REMOVALS + 1);
        let observed = backend.observe().unwrap();
        assert_eq!(observed.ranges, after);
        assert!(observed.repairs.is_empty(), "{:?}", observed.repairs);
        // A small change still deletes in place.
        let small: Ranges = after.iter().skip(1).copied().collect();
        sync(backend.as_ref(), &small);
        assert_eq!(backend.observe().unwrap().ranges, small);
    });
}

#[test]
fn nftables_reads_set_elements_from_the_kernel_as_nft_lists_them() {
    use cf_allowlist_nftables::harness::NftablesHarness;
    in_fresh_netns(|| {
        let harness = NftablesHarness::with_base_ruleset();
        let backend = harness.backend(&default_policy());
        sync(backend.as_ref(), &many_v6(3));
        // Neighbours (one's end is the other's start), single addresses (/32, /128), a prefix
        // ending at the top of 2000::/3, and many of them: the elements read over netlink must
        // be exactly what nft itself lists.
        let mut batch = String::from(
            "add element inet filter cf_allowlist_v4 { 198.51.100.0/25, 198.51.100.128/25, 192.0.2.1, 203.0.113.7 }\n\
             add element inet filter cf_allowlist_v6 { 2001:db8:ffff::/48, 2001:db8:2::1, 3fff:ff00::/24 }\n",
        );
        let extra: Vec<String> = (0..3000)
            .map(|index| format!("2001:db8:1:{index:x}::/64"))
            .collect();
        batch.push_str(&format!(
            "add element inet filter cf_allowlist_v6 {{ {} }}\n",
            extra.join(", ")
        ));
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
        assert!(status.success());
        let listed: std::collections::BTreeSet<String> = must("nft", &["-j", "list", "ruleset"])
            .split("\"prefix\": {\"addr\": \"")
            .skip(1)
            .filter_map(|rest| {
                let (address, rest) = rest.split_once('"')?;
                let length = rest.split("\"len\": ").nth(1)?.split('}').next()?;
                Some(format!("{address}/{length}"))
            })
            .chain(
                ["192.0.2.1/32", "203.0.113.7/32", "2001:db8:2::1/128"]
                    .into_iter()
                    .map(str::to_owned),
            )
            .collect();
        let observed: std::collections::BTreeSet<String> = backend
            .observe()
            .unwrap()
            .ranges
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(observed.len(), 3 + 4 + 3 + 3000);
        assert_eq!(observed, listed);
    });
}

#[test]
fn nftables_replaces_one_percent_of_100000_ranges_in_place_in_one_transaction() {
    // 1,000 prefixes out and 1,000 in (4,000 elements) in a set of 100,000: one netlink batch,
    // the generation moved by exactly one, every other element kept. The time is printed
    // (`--nocapture`), not asserted: the kernel's part is what BENCHMARKS.md records.
    use cf_allowlist_backend::Change;
    use cf_allowlist_nftables::harness::NftablesHarness;
    use cf_allowlist_nftables::netlink;
    in_fresh_netns(|| {
        let harness = NftablesHarness::with_base_ruleset();
        let backend = harness.backend(&default_policy());
        let v6 = |index: usize| -> ipnet::IpNet {
            format!("2001:db8:{:x}:{:x}::/64", index >> 16, index & 0xffff)
                .parse()
                .unwrap()
        };
        let before: Ranges = (0..100_000).map(v6).collect();
        sync(backend.as_ref(), &before);
        let after: Ranges = (1_000..101_000).map(v6).collect();
        let observed = backend.observe().unwrap();
        let change = Change::between(&observed, &after);
        assert_eq!((change.add.len(), change.remove.len()), (1_000, 1_000));
        let generation = netlink::generation().unwrap();
        let started = std::time::Instant::now();
        backend.apply(&change).unwrap();
        let took = started.elapsed();
        assert_eq!(netlink::generation().unwrap(), generation.wrapping_add(1));
        eprintln!("apply of 1,000 out and 1,000 in of 100,000: {took:?}");
        let listed = netlink::read_set(
            "filter",
            "cf_allowlist_v6",
            cf_allowlist_backend::Family::V6,
        )
        .unwrap()
        .unwrap();
        assert_eq!(listed.odd, 0);
        assert_eq!(listed.networks, after.iter().copied().collect::<Vec<_>>());

        // The kernel's part alone: the same size of batch, written directly.
        let generation = netlink::generation().unwrap();
        let edit = netlink::SetEdit {
            table: "filter".to_owned(),
            set: "cf_allowlist_v6".to_owned(),
            remove: (1_000..2_000).map(v6).collect(),
            add: (101_000..102_000).map(v6).collect(),
        };
        let started = std::time::Instant::now();
        netlink::edit_sets(generation, &[edit]).unwrap();
        eprintln!(
            "the batch alone, 1,000 out and 1,000 in: {:?}",
            started.elapsed()
        );
        assert_eq!(netlink::generation().unwrap(), generation.wrapping_add(1));
        let generation = netlink::generation().unwrap();
        let edit = netlink::SetEdit {
            table: "filter".to_owned(),
            set: "cf_allowlist_v6".to_owned(),
            remove: (2_000..12_000).map(v6).collect(),
            add: (102_000..112_000).map(v6).collect(),
        };
        let started = std::time::Instant::now();
        netlink::edit_sets(generation, &[edit]).unwrap();
        eprintln!(
            "the batch alone, 10,000 out and 10,000 in: {:?}",
            started.elapsed()
        );
        assert_eq!(netlink::generation().unwrap(), generation.wrapping_add(1));
    });
}

#[test]
fn an_element_batch_with_one_refused_message_changes_nothing() {
    // The batch is one transaction: an addition to one set and a deletion of an element the
    // other set does not hold are refused together, and the generation does not move.
    use cf_allowlist_nftables::harness::NftablesHarness;
    use cf_allowlist_nftables::netlink::{self, NetlinkError, SetEdit};
    in_fresh_netns(|| {
        let harness = NftablesHarness::with_base_ruleset();
        let backend = harness.backend(&default_policy());
        let before: Ranges = ["198.51.100.0/25", "2001:db8:cf::/48"]
            .iter()
            .map(|range| range.parse().unwrap())
            .collect();
        sync(backend.as_ref(), &before);
        let generation = netlink::generation().unwrap();
        let edits = [
            SetEdit {
                table: "filter".to_owned(),
                set: "cf_allowlist_v6".to_owned(),
                remove: Vec::new(),
                add: vec!["2001:db8:ce::/48".parse().unwrap()],
            },
            SetEdit {
                table: "filter".to_owned(),
                set: "cf_allowlist_v4".to_owned(),
                remove: vec!["203.0.113.0/24".parse().unwrap()],
                add: Vec::new(),
            },
        ];
        let error = netlink::edit_sets(generation, &edits).unwrap_err();
        assert!(
            matches!(&error, NetlinkError::Refused { set, errno: 2 } if set == "cf_allowlist_v4"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "the kernel refused the change to set cf_allowlist_v4: no such file or directory (errno 2)"
        );
        assert_eq!(
            netlink::generation().unwrap(),
            generation,
            "nothing committed"
        );
        let observed = harness.backend(&default_policy()).observe().unwrap();
        assert_eq!(observed.ranges, before);
        // A stale generation is refused before any message is looked at.
        let error = netlink::edit_sets(generation.wrapping_sub(1), &edits[..1]).unwrap_err();
        assert!(matches!(error, NetlinkError::GenerationMoved), "{error:?}");
        assert_eq!(netlink::generation().unwrap(), generation);
    });
}

#[test]
fn nftables_refills_a_set_through_nft_when_netlink_writes_keep_being_refused() {
    // Another writer commits before each of our netlink writes: both are refused, and the
    // change goes through nft, whose batch flushes and refills the set (more than
    // REFILL_ABOVE_REMOVALS go) in one transaction. Exactly the target remains.
    use cf_allowlist_nftables::REFILL_ABOVE_REMOVALS;
    use cf_allowlist_nftables::harness::{NftablesHarness, on_element_write};
    in_fresh_netns(|| {
        let harness = NftablesHarness::with_base_ruleset();
        let backend = harness.backend(&default_policy());
        sync(backend.as_ref(), &many_v6(200));
        let refused = std::rc::Rc::new(std::cell::Cell::new(0));
        let counter = refused.clone();
        on_element_write(move || {
            counter.set(counter.get() + 1);
            must(
                "nft",
                &["add", "table", "ip", &format!("other{}", counter.get())],
            );
        });
        let after: Ranges = (REFILL_ABOVE_REMOVALS + 1..200 + REFILL_ABOVE_REMOVALS + 1)
            .map(|index| format!("2001:db8:0:{index:x}::/64").parse().unwrap())
            .collect();
        let change = sync(backend.as_ref(), &after);
        assert_eq!(change.remove.len(), REFILL_ABOVE_REMOVALS + 1);
        assert_eq!(refused.get(), 2, "two netlink writes refused, then nft");
        on_element_write(|| {});
        let observed = harness.backend(&default_policy()).observe().unwrap();
        assert_eq!(observed.ranges, after);
        assert!(observed.repairs.is_empty(), "{:?}", observed.repairs);
        assert!(must("nft", &["list", "tables"]).contains("table ip other2"));
    });
}

#[test]
fn netlink_element_writes_handle_neighbours_and_shared_starts() {
    // Adjacent prefixes share a key (one's end is the next one's start): removing one keeps
    // its neighbour whole; a /24 replaced by its two halves deletes and re-adds the same start
    // key in one batch. What the kernel then holds is exactly the target, read both over
    // netlink and by nft.
    use cf_allowlist_backend::Change;
    use cf_allowlist_nftables::harness::NftablesHarness;
    in_fresh_netns(|| {
        let harness = NftablesHarness::with_base_ruleset();
        let backend = harness.backend(&default_policy());
        let ranges =
            |texts: &[&str]| -> Ranges { texts.iter().map(|text| text.parse().unwrap()).collect() };
        let before = ranges(&[
            "198.51.100.0/25",
            "198.51.100.128/25",
            "203.0.113.0/24",
            "2001:db8:cf::/48",
            "2001:db8:d0::/48",
        ]);
        sync(backend.as_ref(), &before);
        let after = ranges(&[
            "198.51.100.128/25",
            "192.0.2.0/24",
            "203.0.113.0/25",
            "203.0.113.128/25",
            "2001:db8:d0::/48",
            "2001:db8:d1::/48",
        ]);
        let observed = backend.observe().unwrap();
        let change = Change::between(&observed, &after);
        let generation = cf_allowlist_nftables::netlink::generation().unwrap();
        let writes = std::rc::Rc::new(std::cell::Cell::new(0));
        let counter = writes.clone();
        cf_allowlist_nftables::harness::on_element_write(move || counter.set(counter.get() + 1));
        backend.apply(&change).unwrap();
        assert_eq!(writes.get(), 1, "written over netlink");
        assert_eq!(
            cf_allowlist_nftables::netlink::generation().unwrap(),
            generation.wrapping_add(1)
        );
        let fresh = harness.backend(&default_policy()).observe().unwrap();
        assert_eq!(fresh.ranges, after);
        assert!(fresh.repairs.is_empty(), "{:?}", fresh.repairs);
        let listed = must("nft", &["list", "set", "inet", "filter", "cf_allowlist_v4"]);
        let listed = listed.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            listed.contains(
                "elements = { 192.0.2.0/24, 198.51.100.128/25, 203.0.113.0/25, 203.0.113.128/25 }"
            ),
            "{listed}"
        );
    });
}
