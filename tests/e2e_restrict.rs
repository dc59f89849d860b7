//! restrict keeps an admin's explicit allows (issue 17, scenario 5), proven with packets.
//!
//! The origin accepts the web ports from everyone (so only restrict closes them), and the admin
//! has one explicit allow: 203.0.113.200, which is not in the served list, may reach 443. After
//! `sync --restrict` the listed sources reach 80 and 443, 203.0.113.200 still reaches 443 (and
//! only 443), and every other source is closed on the web ports. The ufw variant is in
//! `e2e_ufw.rs` (it needs ufw's sandbox).

use std::collections::BTreeSet;

use crate::support::lab::{ADMIN, IN_FIRST_LIST, Lab, expect_open};

/// The admin's explicitly allowed source, outside the served list.
pub const KEPT: &str = "203.0.113.200";

/// What a restricted origin with the admin's allow must leave open.
pub fn open_with_restrict_and_the_kept_allow() -> BTreeSet<String> {
    let mut open = expect_open(&IN_FIRST_LIST);
    open.insert(format!("{KEPT} 443"));
    // The permissive origins below leave 8080 to everyone (restrict covers 80 and 443 only),
    // and 22 to the admin range (ADMIN is in expect_open already).
    for source in crate::support::lab::SOURCES {
        open.insert(format!("{source} 8080"));
    }
    let _ = ADMIN;
    open
}

/// The permissive origin, for nftables: ssh from the admin range, the admin's allow, then the
/// web ports and 8080 accepted from everyone; drop otherwise.
const NFT_ORIGIN: &str = "flush ruleset
table inet filter {
  chain input {
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iif lo accept
    meta l4proto ipv6-icmp accept
    ip saddr 192.0.2.0/24 tcp dport 22 accept comment \"admin ssh\"
    ip saddr 203.0.113.200 tcp dport 443 accept comment \"partner\"
    tcp dport { 80, 443, 8080 } accept
  }
}
";

#[test]
fn nftables_restrict_keeps_an_admins_explicit_allow() {
    let lab = Lab::new();
    lab.origin.nft_batch(NFT_ORIGIN);
    lab.sync("nftables", &["--restrict"]).code(0);
    assert_eq!(
        lab.open(),
        open_with_restrict_and_the_kept_allow(),
        "restrict cut the admin's allow or left a source open:\n{}",
        lab.origin.ruleset()
    );
    // Stable: the next run has nothing to repair.
    lab.sync("nftables", &["--restrict"]).code(0).silent();
    // An allow added below the rule that opens the web ports to everyone cannot be kept (the
    // drop must precede that rule): the run says so, naming it.
    lab.origin.nft_batch(
        "add rule inet filter input ip saddr 192.0.2.2 tcp dport 80 accept comment \"late\"\n",
    );
    // (A sync with nothing to change prints no backend warning today: status does.)
    lab.sync("nftables", &["--restrict"]).code(0);
    lab.cf(&["status"])
        .stderr_has("restrict cuts the admin's allow rule handle")
        .stderr_has("\"late\"");
    lab.cf(&["purge"]).code(0);
}

/// The same origin for iptables, one family.
fn iptables_origin(v4: bool) -> String {
    let (admin, extra) = if v4 {
        (
            "192.0.2.0/24",
            "-A INPUT -s 203.0.113.200/32 -p tcp -m tcp --dport 443 -m comment --comment partner -j ACCEPT\n",
        )
    } else {
        ("2001:db8:1::/64", "-A INPUT -p ipv6-icmp -j ACCEPT\n")
    };
    cf_allowlist_iptables::harness::filter_table(&format!(
        "{extra}-A INPUT -s {admin} -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -p tcp -m multiport --dports 80,443,8080 -j ACCEPT
"
    ))
}

#[test]
fn iptables_restrict_keeps_an_admins_explicit_allow() {
    for mode in ["rules", "ipset"] {
        let lab = Lab::new();
        for (tool, v4) in [
            ("iptables-nft-restore", true),
            ("ip6tables-nft-restore", false),
        ] {
            lab.origin.exec_with_input(tool, &[], &iptables_origin(v4));
        }
        let config = lab.state.path().join("config.toml");
        std::fs::write(
            &config,
            format!("[[backend]]\nkind = \"iptables\"\nvariant = \"nft\"\nmode = \"{mode}\"\n"),
        )
        .unwrap();
        let config = config.display().to_string();
        let sources = lab.source_args();
        let mut args = vec!["--config", config.as_str(), "sync", "--restrict"];
        args.extend(sources.iter().map(String::as_str));
        lab.cf(&args).code(0);
        assert_eq!(
            lab.open(),
            open_with_restrict_and_the_kept_allow(),
            "{mode}: restrict cut the admin's allow or left a source open:\n{}",
            lab.iptables_state("nft")
        );
        lab.cf(&args).code(0).silent();
        // An allow the admin adds later, anywhere in INPUT, is let through by the next run.
        lab.origin.exec(
            "iptables-nft",
            &[
                "-A",
                "INPUT",
                "-s",
                "192.0.2.2",
                "-p",
                "tcp",
                "--dport",
                "80",
                "-j",
                "ACCEPT",
            ],
        );
        lab.cf(&args).code(0);
        assert!(
            lab.open().contains("192.0.2.2 80"),
            "{mode}: the later allow was cut:\n{}",
            lab.iptables_state("nft")
        );
        lab.cf(&["--config", config.as_str(), "purge"]).code(0);
    }
}
