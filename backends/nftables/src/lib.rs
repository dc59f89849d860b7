//! The nftables backend.
//!
//! It writes where the drop it must beat lives: by default the host's own `inet filter` table
//! and its `input` chain (created, with policy accept, only if absent). An accept in a separate
//! table would not help: nftables evaluates every base chain on a hook and any drop is final
//! (measured on this project's machines). In that chain it owns one named interval set per family
//! and one accept rule per family matching the set on the managed ports, inserted at the top so
//! that they come before any broader drop; with restrict on, a drop rule for every other
//! non-loopback source follows them. Everything is tagged with [`names::OWNER_TAG`].
//!
//! Every change is one transaction, and a failed one changes nothing. A change of elements only
//! (our table, chain, sets and rules already in place: every replace, add or remove of ranges)
//! goes to the kernel over netlink as one batch of element deletions and additions, refused by
//! the kernel if the ruleset's generation moved since our reading ([`netlink::edit_sets`]: nft
//! 1.0.6 takes minutes to delete interval elements from a large set, the kernel milliseconds).
//! A first apply (no table of ours yet, nothing of ours elsewhere) creates table, chain, sets
//! and rules over netlink too, as one transaction of the messages nft would send for the same
//! batch ([`netlink::create`]), without starting nft. Anything else structural is a text batch
//! piped to one `nft -f -`. Either way set elements change
//! in place (the set is never empty in between). State is read with the terse
//! `nft -t -j list ruleset` (structure only) plus the elements of our two sets straight from the
//! kernel ([`netlink`]); see there why.

pub mod names;
/// The kernel reads (set elements, the ruleset generation), shared with the shadowing analysis.
pub use cf_allowlist_netfilter::netlink;
mod registry;
mod ruleset;

use std::fmt::Write as _;
use std::path::PathBuf;

use cf_allowlist_backend::tool::{self, ToolError};
use cf_allowlist_backend::{
    Backend, BackendError, Basis, Change, ErrorKind, Family, Observed, Policy, Ranges,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use cf_allowlist_backend::restrict::{self, Role};
use ruleset::{ForeignRule, Live, RuleShape};

const LABEL: &str = "nftables";

/// Above this many removals in a family, a batch for nft flushes and refills a set (in the same
/// transaction) instead of deleting elements one by one. Element changes written over netlink
/// (the usual case: see the module doc) delete in place whatever their number.
pub const REFILL_ABOVE_REMOVALS: usize = 16;

/// Where the backend writes, beyond the shared policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NftablesOptions {
    /// The `inet` table holding the chain; Debian's stock ruleset calls it `filter`.
    #[serde(default = "default_table")]
    pub table: String,
    /// The chain that owns the input drop; Debian's stock ruleset calls it `input`.
    #[serde(default = "default_chain")]
    pub chain: String,
}

fn default_table() -> String {
    "filter".to_owned()
}

fn default_chain() -> String {
    "input".to_owned()
}

impl NftablesOptions {
    /// Checks that the table and chain names are ones nft reads as names (letters, digits,
    /// `_` and `-`, starting with a letter), so that they cannot smuggle syntax into a batch.
    pub fn check_names(&self) -> Result<(), String> {
        for (what, name) in [("table", &self.table), ("chain", &self.chain)] {
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(format!(
                    "{what} name {name:?} must be up to 64 letters, digits, `_` or `-`, starting with a letter"
                ));
            }
        }
        Ok(())
    }
}

impl Default for NftablesOptions {
    fn default() -> NftablesOptions {
        NftablesOptions {
            table: default_table(),
            chain: default_chain(),
        }
    }
}

