//! The two-host lab for end-to-end tests. The origin runs a default-drop firewall with a
//! foreign admin rule, TCP listeners on 22, 80, 443 and 8080, and the fixture server (standing
//! in for Cloudflare) on its loopback. The edge holds several source addresses, some inside the
//! served ranges and some outside, and connects from each to each port.
//!
//! ```text
//!  edge ── veth ── origin (192.0.2.1, 2001:db8:1::1)
//!  192.0.2.2 (admin), 198.51.100.10, 198.51.100.200, 203.0.113.10, 203.0.113.200,
//!  2001:db8:1::2, 2001:db8:cf::10, 2001:db8:bad::10
//! ```

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use cf_allowlist_backend::Family;

use super::cmd::{Outcome, cf};
use super::fixture::{FixtureServer, Reply};
use super::netns::{Listeners, Netns, connects};
use super::require_root;

/// The origin's addresses.
pub const ORIGIN_V4: &str = "192.0.2.1";
/// The origin's IPv6 address.
pub const ORIGIN_V6: &str = "2001:db8:1::1";
/// The admin's address (allowed to port 22 by the foreign rule).
pub const ADMIN: &str = "192.0.2.2";
const ORIGIN_MAC: &str = "02:00:00:00:00:01";
const EDGE_MAC: &str = "02:00:00:00:00:02";

/// Every source address on the edge.
pub const SOURCES: [&str; 7] = [
    ADMIN,
    "198.51.100.10",
    "198.51.100.200",
    "203.0.113.10",
    "203.0.113.200",
    "2001:db8:cf::10",
    "2001:db8:bad::10",
];
/// Every port the origin listens on.
pub const PORTS: [u16; 4] = [22, 80, 443, 8080];

/// The served IPv4 list at first (no final newline, as Cloudflare serves it).
pub const LIST_V4: &str = "198.51.100.0/25\n198.51.100.128/25\n203.0.113.0/25";
/// The served IPv4 list after upstream moved 203.0.113.0/25 to 203.0.113.128/25.
pub const SECOND_V4: &str = "198.51.100.0/25\n198.51.100.128/25\n203.0.113.128/25\n";
/// The edge sources inside the first list.
pub const IN_FIRST_LIST: [&str; 4] = [
    "198.51.100.10",
    "198.51.100.200",
    "203.0.113.10",
    "2001:db8:cf::10",
];
/// The edge sources inside the second list.
pub const IN_SECOND_LIST: [&str; 4] = [
    "198.51.100.10",
    "198.51.100.200",
    "203.0.113.200",
    "2001:db8:cf::10",
];

/// The served IPv6 list.
pub const LIST_V6: &str = "2001:db8:cf::/48\n";

/// The origin's own ruleset, as an admin would keep it in /etc/nftables.conf: policy drop,
/// ssh from the admin range, and an explicit drop for the web ports that our accepts must beat
/// (kept as nft text in `tests/fixtures/origin.nft`).
pub const ORIGIN_NFT_RULESET: &str = include_str!("../fixtures/origin.nft");

/// The lab; everything is torn down on drop.
pub struct Lab {
    /// Fixture server (drop first: it lives in the origin namespace).
    pub fixture: FixtureServer,
    _listeners: Listeners,
    /// The host being protected.
    pub origin: Netns,
    /// Where connections come from.
    pub edge: Netns,
    /// The state directory for cf-allowlist.
    pub state: tempfile::TempDir,
}

