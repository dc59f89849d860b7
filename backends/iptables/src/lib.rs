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
    let file = match family {
        // thread-self, not /proc/net (which is the process's): a thread may have entered a
        // namespace of its own, as the tests' threads do.
        Family::V4 => "/proc/thread-self/net/ip_tables_names",
        Family::V6 => "/proc/thread-self/net/ip6_tables_names",
    };
    std::fs::read_to_string(file).is_ok_and(|names| names.lines().any(|name| name == "filter"))
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
    warning: Option<String>,
    families: [FamilyState; 2],
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
        Basis::of((self.variant, parts))
    }
}

/// Keeps iptables and ip6tables open to a set of ranges.
#[derive(Debug, Clone)]
pub struct IptablesBackend {
    options: IptablesOptions,
    policy: Policy,
    owner: Option<String>,
}

impl IptablesBackend {
    /// A backend writing `policy` with `options`.
    pub fn new(options: IptablesOptions, policy: Policy) -> IptablesBackend {
        IptablesBackend {
            options,
            policy,
            owner: None,
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
                let in_use =
                    |lives: &Option<[Live; 2]>| lives.iter().flatten().any(|live| live.in_use);
                let (chosen, warning) = match (in_use(&nft), in_use(&legacy)) {
                    (true, true) => (
                        default,
                        Some(format!(
                            "rules exist in both iptables-nft and iptables-legacy, and the kernel \
                             evaluates both: a DROP in either wins; writing to {} (the one \
                             `iptables` runs); set `variant` to choose",
                            default.name()
                        )),
                    ),
                    (true, false) => (Concrete::Nft, None),
                    (false, true) => (Concrete::Legacy, None),
                    (false, false) => (default, None),
                };
                let lives = match (chosen, nft, legacy) {
                    (Concrete::Nft, Some(lives), _) | (Concrete::Legacy, _, Some(lives)) => lives,
                    (other, _, _) => read_variant(other)?,
                };
                (chosen, lives, warning)
            }
        };
        let sets = read_ipsets()?;
        let [v4, v6] = lives;
        Ok(Snapshot {
            variant,
            warning,
            families: [
                self.judge(variant, Family::V4, v4, sets.as_deref())?,
                self.judge(variant, Family::V6, v6, sets.as_deref())?,
            ],
        })
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
    /// each listed range through to each published port, then drop every other new
    /// connection to those ports that Docker's DNAT made.
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
        let mut rules = Vec::new();
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
            if live_keeps.len() != keeps.len()
                || keeps.iter().any(|keep| !live_keeps.contains(&keep))
            {
                repairs.push(format!(
                    "rewrite chain {} in {tool_name}: the admin's allows of the managed ports \
                     changed, and restrict lets them through ({} now)",
                    names::CHAIN,
                    keeps.len()
                ));
            } else {
                repairs.push(format!(
                    "rewrite chain {} in {tool_name} (duplicate, altered or foreign rules, or another mode)",
                    names::CHAIN
                ));
            }
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

    /// Writes one family's part of `change`, whose plan was made from `state`.
    fn apply_family(
        &self,
        variant: Concrete,
        family: Family,
        state: &FamilyState,
        change: &Change,
    ) -> Result<(), IptablesError> {
        let add: Ranges = change.add.family(family).copied().collect();
        let remove: Ranges = change.remove.family(family).copied().collect();
        if add.is_empty() && remove.is_empty() && state.repairs.is_empty() {
            return Ok(());
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
                }
            }
            for range in &remove {
                for rule in self.accept_rules(Some(*range), None) {
                    let _ = writeln!(script, "-D {} {}", names::CHAIN, rule.render());
                }
            }
        } else if !chain_matches {
            // The plan said to rewrite the chain: declaring it flushes and refills it within
            // the transaction.
            let _ = writeln!(script, ":{} - [0:0]", names::CHAIN);
            for rule in &rules {
                let _ = writeln!(script, "-A {} {}", names::CHAIN, rule.render());
            }
        }
        for line in jump_fixes(&state.live, &self.jump_spec()) {
            script.push_str(&line);
            script.push('\n');
        }
        // The Docker chain follows the list: refilled whenever the ranges change.
        let ranges_change = !add.is_empty() || !remove.is_empty();
        for line in self.docker_lines(
            family,
            &state.live,
            &wanted,
            ranges_change && self.options.docker_user,
        ) {
            script.push_str(&line);
            script.push('\n');
        }
        if script != "*filter\n" {
            script.push_str("COMMIT\n");
            restore(variant, family, &script)?;
        }
        // Leaving ipset mode: the set is no longer referenced and can go.
        if mode == Mode::Rules && state.set.is_some() {
            run_tool("ipset", &["destroy", set_name], None)?;
        }
        Ok(())
    }

    /// Removes our jumps (by spec) and chain from one family of one variant.
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
        let tool_name = variant.tool(family, "save").replace("-save", "");
        if live.chain_exists
            || !live.jumps.is_empty()
            || live.docker_chain_exists
            || !live.docker_jumps.is_empty()
        {
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
            restore(variant, family, &script)?;
        }
        Ok(())
    }
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
    fn label(&self) -> String {
        LABEL.to_owned()
    }

    fn observe(&self) -> Result<Observed, BackendError> {
        let snapshot = self
            .snapshot()
            .map_err(|error| error.at("read the rules"))?;
        let mut observed = Observed {
            warnings: snapshot.warning.iter().cloned().collect(),
            basis: snapshot.basis(),
            ..Observed::default()
        };
        for state in &snapshot.families {
            observed.ranges.extend(state.ranges.iter().copied());
            observed.repairs.extend(state.repairs.iter().cloned());
            observed.owners.extend(owners(&state.live));
        }
        if self.options.docker_user
            && snapshot
                .families
                .iter()
                .any(|state| !state.live.docker_user_exists)
        {
            observed.warnings.push(format!(
                "docker_user is on but {} has no {} chain (Docker is not running, or not with this iptables): published ports are not restricted",
                snapshot.variant.name(),
                names::DOCKER_USER
            ));
        }
        Ok(observed)
    }

    fn apply(&self, change: &Change) -> Result<(), BackendError> {
        if change.is_empty() {
            return Ok(());
        }
        let snapshot = self
            .snapshot()
            .map_err(|error| error.at("read the rules"))?;
        if snapshot.basis() != change.basis {
            return Err(BackendError::stale(
                LABEL,
                format!(
                    "our chain, jumps or sets in {} changed since they were observed",
                    snapshot.variant.name()
                ),
            ));
        }
        for (family, state) in Family::ALL.iter().zip(&snapshot.families) {
            self.apply_family(snapshot.variant, *family, state, change)
                .map_err(|error| error.at("apply the change"))?;
        }
        Ok(())
    }

    fn purge(&self) -> Result<Vec<String>, BackendError> {
        let fail = |error: IptablesError| error.at("purge");
        let variants = match self.options.variant {
            Variant::Nft => vec![Concrete::Nft],
            Variant::Legacy => vec![Concrete::Legacy],
            Variant::Auto => vec![Concrete::Nft, Concrete::Legacy],
        };
        let mut removed = Vec::new();
        for variant in variants {
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
