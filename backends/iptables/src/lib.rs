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
use cf_allowlist_backend::{Backend, BackendError, Change, Family, Observed, Policy, Ranges};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use save::{Live, RuleShape};

const LABEL: &str = "iptables";

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

/// A concrete variant, after detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// One family's part of the firewall, read and judged.
#[derive(Debug, Clone, Default)]
struct FamilyState {
    live: Live,
    /// Members of our set, if the set exists.
    set: Option<Vec<IpNet>>,
    /// Whether a copy left by an interrupted swap exists.
    leftover_copy: bool,
    ranges: Ranges,
    repairs: Vec<String>,
}

/// Keeps iptables and ip6tables open to a set of ranges.
#[derive(Debug, Clone)]
pub struct IptablesBackend {
    options: IptablesOptions,
    policy: Policy,
}

impl IptablesBackend {
    /// A backend writing `policy` with `options`.
    pub fn new(options: IptablesOptions, policy: Policy) -> IptablesBackend {
        IptablesBackend { options, policy }
    }

    /// Resolves `variant = "auto"`; returns the variant and any warning.
    pub fn variant(&self) -> Result<(Concrete, Option<String>), IptablesError> {
        match self.options.variant {
            Variant::Nft => return Ok((Concrete::Nft, None)),
            Variant::Legacy => return Ok((Concrete::Legacy, None)),
            Variant::Auto => {}
        }
        let in_use = |variant: Concrete| {
            Family::ALL.iter().any(|family| {
                read_save(variant, *family)
                    .map(|live| live.in_use)
                    .unwrap_or(false)
            })
        };
        let default = match tool::locate("iptables")
            .and_then(|path| tool::run(&path, &["-V"], None))
        {
            Ok(version) if String::from_utf8_lossy(&version).contains("legacy") => Concrete::Legacy,
            _ => Concrete::Nft,
        };
        Ok(match (in_use(Concrete::Nft), in_use(Concrete::Legacy)) {
            (true, true) => (
                default,
                Some(format!(
                    "rules exist in both iptables-nft and iptables-legacy, and the kernel evaluates \
                     both: a DROP in either wins; writing to {} (the one `iptables` runs); set \
                     `variant` to choose",
                    default.name()
                )),
            ),
            (true, false) => (Concrete::Nft, None),
            (false, true) => (Concrete::Legacy, None),
            (false, false) => (default, None),
        })
    }

    fn accept_rule(&self, source: Option<IpNet>, set: Option<&str>) -> RuleShape {
        RuleShape {
            source,
            match_set: set.map(str::to_owned),
            ports: self.policy.ports.clone(),
            not_loopback: false,
            comment: Some(names::COMMENT.to_owned()),
            target: "ACCEPT".to_owned(),
            unrecognised: false,
        }
    }

    fn restrict_rule(&self) -> RuleShape {
        RuleShape {
            source: None,
            match_set: None,
            ports: self.policy.ports.clone(),
            not_loopback: true,
            comment: Some(names::RESTRICT_COMMENT.to_owned()),
            target: "DROP".to_owned(),
            unrecognised: false,
        }
    }

    /// The chain's rules for `ranges` in `mode` (rules or ipset), in order.
    fn wanted_rules(&self, family: Family, mode: Mode, ranges: &Ranges) -> Vec<RuleShape> {
        let mut rules: Vec<RuleShape> = match mode {
            Mode::Ipset => vec![self.accept_rule(None, Some(names::set_name(family)))],
            _ => ranges
                .family(family)
                .map(|range| self.accept_rule(Some(*range), None))
                .collect(),
        };
        if self.policy.restrict {
            rules.push(self.restrict_rule());
        }
        rules
    }

    fn inspect(&self, variant: Concrete, family: Family) -> Result<FamilyState, IptablesError> {
        let live = read_save(variant, family)?;
        let sets = read_ipsets()?;
        let set = match &sets {
            Some(text) => save::parse_ipset(text, names::set_name(family))?,
            None => None,
        };
        let leftover_copy = sets.as_deref().is_some_and(|text| {
            save::parse_ipset(
                text,
                &format!("{}{}", names::set_name(family), names::NEW_SUFFIX),
            )
            .ok()
            .flatten()
            .is_some()
        });
        let tool_name = variant.tool(family, "save").replace("-save", "");
        let mut state = FamilyState {
            live,
            set,
            leftover_copy,
            ..FamilyState::default()
        };
        let uses_set = state
            .live
            .rules
            .iter()
            .any(|rule| rule.match_set.as_deref() == Some(names::set_name(family)));
        let mut ranges: Ranges = state
            .live
            .rules
            .iter()
            .filter(|rule| rule.target == "ACCEPT" && rule.match_set.is_none())
            .filter_map(|rule| rule.source)
            .filter(|net| Family::of(net) == family)
            .collect();
        if uses_set {
            ranges.extend(
                state
                    .set
                    .iter()
                    .flatten()
                    .copied()
                    .filter(|net| Family::of(net) == family),
            );
        }

        let repairs = &mut state.repairs;
        if !state.live.chain_exists {
            repairs.push(format!("create chain {} in {tool_name}", names::CHAIN));
        }
        let exact_jumps = state
            .live
            .jumps
            .iter()
            .filter(|(_, spec)| *spec == names::jump_spec())
            .count();
        if exact_jumps == 0 {
            repairs.push(format!("insert the jump from INPUT in {tool_name}"));
        }
        let extra_jumps = state.live.jumps.len() - exact_jumps.min(1);
        if extra_jumps > 0 {
            repairs.push(format!(
                "remove {extra_jumps} extra jump(s) from INPUT in {tool_name}"
            ));
        }
        if state.live.chain_exists
            && !self.chain_is_sound(family, &state.live.rules, uses_set, &ranges)
        {
            repairs.push(format!(
                "rewrite chain {} in {tool_name} (duplicate, altered or foreign rules, or another mode)",
                names::CHAIN
            ));
        }
        if state.leftover_copy {
            repairs.push(format!(
                "destroy leftover set {}{}",
                names::set_name(family),
                names::NEW_SUFFIX
            ));
        }
        state.ranges = ranges;
        Ok(state)
    }

