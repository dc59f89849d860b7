//! The shadowing analysis: what this host's netfilter does to a new TCP connection from a
//! source address to a local port, on the way in.
//!
//! An accept we write only helps if nothing else drops the packet first or later. Netfilter
//! runs *every* base chain registered on a hook, in priority order, in every table and in both
//! iptables variants; an accept ends only its own base chain (an accept in a chain reached by
//! `jump` ends that base chain too), while a drop or reject anywhere is final. So the analysis
//! follows one packet through each base chain on its path and reports its [`Fate`]: accepted,
//! certainly blocked (by which table, chain, rule or policy, whose it is, and which backend
//! would work instead: [`Blocker`]), or not sure (and why).
//!
//! The packet: a TCP SYN opening a new connection (conntrack state `new`, no status bits), to
//! one of the host's own addresses (`fib daddr type local`, `--dst-type LOCAL`, packet type
//! `host`), arriving on an interface that is not loopback, without IPv6 extension headers and
//! not rewritten by NAT.
//!
//! # What it reads
//!
//! - `nft -t -j list ruleset` (terse: structure only, milliseconds however large a set is) and
//!   the elements of every address set straight from the kernel ([`netlink`]), checked by the
//!   ruleset generation; nft's full `nft -j list ruleset` only where a set or map holds
//!   something else, or the generation kept moving. Every nftables table, iptables-nft's
//!   included. Where iptables-nft
//!   wrote a match or target nft can only print as an opaque `xt` object (conntrack,
//!   multiport, set, addrtype, REJECT…), those rules, and only those, are taken from
//!   `iptables-nft-save -t TABLE` (or `ip6tables-nft-save`), which prints their options. The
//!   rest keep nft's version: iptables-nft-save silently leaves out what it cannot express (it
//!   lists nft's `ip saddr @set drop` as a bare `-j DROP`). If that tool fails, or a chain
//!   changed between the two listings, the `xt` parts read as "cannot read".
//! - The legacy tables, only those `/proc/thread-self/net/ip_tables_names` (and
//!   `ip6_tables_names`) list (`raw`, `mangle`, `filter`, `security`), with
//!   `iptables-legacy-save -t TABLE`. Running that tool for a table that does not exist would
//!   create it, so it is never run otherwise. Legacy chains run at the priorities iptables
//!   registers them at (raw -300, mangle -150, filter 0, security 50), among nft's chains.
//! - `ipset save NAME` for each ipset an iptables rule matches on, if `ipset` is installed.
//!
//! Nothing is written and no table is created (the end-to-end tests compare the legacy table
//! list and the nft ruleset before and after reading).
//!
//! # What it follows
//!
//! Base chains of families `ip`, `ip6`, `inet` (and `netdev`) on the hooks `ingress`,
//! `prerouting` and `input`, of any type and priority, in the order the packet meets them.
//! Conditions it evaluates: source address (`ip saddr`, `ip6 saddr`, `-s`; values, prefixes,
//! ranges, anonymous sets, named sets including interval sets, ipsets of type
//! `hash:net`/`hash:ip`), destination port (`tcp dport`, `th dport`, `--dport`, `--dports`;
//! values, ranges, sets), protocol (`meta l4proto`, `ip protocol`, `ip6 nexthdr`, `-p`),
//! `meta nfproto`, the input interface (only as far as "not loopback" decides: `iif lo` does
//! not match, `iifname != "lo"` does, any other name may), conntrack state (`new` matches;
//! `established`, `related`, `invalid`, `untracked` do not) and status, `fib daddr type`,
//! `-m addrtype --dst-type`, `meta pkttype`, `-m pkttype`, the reverse-path check (`fib saddr
//! . iif oif missing`, firewalld's IPv6 rpfilter: taken to pass, since routing is not looked
//! at), TCP flags (`tcp flags`, `--syn`, `--tcp-flags`), IPv6 extension-header matches (`-m rt`, never), and matches on another protocol's header (never). Statements
//! that change no verdict (`counter`, `log`, `meta mark set`, `LOG`, comments) are skipped;
//! `limit` and `quota` may or may not let a packet through. Verdicts: `accept`, `drop`,
//! `reject`, `jump`, `goto`, `return`, verdict maps (`vmap`) keyed by a field above, and the
//! base chain's policy.
//!
//! # What makes it unsure
//!
//! A condition it cannot evaluate (`meta mark`, `ip daddr`, `fib saddr`, an unknown iptables
//! module, an `xt` object it could not re-read, an ipset it cannot list) makes the rule "may
//! match". When one way through a base chain ends in a drop and another does not, that chain
//! and the fate are unsure, and [`Fate::Unsure`] says which rule and which match. When every
//! way ends in a drop, the packet is blocked anyway; the blocker named is the one on the way
//! that assumes no unreadable match holds. `queue`, NAT statements, `notrack` and unknown
//! targets are not followed: reaching one makes the chain unsure. A certain drop in any chain
//! outweighs another chain's doubt.
//!
//! # What it does not look at
//!
//! The effect of NAT beyond "unsure" (a DNAT that sends the port to a container is seen only
//! as a statement it does not follow, and only in nft or iptables-nft; the legacy `nat` table
//! is not read), `ebtables`/`arptables` and bridge-family tables, `netdev` and `inet` ingress
//! chains bound to a device (their drops are reported as unsure: the packet may arrive on
//! another one), routing itself (`rp_filter`, a missing route), the listening socket, and
//! anything outside this network namespace (cloud security groups, upstream firewalls). Sets
//! are judged as they are now: sets that fill at run time (fail2ban, crowdsec) may hold other
//! addresses later. Each range is judged by its first and last address ([`Host::check`]), not
//! by every address in it.
//!
//! The analysis is a pure function of the listings ([`Listings`] → [`Host`]), so recorded
//! listings are judged without root in the unit tests; [`read_host`] gathers them from the
//! live system, in the calling thread's network namespace.