impl Lab {
    /// Builds the lab; the origin's firewall is left empty (see [`Lab::load_nft_ruleset`]).
    pub fn new() -> Lab {
        require_root();
        let origin = Netns::new("origin");
        let edge = Netns::new("edge");
        origin.ip(&[
            "link", "add", "vo", "type", "veth", "peer", "name", "ve", "netns", &edge.name,
        ]);
        // Fixed MACs and permanent neighbour entries: no ARP or neighbour discovery races (a
        // first SYN-ACK waiting on neighbour discovery can outlast a probe's timeout).
        origin.ip(&["link", "set", "vo", "address", ORIGIN_MAC]);
        edge.ip(&["link", "set", "ve", "address", EDGE_MAC]);
        for netns in [&origin, &edge] {
            netns.exec("sysctl", &["-qw", "net.ipv6.conf.all.accept_dad=0"]);
            netns.exec("sysctl", &["-qw", "net.ipv6.conf.default.accept_dad=0"]);
        }
        origin.add_addresses("vo", &["192.0.2.1/24", "2001:db8:1::1/64"]);
        origin.ip(&["link", "set", "vo", "up"]);
        for route in ["198.51.100.0/24", "203.0.113.0/24"] {
            origin.ip(&["route", "add", route, "dev", "vo"]);
        }
        for route in ["2001:db8:cf::/48", "2001:db8:bad::/48"] {
            origin.ip(&["-6", "route", "add", route, "dev", "vo"]);
        }
        edge.add_addresses(
            "ve",
            &[
                "192.0.2.2/24",
                "198.51.100.10/32",
                "198.51.100.200/32",
                "203.0.113.10/32",
                "203.0.113.200/32",
                "2001:db8:1::2/64",
                "2001:db8:cf::10/128",
                "2001:db8:bad::10/128",
            ],
        );
        edge.ip(&["link", "set", "ve", "up"]);
        for source in SOURCES {
            origin.ip(&[
                "neigh",
                "replace",
                source,
                "lladdr",
                EDGE_MAC,
                "dev",
                "vo",
                "nud",
                "permanent",
            ]);
        }
        for destination in [ORIGIN_V4, ORIGIN_V6] {
            edge.ip(&[
                "neigh",
                "replace",
                destination,
                "lladdr",
                ORIGIN_MAC,
                "dev",
                "ve",
                "nud",
                "permanent",
            ]);
        }
        let listeners = Listeners::start(&origin, &PORTS);
        let fixture = FixtureServer::start(Some(&origin.name));
        fixture.set("/ips-v4", Reply::ok(LIST_V4));
        fixture.set("/ips-v6", Reply::ok(LIST_V6));
        Lab {
            fixture,
            _listeners: listeners,
            origin,
            edge,
            state: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A new lab whose origin has its own ruleset ([`ORIGIN_NFT_RULESET`]) and one successful
    /// `sync --backend nftables`.
    pub fn synced_with_nftables() -> Lab {
        let lab = Lab::new();
        lab.load_nft_ruleset();
        lab.sync("nftables", &[]).code(0);
        lab
    }

    /// Loads [`ORIGIN_NFT_RULESET`] (flushing whatever was there, like a firewall reload).
    pub fn load_nft_ruleset(&self) {
        self.origin.nft_batch(ORIGIN_NFT_RULESET);
    }

    /// The sources as `--source` arguments.
    pub fn source_args(&self) -> Vec<String> {
        vec![
            "--source".to_owned(),
            self.fixture.url("/ips-v4"),
            "--source".to_owned(),
            self.fixture.url("/ips-v6"),
        ]
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.state.path().join("state")
    }

    /// A `PATH` whose `nft` refuses `-f` (and runs every other command): a run given it can
    /// write the ruleset only over netlink.
    pub fn path_refusing_nft_f(&self) -> String {
        let bin = self.state_dir().with_file_name("no-nft-write");
        std::fs::create_dir_all(&bin).unwrap();
        let wrapper = bin.join("nft");
        std::fs::write(
            &wrapper,
            "#!/bin/sh\nfor arg in \"$@\"; do [ \"$arg\" = -f ] && { echo 'nft -f refused by the test' >&2; exit 1; }; done\nexec /usr/sbin/nft \"$@\"\n",
        )
        .unwrap();
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display())
    }

    /// Runs `cf-allowlist ARGS… --state-dir STATE` inside the origin.
    pub fn cf(&self, args: &[&str]) -> Outcome {
        cf(args)
            .state(&self.state_dir())
            .in_netns(&self.origin.name)
            .run()
    }

    /// `cf-allowlist sync --backend KIND --source … ARGS…` inside the origin.
    pub fn sync(&self, backend: &str, extra: &[&str]) -> Outcome {
        self.sync_with(&["sync", "--backend", backend], extra)
    }

    /// Writes `text` as the config file in the state folder; returns its path.
    pub fn write_config(&self, text: &str) -> String {
        let path = self.state.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// `cf-allowlist --config CONFIG sync --source … ARGS…` inside the origin.
    pub fn sync_config(&self, config: &str, extra: &[&str]) -> Outcome {
        self.sync_with(&["--config", config, "sync"], extra)
    }

    fn sync_with(&self, command: &[&str], extra: &[&str]) -> Outcome {
        let sources = self.source_args();
        let mut args = command.to_vec();
        args.extend(sources.iter().map(String::as_str));
        args.extend_from_slice(extra);
        self.cf(&args)
    }

    /// Asserts that `sync` moved to the second list ([`SECOND_V4`]): it succeeded, printed the
    /// range it added and the one it removed, and the listed sources of the second list connect.
    #[track_caller]
    pub fn assert_moved_to_the_second_list(&self, sync: &Outcome) {
        sync.code(0)
            .stdout_has("+ 203.0.113.128/25")
            .stdout_has("- 203.0.113.0/25");
        assert_eq!(self.open(), expect_open(&IN_SECOND_LIST));
    }

    /// Asserts that a sync of `backend` from a second, fresh state directory refuses (exit 3) to
    /// adopt the rules this lab's state directory wrote.
    #[track_caller]
    pub fn assert_another_state_directory_refuses_to_adopt(&self, backend: &str) {
        let other = tempfile::tempdir().unwrap();
        let sources = self.source_args();
        let mut args = vec!["sync", "--backend", backend];
        args.extend(sources.iter().map(String::as_str));
        cf(&args)
            .state(&other.path().join("state"))
            .in_netns(&self.origin.name)
            .run()
            .code(3)
            .stderr_has("belong to another cf-allowlist state directory");
    }

    /// Asserts that only the admin's ssh is open, as before any sync.
    #[track_caller]
    pub fn assert_only_admin_ssh_open(&self) {
        assert_eq!(
            self.open(),
            expect_open(&[]),
            "before any sync only the admin's ssh is open"
        );
    }

    /// Every `source port` pair, over [`SOURCES`] and [`PORTS`], that completes a TCP connect to
    /// the origin. Probes run in parallel; a dropped SYN costs one 400 ms timeout.
    pub fn open(&self) -> BTreeSet<String> {
        let mut open = BTreeSet::new();
        std::thread::scope(|scope| {
            let probes: Vec<_> = SOURCES
                .iter()
                .flat_map(|source| PORTS.iter().map(move |port| (*source, *port)))
                .map(|(source, port)| {
                    let source_address: IpAddr = source.parse().unwrap();
                    let destination: IpAddr = if source_address.is_ipv4() {
                        ORIGIN_V4.parse().unwrap()
                    } else {
                        ORIGIN_V6.parse().unwrap()
                    };
                    let edge = &self.edge;
                    (
                        source,
                        port,
                        scope.spawn(move || connects(edge, source_address, destination, port)),
                    )
                })
                .collect();
            for (source, port, probe) in probes {
                if probe.join().expect("probe thread") {
                    open.insert(format!("{source} {port}"));
                }
            }
        });
        open
    }
}

/// The expected open pairs: the admin's ssh, plus 80 and 443 for each of `allowed`.
pub fn expect_open(allowed: &[&str]) -> BTreeSet<String> {
    let mut open = BTreeSet::from([format!("{ADMIN} 22")]);
    for source in allowed {
        for port in [80, 443] {
            open.insert(format!("{source} {port}"));
        }
    }
    open
}

/// The origin's iptables rules for one family: the harness's policy-DROP rules with ssh from
/// the admin range added before the web ports' DROP.
pub fn origin_iptables_rules(family: Family) -> String {
    let admin = match family {
        Family::V4 => "192.0.2.0/24",
        Family::V6 => "2001:db8:1::/64",
    };
    cf_allowlist_iptables::harness::base_rules(
        family,
        &format!(
            "-A INPUT -s {admin} -p tcp -m tcp --dport 22 -m comment --comment \"admin ssh\" -j ACCEPT\n"
        ),
    )
}

impl Lab {
    /// Loads [`origin_iptables_rules`] into `variant` (`nft` or `legacy`), replacing the filter
    /// tables as a reload of the saved rules would.
    pub fn load_iptables_rules(&self, variant: &str) {
        for (tool, family) in [("iptables", Family::V4), ("ip6tables", Family::V6)] {
            self.origin.exec_with_input(
                &format!("{tool}-{variant}-restore"),
                &[],
                &origin_iptables_rules(family),
            );
        }
    }

    /// Both families' `iptables-save -t filter` in `variant`, plus `ipset save`, without what
    /// changes on its own (timestamps, counters, ipset's initval, member order).
    pub fn iptables_state(&self, variant: &str) -> String {
        let mut text = String::new();
        for tool in ["iptables", "ip6tables"] {
            text.push_str(
                &self
                    .origin
                    .exec(&format!("{tool}-{variant}-save"), &["-t", "filter"]),
            );
        }
        text.push_str(&self.origin.exec("ipset", &["save"]));
        cf_allowlist_iptables::harness::normalise(&text)
    }
}

/// Runs `test` on a fresh lab inside ufw's sandbox, then asserts the host's own ufw files are
/// untouched. Root only. The sandbox changes the namespaces of the thread that enters it, so
/// the test runs on a thread of its own; its panic is the test's.
pub fn with_ufw_lab(test: impl FnOnce(&Lab) + Send + 'static) {
    require_root();
    std::thread::spawn(|| {
        let sandbox = cf_allowlist_ufw::harness::Sandbox::enter();
        let lab = Lab::new();
        test(&lab);
        drop(lab);
        sandbox.assert_host_untouched();
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

/// Runs `test` on a fresh lab inside firewalld's sandbox (its own mount namespace, D-Bus
/// system bus and firewalld, see `cf_allowlist_firewalld::harness`), with firewalld running in
/// the origin. Root only. The sandbox ends firewalld and dbus-daemon by their PIDs and checks
/// that the host's `/etc/firewalld` is untouched, also when the test fails.
pub fn with_firewalld_lab(
    test: impl FnOnce(&Lab, &mut cf_allowlist_firewalld::harness::Sandbox) + Send + 'static,
) {
    require_root();
    std::thread::spawn(|| {
        let mut sandbox = cf_allowlist_firewalld::harness::Sandbox::enter_stopped();
        let lab = Lab::new();
        sandbox.start_firewalld(Some(&lab.origin.name));
        test(&lab, &mut sandbox);
        // firewalld lives in the origin: end it before the lab deletes the namespace.
        sandbox.stop_firewalld();
        drop(lab);
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}
