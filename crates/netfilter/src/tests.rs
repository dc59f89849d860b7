//! Unit tests on listings recorded from real namespaces (`testdata/record.sh` loads the
//! rulesets beside it and records what `nft -j` and `iptables-save` print), plus hand-written
//! listings for the corners. The end-to-end tests (`tests/e2e_shadowing.rs`) check the same
//! kinds of verdicts against real packets.

use std::net::IpAddr;

use super::*;

macro_rules! recorded {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/recorded/",
            $name
        ))
    };
}

/// The hint says what to change by hand, where, and names no backend: which of our backends
/// would help is the caller's to simulate ([`Host::planned`]).
#[track_caller]
fn assert_by_hand(by: &Blocker) {
    assert!(
        by.hint
            .contains(&format!("{} {} {}", by.family, by.table, by.base_chain))
            && !by.hint.contains("--backend"),
        "{}",
        by.hint
    );
}

fn address(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn nft_only(json: &str) -> Host {
    Host::from_listings(&Listings {
        nft_json: json.to_owned(),
        ..Listings::default()
    })
    .unwrap()
}

fn listing(family: &str, text: &str) -> XtablesListing {
    XtablesListing {
        family: family.to_owned(),
        table: "filter".to_owned(),
        text: text.to_owned(),
    }
}

#[track_caller]
fn blocked(fate: Fate) -> Blocker {
    match fate {
        Fate::Blocked { by } => *by,
        other => panic!("expected blocked, got {other:?}"),
    }
}

#[track_caller]
fn unsure(fate: Fate) -> String {
    match fate {
        Fate::Unsure { why } => why,
        other => panic!("expected unsure, got {other:?}"),
    }
}

#[test]
fn debian_policy_drop_blocks_everything_but_the_admin_ssh() {
    let host = nft_only(recorded!("debian.json"));
    assert_eq!(host.fate(address("192.0.2.2"), 22), Fate::Accepted);
    let by = blocked(host.fate(address("198.51.100.10"), 80));
    assert_eq!(
        (by.family.as_str(), by.table.as_str(), by.chain.as_str()),
        ("inet", "filter", "input")
    );
    assert!(by.policy && by.rule.is_none() && by.owner.is_none());
    assert_by_hand(&by);
    // `iif lo accept` does not apply to a packet from outside; `meta l4proto ipv6-icmp` does not
    // match TCP.
    assert!(blocked(host.fate(address("2001:db8:1::2"), 22)).policy);
}

#[test]
fn ufw_on_iptables_nft_beats_a_separate_accepting_table() {
    // The first case: ufw's INPUT policy DROP, our accepts in another table.
    let host = Host::from_listings(&Listings {
        nft_json: recorded!("ufw-nft.json").to_owned(),
        iptables_nft: vec![
            listing("ip", recorded!("ufw-nft.filter4.save")),
            listing("ip6", recorded!("ufw-nft.filter6.save")),
        ],
        ..Listings::default()
    })
    .unwrap();
    assert!(host.ufw_active());
    assert!(!host.docker_chains_present());
    for source in ["198.51.100.10", "203.0.113.200", "2001:db8:cf::10"] {
        let by = blocked(host.fate(address(source), 443));
        assert_eq!(by.owner.as_deref(), Some("ufw"), "{source}");
        assert_eq!(by.origin, "iptables-nft");
        assert_eq!(by.base_chain, "INPUT");
        assert!(by.policy, "{by}");
        assert_by_hand(&by);
        assert_by_hand(&by);
        assert!(by.to_string().starts_with("blocked by ufw (ip"), "{by}");
    }
    // ufw's own allow for ssh, past the conntrack matches (read from iptables-nft-save).
    assert_eq!(host.fate(address("192.0.2.2"), 22), Fate::Accepted);
    assert_eq!(host.fate(address("2001:db8:1::2"), 22), Fate::Accepted);
}

#[test]
fn ufw_on_iptables_nft_without_its_save_listing_is_unsure() {
    // Without iptables-nft-save, ufw's conntrack matches are opaque `xt` objects: the
    // `ESTABLISHED,RELATED` accept may be an accept for anything, so nothing is certain.
    let host = nft_only(recorded!("ufw-nft.json"));
    for (source, port) in [("198.51.100.10", 80), ("192.0.2.2", 22)] {
        let why = unsure(host.fate(address(source), port));
        assert!(why.contains("xt match conntrack"), "{why}");
    }
}

#[test]
fn ufw_on_iptables_legacy_is_attributed_to_the_legacy_tables() {
    let host = Host::from_listings(&Listings {
        nft_json: recorded!("debian.json").replace("policy\": \"drop", "policy\": \"accept"),
        iptables_legacy: vec![listing("ip", recorded!("ufw-legacy.filter4.save"))],
        ..Listings::default()
    })
    .unwrap();
    let by = blocked(host.fate(address("203.0.113.10"), 80));
    assert_eq!(by.origin, "iptables-legacy");
    assert_eq!(by.owner.as_deref(), Some("ufw"));
    assert_by_hand(&by);
    assert_eq!(host.fate(address("192.0.2.2"), 22), Fate::Accepted);
    // The legacy listing is IPv4 only here; IPv6 meets only the (now accepting) inet chain.
    assert_eq!(host.fate(address("2001:db8:cf::10"), 80), Fate::Accepted);
}

#[test]
fn firewalld_reject_at_the_end_of_its_input_chain() {
    let host = nft_only(recorded!("firewalld.json"));
    let by = blocked(host.fate(address("198.51.100.10"), 80));
    assert_eq!(by.owner.as_deref(), Some("firewalld"));
    assert_eq!(by.chain, "filter_INPUT");
    assert!(!by.policy);
    let rule = by.rule.as_deref().unwrap();
    assert!(rule.starts_with("reject"), "{rule}");
    assert_by_hand(&by);
    // Past `ct status dnat`, `iifname "vo" goto` (may or may not) and the default goto, the
    // zone's allow for ssh.
    assert_eq!(host.fate(address("192.0.2.2"), 22), Fate::Accepted);
    // IPv6 meets firewalld's reverse-path check (`fib saddr . mark . iif oif missing drop`) in
    // prerouting first: routing is taken to be symmetric, so it passes, and the zone's allow
    // for the admin's IPv6 range accepts...
    assert_eq!(host.fate(address("2001:db8:1::2"), 22), Fate::Accepted);
    // ...while others' connections are rejected by the zone.
    let by = blocked(host.fate(address("2001:db8:cf::10"), 80));
    assert!(!by.policy);
    assert_eq!(by.owner.as_deref(), Some("firewalld"));
}

#[test]
fn our_iptables_chain_reached_by_a_jump_is_accepted() {
    let listings = Listings {
        nft_json: recorded!("ours.json").to_owned(),
        iptables_nft: vec![listing("ip", recorded!("ours.filter4.save"))],
        ..Listings::default()
    };
    let host = Host::from_listings(&listings).unwrap();
    // The accept in CF-ALLOWLIST is final for INPUT: the DROP for 80,443 after the jump and
    // the policy are not reached.
    for source in ["198.51.100.10", "198.51.100.200", "203.0.113.10"] {
        assert_eq!(host.fate(address(source), 80), Fate::Accepted, "{source}");
    }
    let by = blocked(host.fate(address("203.0.113.200"), 443));
    assert_eq!(by.owner.as_deref(), Some("iptables-nft"));
    assert_eq!(
        by.rule.as_deref(),
        Some("-A INPUT -p tcp -m multiport --dports 80,443 -j DROP")
    );
    assert_by_hand(&by);
    assert!(blocked(host.fate(address("203.0.113.200"), 8080)).policy);

    // Debian's inet filter input with policy drop alongside: our iptables accept no longer helps.
    let host = Host::from_listings(&Listings {
        nft_json: recorded!("ours-debian.json").to_owned(),
        ..listings
    })
    .unwrap();
    let by = blocked(host.fate(address("198.51.100.10"), 80));
    assert_eq!((by.family.as_str(), by.table.as_str()), ("inet", "filter"));
    assert!(by.policy);
    assert_by_hand(&by);
    assert_eq!(
        host.input_path(Family::V4),
        [
            "inet filter input (hook input, priority 0, policy drop, nftables)",
            "ip filter INPUT (hook input, priority 0, policy drop, iptables-nft)",
        ]
    );
    assert_eq!(
        host.input_path(Family::V6),
        ["inet filter input (hook input, priority 0, policy drop, nftables)"]
    );
}

#[test]
fn named_sets_ranges_vmaps_gotos_and_unreadable_matches() {
    let host = nft_only(recorded!("mixed.json"));
    // @allowed (a prefix and a range) with @ports (a value and a range).
    assert_eq!(host.fate(address("198.51.100.10"), 80), Fate::Accepted);
    assert_eq!(host.fate(address("203.0.113.7"), 8000), Fate::Accepted);
    assert_eq!(host.fate(address("203.0.113.7"), 8080), Fate::Accepted);
    // An anonymous set with `th dport != 443`.
    assert_eq!(host.fate(address("2001:db8:cf::1"), 80), Fate::Accepted);
    assert_eq!(host.fate(address("2001:db8:aa::1"), 80), Fate::Accepted);
    // The vmap sends 22 to accept.
    assert_eq!(host.fate(address("203.0.113.200"), 22), Fate::Accepted);
    // 443 jumps to `web`, which goes to `web_tls`, whose reject applies to anyone outside
    // 192.0.2.0/24, before `meta mark` is reached.
    let by = blocked(host.fate(address("203.0.113.200"), 443));
    assert_eq!(by.chain, "web_tls");
    assert_eq!(
        by.rule.as_deref(),
        Some("meta l4proto tcp ip saddr != 192.0.2.0/24 reject with tcp reset # handle 8")
    );
    // An IPv6 source passes web_tls (`ip saddr` never matches IPv6) and meets the policy.
    assert!(blocked(host.fate(address("2001:db8:cf::1"), 443)).policy);
    assert_eq!(by.base_chain, "input");
    // From 192.0.2.0/24 the reject does not apply; the end of `web_tls` returns from `web`
    // (reached by goto), then `meta mark 0x1 drop` may drop it and the policy drops the rest:
    // every way ends in a drop, named by the path that assumes the unreadable match fails.
    assert!(blocked(host.fate(address("192.0.2.2"), 443)).policy);
    // An accept that comes after a match the analysis cannot read: unsure.
    let why = unsure(host.fate(address("203.0.113.200"), 8443));
    assert!(why.contains("meta mark"), "{why}");
    // `udp dport 53` never matches TCP.
    assert!(matches!(
        host.fate(address("203.0.113.200"), 53),
        Fate::Blocked { .. }
    ));
}

#[test]
fn check_judges_each_range_by_its_first_and_last_address() {
    let host = nft_only(recorded!("mixed.json"));
    let ranges: Vec<IpNet> = vec![
        "198.51.100.0/25".parse().unwrap(),
        // Only its first half is in @allowed's prefix: the last address is blocked.
        "198.51.100.0/24".parse().unwrap(),
    ];
    let findings = host.check(&ranges, &[80]);
    assert_eq!(findings.len(), 2);
    assert_eq!(findings[0].fate, Fate::Accepted);
    assert_eq!(findings[0].address, address("198.51.100.0"));
    assert!(matches!(findings[1].fate, Fate::Blocked { .. }));
    assert_eq!(findings[1].address, address("198.51.100.255"));
}

#[test]
fn unread_parts_make_an_accept_unsure_but_not_a_certain_block() {
    let host = Host::from_listings(&Listings {
        nft_json: recorded!("ours-debian.json").to_owned(),
        unread: vec!["iptables-legacy's ip filter table exists but could not be listed".into()],
        ..Listings::default()
    })
    .unwrap();
    assert!(matches!(
        host.fate(address("198.51.100.10"), 80),
        Fate::Blocked { .. }
    ));
    let host = Host::from_listings(&Listings {
        nft_json: recorded!("mixed.json").to_owned(),
        unread: vec!["legacy filter unread".into()],
        ..Listings::default()
    })
    .unwrap();
    assert!(unsure(host.fate(address("198.51.100.10"), 80)).contains("legacy filter unread"));
}

const SAVE_HEAD: &str = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n";

fn legacy_host(rules: &str, ipsets: Option<&str>) -> Host {
    Host::from_listings(&Listings {
        iptables_legacy: vec![listing("ip", &format!("{SAVE_HEAD}{rules}COMMIT\n"))],
        ipsets: ipsets.map(str::to_owned),
        ..Listings::default()
    })
    .unwrap()
}

#[test]
fn iptables_options() {
    let host = legacy_host(
        "-A INPUT -i lo -j ACCEPT\n\
         -A INPUT -m state --state INVALID -j DROP\n\
         -A INPUT ! -i lo -p tcp -m tcp --dport 8000:8010 -j ACCEPT\n\
         -A INPUT -p tcp -m multiport --dports 22,80:81 -m conntrack --ctstate NEW -j ACCEPT\n\
         -A INPUT -s 203.0.113.0/25 -p tcp -m set --match-set web src -j ACCEPT\n\
         -A INPUT ! -s 198.51.100.0/24 -p tcp --dport 9000 -j ACCEPT\n\
         -A INPUT -p udp -m udp --dport 9001 -j ACCEPT\n",
        Some(
            "create web hash:net family inet hashsize 1024 maxelem 65536\nadd web 203.0.113.0/26\n",
        ),
    );
    assert_eq!(host.fate(address("203.0.113.200"), 8005), Fate::Accepted);
    assert_eq!(host.fate(address("203.0.113.200"), 81), Fate::Accepted);
    assert!(blocked(host.fate(address("203.0.113.200"), 82)).policy);
    // -s and the ipset both hold for .10; .100 is outside the set.
    assert_eq!(host.fate(address("203.0.113.10"), 443), Fate::Accepted);
    assert!(matches!(
        host.fate(address("203.0.113.100"), 443),
        Fate::Blocked { .. }
    ));
    assert_eq!(host.fate(address("192.0.2.9"), 9000), Fate::Accepted);
    assert!(matches!(
        host.fate(address("198.51.100.9"), 9000),
        Fate::Blocked { .. }
    ));
    assert!(matches!(
        host.fate(address("192.0.2.9"), 9001),
        Fate::Blocked { .. }
    ));
    // IPv6 meets no legacy ip6tables table here.
    assert_eq!(host.fate(address("2001:db8::1"), 82), Fate::Accepted);
}

#[test]
fn an_ipset_that_cannot_be_read_makes_its_rule_a_maybe() {
    let rules = "-A INPUT -p tcp -m set --match-set web src -j ACCEPT\n";
    let why = unsure(legacy_host(rules, None).fate(address("203.0.113.10"), 443));
    assert!(why.contains("is ipset installed?"), "{why}");
    let why = unsure(
        legacy_host(
            rules,
            Some("create web hash:net,port family inet\nadd web 203.0.113.0/24,tcp:443\n"),
        )
        .fate(address("203.0.113.10"), 443),
    );
    assert!(why.contains("hash:net,port"), "{why}");
}

#[test]
fn a_maybe_drop_before_a_certain_drop_is_still_blocked_and_before_an_accept_is_unsure() {
    let host = legacy_host(
        "-A INPUT -m mark --mark 0x1 -j DROP\n\
         -A INPUT -p tcp --dport 80 -j ACCEPT\n\
         -A INPUT -p tcp --dport 81 -j REJECT --reject-with tcp-reset\n",
        None,
    );
    let why = unsure(host.fate(address("203.0.113.10"), 80));
    assert!(why.contains("-m mark --mark 0x1"), "{why}");
    let by = blocked(host.fate(address("203.0.113.10"), 81));
    assert_eq!(
        by.rule.as_deref(),
        Some("-A INPUT -p tcp --dport 81 -j REJECT --reject-with tcp-reset")
    );
    assert!(blocked(host.fate(address("203.0.113.10"), 82)).policy);
}

#[test]
fn queue_and_unknown_targets_are_not_followed() {
    let host = legacy_host(
        "-A INPUT -p tcp --dport 80 -j NFQUEUE --queue-num 1\n",
        None,
    );
    let why = unsure(host.fate(address("203.0.113.10"), 80));
    assert!(why.contains("target NFQUEUE"), "{why}");
}

#[test]
fn docker_chains_are_noticed() {
    let host = legacy_host(":DOCKER - [0:0]\n:DOCKER-USER - [0:0]\n", None);
    assert!(host.docker_chains_present());
    assert!(!host.ufw_active());
    // A chain named in capitals is still a chain, not a target.
    let host = legacy_host(
        ":DOCKER - [0:0]\n-A INPUT -j DOCKER\n-A DOCKER -p tcp --dport 80 -j ACCEPT\n",
        None,
    );
    assert_eq!(host.fate(address("203.0.113.10"), 80), Fate::Accepted);
}

#[test]
fn fates_serialise_for_the_json_output() {
    let host = nft_only(recorded!("debian.json"));
    let json = serde_json::to_value(host.fate(address("198.51.100.10"), 80)).unwrap();
    assert_eq!(json["fate"], "blocked");
    assert_eq!(json["by"]["table"], "filter");
    assert_eq!(json["by"]["policy"], true);
    let json = serde_json::to_value(Fate::Accepted).unwrap();
    assert_eq!(json["fate"], "accepted");
}

#[test]
fn garbage_is_an_error_not_a_verdict() {
    let error = Host::from_listings(&Listings {
        nft_json: "<html>".to_owned(),
        ..Listings::default()
    })
    .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Failed);
}

