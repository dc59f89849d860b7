//! The netlink reading of the ruleset (`netlink::terse_listing`) against real nft: for every
//! ruleset of a corpus, loaded with `nft -f` in a fresh namespace, the reading is either `None`
//! or exactly `nft -t -j list ruleset` (the same JSON value, `metainfo` aside); for the
//! common rulesets it must be `Some`, for those holding something it does not render `None`.

use cf_allowlist_backend::Policy;
use cf_allowlist_backend::conformance::sync;
use cf_allowlist_netfilter::netlink;
use cf_allowlist_nftables::{NftablesBackend, NftablesOptions};
use cf_allowlist_testkit::{in_fresh_netns, must};

/// The JSON value of a listing without its `metainfo` object.
fn without_metainfo(text: &str) -> serde_json::Value {
    let mut value: serde_json::Value = serde_json::from_str(text).expect("JSON");
    value["nftables"]
        .as_array_mut()
        .expect("an nftables array")
        .retain(|item| item.get("metainfo").is_none());
    value
}

fn load(ruleset: &str) {
    let path = std::env::temp_dir().join(format!(
        "netlink-listing-{}-{:?}.nft",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&path, format!("flush ruleset\n{ruleset}")).unwrap();
    must("nft", &["-f", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
}

/// The reading, checked against nft's: `true` when it was `Some` (and equal).
fn compare(name: &str) -> bool {
    let ours = netlink::terse_listing();
    let generation = netlink::generation().unwrap();
    let nft = must("nft", &["-t", "-j", "list", "ruleset"]);
    match ours {
        None => false,
        Some((at, text)) => {
            assert_eq!(at, generation, "{name}: the generation read at");
            assert_eq!(
                without_metainfo(&text),
                without_metainfo(&nft),
                "{name}: netlink rendering differs from nft's\nours: {text}\nnft:  {nft}"
            );
            true
        }
    }
}

const DEBIAN_STOCK: &str = "table inet filter {
	chain input {
		type filter hook input priority filter;
	}
	chain forward {
		type filter hook forward priority filter;
	}
	chain output {
		type filter hook output priority filter;
	}
}
";

const STOCK_POLICY_DROP: &str = "table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		ct state invalid drop
		iif lo accept
		iifname \"lo\" accept
		tcp dport 22 accept
		ip saddr 192.0.2.0/24 accept
		ip6 saddr 2001:db8::/32 accept
		meta l4proto icmp accept
		meta l4proto ipv6-icmp accept
		ip protocol icmp accept
		counter
		jump mine
		counter drop
	}
	chain mine {
		udp dport 53 accept
		tcp sport 80 goto other
		return
	}
	chain other {
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
	}
	chain output {
		type filter hook output priority filter; policy accept;
	}
}
";

/// The rule kinds in other families and shapes: every one rendered.
const RULE_KINDS: &str = "table ip plain {
	set blocked { type ipv4_addr; }
	set ports { type inet_service; }
	chain input {
		type filter hook input priority -10; policy accept;
		ip saddr 198.51.100.7 drop
		ip saddr != 203.0.113.0/25 tcp dport 8080 drop
		ip saddr 192.0.2.0/23 accept
		ip daddr 192.0.2.1 accept
		ip saddr @blocked drop
		tcp dport @ports accept
		tcp dport { 443, 80, 22 } accept comment \"three ports\"
		tcp dport != 22 counter accept
		ct state new,established,untracked accept
		ct state related accept
		meta l4proto tcp accept
		iifname != \"eth0\" accept
	}
}
table ip6 plain6 {
	chain input {
		type filter hook input priority filter; policy accept;
		ip6 saddr 2001:db8::1 accept
		ip6 saddr 2001:db8:1::/48 accept
		ip6 saddr 2001:db8::/33 accept
		ip6 nexthdr ipv6-icmp accept
		udp sport { 53, 123 } accept
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
	}
}
table inet other {
	set v4 { type ipv4_addr; flags interval; }
	set v6 { type ipv6_addr; flags interval; }
	chain input {
		type filter hook input priority 10; policy accept;
		ip saddr @v4 tcp dport 443 accept
		ip6 saddr != @v6 tcp dport { 80, 443 } drop
		ip daddr 192.0.2.0/24 accept
		ip6 daddr 2001:db8::/32 accept
		meta nfproto ipv4 accept
		meta nfproto ipv6 meta l4proto tcp accept
	}
}
";

