//! The iptables and ip6tables backend.
//!
//! Per family it owns one chain, [`names::CHAIN`] in the filter table, and one jump to it at the
//! top of `INPUT`, so that its accepts come before any broader DROP or REJECT already in
//! `INPUT`. In rules mode the chain holds one ACCEPT per range (multiport on the managed ports);
//! in ipset mode one ACCEPT matching a `hash:net` set, for lists of thousands of ranges. With
//! restrict on, a DROP for every other non-loopback source on those ports ends the chain.
//!
//! Every change to a family's chain is one `iptables-restore --noflush` (or `ip6tables-restore`)
//! transaction: declaring the chain flushes and refills it atomically, and a bad line leaves
//! it as it was. Sets are filled as a copy and swapped in with `ipset swap`, so a set is never
//! partial. State is read with `iptables-save` and `ipset save`. Nothing here runs one process
//! per rule: that took 18.5 s for 10,000 ranges and left the chain briefly partial (measured).
//!
//! Which iptables is "the" iptables is detected: the nf_tables and legacy variants keep
//! separate rule sets and the kernel evaluates both, so we write to the one that holds rules,
//! and warn when both do.

pub mod names;
mod registry;
mod save;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use cf_allowlist_backend::tool::{self, ToolError};
use cf_allowlist_backend::{
    Backend, BackendError, Basis, Change, ErrorKind, Family, Observed, Policy, Ranges,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use save::{Live, RuleShape};

const LABEL: &str = "iptables";

/// The most ports one `-m multiport --dports` match takes; more ports take more rules.
pub const MULTIPORT_MAX: usize = 15;

/// Above this many ranges in a family, `mode = "auto"` uses an ipset instead of one rule per
/// range.
pub const AUTO_IPSET_ABOVE: usize = 1000;

/// Which iptables to write to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The one that holds rules; if neither or both do, the one `iptables` runs.
    #[default]
    Auto,
    /// iptables-nft (the nf_tables kernel API).
    Nft,
    /// iptables-legacy (the x_tables kernel API).
    Legacy,
}

/// How ranges are matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Rules up to [`AUTO_IPSET_ABOVE`] ranges in a family, an ipset above.
    #[default]
    Auto,
    /// One ACCEPT rule per range.
    Rules,
    /// One `hash:net` ipset per family and one rule matching it.
    Ipset,
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Variant::Auto => "auto",
            Variant::Nft => "nft",
            Variant::Legacy => "legacy",
        })
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Rules => "rules",
            Mode::Ipset => "ipset",
        })
    }
}

/// Options of the iptables backend, beyond the shared policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IptablesOptions {
    /// Which iptables.
    #[serde(default)]
    pub variant: Variant,
    /// Rules or ipset.
    #[serde(default)]
    pub mode: Mode,
    /// Also restrict the ports Docker publishes: they are forwarded to containers, not
    /// delivered to INPUT, so the same allow and drop go into a chain jumped to from Docker's
    /// DOCKER-USER chain, matched on the connection's original (published) destination port.
    /// Needs `restrict`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub docker_user: bool,
}

