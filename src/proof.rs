//! The stored generation proof: what lets a no-op sync skip reading the firewall.
//!
//! nf_tables numbers every committed transaction (the ruleset generation); any writer moves
//! it, in this network namespace, until the next boot. After a verified sync whose whole
//! reading and judgement happened at one generation (and whose own write, if any, moved it by
//! exactly that one transaction), the state directory records a [`Proof`]: the boot id, the
//! namespace's inode, the generation, a digest of what was asked (the validated list and
//! everything of the config and state that shapes the firewall) and the verdict (each
//! backend's warnings, effective or blocked with its blockers; the plan's warnings). A later
//! sync whose request digest, boot, namespace and generation all match needs no listing: the
//! firewall is exactly what the recorded run read and judged, so its verdict still holds and
//! is reported again, with the same exit code (a block is never forgotten: exit 5 every run).
//! Any mismatch, or an unreadable proof, takes the full path.
//!
//! What the generation cannot vouch for is never proven: legacy iptables tables (x_tables, no
//! generation; their existence alone disables the proof, see [`Moment::now`]), ipsets (an
//! iptables backend in ipset mode, or a foreign rule matching one), files and cloud APIs
//! (nginx, ufw's rule files, AWS). Those configurations keep the full path on every run.
//!
//! A known gap: the namespace is identified by its nsfs inode, and the kernel reuses the
//! inode number of a destroyed namespace (a restarted container's new one often gets it). A
//! recreated namespace that reaches exactly the recorded generation before the next sync, in
//! the same boot, with the same state directory, would be taken for the recorded one. The
//! namespace's cookie (`SO_NETNS_COOKIE`, never reused within a boot) would close it, but
//! reading it needs a `getsockopt` that rustix does not offer without `unsafe`.
//!
//! `sync --dry-run` uses the proof as a sync does (it writes nothing either way), and `status`
//! when a second digest matches ([`held`]: the last sync's backends holding the current
//! generation; status knows no sources). `doctor` reads and judges the whole firewall itself;
//! only our own sets' elements, which the proof shows are the current generation's, are taken
//! from it instead of the kernel's O(n²) dump ([`BackendSpec::know_proven`]).

use std::os::unix::fs::MetadataExt;

use cf_allowlist_backend::Ranges;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backends::BackendSpec;
use crate::plan::BackendPlan;
use crate::state::{Generation, State, StateDir};

/// The format of `proof.json`.
const FORMAT_VERSION: u32 = 1;

/// Where and when a reading is exact: this boot, this network namespace, this ruleset
/// generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moment {
    /// `/proc/sys/kernel/random/boot_id`: generations restart at boot.
    pub boot_id: String,
    /// The inode of this thread's network namespace: each namespace counts its own.
    pub namespace: u64,
    /// The nf_tables ruleset generation.
    pub generation: u32,
}

impl Moment {
    /// Now, here; `None` when the generation proves nothing here (legacy iptables tables
    /// exist: another kernel API, which no generation counts) or cannot be read.
    pub fn now() -> Option<Moment> {
        if legacy_tables_exist() {
            return None;
        }
        // The boot cannot change while the process runs: read once.
        static BOOT_ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let boot_id = BOOT_ID.get_or_init(|| {
            let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
            Some(text.trim().to_owned())
        });
        let namespace = std::fs::metadata("/proc/thread-self/ns/net").ok()?.ino();
        let generation = cf_allowlist_netfilter::netlink::generation().ok()?;
        Some(Moment {
            boot_id: boot_id.clone()?,
            namespace,
            generation,
        })
    }

    /// The same moment after `transactions` more commits.
    pub fn after(&self, transactions: u32) -> Moment {
        Moment {
            generation: self.generation.wrapping_add(transactions),
            ..self.clone()
        }
    }
}

/// Whether x_tables (legacy iptables) tables exist in this namespace (read from `/proc`, which
/// creates nothing).
fn legacy_tables_exist() -> bool {
    ["ip_tables_names", "ip6_tables_names"].iter().any(|file| {
        std::fs::read_to_string(format!("/proc/thread-self/net/{file}"))
            .is_ok_and(|names| !names.trim().is_empty())
    })
}

/// One backend's verdict, as the recorded run reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendVerdict {
    /// What the backend wanted the user to know.
    pub warnings: Vec<String>,
    /// Whether the listed ranges got through the whole host firewall.
    pub effective: Option<bool>,
    /// What blocked them.
    pub blockers: Vec<String>,
}

/// What a verified sync found, for the no-op that follows it unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// The file format.
    pub version: u32,
    /// When the recorded run's reading was exact.
    pub moment: Moment,
    /// The digest of what it was asked ([`asked`]).
    pub asked: String,
    /// The digest of what it left the backends holding ([`held`]), for `status`.
    pub held: String,
    /// Per configured backend, in order.
    pub backends: Vec<BackendVerdict>,
    /// The plan's own warnings (the analysis's doubts, Docker).
    pub warnings: Vec<String>,
}

impl Proof {
    /// The proof of a run asked `asked` whose reading holds at `moment`, with its plan's verdict.
    pub fn new(
        moment: Moment,
        (asked, held): (String, String),
        plans: &[BackendPlan],
        warnings: &[String],
    ) -> Proof {
        Proof {
            version: FORMAT_VERSION,
            moment,
            asked,
            held,
            backends: plans
                .iter()
                .map(|plan| BackendVerdict {
                    warnings: plan.warnings.clone(),
                    effective: plan.effective,
                    blockers: plan.blockers.clone(),
                })
                .collect(),
            warnings: warnings.to_vec(),
        }
    }