mod eval;
mod model;
pub mod netlink;
mod nft;
mod planned;
mod xtables;

pub use nft::ParseError as NftParseError;
pub use planned::{Place, Placement};

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use cf_allowlist_backend::Family;
use cf_allowlist_backend::tool::{self, ToolError};
use ipnet::IpNet;
use serde::Serialize;

use crate::eval::ChainFate;
use crate::model::{Origin, Packet, Table, hook_rank};

/// What the host's netfilter does with a new TCP connection from one source to one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "fate", rename_all = "lowercase")]
pub enum Fate {
    /// No base chain on its path drops it.
    Accepted,
    /// A base chain certainly drops or rejects it.
    Blocked {
        /// The first certain blocker on the packet's path.
        by: Box<Blocker>,
    },
    /// The analysis cannot tell.
    Unsure {
        /// Why, in words.
        why: String,
    },
}

impl fmt::Display for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fate::Accepted => f.write_str("accepted"),
            Fate::Blocked { by } => write!(f, "{by}"),
            Fate::Unsure { why } => write!(f, "not sure: {why}"),
        }
    }
}

/// What blocks a packet, in words an admin recognises, with a hint that works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    /// The table's family: `ip`, `ip6`, `inet` or `netdev`.
    pub family: String,
    /// The table's name.
    pub table: String,
    /// Which layer holds the table: `nftables`, `iptables-nft` or `iptables-legacy`.
    pub origin: String,
    /// The chain holding the blocking rule (for a policy, the base chain).
    pub chain: String,
    /// The base chain the packet entered (differs from `chain` after a jump).
    pub base_chain: String,
    /// The base chain's hook (`input`, `prerouting`, `ingress`).
    pub hook: String,
    /// The base chain's priority.
    pub priority: i64,
    /// The blocking rule as the firewall prints it (iptables-save line, or the nft rule with
    /// its handle and comment); `None` when the policy blocks.
    pub rule: Option<String>,
    /// Whether the base chain's policy blocks.
    pub policy: bool,
    /// Which tool owns the table, when it can be told: `ufw`, `firewalld`, `docker`,
    /// `iptables-nft`, `iptables-legacy`; `None` for an nftables table of the admin's own.
    pub owner: Option<String>,
    /// What to do instead, naming a backend and its options.
    pub hint: String,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("blocked by ")?;
        if let Some(owner) = &self.owner {
            write!(f, "{owner} (")?;
        }
        write!(f, "{} {} {}", self.family, self.table, self.base_chain)?;
        if self.chain != self.base_chain {
            write!(f, " -> {}", self.chain)?;
        }
        match &self.rule {
            Some(rule) => write!(f, ", rule `{rule}`")?,
            None => f.write_str(", policy drop")?,
        }
        if self.owner.is_some() {
            f.write_str(")")?;
        }
        write!(f, ": {}", self.hint)
    }
}