/// What can go wrong in this backend.
#[derive(Debug, thiserror::Error)]
pub enum NftablesError {
    /// `nft` could not be run or refused the batch.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// `nft` printed something we could not read.
    #[error("could not read nft's listing")]
    Parse(#[from] ruleset::ParseError),
    /// The kernel's set elements could not be read.
    #[error("could not read our sets' elements from the kernel")]
    Netlink(#[from] netlink::NetlinkError),
    /// A table or chain name that nft would misread.
    #[error("{0}")]
    BadName(String),
}

impl NftablesError {
    /// The backend error for a failed `step`.
    fn at(self, step: &'static str) -> BackendError {
        match self {
            NftablesError::Tool(error) => BackendError::tool(LABEL, step, "nftables", error),
            NftablesError::Parse(_) => BackendError::new(LABEL, step, ErrorKind::Rejected, self),
            NftablesError::Netlink(netlink::NetlinkError::Io(ref error))
                if error.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                BackendError::new(LABEL, step, ErrorKind::Permission, self)
            }
            // EPERM or EACCES from the kernel: no CAP_NET_ADMIN.
            NftablesError::Netlink(
                netlink::NetlinkError::Kernel { errno: 1 | 13, .. }
                | netlink::NetlinkError::Refused { errno: 1 | 13, .. }
                | netlink::NetlinkError::CreationRefused { errno: 1 | 13, .. },
            ) => BackendError::new(LABEL, step, ErrorKind::Permission, self),
            NftablesError::Netlink(netlink::NetlinkError::Interrupted(_)) => {
                BackendError::new(LABEL, step, ErrorKind::Transient, self)
            }
            NftablesError::Netlink(_) => BackendError::new(LABEL, step, ErrorKind::Rejected, self),
            NftablesError::BadName(_) => BackendError::new(LABEL, step, ErrorKind::Rejected, self),
        }
    }
}

/// The fingerprint of our parts: what a plan made from this listing assumed. Rule handles are
/// left out: the batch is made from the apply's own reading (handles included), and a reading
/// predicted from our own transaction does not know the handles of the rules it inserted.
fn basis(live: &Live) -> Basis {
    let shapes: Vec<&RuleShape> = live.rules.iter().map(|rule| &rule.shape).collect();
    Basis::of((
        live.table_exists,
        live.chain_exists,
        shapes,
        &live.sets,
        &live.strays,
    ))
}

/// Everything a reading says about our parts and their surroundings, to tell whether two
/// readings agree.
fn everything_of_ours(live: &Live) -> Basis {
    Basis::of((
        basis(live),
        live.chain_is_input_base,
        live.foreign_rules_in_chain,
        live.foreign_objects_in_table,
        &live.other_dropping_chains,
    ))
}

/// The repairs that remove our parts found outside our table and chain.
fn stray_repairs(strays: &ruleset::Strays) -> Vec<String> {
    strays
        .rules
        .iter()
        .map(|(table, chain, _, comment)| {
            format!("remove rule {comment:?} from inet {table} {chain} (no longer configured)")
        })
        .chain(strays.sets.iter().map(|(table, set)| {
            format!("remove set {set} from inet {table} (no longer configured)")
        }))
        .collect()
}

/// Batch lines deleting our parts found elsewhere, rules before the sets they use; and the
/// tables or chains we created there once they hold nothing else (`listings` gives each such
/// table's text listing, where nft 1.0.6 shows the comments its JSON leaves out).
fn stray_removals(
    strays: &ruleset::Strays,
    listings: &[(String, String)],
    removed: &mut Vec<String>,
) -> String {
    let mut batch = String::new();
    for (table, chain, handle, comment) in &strays.rules {
        let _ = writeln!(batch, "delete rule inet {table} {chain} handle {handle}");
        removed.push(format!("rule {comment:?} from inet {table} {chain}"));
    }
    for (table, set) in &strays.sets {
        let _ = writeln!(batch, "delete set inet {table} {set}");
        removed.push(format!("set inet {table} {set}"));
    }
    for (table, listing) in listings {
        let (table_ours, _) = names::created_by_us(listing, "");
        if table_ours && only_ours_left(listing) {
            let _ = writeln!(batch, "delete table inet {table}");
            removed.push(format!("table inet {table}"));
        }
    }
    batch
}

/// The lines of an nft text listing outside our sets' blocks (`set cf_allowlist_… { … }`).
fn outside_our_sets(listing: &str) -> impl Iterator<Item = &str> {
    let mut in_our_set = false;
    listing.lines().filter(move |line| {
        let trimmed = line.trim();
        if trimmed.starts_with("set cf_allowlist_") {
            in_our_set = true;
            false
        } else if in_our_set {
            if trimmed == "}" {
                in_our_set = false;
            }
            false
        } else {
            true
        }
    })
}

/// Whether a table's text listing holds nothing but our own chains, sets and rules.
fn only_ours_left(listing: &str) -> bool {
    for line in outside_our_sets(listing).map(str::trim) {
        let structural = line.is_empty()
            || line == "}"
            || line.starts_with("table inet ")
            || line.starts_with("chain ")
            || line.starts_with("type filter hook")
            || line.starts_with("comment \"")
            || line.contains(&format!("comment \"{}", names::OWNER_TAG));
        if !structural {
            return false;
        }
    }
    true
}

/// The block of `table inet NAME { … }` in a text listing of the ruleset (empty if absent).
fn table_block(listing: &str, table: &str) -> String {
    let header = format!("table inet {table} {{");
    let mut block = String::new();
    let mut inside = false;
    for line in listing.lines() {
        if !inside && line == header {
            inside = true;
        }
        if inside {
            block.push_str(line);
            block.push('\n');
            if line == "}" {
                break;
            }
        }
    }
    block
}

/// Known inclusive address ranges as our set's elements: each range that is exactly one
/// prefix, of `family`; any other is counted as odd, as a reading from the kernel counts it.
fn elements_of(
    known: &[(std::net::IpAddr, std::net::IpAddr)],
    family: Family,
) -> netlink::Elements {
    use std::net::IpAddr;
    let mut elements = netlink::Elements::default();
    for &(first, last) in known {
        let prefixes: Vec<IpNet> = match (first, last) {
            (IpAddr::V4(first), IpAddr::V4(last)) if family == Family::V4 => {
                ipnet::Ipv4Subnets::new(first, last, 0)
                    .map(IpNet::V4)
                    .collect()
            }
            (IpAddr::V6(first), IpAddr::V6(last)) if family == Family::V6 => {
                ipnet::Ipv6Subnets::new(first, last, 0)
                    .map(IpNet::V6)
                    .collect()
            }
            _ => Vec::new(),
        };
        match prefixes.as_slice() {
            [only] => elements.networks.push(*only),
            _ => elements.odd += 1,
        }
    }
    elements
}

/// A reading of our parts, held by one backend instance (the core keeps one instance from
/// observe to apply): the network namespace it was taken in (the inode of
/// `/proc/thread-self/ns/net`, with the thread: each namespace counts its own generations, and
/// the tests' threads each enter their own), the ruleset generation it is exact at, and what
/// was read. `handles_known` is false for a reading predicted from our own transaction (see
/// [`NftablesBackend::apply`]): rules we inserted have handles nobody has read yet, so such a
/// reading may verify an apply but never plan one.
#[derive(Debug, Clone)]
struct Reading {
    namespace: (std::thread::ThreadId, u64),
    generation: u32,
    live: Live,
    handles_known: bool,
}

use netlink::namespace_id;

/// How many times a reading is repeated while other writers keep committing transactions.
const READ_ATTEMPTS: usize = 10;

/// Keeps an nftables chain open to a set of ranges.
#[derive(Debug, Clone)]
pub struct NftablesBackend {
    options: NftablesOptions,
    policy: Policy,
    owner: Option<String>,
    last_read: std::sync::Arc<std::sync::Mutex<Option<Reading>>>,
}

impl NftablesBackend {
    /// A backend writing `policy` into the table and chain of `options`.
    pub fn new(options: NftablesOptions, policy: Policy) -> NftablesBackend {
        NftablesBackend {
            options,
            policy,
            owner: None,
            last_read: std::sync::Arc::default(),
        }
    }

    /// The same, marking what it writes as owned by `owner` (a state directory's id).
    pub fn owned_by(mut self, owner: Option<String>) -> NftablesBackend {
        self.owner = owner;
        self
    }

    fn comment(&self, base: &str) -> String {
        cf_allowlist_backend::owned_comment(base, self.owner.as_deref())
    }

    fn nft(&self) -> Result<PathBuf, NftablesError> {
        self.options.check_names().map_err(NftablesError::BadName)?;
        Ok(tool::locate("nft")?)
    }

