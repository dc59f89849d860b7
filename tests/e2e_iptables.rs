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
    lab.assert_only_admin_ssh_open();

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
    lab.assert_moved_to_the_second_list(&sync(&lab, &config, &[]));

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
fn docker_user_restricts_a_published_port_and_lets_the_containers_replies_out() {
    use crate::support::docker::{Container, answered};
    let lab = Lab::new();
    lab.load_iptables_rules("nft");
    let _container = Container::start(&lab, "nft");
    assert!(
        answered(&lab, "203.0.113.200"),
        "the published port does not answer to begin with"
    );

    let config = lab.write_config(
        "restrict = true
ports = [8443]
[[backend]]
kind = \"iptables\"
variant = \"nft\"
docker_user = true
",
    );
    sync(&lab, &config, &[])
        .code(0)
        .stdout_has("~ create chain CF-ALLOWLIST-DOCKER")
        .stderr_lacks("has no DOCKER-USER chain");
    for listed in ["198.51.100.10", "203.0.113.10"] {
        assert!(
            answered(&lab, listed),
            "{listed} (listed) gets no answer from the published port: the container's replies are dropped"
        );
    }
    assert!(
        !answered(&lab, "203.0.113.200"),
        "restrict did not cover the published port"
    );
    sync(&lab, &config, &[]).code(0).says_nothing();
    // A DNAT target is not a local listener: doctor says the port is published.
    let doctor = lab.cf(&["--config", &config, "doctor"]);
    assert!(
        !doctor.stdout.contains("nothing listens on port 8443"),
        "{doctor}"
    );
    doctor.stdout_has("tcp 8443: published");

    // An upstream change follows into the Docker chain; purge removes it.
    lab.fixture.set("/ips-v4", Reply::ok(SECOND_V4));
    sync(&lab, &config, &[]).code(0);
    assert!(
        answered(&lab, "203.0.113.200"),
        "a newly listed source gets no answer from the published port"
    );
    assert!(
        !answered(&lab, "203.0.113.10"),
        "a source no longer listed still reaches it"
    );
    lab.cf(&["purge"]).code(0);
    let save = lab.origin.exec("iptables-nft-save", &["-t", "filter"]);
    assert!(!save.contains("CF-ALLOWLIST"), "{save}");
    assert!(answered(&lab, "203.0.113.10"));
}

#[test]
fn a_variant_switch_removes_our_parts_from_the_old_variant_and_purge_looks_in_both() {
    use crate::support::lab::{LIST_V4, ORIGIN_V4};
    use crate::support::netns::connects;
    let lab = Lab::new();
    let origin: std::net::IpAddr = ORIGIN_V4.parse().unwrap();
    let reaches = |source: &str| connects(&lab.edge, source.parse().unwrap(), origin, 80);
    let config = lab.state.path().join("config.toml");
    let config_text = config.display().to_string();
    // Configures the iptables backend in `variant`, serves `list` and syncs.
    let sync_variant = |variant: &str, list: &str| {
        let text = format!(
            "restrict = true\n[[backend]]\nkind = \"iptables\"\nvariant = \"{variant}\"\nmode = \"rules\"\n"
        );
        std::fs::write(&config, text).unwrap();
        lab.fixture.set("/ips-v4", Reply::ok(list));
        let outcome = sync(&lab, &config_text, &[]);
        outcome.code(0);
        outcome
    };
    let ours = |variant: &str| lab.iptables_state(variant).contains("CF-ALLOWLIST");

    // Restrict in iptables-nft (no other rules: policy accept, so only our drop closes 80).
    sync_variant("nft", LIST_V4);
    assert!(reaches("203.0.113.10") && !reaches("203.0.113.200"));

    // The config now says legacy and the list moves: the nft parts go, or their drop would
    // keep the newly listed 203.0.113.200 out.
    sync_variant("legacy", SECOND_V4).stdout_has("iptables-nft");
    assert!(ours("legacy"));
    assert!(!ours("nft"), "the nft variant's parts were left in place");
    assert!(
        reaches("203.0.113.200"),
        "the old variant's drop keeps a listed source out"
    );
    assert!(!reaches("203.0.113.10"));

    // What an earlier release left in iptables-nft when the variant changed: purge, which
    // acts on the recorded (legacy) backend, still finds it.
    let owner: String =
        serde_json::from_str(&std::fs::read_to_string(lab.state_dir().join("owner")).unwrap())
            .unwrap();
    lab.origin.exec_with_input(
        "iptables-nft-restore",
        &["--noflush"],
        &format!(
            "*filter\n:CF-ALLOWLIST - [0:0]\n\
             -A CF-ALLOWLIST ! -i lo -p tcp -m multiport --dports 80,443 -m comment --comment \"cf-allowlist restrict owner={owner}\" -j DROP\n\
             -I INPUT 1 -m comment --comment \"cf-allowlist owner={owner}\" -j CF-ALLOWLIST\nCOMMIT\n"
        ),
    );
    assert!(!reaches("203.0.113.200"));
    lab.cf(&["purge"]).code(0).stdout_has("iptables-nft");
    assert!(!ours("nft") && !ours("legacy"), "purge left parts");
    assert!(reaches("203.0.113.200"));

    // And back from legacy to nft.
    sync_variant("legacy", SECOND_V4);
    assert!(ours("legacy") && !ours("nft"));
    sync_variant("nft", LIST_V4).stdout_has("iptables-legacy");
    assert!(
        !ours("legacy"),
        "the legacy variant's parts were left in place"
    );
    assert!(reaches("203.0.113.10") && !reaches("203.0.113.200"));
    lab.cf(&["purge"]).code(0);
    assert!(!ours("nft") && !ours("legacy"));
}