/// The fate of one listed range on one port, judged by its first and last address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The range.
    pub range: IpNet,
    /// The address whose fate is reported (the first one blocked or unsure, else the first
    /// address of the range).
    pub address: IpAddr,
    /// The port.
    pub port: u16,
    /// What happens to a new connection from `address` to `port`.
    pub fate: Fate,
}

/// What a set of findings means for a sync: the input of exit code 5 and of `status`'s
/// `effective` and `blockers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// `Some(false)` when a listed range is certainly blocked on a managed port (applied, not
    /// effective); `Some(true)` when every finding is accepted; `None` when nothing is
    /// blocked but the analysis is unsure somewhere (warn only).
    pub effective: Option<bool>,
    /// Each distinct blocker once, in the order first met.
    pub blockers: Vec<Blocker>,
    /// Each distinct reason for doubt once.
    pub doubts: Vec<String>,
}

impl Summary {
    /// Summarises findings (from [`Host::check`]).
    pub fn of(findings: &[Finding]) -> Summary {
        let mut summary = Summary::empty();
        for finding in findings {
            summary.add(&finding.fate);
        }
        summary.settle();
        summary
    }

    /// A summary of no findings yet (effective), to [`Summary::add`] fates to one at a time
    /// and [`Summary::settle`] at the end.
    pub fn empty() -> Summary {
        Summary {
            effective: Some(true),
            blockers: Vec::new(),
            doubts: Vec::new(),
        }
    }

    /// Counts one fate in: only distinct blockers and doubts are kept, so a summary of
    /// 100,000 ranges holds a handful of them, not 100,000 findings.
    pub fn add(&mut self, fate: &Fate) {
        match fate {
            Fate::Accepted => {}
            Fate::Blocked { by } => {
                if !self.blockers.contains(by) {
                    self.blockers.push((**by).clone());
                }
            }
            Fate::Unsure { why } => {
                if !self.doubts.contains(why) {
                    self.doubts.push(why.clone());
                }
            }
        }
    }

    /// Counts in what `other` (a summary of later findings) found, keeping the order first
    /// met: to summarise parts of a list judged apart (on several threads) as one.
    pub fn absorb(&mut self, other: Summary) {
        for blocker in other.blockers {
            if !self.blockers.contains(&blocker) {
                self.blockers.push(blocker);
            }
        }
        for doubt in other.doubts {
            if !self.doubts.contains(&doubt) {
                self.doubts.push(doubt);
            }
        }
    }

    /// Says whether what was added is effective.
    pub fn settle(&mut self) {
        self.effective = match (self.blockers.is_empty(), self.doubts.is_empty()) {
            (false, _) => Some(false),
            (true, true) => Some(true),
            (true, false) => None,
        };
    }
}

/// What kind of failure reading the firewall was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `nft` is not installed.
    MissingTool,
    /// Not allowed to read the firewall (not root, no CAP_NET_ADMIN).
    Permission,
    /// A tool failed otherwise, or printed something unreadable.
    Failed,
}

/// Why the firewall could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Running a tool failed.
    #[error("could not read the firewall")]
    Tool(#[from] ToolError),
    /// nft's JSON could not be read.
    #[error("could not read nft's listing")]
    Parse(#[from] nft::ParseError),
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Tool(error) => match error.kind() {
                cf_allowlist_backend::ErrorKind::MissingTool => ErrorKind::MissingTool,
                cf_allowlist_backend::ErrorKind::Permission => ErrorKind::Permission,
                _ => ErrorKind::Failed,
            },
            Error::Parse(_) => ErrorKind::Failed,
        }
    }
}

/// One iptables table's listing, as `iptables-save -t TABLE` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XtablesListing {
    /// `ip` (iptables) or `ip6` (ip6tables).
    pub family: String,
    /// The table: `filter`, `raw`, `mangle`, `security`.
    pub table: String,
    /// The listing.
    pub text: String,
}

