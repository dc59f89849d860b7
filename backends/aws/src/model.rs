//! What the backend read of ours from EC2, and the writes that bring it to a target.
//!
//! Everything here is a pure function of a [`Live`] reading, so the decisions (which rule is
//! ours, what to authorize and revoke, when the quota is exceeded) are unit-tested without a
//! network. The EC2 calls live in `ec2.rs`; `lib.rs` joins the two.

use std::collections::{BTreeMap, BTreeSet};

use cf_allowlist_backend::{Basis, Family, Ranges};
use ipnet::IpNet;

use crate::Mode;
use crate::names;

/// Where an inbound rule lets traffic in from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// An IPv4 or IPv6 network.
    Cidr(IpNet),
    /// A managed prefix list, by id.
    PrefixList(String),
    /// Anything else (another security group), as EC2 names it.
    Other(String),
}

/// One inbound rule of a security group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    /// `sgr-…`: the identity we revoke by, never a position.
    pub id: String,
    /// `tcp`, `udp`, `-1`…
    pub protocol: String,
    /// First port (or -1).
    pub from_port: i32,
    /// Last port (or -1).
    pub to_port: i32,
    /// Where from.
    pub source: Source,
    /// The rule's description (empty if none).
    pub description: String,
}

impl Rule {
    /// The single TCP port the rule opens, if it opens exactly one.
    fn single_tcp_port(&self) -> Option<u16> {
        (self.protocol == names::PROTOCOL && self.from_port == self.to_port)
            .then(|| u16::try_from(self.from_port).ok())
            .flatten()
    }

    /// The quota families the rule counts in: a CIDR counts in its own, anything else (a
    /// security group or prefix list reference) is counted in both, to be safe.
    fn counts_in(&self, family: Family) -> bool {
        match &self.source {
            Source::Cidr(net) => Family::of(net) == family,
            _ => true,
        }
    }
}

/// The inbound rules of one configured security group, split into ours and everyone else's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// `sg-…`.
    pub id: String,
    /// Rules whose description starts with the owner tag, or that reference one of our lists.
    pub ours: Vec<Rule>,
    /// Every other inbound rule: never revoked, only counted against the quota.
    pub foreign: Vec<Rule>,
}

impl Group {
    /// How many foreign rules count against the group's quota of `family`.
    fn foreign_rules_in(&self, family: Family) -> usize {
        self.foreign
            .iter()
            .filter(|rule| rule.counts_in(family))
            .count()
    }
}

/// One of our customer-managed prefix lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixList {
    /// `pl-…`.
    pub id: String,
    /// Its version, for optimistic concurrency.
    pub version: i64,
    /// Its size: every reference to it counts this many rules against a group's quota.
    pub max_entries: i32,
    /// What it holds.
    pub entries: BTreeSet<IpNet>,
}

/// What the backend read: the configured groups, in order, and our prefix lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    /// One per configured group.
    pub groups: Vec<Group>,
    /// Our prefix lists, found by name.
    pub lists: BTreeMap<Family, PrefixList>,
    /// Groups outside the config that reference our lists (read in rules mode only, where a
    /// list nobody references any more is deleted): another host of the fleet still in
    /// prefix-list mode keeps it alive.
    pub referenced_elsewhere: BTreeMap<Family, Vec<String>>,
}

impl Live {
    /// The ranges our parts allow somewhere: in rules mode every network one of our rules
    /// names; in prefix-list mode what our lists hold. (Rules on a port we no longer manage, or
    /// missing from one group, are structural repairs, not missing ranges.)
    pub fn ranges(&self, mode: Mode) -> Ranges {
        match mode {
            Mode::Rules => self
                .groups
                .iter()
                .flat_map(|group| &group.ours)
                .filter_map(|rule| match rule.source {
                    Source::Cidr(net) => Some(net),
                    _ => None,
                })
                .collect(),
            Mode::PrefixList => self
                .lists
                .iter()
                .flat_map(|(family, list)| {
                    list.entries
                        .iter()
                        .copied()
                        .filter(move |net| Family::of(net) == *family)
                })
                .collect(),
        }
    }

    /// The ranges that every configured group admits on every managed port through our
    /// parts, rules and list references alike (a mode switch holds both for a while): what a
    /// client of every group really sees (for the tests' mid-apply checks).
    #[cfg(feature = "harness")]
    pub fn allowed_everywhere(&self, ports: &[u16]) -> Ranges {
        let mut candidates = self.ranges(Mode::Rules);
        candidates.extend(self.ranges(Mode::PrefixList).iter().copied());
        candidates
            .iter()
            .copied()
            .filter(|net| {
                self.groups.iter().all(|group| {
                    ports.iter().all(|port| {
                        group.ours.iter().any(|rule| {
                            rule.single_tcp_port() == Some(*port)
                                && match &rule.source {
                                    Source::Cidr(cidr) => cidr == net,
                                    Source::PrefixList(id) => {
                                        self.lists.get(&Family::of(net)).is_some_and(|list| {
                                            &list.id == id && list.entries.contains(net)
                                        })
                                    }
                                    Source::Other(_) => false,
                                }
                        })
                    })
                })
            })
            .collect()
    }