#[test]
fn a_real_ufw_is_read_without_doubt() {
    // Recorded from Debian's ufw 0.36 (`testdata/record-ufw.sh`): default deny incoming, ssh
    // from the admin range, 80 and 443 from 203.0.113.0/25 and 2001:db8:cf::/48.
    let host = Host::from_listings(&Listings {
        nft_json: recorded!("ufw-real.json").to_owned(),
        iptables_nft: vec![
            listing("ip", recorded!("ufw-real.filter4.save")),
            listing("ip6", recorded!("ufw-real.filter6.save")),
        ],
        ..Listings::default()
    })
    .unwrap();
    assert!(host.ufw_active());
    // Through ufw-not-local (`--dst-type LOCAL` returns), the limit-LOG rules, into
    // ufw-user-input's allows.
    for (source, port) in [
        ("192.0.2.2", 22),
        ("203.0.113.10", 80),
        ("203.0.113.10", 443),
        ("2001:db8:cf::10", 443),
    ] {
        assert_eq!(
            host.fate(address(source), port),
            Fate::Accepted,
            "{source} {port}"
        );
    }
    for (source, port) in [
        ("203.0.113.200", 80),
        ("2001:db8:bad::10", 443),
        ("203.0.113.10", 8080),
    ] {
        let by = blocked(host.fate(address(source), port));
        assert_eq!(by.owner.as_deref(), Some("ufw"));
        assert!(by.policy, "{by}");
        assert_eq!(
            by.to_string().split(':').next().unwrap(),
            format!(
                "blocked by ufw ({} filter INPUT, policy drop)",
                if source.contains(':') { "ip6" } else { "ip" }
            )
        );
    }
}