    /// Reads our parts: the structure from `nft -t -j list ruleset` (terse: no set elements,
    /// so it costs a few milliseconds however large any set is; rendered in-process from
    /// netlink dumps by [`netlink::terse_listing`] when the ruleset holds only what that
    /// renders exactly, nft run otherwise) and the elements of our own two sets from the kernel
    /// ([`netlink`]). nft must be installed (the error names its package) even when it is not
    /// run, as before: a later write may need it. Returns the generation the reading is exact at, when
    /// one is known.
    ///
    /// The ruleset's generation id is read before and after: if no transaction committed in
    /// between, the reading is one consistent snapshot, as a single `nft list ruleset` was, and
    /// this instance keeps it for as long as the generation stays (so the apply after an
    /// observe lists nothing again). On a busy host (fail2ban, CrowdSec: hundreds of foreign
    /// transactions a second) the generation moves during almost every reading; then two
    /// readings in a row that agree on every part of ours are taken as consistent (another
    /// writer's change in between did not touch them), without a generation.
    fn read(&self, need_handles: bool) -> Result<(Live, Option<u32>), NftablesError> {
        let nft = self.nft()?;
        let mut previous: Option<Basis> = None;
        for _ in 0..READ_ATTEMPTS {
            let before = netlink::generation()?;
            if let Some(live) = self.remembered(before, need_handles) {
                return Ok((live, Some(before)));
            }
            // Over netlink when the ruleset holds only what that reader renders exactly as
            // nft would (at this same generation); nft's own listing otherwise.
            let json = match netlink::terse_listing() {
                Some((generation, text)) if generation == before => text.into_bytes(),
                _ => tool::run(&nft, &["-t", "-j", "list", "ruleset"], None)?,
            };
            let mut live = ruleset::parse(&json, &self.options.table, &self.options.chain)?;
            for family in Family::ALL {
                let name = names::set_name(family);
                if let Some(set) = live.sets.get_mut(name) {
                    let elements = match netlink::known_elements(
                        before,
                        names::FAMILY,
                        &self.options.table,
                        name,
                    ) {
                        // What this process wrote or was told is proven at this generation.
                        Some(known) => elements_of(&known, family),
                        None => netlink::read_set(&self.options.table, name, family)?
                            .unwrap_or_default(),
                    };
                    set.elements = elements.networks;
                    set.odd_elements = elements.odd;
                }
            }
            if netlink::generation()? == before {
                self.remember(before, &live, true);
                self.share_elements(before, &live);
                // The analysis that follows judges from this same listing (one reading).
                cf_allowlist_netfilter::know_terse_listing(before, &String::from_utf8_lossy(&json));
                return Ok((live, Some(before)));
            }
            let fingerprint = everything_of_ours(&live);
            if previous.as_ref() == Some(&fingerprint) {
                return Ok((live, None));
            }
            previous = Some(fingerprint);
        }
        Err(netlink::NetlinkError::Interrupted("the ruleset".to_owned()).into())
    }

    /// What this instance last read of its table and chain, if the ruleset's generation is
    /// still the one it was read at: no transaction has committed since, so the firewall is
    /// exactly as read (the generation is read before the listing, so a change during it shows
    /// up as a newer generation).
    fn remembered(&self, generation: u32, need_handles: bool) -> Option<Live> {
        let namespace = namespace_id()?;
        let cache = self.last_read.lock().ok()?;
        let reading = cache.as_ref()?;
        (reading.namespace == namespace
            && reading.generation == generation
            && (reading.handles_known || !need_handles))
            .then(|| reading.live.clone())
    }

    fn remember(&self, generation: u32, live: &Live, handles_known: bool) {
        if let (Some(namespace), Ok(mut cache)) = (namespace_id(), self.last_read.lock()) {
            *cache = Some(Reading {
                namespace,
                generation,
                live: live.clone(),
                handles_known,
            });
        }
    }

    /// Tells the shadowing analysis in this process what our sets hold at `generation`, so
    /// that it does not dump 100,000 elements from the kernel again (O(n²) there). Only sets
    /// read whole and of the right type: any other is left for the analysis to read.
    fn share_elements(&self, generation: u32, live: &Live) {
        for family in Family::ALL {
            let name = names::set_name(family);
            if let Some(set) = live.sets.get(name).filter(|set| set_is_sound(family, set)) {
                let ranges = set
                    .elements
                    .iter()
                    .map(|net| (net.network(), net.broadcast()))
                    .collect();
                netlink::know_elements(
                    generation,
                    names::FAMILY,
                    &self.options.table,
                    name,
                    ranges,
                );
            }
        }
    }

    /// What `live` becomes once `change`'s batch (with the strays removed) has committed: the
    /// reading the kernel would give, except the handles of rules the batch inserted.
    fn predicted(&self, live: &Live, change: &Change) -> (Live, bool) {
        let mut after = live.clone();
        let rewrite_rules = self.rules_need_rewrite(live);
        after.table_exists = true;
        if !live.chain_exists {
            after.chain_exists = true;
            after.chain_is_input_base = true;
        }
        for family in Family::ALL {
            after.sets.insert(
                names::set_name(family).to_owned(),
                ruleset::LiveSet {
                    element_type: names::element_type(family).to_owned(),
                    interval: true,
                    elements: change.target.family(family).copied().collect(),
                    odd_elements: 0,
                },
            );
        }
        if rewrite_rules {
            after.rules = self
                .wanted_rules()
                .into_iter()
                .map(|shape| ruleset::LiveRule { handle: 0, shape })
                .collect();
        }
        after.strays = ruleset::Strays::default();
        (after, !rewrite_rules)
    }

    /// The proof instead of a read-back: if the generation moved from the reading's by
    /// exactly our one transaction, the ruleset is what we read plus what we wrote, and the
    /// observation that verifies this apply lists nothing. Anything else (another writer
    /// committed in between, or the generation is unknown) leaves it to a real reading.
    fn prove(&self, live: &Live, change: &Change, generation: Option<u32>) {
        self.prove_with(|| self.predicted(live, change), generation);
    }

    /// [`NftablesBackend::prove`] with the prediction made by `predicted` (perhaps made
    /// already, while the batch ran).
    fn prove_with(&self, predicted: impl FnOnce() -> (Live, bool), generation: Option<u32>) {
        if let (Some(generation), Ok(now)) = (generation, netlink::generation())
            && now == generation.wrapping_add(1)
        {
            let (after, handles_known) = predicted();
            self.remember(now, &after, handles_known);
            // The shadowing analysis that follows a write need not read our sets back either.
            self.share_elements(now, &after);
        }
    }

    /// The element changes that bring `live` to `change.target`, when that is all there is to
    /// write: table, chain, both sets (sound) and our rules in place, nothing of ours
    /// elsewhere, and every changed prefix one that has a start and an end element. Computed
    /// from what the kernel holds (the reading), which the plan's basis matched.
    fn element_edits(&self, live: &Live, change: &Change) -> Option<Vec<netlink::SetEdit>> {
        if !live.table_exists
            || !live.chain_exists
            || !live.strays.is_empty()
            || self.rules_need_rewrite(live)
        {
            return None;
        }
        let mut edits = Vec::new();
        for family in Family::ALL {
            let name = names::set_name(family);
            let set = live
                .sets
                .get(name)
                .filter(|set| set_is_sound(family, set))?;
            let held: std::collections::BTreeSet<&IpNet> = set.elements.iter().collect();
            let wanted: std::collections::BTreeSet<&IpNet> = change.target.family(family).collect();
            let remove: Vec<IpNet> = held.difference(&wanted).map(|net| **net).collect();
            let add: Vec<IpNet> = wanted.difference(&held).map(|net| **net).collect();
            if !remove.iter().chain(&add).all(netlink::writable) {
                return None;
            }
            if !remove.is_empty() || !add.is_empty() {
                edits.push(netlink::SetEdit {
                    table: self.options.table.clone(),
                    set: name.to_owned(),
                    remove,
                    add,
                });
            }
        }
        (!edits.is_empty()).then_some(edits)
    }