    /// Whether it proves, at `moment`, that `backends` backends hold what `held` digests
    /// (and that the recorded verdict is theirs).
    pub fn holds_held(&self, moment: &Moment, held: &str, backends: usize) -> bool {
        self.version == FORMAT_VERSION
            && self.moment == *moment
            && self.held == held
            && self.backends.len() == backends
    }

    /// Whether it proves a run asked `asked` at `moment`, for `backends` configured.
    pub fn holds(&self, moment: &Moment, asked: &str, backends: usize) -> bool {
        self.version == FORMAT_VERSION
            && self.moment == *moment
            && self.asked == asked
            && self.backends.len() == backends
    }
}

/// The digest of what a sync is asked: this program's version, the validated list, its
/// sources, the backends (their places, options and policy) and what the state directory says
/// that shapes the run (its owner mark, the current generation and its snapshot file's
/// fingerprint, what it wrote, a pin or a purge). Any difference means the recorded verdict
/// may not hold. `ranges` is the validated list's [`ranges_digest`].
pub fn asked(
    ranges: &str,
    sources: &[String],
    backends: &[BackendSpec],
    state: &State,
    snapshot: Option<String>,
) -> String {
    let request = serde_json::json!({
        "snapshot": snapshot,
        "program": env!("CARGO_PKG_VERSION"),
        "ranges": ranges,
        "sources": sources,
        "backends": backends,
        "owner": state.owner,
        "current_generation": state.current_generation,
        "written": state.written,
        "pinned": state.pinned,
        "purged": state.purged,
    });
    sha256_hex(&request)
}

/// The digest of what a verified sync left: these backends holding `target` (the current
/// generation, whose snapshot file has fingerprint `snapshot`) for this state directory. What
/// `status` compares, which knows the last sync's backends but not its sources. `ranges` is
/// `target`'s [`ranges_digest`].
pub fn held(
    ranges: &str,
    backends: &[BackendSpec],
    state: &State,
    snapshot: Option<String>,
) -> String {
    sha256_hex(&serde_json::json!({
        "program": env!("CARGO_PKG_VERSION"),
        "ranges": ranges,
        "backends": backends,
        "owner": state.owner,
        "current_generation": state.current_generation,
        "snapshot": snapshot,
    }))
}

fn sha256_hex(value: &serde_json::Value) -> String {
    sha256_bytes_hex(value.to_string().as_bytes())
}

/// A digest of `ranges` from their bytes (family, address, prefix length), not their text:
/// formatting 100,000 ranges would cost the no-op more than everything else it does. The
/// sha256 of the ranges' [`range_record`]s one after the other.
pub fn ranges_digest<'a>(ranges: impl IntoIterator<Item = &'a ipnet::IpNet>) -> String {
    let mut hasher = Sha256::new();
    for range in ranges {
        let (record, length) = range_record(range);
        hasher.update(&record[..length]);
    }
    hex(hasher.finalize().as_slice())
}

/// One range as bytes: its family (4 or 6), its address, its prefix length; the record and
/// how many of its bytes are used (6 for IPv4, 18 for IPv6). What [`ranges_digest`] hashes and
/// what the list memo stores ([`crate::sources::memo`]).
pub fn range_record(range: &ipnet::IpNet) -> ([u8; 18], usize) {
    let mut record = [0; 18];
    let address_end = match range {
        ipnet::IpNet::V4(net) => {
            record[0] = 4;
            record[1..5].copy_from_slice(&net.addr().octets());
            5
        }
        ipnet::IpNet::V6(net) => {
            record[0] = 6;
            record[1..17].copy_from_slice(&net.addr().octets());
            17
        }
    };
    record[address_end] = range.prefix_len();
    (record, address_end + 1)
}

/// The sha256 of `bytes`, in hex.
pub fn sha256_bytes_hex(bytes: &[u8]) -> String {
    hex(Sha256::digest(bytes).as_slice())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}

/// Whether the generation can vouch for every configured backend's parts of `target`.
pub fn provable(backends: &[BackendSpec], target: &Ranges) -> bool {
    !backends.is_empty() && backends.iter().all(|spec| spec.generation_proves(target))
}

/// The stored proof, if it proves that `backends` hold `generation` exactly as the last
/// verified sync left them: same boot, namespace and ruleset generation, and the same
/// backends, list and state directory ([`held`]).
pub fn holding(
    state_dir: &StateDir,
    state: &State,
    generation: Option<&Generation>,
    backends: &[BackendSpec],
) -> Option<Proof> {
    let generation = generation?;
    if state.pinned.is_some() || !provable(backends, &generation.ranges) {
        return None;
    }
    let stored = state_dir.read_proof()?;
    let snapshot = state_dir.snapshot_fingerprint(generation.generation);
    let held = held(
        &ranges_digest(&generation.ranges),
        backends,
        state,
        snapshot,
    );
    let now = Moment::now()?;
    stored
        .holds_held(&now, &held, backends.len())
        .then_some(stored)
}

/// Where the stored proof holds ([`holding`]): tells each backend that it holds `current`'s
/// ranges at this generation ([`BackendSpec::know_proven`]), so that a reading at this
/// generation need not dump our sets from the kernel again. For the commands that still read
/// and judge the firewall themselves (`doctor`, `rollback`).
pub fn vouch(
    state_dir: &StateDir,
    state: &State,
    current: Option<&Generation>,
    backends: &[BackendSpec],
) {
    if let (Some(stored), Some(current)) = (holding(state_dir, state, current, backends), current) {
        for spec in backends {
            spec.know_proven(stored.moment.generation, &current.ranges);
        }
    }
}