#[test]
fn iptables_nft_save_replaces_only_the_rules_nft_cannot_print() {
    // iptables-nft-save lists nft's `ip saddr @blocked drop` as a bare `-A INPUT -j DROP`;
    // taken at its word it would block everyone. Only the rule holding an `xt` object (the
    // conntrack + multiport accept) is taken from it.
    let host = Host::from_listings(&Listings {
        nft_json: recorded!("mixed-iptables.json").to_owned(),
        iptables_nft: vec![listing("ip", recorded!("mixed-iptables.filter4.save"))],
        ..Listings::default()
    })
    .unwrap();
    assert_eq!(host.fate(address("203.0.113.10"), 443), Fate::Accepted);
    let by = blocked(host.fate(address("192.0.2.66"), 443));
    assert!(
        by.rule
            .as_deref()
            .unwrap()
            .starts_with("ip saddr @blocked drop"),
        "{by}"
    );
    assert!(blocked(host.fate(address("203.0.113.10"), 8080)).policy);
}

#[test]
fn prerouting_drops_nat_statements_limits_and_device_bound_chains() {
    let host = nft_only(recorded!("edges.json"));
    // A drop on the prerouting hook, in an ip table: no backend writes there.
    let by = blocked(host.fate(address("198.51.100.10"), 80));
    assert_eq!(
        (by.table.as_str(), by.hook.as_str(), by.priority),
        ("early", "prerouting", -300)
    );
    assert_eq!(
        by.rule.as_deref(),
        Some("ip saddr 198.51.100.0/24 drop comment \"early drop\" # handle 2")
    );
    assert_by_hand(&by);
    // A DNAT for 8080 is not followed; 80 is untouched by it. `meta mark set` changes no
    // verdict; the `limit` accept may or may not apply, and the policy accepts either way.
    let why = unsure(host.fate(address("203.0.113.10"), 8080));
    assert!(why.contains("dnat"), "{why}");
    assert_eq!(host.fate(address("203.0.113.10"), 80), Fate::Accepted);
    // A drop in an ingress chain bound to a device: only if the packet arrives there.
    let why = unsure(host.fate(address("192.0.2.2"), 80));
    assert!(
        why.contains("netdev edge ingress drops it if it arrives on"),
        "{why}"
    );
    // Input-path listing, in the order a packet meets the chains.
    assert_eq!(
        host.input_path(Family::V4),
        [
            "netdev edge ingress (hook ingress, priority 0, policy accept, nftables)",
            "ip early pre (hook prerouting, priority -300, policy accept, nftables)",
            "ip nat pre (hook prerouting, priority -100, policy accept, nftables)",
            "inet marks input (hook input, priority 5, policy accept, nftables)",
            "inet synflags input (hook input, priority 20, policy accept, nftables)",
        ]
    );
    // `tcp flags` matches, decided for a SYN: the "new but not syn" drops do not apply...
    assert_eq!(host.fate(address("203.0.113.10"), 443), Fate::Accepted);
    // ...`tcp flags syn` does.
    let by = blocked(host.fate(address("203.0.113.10"), 9));
    assert_eq!(by.table, "synflags");
    assert!(by.rule.as_deref().unwrap().contains("discard"), "{by}");
}