    /// The fingerprint of our parts. Foreign rules are left out (they cannot make a plan
    /// stale), and so are list versions (a rename or a no-op modify changes nothing of ours).
    pub fn basis(&self) -> Basis {
        let groups: Vec<(&String, BTreeSet<&Rule>)> = self
            .groups
            .iter()
            .map(|group| (&group.id, group.ours.iter().collect()))
            .collect();
        let lists: Vec<(&Family, &String, i32, &BTreeSet<IpNet>)> = self
            .lists
            .iter()
            .map(|(family, list)| (family, &list.id, list.max_entries, &list.entries))
            .collect();
        Basis::of((groups, lists))
    }

    fn list_name_of(&self, id: &str) -> Option<&'static str> {
        self.lists
            .iter()
            .find(|(_, list)| list.id == id)
            .map(|(family, _)| names::prefix_list_name(*family))
    }
}

/// A rule to authorize in a group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grant {
    /// A network on one port.
    Cidr {
        /// The network.
        net: IpNet,
        /// The port.
        port: u16,
    },
    /// A reference to our prefix list of a family on one port.
    List {
        /// Which list.
        family: Family,
        /// The port.
        port: u16,
    },
}

/// A rule to revoke, by id, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoke {
    /// `sgr-…`.
    pub id: String,
    /// Why, as a phrase.
    pub reason: String,
    /// The single TCP port the rule opens, if it opens one (a port-by-port switch revokes a
    /// port's rules right after authorizing their replacements).
    pub port: Option<u16>,
}

/// A write to one of our prefix lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListWrite {
    /// Create the list with its size and entries.
    Create {
        /// The list's family.
        family: Family,
        /// Its size.
        max_entries: i32,
        /// Its entries.
        entries: Vec<IpNet>,
    },
    /// Grow the list before it receives more entries than it can hold.
    Resize {
        /// The list's family.
        family: Family,
        /// `pl-…`.
        id: String,
        /// Its size now.
        from: i32,
        /// Its new size.
        to: i32,
    },
    /// Grow a list created small to its usual headroom, once the rules it replaced are
    /// gone (a switch that would not fit the quota otherwise).
    Grow {
        /// The list's family.
        family: Family,
        /// Its new size.
        to: i32,
    },
    /// Delete our list: rules mode does not use it and no group references it any more.
    Delete {
        /// The list's family.
        family: Family,
        /// `pl-…`.
        id: String,
    },
    /// Add and remove entries against the version read.
    Modify {
        /// The list's family.
        family: Family,
        /// `pl-…`.
        id: String,
        /// The version read.
        version: i64,
        /// Entries to add.
        add: Vec<IpNet>,
        /// Entries to remove.
        remove: Vec<IpNet>,
    },
}

/// Every write that brings a [`Live`] reading to a target, in the order they are made: list
/// writes, then the rule stages (each authorizes, then revokes: adds before removes), then the
/// list writes that must wait until the old rules are gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writes {
    /// Prefix-list writes, first.
    pub lists: Vec<ListWrite>,
    /// Rules to authorize, per group.
    pub authorize: BTreeMap<String, Vec<Grant>>,
    /// Rules to revoke, per group.
    pub revoke: BTreeMap<String, Vec<Revoke>>,
    /// How the rule writes are grouped into stages.
    pub schedule: Schedule,
    /// Prefix-list writes, last (grow, delete).
    pub lists_after: Vec<ListWrite>,
}

/// How the authorizations and revocations are grouped: each stage authorizes its rules in
/// every group, then revokes its rules. A range on a port is allowed at every moment either
/// way: its old rule goes only in the stage that added its replacement, or later.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Schedule {
    /// One stage: every authorization, then every revocation (fewest calls).
    #[default]
    AllAtOnce,
    /// A stage per managed port, then one for the rest: the peak holds one port's old and new
    /// rules at a time, which is what lets a rules → prefix-list switch fit the quota.
    PortByPort,
}

/// One stage of rule writes, per group.
#[derive(Debug, Default)]
pub struct Stage<'a> {
    /// Rules to authorize.
    pub authorize: BTreeMap<&'a str, Vec<&'a Grant>>,
    /// Rules to revoke.
    pub revoke: BTreeMap<&'a str, Vec<&'a Revoke>>,
}