    /// Whether the chain holds exactly what we would write for its ranges, in a mode the
    /// options allow.
    fn chain_is_sound(
        &self,
        family: Family,
        rules: &[RuleShape],
        uses_set: bool,
        ranges: &Ranges,
    ) -> bool {
        let mode = if uses_set { Mode::Ipset } else { Mode::Rules };
        if self.options.mode != Mode::Auto && self.options.mode != mode {
            return false;
        }
        rules_match(rules, &self.wanted_rules(family, mode, ranges))
    }

    fn apply_family(
        &self,
        variant: Concrete,
        family: Family,
        target: &Ranges,
    ) -> Result<(), IptablesError> {
        let state = self.inspect(variant, family)?;
        let wanted: Ranges = target.family(family).copied().collect();
        if state.ranges == wanted && state.repairs.is_empty() {
            return Ok(());
        }
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
        let rules = self.wanted_rules(family, mode, &wanted);
        let live_rules = &state.live.rules;
        let chain_matches = state.live.chain_exists && rules_match(live_rules, &rules);
        let jump_lines = jump_fixes(&state.live);
        if !chain_matches || !jump_lines.is_empty() {
            let mut script = String::from("*filter\n");
            let _ = writeln!(script, ":{} - [0:0]", names::CHAIN);
            for rule in &rules {
                let _ = writeln!(script, "-A {} {}", names::CHAIN, rule.render());
            }
            for line in jump_lines {
                script.push_str(&line);
                script.push('\n');
            }
            script.push_str("COMMIT\n");
            restore(variant, family, &script)?;
        }
        // Leaving ipset mode: the set is no longer referenced and can go.
        if mode == Mode::Rules && state.set.is_some() {
            run_tool("ipset", &["destroy", set_name], None)?;
        }
        Ok(())
    }

    fn purge_family(&self, variant: Concrete, family: Family) -> Result<(), IptablesError> {
        let live = match read_save(variant, family) {
            Ok(live) => live,
            // A variant whose tools are missing holds nothing of ours.
            Err(IptablesError::Tool(ToolError::NotFound { .. })) => return Ok(()),
            Err(error) => return Err(error),
        };
        if live.chain_exists || !live.jumps.is_empty() {
            let mut script = String::from("*filter\n");
            let mut positions: Vec<usize> =
                live.jumps.iter().map(|(position, _)| *position).collect();
            positions.sort_unstable_by(|a, b| b.cmp(a));
            for position in positions {
                let _ = writeln!(script, "-D {} {position}", names::INPUT);
            }
            if live.chain_exists {
                let _ = writeln!(script, "-F {0}\n-X {0}", names::CHAIN);
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

/// The restore lines that leave exactly one exact jump at the top of its current place:
/// delete extra and altered jumps by position (highest first), insert one if none is exact.
fn jump_fixes(live: &Live) -> Vec<String> {
    let exact_first = live
        .jumps
        .iter()
        .find(|(_, spec)| *spec == names::jump_spec())
        .map(|(position, _)| *position);
    let mut delete: Vec<usize> = live
        .jumps
        .iter()
        .map(|(position, _)| *position)
        .filter(|position| Some(*position) != exact_first)
        .collect();
    delete.sort_unstable_by(|a, b| b.cmp(a));
    let mut lines: Vec<String> = delete
        .into_iter()
        .map(|position| format!("-D {} {position}", names::INPUT))
        .collect();
    if exact_first.is_none() {
        lines.push(format!("-I {} 1 {}", names::INPUT, names::jump_spec()));
    }
    lines
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
        let fail = |error| BackendError::new(LABEL, "read the rules", error);
        let (variant, warning) = self.variant().map_err(fail)?;
        let mut observed = Observed {
            warnings: warning.into_iter().collect(),
            ..Observed::default()
        };
        for family in Family::ALL {
            let state = self.inspect(variant, family).map_err(fail)?;
            observed.ranges.extend(state.ranges.iter().copied());
            observed.repairs.extend(state.repairs);
        }
        Ok(observed)
    }

    fn apply(&self, change: &Change) -> Result<(), BackendError> {
        if change.is_empty() {
            return Ok(());
        }
        let fail = |error| BackendError::new(LABEL, "apply the change", error);
        let (variant, _) = self.variant().map_err(fail)?;
        for family in Family::ALL {
            self.apply_family(variant, family, &change.target)
                .map_err(fail)?;
        }
        Ok(())
    }

    fn purge(&self) -> Result<(), BackendError> {
        let fail = |error| BackendError::new(LABEL, "purge", error);
        let variants = match self.options.variant {
            Variant::Nft => vec![Concrete::Nft],
            Variant::Legacy => vec![Concrete::Legacy],
            Variant::Auto => vec![Concrete::Nft, Concrete::Legacy],
        };
        for variant in variants {
            for family in Family::ALL {
                self.purge_family(variant, family).map_err(fail)?;
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
                }
            }
        }
        Ok(())
    }
}

pub mod harness;