/// Everything the analysis reads, as text, so that recorded listings can be judged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listings {
    /// `nft -j list ruleset`.
    pub nft_json: String,
    /// `iptables-nft-save -t TABLE` for tables whose nft listing holds `xt` objects; these
    /// replace the nft listing of the same table.
    pub iptables_nft: Vec<XtablesListing>,
    /// `iptables-legacy-save -t TABLE` for each legacy table that exists.
    pub iptables_legacy: Vec<XtablesListing>,
    /// `ipset save NAME` for each ipset an iptables rule matches on, concatenated (`None`:
    /// not read, because no rule uses one or `ipset` is not installed).
    pub ipsets: Option<String>,
    /// Parts of the firewall that exist but could not be read (each makes every fate that is
    /// not certainly blocked unsure).
    pub unread: Vec<String>,
    /// The elements of the sets `nft_json` lists without them (a terse listing), by table
    /// family, table and set name, as inclusive address ranges read from the kernel.
    pub set_elements: BTreeMap<(String, String, String), Vec<(IpAddr, IpAddr)>>,
}

/// The host's firewall on the input path, read once, asked many times.
#[derive(Debug, Clone)]
pub struct Host {
    tables: Vec<Table>,
    unread: Vec<String>,
    outside_nf_tables: bool,
}

/// Reads this network namespace's firewall: `nft -j list ruleset`, the iptables-nft tables nft
/// cannot fully print, the legacy tables that exist, and ipsets when a rule uses one. Changes
/// nothing; never creates a legacy table.
pub fn read_host() -> Result<Host, Error> {
    let nft = tool::locate("nft")?;
    let mut listings = read_nft(&nft)?;
    for (family, table) in nft::tables_with_xt(&listings.nft_json) {
        let program = match family.as_str() {
            "ip" => "iptables-nft-save",
            "ip6" => "ip6tables-nft-save",
            _ => continue,
        };
        if !nft::XTABLES_TABLES.contains(&table.as_str()) {
            continue;
        }
        match tool::locate(program).and_then(|path| tool::run(&path, &["-t", &table], None)) {
            Ok(text) => listings.iptables_nft.push(XtablesListing {
                family,
                table,
                text: String::from_utf8_lossy(&text).into_owned(),
            }),
            Err(error) => listings.unread.push(format!(
                "iptables-nft's {family} {table} table holds matches nft cannot print, and \
                 `{program}` could not list it ({error})"
            )),
        }
    }
    for family in Family::ALL {
        let (names_file, program, shown) = match family {
            Family::V4 => ("ip_tables_names", "iptables-legacy-save", "ip"),
            Family::V6 => ("ip6_tables_names", "ip6tables-legacy-save", "ip6"),
        };
        for table in legacy_tables(names_file) {
            match tool::locate(program).and_then(|path| tool::run(&path, &["-t", &table], None)) {
                Ok(text) => listings.iptables_legacy.push(XtablesListing {
                    family: shown.to_owned(),
                    table,
                    text: String::from_utf8_lossy(&text).into_owned(),
                }),
                Err(error) => listings.unread.push(format!(
                    "iptables-legacy's {shown} {table} table exists but `{program}` could not \
                     list it ({error})"
                )),
            }
        }
    }
    // The ipsets iptables rules match on, each listed by name (`ipset save NAME`).
    let mut set_names: Vec<String> = Vec::new();
    for listing in listings
        .iptables_nft
        .iter()
        .chain(&listings.iptables_legacy)
    {
        for line in listing.text.lines() {
            let words = xtables::words(line);
            for pair in words.windows(2) {
                if pair[0] == "--match-set" && !set_names.contains(&pair[1]) {
                    set_names.push(pair[1].clone());
                }
            }
        }
    }
    // Without ipset the sets stay unread, and the rules using them "may match".
    if !set_names.is_empty()
        && let Ok(ipset) = tool::locate("ipset")
    {
        let mut text = String::new();
        for name in &set_names {
            // A set that does not exist makes its rule unreadable, nothing more.
            if let Ok(listing) = tool::run(&ipset, &["save", name], None) {
                text.push_str(&String::from_utf8_lossy(&listing));
            }
        }
        listings.ipsets = Some(text);
    }
    Host::from_listings(&listings)
}