    /// Everything a first apply writes, as one netlink creation: when nothing of ours exists
    /// anywhere (no sets, no rules, no strays; the table and the chain may be the host's, as
    /// Debian's `inet filter input`), and restrict's drop has no admin's allow to follow, so
    /// the batch would be exactly `add table` and `add chain` where they are missing, both
    /// `add set` with their elements and the `insert rule`s; and [`netlink::creatable`] says
    /// the kernel gets from it what it would get from nft.
    fn creation(&self, live: &Live, change: &Change) -> Option<netlink::Creation> {
        let anchored_drop = self
            .wanted_rules()
            .iter()
            .any(|rule| rule.verdict.as_deref() == Some("drop"))
            && self.drop_anchor(live).is_some();
        if !live.sets.is_empty()
            || !live.rules.is_empty()
            || !live.strays.is_empty()
            || (!live.table_exists && live.chain_exists)
            || anchored_drop
        {
            return None;
        }
        #[cfg(feature = "harness")]
        if harness::creating_with_nft() {
            return None;
        }
        let comment = self.comment(names::OWNER_TAG);
        let creation = netlink::Creation {
            table: self.options.table.clone(),
            table_comment: (!live.table_exists).then(|| comment.clone()),
            chain: self.options.chain.clone(),
            chain_comment: (!live.chain_exists).then_some(comment),
            sets: Family::ALL
                .iter()
                .map(|family| netlink::NewSet {
                    name: names::set_name(*family).to_owned(),
                    family: *family,
                    elements: change.target.family(*family).copied().collect(),
                })
                .collect(),
            // `insert` puts each first: the batch inserts in reverse to end in order.
            rules: self
                .wanted_rules()
                .iter()
                .rev()
                .map(|rule| netlink::NewRule {
                    source_set: rule.source_set.as_ref().and_then(|set| {
                        Family::ALL
                            .into_iter()
                            .find(|family| names::set_name(*family) == set)
                            .map(|family| (family, set.clone()))
                    }),
                    not_loopback: rule.not_loopback,
                    ports: rule.ports.clone(),
                    verdict: match rule.verdict.as_deref() {
                        Some("drop") => netlink::Verdict::Drop,
                        _ => netlink::Verdict::Accept,
                    },
                    comment: rule.comment.clone(),
                })
                .collect(),
        };
        let shapes_match = self.wanted_rules().iter().all(|rule| {
            rule.source_set.is_some() == rule.source_protocol.is_some()
                && matches!(rule.verdict.as_deref(), Some("accept" | "drop"))
                && !rule.unrecognised
        });
        (shapes_match && netlink::creatable(&creation)).then_some(creation)
    }

    /// The proof after a creation: the reading predicted from it, with the handles the kernel
    /// echoed for our rules (the chain holds nothing else, so they sit at its top, in order).
    fn prove_creation(&self, live: &Live, change: &Change, generation: u32, handles: Vec<u64>) {
        self.prove_with(
            || {
                let (mut after, _) = self.predicted(live, change);
                // The creation's rules were inserted last first: their handles come reversed.
                for (rule, handle) in after.rules.iter_mut().zip(handles.iter().rev()) {
                    rule.handle = *handle;
                }
                after.our_positions = (0..after.rules.len()).collect();
                let handles_known = handles.len() == after.rules.len();
                (after, handles_known)
            },
            Some(generation),
        );
    }

    /// The terse text listing (`nft -t list ruleset`: comments included, set elements left
    /// out) of each of `tables` in the `inet` family. nft 1.0.6 leaves table and chain comments
    /// out of its JSON, and lists a single table only after fetching every set element of the
    /// ruleset (seconds at 100,000), so one terse listing of the ruleset is split instead.
    fn table_listings(&self, tables: &[String]) -> Result<Vec<(String, String)>, NftablesError> {
        if tables.is_empty() {
            return Ok(Vec::new());
        }
        let nft = self.nft()?;
        let text = tool::run(&nft, &["-t", "list", "ruleset"], None)?;
        let text = String::from_utf8_lossy(&text);
        Ok(tables
            .iter()
            .map(|table| (table.clone(), table_block(&text, table)))
            .collect())
    }

    /// The text listing of every table holding strays (other than ours).
    fn stray_listings(
        &self,
        strays: &ruleset::Strays,
    ) -> Result<Vec<(String, String)>, NftablesError> {
        let tables: Vec<String> = strays
            .tables()
            .into_iter()
            .filter(|table| *table != self.options.table)
            .collect();
        self.table_listings(&tables)
    }

    fn run_batch(&self, batch: &str) -> Result<(), NftablesError> {
        let nft = self.nft()?;
        tool::run(&nft, &["-f", "-"], Some(batch.as_bytes()))?;
        Ok(())
    }

    /// The rules we want, in chain order.
    fn wanted_rules(&self) -> Vec<RuleShape> {
        let ports = self.policy.ports.clone();
        let mut rules = vec![
            accept_shape(
                Family::V4,
                &ports,
                self.comment(names::accept_comment(Family::V4)),
            ),
            accept_shape(
                Family::V6,
                &ports,
                self.comment(names::accept_comment(Family::V6)),
            ),
        ];
        if self.policy.restrict {
            rules.push(RuleShape {
                comment: self.comment(names::RESTRICT_COMMENT),
                source_set: None,
                source_protocol: None,
                ports,
                not_loopback: true,
                verdict: Some("drop".to_owned()),
                unrecognised: false,
            });
        }
        rules
    }

