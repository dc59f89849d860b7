//! The contract between cf-allowlist's core and its firewall backends.
//!
//! A backend answers three questions and nothing more: what of ours does the firewall hold
//! ([`Backend::observe`]), make it allow exactly this target ([`Backend::apply`]), and remove
//! every trace of us ([`Backend::purge`]). The core decides the *target* and judges the plan:
//! [`Change::between`] computes the ranges to add and remove from an observation and the
//! target, and the core's guards (shrink, SSH lock-out, staleness) read that [`Change`]. How a
//! backend gets its firewall to the target is its own affair: nftables and iptables write
//! `change.add` and `change.remove`; ufw, AWS and nginx read their live rules again and write
//! what brings them to `change.target`, the shape of Mullvad's `apply_policy(target)`.
//!
//! The `conformance` module (behind the `conformance` feature, so it never ships in the binary)
//! holds the behaviours every backend must show; each backend runs it from the integration
//! tests.

pub mod atomic;
#[cfg(feature = "conformance")]
pub mod conformance;
mod options;
pub mod restrict;
pub mod tool;

pub use options::{BackendOptions, HostPlace};

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The comment, tag or description every backend writes on what it creates, so that its own
/// rules can be told from everyone else's.
pub const OWNER_TAG: &str = "cf-allowlist";

/// What separates the owner mark from the rest of a comment: `cf-allowlist ipv4 owner=3f9a…`.
pub const OWNER_MARK: &str = " owner=";

/// A comment of ours, marked with the state directory that owns it when there is one.
pub fn owned_comment(base: &str, owner: Option<&str>) -> String {
    match owner {
        Some(owner) => format!("{base}{OWNER_MARK}{owner}"),
        None => base.to_owned(),
    }
}