#[test]
fn tcp_flags_are_decided_for_a_syn() {
    let host = legacy_host(
        "-A INPUT -p tcp ! --syn -m state --state NEW -j DROP\n\
         -A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m tcp --dport 80 -j ACCEPT\n\
         -A INPUT -p tcp -m tcp ! --tcp-flags SYN,ACK SYN -j DROP\n\
         -A INPUT -f -j DROP\n\
         -A INPUT -p tcp -m tcp --syn --dport 81 -m comment --comment \"-not an option\" -j ACCEPT\n",
        None,
    );
    assert_eq!(host.fate(address("203.0.113.10"), 80), Fate::Accepted);
    assert_eq!(host.fate(address("203.0.113.10"), 81), Fate::Accepted);
    assert!(blocked(host.fate(address("203.0.113.10"), 82)).policy);
}

#[test]
fn a_summary_says_effective_only_when_every_finding_is_accepted() {
    let ranges: Vec<IpNet> = vec![
        "198.51.100.0/25".parse().unwrap(),
        "203.0.113.0/25".parse().unwrap(),
    ];
    let host = nft_only(recorded!("debian.json"));
    let summary = Summary::of(&host.check(&ranges, &[80, 443]));
    assert_eq!(summary.effective, Some(false));
    // Four findings, one blocker: inet filter input's policy.
    assert_eq!(summary.blockers.len(), 1);
    assert!(summary.blockers[0].policy);

    let host = nft_only(recorded!("mixed.json"));
    let summary = Summary::of(&host.check(&ranges[..1], &[80]));
    assert_eq!(summary.effective, Some(true));
    assert!(summary.blockers.is_empty() && summary.doubts.is_empty());
    let summary = Summary::of(&host.check(&["203.0.113.128/25".parse().unwrap()], &[8443]));
    assert_eq!(summary.effective, None);
    assert_eq!(summary.doubts.len(), 1);
    assert!(summary.blockers.is_empty());
}