    /// The rules of somebody else's that restrict's drop is placed among, with their roles
    /// (see [`cf_allowlist_backend::restrict`]): those after our last accept, or all of them
    /// when `all` (a rewrite puts our accepts first in the chain).
    fn rules_after_ours<'a>(&self, live: &'a Live, all: bool) -> Vec<(&'a ForeignRule, Role)> {
        let last_accept = live
            .rules
            .iter()
            .zip(&live.our_positions)
            .filter(|(rule, _)| rule.shape.verdict.as_deref() == Some("accept"))
            .map(|(_, position)| *position)
            .max();
        live.foreign_rules
            .iter()
            .filter(|rule| all || last_accept.is_none_or(|last| rule.position > last))
            .map(|rule| {
                let role = if rule.tcp {
                    Role::of_accept(
                        rule.accepts,
                        rule.specific_source,
                        rule.ports.as_deref(),
                        &self.policy.ports,
                    )
                } else {
                    Role::Other
                };
                (rule, role)
            })
            .collect()
    }

    /// Whether restrict's drop (when wanted and present) sits after the admin's allows of a
    /// managed port and before any rule opening one to everyone.
    fn drop_in_place(&self, live: &Live) -> bool {
        let drop_at = live
            .rules
            .iter()
            .zip(&live.our_positions)
            .find(|(rule, _)| rule.shape.verdict.as_deref() == Some("drop"))
            .map(|(_, position)| *position);
        let Some(drop_at) = drop_at.filter(|_| self.policy.restrict) else {
            return true;
        };
        let after = self.rules_after_ours(live, false);
        let roles: Vec<Role> = after.iter().map(|(_, role)| *role).collect();
        let before_drop = after
            .iter()
            .filter(|(rule, _)| rule.position < drop_at)
            .count();
        restrict::drop_in_place(&roles, before_drop)
    }

    /// The handle of the admin's rule restrict's drop must follow after a rewrite, if any.
    fn drop_anchor(&self, live: &Live) -> Option<u64> {
        let after = self.rules_after_ours(live, true);
        let roles: Vec<Role> = after.iter().map(|(_, role)| *role).collect();
        restrict::place_drop(&roles)
            .after
            .map(|at| after[at].0.handle)
    }

    /// Warnings for the admin's allows restrict's drop cannot keep.
    fn cut_allows(&self, live: &Live) -> Vec<String> {
        if !self.policy.restrict {
            return Vec::new();
        }
        let after = self.rules_after_ours(live, true);
        let roles: Vec<Role> = after.iter().map(|(_, role)| *role).collect();
        let placement = restrict::place_drop(&roles);
        let Some(open) = placement.before else {
            return Vec::new();
        };
        let chain = format!("inet {} {}", self.options.table, self.options.chain);
        placement
            .cut
            .iter()
            .map(|at| {
                restrict::cut_warning(
                    LABEL,
                    &format!("rule {} in {chain}", after[*at].0.name),
                    &format!("rule {}", after[open].0.name),
                )
            })
            .collect()
    }

    /// What is structurally wrong with our part of the ruleset, as repair phrases.
    fn repairs(&self, live: &Live) -> Vec<String> {
        let target = format!("inet {} {}", self.options.table, self.options.chain);
        let mut repairs = Vec::new();
        if !live.table_exists {
            repairs.push(format!("create table inet {}", self.options.table));
        }
        if !live.chain_exists {
            repairs.push(format!("create chain {target} (policy accept)"));
        }
        for family in Family::ALL {
            let name = names::set_name(family);
            match live.sets.get(name) {
                None => repairs.push(format!("create set {name}")),
                Some(set) if !set_is_sound(family, set) => {
                    repairs.push(format!("re-create set {name} (wrong type or elements)"))
                }
                Some(_) => {}
            }
        }
        let wanted = self.wanted_rules();
        let have: Vec<&RuleShape> = live.rules.iter().map(|rule| &rule.shape).collect();
        if have.iter().copied().ne(wanted.iter()) {
            for rule in &wanted {
                match have
                    .iter()
                    .filter(|shape| shape.comment == rule.comment)
                    .count()
                {
                    0 => repairs.push(format!("insert rule {:?} in {target}", rule.comment)),
                    1 => {}
                    n => repairs.push(format!(
                        "remove {} duplicate {:?} rules",
                        n - 1,
                        rule.comment
                    )),
                }
            }
            for shape in &have {
                if !wanted.iter().any(|rule| rule.comment == shape.comment) {
                    repairs.push(format!("remove rule {:?}", shape.comment));
                } else if !wanted.contains(shape) {
                    let ports = |ports: &[u16]| {
                        ports
                            .iter()
                            .map(u16::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    repairs.push(
                        match wanted
                            .iter()
                            .find(|rule| rule.comment == shape.comment && rule.ports != shape.ports)
                        {
                            Some(rule) => format!(
                                "rewrite rule {:?} from ports {} to {}",
                                shape.comment,
                                ports(&shape.ports),
                                ports(&rule.ports)
                            ),
                            None => format!("rewrite altered rule {:?}", shape.comment),
                        },
                    );
                }
            }
            if repairs.is_empty() {
                repairs.push(format!("restore the order of our rules in {target}"));
            }
        } else if !self.drop_in_place(live) {
            repairs.push(format!(
                "move the restrict drop in {target} after the admin's own allows of the managed \
                 ports (restrict keeps them working)"
            ));
        }
        repairs
    }

    fn rules_need_rewrite(&self, live: &Live) -> bool {
        let have = live.rules.iter().map(|rule| &rule.shape);
        have.ne(self.wanted_rules().iter())
            || !self.drop_in_place(live)
            || Family::ALL.iter().any(|family| {
                live.sets
                    .get(names::set_name(*family))
                    .is_some_and(|set| !set_is_sound(*family, set))
            })
    }

    /// The batch that brings `live` to `change.target`.
    fn batch(&self, live: &Live, change: &Change) -> String {
        let table = &self.options.table;
        let chain = &self.options.chain;
        let mut batch = String::new();
        if !live.table_exists {
            let _ = writeln!(
                batch,
                "add table inet {table} {{ comment \"{}\"; }}",
                self.comment(names::OWNER_TAG)
            );
        }
        if !live.chain_exists {
            // No policy here: for a new chain nft's default is accept, and naming one would
            // silently flip the policy of a chain somebody created in the meantime.
            let _ = writeln!(
                batch,
                "add chain inet {table} {chain} {{ type filter hook input priority filter; comment \"{}\"; }}",
                self.comment(names::OWNER_TAG)
            );
        }
        let rewrite_rules = self.rules_need_rewrite(live);
        if rewrite_rules {
            for rule in &live.rules {
                let _ = writeln!(
                    batch,
                    "delete rule inet {table} {chain} handle {}",
                    rule.handle
                );
            }
        }
        for family in Family::ALL {
            let name = names::set_name(family);
            let existing = live.sets.get(name);
            let sound = existing.is_some_and(|set| set_is_sound(family, set));
            if existing.is_some() && !sound {
                let _ = writeln!(batch, "delete set inet {table} {name}");
            }
            if sound && change.remove.family(family).count() > REFILL_ABOVE_REMOVALS {
                // nft deletes interval elements slowly (about 4 ms each in a set of 10,000,
                // measured), while refilling 10,000 takes about 70 ms. Flush and refill happen
                // in this one transaction: packets see the old set or the new, never an empty one.
                let _ = writeln!(batch, "flush set inet {table} {name}");
                push_elements(&mut batch, "add", table, name, change.target.family(family));
            } else if sound {
                push_elements(
                    &mut batch,
                    "delete",
                    table,
                    name,
                    change.remove.family(family),
                );
                push_elements(&mut batch, "add", table, name, change.add.family(family));
            } else {
                // The elements inside the new set's declaration: nft 1.0.6 loads 100,000 that
                // way in about two thirds of the time and half the memory of a separate
                // `add element` (measured: 1.7–2.1 s and 82 MiB against 2.7–2.9 s and 160 MiB).
                let elements: Vec<String> = change
                    .target
                    .family(family)
                    .map(ToString::to_string)
                    .collect();
                let elements = if elements.is_empty() {
                    String::new()
                } else {
                    format!(" elements = {{ {} }};", elements.join(", "))
                };
                let _ = writeln!(
                    batch,
                    "add set inet {table} {name} {{ type {}; flags interval;{elements} }}",
                    names::element_type(family)
                );
            }
        }
        if rewrite_rules {
            // `insert` puts a rule first in the chain, so insert in reverse to end in order.
            // restrict's drop follows the admin's last allow of a managed port instead, when
            // there is one to keep, named by its handle.
            let anchor = self.drop_anchor(live);
            for rule in self.wanted_rules().iter().rev() {
                match anchor {
                    Some(handle) if rule.verdict.as_deref() == Some("drop") => {
                        let _ = writeln!(
                            batch,
                            "add rule inet {table} {chain} position {handle} {}",
                            render_rule(rule)
                        );
                    }
                    _ => {
                        let _ = writeln!(
                            batch,
                            "insert rule inet {table} {chain} {}",
                            render_rule(rule)
                        );
                    }
                }
            }
        }
        batch
    }
}

fn accept_shape(family: Family, ports: &[u16], comment: String) -> RuleShape {
    RuleShape {
        comment,
        source_set: Some(names::set_name(family).to_owned()),
        source_protocol: Some(names::protocol(family).to_owned()),
        ports: ports.to_vec(),
        not_loopback: false,
        verdict: Some("accept".to_owned()),
        unrecognised: false,
    }
}

fn render_rule(rule: &RuleShape) -> String {
    let mut text = String::new();
    if let (Some(protocol), Some(set)) = (&rule.source_protocol, &rule.source_set) {
        let _ = write!(text, "{protocol} saddr @{set} ");
    }
    if rule.not_loopback {
        text.push_str("iifname != \"lo\" ");
    }
    let ports: Vec<String> = rule.ports.iter().map(u16::to_string).collect();
    let _ = write!(
        text,
        "tcp dport {{ {} }} {} comment \"{}\"",
        ports.join(", "),
        rule.verdict.as_deref().unwrap_or("accept"),
        rule.comment
    );
    text
}

fn set_is_sound(family: Family, set: &ruleset::LiveSet) -> bool {
    set.element_type == names::element_type(family) && set.interval && set.odd_elements == 0
}

fn push_elements<'a>(
    batch: &mut String,
    verb: &str,
    table: &str,
    set: &str,
    elements: impl Iterator<Item = &'a IpNet>,
) {
    let elements: Vec<String> = elements.map(ToString::to_string).collect();
    if !elements.is_empty() {
        let _ = writeln!(
            batch,
            "{verb} element inet {table} {set} {{ {} }}",
            elements.join(", ")
        );
    }
}

impl Backend for NftablesBackend {
    fn label(&self) -> String {
        LABEL.to_owned()
    }

