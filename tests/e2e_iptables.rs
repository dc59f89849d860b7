//! iptables and ip6tables end to end, in both variants and both modes, proven by TCP connects
//! from the edge through real netfilter.

use crate::support::fixture::Reply;
use crate::support::lab::{IN_FIRST_LIST, IN_SECOND_LIST, Lab, SECOND_V4, expect_open};

fn write_config(lab: &Lab, variant: &str, mode: &str) -> String {
    let path = lab.state.path().join("config.toml");
    std::fs::write(
        &path,
        format!("[[backend]]\nkind = \"iptables\"\nvariant = \"{variant}\"\nmode = \"{mode}\"\n"),
    )
    .unwrap();
    path.display().to_string()
}

fn sync(lab: &Lab, config: &str, extra: &[&str]) -> crate::support::cmd::Outcome {
    lab.sync_config(config, extra)
}

fn scenario(variant: &str, mode: &str) {
    let lab = Lab::new();
    lab.load_iptables_rules(variant);
    let config = write_config(&lab, variant, mode);
    let base = lab.iptables_state(variant);
    assert_eq!(
        lab.open(),
        expect_open(&[]),
        "before any sync only the admin's ssh is open"
    );

    sync(&lab, &config, &["--dry-run"])
        .code(0)
        .stdout_has("+ 198.51.100.0/25");
    assert_eq!(
        lab.iptables_state(variant),
        base,
        "dry run changed the rules"
    );

    sync(&lab, &config, &[])
        .code(0)
        .stdout_has("applied generation 1");
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
    let applied = lab.iptables_state(variant);
    if mode == "ipset" {
        assert!(
            applied.contains("--match-set cf-allowlist-v4 src"),
            "{applied}"
        );
    } else {
        assert!(
            applied.contains("-A CF-ALLOWLIST -s 198.51.100.0/25"),
            "{applied}"
        );
    }

    sync(&lab, &config, &[]).code(0).silent();
    assert_eq!(
        lab.iptables_state(variant),
        applied,
        "a no-op sync rewrote the rules"
    );

    lab.fixture.set("/ips-v4", Reply::ok(SECOND_V4));
    sync(&lab, &config, &[])
        .code(0)
        .stdout_has("+ 203.0.113.128/25")
        .stdout_has("- 203.0.113.0/25");
    assert_eq!(lab.open(), expect_open(&IN_SECOND_LIST));

    // A reload of the saved rules drops our chain and jump; the next sync restores one of each.
    lab.load_iptables_rules(variant);
    assert_eq!(lab.open(), expect_open(&[]));
    sync(&lab, &config, &[])
        .code(0)
        .stdout_has("~ insert the jump from INPUT");
    assert_eq!(lab.open(), expect_open(&IN_SECOND_LIST));
    let repaired = lab.iptables_state(variant);
    assert_eq!(
        repaired.matches(" -j CF-ALLOWLIST\n").count(),
        2,
        "one jump per family:\n{repaired}"
    );

    lab.cf(&["purge"]).code(0).stdout_has("purged iptables");
    assert_eq!(lab.iptables_state(variant), base, "purge left a trace");
    assert_eq!(lab.open(), expect_open(&[]));
}

#[test]
fn iptables_nft_rules_mode_end_to_end() {
    scenario("nft", "rules");
}

#[test]
fn iptables_nft_ipset_mode_end_to_end() {
    scenario("nft", "ipset");
}

#[test]
fn iptables_legacy_rules_mode_end_to_end() {
    scenario("legacy", "rules");
}

#[test]
fn iptables_legacy_ipset_mode_end_to_end() {
    scenario("legacy", "ipset");
}

#[test]
fn iptables_auto_variant_writes_where_the_rules_are_and_warns_when_both_hold_rules() {
    let lab = Lab::new();
    lab.load_iptables_rules("legacy");
    let config = lab.write_config("[[backend]]\nkind = \"iptables\"\n");
    sync(&lab, &config, &[]).code(0);
    assert!(lab.iptables_state("legacy").contains(":CF-ALLOWLIST"));
    assert!(!lab.iptables_state("nft").contains("CF-ALLOWLIST"));
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));

    // Somebody adds rules with iptables-nft as well: both are evaluated, so say so.
    lab.origin.exec(
        "iptables-nft",
        &["-A", "INPUT", "-s", "203.0.113.99", "-j", "DROP"],
    );
    sync(&lab, &config, &["-v"])
        .code(0)
        .stderr_has("rules exist in both iptables-nft and iptables-legacy");
    lab.cf(&["purge"]).code(0);
    assert!(!lab.iptables_state("legacy").contains("CF-ALLOWLIST"));
}