#[test]
fn a_port_change_says_which_ports() {
    use crate::support::cmd::cf;
    use crate::support::netns::Netns;
    crate::support::require_root();
    for (backend, was) in [
        ("iptables", "ports 80,443 become 8443"),
        ("nftables", "from ports 80,443 to 8443"),
    ] {
        let netns = Netns::new("ports");
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list");
        std::fs::write(&list, "198.51.100.0/25\n2001:db8:cf::/48\n").unwrap();
        let list = list.display().to_string();
        let sync = |ports: &str| {
            cf(&[
                "sync",
                "--backend",
                backend,
                "--source",
                &list,
                "--ports",
                ports,
            ])
            .state(&dir.path().join("state"))
            .in_netns(&netns.name)
            .run()
        };
        sync("80,443").code(0);
        let change = sync("8443");
        change.code(0).stdout_has(was).stdout_lacks("altered");
    }
}

#[test]
fn auto_follows_the_rules_to_the_other_variant_and_leaves_nothing_behind() {
    let lab = Lab::new();
    lab.load_iptables_rules("legacy");
    let config = lab.state.path().join("config.toml");
    std::fs::write(&config, "[[backend]]\nkind = \"iptables\"\n").unwrap();
    let config = config.display().to_string();
    sync(&lab, &config, &[]).code(0);
    assert!(lab.iptables_state("legacy").contains(":CF-ALLOWLIST"));

    // The admin moves the host's rules to iptables-nft (an upgrade, say): legacy keeps only
    // what is ours.
    lab.load_iptables_rules("nft");
    for tool in ["iptables", "ip6tables"] {
        let save = lab
            .origin
            .exec(&format!("{tool}-legacy-save"), &["-t", "filter"]);
        let only_ours: String = save
            .lines()
            .filter(|line| {
                line.starts_with('*') || line.contains("CF-ALLOWLIST") || *line == "COMMIT"
            })
            .map(|line| match line {
                "*filter" => {
                    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                        .to_owned()
                }
                line => format!("{line}\n"),
            })
            .collect();
        lab.origin
            .exec_with_input(&format!("{tool}-legacy-restore"), &[], &only_ours);
    }
    sync(&lab, &config, &[])
        .code(0)
        .stdout_has("remove our parts from iptables-legacy")
        .stderr_lacks("rules exist in both");
    assert!(lab.iptables_state("nft").contains(":CF-ALLOWLIST"));
    assert!(!lab.iptables_state("legacy").contains("CF-ALLOWLIST"));
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
}