/// nftables' part of the listings. nft's full listing costs about a second and 160 MiB at
/// 100,000 set elements (nft rebuilds every interval), and the kernel dumps an interval set in
/// O(n²) anyway; the terse listing (`nft -t -j list ruleset`: no set elements) costs
/// milliseconds (rendered from netlink dumps in-process, [`netlink::terse_listing`], when the
/// ruleset holds only what that renders exactly). So the structure comes from the terse
/// listing and the elements of address
/// sets straight from the kernel ([`netlink`]); if any set holds something else, or the kernel
/// cannot be asked, nft's full listing is read instead.
fn read_nft(nft: &std::path::Path) -> Result<Listings, Error> {
    let full = || -> Result<Listings, Error> {
        let json = tool::run(nft, &["-j", "list", "ruleset"], None)?;
        Ok(Listings {
            nft_json: String::from_utf8_lossy(&json).into_owned(),
            ..Listings::default()
        })
    };
    for _ in 0..5 {
        let before = netlink::generation();
        let known = before.as_ref().ok().and_then(|g| known_terse_listing(*g));
        let terse = match known {
            Some(known) => known.as_str().to_owned(),
            None => match netlink::terse_listing() {
                // The same listing rendered from netlink dumps, at the same generation.
                Some((generation, terse)) if before.as_ref().ok() == Some(&generation) => terse,
                _ => {
                    let terse = tool::run(nft, &["-t", "-j", "list", "ruleset"], None)?;
                    String::from_utf8_lossy(&terse).into_owned()
                }
            },
        };
        let Some(sets) = nft::address_sets(&terse)? else {
            return full();
        };
        let mut set_elements = BTreeMap::new();
        for set in sets {
            let (family, table, name) = &set.key;
            if let Some(known) = before
                .as_ref()
                .ok()
                .and_then(|generation| netlink::known_elements(*generation, family, table, name))
            {
                set_elements.insert(set.key.clone(), known.to_vec());
                continue;
            }
            match netlink::read_address_set(family, table, name, set.family, set.interval) {
                Ok(Some(ranges)) => {
                    set_elements.insert(set.key.clone(), ranges);
                }
                // Deleted since the listing: the generation check below reads again.
                Ok(None) => {}
                Err(_) => return full(),
            }
        }
        // The elements belong to the structure only if no transaction committed in between.
        match (before, netlink::generation()) {
            (Ok(before), Ok(after)) if before == after => {
                return Ok(Listings {
                    nft_json: terse,
                    set_elements,
                    ..Listings::default()
                });
            }
            (Ok(_), Ok(_)) => continue,
            _ => return full(),
        }
    }
    // A busy host: nft's own listing is one consistent snapshot.
    full()
}

/// The legacy tables on the input path that exist in this namespace, from `/proc` (reading
/// them with `iptables-legacy-save` would create them otherwise).
fn legacy_tables(names_file: &str) -> Vec<String> {
    // thread-self: a thread may have entered a network namespace of its own.
    std::fs::read_to_string(format!("/proc/thread-self/net/{names_file}"))
        .unwrap_or_default()
        .lines()
        .filter(|name| ["raw", "mangle", "filter", "security"].contains(name))
        .map(str::to_owned)
        .collect()
}

impl Host {
    /// Builds the model from recorded listings.
    pub fn from_listings(listings: &Listings) -> Result<Host, Error> {
        let elements: BTreeMap<nft::SetKey, Vec<model::Value>> = listings
            .set_elements
            .iter()
            .map(|(key, ranges)| {
                let values = ranges
                    .iter()
                    .map(|&(first, last)| range_value(first, last))
                    .collect();
                (key.clone(), values)
            })
            .collect();
        let mut tables = if listings.nft_json.trim().is_empty() {
            BTreeMap::new()
        } else {
            nft::parse(&listings.nft_json, &elements)?
        };
        let ipsets = listings.ipsets.as_deref().map(xtables::parse_ipsets);
        for listing in &listings.iptables_nft {
            let save = xtables::parse_save(
                &listing.text,
                &listing.family,
                &listing.table,
                Origin::IptablesNft,
                ipsets.as_ref(),
            );
            if let Some(table) = tables.get_mut(&(listing.family.clone(), listing.table.clone())) {
                replace_opaque_rules(table, &save);
            }
        }
        let mut tables: Vec<Table> = tables.into_values().collect();
        for listing in &listings.iptables_legacy {
            tables.push(xtables::parse_save(
                &listing.text,
                &listing.family,
                &listing.table,
                Origin::IptablesLegacy,
                ipsets.as_ref(),
            ));
        }
        Ok(Host {
            tables,
            unread: listings.unread.clone(),
            // An ipset's members are no nf_tables object: a rule matching one (read or not,
            // ours or not) rests on something no generation counts.
            outside_nf_tables: !listings.iptables_legacy.is_empty()
                || listings.ipsets.is_some()
                || listings
                    .iptables_nft
                    .iter()
                    .any(|listing| listing.text.contains("--match-set")),
        })
    }