/// The firewall a plan leaves: our parts out, the configured placements in.
mod planned {
    use super::*;

    fn listed() -> Vec<IpNet> {
        vec![
            "198.51.100.0/24".parse().unwrap(),
            "2001:db8:cf::/48".parse().unwrap(),
        ]
    }

    fn placement(place: Place, restrict: bool) -> Placement {
        Placement {
            place,
            ranges: listed(),
            ports: vec![80, 443],
            restrict,
            in_place: false,
        }
    }

    #[test]
    fn our_accepts_in_the_chain_that_owns_the_drop_make_the_listed_ranges_accepted() {
        let host = nft_only(recorded!("debian.json"));
        assert_eq!(
            Summary::of(&host.check(&listed(), &[80, 443])).effective,
            Some(false)
        );
        let planned = host.planned(&[placement(
            Place::NftChain {
                table: "filter".into(),
                chain: "input".into(),
            },
            false,
        )]);
        assert_eq!(
            Summary::of(&planned.check(&listed(), &[80, 443])).effective,
            Some(true)
        );
        // Elsewhere (a new table of our own) they are still dropped by inet filter's policy.
        let elsewhere = host.planned(&[placement(
            Place::NftChain {
                table: "cf".into(),
                chain: "input".into(),
            },
            false,
        )]);
        assert_eq!(
            Summary::of(&elsewhere.check(&listed(), &[80, 443])).effective,
            Some(false)
        );
        // Restrict drops the others on the managed ports only.
        let restricted = host.planned(&[placement(
            Place::NftChain {
                table: "filter".into(),
                chain: "input".into(),
            },
            true,
        )]);
        assert_eq!(restricted.fate(address("192.0.2.2"), 22), Fate::Accepted);
        assert!(
            blocked(restricted.fate(address("203.0.113.9"), 443))
                .rule
                .is_some()
        );
    }