impl IptablesOptions {
    /// Checks the options with the policy they are combined with.
    pub fn check(&self, restrict: bool) -> Result<(), String> {
        if self.docker_user && !restrict {
            return Err(
                "`docker_user` restricts the ports Docker publishes, so it needs `restrict = true` (Docker already lets every source reach a published port)"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// What can go wrong in this backend.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// A tool could not be run or refused its input.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// A listing we could not read.
    #[error("could not read the listing")]
    Parse(#[from] save::ParseError),
}

impl IptablesError {
    /// The backend error for a failed `step`.
    fn at(self, step: &'static str) -> BackendError {
        match self {
            IptablesError::Tool(error) => BackendError::tool(LABEL, step, "iptables", error),
            IptablesError::Parse(_) => BackendError::new(LABEL, step, ErrorKind::Rejected, self),
        }
    }
}

/// A concrete variant, after detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Concrete {
    /// iptables-nft.
    Nft,
    /// iptables-legacy.
    Legacy,
}

impl Concrete {
    /// `nf_tables` or `legacy`, as `iptables -V` says it.
    pub fn name(self) -> &'static str {
        match self {
            Concrete::Nft => "nf_tables",
            Concrete::Legacy => "legacy",
        }
    }

    /// The other variant.
    pub fn other(self) -> Concrete {
        match self {
            Concrete::Nft => Concrete::Legacy,
            Concrete::Legacy => Concrete::Nft,
        }
    }

    /// The tool for a family: `iptables-nft-save`, `ip6tables-legacy-restore`, …
    pub fn tool(self, family: Family, action: &str) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let variant = match self {
            Concrete::Nft => "nft",
            Concrete::Legacy => "legacy",
        };
        format!("{base}-{variant}-{action}")
    }
}

/// Whether the legacy (x_tables) filter table of `family` exists in this network namespace,
/// read from /proc without running `iptables-legacy-save`, which would create the tables as a
/// side effect of reading (and make every later `iptables` command warn about them).
pub fn legacy_filter_exists(family: Family) -> bool {
    legacy_table_exists(family, "filter")
}

/// Whether the legacy (x_tables) `table` of `family` exists (see [`legacy_filter_exists`]).
fn legacy_table_exists(family: Family, table: &str) -> bool {
    let file = match family {
        // thread-self, not /proc/net (which is the process's): a thread may have entered a
        // namespace of its own, as the tests' threads do.
        Family::V4 => "/proc/thread-self/net/ip_tables_names",
        Family::V6 => "/proc/thread-self/net/ip6_tables_names",
    };
    std::fs::read_to_string(file).is_ok_and(|names| names.lines().any(|name| name == table))
}

/// The TCP ports that a DNAT in the nat table of either family and either variant sends
/// elsewhere (Docker's published ports), as inclusive ranges: such a port needs no listener
/// on this host. Reads only; a legacy nat table that does not exist is not read (reading
/// would create it), and a variant whose tools are missing holds none.
pub fn published_ports() -> Result<Vec<std::ops::RangeInclusive<u16>>, BackendError> {
    let mut ports = Vec::new();
    for variant in [Concrete::Nft, Concrete::Legacy] {
        for family in Family::ALL {
            if variant == Concrete::Legacy && !legacy_table_exists(family, "nat") {
                continue;
            }
            match run_tool(&variant.tool(family, "save"), &["-t", "nat"], None) {
                Ok(text) => ports.extend(save::parse_published(&text)),
                Err(IptablesError::Tool(ToolError::NotFound { .. })) => {}
                Err(error) => return Err(error.at("read the nat table")),
            }
        }
    }
    Ok(ports)
}

/// Whether plain `iptables` runs the legacy variant (its alternatives link; no process).
pub fn default_variant_is_legacy() -> bool {
    default_variant() == Concrete::Legacy
}

/// The variant plain `iptables` runs, from where its alternatives link leads (no process).
fn default_variant() -> Concrete {
    match tool::locate("iptables").and_then(|path| {
        std::fs::canonicalize(&path).map_err(|_| ToolError::NotFound {
            name: "iptables".to_owned(),
        })
    }) {
        Ok(target) if target.to_string_lossy().contains("legacy") => Concrete::Legacy,
        _ => Concrete::Nft,
    }
}

/// One family's part of the firewall, read and judged.
#[derive(Debug, Clone, Default)]
struct FamilyState {
    live: Live,
    /// Members of our set, if the set exists.
    set: Option<Vec<IpNet>>,
    /// Whether a copy left by an interrupted swap exists.
    leftover_copy: bool,
    ranges: Ranges,
    uses_set: bool,
    repairs: Vec<String>,
}

/// Everything of ours, read once: the variant written to and both families.
#[derive(Debug, Clone)]
struct Snapshot {
    variant: Concrete,
    warnings: Vec<String>,
    families: [FamilyState; 2],
    /// Our parts in the other variant (left there when `variant` changed, or when `auto`
    /// picked another one), per family: removed by the next apply.
    orphans: Vec<(Family, Live)>,
}

impl Snapshot {
    /// The fingerprint of our parts: chains, jumps (by spec, not position) and sets.
    fn basis(&self) -> Basis {
        let parts: Vec<_> = self
            .families
            .iter()
            .map(|state| {
                let jumps: Vec<&String> = state.live.jumps.iter().map(|(_, spec)| spec).collect();
                (
                    (state.live.chain_exists, &state.live.rules, jumps),
                    (&state.live.docker_rules, &state.live.docker_jumps),
                    &state.set,
                    state.leftover_copy,
                )
            })
            .collect();
        let orphans: Vec<_> = self
            .orphans
            .iter()
            .map(|(family, live)| (*family, removal(live, "").0))
            .collect();
        Basis::of((self.variant, parts, orphans))
    }
}

/// Whether a family's listing holds any part of ours.
fn holds_ours(live: &Live) -> bool {
    live.chain_exists
        || !live.jumps.is_empty()
        || live.docker_chain_exists
        || !live.docker_jumps.is_empty()
}

/// Reads both families of `variant`, leaving out a legacy family whose filter table does not
/// exist (reading would create it) and a variant whose tools are missing.
fn read_existing(variant: Concrete) -> Result<Vec<(Family, Live)>, IptablesError> {
    let mut lives = Vec::new();
    for family in Family::ALL {
        if variant == Concrete::Legacy && !legacy_filter_exists(family) {
            continue;
        }
        match read_save(variant, family) {
            Ok(live) => lives.push((family, live)),
            Err(IptablesError::Tool(ToolError::NotFound { .. })) => return Ok(Vec::new()),
            Err(error) => return Err(error),
        }
    }
    Ok(lives)
}

/// Keeps iptables and ip6tables open to a set of ranges.
#[derive(Debug, Clone)]
pub struct IptablesBackend {
    options: IptablesOptions,
    policy: Policy,
    owner: Option<String>,
    /// The nf_tables transactions its applies committed; `None` once one wrote elsewhere.
    committed: std::sync::Arc<std::sync::Mutex<Option<u32>>>,
}

/// A reading of our parts that holds as long as the nf_tables ruleset generation of its
/// network namespace has not moved: iptables-nft lives in the nf_tables kernel tables, whose
/// generation moves by one per committed transaction. It was either read consistently (the
/// generation was the same before and after the saves) or predicted by an apply that moved
/// the generation by exactly its own restores (nobody else wrote, so the firewall is what was
/// read plus what was written). Only for the nf_tables variant without sets and without legacy
/// tables: those have no generation. Kept per thread (a sync observes, applies and reads back
/// on one thread; a thread's namespace is part of the key).
#[derive(Debug, Clone)]
struct Reading {
    /// The network namespace (generations are per namespace).
    netns: String,
    /// The generation it holds at.
    generation: u32,
    /// The options, policy and owner it was judged with.
    config: Basis,
    /// What it found.
    snapshot: Snapshot,
}

thread_local! {
    /// This thread's last [`Reading`].
    static LAST_READING: std::cell::RefCell<Option<Reading>> = const { std::cell::RefCell::new(None) };
}

/// Keeps `reading` as this thread's last one, or forgets it with `None`.
fn remember(reading: Option<Reading>) {
    LAST_READING.with(|last| *last.borrow_mut() = reading);
}

/// The nf_tables ruleset generation of this thread's network namespace and the namespace's
/// identity, or `None` when they cannot be read (then everything is read back as before).
fn nf_tables_generation() -> Option<(String, u32)> {
    let netns = std::fs::read_link("/proc/thread-self/ns/net").ok()?;
    let generation = cf_allowlist_netfilter::netlink::generation().ok()?;
    Some((netns.display().to_string(), generation))
}

/// What one family's apply wrote.
#[derive(Debug, Clone, Default)]
struct Written {
    /// The family's listing as the write leaves it, predicted (what a read would show if
    /// nobody else wrote).
    after: Live,
    /// iptables-restore transactions run.
    restores: u32,
    /// Whether an ipset was written or is matched on: no generation covers a set, whose
    /// members change without a transaction of nf_tables.
    ipset: bool,
    /// Whether the family left ipset mode, so that its set, no longer referenced, can go.
    unused_set: bool,
}

impl IptablesBackend {
    /// A backend writing `policy` with `options`.
    pub fn new(options: IptablesOptions, policy: Policy) -> IptablesBackend {
        IptablesBackend {
            options,
            policy,
            owner: None,
            committed: std::sync::Arc::new(std::sync::Mutex::new(Some(0))),
        }
    }