    /// What happens to a new TCP connection from `source` to local `port`.
    pub fn fate(&self, source: IpAddr, port: u16) -> Fate {
        let family = Packet { source, port }.family();
        self.fate_through(&self.base_chains(family), source, port)
    }

    /// [`Host::fate`] through `chains`, the base chains of the source's family in the order
    /// the kernel runs them ([`Host::base_chains`], computed once for many fates).
    fn fate_through(
        &self,
        chains: &[(&Table, &model::Chain, &model::Base)],
        source: IpAddr,
        port: u16,
    ) -> Fate {
        let packet = Packet { source, port };
        let chains = chains.iter().copied();
        let mut doubts = Vec::new();
        for (table, chain, base) in chains {
            match eval::base_chain(table, chain, &packet) {
                ChainFate::Accepted => {}
                ChainFate::Dropped { .. } if base.device.is_some() => doubts.push(format!(
                    "{} {} {} drops it if it arrives on {}",
                    table.family,
                    table.name,
                    chain.name,
                    base.device.as_deref().unwrap_or("?")
                )),
                ChainFate::Dropped {
                    chain: rule_chain,
                    rule,
                    policy,
                } => {
                    return Fate::Blocked {
                        by: Box::new(blocker(table, chain, base, rule_chain, rule, policy)),
                    };
                }
                ChainFate::Unsure(why) => doubts.push(format!(
                    "{} {} {}: {why}",
                    table.family, table.name, chain.name
                )),
            }
        }
        doubts.extend(self.unread.iter().cloned());
        if doubts.is_empty() {
            Fate::Accepted
        } else {
            Fate::Unsure {
                why: doubts.join("; "),
            }
        }
    }

    /// The fate of each range on each port, judged by the range's first and last address.
    pub fn check(&self, ranges: &[IpNet], ports: &[u16]) -> Vec<Finding> {
        let chains = self.chains_by_family();
        let mut findings = Vec::with_capacity(ranges.len() * ports.len());
        for range in ranges {
            for port in ports {
                findings.push(self.finding(&chains, *range, *port));
            }
        }
        findings
    }

    /// What [`Summary::of`] says of [`Host::check`]'s findings, without holding them all:
    /// the work is linear in `ranges` (each fate is a walk through the base chains, each set
    /// lookup a binary search) and the memory is that of the distinct blockers and doubts.
    pub fn summary(&self, ranges: &[IpNet], ports: &[u16]) -> Summary {
        let chains = self.chains_by_family();
        let mut summary = Summary::empty();
        for range in ranges {
            for port in ports {
                summary.add(&self.finding(&chains, *range, *port).fate);
            }
        }
        summary.settle();
        summary
    }

    /// The base chains of each family, IPv4's first.
    fn chains_by_family(&self) -> [BaseChains<'_>; 2] {
        [self.base_chains(Family::V4), self.base_chains(Family::V6)]
    }