    #[test]
    fn our_parts_are_taken_out_before_the_plan_is_put_in() {
        // A host whose accepts are ours (marked with the owner tag): a plan without the
        // backend leaves Debian's policy to drop the listed ranges; moving them to another
        // table does too.
        let ours = nft_only(recorded!("debian.json")).planned(&[placement(
            Place::NftChain {
                table: "filter".into(),
                chain: "input".into(),
            },
            false,
        )]);
        assert_eq!(ours.fate(address("198.51.100.10"), 80), Fate::Accepted);
        let by = blocked(ours.planned(&[]).fate(address("198.51.100.10"), 80));
        assert_eq!((by.table.as_str(), by.policy), ("filter", true));
        let moved = ours.planned(&[placement(
            Place::NftChain {
                table: "second".into(),
                chain: "input".into(),
            },
            false,
        )]);
        assert!(blocked(moved.fate(address("198.51.100.10"), 443)).policy);
        // The iptables chain of ours, and the jump to it, go too.
        let listings = Listings {
            nft_json: recorded!("ours-debian.json").to_owned(),
            ..Listings::default()
        };
        let host = Host::from_listings(&listings).unwrap();
        let planned = host.planned(&[]);
        assert!(!planned.input_path(Family::V4).is_empty());
    }
}

/// nft's JSON for a policy-drop `inet filter` host whose input chain accepts an interval set
/// of `count` ranges on ports 80 and 443 (the shape the nftables backend writes): scattered
/// IPv4 /24s, or IPv6 /64s inside 2001:db8::/32.
fn large_set_host(count: u32, family: Family) -> String {
    let (set_type, protocol) = match family {
        Family::V4 => ("ipv4_addr", "ip"),
        Family::V6 => ("ipv6_addr", "ip6"),
    };
    let elements: Vec<serde_json::Value> = large_ranges(count, family)
        .iter()
        .map(|range| {
            serde_json::json!({"prefix": {"addr": range.network().to_string(),
                                          "len": range.prefix_len()}})
        })
        .collect();
    serde_json::json!({"nftables": [
        {"table": {"family": "inet", "name": "filter", "handle": 1}},
        {"set": {"family": "inet", "table": "filter", "name": "cf", "type": set_type,
                 "flags": ["interval"], "elem": elements}},
        {"chain": {"family": "inet", "table": "filter", "name": "input", "type": "filter",
                   "hook": "input", "prio": 0, "policy": "drop"}},
        {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 3, "expr": [
            {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                       "right": ["established", "related"]}},
            {"accept": null}]}},
        {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 4, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": protocol, "field": "saddr"}},
                       "right": "@cf"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                       "right": {"set": [80, 443]}}},
            {"accept": null}]}},
    ]})
    .to_string()
}