#[test]
fn more_ports_than_one_multiport_rule_takes_are_split_and_all_open() {
    let lab = Lab::new();
    lab.load_iptables_rules("nft");
    let config = write_config(&lab, "nft", "rules");
    // Sixteen ports: 8080 falls into the second multiport rule of each range.
    let ports = "1,2,3,4,5,6,7,8,9,10,11,12,13,14,80,8080";
    sync(&lab, &config, &["--ports", ports]).code(0);
    let open = lab.open();
    for source in ["198.51.100.10", "2001:db8:cf::10"] {
        for port in [80, 8080] {
            assert!(
                open.contains(&format!("{source} {port}")),
                "{source} {port}: {open:?}"
            );
        }
    }
    assert!(!open.contains("203.0.113.200 8080"), "{open:?}");
}

#[test]
fn docker_user_restricts_a_published_port_that_input_never_sees() {
    use crate::support::lab::ORIGIN_V4;
    use crate::support::netns::{Listeners, Netns, connects};
    let lab = Lab::new();
    // A "container" behind the origin, and a DNAT standing in for `docker run -p 8080:80`.
    let container = Netns::new("container");
    lab.origin.ip(&[
        "link",
        "add",
        "vc",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &container.name,
    ]);
    lab.origin
        .ip(&["addr", "add", "198.51.100.249/30", "dev", "vc"]);
    lab.origin.ip(&["link", "set", "vc", "up"]);
    container.ip(&["addr", "add", "198.51.100.250/30", "dev", "eth0"]);
    container.ip(&["link", "set", "eth0", "up"]);
    container.ip(&["route", "add", "default", "via", "198.51.100.249"]);
    lab.origin.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    let _web = Listeners::start(&container, &[80]);
    lab.origin.exec_with_input(
        "iptables-nft-restore",
        &["--noflush"],
        "*filter\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\nCOMMIT\n\
         *nat\n-A PREROUTING -p tcp --dport 8080 -j DNAT --to-destination 198.51.100.250:80\nCOMMIT\n",
    );
    let origin: std::net::IpAddr = ORIGIN_V4.parse().unwrap();
    let reaches = |source: &str| connects(&lab.edge, source.parse().unwrap(), origin, 8080);
    assert!(
        reaches("203.0.113.200"),
        "the published port is not reachable to begin with"
    );

    let config = lab.write_config("restrict = true\nports = [8080]\n[[backend]]\nkind = \"iptables\"\nvariant = \"nft\"\ndocker_user = true\n");
    sync(&lab, &config, &[])
        .code(0)
        .stdout_has("~ create chain CF-ALLOWLIST-DOCKER");
    assert!(
        reaches("198.51.100.10"),
        "a listed source lost the published port"
    );
    assert!(
        reaches("203.0.113.10"),
        "a listed source lost the published port"
    );
    assert!(
        !reaches("203.0.113.200"),
        "restrict did not cover the published port"
    );
    sync(&lab, &config, &[]).code(0).says_nothing();
    // An upstream change follows into the Docker chain; purge removes it.
    lab.fixture.set("/ips-v4", Reply::ok(SECOND_V4));
    sync(&lab, &config, &[]).code(0);
    assert!(
        reaches("203.0.113.200"),
        "a newly listed source cannot reach the published port"
    );
    assert!(
        !reaches("203.0.113.10"),
        "a source no longer listed still reaches it"
    );
    lab.cf(&["purge"]).code(0);
    let save = lab.origin.exec("iptables-nft-save", &["-t", "filter"]);
    assert!(!save.contains("CF-ALLOWLIST"), "{save}");
    assert!(reaches("203.0.113.10"));
}