impl Writes {
    /// Whether nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
            && self.authorize.is_empty()
            && self.revoke.is_empty()
            && self.lists_after.is_empty()
    }

    /// The rule writes in the order the schedule makes them.
    pub fn stages(&self, ports: &[u16]) -> Vec<Stage<'_>> {
        let stage_of = |port: Option<u16>| -> usize {
            match self.schedule {
                Schedule::AllAtOnce => 0,
                Schedule::PortByPort => port
                    .and_then(|port| ports.iter().position(|managed| *managed == port))
                    .unwrap_or(ports.len()),
            }
        };
        let count = match self.schedule {
            Schedule::AllAtOnce => 1,
            Schedule::PortByPort => ports.len() + 1,
        };
        let mut stages: Vec<Stage<'_>> = (0..count).map(|_| Stage::default()).collect();
        for (group, grants) in &self.authorize {
            for grant in grants {
                stages[stage_of(Some(slot_port(grant)))]
                    .authorize
                    .entry(group.as_str())
                    .or_default()
                    .push(grant);
            }
        }
        for (group, revokes) in &self.revoke {
            for revoke in revokes {
                stages[stage_of(revoke.port)]
                    .revoke
                    .entry(group.as_str())
                    .or_default()
                    .push(revoke);
            }
        }
        stages.retain(|stage| !stage.authorize.is_empty() || !stage.revoke.is_empty());
        stages
    }

    /// A phrase per write, for repairs and messages. Planned from an observation, a new list's
    /// size is not known yet (it depends on the target), so it is described, not numbered.
    pub fn phrases(&self) -> Vec<String> {
        let mut phrases = Vec::new();
        for write in self.lists.iter().chain(&self.lists_after) {
            let (ListWrite::Create { family, .. }
            | ListWrite::Resize { family, .. }
            | ListWrite::Grow { family, .. }
            | ListWrite::Delete { family, .. }
            | ListWrite::Modify { family, .. }) = write;
            let list = names::prefix_list_name(*family);
            phrases.push(match write {
                ListWrite::Create { .. } => format!(
                    "create prefix list {list} (max entries: the ranges plus half again, at least 5 more; each reference counts that many rules against a group's quota)"
                ),
                ListWrite::Resize { from, to, .. } => {
                    format!("resize prefix list {list} from {from} to {to} max entries")
                }
                ListWrite::Grow { to, .. } => format!(
                    "grow prefix list {list} to {to} max entries once the rules it replaces are gone"
                ),
                ListWrite::Delete { id, .. } => format!(
                    "delete prefix list {list} ({id}): rules mode does not use it and no group references it"
                ),
                ListWrite::Modify { add, remove, .. } => format!(
                    "update prefix list {list} (+{} -{})",
                    add.len(),
                    remove.len()
                ),
            });
        }
        for (group, grants) in &self.authorize {
            let references: Vec<String> = grants
                .iter()
                .filter_map(|grant| match grant {
                    Grant::List { family, port } => Some(format!(
                        "{} on tcp/{port}",
                        names::prefix_list_name(*family)
                    )),
                    Grant::Cidr { .. } => None,
                })
                .collect();
            let rules = grants.len() - references.len();
            if rules > 0 {
                phrases.push(format!("authorize {rules} missing rules in {group}"));
            }
            if !references.is_empty() {
                phrases.push(format!("reference {} in {group}", references.join(", ")));
            }
        }
        for (group, revokes) in &self.revoke {
            for revoke in revokes {
                phrases.push(format!(
                    "revoke rule {} in {group} ({})",
                    revoke.id, revoke.reason
                ));
            }
        }
        if self.schedule == Schedule::PortByPort {
            phrases.push(
                "one port at a time (each port's references in, then its rules out), to stay within every group's quota"
                    .to_owned(),
            );
        }
        phrases
    }
}

/// The size a new (or grown) prefix list gets for `count` entries: half again, at least 5
/// more, rounded up to a multiple of 5, so that a few new ranges upstream do not force a
/// resize (which every referencing group must have quota room for).
pub fn max_entries_for(count: usize) -> i32 {
    let wanted = count + (count / 2).max(5);
    let rounded = wanted.div_ceil(5) * 5;
    i32::try_from(rounded).unwrap_or(i32::MAX)
}