    /// The same, marking what it writes as owned by `owner` (a state directory's id).
    pub fn owned_by(mut self, owner: Option<String>) -> IptablesBackend {
        self.owner = owner;
        self
    }

    fn comment(&self, base: &str) -> String {
        cf_allowlist_backend::owned_comment(base, self.owner.as_deref())
    }

    fn jump_spec(&self) -> String {
        names::jump_spec(&self.comment(names::COMMENT))
    }

    /// Reads both families of the variant to write to (resolving `variant = "auto"`) and our
    /// sets: one save per family and variant consulted, one `ipset save`.
    fn snapshot(&self) -> Result<Snapshot, IptablesError> {
        let read_variant = |variant: Concrete| -> Result<[Live; 2], IptablesError> {
            Ok([
                read_save(variant, Family::V4)?,
                read_save(variant, Family::V6)?,
            ])
        };
        // The other variant's listing, where it was read already (`auto`).
        let mut other_lives = None;
        let (variant, lives, warning) = match self.options.variant {
            Variant::Nft => (Concrete::Nft, read_variant(Concrete::Nft)?, None),
            Variant::Legacy => (Concrete::Legacy, read_variant(Concrete::Legacy)?, None),
            Variant::Auto => {
                let default = default_variant();
                let nft = match read_variant(Concrete::Nft) {
                    Ok(lives) => Some(lives),
                    Err(IptablesError::Tool(ToolError::NotFound { .. })) => None,
                    Err(error) => return Err(error),
                };
                let legacy = if Family::ALL
                    .iter()
                    .any(|family| legacy_filter_exists(*family))
                {
                    Some(read_variant(Concrete::Legacy)?)
                } else {
                    None
                };
                // Rules of others decide: a variant holding only our parts (left by an earlier
                // choice) is not where the host's rules are.
                let in_use =
                    |lives: &Option<[Live; 2]>| lives.iter().flatten().any(|live| live.foreign);
                // Where both hold rules, our chain stays where it is: a rule somebody adds to
                // the other variant is no reason to move.
                let ours = |lives: &Option<[Live; 2]>| {
                    lives.iter().flatten().any(|live| live.chain_exists)
                };
                let (chosen, warning) = match (in_use(&nft), in_use(&legacy)) {
                    (true, true) => {
                        let (chosen, why) = match (ours(&nft), ours(&legacy)) {
                            (true, false) => (Concrete::Nft, "where our chain is"),
                            (false, true) => (Concrete::Legacy, "where our chain is"),
                            _ => (default, "the one `iptables` runs"),
                        };
                        (
                            chosen,
                            Some(format!(
                                "rules exist in both iptables-nft and iptables-legacy, and the \
                                 kernel evaluates both: a DROP in either wins; writing to {} ({why}); \
                                 set `variant` to choose",
                                chosen.name()
                            )),
                        )
                    }
                    (true, false) => (Concrete::Nft, None),
                    (false, true) => (Concrete::Legacy, None),
                    (false, false) => (default, None),
                };
                let both = |lives: Option<[Live; 2]>| -> Vec<(Family, Live)> {
                    lives
                        .map(|lives| Family::ALL.into_iter().zip(lives).collect())
                        .unwrap_or_default()
                };
                let lives = match (chosen, nft, legacy) {
                    (Concrete::Nft, Some(lives), legacy) => {
                        other_lives = Some(both(legacy));
                        lives
                    }
                    (Concrete::Legacy, nft, Some(lives)) => {
                        other_lives = Some(both(nft));
                        lives
                    }
                    (other, _, _) => read_variant(other)?,
                };
                (chosen, lives, warning)
            }
        };
        let other = variant.other();
        let other_lives = match other_lives {
            Some(lives) => lives,
            None => read_existing(other)?,
        };
        let mut warnings: Vec<String> = warning.into_iter().collect();
        let mut orphans = Vec::new();
        for (family, live) in other_lives.into_iter().filter(|(_, live)| holds_ours(live)) {
            let strangers: Vec<String> = owners(&live)
                .into_iter()
                .filter(|owner| Some(owner.as_str()) != self.owner.as_deref())
                .collect();
            let tool_name = other.tool(family, "save").replace("-save", "");
            if !strangers.is_empty() {
                warnings.push(format!(
                    "{tool_name} holds a {} chain of another cf-allowlist state directory (owner {}): left alone",
                    names::CHAIN,
                    strangers.join(", ")
                ));
            } else if live.foreign {
                // The kernel evaluates both variants and a DROP in either wins: where the
                // other one still holds rules of its own, our accepts there may be what lets
                // the list through, so they stay.
                warnings.push(format!(
                    "{tool_name} still holds rules besides our {} chain, and the kernel evaluates both variants: our chain there stays but no longer follows the list; move those rules to {} (then a sync removes it) or set `variant`",
                    names::CHAIN,
                    variant.name()
                ));
            } else {
                orphans.push((family, live));
            }
        }
        // The sets matter only where a set is or may be used: in rules mode, and in auto mode
        // while no rule of ours matches one, a list is never written to a set (`ipset save`
        // would be one more process per run for nothing).
        let sets_in_use = lives
            .iter()
            .flat_map(|live| &live.rules)
            .any(|rule| rule.match_set.is_some());
        let sets = if self.options.mode == Mode::Ipset || sets_in_use {
            read_ipsets()?
        } else {
            None
        };
        let [v4, v6] = lives;
        Ok(Snapshot {
            variant,
            warnings,
            orphans,
            families: [
                self.judge(variant, Family::V4, v4, sets.as_deref())?,
                self.judge(variant, Family::V6, v6, sets.as_deref())?,
            ],
        })
    }

    /// The options, policy and owner, as a key for [`Reading`].
    fn config(&self) -> Basis {
        Basis::of((&self.options, &self.policy, &self.owner))
    }