/// `count` disjoint ranges, every other one of a dense run (so no two merge).
fn large_ranges(count: u32, family: Family) -> Vec<IpNet> {
    (0..count)
        .map(|index| match family {
            Family::V4 => IpNet::new(
                IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + (index << 9))),
                24,
            )
            .unwrap(),
            Family::V6 => IpNet::new(
                IpAddr::from(std::net::Ipv6Addr::from(
                    0x2001_0db8_0000_0000_0000_0000_0000_0000_u128 + (u128::from(index) << 65),
                )),
                64,
            )
            .unwrap(),
        })
        .collect()
}

/// The comparisons judging `count` listed ranges costs, and the summary.
fn judging_work(count: u32, family: Family) -> (u64, Summary) {
    let host = nft_only(&large_set_host(count, family));
    let mut ranges = large_ranges(count, family);
    // One range the set does not hold, blocked by the policy.
    ranges.push(match family {
        Family::V4 => "203.0.113.0/24".parse().unwrap(),
        Family::V6 => "2001:db8:ffff:ffff::/64".parse().unwrap(),
    });
    let before = model::work::done();
    let summary = host.summary(&ranges, &[80, 443]);
    (model::work::done() - before, summary)
}

#[test]
fn judging_large_sets_grows_linearly_not_quadratically() {
    // At 100,000 ranges the first sync took 150 s: every lookup scanned the whole set.
    for family in Family::ALL {
        let (small, summary) = judging_work(2_500, family);
        assert_eq!(summary.effective, Some(false), "{summary:?}");
        assert_eq!(summary.blockers.len(), 1);
        assert!(summary.blockers[0].policy);
        let (large, _) = judging_work(10_000, family);
        // Four times the ranges: linear work grows ~4×, n log n a little more, n² 16×.
        assert!(
            large < small * 6,
            "{family:?}: {small} comparisons for 2,500 ranges, {large} for 10,000"
        );
        // And per range and port it is a few dozen comparisons, not a scan.
        assert!(
            large / (10_001 * 2) < 50,
            "{large} comparisons for 10,000 ranges"
        );
    }
}