/// The writes that bring `live` to `target` in `mode` on `ports`.
pub fn plan_writes(live: &Live, mode: Mode, ports: &[u16], target: &Ranges) -> Writes {
    let mut writes = Writes::default();
    if mode == Mode::PrefixList {
        for family in Family::ALL {
            let wanted: BTreeSet<IpNet> = target.family(family).copied().collect();
            match live.lists.get(&family) {
                None => writes.lists.push(ListWrite::Create {
                    family,
                    max_entries: max_entries_for(wanted.len()),
                    entries: wanted.into_iter().collect(),
                }),
                Some(list) => {
                    if wanted.len() > usize::try_from(list.max_entries).unwrap_or(0) {
                        writes.lists.push(ListWrite::Resize {
                            family,
                            id: list.id.clone(),
                            from: list.max_entries,
                            to: max_entries_for(wanted.len()),
                        });
                    }
                    let add: Vec<IpNet> = wanted.difference(&list.entries).copied().collect();
                    let remove: Vec<IpNet> = list.entries.difference(&wanted).copied().collect();
                    if !add.is_empty() || !remove.is_empty() {
                        writes.lists.push(ListWrite::Modify {
                            family,
                            id: list.id.clone(),
                            version: list.version,
                            add,
                            remove,
                        });
                    }
                }
            }
        }
    }
    for group in &live.groups {
        let mut kept = BTreeSet::new();
        let mut revokes = Vec::new();
        for rule in &group.ours {
            let port = rule.single_tcp_port();
            let slot = match (&rule.source, mode) {
                (Source::Cidr(net), Mode::Rules) if target.contains(net) => {
                    port.map(|port| Grant::Cidr { net: *net, port })
                }
                (Source::PrefixList(id), Mode::PrefixList) => live
                    .lists
                    .iter()
                    .find(|(_, list)| &list.id == id)
                    .and_then(|(family, _)| {
                        port.map(|port| Grant::List {
                            family: *family,
                            port,
                        })
                    }),
                _ => None,
            };
            let reason = match (&slot, &rule.source, mode) {
                (Some(slot), _, _) if !ports.contains(&slot_port(slot)) => {
                    format!("tcp/{} is no longer managed", slot_port(slot))
                }
                (Some(slot), _, _) if kept.contains(slot) => "duplicate".to_owned(),
                (Some(slot), _, _) => {
                    kept.insert(slot.clone());
                    continue;
                }
                (None, Source::Cidr(net), Mode::Rules) if port.is_some() => {
                    format!("{net} is no longer listed")
                }
                (None, Source::Cidr(net), Mode::PrefixList) => {
                    format!("{net}: prefix-list mode replaces rules")
                }
                (None, Source::PrefixList(id), Mode::Rules) => format!(
                    "reference to {}: rules mode replaces prefix lists",
                    live.list_name_of(id).unwrap_or(id)
                ),
                (None, _, _) => format!(
                    "not a rule this tool writes ({} {}-{})",
                    rule.protocol, rule.from_port, rule.to_port
                ),
            };
            revokes.push(Revoke {
                id: rule.id.clone(),
                reason,
                port,
            });
        }
        let mut grants = Vec::new();
        for &port in ports {
            match mode {
                Mode::Rules => {
                    for net in target {
                        let grant = Grant::Cidr { net: *net, port };
                        if !kept.contains(&grant) {
                            grants.push(grant);
                        }
                    }
                }
                Mode::PrefixList => {
                    for family in Family::ALL {
                        let grant = Grant::List { family, port };
                        if !kept.contains(&grant) {
                            grants.push(grant);
                        }
                    }
                }
            }
        }
        grants.sort();
        if !grants.is_empty() {
            writes.authorize.insert(group.id.clone(), grants);
        }
        if !revokes.is_empty() {
            writes.revoke.insert(group.id.clone(), revokes);
        }
    }
    if mode == Mode::Rules {
        for (family, list) in &live.lists {
            if live
                .referenced_elsewhere
                .get(family)
                .is_none_or(Vec::is_empty)
            {
                writes.lists_after.push(ListWrite::Delete {
                    family: *family,
                    id: list.id.clone(),
                });
            }
        }
    }
    writes
}

fn slot_port(grant: &Grant) -> u16 {
    match grant {
        Grant::Cidr { port, .. } | Grant::List { port, .. } => *port,
    }
}

/// Why the writes cannot be made: checked before the first write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A group would hold more inbound rules of a family than its quota.
    #[error(
        "{group} would need {needed} {family} inbound rules {detail}, above its quota of {quota}; \
         nothing was written"
    )]
    Quota {
        /// `sg-…`.
        group: String,
        /// The family.
        family: Family,
        /// How many rules it would need.
        needed: usize,
        /// How they add up.
        detail: String,
        /// The quota (`max_rules`).
        quota: usize,
    },
    /// Somebody else's rule already opens a port to a range of ours: EC2 would refuse ours as
    /// a duplicate, and we never revoke what is not ours.
    #[error(
        "{group} already has rule {rule} ({description:?}) for {net} on tcp/{port}, which is not ours; \
         nothing was written"
    )]
    Conflict {
        /// `sg-…`.
        group: String,
        /// `sgr-…`.
        rule: String,
        /// Its description.
        description: String,
        /// The network.
        net: IpNet,
        /// The port.
        port: u16,
    },
}