/// The owner a comment of ours names, if any.
pub fn owner_of(comment: &str) -> Option<&str> {
    comment
        .rsplit_once(OWNER_MARK)
        .map(|(_, owner)| owner)
        .filter(|owner| !owner.is_empty())
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The family of a network.
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A set of networks, ordered (IPv4 before IPv6, then by address and prefix) and free of exact
/// duplicates.
///
/// Shared, and copied on the first write: a plan holds the same 100,000 ranges several times
/// (the target, each backend's change), and a copy is then a reference count, not a tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Ranges(Arc<BTreeSet<IpNet>>);

impl Serialize for Ranges {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Ranges {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Ranges, D::Error> {
        // Read as a list and built in one go (sorted, then bulk-loaded): a set deserialised
        // element by element searches the tree for each of 100,000 ranges.
        Vec::<IpNet>::deserialize(deserializer).map(|list| list.into_iter().collect())
    }
}

impl Ranges {
    /// An empty set.
    pub fn new() -> Ranges {
        Ranges::default()
    }

    /// Adds a network; returns false if it was already there.
    pub fn insert(&mut self, net: IpNet) -> bool {
        Arc::make_mut(&mut self.0).insert(net)
    }

    /// Whether the network is in the set (exactly, not by containment).
    pub fn contains(&self, net: &IpNet) -> bool {
        self.0.contains(net)
    }

    /// Every network, in order.
    pub fn iter(&self) -> impl Iterator<Item = &IpNet> + '_ {
        self.0.iter()
    }

    /// The networks of one family, in order.
    pub fn family(&self, family: Family) -> impl Iterator<Item = &IpNet> + '_ {
        self.0.iter().filter(move |net| Family::of(net) == family)
    }

    /// How many networks of one family the set holds. IPv4 sorts before IPv6: the boundary is
    /// looked for from both ends at once, so the cost is the smaller family's size.
    pub fn count(&self, family: Family) -> usize {
        let (mut front, mut back) = (self.0.iter(), self.0.iter().rev());
        let (mut v4, mut v6) = (0, 0);
        let v4 = loop {
            match front.next() {
                Some(IpNet::V4(_)) => v4 += 1,
                _ => break v4,
            }
            match back.next() {
                Some(IpNet::V6(_)) => v6 += 1,
                _ => break self.0.len() - v6,
            }
        };
        match family {
            Family::V4 => v4,
            Family::V6 => self.0.len() - v4,
        }
    }

    /// How many networks the set holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The networks in `self` that are not in `other`.
    pub fn difference(&self, other: &Ranges) -> Ranges {
        self.0.difference(&other.0).copied().collect()
    }

    /// The networks in both sets.
    pub fn intersection(&self, other: &Ranges) -> Ranges {
        self.0.intersection(&other.0).copied().collect()
    }

    /// The networks as strings, in order (for messages and JSON).
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl FromIterator<IpNet> for Ranges {
    fn from_iter<I: IntoIterator<Item = IpNet>>(iter: I) -> Ranges {
        Ranges(Arc::new(iter.into_iter().collect()))
    }
}

impl<'a> IntoIterator for &'a Ranges {
    type Item = &'a IpNet;
    type IntoIter = std::collections::btree_set::Iter<'a, IpNet>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A fingerprint of the parts of the firewall a backend owns, as it observed them. A plan is
/// made from one observation; [`Backend::apply`] compares the live firewall's basis with the
/// plan's and refuses a stale plan (see [`ErrorKind::Stale`]) instead of doing something the plan
/// did not show. Opaque: only equality means anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Basis(u64);

impl Basis {
    /// The basis of everything `parts` yields, in order (a backend feeds it a canonical text of
    /// what it owns: rules with their handles or ids, set members, jumps).
    pub fn of<T: std::hash::Hash>(parts: T) -> Basis {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        Basis(BuildHasherDefault::<DefaultHasher>::default().hash_one(parts))
    }
}

/// What a backend found of ours in the live firewall.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The ranges our rules or sets currently allow.
    pub ranges: Ranges,
    /// Structural drift: each entry names a part of ours that is missing, duplicated or altered
    /// (for example "the IPv4 accept rule is missing"). Empty only when the structure is intact;
    /// before the first apply it says what will be created.
    pub repairs: Vec<String>,
    /// Facts about the firewall the user should know but that the backend will not change (for
    /// example another table whose drop would win over our accept).
    pub warnings: Vec<String>,
    /// The fingerprint of what was observed, carried into the plan.
    pub basis: Basis,
    /// The owners named on the parts of ours that were found (state directories, by their
    /// owner id); empty when nothing of ours carries a mark (nothing found, or parts written
    /// before owners were recorded).
    pub owners: BTreeSet<String>,
}

/// What one backend must do to go from what it holds to a target: the per-backend part of the
/// plan. Computed by [`Change::between`]; backends only execute it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Every range the firewall must allow once the change is applied.
    pub target: Ranges,
    /// Ranges to add.
    pub add: Ranges,
    /// Ranges to remove.
    pub remove: Ranges,
    /// Ranges already in place.
    pub unchanged: Ranges,
    /// Structural repairs the apply will make (copied from the observation).
    pub repairs: Vec<String>,
    /// The observation the change was planned from.
    pub basis: Basis,
}

impl Change {
    /// The change that brings `observed` to `target`.
    pub fn between(observed: &Observed, target: &Ranges) -> Change {
        Change {
            target: target.clone(),
            add: target.difference(&observed.ranges),
            remove: observed.ranges.difference(target),
            unchanged: target.intersection(&observed.ranges),
            repairs: observed.repairs.clone(),
            basis: observed.basis,
        }
    }

    /// Whether applying the change would write anything at all.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.repairs.is_empty()
    }
}

/// Which traffic the allow rules match, shared by every backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Policy {
    /// The TCP destination ports opened to the ranges, sorted and without duplicates.
    pub ports: Vec<u16>,
    /// Whether every other source is dropped on those ports.
    pub restrict: bool,
}