    fn observe(&self) -> Result<Observed, BackendError> {
        let (live, _) = self
            .read(false)
            .map_err(|error| error.at("read the ruleset"))?;
        // Collected in one go (each set is in order already), not inserted one by one.
        let ranges: Ranges = Family::ALL
            .into_iter()
            .filter_map(|family| {
                let set = live.sets.get(names::set_name(family))?;
                Some(
                    set.elements
                        .iter()
                        .copied()
                        .filter(move |net| Family::of(net) == family),
                )
            })
            .flatten()
            .collect();
        let mut warnings = Vec::new();
        if live.chain_exists && !live.chain_is_input_base && !live.chain_is_jumped_to {
            warnings.push(format!(
                "chain inet {} {} is not attached to the input hook and no rule of its table jumps to it: its rules never act",
                self.options.table, self.options.chain
            ));
        }
        // Whether another chain's drop cancels our accept is the shadowing analysis's question
        // (cf-allowlist-netfilter), answered for every table and both iptables variants.
        let owners = live
            .rules
            .iter()
            .filter_map(|rule| cf_allowlist_backend::owner_of(&rule.shape.comment))
            .map(str::to_owned)
            .collect();
        warnings.extend(self.cut_allows(&live));
        let mut repairs = self.repairs(&live);
        repairs.extend(stray_repairs(&live.strays));
        Ok(Observed {
            ranges,
            repairs,
            warnings,
            basis: basis(&live),
            owners,
        })
    }

