//! The firewalld backend.
//!
//! firewalld owns the host's netfilter (`table inet firewalld`) and rewrites it on every reload,
//! so rules written beside it with `nft` would vanish, and its zones' final reject would win
//! over them anyway. This backend therefore writes through firewalld itself: one ipset per
//! family (`cf-allowlist-v4`, `cf-allowlist-v6`, type `hash:net`, the IPv6 one with the option
//! `family=inet6`) holding the ranges, and in the configured zone (by default the default zone)
//! one rich rule per family and managed port that accepts the ipset:
//! `rule family="ipv4" source ipset="cf-allowlist-v4" port port="443" protocol="tcp" accept`.
//! With restrict, a rich rule per family and port drops every other source:
//! `rule priority="32767" family="ipv4" source NOT ipset="cf-allowlist-v4" port port="443"
//! protocol="tcp" drop`. Its priority puts it in the zone's `_post` chain, after every accept
//! of priority 0 (ours, the zone's services and ports, the admin's own rich rules), so the
//! admin's allows keep working; a service or port the zone opens to everyone is not closed by
//! it either (observe warns).
//!
//! firewalld sends a connection to the zone its interface or source is bound to; observe
//! warns when interfaces or sources are bound to another zone than ours.
//!
//! Ownership: rich rules are ours when they are exactly one of the shapes above (for any port)
//! naming one of our ipsets; one that names our ipset in another shape is someone else's and
//! left alone (purge keeps the ipset it names, emptied). The ipsets carry the owner mark in
//! their description (`cf-allowlist owner=…`), as the other backends' comments do.
//!
//! Runtime and permanent configuration are kept equal, and both are changed by difference:
//! runtime entries one at a time over D-Bus (firewall-cmd's `--add-entries-from-file` replaces
//! the whole set, flushing it first), permanent entries with one update of the ipset. A
//! permanent ipset only appears at runtime after a reload, so the apply that creates an ipset
//! reloads firewalld once (that discards runtime-only changes made by others, which firewalld's
//! own documentation warns about); no other apply reloads. Purge reloads once too, so that the
//! runtime ipsets go.
//!
//! Every read and write goes through [`client`]: one process for an observation, one for an
//! apply, running firewalld's own Python client library.

pub mod client;
pub mod names;
mod registry;

#[cfg(feature = "harness")]
pub mod harness;

use std::collections::BTreeSet;
use std::path::PathBuf;

use cf_allowlist_backend::{
    Backend, BackendError, Basis, Change, ErrorKind, Family, Observed, Policy, Ranges,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use client::{ClientError, IpsetInfo, Snapshot, Step};

const LABEL: &str = "firewalld";

/// Options of the firewalld backend, beyond the shared policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewalldOptions {
    /// The zone our rich rules go in; by default firewalld's default zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// firewalld's `firewall-cmd`, whose Python interpreter runs our client: a name looked up
    /// in `PATH` and the sbin folders, or a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall_cmd: Option<PathBuf>,
    /// The Python interpreter that runs our client, instead of `firewall-cmd`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<PathBuf>,
}

impl FirewalldOptions {
    /// Checks the options.
    pub fn check(&self) -> Result<(), String> {
        if let Some(zone) = &self.zone
            && (zone.is_empty()
                || !zone
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)))
        {
            return Err(format!(
                "zone {zone:?} is not a firewalld zone name (letters, digits, `_` and `-`)"
            ));
        }
        Ok(())
    }

    /// The zone, as written, or `None` for the default zone.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }
}

/// What can go wrong in this backend.
#[derive(Debug, thiserror::Error)]
pub enum FirewalldError {
    /// The client could not read or write.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A step failed after others had been applied.
    #[error(
        "{done} of {total} firewalld steps were applied before `{failed}` failed; the next run \
         converges from what firewalld now holds"
    )]
    Partial {
        /// How many steps were applied.
        done: usize,
        /// How many the apply had.
        total: usize,
        /// The step that failed.
        failed: String,
        /// Why.
        #[source]
        source: ClientError,
    },
}

/// The hint for a firewalld that is not running.
pub const NOT_RUNNING_HINT: &str = "start firewalld (`systemctl start firewalld`), or choose \
     the backend of the firewall this host runs";