    /// Our parts: this thread's last reading when the generation vouches for it, else read
    /// (and remembered when vouched for). Also returns the namespace and generation the
    /// snapshot holds at, when something vouches for it.
    fn read(&self) -> Result<(Snapshot, Option<(String, u32)>), IptablesError> {
        let vouchable = self.options.variant != Variant::Legacy
            && self.options.mode != Mode::Ipset
            && !Family::ALL
                .iter()
                .any(|family| legacy_filter_exists(*family));
        let before = nf_tables_generation().filter(|_| vouchable);
        if let Some((netns, generation)) = &before {
            let last = LAST_READING.with(|last| {
                last.borrow()
                    .as_ref()
                    .filter(|reading| {
                        reading.netns == *netns
                            && reading.generation == *generation
                            && reading.config == self.config()
                    })
                    .map(|reading| reading.snapshot.clone())
            });
            if let Some(snapshot) = last {
                return Ok((snapshot, before));
            }
        }
        let snapshot = self.snapshot()?;
        let uses_sets = snapshot
            .families
            .iter()
            .any(|state| state.uses_set || state.set.is_some());
        let consistent = before.is_some() && nf_tables_generation() == before;
        let vouched = before.filter(|_| {
            consistent
                && snapshot.variant == Concrete::Nft
                && !uses_sets
                && snapshot.orphans.is_empty()
        });
        remember(vouched.clone().map(|(netns, generation)| Reading {
            netns,
            generation,
            config: self.config(),
            snapshot: snapshot.clone(),
        }));
        Ok((snapshot, vouched))
    }

    /// The managed ports in groups one multiport match takes.
    fn port_groups(&self) -> impl Iterator<Item = &[u16]> {
        self.policy.ports.chunks(MULTIPORT_MAX)
    }

    /// The accept rules for one range or set: one per group of ports.
    fn accept_rules(&self, source: Option<IpNet>, set: Option<&str>) -> Vec<RuleShape> {
        self.port_groups()
            .map(|ports| RuleShape {
                source,
                match_set: set.map(str::to_owned),
                ports: ports.to_vec(),
                not_loopback: false,
                comment: Some(self.comment(names::COMMENT)),
                target: "ACCEPT".to_owned(),
                unrecognised: false,
            })
            .collect()
    }

    fn restrict_rules(&self) -> Vec<RuleShape> {
        self.port_groups()
            .map(|ports| RuleShape {
                source: None,
                match_set: None,
                ports: ports.to_vec(),
                not_loopback: true,
                comment: Some(self.comment(names::RESTRICT_COMMENT)),
                target: "DROP".to_owned(),
                unrecognised: false,
            })
            .collect()
    }