    fn apply(&self, change: &Change) -> Result<(), BackendError> {
        if change.is_empty() {
            return Ok(());
        }
        // Element changes go to the kernel over netlink at most twice: a refusal (another
        // writer committed since the reading) is followed by a fresh reading and one more try,
        // then by nft's batch as before (it names elements by value and rules by handle, and
        // is made from that fresh reading).
        let mut netlink_tries = 2;
        loop {
            let (live, generation) = self
                .read(true)
                .map_err(|error| error.at("read the ruleset"))?;
            if basis(&live) != change.basis {
                return Err(BackendError::stale(
                    LABEL,
                    format!(
                        "our sets or rules in inet {} {} changed since they were observed",
                        self.options.table, self.options.chain
                    ),
                ));
            }
            // Generation 0 would tell the kernel not to check (it never numbers a ruleset 0).
            let generation_to_check = generation.filter(|number| *number != 0 && netlink_tries > 0);
            // A first apply (nothing of ours anywhere, no table yet) creates everything in one
            // netlink transaction: what nft would write for the same batch, without starting it.
            if let Some(generation) = generation_to_check
                && let Some(creation) = self.creation(&live, change)
            {
                netlink_tries -= 1;
                #[cfg(feature = "harness")]
                harness::before_element_write();
                match netlink::create(generation, &creation) {
                    Ok(handles) => {
                        self.prove_creation(&live, change, generation, handles);
                        return Ok(());
                    }
                    Err(netlink::NetlinkError::GenerationMoved) => continue,
                    Err(error) => {
                        return Err(NftablesError::from(error).at("apply the change"));
                    }
                }
            }
            if let Some(generation) = generation_to_check
                && let Some(edits) = self.element_edits(&live, change)
            {
                netlink_tries -= 1;
                #[cfg(feature = "harness")]
                harness::before_element_write();
                match netlink::edit_sets(generation, &edits) {
                    Ok(()) => {
                        self.prove(&live, change, Some(generation));
                        return Ok(());
                    }
                    Err(netlink::NetlinkError::GenerationMoved) => continue,
                    Err(error) => {
                        return Err(NftablesError::from(error).at("apply the change"));
                    }
                }
            }
            // The batch names our rules by handle and our set elements by value, never a
            // position: rules somebody else added since the observation are not touched. Our
            // parts left in another table or chain go last, in the same transaction, once the
            // new ones are in.
            let mut batch = self.batch(&live, change);
            if !live.strays.is_empty() {
                let listings = self
                    .stray_listings(&live.strays)
                    .map_err(|error| error.at("read the ruleset"))?;
                batch.push_str(&stray_removals(&live.strays, &listings, &mut Vec::new()));
            }
            // nft loads a long batch on one core for most of a second: the reading the
            // write leaves is predicted on another meanwhile.
            let (ran, prediction) = std::thread::scope(|scope| {
                let prediction = scope.spawn(|| self.predicted(&live, change));
                let ran = self.run_batch(&batch);
                (ran, prediction.join().expect("predicting the reading"))
            });
            ran.map_err(|error| error.at("apply the change"))?;
            self.prove_with(|| prediction, generation);
            return Ok(());
        }
    }

    fn purge(&self) -> Result<Vec<String>, BackendError> {
        let (live, _) = self
            .read(true)
            .map_err(|error| error.at("read the ruleset"))?;
        let table = &self.options.table;
        let chain = &self.options.chain;
        let mut batch = String::new();
        let mut removed = Vec::new();
        for rule in &live.rules {
            let _ = writeln!(
                batch,
                "delete rule inet {table} {chain} handle {}",
                rule.handle
            );
            removed.push(format!(
                "rule {:?} from inet {table} {chain}",
                rule.shape.comment
            ));
        }
        // Our rules elsewhere go first: they may use the sets of this table.
        let listings = self
            .stray_listings(&live.strays)
            .map_err(|error| error.at("read the ruleset"))?;
        batch.push_str(&stray_removals(&live.strays, &listings, &mut removed));
        for name in live.sets.keys() {
            let _ = writeln!(batch, "delete set inet {table} {name}");
            removed.push(format!("set inet {table} {name}"));
        }
        if live.table_exists {
            // nft 1.0.6 leaves comments out of its JSON, so ownership of the table and chain
            // is read from the text listing.
            let listing = self
                .table_listings(std::slice::from_ref(table))
                .map_err(|error| error.at("read the ruleset"))?;
            let text = listing.first().map(|(_, text)| text.as_str()).unwrap_or("");
            let (table_ours, chain_ours) = names::created_by_us(text, chain);
            let chain_empty = live.foreign_rules_in_chain == 0;
            if table_ours && chain_empty && live.foreign_objects_in_table == 0 {
                let _ = writeln!(batch, "delete table inet {table}");
                removed.push(format!("table inet {table}"));
            } else if chain_ours && chain_empty && live.chain_exists {
                let _ = writeln!(batch, "delete chain inet {table} {chain}");
                removed.push(format!("chain inet {table} {chain}"));
            }
        }
        if batch.is_empty() {
            return Ok(removed);
        }
        self.run_batch(&batch).map_err(|error| error.at("purge"))?;
        Ok(removed)
    }
}

/// The conformance harness: a fresh network namespace per harness, entered by the calling
/// thread, holding a Debian-like ruleset whose input policy is drop.
#[cfg(feature = "harness")]
pub mod harness {
    use super::*;
    use cf_allowlist_backend::conformance::Harness;

    thread_local! {
        static BEFORE_ELEMENT_WRITE: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
            std::cell::RefCell::new(None);
    }

    /// Runs `hook` in the calling thread each time an apply of this thread is about to send
    /// element changes or a first apply's creation over netlink, after its reading: a test commits a foreign transaction
    /// there to prove that the write is refused rather than made on a stale reading.
    pub fn on_element_write(hook: impl FnMut() + 'static) {
        BEFORE_ELEMENT_WRITE.with(|slot| *slot.borrow_mut() = Some(Box::new(hook)));
    }

    thread_local! {
        static CREATE_WITH_NFT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Makes this thread's first applies write their batch with `nft -f` as before the
    /// netlink creation (when `on`), so that a test can compare what either makes.
    pub fn create_with_nft(on: bool) {
        CREATE_WITH_NFT.with(|flag| flag.set(on));
    }

    pub(crate) fn creating_with_nft() -> bool {
        CREATE_WITH_NFT.with(std::cell::Cell::get)
    }

    /// The rules (comment, handle) of the reading `backend` holds as proven, in chain order,
    /// when it knows their handles: what its next apply or purge would name them by.
    pub fn proven_rules(backend: &NftablesBackend) -> Option<Vec<(String, u64)>> {
        let cache = backend.last_read.lock().ok()?;
        let reading = cache.as_ref().filter(|reading| reading.handles_known)?;
        Some(
            reading
                .live
                .rules
                .iter()
                .map(|rule| (rule.shape.comment.clone(), rule.handle))
                .collect(),
        )
    }

    pub(crate) fn before_element_write() {
        BEFORE_ELEMENT_WRITE.with(|slot| {
            if let Some(hook) = slot.borrow_mut().as_mut() {
                hook();
            }
        });
    }

    /// A ruleset like Debian's stock one, with a drop policy.
    pub const BASE_RULESET: &str = "table inet filter {
  chain input {
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iif lo accept
  }
}
";

    /// Runs the backend against the calling thread's network namespace. The thread must have
    /// called `unshare(CLONE_NEWNET)` first (the integration tests do).
    #[derive(Debug)]
    pub struct NftablesHarness {
        /// Where the backend writes.
        pub options: NftablesOptions,
    }