fn at(step: &'static str, error: FirewalldError) -> BackendError {
    let client_error = match &error {
        FirewalldError::Client(inner) | FirewalldError::Partial { source: inner, .. } => inner,
    };
    let (kind, hint, package) = match client_error {
        ClientError::NotFound { .. } | ClientError::NoLibrary(_) => {
            (ErrorKind::MissingTool, None, Some(names::PACKAGE))
        }
        ClientError::NotRunning(_) => {
            (ErrorKind::Rejected, Some(NOT_RUNNING_HINT.to_owned()), None)
        }
        ClientError::Spawn { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            (ErrorKind::Permission, None, None)
        }
        ClientError::Refused(message) if message.contains("NotAuthorized") => {
            (ErrorKind::Permission, None, None)
        }
        ClientError::Spawn { .. } => (ErrorKind::Transient, None, None),
        ClientError::Refused(_) | ClientError::Unreadable(_) => (ErrorKind::Rejected, None, None),
    };
    BackendError {
        package,
        ..BackendError::new(LABEL, step, kind, error).with_hint(hint)
    }
}

/// Drops every range covered by another of the same set (firewalld refuses overlapping
/// entries in a `hash:net` ipset with `INVALID_ENTRY`).
pub fn without_covered(ranges: &Ranges) -> Ranges {
    let mut kept: Vec<IpNet> = Vec::new();
    // In order (by address, then shorter prefix first), what a network covers follows it
    // directly, so only the last kept network can cover the next one: one pass.
    for net in ranges {
        if !kept.last().is_some_and(|cover| cover.contains(net)) {
            kept.push(*net);
        }
    }
    kept.into_iter().collect()
}

/// A rich rule as firewalld prints it.
pub(crate) fn accept_rule(family: Family, port: u16) -> String {
    format!(
        "rule family=\"{}\" source ipset=\"{}\" port port=\"{port}\" protocol=\"tcp\" accept",
        names::rich_family(family),
        names::ipset(family)
    )
}

/// restrict's drop as firewalld prints it.
fn drop_rule(family: Family, port: u16) -> String {
    format!(
        "rule priority=\"{}\" family=\"{}\" source NOT ipset=\"{}\" port port=\"{port}\" \
         protocol=\"tcp\" drop",
        names::RESTRICT_PRIORITY,
        names::rich_family(family),
        names::ipset(family)
    )
}

/// Whether a rich rule names one of our ipsets.
fn names_our_ipset(rule: &str) -> bool {
    Family::ALL
        .iter()
        .any(|family| rule.contains(&format!("ipset=\"{}\"", names::ipset(*family))))
}