#[test]
fn set_lookups_agree_with_a_scan() {
    // Overlapping, adjacent and nested networks, an address range and a word.
    let values = model::Values::new(vec![
        model::Value::Net("198.51.100.0/25".parse().unwrap()),
        model::Value::Net("198.51.100.128/25".parse().unwrap()),
        model::Value::Net("198.51.100.64/26".parse().unwrap()),
        model::Value::AddressRange(address("203.0.113.10"), address("203.0.113.20")),
        model::Value::Net("2001:db8::/48".parse().unwrap()),
    ]);
    let condition = |values: model::Values| model::Condition::Compare {
        field: model::Field::Source,
        negate: false,
        values,
        family: None,
        text: "ip saddr @test".to_owned(),
    };
    let indexed = condition(values.clone());
    let mut with_word = values.as_slice().to_vec();
    with_word.push(model::Value::Word("example".to_owned()));
    let doubtful = condition(model::Values::new(with_word));
    for (source, holds) in [
        ("198.51.100.0", true),
        ("198.51.100.255", true),
        ("198.51.101.0", false),
        ("198.51.99.255", false),
        ("203.0.113.9", false),
        ("203.0.113.10", true),
        ("203.0.113.20", true),
        ("203.0.113.21", false),
        ("2001:db8:0:ffff::1", true),
        ("2001:db8:1::", false),
        ("::ffff:198.51.100.1", false),
    ] {
        let packet = model::Packet {
            source: address(source),
            port: 80,
        };
        let expected = if holds {
            model::Tri::Yes
        } else {
            model::Tri::No
        };
        assert_eq!(indexed.matches(&packet), expected, "{source}");
        match doubtful.matches(&packet) {
            model::Tri::Yes => assert!(holds, "{source}"),
            model::Tri::Maybe(why) => {
                assert!(!holds && why.contains("example is not an address"), "{why}")
            }
            model::Tri::No => panic!("{source}: a word in the set must leave a doubt"),
        }
    }
}

#[test]
fn kernel_ranges_read_as_prefixes_where_they_are_one() {
    let value = |first: &str, last: &str| range_value(address(first), address(last));
    let net = |text: &str| model::Value::Net(text.parse().unwrap());
    assert_eq!(
        value("198.51.100.0", "198.51.100.255"),
        net("198.51.100.0/24")
    );
    assert_eq!(value("192.0.2.7", "192.0.2.7"), net("192.0.2.7/32"));
    assert_eq!(value("0.0.0.0", "255.255.255.255"), net("0.0.0.0/0"));
    assert_eq!(
        value("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        net("::/0")
    );
    assert_eq!(value("2001:db8::", "2001:db8::ffff"), net("2001:db8::/112"));
    assert_eq!(
        value("203.0.113.1", "203.0.113.9"),
        model::Value::AddressRange(address("203.0.113.1"), address("203.0.113.9"))
    );
    // Aligned size but not aligned start.
    assert_eq!(
        value("198.51.100.128", "198.51.101.127"),
        model::Value::AddressRange(address("198.51.100.128"), address("198.51.101.127"))
    );
}