/// What kind of failure a [`BackendError`] is, so that the core chooses hints and retries by
/// kind rather than by the wording of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The firewall's tool is not installed.
    MissingTool,
    /// Not allowed: not root, no CAP_NET_ADMIN, or denied by an API.
    Permission,
    /// An API found no credentials to sign with, or refused the ones it was given.
    Credentials,
    /// The firewall refused what we sent, or printed what we could not read.
    Rejected,
    /// The firewall changed since it was observed; nothing was written. Re-observe and re-plan.
    Stale,
    /// A failure that may pass on its own (a lock held too long, throttling, a timeout).
    Transient,
}

/// A failure inside a backend: which step failed, what kind of failure it is, and why. Each
/// backend keeps its own detailed error type and wraps it here so the core can handle every
/// backend alike.
#[derive(Debug, thiserror::Error)]
#[error("{backend} backend could not {step}")]
pub struct BackendError {
    /// The backend's label.
    pub backend: String,
    /// The step that failed, as a phrase that completes "could not …".
    pub step: &'static str,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// A package that provides the missing tool, for [`ErrorKind::MissingTool`].
    pub package: Option<&'static str>,
    /// What the user can do, when the backend knows better than its kind's general advice
    /// (which credential sources exist, which IAM action to allow).
    pub hint: Option<String>,
    /// The cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl BackendError {
    /// Wraps a backend's own error.
    pub fn new(
        backend: impl Into<String>,
        step: &'static str,
        kind: ErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> BackendError {
        BackendError {
            backend: backend.into(),
            step,
            kind,
            package: None,
            hint: None,
            source: source.into(),
        }
    }

    /// The same error with the backend's own advice, shown instead of its kind's.
    pub fn with_hint(self, hint: Option<String>) -> BackendError {
        BackendError { hint, ..self }
    }

    /// The refusal of a stale plan: `what` says what changed since the observation.
    pub fn stale(backend: impl Into<String>, what: impl Into<String>) -> BackendError {
        BackendError::new(backend, "apply the change", ErrorKind::Stale, what.into())
    }

    /// Wraps a failure to run a firewall tool, with the kind its cause implies; `package` is
    /// the Debian package that provides the tool.
    pub fn tool(
        backend: impl Into<String>,
        step: &'static str,
        package: &'static str,
        error: tool::ToolError,
    ) -> BackendError {
        let kind = error.kind();
        BackendError {
            package: (kind == ErrorKind::MissingTool).then_some(package),
            ..BackendError::new(backend, step, kind, error)
        }
    }
}

/// A firewall cf-allowlist can keep open to a set of ranges.
///
/// # The contract
///
/// - **Observe, plan, apply to a target.** The core observes, computes a [`Change`] with
///   [`Change::between`], judges it, and hands it to `apply`. What `apply` must achieve is
///   `change.target`: the firewall allows exactly those ranges afterwards. `change.add` and
///   `change.remove` are the plan the core judged, and a backend whose firewall takes a diff
///   writes them (nftables, iptables); one whose firewall is easier to compare whole re-derives
///   its writes from `change.target` and the rules it reads again (ufw, AWS, nginx). Either
///   way, what it writes differs from the judged plan only by drift since the observation,
///   which the staleness check below bounds.
/// - **A stale plan is refused.** `apply` reads what it owns again first; if its [`Basis`]
///   differs from `change.basis` (an admin, fail2ban or Docker changed our parts since the
///   observation), it fails with [`ErrorKind::Stale`] and writes nothing. The core then
///   re-observes and re-plans once. Somebody else's rules changing is not staleness: deletes
///   and replacements address a rule by spec, handle or id, never by a position read earlier,
///   so they cannot land on the wrong rule. One position is computed: ufw has no other way to
///   put restrict's deny after the allows than `ufw insert N`, with N taken from the rule files
///   read in the same apply; a ufw call in between can misplace it, which the read-back and the
///   next observe see and repair.
/// - **Adds before removes.** A range listed both before and after an apply stays in our rules
///   at every step of it, and new ranges are allowed before stale ones are removed. (In the
///   kernel, ufw's reload on every call empties its chains for a moment whatever the order; the
///   conformance suite checks the order of the steps, not that moment.)
/// - **Atomicity is per backend and is documented by each**: nftables writes one `nft -f`
///   transaction for the whole change; iptables one `iptables-restore` transaction per family
///   (and an `ipset swap` per set); nginx one rename of its include file; ufw and cloud APIs one
///   call per rule or batch (and ufw reloads its chains, which empties them for a moment, on
///   every call). Whatever the
///   unit, a failed apply leaves a firewall the next observe reads truthfully and the next
///   sync converges from.
/// - **Read back.** After `apply` the core observes again and compares with the target.
/// - **An empty change writes nothing**, and `purge` removes everything the backend created
///   (wherever it knows to look) and nothing else.
pub trait Backend {
    /// A short label for messages and JSON output, such as `nftables`.
    fn label(&self) -> String;