    /// With restrict on, a RETURN for each of the admin's INPUT rules after our jump that
    /// accepts a managed port from chosen sources (issue 17): such a packet leaves our chain
    /// before restrict's drop and INPUT judges it as it would without restrict, so the admin's
    /// allow keeps working whatever its place in INPUT (see `cf_allowlist_backend::restrict`).
    fn keep_rules(&self, live: &Live) -> Vec<RuleShape> {
        if !self.policy.restrict {
            return Vec::new();
        }
        let jump_at = live.jumps.first().map_or(0, |(position, _)| *position);
        let mut keeps: Vec<RuleShape> = live
            .input_rules
            .iter()
            .filter(|(position, _)| *position > jump_at)
            .filter_map(|(_, arguments)| save::accepted_from(arguments))
            .filter_map(|(source, ports)| {
                let ports: Vec<u16> = self
                    .policy
                    .ports
                    .iter()
                    .copied()
                    .filter(|port| ports.as_ref().is_none_or(|ports| ports.contains(port)))
                    .collect();
                (!ports.is_empty()).then_some((source, ports))
            })
            .flat_map(|(source, ports)| {
                ports
                    .chunks(MULTIPORT_MAX)
                    .map(|ports| RuleShape {
                        source: Some(source),
                        match_set: None,
                        ports: ports.to_vec(),
                        not_loopback: false,
                        comment: Some(self.comment(names::KEEP_COMMENT)),
                        target: "RETURN".to_owned(),
                        unrecognised: false,
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        keeps.dedup();
        keeps
    }

    /// The chain's rules for `ranges` in `mode` (rules or ipset), in order; `keeps` from
    /// [`IptablesBackend::keep_rules`] go just before restrict's drop.
    fn wanted_rules(
        &self,
        family: Family,
        mode: Mode,
        ranges: &Ranges,
        keeps: &[RuleShape],
    ) -> Vec<RuleShape> {
        let mut rules: Vec<RuleShape> = match mode {
            Mode::Ipset => self.accept_rules(None, Some(names::set_name(family))),
            _ => ranges
                .family(family)
                .flat_map(|range| self.accept_rules(Some(*range), None))
                .collect(),
        };
        if self.policy.restrict {
            rules.extend(keeps.iter().cloned());
            rules.extend(self.restrict_rules());
        }
        rules
    }

    /// Our Docker chain's rules for `ranges`, as argument lists in iptables-save's form: let
    /// the containers' replies through, then each listed range to each published port, then
    /// drop every other connection to those ports that Docker's DNAT made.
    ///
    /// The replies come first because they cross `FORWARD` carrying the request's conntrack
    /// status (`--ctstate DNAT`, `--ctorigdstport` the published port) and the container's
    /// source address: without the RETURN the drop takes every SYN-ACK, and the published port
    /// is closed to everyone, Cloudflare included.
    fn wanted_docker_rules(&self, family: Family, ranges: &Ranges) -> Vec<String> {
        let quote = |comment: String| {
            if comment.contains(' ') {
                format!("\"{comment}\"")
            } else {
                comment
            }
        };
        let accept = quote(self.comment(names::COMMENT));
        let drop = quote(self.comment(names::RESTRICT_COMMENT));
        let mut rules = vec![format!(
            "-m conntrack --ctdir REPLY -m comment --comment {accept} -j RETURN"
        )];
        for range in ranges.family(family) {
            for port in &self.policy.ports {
                rules.push(format!(
                    "-s {range} -p tcp -m conntrack --ctstate DNAT --ctorigdstport {port} -m comment --comment {accept} -j RETURN"
                ));
            }
        }
        for port in &self.policy.ports {
            rules.push(format!(
                "-p tcp -m conntrack --ctstate DNAT --ctorigdstport {port} -m comment --comment {drop} -j DROP"
            ));
        }
        rules
    }

    /// What is wrong with our Docker chain and its jump, for `ranges`.
    fn docker_repairs(
        &self,
        family: Family,
        live: &Live,
        ranges: &Ranges,
        tool: &str,
    ) -> Vec<String> {
        let mut repairs = Vec::new();
        if !self.options.docker_user || !live.docker_user_exists {
            if live.docker_chain_exists || !live.docker_jumps.is_empty() {
                repairs.push(format!(
                    "remove chain {} from {tool} (docker_user is off)",
                    names::DOCKER_CHAIN
                ));
            }
            return repairs;
        }
        let wanted = self.wanted_docker_rules(family, ranges);
        let sorted = |rules: &[String]| {
            let mut rules = rules.to_vec();
            rules.sort();
            rules
        };
        if !live.docker_chain_exists {
            repairs.push(format!("create chain {} in {tool}", names::DOCKER_CHAIN));
        } else if sorted(&live.docker_rules) != sorted(&wanted)
            || live.docker_rules.last() != wanted.last()
        {
            repairs.push(format!("rewrite chain {} in {tool}", names::DOCKER_CHAIN));
        }
        let spec = names::docker_jump_spec(&self.comment(names::COMMENT));
        if live.docker_jumps.len() != 1 || live.docker_jumps[0] != spec {
            repairs.push(format!(
                "fix the jump from {} in {tool}",
                names::DOCKER_USER
            ));
        }
        repairs
    }

    /// The restore lines for our Docker chain and its jump (empty when in order).
    fn docker_lines(
        &self,
        family: Family,
        live: &Live,
        ranges: &Ranges,
        force: bool,
    ) -> Vec<String> {
        let tool = "";
        if self.docker_repairs(family, live, ranges, tool).is_empty() && !force {
            return Vec::new();
        }
        let mut lines: Vec<String> = live
            .docker_jumps
            .iter()
            .map(|spec| format!("-D {} {spec}", names::DOCKER_USER))
            .collect();
        if self.options.docker_user && live.docker_user_exists {
            lines.push(format!(":{} - [0:0]", names::DOCKER_CHAIN));
            lines.extend(
                self.wanted_docker_rules(family, ranges)
                    .into_iter()
                    .map(|rule| format!("-A {} {rule}", names::DOCKER_CHAIN)),
            );
            lines.push(format!(
                "-I {} 1 {}",
                names::DOCKER_USER,
                names::docker_jump_spec(&self.comment(names::COMMENT))
            ));
        } else if live.docker_chain_exists {
            lines.push(format!("-F {0}\n-X {0}", names::DOCKER_CHAIN));
        }
        lines
    }

    /// Judges one family's listing: the ranges it allows and what is structurally wrong.
    fn judge(
        &self,
        variant: Concrete,
        family: Family,
        live: Live,
        sets: Option<&str>,
    ) -> Result<FamilyState, IptablesError> {
        let set = match sets {
            Some(text) => save::parse_ipset(text, names::set_name(family))?,
            None => None,
        };
        let leftover_copy = sets.is_some_and(|text| {
            save::parse_ipset(
                text,
                &format!("{}{}", names::set_name(family), names::NEW_SUFFIX),
            )
            .ok()
            .flatten()
            .is_some()
        });
        let tool_name = variant.tool(family, "save").replace("-save", "");
        let uses_set = live
            .rules
            .iter()
            .any(|rule| rule.match_set.as_deref() == Some(names::set_name(family)));
        let mut ranges: Ranges = live
            .rules
            .iter()
            .filter(|rule| rule.target == "ACCEPT" && rule.match_set.is_none())
            .filter_map(|rule| rule.source)
            .filter(|net| Family::of(net) == family)
            .collect();
        if uses_set {
            ranges.extend(
                set.iter()
                    .flatten()
                    .copied()
                    .filter(|net| Family::of(net) == family),
            );
        }

        let mut repairs = Vec::new();
        if !live.chain_exists {
            repairs.push(format!("create chain {} in {tool_name}", names::CHAIN));
        }
        let exact_jumps = live
            .jumps
            .iter()
            .filter(|(_, spec)| *spec == self.jump_spec())
            .count();
        if exact_jumps == 0 {
            repairs.push(format!("insert the jump from INPUT in {tool_name}"));
        }
        let extra_jumps = live.jumps.len() - exact_jumps.min(1);
        if extra_jumps > 0 {
            repairs.push(format!(
                "remove {extra_jumps} extra jump(s) from INPUT in {tool_name}"
            ));
        }
        let keeps = self.keep_rules(&live);
        if live.chain_exists && !self.chain_is_sound(family, &live.rules, uses_set, &ranges, &keeps)
        {
            let live_keeps: Vec<&RuleShape> = live
                .rules
                .iter()
                .filter(|rule| rule.target == "RETURN")
                .collect();
            let keeps_changed = live_keeps.len() != keeps.len()
                || keeps.iter().any(|keep| !live_keeps.contains(&keep));
            let live_ports: BTreeSet<u16> = live
                .rules
                .iter()
                .filter(|rule| rule.target != "RETURN")
                .flat_map(|rule| rule.ports.iter().copied())
                .collect();
            let wanted_ports: BTreeSet<u16> = self.policy.ports.iter().copied().collect();
            let listed = |ports: &BTreeSet<u16>| {
                ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            repairs.push(if keeps_changed {
                format!(
                    "rewrite chain {} in {tool_name}: the admin's allows of the managed ports \
                     changed, and restrict lets them through ({} now)",
                    names::CHAIN,
                    keeps.len()
                )
            } else if live_ports != wanted_ports && !live_ports.is_empty() {
                format!(
                    "rewrite chain {} in {tool_name}: ports {} become {}",
                    names::CHAIN,
                    listed(&live_ports),
                    listed(&wanted_ports)
                )
            } else {
                format!(
                    "rewrite chain {} in {tool_name} (duplicate, altered or foreign rules, or another mode)",
                    names::CHAIN
                )
            });
        }
        if leftover_copy {
            repairs.push(format!(
                "destroy leftover set {}{}",
                names::set_name(family),
                names::NEW_SUFFIX
            ));
        }
        repairs.extend(self.docker_repairs(family, &live, &ranges, &tool_name));
        Ok(FamilyState {
            live,
            set,
            leftover_copy,
            ranges,
            uses_set,
            repairs,
        })
    }

    /// Whether the chain holds exactly what we would write for its ranges, in a mode the
    /// options allow.
    fn chain_is_sound(
        &self,
        family: Family,
        rules: &[RuleShape],
        uses_set: bool,
        ranges: &Ranges,
        keeps: &[RuleShape],
    ) -> bool {
        let mode = if uses_set { Mode::Ipset } else { Mode::Rules };
        if self.options.mode != Mode::Auto && self.options.mode != mode {
            return false;
        }
        rules_match(rules, &self.wanted_rules(family, mode, ranges, keeps))
    }

    /// Writes one family's part of `change`, whose plan was made from `state`, and says what
    /// it wrote (a set no longer referenced goes once the other variant no longer references
    /// it either).
    fn apply_family(
        &self,
        variant: Concrete,
        family: Family,
        state: &FamilyState,
        change: &Change,
    ) -> Result<Written, IptablesError> {
        let mut written = Written {
            after: state.live.clone(),
            ..Written::default()
        };
        let add: Ranges = change.add.family(family).copied().collect();
        let remove: Ranges = change.remove.family(family).copied().collect();
        if add.is_empty() && remove.is_empty() && state.repairs.is_empty() {
            written.ipset = state.uses_set;
            return Ok(written);
        }
        let wanted: Ranges = change.target.family(family).copied().collect();
        let mode = match self.options.mode {
            Mode::Auto if wanted.len() > AUTO_IPSET_ABOVE => Mode::Ipset,
            Mode::Auto => Mode::Rules,
            fixed => fixed,
        };
        let set_name = names::set_name(family);
        let copy_name = format!("{set_name}{}", names::NEW_SUFFIX);
        if mode == Mode::Ipset {
            let current: Option<BTreeSet<IpNet>> = state
                .set
                .as_ref()
                .map(|members| members.iter().copied().collect());
            let desired: BTreeSet<IpNet> = wanted.iter().copied().collect();
            if current.as_ref() != Some(&desired) || state.leftover_copy {
                // A full copy swapped in: the live set is the old one or the new one, never a
                // partial one, and adds and removes land at the same instant.
                let maxelem = (wanted.len() * 2).max(65_536);
                let ipset_family = names::ipset_family(family);
                let mut script = format!(
                    "create {set_name} hash:net family {ipset_family} maxelem {maxelem} -exist\n\
                     create {copy_name} hash:net family {ipset_family} maxelem {maxelem} -exist\n\
                     flush {copy_name}\n"
                );
                for range in &wanted {
                    let _ = writeln!(script, "add {copy_name} {range}");
                }
                let _ = writeln!(script, "swap {copy_name} {set_name}\ndestroy {copy_name}");
                run_tool("ipset", &["restore"], Some(&script))?;
                written.ipset = true;
            }
        }
        let rules = self.wanted_rules(family, mode, &wanted, &self.keep_rules(&state.live));
        let mut script = String::from("*filter\n");
        let chain_matches = state.live.chain_exists && rules_match(&state.live.rules, &rules);
        let incremental = mode == Mode::Rules && !state.uses_set && state.repairs.is_empty();
        if incremental {
            // The chain is intact: write exactly the plan's difference, each rule named by its
            // spec. New rules go first in the chain (before restrict's drop), then stale ones
            // go, all in this one transaction.
            for range in &add {
                for rule in self.accept_rules(Some(*range), None) {
                    let _ = writeln!(script, "-I {} 1 {}", names::CHAIN, rule.render());
                    written.after.rules.insert(0, rule);
                }
            }
            for range in &remove {
                for rule in self.accept_rules(Some(*range), None) {
                    let _ = writeln!(script, "-D {} {}", names::CHAIN, rule.render());
                    // `-D` by spec deletes the first rule that matches.
                    if let Some(at) = written
                        .after
                        .rules
                        .iter()
                        .position(|live| live.render() == rule.render())
                    {
                        written.after.rules.remove(at);
                    }
                }
            }
        } else if !chain_matches {
            // The plan said to rewrite the chain: declaring it flushes and refills it within
            // the transaction.
            let _ = writeln!(script, ":{} - [0:0]", names::CHAIN);
            for rule in &rules {
                let _ = writeln!(script, "-A {} {}", names::CHAIN, rule.render());
            }
            written.after.rules = rules.clone();
        }
        written.after.chain_exists = true;
        for line in jump_fixes(&state.live, &self.jump_spec()) {
            script.push_str(&line);
            script.push('\n');
        }
        // Whatever the fixes, exactly one exact jump is left (positions are not compared).
        written.after.jumps = vec![(1, self.jump_spec())];
        // The Docker chain follows the list: refilled whenever the ranges change.
        let ranges_change = !add.is_empty() || !remove.is_empty();
        let docker_lines = self.docker_lines(
            family,
            &state.live,
            &wanted,
            ranges_change && self.options.docker_user,
        );
        if !docker_lines.is_empty() {
            let docker = self.options.docker_user && state.live.docker_user_exists;
            let after = &mut written.after;
            after.docker_chain_exists = docker;
            after.docker_rules = if docker {
                self.wanted_docker_rules(family, &wanted)
            } else {
                Vec::new()
            };
            after.docker_jumps = if docker {
                vec![names::docker_jump_spec(&self.comment(names::COMMENT))]
            } else {
                Vec::new()
            };
        }
        for line in docker_lines {
            script.push_str(&line);
            script.push('\n');
        }
        if script != "*filter\n" {
            script.push_str("COMMIT\n");
            restore(variant, family, &script)?;
            written.restores += 1;
        }
        written.unused_set = mode == Mode::Rules && state.set.is_some();
        written.ipset |= written.unused_set || mode == Mode::Ipset;
        Ok(written)
    }

    /// What `snapshot` shows, as the trait reports it.
    fn observed(&self, snapshot: &Snapshot) -> Observed {
        let mut observed = Observed {
            warnings: snapshot.warnings.clone(),
            basis: snapshot.basis(),
            ..Observed::default()
        };
        let other = snapshot.variant.other();
        for (family, _) in &snapshot.orphans {
            observed.repairs.push(format!(
                "remove our parts from {} (left by another variant)",
                other.tool(*family, "save").replace("-save", "")
            ));
        }
        for state in &snapshot.families {
            observed.ranges.extend(state.ranges.iter().copied());
            observed.repairs.extend(state.repairs.iter().cloned());
            observed.owners.extend(owners(&state.live));
        }
        // Docker without IPv6 makes DOCKER-USER in iptables only: the warning is for a
        // variant where neither family has it.
        if self.options.docker_user
            && snapshot
                .families
                .iter()
                .all(|state| !state.live.docker_user_exists)
        {
            observed.warnings.push(format!(
                "docker_user is on but {} has no {} chain (Docker is not running, or not with this iptables): published ports are not restricted",
                snapshot.variant.name(),
                names::DOCKER_USER
            ));
        }
        observed
    }

    /// Removes our jumps (by spec) and chains from one family of one variant.
    fn purge_family(
        &self,
        variant: Concrete,
        family: Family,
        removed: &mut Vec<String>,
    ) -> Result<(), IptablesError> {
        if variant == Concrete::Legacy && !legacy_filter_exists(family) {
            // No legacy filter table, so nothing of ours; reading would create one.
            return Ok(());
        }
        let live = match read_save(variant, family) {
            Ok(live) => live,
            // A variant whose tools are missing holds nothing of ours.
            Err(IptablesError::Tool(ToolError::NotFound { .. })) => return Ok(()),
            Err(error) => return Err(error),
        };
        remove_ours(variant, family, &live, removed)
    }
}

/// The restore script that removes our parts from a family's listing (jumps by spec, then the
/// chains), and the parts it removes; an empty script when there are none.
fn removal(live: &Live, tool_name: &str) -> (String, Vec<String>) {
    let mut removed = Vec::new();
    if !holds_ours(live) {
        return (String::new(), removed);
    }
    let mut script = String::from("*filter\n");
    for spec in &live.docker_jumps {
        let _ = writeln!(script, "-D {} {spec}", names::DOCKER_USER);
        removed.push(format!(
            "jump to {} from {} in {tool_name}",
            names::DOCKER_CHAIN,
            names::DOCKER_USER
        ));
    }
    if live.docker_chain_exists {
        let _ = writeln!(script, "-F {0}\n-X {0}", names::DOCKER_CHAIN);
        removed.push(format!("chain {} in {tool_name}", names::DOCKER_CHAIN));
    }
    for (_, spec) in &live.jumps {
        let _ = writeln!(script, "-D {} {spec}", names::INPUT);
        removed.push(format!(
            "jump to {} from INPUT in {tool_name}",
            names::CHAIN
        ));
    }
    if live.chain_exists {
        let _ = writeln!(script, "-F {0}\n-X {0}", names::CHAIN);
        removed.push(format!(
            "chain {} ({} rules) in {tool_name}",
            names::CHAIN,
            live.rules.len()
        ));
    }
    script.push_str("COMMIT\n");
    (script, removed)
}

/// Removes our parts from one family of one variant, as read in `live`, in one transaction.
fn remove_ours(
    variant: Concrete,
    family: Family,
    live: &Live,
    removed: &mut Vec<String>,
) -> Result<(), IptablesError> {
    let tool_name = variant.tool(family, "save").replace("-save", "");
    let (script, parts) = removal(live, &tool_name);
    if !script.is_empty() {
        restore(variant, family, &script)?;
        removed.extend(parts);
    }
    Ok(())
}

/// Whether the live rules are the wanted ones: the same multiset (range rules may be in any
/// order), nothing unrecognised, and the last rule (restrict's drop, when wanted) in place.
fn rules_match(have: &[RuleShape], want: &[RuleShape]) -> bool {
    let sorted = |rules: &[RuleShape]| {
        let mut rendered: Vec<String> = rules.iter().map(RuleShape::render).collect();
        rendered.sort();
        rendered
    };
    !have.iter().any(|rule| rule.unrecognised)
        && sorted(have) == sorted(want)
        && (want.last().is_none_or(|last| last.target != "DROP") || have.last() == want.last())
}

/// The restore lines that leave exactly one exact jump in INPUT. Every jump is addressed by
/// its spec, never by a position read earlier (a rule another tool inserted since we read INPUT
/// must not be hit). An altered jump is deleted; a single exact jump stays where it is; when
/// there are several exact copies, `-D` by spec could only remove the first, so all go and one
/// is inserted at the top, in the same transaction.
fn jump_fixes(live: &Live, wanted: &str) -> Vec<String> {
    let exact = live.jumps.iter().filter(|(_, spec)| spec == wanted).count();
    let mut lines: Vec<String> = live
        .jumps
        .iter()
        .filter(|(_, spec)| exact > 1 || spec != wanted)
        .map(|(_, spec)| format!("-D {} {spec}", names::INPUT))
        .collect();
    if exact != 1 {
        lines.push(format!("-I {} 1 {wanted}", names::INPUT));
    }
    lines
}

/// The owners named in the comments of our chain's rules and of the jumps to it.
fn owners(live: &Live) -> std::collections::BTreeSet<String> {
    let jump_comments = live.jumps.iter().filter_map(|(_, spec)| {
        let words = save::words(spec).ok()?;
        let at = words.iter().position(|word| word == "--comment")?;
        words.get(at + 1).cloned()
    });
    live.rules
        .iter()
        .filter_map(|rule| rule.comment.clone())
        .chain(jump_comments)
        .filter_map(|comment| cf_allowlist_backend::owner_of(&comment).map(str::to_owned))
        .collect()
}

fn read_save(variant: Concrete, family: Family) -> Result<Live, IptablesError> {
    let output = run_tool(&variant.tool(family, "save"), &["-t", "filter"], None)?;
    Ok(save::parse_save(&output)?)
}

/// `ipset save`, or `None` when ipset is not installed.
fn read_ipsets() -> Result<Option<String>, IptablesError> {
    match run_tool("ipset", &["save"], None) {
        Ok(text) => Ok(Some(text)),
        Err(IptablesError::Tool(ToolError::NotFound { .. })) => Ok(None),
        Err(error) => Err(error),
    }
}

fn restore(variant: Concrete, family: Family, script: &str) -> Result<(), IptablesError> {
    // -w: wait (up to 30 s) for the xtables lock that fail2ban or Docker may hold.
    run_tool(
        &variant.tool(family, "restore"),
        &["-w", "30", "--noflush"],
        Some(script),
    )?;
    Ok(())
}

fn run_tool(name: &str, args: &[&str], input: Option<&str>) -> Result<String, IptablesError> {
    let path: PathBuf = tool::locate(name)?;
    let output = tool::run(&path, args, input.map(str::as_bytes))?;
    Ok(String::from_utf8_lossy(&output).into_owned())
}

impl Backend for IptablesBackend {
    fn committed(&self) -> Option<u32> {
        self.committed.lock().ok().and_then(|committed| *committed)
    }

    fn label(&self) -> String {
        LABEL.to_owned()
    }

    fn observe(&self) -> Result<Observed, BackendError> {
        let (snapshot, _) = self.read().map_err(|error| error.at("read the rules"))?;
        Ok(self.observed(&snapshot))
    }

    fn apply(&self, change: &Change) -> Result<(), BackendError> {
        if change.is_empty() {
            return Ok(());
        }
        let (snapshot, before) = self.read().map_err(|error| error.at("read the rules"))?;
        // Whatever happens next, the remembered reading no longer holds.
        remember(None);
        if snapshot.basis() != change.basis {
            return Err(BackendError::stale(
                LABEL,
                format!(
                    "our chain, jumps or sets in {} changed since they were observed",
                    snapshot.variant.name()
                ),
            ));
        }
        let fail = |error: IptablesError| error.at("apply the change");
        let mut unused_sets = Vec::new();
        let mut restores = 0;
        let mut ipset = false;
        let mut predicted = Vec::new();
        for (family, state) in Family::ALL.iter().zip(&snapshot.families) {
            let written = self
                .apply_family(snapshot.variant, *family, state, change)
                .map_err(fail)?;
            restores += written.restores;
            ipset |= written.ipset;
            if written.unused_set {
                unused_sets.push(names::set_name(*family));
            }
            predicted.push(written.after);
        }
        // The other variant's parts go once the chosen one holds the target.
        for (family, live) in &snapshot.orphans {
            remove_ours(snapshot.variant.other(), *family, live, &mut Vec::new()).map_err(fail)?;
        }
        // Leaving ipset mode: the set is no longer referenced and can go.
        for set_name in unused_sets {
            run_tool("ipset", &["destroy", set_name], None).map_err(fail)?;
        }
        if let Ok(mut committed) = self.committed.lock() {
            *committed = committed
                .filter(|_| {
                    !ipset && snapshot.variant == Concrete::Nft && snapshot.orphans.is_empty()
                })
                .map(|count| count + restores);
        }
        // Vouched for before, then exactly our restores committed and no set was written:
        // the read-back (`observe`) is answered by the prediction, without a read.
        let after = nf_tables_generation();
        match (before, after) {
            (Some((netns, first)), Some((netns_after, last)))
                if !ipset && netns == netns_after && last == first.wrapping_add(restores) =>
            {
                // Judged like a reading, so that its ranges, repairs and basis are what a
                // read-back would find.
                let [v4, v6]: [Live; 2] = predicted.try_into().expect("two families");
                let after = Snapshot {
                    variant: snapshot.variant,
                    warnings: snapshot.warnings.clone(),
                    orphans: Vec::new(),
                    families: [
                        self.judge(snapshot.variant, Family::V4, v4, None)
                            .map_err(fail)?,
                        self.judge(snapshot.variant, Family::V6, v6, None)
                            .map_err(fail)?,
                    ],
                };
                remember(Some(Reading {
                    netns,
                    generation: last,
                    config: self.config(),
                    snapshot: after,
                }));
            }
            _ => {}
        }
        Ok(())
    }

    fn purge(&self) -> Result<Vec<String>, BackendError> {
        let fail = |error: IptablesError| error.at("purge");
        // Both variants, whatever `variant` says now: parts written under an earlier one are
        // ours too.
        let mut removed = Vec::new();
        for variant in [Concrete::Nft, Concrete::Legacy] {
            for family in Family::ALL {
                self.purge_family(variant, family, &mut removed)
                    .map_err(fail)?;
            }
        }
        let sets = read_ipsets().map_err(fail)?.unwrap_or_default();
        for family in Family::ALL {
            for name in [
                names::set_name(family).to_owned(),
                format!("{}{}", names::set_name(family), names::NEW_SUFFIX),
            ] {
                if save::parse_ipset(&sets, &name)
                    .map_err(|error| fail(error.into()))?
                    .is_some()
                {
                    run_tool("ipset", &["destroy", &name], None).map_err(fail)?;
                    removed.push(format!("ipset {name}"));
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(feature = "harness")]
pub mod harness;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_ports_than_one_multiport_match_takes_are_split_into_several_rules() {
        let backend = IptablesBackend::new(
            IptablesOptions::default(),
            Policy {
                ports: (1..=20).collect(),
                restrict: true,
            },
        );
        let ranges: Ranges = ["192.0.2.0/24".parse().unwrap()].into_iter().collect();
        let rules = backend.wanted_rules(Family::V4, Mode::Rules, &ranges, &[]);
        let rendered: Vec<String> = rules.iter().map(RuleShape::render).collect();
        assert_eq!(rendered.len(), 4, "{rendered:#?}");
        assert!(rendered[0].contains("--dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 "));
        assert!(rendered[1].contains("--dports 16,17,18,19,20 "));
        assert!(rendered[2].ends_with("-j DROP") && rendered[3].ends_with("-j DROP"));
    }
}