#[test]
fn the_common_rulesets_are_read_over_netlink_exactly_as_nft_prints_them() {
    in_fresh_netns(|| {
        for (name, ruleset) in [
            ("empty", ""),
            ("debian stock", DEBIAN_STOCK),
            ("stock host with policy drop", STOCK_POLICY_DROP),
            ("rule kinds", RULE_KINDS),
        ] {
            load(ruleset);
            assert!(compare(name), "{name}: not read over netlink");
        }
    });
}

#[test]
fn our_own_table_after_real_syncs_is_read_exactly() {
    in_fresh_netns(|| {
        let ranges = ["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect();
        for (name, base, policy) in [
            ("default", "", vec![80, 443], false),
            ("restrict", "", vec![80, 443], true),
            ("single port", "", vec![443], false),
            ("on the stock host", STOCK_POLICY_DROP, vec![80, 443], true),
        ]
        .map(|(name, base, ports, restrict)| (name, base, Policy { ports, restrict }))
        {
            load(base);
            let backend = NftablesBackend::new(NftablesOptions::default(), policy);
            sync(&backend, &ranges);
            assert!(compare(name), "{name}: not read over netlink");
        }
    });
}

#[test]
fn what_is_not_rendered_reads_as_none() {
    in_fresh_netns(|| {
        let corpus = [
            (
                "limit",
                "table inet t { chain c { limit rate 10/second accept; } }",
            ),
            (
                "verdict map",
                "table inet t { chain c { tcp dport vmap { 22 : accept, 23 : drop }; } }",
            ),
            ("log", "table inet t { chain c { log prefix \"x\" drop; } }"),
            (
                "meta mark",
                "table inet t { chain c { meta mark 1 accept; } }",
            ),
            (
                "nat",
                "table ip t { chain c { type nat hook prerouting priority dstnat; tcp dport 80 redirect to :8080; } }",
            ),
            ("map", "table inet t { map m { type ipv4_addr : mark; } }"),
            (
                "set with timeout",
                "table inet t { set s { type ipv4_addr; flags timeout; } }",
            ),
            (
                "set with comment",
                "table inet t { set s { type ipv4_addr; comment \"x\"; } }",
            ),
            (
                "set with size",
                "table inet t { set s { type ipv4_addr; size 100; } }",
            ),
            ("typeof set", "table inet t { set s { typeof ip saddr; } }"),
            (
                "address set inline",
                "table inet t { chain c { ip saddr { 192.0.2.1, 192.0.2.2 } accept; } }",
            ),
            (
                "interval set inline",
                "table inet t { chain c { ip saddr { 192.0.2.0/24, 198.51.100.0/24 } accept; } }",
            ),
            ("named counter", "table inet t { counter k { } }"),
            ("dormant table", "table inet t { flags dormant; }"),
            (
                "ingress chain",
                "table netdev t { chain c { type filter hook ingress device lo priority 0; } }",
            ),
            ("arp table", "table arp t { }"),
            ("bridge table", "table bridge t { }"),
            (
                "icmp type",
                "table inet t { chain c { icmp type echo-request accept; } }",
            ),
            (
                "ct state ==",
                "table inet t { chain c { ct state == established accept; } }",
            ),
            (
                "iifname wildcard",
                "table inet t { chain c { iifname \"eth*\" accept; } }",
            ),
            ("oif", "table inet t { chain c { oif lo accept; } }"),
            ("continue", "table inet t { chain c { continue; } }"),
            (
                "ip6 v4-mapped",
                "table ip6 t { chain c { ip6 saddr ::ffff:192.0.2.1 accept; } }",
            ),
        ];
        for (name, ruleset) in corpus {
            load(&ruleset.replace("} }", "}\n}"));
            assert!(
                !compare(name),
                "{name}: rendered, but it should fall back to nft"
            );
        }
        // iptables-nft's own table (xt matches).
        load("");
        must(
            "iptables-nft",
            &[
                "-A",
                "INPUT",
                "-m",
                "comment",
                "--comment",
                "x",
                "-j",
                "ACCEPT",
            ],
        );
        assert!(
            !compare("iptables-nft"),
            "iptables-nft's table was rendered"
        );
    });
}

/// iptables-nft writes simple matches as native nf_tables expressions (no xt): whatever of
/// those is read over netlink is read exactly.
#[test]
fn iptables_nft_native_rules_are_read_exactly_or_not_at_all() {
    in_fresh_netns(|| {
        load("");
        for (tool, rule) in [
            (
                "iptables-nft",
                &["-A", "INPUT", "-s", "192.0.2.0/24", "-j", "ACCEPT"][..],
            ),
            (
                "iptables-nft",
                &["-A", "INPUT", "-d", "192.0.2.1", "-j", "DROP"],
            ),
            ("iptables-nft", &["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"]),
            (
                "iptables-nft",
                &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
            ),
            ("iptables-nft", &["-P", "INPUT", "DROP"]),
            (
                "ip6tables-nft",
                &["-A", "INPUT", "-s", "2001:db8::/32", "-j", "ACCEPT"],
            ),
            (
                "ip6tables-nft",
                &["-A", "INPUT", "-p", "udp", "--sport", "53", "-j", "ACCEPT"],
            ),
        ] {
            must(tool, rule);
            let name = format!("{tool} {}", rule.join(" "));
            eprintln!("{name}: read over netlink: {}", compare(&name));
        }
    });
}

/// nft's own example rulesets and this machine's /etc/nftables.conf, those that load here:
/// each is read exactly or not at all.
#[test]
fn nfts_example_rulesets_are_read_exactly_or_not_at_all() {
    in_fresh_netns(|| {
        let mut files: Vec<std::path::PathBuf> =
            std::fs::read_dir("/usr/share/doc/nftables/examples")
                .map(|entries| {
                    entries
                        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                        .filter(|path| path.extension().is_some_and(|ext| ext == "nft"))
                        .collect()
                })
                .unwrap_or_default();
        files.sort();
        files.push("/etc/nftables.conf".into());
        let mut rendered = Vec::new();
        for file in files.iter().filter(|file| file.exists()) {
            load("");
            let loaded = std::process::Command::new("nft")
                .arg("-f")
                .arg(file)
                .output()
                .unwrap();
            if !loaded.status.success() {
                continue;
            }
            let name = file.display().to_string();
            if compare(&name) {
                rendered.push(name);
            }
        }
        eprintln!("read over netlink: {rendered:#?}");
        assert!(
            rendered.iter().any(|name| name.ends_with("nftables.conf")),
            "{rendered:?}"
        );
    });
}

/// While another writer commits transaction after transaction (a table added, deleted, added…),
/// every reading is one snapshot: the generation it names is the one it shows (the table is
/// there exactly at the generations an odd number of commits after the start).
#[test]
fn a_reading_during_other_commits_is_exact_at_the_generation_it_names() {
    in_fresh_netns(|| {
        load(DEBIAN_STOCK);
        let start = netlink::generation().unwrap();
        // A thread made here shares this thread's network namespace.
        let writer = std::thread::spawn(move || {
            for commit in 0..100 {
                let verb = if commit % 2 == 0 { "add" } else { "delete" };
                must("nft", &[verb, "table", "inet", "flip"]);
            }
            100
        });
        let (mut read, mut refused) = (0, 0);
        while !writer.is_finished() {
            match netlink::terse_listing() {
                Some((generation, text)) => {
                    read += 1;
                    let commits = generation.wrapping_sub(start);
                    let shows = text.contains("\"name\":\"flip\"");
                    assert_eq!(
                        shows,
                        commits % 2 == 1,
                        "at generation {generation} ({commits} commits): {text}"
                    );
                }
                None => refused += 1,
            }
        }
        let commits = writer.join().unwrap();
        eprintln!("{read} readings, {refused} gave up, during {commits} commits");
        assert!(read > 0, "no reading succeeded during {commits} commits");
    });
}

/// Random rulesets made of the rendered statements (and now and then one that is not), in
/// every rendered family: each that nft loads is read exactly or not at all. Deterministic
/// (a fixed seed), so a failure is repeatable.
#[test]
fn random_rulesets_are_read_exactly_or_not_at_all() {
    in_fresh_netns(|| {
        let mut seed: u64 = 0x5eed_cf41;
        let mut next = move |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as usize
        };
        let (mut loaded, mut read) = (0, 0);
        for round in 0..200 {
            let family = ["ip", "ip6", "inet"][next(3)];
            let mut pool: Vec<String> = vec![
                format!("tcp dport {}", 1 + next(65000)),
                format!("tcp dport != {}", 1 + next(65000)),
                format!("udp sport {}", 1 + next(65000)),
                format!(
                    "tcp dport {{ {}, {}, 443 }}",
                    1 + next(400),
                    500 + next(400)
                ),
                "udp dport { 53, 123 }".to_owned(),
                ["meta l4proto tcp", "meta l4proto udp", "meta l4proto icmp"][next(3)].to_owned(),
                "iifname \"lo\"".to_owned(),
                "iifname != \"eth0\"".to_owned(),
                "iif lo".to_owned(),
                [
                    "ct state established,related",
                    "ct state invalid",
                    "ct state new",
                    "ct state new,untracked",
                ][next(4)]
                .to_owned(),
                "counter".to_owned(),
            ];
            if family != "ip6" {
                pool.push(format!("ip saddr 192.0.2.{}", next(256)));
                pool.push(format!("ip saddr 198.51.100.0/{}", 24 + next(9)));
                pool.push(format!("ip daddr != 203.0.113.0/{}", 24 + next(9)));
                pool.push(["ip protocol icmp", "ip protocol tcp"][next(2)].to_owned());
                pool.push("ip saddr @v4".to_owned());
            }
            if family != "ip" {
                pool.push(format!("ip6 saddr 2001:db8::{:x}", 1 + next(65000)));
                pool.push(format!("ip6 daddr 2001:db8::/{}", 32 + next(97)));
                pool.push("ip6 nexthdr ipv6-icmp".to_owned());
                pool.push("ip6 saddr != @v6".to_owned());
            }
            if family == "inet" {
                pool.push(["meta nfproto ipv4", "meta nfproto ipv6"][next(2)].to_owned());
            }
            // Now and then something not rendered.
            if next(4) == 0 {
                pool.push(
                    [
                        "limit rate 5/second",
                        "log prefix \"x\"",
                        "meta mark 1",
                        "tcp flags syn",
                    ][next(4)]
                    .to_owned(),
                );
            }
            let verdicts = ["accept", "drop", "return", "jump side", "goto side", ""];
            let mut rules = String::new();
            for _ in 0..1 + next(6) {
                let mut rule: Vec<String> = (0..1 + next(3))
                    .map(|_| pool[next(pool.len())].clone())
                    .collect();
                rule.push(verdicts[next(verdicts.len())].to_owned());
                if next(3) == 0 {
                    rule.push(format!("comment \"rule {round}\""));
                }
                rules.push_str(&format!("\t\t{}\n", rule.join(" ")));
            }
            let policy = ["accept", "drop"][next(2)];
            let ruleset = format!(
                "table {family} t{round} {{
	set v4 {{ type ipv4_addr; flags interval; }}
	set v6 {{ type ipv6_addr; }}
	chain side {{
	}}
	chain input {{
		type filter hook input priority {}; policy {policy};
{rules}	}}
}}
",
                next(200) as i64 - 100
            );
            let path =
                std::env::temp_dir().join(format!("netlink-random-{}.nft", std::process::id()));
            std::fs::write(&path, format!("flush ruleset\n{ruleset}")).unwrap();
            let ok = std::process::Command::new("nft")
                .arg("-f")
                .arg(&path)
                .output()
                .unwrap()
                .status
                .success();
            std::fs::remove_file(&path).unwrap();
            if !ok {
                continue;
            }
            loaded += 1;
            if compare(&ruleset) {
                read += 1;
            }
        }
        eprintln!("{loaded} random rulesets loaded, {read} read over netlink");
        assert!(read * 3 >= loaded, "too few read: {read} of {loaded}");
    });
}