impl Refusal {
    /// What the user can do about it.
    pub fn hint(&self, mode: Mode) -> String {
        match (self, mode) {
            (Refusal::Quota { .. }, Mode::Rules) => "use mode = \"prefix-list\" (each reference counts as the list's MaxEntries, once per port), manage fewer ports, or raise the quota in Service Quotas and set max_rules to it".to_owned(),
            (Refusal::Quota { .. }, Mode::PrefixList) => "manage fewer ports, move other rules to another group, or raise the quota in Service Quotas and set max_rules to it".to_owned(),
            (Refusal::Conflict { .. }, _) => "remove that rule, or give it a description starting with \"cf-allowlist\" so the tool manages it".to_owned(),
        }
    }
}

/// Checks `writes` against foreign rules that would collide with ours, and finds an order
/// of them that keeps every group within its quota (`max_rules` per family) at every moment,
/// before anything is written: all at once (fewest calls); else one port at a time; else, when
/// new lists are created, created at their exact size and grown once the old rules are gone
/// (or kept at that size when even the grown size would not fit). Returns the writes in that
/// order, or the refusal of the plain order when none fits.
pub fn fit(
    live: &Live,
    writes: Writes,
    mode: Mode,
    ports: &[u16],
    target: &Ranges,
    max_rules: usize,
) -> Result<Writes, Refusal> {
    if mode == Mode::Rules {
        for group in &live.groups {
            for rule in &group.foreign {
                if let (Source::Cidr(net), Some(port)) = (&rule.source, rule.single_tcp_port())
                    && target.contains(net)
                    && ports.contains(&port)
                {
                    return Err(Refusal::Conflict {
                        group: group.id.clone(),
                        rule: rule.id.clone(),
                        description: rule.description.clone(),
                        net: *net,
                        port,
                    });
                }
            }
        }
    }
    let mut candidates = vec![writes.clone()];
    if ports.len() > 1 && !writes.revoke.is_empty() {
        candidates.push(Writes {
            schedule: Schedule::PortByPort,
            ..writes.clone()
        });
    }
    let creates = writes
        .lists
        .iter()
        .any(|write| matches!(write, ListWrite::Create { .. }));
    if creates {
        let mut small = Writes {
            schedule: Schedule::PortByPort,
            ..writes.clone()
        };
        let mut grow = Vec::new();
        for write in &mut small.lists {
            if let ListWrite::Create {
                family,
                max_entries,
                entries,
            } = write
            {
                grow.push(ListWrite::Grow {
                    family: *family,
                    to: *max_entries,
                });
                *max_entries = i32::try_from(entries.len().max(1)).unwrap_or(i32::MAX);
            }
        }
        let mut grown = small.clone();
        grown.lists_after.splice(0..0, grow);
        candidates.push(grown);
        candidates.push(small);
    }
    let mut first_refusal = None;
    for candidate in candidates {
        match simulate(live, &candidate, mode, ports, target, max_rules) {
            Ok(()) => return Ok(candidate),
            Err(refusal) => {
                first_refusal.get_or_insert(refusal);
            }
        }
    }
    Err(first_refusal.expect("at least one candidate"))
}

/// The size of each of our lists after `writes` (`after`: once the late list writes too).
fn list_sizes(live: &Live, writes: &Writes, after: bool) -> BTreeMap<Family, i32> {
    let mut sizes: BTreeMap<Family, i32> = live
        .lists
        .iter()
        .map(|(family, list)| (*family, list.max_entries))
        .collect();
    let late: &[ListWrite] = if after { &writes.lists_after } else { &[] };
    for write in writes.lists.iter().chain(late) {
        match write {
            ListWrite::Create {
                family,
                max_entries: size,
                ..
            }
            | ListWrite::Resize {
                family, to: size, ..
            }
            | ListWrite::Grow { family, to: size } => {
                sizes.insert(*family, *size);
            }
            ListWrite::Delete { family, .. } => {
                sizes.remove(family);
            }
            ListWrite::Modify { .. } => {}
        }
    }
    sizes
}