    /// Reads what the firewall holds of ours, and what is structurally missing or duplicated.
    fn observe(&self) -> Result<Observed, BackendError>;

    /// Applies `change`, planned from an observation whose basis it carries: afterwards the
    /// firewall allows exactly `change.target` through exactly one copy of each of our rules,
    /// and nothing else of the firewall has changed. An empty change must write nothing; a
    /// stale one must be refused with [`ErrorKind::Stale`] before anything is written.
    fn apply(&self, change: &Change) -> Result<(), BackendError>;

    /// Checks, reading only, that `apply(change)` would not be refused for a reason known
    /// before its first write (an API's quota, a conflicting rule), so that a dry run refuses
    /// what the run would, and a run refuses before any backend writes. Nothing to check by
    /// default: local firewalls find out in their own transaction.
    fn check(&self, change: &Change) -> Result<(), BackendError> {
        let _ = change;
        Ok(())
    }

    /// Removes everything this backend created, and nothing else; returns a phrase per part it
    /// removed (empty when there was nothing of ours).
    fn purge(&self) -> Result<Vec<String>, BackendError>;

    /// How many nf_tables transactions this instance's applies committed, for a backend that
    /// writes only nf_tables objects and counts them (one per iptables-nft restore); `None`
    /// when it does not count, or wrote anything no ruleset generation counts (an ipset, a
    /// legacy table). The core compares it with how far the generation moved, to prove that
    /// nobody else wrote during a sync.
    fn committed(&self) -> Option<u32> {
        None
    }
}

impl Extend<IpNet> for Ranges {
    fn extend<I: IntoIterator<Item = IpNet>>(&mut self, iter: I) {
        Arc::make_mut(&mut self.0).extend(iter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_is_counted_whatever_the_mix() {
        for (v4, v6) in [
            (0, 0),
            (3, 0),
            (0, 3),
            (1, 5),
            (5, 1),
            (4, 4),
            (1, 1),
            (7, 2),
        ] {
            let ranges: Ranges = (0..v4)
                .map(|index| format!("198.51.100.{index}/32"))
                .chain((0..v6).map(|index| format!("2001:db8:{index:x}::/48")))
                .map(|text| text.parse::<IpNet>().unwrap())
                .collect();
            assert_eq!(
                (ranges.count(Family::V4), ranges.count(Family::V6)),
                (v4, v6),
                "{v4} IPv4, {v6} IPv6"
            );
        }
    }

    #[test]
    fn a_copy_is_its_own_set() {
        let first: Ranges = ["192.0.2.0/24".parse::<IpNet>().unwrap()]
            .into_iter()
            .collect();
        let mut second = first.clone();
        second.insert("2001:db8::/32".parse().unwrap());
        second.extend(["198.51.100.0/24".parse::<IpNet>().unwrap()]);
        assert_eq!(first.len(), 1);
        assert_eq!(second.len(), 3);
        assert_ne!(first, second);
    }
}