    impl NftablesHarness {
        /// Loads [`BASE_RULESET`] and returns a harness for `inet filter input`.
        pub fn with_base_ruleset() -> NftablesHarness {
            nft_batch(&format!("flush ruleset\n{BASE_RULESET}"));
            NftablesHarness {
                options: NftablesOptions::default(),
            }
        }

        /// A harness whose ruleset is empty: the backend has to create table and chain.
        pub fn empty() -> NftablesHarness {
            nft_batch("flush ruleset\n");
            NftablesHarness {
                options: NftablesOptions::default(),
            }
        }
    }

    fn nft_batch(batch: &str) {
        let nft = tool::locate("nft").expect("nft is installed");
        tool::run(&nft, &["-f", "-"], Some(batch.as_bytes())).expect("nft batch");
    }

    fn nft_text(args: &[&str]) -> String {
        let nft = tool::locate("nft").expect("nft is installed");
        String::from_utf8(tool::run(&nft, args, None).expect("nft list")).expect("utf-8")
    }

    impl Harness for NftablesHarness {
        fn backend(&self, policy: &Policy) -> Box<dyn Backend> {
            Box::new(NftablesBackend::new(self.options.clone(), policy.clone()))
        }

        fn dump(&self) -> String {
            nft_text(&["-a", "list", "ruleset"])
        }

        fn add_foreign_rule(&self) {
            nft_batch(
                "add table inet filter\nadd chain inet filter input { type filter hook input priority filter; }\n\
                 add rule inet filter input ip saddr 192.0.2.0/24 tcp dport 22 accept comment \"admin ssh\"\n\
                 add table ip other\nadd chain ip other forward { type filter hook forward priority 0; }\n",
            );
        }

        fn foreign_rule_present(&self) -> bool {
            let dump = self.dump();
            dump.matches("comment \"admin ssh\"").count() == 1 && dump.contains("table ip other")
        }

        fn drift_kinds(&self) -> Vec<&'static str> {
            vec![
                "accept rule deleted",
                "rule duplicated",
                "element deleted",
                "element added",
                "set flushed",
                "ruleset flushed and reloaded",
            ]
        }

        fn cause_drift(&self, kind: &str) {
            let handles = || -> Vec<(String, String)> {
                self.dump()
                    .lines()
                    .filter(|line| {
                        line.contains("comment \"cf-allowlist") && line.contains(" dport ")
                    })
                    .filter_map(|line| {
                        let handle = line.rsplit("# handle ").next()?.trim().to_owned();
                        let comment = line
                            .split("comment \"")
                            .nth(1)?
                            .split('"')
                            .next()?
                            .to_owned();
                        Some((comment, handle))
                    })
                    .collect()
            };
            match kind {
                "accept rule deleted" => {
                    let (_, handle) = handles().into_iter().next().expect("a rule of ours");
                    nft_batch(&format!("delete rule inet filter input handle {handle}\n"));
                }
                "rule duplicated" => {
                    nft_batch(
                        "add rule inet filter input ip saddr @cf_allowlist_v4 tcp dport { 80, 443 } accept comment \"cf-allowlist ipv4\"\n",
                    );
                }
                "element deleted" => {
                    nft_batch("delete element inet filter cf_allowlist_v4 { 192.0.2.0/24 }\n");
                }
                "element added" => {
                    nft_batch("add element inet filter cf_allowlist_v6 { 2001:db8:ffff::/48 }\n");
                }
                "set flushed" => {
                    nft_batch("flush set inet filter cf_allowlist_v4\n");
                }
                "ruleset flushed and reloaded" => {
                    let before = nft_text(&["list", "ruleset"]);
                    // What `systemctl reload nftables` does: flush and load the saved file,
                    // which never had our parts.
                    let saved: String = strip_ours(&before);
                    nft_batch(&format!("flush ruleset\n{saved}"));
                }
                other => panic!("unknown drift {other:?}"),
            }
        }

        fn our_verdicts_in_order(&self) -> Vec<Vec<String>> {
            let verdicts = nft_text(&[
                "list",
                "chain",
                "inet",
                &self.options.table,
                &self.options.chain,
            ])
            .lines()
            .filter(|line| line.contains("comment \"cf-allowlist"))
            .filter_map(|line| {
                ["accept", "drop"]
                    .into_iter()
                    .find(|verdict| line.contains(&format!(" {verdict} comment")))
                    .map(str::to_owned)
            })
            .collect();
            vec![verdicts]
        }
    }

    /// The ruleset text without our sets and rules: what an admin's saved file would hold.
    fn strip_ours(ruleset: &str) -> String {
        let mut out = String::new();
        for line in super::outside_our_sets(ruleset) {
            let trimmed = line.trim();
            if trimmed.contains("comment \"cf-allowlist") && trimmed.contains(" dport ") {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ranges_become_elements_as_the_kernel_reading_would() {
        let net = |text: &str| text.parse::<IpNet>().unwrap();
        let range = |first: &str, last: &str| (first.parse().unwrap(), last.parse().unwrap());
        let known = [
            (
                net("198.51.100.0/25").network(),
                net("198.51.100.0/25").broadcast(),
            ),
            // Not one prefix: odd, as written by someone else.
            range("203.0.113.1", "203.0.113.2"),
            // The other family: not an element of this set.
            range("2001:db8::", "2001:db8::ffff"),
        ];
        let elements = elements_of(&known, Family::V4);
        assert_eq!(elements.networks, vec![net("198.51.100.0/25")]);
        assert_eq!(elements.odd, 2);
    }

    #[test]
    fn rules_render_as_nft_reads_them_back() {
        let backend = NftablesBackend::new(
            NftablesOptions::default(),
            Policy {
                ports: vec![80, 443],
                restrict: true,
            },
        );
        let rendered: Vec<String> = backend.wanted_rules().iter().map(render_rule).collect();
        assert_eq!(
            rendered,
            vec![
                "ip saddr @cf_allowlist_v4 tcp dport { 80, 443 } accept comment \"cf-allowlist ipv4\"",
                "ip6 saddr @cf_allowlist_v6 tcp dport { 80, 443 } accept comment \"cf-allowlist ipv6\"",
                "iifname != \"lo\" tcp dport { 80, 443 } drop comment \"cf-allowlist restrict\"",
            ]
        );
    }

    #[test]
    fn names_that_nft_would_misread_are_refused() {
        let backend = NftablesBackend::new(
            NftablesOptions {
                table: "filter; flush ruleset".to_owned(),
                chain: "input".to_owned(),
            },
            Policy {
                ports: vec![80],
                restrict: false,
            },
        );
        assert!(matches!(backend.nft(), Err(NftablesError::BadName(_))));
    }
}