    /// The fate of one range on one port: the worst of its first and last address's.
    fn finding(&self, chains: &[BaseChains<'_>; 2], range: IpNet, port: u16) -> Finding {
        let chains = match range {
            IpNet::V4(_) => &chains[0],
            IpNet::V6(_) => &chains[1],
        };
        let first = self.fate_through(chains, range.network(), port);
        let worse = |fate: &Fate| match fate {
            Fate::Blocked { .. } => 2,
            Fate::Unsure { .. } => 1,
            Fate::Accepted => 0,
        };
        let (address, fate) = if range.broadcast() == range.network() || worse(&first) == 2 {
            (range.network(), first)
        } else {
            let last = self.fate_through(chains, range.broadcast(), port);
            if worse(&last) > worse(&first) {
                (range.broadcast(), last)
            } else {
                (range.network(), first)
            }
        };
        Finding {
            range,
            address,
            port,
            fate,
        }
    }

    /// Whether Docker's chains (`DOCKER`, `DOCKER-USER`) exist in an iptables filter table,
    /// either variant.
    pub fn docker_chains_present(&self) -> bool {
        // Docker writes through iptables, nft or legacy; an iptables-nft table whose rules nft
        // prints natively is indistinguishable from a plain `ip filter` table, so the chain
        // names decide.
        self.tables.iter().any(|table| {
            table.name == "filter"
                && (table.chains.contains_key("DOCKER") || table.chains.contains_key("DOCKER-USER"))
        })
    }

    /// Whether ufw's chains (`ufw-…`, `ufw6-…`) exist, in either iptables variant.
    pub fn ufw_active(&self) -> bool {
        self.tables
            .iter()
            .any(|table| table.has_chain_starting(&["ufw-", "ufw6-"]))
    }

    /// The base chains a packet of `family` meets on its way in, in order, as
    /// `family table chain (hook HOOK, priority N, policy P, LAYER)`: what the analysis looked
    /// at, for `doctor`.
    pub fn input_path(&self, family: Family) -> Vec<String> {
        self.base_chains(family)
            .into_iter()
            .map(|(table, chain, base)| {
                format!(
                    "{} {} {} (hook {}, priority {}, policy {}, {})",
                    table.family,
                    table.name,
                    chain.name,
                    base.hook,
                    base.priority,
                    if base.policy_drop { "drop" } else { "accept" },
                    layer(table.origin)
                )
            })
            .collect()
    }

    fn base_chains(&self, family: Family) -> BaseChains<'_> {
        let mut chains = Vec::new();
        for table in self.tables.iter().filter(|table| table.sees(family)) {
            for chain in table.chains.values() {
                if let Some(base) = &chain.base
                    && hook_rank(&base.hook).is_some()
                {
                    chains.push((table, chain, base));
                }
            }
        }
        // The kernel runs chains of equal priority in the order they were registered, which no
        // listing shows; they keep the order they were read in (nft's tables by family and
        // name, then legacy). That order can change which blocker is named, never the fate:
        // a drop in either is final.
        chains.sort_by_key(|(_, _, base)| (hook_rank(&base.hook), base.priority));
        chains
    }

    /// Parts of the firewall that exist but could not be read.
    pub fn unread(&self) -> &[String] {
        &self.unread
    }

    /// Whether the reading rests on anything the nf_tables generation does not count (legacy
    /// iptables tables, ipsets an iptables rule matches on): then an unchanged generation does
    /// not prove the host unchanged.
    pub fn read_outside_nf_tables(&self) -> bool {
        self.outside_nf_tables
    }
}

/// The terse listing (`nft -t -j list ruleset`) a backend read in this process, with the
/// ruleset generation it is exact at and the namespace it was read in.
struct KnownListing {
    namespace: (std::thread::ThreadId, u64),
    generation: u32,
    terse: std::sync::Arc<String>,
}

static KNOWN_LISTING: std::sync::Mutex<Option<KnownListing>> = std::sync::Mutex::new(None);

/// Records that `terse` is this namespace's `nft -t -j list ruleset` at `generation` (the
/// nftables backend's observe reads exactly that listing), so that the analysis that follows
/// at the same generation plans and predicts from the same reading instead of listing again.
pub fn know_terse_listing(generation: u32, terse: &str) {
    let Some(namespace) = netlink::namespace_id() else {
        return;
    };
    if let Ok(mut known) = KNOWN_LISTING.lock() {
        *known = Some(KnownListing {
            namespace,
            generation,
            terse: std::sync::Arc::new(terse.to_owned()),
        });
    }
}

/// What [`know_terse_listing`] recorded for this namespace at `generation`.
fn known_terse_listing(generation: u32) -> Option<std::sync::Arc<String>> {
    let namespace = netlink::namespace_id()?;
    let known = KNOWN_LISTING.lock().ok()?;
    known
        .as_ref()
        .filter(|known| known.namespace == namespace && known.generation == generation)
        .map(|known| known.terse.clone())
}