/// Whether a rich rule is ours: exactly an accept or a restrict drop we write, for some
/// family and port (a rule of an earlier policy included). A rule that names our ipset in any
/// other shape (`service name="ssh"`, a log, another protocol) was written by someone else:
/// it is left alone, as the other backends leave a rule that borrows our comment.
fn is_our_rule(rule: &str) -> bool {
    let Some(port) = rule
        .split_once(" port port=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .and_then(|(port, _)| port.parse::<u16>().ok())
    else {
        return false;
    };
    Family::ALL
        .iter()
        .any(|family| rule == accept_rule(*family, port) || rule == drop_rule(*family, port))
}

/// Keeps firewalld open to a set of ranges.
#[derive(Debug, Clone)]
pub struct FirewalldBackend {
    options: FirewalldOptions,
    policy: Policy,
    owner: Option<String>,
}

impl FirewalldBackend {
    /// A backend writing `policy` with `options`.
    pub fn new(options: FirewalldOptions, policy: Policy) -> FirewalldBackend {
        FirewalldBackend {
            options,
            policy,
            owner: None,
        }
    }

    /// The same, marking what it writes as owned by `owner` (a state directory's id).
    pub fn owned_by(mut self, owner: Option<String>) -> FirewalldBackend {
        self.owner = owner;
        self
    }

    fn description(&self) -> String {
        cf_allowlist_backend::owned_comment(names::OWNER_TAG, self.owner.as_deref())
    }

    fn interpreter(&self) -> Result<PathBuf, ClientError> {
        match &self.options.python {
            Some(python) => Ok(python.clone()),
            None => client::interpreter_of(
                self.options
                    .firewall_cmd
                    .as_deref()
                    .unwrap_or(std::path::Path::new(names::DEFAULT_FIREWALL_CMD)),
            ),
        }
    }

    fn read(&self) -> Result<Snapshot, FirewalldError> {
        let ipsets = Family::ALL.map(names::ipset);
        Ok(client::observe(&self.interpreter()?, &ipsets)?)
    }

    fn zone<'a>(&'a self, snapshot: &'a Snapshot) -> &'a str {
        self.options.zone().unwrap_or(&snapshot.default_zone)
    }

    /// Our rich rules as they should be in the zone.
    fn wanted_rules(&self) -> BTreeSet<String> {
        let mut rules = BTreeSet::new();
        for family in Family::ALL {
            for port in &self.policy.ports {
                rules.insert(accept_rule(family, *port));
                if self.policy.restrict {
                    rules.insert(drop_rule(family, *port));
                }
            }
        }
        rules
    }

    /// The fingerprint of our parts: our ipsets and our rich rules, in both configurations.
    fn basis(snapshot: &Snapshot) -> Basis {
        let ours = |layer: &client::Layer| {
            let rules: Vec<(String, BTreeSet<String>)> = layer
                .rich_rules
                .iter()
                .map(|(zone, rules)| {
                    (
                        zone.clone(),
                        rules
                            .iter()
                            .filter(|rule| is_our_rule(rule))
                            .cloned()
                            .collect(),
                    )
                })
                .collect();
            let ipsets: Vec<(String, IpsetInfo)> = layer
                .ipsets
                .iter()
                .map(|(name, info)| {
                    let mut info = info.clone();
                    info.entries.sort();
                    (name.clone(), info)
                })
                .collect();
            (ipsets, rules)
        };
        Basis::of((
            &snapshot.default_zone,
            ours(&snapshot.runtime),
            ours(&snapshot.permanent),
        ))
    }

    /// The steps that bring both configurations to `target`: permanent first, then a reload
    /// where an ipset is new to the runtime, else the runtime changes (adds before removes).
    fn steps(&self, snapshot: &Snapshot, target: &Ranges) -> Vec<Step> {
        let target = without_covered(target);
        let zone = self.zone(snapshot).to_owned();
        let wanted = self.wanted_rules();
        let mut permanent = Vec::new();
        let mut runtime = Vec::new();
        let mut reload = false;
        for family in Family::ALL {
            let name = names::ipset(family).to_owned();
            let want: Vec<String> = target.family(family).map(ToString::to_string).collect();
            match snapshot.permanent.ipsets.get(&name) {
                None => {
                    permanent.push(Step::PermanentNewIpset {
                        name: name.clone(),
                        family: names::ipset_family(family).to_owned(),
                        short: names::SHORT.to_owned(),
                        description: self.description(),
                        entries: want.clone(),
                    });
                    reload = true;
                }
                Some(info) => {
                    let (add, remove) = difference(&info.entries, &want);
                    if !add.is_empty()
                        || !remove.is_empty()
                        || info.description != self.description()
                    {
                        permanent.push(Step::PermanentIpset {
                            name: name.clone(),
                            add,
                            remove,
                            description: self.description(),
                        });
                    }
                }
            }
            match snapshot.runtime.ipsets.get(&name) {
                None => reload = true,
                Some(info) => {
                    let (add, remove) = difference(&info.entries, &want);
                    if !add.is_empty() || !remove.is_empty() {
                        runtime.push(Step::Entries { name, add, remove });
                    }
                }
            }
        }
        let rule_steps = |layer: &client::Layer, runtime: bool| {
            let present: BTreeSet<&String> = layer
                .rich_rules
                .get(&zone)
                .map(|rules| rules.iter().collect())
                .unwrap_or_default();
            let mut adds = Vec::new();
            let mut removes = Vec::new();
            for rule in wanted.iter().filter(|rule| !present.contains(rule)) {
                let (zone, rule) = (zone.clone(), rule.clone());
                adds.push(if runtime {
                    Step::AddRichRule { zone, rule }
                } else {
                    Step::PermanentAddRichRule { zone, rule }
                });
            }
            for (other, rules) in &layer.rich_rules {
                for rule in rules.iter().filter(|rule| is_our_rule(rule)) {
                    if *other == zone && wanted.contains(rule) {
                        continue;
                    }
                    let (zone, rule) = (other.clone(), rule.clone());
                    removes.push(if runtime {
                        Step::RemoveRichRule { zone, rule }
                    } else {
                        Step::PermanentRemoveRichRule { zone, rule }
                    });
                }
            }
            adds.into_iter().chain(removes).collect::<Vec<_>>()
        };
        permanent.extend(rule_steps(&snapshot.permanent, false));
        if reload {
            // The reload makes runtime equal to the permanent configuration just written.
            permanent.push(Step::Reload);
            return permanent;
        }
        // Runtime: the ranges first, then the rules (adds before removes in each).
        runtime.extend(rule_steps(&snapshot.runtime, true));
        permanent.extend(runtime);
        permanent
    }

    /// Warnings for the managed ports the zone opens to every source: restrict's drop comes
    /// after those accepts (priority 0) and cannot close them.
    fn open_to_everyone(&self, snapshot: &Snapshot, zone: &str) -> Vec<String> {
        let Some(opened) = snapshot.runtime.open_ports.get(zone) else {
            return Vec::new();
        };
        let mut warnings = Vec::new();
        for (what, port) in opened {
            let Some((range, protocol)) = port.split_once('/') else {
                continue;
            };
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            let (Ok(first), Ok(last)) = (first.parse::<u16>(), last.parse::<u16>()) else {
                continue;
            };
            if protocol != "tcp" {
                continue;
            }
            for managed in self
                .policy
                .ports
                .iter()
                .filter(|p| (first..=last).contains(*p))
            {
                let removal = match what.strip_prefix("service ") {
                    Some(service) => format!("--remove-service={service}"),
                    None => format!("--remove-port={port}"),
                };
                warnings.push(format!(
                    "firewalld zone {zone} opens tcp {managed} to every source ({what} {port}): \
                     restrict's drop comes after it and cannot close it; if only the listed \
                     ranges should reach {managed}, run `firewall-cmd --permanent --zone={zone} \
                     {removal}` and the same without `--permanent`"
                ));
            }
        }
        warnings
    }

    fn judge(&self, snapshot: &Snapshot) -> Observed {
        let mut observed = Observed {
            basis: Self::basis(snapshot),
            ..Observed::default()
        };
        let zone = self.zone(snapshot);
        if !snapshot.runtime.rich_rules.contains_key(zone) {
            observed.warnings.push(format!(
                "firewalld has no zone {zone:?}: create it, or set `zone` to one of {}",
                snapshot
                    .runtime
                    .rich_rules
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for family in Family::ALL {
            let name = names::ipset(family);
            let runtime = snapshot.runtime.ipsets.get(name);
            let permanent = snapshot.permanent.ipsets.get(name);
            if let Some(info) = runtime {
                observed
                    .ranges
                    .extend(info.entries.iter().filter_map(|entry| parse_entry(entry)));
            }
            // The owner is the permanent ipset's (a runtime description changes only at the
            // next reload), or the runtime one's where only that exists.
            if let Some(owner) = permanent
                .or(runtime)
                .and_then(|info| cf_allowlist_backend::owner_of(&info.description))
            {
                observed.owners.insert(owner.to_owned());
            }
            for info in runtime.iter().chain(permanent.iter()) {
                let family_option = info.options.get("family").map_or("inet", String::as_str);
                if info.kind != "hash:net" || family_option != names::ipset_family(family) {
                    observed.warnings.push(format!(
                        "firewalld ipset {name} is of type {} (family {family_option}), not \
                         hash:net of {family}: delete it (`firewall-cmd --permanent \
                         --delete-ipset={name}` and a reload) so that it can be recreated",
                        info.kind
                    ));
                }
            }
            match (permanent, runtime) {
                (None, _) => observed.repairs.push(format!(
                    "create the {family} ipset {name} (permanent; one firewalld reload loads it)"
                )),
                (Some(_), None) => observed.repairs.push(format!(
                    "load the {family} ipset {name} into the runtime configuration (one \
                     firewalld reload)"
                )),
                (Some(permanent), Some(runtime)) => {
                    let (add, remove) = difference(&permanent.entries, &runtime.entries);
                    if !add.is_empty() || !remove.is_empty() {
                        observed.repairs.push(format!(
                            "make the permanent {family} ipset {name} equal to the runtime one \
                             ({} entries differ)",
                            add.len() + remove.len()
                        ));
                    }
                    if permanent.description != self.description() {
                        observed.repairs.push(format!(
                            "mark the {family} ipset {name} with this state directory's owner id"
                        ));
                    }
                }
            }
        }
        for (other, bound) in &snapshot.active_zones {
            if other != zone && !bound.is_empty() {
                observed.warnings.push(format!(
                    "firewalld sends what arrives on or from {} to zone {other}, not to zone \
                     {zone} where our rules are: those connections do not meet our accepts; set \
                     `zone = \"{other}\"` if that is where the listed ranges arrive",
                    bound.join(", ")
                ));
            }
        }
        if self.policy.restrict {
            observed
                .warnings
                .extend(self.open_to_everyone(snapshot, zone));
        }
        for (other, rules) in &snapshot.permanent.rich_rules {
            for rule in rules
                .iter()
                .filter(|rule| names_our_ipset(rule) && !is_our_rule(rule))
            {
                observed.warnings.push(format!(
                    "a rich rule in zone {other} names our ipset but is not one we write, so it \
                     is left alone (and keeps the ipset at purge): `{rule}`"
                ));
            }
        }
        let wanted = self.wanted_rules();
        for (layer, what) in [
            (&snapshot.runtime, "runtime"),
            (&snapshot.permanent, "permanent"),
        ] {
            let present: BTreeSet<&String> = layer
                .rich_rules
                .get(zone)
                .map(|rules| rules.iter().collect())
                .unwrap_or_default();
            let missing = wanted.iter().filter(|rule| !present.contains(rule)).count();
            if missing > 0 {
                observed.repairs.push(format!(
                    "add {missing} rich rule(s) of ours to zone {zone} ({what})"
                ));
            }
            let stray: usize = layer
                .rich_rules
                .iter()
                .map(|(other, rules)| {
                    rules
                        .iter()
                        .filter(|rule| is_our_rule(rule))
                        .filter(|rule| other != zone || !wanted.contains(*rule))
                        .count()
                })
                .sum();
            if stray > 0 {
                observed.repairs.push(format!(
                    "remove {stray} rich rule(s) of ours that differ from the policy or sit in \
                     another zone ({what})"
                ));
            }
        }
        observed
    }
}

/// An ipset entry as a network (firewalld prints a host without its prefix).
fn parse_entry(entry: &str) -> Option<IpNet> {
    entry
        .parse::<IpNet>()
        .ok()
        .or_else(|| entry.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// The entries to add to `have` and to remove from it to get `want`, compared as networks.
fn difference(have: &[String], want: &[String]) -> (Vec<String>, Vec<String>) {
    let have_nets: BTreeSet<Option<IpNet>> = have.iter().map(|entry| parse_entry(entry)).collect();
    let want_nets: BTreeSet<Option<IpNet>> = want.iter().map(|entry| parse_entry(entry)).collect();
    let add = want
        .iter()
        .filter(|entry| !have_nets.contains(&parse_entry(entry)))
        .cloned()
        .collect();
    let remove = have
        .iter()
        .filter(|entry| !want_nets.contains(&parse_entry(entry)))
        .cloned()
        .collect();
    (add, remove)
}

impl Backend for FirewalldBackend {
    fn label(&self) -> String {
        LABEL.to_owned()
    }

    fn observe(&self) -> Result<Observed, BackendError> {
        let snapshot = self
            .read()
            .map_err(|error| at("read its ipsets and rich rules", error))?;
        Ok(self.judge(&snapshot))
    }

    fn apply(&self, change: &Change) -> Result<(), BackendError> {
        let step = "apply the change";
        let snapshot = self.read().map_err(|error| at(step, error))?;
        if Self::basis(&snapshot) != change.basis {
            return Err(BackendError::stale(
                LABEL,
                "our ipsets or rich rules changed since they were read",
            ));
        }
        let steps = self.steps(&snapshot, &change.target);
        run_steps(
            &self.interpreter().map_err(|error| at(step, error.into()))?,
            &steps,
        )
        .map_err(|error| at(step, error))
    }

    fn purge(&self) -> Result<Vec<String>, BackendError> {
        let step = "purge its ipsets and rich rules";
        let snapshot = self.read().map_err(|error| at(step, error))?;
        let mut steps = Vec::new();
        for (layer, runtime) in [(&snapshot.runtime, true), (&snapshot.permanent, false)] {
            for (zone, rules) in &layer.rich_rules {
                for rule in rules.iter().filter(|rule| is_our_rule(rule)) {
                    let (zone, rule) = (zone.clone(), rule.clone());
                    steps.push(if runtime {
                        Step::RemoveRichRule { zone, rule }
                    } else {
                        Step::PermanentRemoveRichRule { zone, rule }
                    });
                }
            }
        }
        let mut kept = Vec::new();
        for name in snapshot.permanent.ipsets.keys() {
            let user = snapshot
                .permanent
                .rich_rules
                .iter()
                .flat_map(|(zone, rules)| rules.iter().map(move |rule| (zone, rule)))
                .find(|(_, rule)| {
                    !is_our_rule(rule) && rule.contains(&format!("ipset=\"{name}\""))
                });
            match user {
                // firewalld refuses to remove an ipset a rule still names: it stays, emptied
                // (the reload below empties it at runtime too).
                Some((zone, rule)) => {
                    steps.push(Step::PermanentIpset {
                        name: name.clone(),
                        add: Vec::new(),
                        remove: snapshot.permanent.ipsets[name].entries.clone(),
                        description: self.description(),
                    });
                    kept.push(format!(
                        "kept the ipset {name}, emptied: a rule of someone else's in zone {zone} \
                         names it (`{rule}`)"
                    ));
                }
                None => steps.push(Step::PermanentRemoveIpset { name: name.clone() }),
            }
        }
        if !snapshot.runtime.ipsets.is_empty() {
            // A runtime ipset goes only with a reload.
            steps.push(Step::Reload);
        }
        let mut phrases: Vec<String> = steps.iter().map(ToString::to_string).collect();
        phrases.extend(kept);
        run_steps(
            &self.interpreter().map_err(|error| at(step, error.into()))?,
            &steps,
        )
        .map_err(|error| at(step, error))?;
        Ok(phrases)
    }
}

fn run_steps(interpreter: &std::path::Path, steps: &[Step]) -> Result<(), FirewalldError> {
    if steps.is_empty() {
        return Ok(());
    }
    let outcome = client::apply(interpreter, steps);
    outcome.result.map_err(|source| {
        if outcome.done == 0 {
            FirewalldError::Client(source)
        } else {
            FirewalldError::Partial {
                done: outcome.done,
                total: steps.len(),
                failed: steps
                    .get(outcome.done)
                    .map_or_else(String::new, ToString::to_string),
                source,
            }
        }
    })
}

/// The default zone as firewalld's configuration file names it (`DefaultZone=`), `public` when
/// it does not: for placing our accepts without starting a client (the plan's judgement).
pub fn default_zone_from_conf() -> String {
    std::fs::read_to_string(names::CONF_FILE)
        .ok()
        .and_then(|text| {
            text.lines()
                .filter_map(|line| line.trim().strip_prefix("DefaultZone="))
                .map(|zone| zone.trim().to_owned())
                .find(|zone| !zone.is_empty())
        })
        .unwrap_or_else(|| "public".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: &[&str]) -> Ranges {
        list.iter().map(|text| text.parse().unwrap()).collect()
    }

    #[test]
    fn covered_ranges_are_dropped_before_loading() {
        assert_eq!(
            without_covered(&ranges(&[
                "192.0.2.0/24",
                "192.0.2.0/25",
                "192.0.2.128/26",
                "198.51.100.0/25",
                "198.51.100.128/25",
                "2001:db8::/32",
                "2001:db8:1::/48",
            ])),
            ranges(&[
                "192.0.2.0/24",
                "198.51.100.0/25",
                "198.51.100.128/25",
                "2001:db8::/32"
            ])
        );
    }

    #[test]
    fn our_rules_are_the_ones_naming_our_ipsets() {
        assert!(is_our_rule(&accept_rule(Family::V4, 443)));
        assert!(is_our_rule(&drop_rule(Family::V6, 80)));
        assert!(!is_our_rule(
            "rule family=\"ipv4\" source ipset=\"cf-allowlist-v4-admin\" accept"
        ));
        let borrowed =
            "rule family=\"ipv4\" source ipset=\"cf-allowlist-v4\" service name=\"ssh\" accept";
        assert!(names_our_ipset(borrowed) && !is_our_rule(borrowed));
        let logged = format!("{} log", accept_rule(Family::V4, 443));
        assert!(!is_our_rule(&logged));
    }
}
