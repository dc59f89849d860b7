//! What the backend read of ours from EC2, and the writes that bring it to a target.
//!
//! Everything here is a pure function of a [`Live`] reading, so the decisions (which rule is
//! ours, what to authorize and revoke, when the quota is exceeded) are unit-tested without a
//! network. The EC2 calls live in `ec2.rs`; `lib.rs` joins the two.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

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
    /// parts: what a client of every group really sees (for the tests' mid-apply checks).
    #[cfg(feature = "harness")]
    pub fn allowed_everywhere(&self, mode: Mode, ports: &[u16]) -> Ranges {
        let candidates = self.ranges(mode);
        candidates
            .iter()
            .copied()
            .filter(|net| {
                self.groups.iter().all(|group| {
                    ports.iter().all(|port| {
                        group.ours.iter().any(|rule| {
                            rule.single_tcp_port() == Some(*port)
                                && match (&rule.source, mode) {
                                    (Source::Cidr(cidr), Mode::Rules) => cidr == net,
                                    (Source::PrefixList(id), Mode::PrefixList) => self
                                        .lists
                                        .get(&Family::of(net))
                                        .is_some_and(|list| &list.id == id),
                                    _ => false,
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
/// writes, then authorizations, then revocations (adds before removes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writes {
    /// Prefix-list writes.
    pub lists: Vec<ListWrite>,
    /// Rules to authorize, per group.
    pub authorize: BTreeMap<String, Vec<Grant>>,
    /// Rules to revoke, per group.
    pub revoke: BTreeMap<String, Vec<Revoke>>,
}

impl Writes {
    /// Whether nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty() && self.authorize.is_empty() && self.revoke.is_empty()
    }

    /// A phrase per write, for repairs and messages. Planned from an observation, a new list's
    /// size is not known yet (it depends on the target), so it is described, not numbered.
    pub fn phrases(&self) -> Vec<String> {
        let mut phrases = Vec::new();
        for write in &self.lists {
            phrases.push(match write {
                ListWrite::Create { family, .. } => format!(
                    "create prefix list {} (max entries: the ranges plus half again, at least 5 more; each reference counts that many rules against a group's quota)",
                    names::prefix_list_name(*family)
                ),
                ListWrite::Resize {
                    family, from, to, ..
                } => format!(
                    "resize prefix list {} from {from} to {to} max entries",
                    names::prefix_list_name(*family)
                ),
                ListWrite::Modify {
                    family, add, remove, ..
                } => format!(
                    "update prefix list {} (+{} -{})",
                    names::prefix_list_name(*family),
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

/// Checks `writes` against each group's quota (`max_rules` per family) and against foreign
/// rules that would collide with ours, before anything is written. The count includes the
/// moment after every authorization and before any revocation (adds come first).
pub fn check(
    live: &Live,
    writes: &Writes,
    mode: Mode,
    ports: &[u16],
    target: &Ranges,
    max_rules: usize,
) -> Result<(), Refusal> {
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
    // The size every list will have once the list writes are made.
    let mut sizes: BTreeMap<Family, i32> = live
        .lists
        .iter()
        .map(|(family, list)| (*family, list.max_entries))
        .collect();
    for write in &writes.lists {
        match write {
            ListWrite::Create {
                family,
                max_entries,
                ..
            } => {
                sizes.insert(*family, *max_entries);
            }
            ListWrite::Resize { family, to, .. } => {
                sizes.insert(*family, *to);
            }
            ListWrite::Modify { .. } => {}
        }
    }
    let weight_of_list = |id: &str| -> Option<(Family, usize)> {
        live.lists
            .iter()
            .find(|(_, list)| list.id == id)
            .map(|(family, _)| (*family, usize::try_from(sizes[family]).unwrap_or(0)))
    };
    for group in &live.groups {
        for family in Family::ALL {
            let foreign = group
                .foreign
                .iter()
                .filter(|rule| rule.counts_in(family))
                .count();
            let ours_now: usize = group
                .ours
                .iter()
                .map(|rule| match &rule.source {
                    Source::Cidr(net) => usize::from(Family::of(net) == family),
                    Source::PrefixList(id) => match weight_of_list(id) {
                        Some((list_family, weight)) if list_family == family => weight,
                        Some(_) => 0,
                        None => 1,
                    },
                    Source::Other(_) => 1,
                })
                .sum();
            let added: usize = writes
                .authorize
                .get(&group.id)
                .map(|grants| {
                    grants
                        .iter()
                        .map(|grant| match grant {
                            Grant::Cidr { net, .. } => usize::from(Family::of(net) == family),
                            Grant::List {
                                family: list_family,
                                ..
                            } if *list_family == family => {
                                usize::try_from(sizes.get(&family).copied().unwrap_or(0))
                                    .unwrap_or(0)
                            }
                            Grant::List { .. } => 0,
                        })
                        .sum()
                })
                .unwrap_or(0);
            let ours_after = match mode {
                Mode::Rules => target.count(family) * ports.len(),
                Mode::PrefixList => {
                    ports.len()
                        * usize::try_from(sizes.get(&family).copied().unwrap_or(0)).unwrap_or(0)
                }
            };
            let what = match mode {
                Mode::Rules => format!("{} ranges × {} ports", target.count(family), ports.len()),
                Mode::PrefixList => format!(
                    "{} ports × max entries {} of {}",
                    ports.len(),
                    sizes.get(&family).copied().unwrap_or(0),
                    names::prefix_list_name(family)
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
            let peak = foreign + ours_now + added;
            if peak > max_rules {
                let mut detail = String::new();
                let _ = write!(
                    detail,
                    "while new rules are added before old ones are revoked ({what} once done, {ours_now} of ours now, {added} to add, {foreign} other rules)"
                );
                return Err(Refusal::Quota {
                    group: group.id.clone(),
                    family,
                    needed: peak,
                    detail,
                    quota: max_rules,
                });
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

    fn target(list: &[&str]) -> Ranges {
        list.iter().map(|text| net(text)).collect()
    }

    #[test]
    fn rules_mode_adds_missing_slots_and_revokes_stale_rules_by_id() {
        let live = Live {
            groups: vec![Group {
                id: "sg-1".into(),
                ours: vec![
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
                foreign: vec![rule(
                    "sgr-f",
                    Source::Cidr(net("203.0.113.5/32")),
                    22,
                    "office",
                )],
            }],
            lists: BTreeMap::new(),
        };
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
        check(&live, &writes, Mode::Rules, &[80, 443], &target, 60).unwrap();
    }

    #[test]
    fn nothing_to_write_when_the_groups_hold_the_target() {
        let live = Live {
            groups: vec![Group {
                id: "sg-1".into(),
                ours: vec![rule(
                    "sgr-a",
                    Source::Cidr(net("192.0.2.0/24")),
                    443,
                    "cf-allowlist",
                )],
                foreign: vec![],
            }],
            lists: BTreeMap::new(),
        };
        let writes = plan_writes(&live, Mode::Rules, &[443], &target(&["192.0.2.0/24"]));
        assert!(writes.is_empty(), "{writes:?}");
    }

    #[test]
    fn the_quota_counts_foreign_rules_and_names_the_need() {
        let live = Live {
            groups: vec![Group {
                id: "sg-1".into(),
                ours: vec![],
                foreign: (0..4)
                    .map(|i| {
                        rule(
                            &format!("sgr-{i}"),
                            Source::Cidr(net(&format!("203.0.113.{i}/32"))),
                            22,
                            "x",
                        )
                    })
                    .collect(),
            }],
            lists: BTreeMap::new(),
        };
        let target: Ranges = (0..15u8).map(|i| net(&format!("10.{i}.0.0/16"))).collect();
        let writes = plan_writes(&live, Mode::Rules, &[80, 443], &target);
        let refusal = check(&live, &writes, Mode::Rules, &[80, 443], &target, 30).unwrap_err();
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
        let live = Live {
            groups: vec![Group {
                id: "sg-1".into(),
                ours: vec![],
                foreign: vec![rule(
                    "sgr-f",
                    Source::Cidr(net("192.0.2.0/24")),
                    443,
                    "team b",
                )],
            }],
            lists: BTreeMap::new(),
        };
        let target = target(&["192.0.2.0/24"]);
        let writes = plan_writes(&live, Mode::Rules, &[443], &target);
        let refusal = check(&live, &writes, Mode::Rules, &[443], &target, 60).unwrap_err();
        assert!(matches!(refusal, Refusal::Conflict { .. }), "{refusal}");
    }

    #[test]
    fn the_basis_ignores_foreign_rules_and_list_versions() {
        let mut live = Live {
            groups: vec![Group {
                id: "sg-1".into(),
                ours: vec![rule(
                    "sgr-a",
                    Source::Cidr(net("192.0.2.0/24")),
                    443,
                    "cf-allowlist",
                )],
                foreign: vec![],
            }],
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