/// An inclusive address range as the value nft would print: a prefix when it is exactly one.
fn range_value(first: IpAddr, last: IpAddr) -> model::Value {
    let (start, end, bits) = match (first, last) {
        (IpAddr::V4(first), IpAddr::V4(last)) => {
            (u32::from(first).into(), u32::from(last).into(), 32)
        }
        (IpAddr::V6(first), IpAddr::V6(last)) => (u128::from(first), u128::from(last), 128),
        _ => return model::Value::AddressRange(first, last),
    };
    // The number of host bits: the range covers `end - start + 1` addresses, a power of two
    // aligned at `start` for a prefix (2^128 wraps to zero: the whole space).
    let host_bits = match end.wrapping_sub(start).wrapping_add(1) {
        0 => Some(128),
        size if size.is_power_of_two() && start & (size - 1) == 0 => Some(size.trailing_zeros()),
        _ => None,
    };
    match host_bits
        .filter(|host_bits| *host_bits <= bits)
        .and_then(|host_bits| IpNet::new(first, u8::try_from(bits - host_bits).ok()?).ok())
    {
        Some(net) => model::Value::Net(net),
        None => model::Value::AddressRange(first, last),
    }
}

/// Replaces each rule nft printed with an opaque `xt` object by the same rule as
/// iptables-nft-save prints it (same chain, same position). Only those: iptables-nft-save
/// silently leaves out what it cannot translate (a native `ip saddr @set drop` lists as
/// `-j DROP`), so a rule nft prints in full is kept as nft prints it. A chain whose rule
/// count differs between the two listings (changed in between) keeps nft's view.
fn replace_opaque_rules(table: &mut Table, save: &Table) {
    for chain in table.chains.values_mut() {
        let Some(saved) = save.chains.get(&chain.name) else {
            continue;
        };
        if saved.rules.len() != chain.rules.len() {
            continue;
        }
        for (rule, saved_rule) in chain.rules.iter_mut().zip(&saved.rules) {
            if rule.opaque {
                *rule = saved_rule.clone();
            }
        }
    }
}

fn blocker(
    table: &Table,
    base_chain: &model::Chain,
    base: &model::Base,
    chain: String,
    rule: Option<String>,
    policy: bool,
) -> Blocker {
    let owner = owner(table, &chain);
    let hint = hint(table, base_chain, base, owner.as_deref());
    Blocker {
        family: table.family.clone(),
        table: table.name.clone(),
        origin: layer(table.origin).to_owned(),
        chain,
        base_chain: base_chain.name.clone(),
        hook: base.hook.clone(),
        priority: base.priority,
        rule,
        policy,
        owner,
        hint,
    }
}

fn layer(origin: Origin) -> &'static str {
    match origin {
        Origin::Nft => "nftables",
        Origin::IptablesNft => "iptables-nft",
        Origin::IptablesLegacy => "iptables-legacy",
    }
}

fn owner(table: &Table, chain: &str) -> Option<String> {
    let owner = if table.has_chain_starting(&["ufw-", "ufw6-"]) {
        "ufw"
    } else if table.origin == Origin::Nft && table.name == "firewalld" {
        "firewalld"
    } else if chain.starts_with("DOCKER") {
        "docker"
    } else {
        match table.origin {
            Origin::IptablesNft => "iptables-nft",
            Origin::IptablesLegacy => "iptables-legacy",
            Origin::Nft => return None,
        }
    };
    Some(owner.to_owned())
}

/// What to change by hand. Which of our backends would help instead is not this crate's to
/// say: the caller simulates candidate configs on [`Host::planned`] and proposes one only if it
/// works.
fn hint(
    table: &Table,
    base_chain: &model::Chain,
    base: &model::Base,
    owner: Option<&str>,
) -> String {
    let prerouting = if base.hook == "input" {
        ""
    } else {
        " (it acts on the prerouting hook, before any input chain)"
    };
    let by = owner
        .map(|owner| format!(" with {owner}"))
        .unwrap_or_default();
    format!(
        "allow the listed ranges on these ports in {} {} {} before what drops them{by}, or remove that drop{prerouting}",
        table.family, table.name, base_chain.name
    )
}

#[cfg(test)]
mod tests;

/// The base chains a packet of one family passes, in the order the kernel runs them.
type BaseChains<'host> = Vec<(&'host Table, &'host model::Chain, &'host model::Base)>;