/// Counts each group's rules of each family before, during (after every authorization of
/// each stage) and after `writes`, and refuses the first count above `max_rules`.
fn simulate(
    live: &Live,
    writes: &Writes,
    mode: Mode,
    ports: &[u16],
    target: &Ranges,
    max_rules: usize,
) -> Result<(), Refusal> {
    let sizes = list_sizes(live, writes, false);
    let final_sizes = list_sizes(live, writes, true);
    let size = |sizes: &BTreeMap<Family, i32>, family: Family| -> usize {
        usize::try_from(sizes.get(&family).copied().unwrap_or(0)).unwrap_or(0)
    };
    let rule_weight = |rule: &Rule, family: Family| -> usize {
        match &rule.source {
            Source::Cidr(net) => usize::from(Family::of(net) == family),
            Source::PrefixList(id) => match live.lists.iter().find(|(_, list)| &list.id == id) {
                Some((list_family, _)) if *list_family == family => size(&sizes, family),
                Some(_) => 0,
                None => 1,
            },
            Source::Other(_) => 1,
        }
    };
    let grant_weight = |grant: &Grant, family: Family| -> usize {
        match grant {
            Grant::Cidr { net, .. } => usize::from(Family::of(net) == family),
            Grant::List {
                family: list_family,
                ..
            } if *list_family == family => size(&sizes, family),
            Grant::List { .. } => 0,
        }
    };
    let stages = writes.stages(ports);
    // The end state first: when it does not fit, no order helps, and that is the message.
    for group in &live.groups {
        for family in Family::ALL {
            let foreign = group.foreign_rules_in(family);
            let (ours_after, what) = match mode {
                Mode::Rules => (
                    target.count(family) * ports.len(),
                    format!("{} ranges × {} ports", target.count(family), ports.len()),
                ),
                Mode::PrefixList => (
                    ports.len() * size(&final_sizes, family),
                    format!(
                        "{} ports × max entries {} of {}",
                        ports.len(),
                        size(&final_sizes, family),
                        names::prefix_list_name(family)
                    ),
                ),
            };
            let needed = foreign + ours_after;
            if needed > max_rules {
                return Err(Refusal::Quota {
                    group: group.id.clone(),
                    family,
                    needed,
                    detail: format!("({what} + {foreign} other rules)"),
                    quota: max_rules,
                });
            }
        }
    }
    for group in &live.groups {
        for family in Family::ALL {
            let foreign = group.foreign_rules_in(family);
            let ours_now: usize = group
                .ours
                .iter()
                .map(|rule| rule_weight(rule, family))
                .sum();
            let mut present = ours_now;
            if foreign + present > max_rules {
                return Err(Refusal::Quota {
                    group: group.id.clone(),
                    family,
                    needed: foreign + present,
                    detail: format!(
                        "once the lists are resized ({ours_now} of ours, {foreign} other rules)"
                    ),
                    quota: max_rules,
                });
            }
            let mut added_total = 0;
            for stage in &stages {
                let added: usize = stage
                    .authorize
                    .get(group.id.as_str())
                    .into_iter()
                    .flatten()
                    .map(|grant| grant_weight(grant, family))
                    .sum();
                added_total += added;
                let peak = foreign + present + added;
                if peak > max_rules {
                    let schedule = match writes.schedule {
                        Schedule::AllAtOnce => {
                            "while new rules are added before old ones are revoked"
                        }
                        Schedule::PortByPort => {
                            "while one port's new rules are added before its old ones are revoked"
                        }
                    };
                    return Err(Refusal::Quota {
                        group: group.id.clone(),
                        family,
                        needed: peak,
                        detail: format!(
                            "{schedule} ({ours_now} of ours now, {added_total} added so far, {foreign} other rules)"
                        ),
                        quota: max_rules,
                    });
                }
                let revoked: usize = stage
                    .revoke
                    .get(group.id.as_str())
                    .into_iter()
                    .flatten()
                    .filter_map(|revoke| group.ours.iter().find(|rule| rule.id == revoke.id))
                    .map(|rule| rule_weight(rule, family))
                    .sum();
                present = present + added - revoked.min(present + added);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn rule(id: &str, source: Source, port: i32, description: &str) -> Rule {
        Rule {
            id: id.to_owned(),
            protocol: "tcp".to_owned(),
            from_port: port,
            to_port: port,
            source,
            description: description.to_owned(),
        }
    }

    /// Our rule sgr-a for 192.0.2.0/24 on tcp/443.
    fn our_rule_on_443() -> Rule {
        rule(
            "sgr-a",
            Source::Cidr(net("192.0.2.0/24")),
            443,
            "cf-allowlist",
        )
    }

    /// One group, sg-1, holding `ours` and `foreign`, and no prefix lists.
    fn one_group(ours: Vec<Rule>, foreign: Vec<Rule>) -> Live {
        Live {
            groups: vec![Group {
                id: "sg-1".into(),
                ours,
                foreign,
            }],
            lists: BTreeMap::new(),
            referenced_elsewhere: BTreeMap::new(),
        }
    }

    fn target(list: &[&str]) -> Ranges {
        list.iter().map(|text| net(text)).collect()
    }

    #[test]
    fn rules_mode_adds_missing_slots_and_revokes_stale_rules_by_id() {
        let live = one_group(
            vec![
                rule(
                    "sgr-a",
                    Source::Cidr(net("192.0.2.0/24")),
                    80,
                    "cf-allowlist",
                ),
                rule(
                    "sgr-b",
                    Source::Cidr(net("198.51.100.0/24")),
                    80,
                    "cf-allowlist",
                ),
                rule(
                    "sgr-c",
                    Source::Cidr(net("192.0.2.0/24")),
                    8080,
                    "cf-allowlist",
                ),
            ],
            vec![rule(
                "sgr-f",
                Source::Cidr(net("203.0.113.5/32")),
                22,
                "office",
            )],
        );
        let target = target(&["192.0.2.0/24", "2001:db8::/32"]);
        let writes = plan_writes(&live, Mode::Rules, &[80, 443], &target);
        assert_eq!(
            writes.authorize["sg-1"],
            vec![
                Grant::Cidr {
                    net: net("192.0.2.0/24"),
                    port: 443
                },
                Grant::Cidr {
                    net: net("2001:db8::/32"),
                    port: 80
                },
                Grant::Cidr {
                    net: net("2001:db8::/32"),
                    port: 443
                },
            ]
        );
        let revoked: Vec<&str> = writes.revoke["sg-1"]
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(revoked, ["sgr-b", "sgr-c"]);
        assert!(writes.lists.is_empty());
        fit(&live, writes, Mode::Rules, &[80, 443], &target, 60).unwrap();
    }

    #[test]
    fn nothing_to_write_when_the_groups_hold_the_target() {
        let live = one_group(vec![our_rule_on_443()], vec![]);
        let writes = plan_writes(&live, Mode::Rules, &[443], &target(&["192.0.2.0/24"]));
        assert!(writes.is_empty(), "{writes:?}");
    }

    #[test]
    fn the_quota_counts_foreign_rules_and_names_the_need() {
        let live = one_group(
            vec![],
            (0..4)
                .map(|i| {
                    rule(
                        &format!("sgr-{i}"),
                        Source::Cidr(net(&format!("203.0.113.{i}/32"))),
                        22,
                        "x",
                    )
                })
                .collect(),
        );
        let target: Ranges = (0..15u8).map(|i| net(&format!("10.{i}.0.0/16"))).collect();
        let writes = plan_writes(&live, Mode::Rules, &[80, 443], &target);
        let refusal = fit(&live, writes, Mode::Rules, &[80, 443], &target, 30).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "sg-1 would need 34 IPv4 inbound rules (15 ranges × 2 ports + 4 other rules), above its quota of 30; nothing was written"
        );
        assert!(refusal.hint(Mode::Rules).contains("prefix-list"));
    }

    #[test]
    fn prefix_list_mode_creates_lists_with_headroom_and_references_them_per_port() {
        let live = Live {
            groups: vec![Group {
                id: "sg-1".into(),
                ..Group::default()
            }],
            lists: BTreeMap::new(),
            referenced_elsewhere: BTreeMap::new(),
        };
        let target = target(&["192.0.2.0/24", "2001:db8::/32"]);
        let writes = plan_writes(&live, Mode::PrefixList, &[443], &target);
        assert_eq!(
            writes.lists,
            vec![
                ListWrite::Create {
                    family: Family::V4,
                    max_entries: 10,
                    entries: vec![net("192.0.2.0/24")]
                },
                ListWrite::Create {
                    family: Family::V6,
                    max_entries: 10,
                    entries: vec![net("2001:db8::/32")]
                },
            ]
        );
        assert_eq!(
            writes.authorize["sg-1"],
            vec![
                Grant::List {
                    family: Family::V4,
                    port: 443
                },
                Grant::List {
                    family: Family::V6,
                    port: 443
                }
            ]
        );
        assert_eq!(max_entries_for(15), 25);
        assert_eq!(max_entries_for(7), 15);
        assert_eq!(max_entries_for(0), 5);
    }

    /// Regression (issue 18.6): Cloudflare's list on two ports in rules mode, one foreign
    /// rule: adding both references before revoking any rule needs 81 IPv4 rules.
    #[test]
    fn a_switch_to_prefix_lists_goes_port_by_port_with_lists_grown_last() {
        let v4: Vec<IpNet> = (0..15u8)
            .map(|i| net(&format!("192.0.2.{}/28", i * 16)))
            .collect();
        let v6: Vec<IpNet> = (0..7u8)
            .map(|i| net(&format!("2001:db8:{i}::/48")))
            .collect();
        let all: Ranges = v4.iter().chain(&v6).copied().collect();
        let mut ours = Vec::new();
        for (index, range) in v4.iter().chain(&v6).enumerate() {
            for port in [80, 443] {
                ours.push(rule(
                    &format!("sgr-{index}-{port}"),
                    Source::Cidr(*range),
                    port,
                    "cf-allowlist",
                ));
            }
        }
        let live = Live {
            groups: vec![Group {
                id: "sg-1".into(),
                ours,
                foreign: vec![rule(
                    "sgr-f",
                    Source::Cidr(net("203.0.113.5/32")),
                    22,
                    "office",
                )],
            }],
            ..Live::default()
        };
        let writes = plan_writes(&live, Mode::PrefixList, &[80, 443], &all);
        let all_at_once = Writes {
            schedule: Schedule::AllAtOnce,
            ..writes.clone()
        };
        let refusal =
            simulate(&live, &all_at_once, Mode::PrefixList, &[80, 443], &all, 60).unwrap_err();
        assert!(
            refusal.to_string().contains("would need 81 IPv4"),
            "{refusal}"
        );

        let fitted = fit(&live, writes, Mode::PrefixList, &[80, 443], &all, 60).unwrap();
        assert_eq!(fitted.schedule, Schedule::PortByPort);
        let sizes: Vec<i32> = fitted
            .lists
            .iter()
            .filter_map(|write| match write {
                ListWrite::Create { max_entries, .. } => Some(*max_entries),
                _ => None,
            })
            .collect();
        assert_eq!(sizes, [15, 7]);
        assert_eq!(
            fitted.lists_after,
            [
                ListWrite::Grow {
                    family: Family::V4,
                    to: 25
                },
                ListWrite::Grow {
                    family: Family::V6,
                    to: 15
                }
            ]
        );
        // Each stage: one port's references (15 + 7) next to what is left.
        let stages = fitted.stages(&[80, 443]);
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].authorize["sg-1"].len(), 2);
        assert_eq!(stages[0].revoke["sg-1"].len(), 22);

        // And back: the lists are deleted once nothing references them…
        let mut back = Live::default();
        back.lists.insert(
            Family::V4,
            PrefixList {
                id: "pl-4".into(),
                version: 1,
                max_entries: 25,
                entries: v4.iter().copied().collect(),
            },
        );
        let writes = plan_writes(&back, Mode::Rules, &[80, 443], &all);
        assert_eq!(
            writes.lists_after,
            [ListWrite::Delete {
                family: Family::V4,
                id: "pl-4".into()
            }]
        );
        // …and kept while another host's group still references them.
        back.referenced_elsewhere
            .insert(Family::V4, vec!["sg-other".into()]);
        let writes = plan_writes(&back, Mode::Rules, &[80, 443], &all);
        assert!(writes.lists_after.is_empty(), "{writes:?}");
    }

    #[test]
    fn a_list_that_would_overflow_is_resized_first() {
        let list = PrefixList {
            id: "pl-4".into(),
            version: 3,
            max_entries: 1,
            entries: [net("192.0.2.0/24")].into(),
        };
        let live = Live {
            groups: vec![],
            lists: [(Family::V4, list)].into(),
            referenced_elsewhere: BTreeMap::new(),
        };
        let writes = plan_writes(
            &live,
            Mode::PrefixList,
            &[443],
            &target(&["192.0.2.0/24", "198.51.100.0/24"]),
        );
        assert_eq!(
            writes.lists[0],
            ListWrite::Resize {
                family: Family::V4,
                id: "pl-4".into(),
                from: 1,
                to: 10
            }
        );
        assert!(
            matches!(&writes.lists[1], ListWrite::Modify { version: 3, add, remove, .. } if add.len() == 1 && remove.is_empty())
        );
    }

    #[test]
    fn a_foreign_rule_for_one_of_our_slots_is_refused_not_revoked() {
        let live = one_group(
            vec![],
            vec![rule(
                "sgr-f",
                Source::Cidr(net("192.0.2.0/24")),
                443,
                "team b",
            )],
        );
        let target = target(&["192.0.2.0/24"]);
        let writes = plan_writes(&live, Mode::Rules, &[443], &target);
        let refusal = fit(&live, writes, Mode::Rules, &[443], &target, 60).unwrap_err();
        assert!(matches!(refusal, Refusal::Conflict { .. }), "{refusal}");
    }

    #[test]
    fn the_basis_ignores_foreign_rules_and_list_versions() {
        let mut live = Live {
            lists: [(
                Family::V4,
                PrefixList {
                    id: "pl-1".into(),
                    version: 1,
                    max_entries: 5,
                    entries: BTreeSet::new(),
                },
            )]
            .into(),
            ..one_group(vec![our_rule_on_443()], vec![])
        };
        let before = live.basis();
        live.groups[0]
            .foreign
            .push(rule("sgr-f", Source::Cidr(net("203.0.113.0/24")), 22, "x"));
        live.lists.get_mut(&Family::V4).unwrap().version = 2;
        assert_eq!(live.basis(), before);
        live.groups[0].ours.pop();
        assert_ne!(live.basis(), before);
    }
}
