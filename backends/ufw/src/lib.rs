//! The ufw backend.
//!
//! It manages ufw's own rules, so that `ufw status` shows them and ufw keeps them across reboots
//! and `ufw reload`: one rule per range, `allow proto tcp from RANGE to any port 80,443 comment
//! cf-allowlist`, per family (ufw keeps IPv4 and IPv6 rules in separate lists, each evaluated
//! first match wins). New rules are added with `ufw prepend`, so they come before any deny the
//! admin has for the same ports. With restrict on, `deny proto tcp from 0.0.0.0/0 (::/0) to any
//! port 80,443 comment "cf-allowlist restrict"` follows our allows in each family.
//!
//! Observing never runs ufw: the rules are read from ufw's own files (`user.rules`,
//! `user6.rules`, see [`rules`]) and whether ufw is enabled from `ufw.conf`. So a sync with
//! nothing to change invokes ufw zero times and rewrites no file.
//!
//! Writing goes through ufw's own code, so that ufw writes its files and chains itself (nothing
//! here reproduces its file format): adds first, then the restrict deny, then deletions, each
//! rule named by its spec and never by a rule number (numbers shift when anyone else adds a
//! rule). By default ([`Write::Batch`], see [`batch`]) each of those groups is one process
//! running ufw's Python code under ufw's lock, followed by one `iptables-restore -n` per family,
//! so the live chains go from the old rules to the new in one transaction per family; with
//! [`Write::Calls`] (and as a fallback for a ufw the batch does not support) each rule is one
//! `ufw` call, whose own reload replaces ufw's user chains in one `iptables-restore -n` as the
//! batch does (it flushes only ufw's logging chains first; see [`batch`]). Either
//! way a failed step is reported with the steps already applied, and the next run converges from
//! whatever the files then say. Costs are in BENCHMARKS.md (22 ranges: 0.3 s in batches, 10 s
//! one call each). The restrict deny goes right after a rule named by its spec (our last allow,
//! or the admin's last allow of a managed port, see [`cf_allowlist_backend::restrict`]): the
//! batch finds that rule under ufw's lock; only one call per rule has to pass ufw a number, read
//! from the files just before the call (see `call_args`).

pub mod batch;
pub mod names;
mod registry;
pub mod rules;

use std::path::{Path, PathBuf};

use cf_allowlist_backend::restrict::{self, Role};
use cf_allowlist_backend::tool::{self, ToolError};
use cf_allowlist_backend::{
    Backend, BackendError, Basis, Change, ErrorKind, Family, Observed, Policy, Ranges,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use rules::Tuple;

const LABEL: &str = "ufw";

/// The most ports one ufw rule can name (iptables' multiport limit).
pub const MAX_PORTS: usize = 15;

/// Options of the ufw backend, beyond the shared policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UfwOptions {
    /// The folder holding ufw's `user.rules`, `user6.rules` and `ufw.conf`: the one the ufw
    /// program writes.
    #[serde(default = "default_rules_dir")]
    pub rules_dir: PathBuf,
    /// The ufw program: a name looked up in `PATH` and the sbin folders, or a path.
    #[serde(default = "default_program")]
    pub program: PathBuf,
    /// Whether to enable ufw (`ufw --force enable`) when it is inactive. Off by default: ufw's
    /// default deny can lock an admin out of a host whose own access is not allowed yet.
    #[serde(default)]
    pub enable: bool,
    /// How rules are written: in batches through ufw's own code, or one `ufw` call per rule.
    #[serde(default)]
    pub write: Write,
}

/// How the backend writes ufw's rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Write {
    /// Each group of steps (adds, deletions) in one process running ufw's own Python code under
    /// ufw's lock, then one live load per family (see [`batch`]); falls back to `calls` when the
    /// installed ufw lacks what that needs.
    #[default]
    Batch,
    /// One `ufw` process per rule.
    Calls,
}

impl std::fmt::Display for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Write::Batch => "batch",
            Write::Calls => "calls",
        })
    }
}

fn default_rules_dir() -> PathBuf {
    PathBuf::from(names::DEFAULT_RULES_DIR)
}

fn default_program() -> PathBuf {
    PathBuf::from(names::DEFAULT_PROGRAM)
}

impl Default for UfwOptions {
    fn default() -> UfwOptions {
        UfwOptions {
            rules_dir: default_rules_dir(),
            program: default_program(),
            enable: false,
            write: Write::default(),
        }
    }
}

impl UfwOptions {
    /// Checks the options with the policy they are combined with.
    pub fn check(&self, policy: &Policy) -> Result<(), String> {
        if policy.ports.len() > MAX_PORTS {
            return Err(format!(
                "ufw rules can name at most {MAX_PORTS} ports, {} are configured",
                policy.ports.len()
            ));
        }
        if !self.rules_dir.is_absolute() {
            return Err(format!(
                "rules_dir {} must be an absolute path",
                self.rules_dir.display()
            ));
        }
        Ok(())
    }
}

/// What can go wrong in this backend.
#[derive(Debug, thiserror::Error)]
pub enum UfwError {
    /// A rules file could not be read.
    #[error("could not read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A rules file is not one ufw wrote.
    #[error("could not read {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rules::ParseError,
    },
    /// ufw could not be run, or refused the first step (so nothing was changed).
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// ufw is inactive and the options do not allow enabling it.
    #[error(
        "ufw is inactive, so its rules are not in force, and nothing was changed; enabling it \
         applies its default policy (often deny incoming), which can lock you out: allow your own \
         access, then run `ufw enable`, or set `enable = true` for this backend"
    )]
    Inactive,
    /// The rule a new rule was to follow is no longer in ufw's rules.
    #[error(
        "could not write the {step}: the rule it must follow, {rule}, is gone from ufw's rules \
         (changed since they were read); the next run places it again"
    )]
    AnchorGone {
        /// The step.
        step: String,
        /// The rule it was to follow.
        rule: String,
    },
    /// A step failed after others had been applied.
    #[error(
        "{} of {total} ufw steps were applied before `{failed}` failed (applied: {}); the next \
         run converges from what ufw now holds",
        applied.len(),
        applied.join(", ")
    )]
    Partial {
        /// The steps that were applied, in order.
        applied: Vec<String>,
        /// How many steps the change had.
        total: usize,
        /// The step that failed.
        failed: String,
        /// Why.
        #[source]
        source: ToolError,
    },
}

impl UfwError {
    fn at(self, step: &'static str) -> BackendError {
        match self {
            UfwError::Tool(error) => BackendError::tool(LABEL, step, names::PACKAGE, error),
            UfwError::Partial { ref source, .. } => {
                let kind = source.kind();
                BackendError::new(LABEL, step, kind, self)
            }
            UfwError::Read { ref source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                BackendError::new(LABEL, step, ErrorKind::Permission, self)
            }
            UfwError::Read { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                BackendError {
                    package: Some(names::PACKAGE),
                    ..BackendError::new(LABEL, step, ErrorKind::MissingTool, self)
                }
            }
            other => BackendError::new(LABEL, step, ErrorKind::Rejected, other),
        }
    }
}

/// What an inactive ufw means when this backend may not enable it (`enable = false`).
pub const INACTIVE_WARNING: &str = "ufw is inactive: its rules, ours included, are not in force, \
     and no sync enables it (`enable = false`): allow your own access (ssh), then run `ufw \
     enable`; or set `enable = true` for this backend to let sync enable it";

/// Whether ufw is enabled (what `ufw status` reports as active), read from `ufw.conf` in
/// `rules_dir` without running ufw. For the core's shadowing analysis.
pub fn ufw_active(rules_dir: &Path) -> std::io::Result<bool> {
    let text = std::fs::read_to_string(rules_dir.join(names::CONF_FILE))?;
    Ok(rules::conf_enabled(&text))
}

/// ufw's default incoming policy (`DROP`, `REJECT` or `ACCEPT`) from its defaults file
/// (normally [`names::DEFAULTS_FILE`]); `None` when the file does not set it.
pub fn default_input_policy(defaults_file: &Path) -> std::io::Result<Option<String>> {
    let text = std::fs::read_to_string(defaults_file)?;
    Ok(rules::shell_value(&text, "DEFAULT_INPUT_POLICY").map(str::to_owned))
}

/// The rules of a family's rules file in `rules_dir`, in ufw's order.
pub fn read_rules(rules_dir: &Path, family: Family) -> Result<Vec<Tuple>, UfwError> {
    let path = rules_dir.join(names::rules_file(family));
    let text = std::fs::read_to_string(&path).map_err(|source| UfwError::Read {
        path: path.clone(),
        source,
    })?;
    rules::parse_rules(&text).map_err(|source| UfwError::Parse { path, source })
}

/// Everything of ours, read once from the files.
#[derive(Debug, Clone)]
struct Snapshot {
    active: bool,
    /// Every rule of each family, in order (IPv4, IPv6).
    families: [Vec<Tuple>; 2],
}

impl Snapshot {
    fn read(rules_dir: &Path) -> Result<Snapshot, UfwError> {
        let conf = rules_dir.join(names::CONF_FILE);
        let active = std::fs::read_to_string(&conf)
            .map(|text| rules::conf_enabled(&text))
            .map_err(|source| UfwError::Read { path: conf, source })?;
        Ok(Snapshot {
            active,
            families: [
                read_rules(rules_dir, Family::V4)?,
                read_rules(rules_dir, Family::V6)?,
            ],
        })
    }

    fn family(&self, family: Family) -> &[Tuple] {
        &self.families[family as usize]
    }
}

/// Which of our comments (`cf-allowlist` or `cf-allowlist restrict`) a tuple carries, with or
/// without an owner mark; `None` for any other comment.
fn base_comment(tuple: &Tuple) -> Option<&'static str> {
    let comment = tuple.comment.as_deref()?;
    let base = match cf_allowlist_backend::owner_of(comment) {
        Some(_) => comment.rsplit_once(cf_allowlist_backend::OWNER_MARK)?.0,
        None => comment,
    };
    [names::COMMENT, names::RESTRICT_COMMENT]
        .into_iter()
        .find(|ours| *ours == base)
}

/// Whether a tuple's comment names an owner (`cf-allowlist owner=…`).
fn is_marked(tuple: &Tuple) -> bool {
    tuple
        .comment
        .as_deref()
        .and_then(cf_allowlist_backend::owner_of)
        .is_some()
}

/// A tuple's source as a network (ufw writes a host without its `/32` or `/128`).
fn source_network(tuple: &Tuple) -> Option<IpNet> {
    tuple
        .src
        .parse::<IpNet>()
        .ok()
        .or_else(|| tuple.src.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// What one family's rules should become, and the steps that get them there.
#[derive(Debug, Default)]
struct FamilyPlan {
    /// Ranges our allows cover (any ports): what the firewall holds of ours.
    ranges: Ranges,
    repairs: Vec<String>,
    warnings: Vec<String>,
}

/// One ufw call.
#[derive(Debug, Clone)]
struct Step {
    /// What it does, for reports: `allow 192.0.2.0/24`.
    phrase: String,
    args: Vec<String>,
    /// Where a new rule goes: right after this rule, found by its spec when the step runs
    /// (under ufw's lock, in a batch), never by a number read earlier.
    after: Option<Tuple>,
}

/// Keeps ufw open to a set of ranges.
#[derive(Debug, Clone)]
pub struct UfwBackend {
    options: UfwOptions,
    policy: Policy,
    owner: Option<String>,
    adopt_unmarked: bool,
}

impl UfwBackend {
    /// A backend writing `policy` with `options`.
    pub fn new(options: UfwOptions, policy: Policy) -> UfwBackend {
        UfwBackend {
            options,
            policy,
            owner: None,
            adopt_unmarked: false,
        }
    }

    /// The same, marking what it writes as owned by `owner` (a state directory's id). With an
    /// owner, a rule with our comment but no mark is somebody else's unless
    /// [`UfwBackend::adopting_unmarked`] says otherwise.
    pub fn owned_by(mut self, owner: Option<String>) -> UfwBackend {
        self.owner = owner;
        self
    }

    /// The same, adopting unmarked rules of exactly the shapes we write (the first release
    /// wrote no owner mark): for a state directory whose record says it wrote to this ufw.
    /// Unmarked rules of any other shape are never adopted.
    pub fn adopting_unmarked(mut self, adopt: bool) -> UfwBackend {
        self.adopt_unmarked = adopt;
        self
    }

    fn comment(&self, base: &str) -> String {
        cf_allowlist_backend::owned_comment(base, self.owner.as_deref())
    }

    /// Whether `tuple` is ours to manage: it carries one of our comments marked with an owner
    /// (ours, or another state directory's, which the core's owner guard judges), or carries
    /// it unmarked and either no owner is known or it has exactly a shape we write and
    /// unmarked rules are adopted. A hand-made rule that borrows our comment for anything else
    /// is never ours (issue 18).
    fn is_ours(&self, family: Family, tuple: &Tuple) -> bool {
        match base_comment(tuple) {
            None => false,
            Some(_) if is_marked(tuple) || self.owner.is_none() => true,
            Some(_) => {
                self.adopt_unmarked
                    && (self.allow_shape(family, tuple) || self.deny_shape(family, tuple))
            }
        }
    }

    /// The rules of ours in a family, in order.
    fn ours<'a>(
        &'a self,
        snapshot: &'a Snapshot,
        family: Family,
    ) -> impl Iterator<Item = &'a Tuple> + 'a {
        snapshot
            .family(family)
            .iter()
            .filter(move |tuple| self.is_ours(family, tuple))
    }

    /// The fingerprint of our parts: our rules in order, and whether ufw is enabled. Other
    /// people's rules are not part of it: we address rules by spec, so they cannot misdirect us.
    fn basis(&self, snapshot: &Snapshot) -> Basis {
        let ours: Vec<Vec<&Tuple>> = Family::ALL
            .iter()
            .map(|family| self.ours(snapshot, *family).collect())
            .collect();
        Basis::of((snapshot.active, ours))
    }

    fn ports(&self) -> String {
        self.policy
            .ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether `tuple` is exactly the allow we write for its source, and ours.
    fn is_exact_allow(&self, family: Family, tuple: &Tuple) -> bool {
        base_comment(tuple) == Some(names::COMMENT)
            && self.allow_shape(family, tuple)
            && self.is_ours(family, tuple)
    }

    /// Whether `tuple` has the shape of our allow, whatever its comment.
    fn allow_shape(&self, family: Family, tuple: &Tuple) -> bool {
        self.managed_ports_shape("allow", family, tuple)
            && source_network(tuple).is_some_and(|net| Family::of(&net) == family)
    }

    /// Whether `tuple` is an inbound TCP `action` for the managed ports to everywhere in the
    /// family, from any source port and without an app: what our allows and denies share.
    fn managed_ports_shape(&self, action: &str, family: Family, tuple: &Tuple) -> bool {
        tuple.action == action
            && tuple.protocol == "tcp"
            && tuple.dport == self.ports()
            && tuple.dst == names::everywhere(family)
            && tuple.sport == "any"
            && tuple.apps.is_none()
            && tuple.direction == "in"
    }

    /// Whether `tuple` is exactly the restrict deny we write for the family, and ours.
    fn is_exact_deny(&self, family: Family, tuple: &Tuple) -> bool {
        base_comment(tuple) == Some(names::RESTRICT_COMMENT)
            && self.deny_shape(family, tuple)
            && self.is_ours(family, tuple)
    }

    /// Whether `tuple` has the shape of our restrict deny, whatever its comment.
    fn deny_shape(&self, family: Family, tuple: &Tuple) -> bool {
        self.managed_ports_shape("deny", family, tuple) && tuple.src == names::everywhere(family)
    }

    /// What a rule that is not ours means for restrict's deny (see
    /// [`cf_allowlist_backend::restrict`]): an allow of a managed TCP port from chosen sources
    /// must keep working, one from everywhere is what the deny must precede.
    fn role(&self, family: Family, tuple: &Tuple) -> Role {
        let accepts = (tuple.action.starts_with("allow") || tuple.action.starts_with("limit"))
            && tuple.direction.starts_with("in");
        if !matches!(tuple.protocol.as_str(), "tcp" | "any") {
            return Role::Other;
        }
        let specific = tuple.src != names::everywhere(family) && tuple.src != "any";
        let covered: Option<Vec<u16>> = (tuple.dport != "any").then(|| {
            self.policy
                .ports
                .iter()
                .copied()
                .filter(|port| rules::port_in(&tuple.dport, *port))
                .collect()
        });
        Role::of_accept(accepts, specific, covered.as_deref(), &self.policy.ports)
    }

    /// The rules that are not ours and follow our last allow (all of them before our first
    /// apply, when our allows will be prepended): the ones restrict's deny is placed among.
    fn rules_after_ours<'a>(
        &self,
        family: Family,
        rules: &'a [Tuple],
    ) -> Vec<(usize, &'a Tuple, Role)> {
        let start = rules
            .iter()
            .rposition(|tuple| self.is_exact_allow(family, tuple))
            .map_or(0, |last| last + 1);
        rules
            .iter()
            .enumerate()
            .skip(start)
            .filter(|(_, tuple)| !self.is_ours(family, tuple))
            .map(|(index, tuple)| (index, tuple, self.role(family, tuple)))
            .collect()
    }

    /// The index in `rules` of the rule the family's restrict deny must follow directly: our
    /// last allow, or the admin's last allow of a managed port that comes before any rule
    /// opening one to everyone; `None` when the deny goes first.
    fn deny_anchor(&self, family: Family, rules: &[Tuple]) -> Option<usize> {
        let last_allow = rules
            .iter()
            .rposition(|tuple| self.is_exact_allow(family, tuple));
        let after = self.rules_after_ours(family, rules);
        let roles: Vec<Role> = after.iter().map(|(_, _, role)| *role).collect();
        let keep = restrict::place_drop(&roles).after.map(|at| after[at].0);
        last_allow.max(keep)
    }

    /// Whether the family's restrict deny exists and sits after our allows, after the admin's
    /// allows it must keep, and before any rule opening a managed port to everyone.
    fn deny_in_place(&self, family: Family, rules: &[Tuple]) -> bool {
        let Some(deny_at) = rules
            .iter()
            .position(|tuple| self.is_exact_deny(family, tuple))
        else {
            return false;
        };
        let last_allow = rules
            .iter()
            .rposition(|tuple| self.is_exact_allow(family, tuple));
        let after = self.rules_after_ours(family, rules);
        let roles: Vec<Role> = after.iter().map(|(_, _, role)| *role).collect();
        let before_deny = after.iter().filter(|(index, ..)| *index < deny_at).count();
        last_allow.is_none_or(|last| last < deny_at) && restrict::drop_in_place(&roles, before_deny)
    }

    /// Warnings for the admin's allows restrict's deny cannot keep.
    fn cut_allows(&self, family: Family, rules: &[Tuple]) -> Vec<String> {
        let after = self.rules_after_ours(family, rules);
        let roles: Vec<Role> = after.iter().map(|(_, _, role)| *role).collect();
        let placement = restrict::place_drop(&roles);
        let Some(open) = placement.before else {
            return Vec::new();
        };
        placement
            .cut
            .iter()
            .map(|at| {
                restrict::cut_warning(LABEL, &describe(after[*at].1), &describe(after[open].1))
            })
            .collect()
    }

    /// Judges one family: the ranges of ours, and what is structurally wrong.
    fn judge(&self, snapshot: &Snapshot, family: Family) -> FamilyPlan {
        let mut plan = FamilyPlan::default();
        let rules = snapshot.family(family);
        let mut seen = std::collections::BTreeSet::new();
        let mut duplicates = 0;
        let mut altered = 0;
        let mut unreachable = Vec::new();
        let mut unmarked = 0;
        for tuple in rules.iter().filter(|tuple| self.is_ours(family, tuple)) {
            if self.owner.is_some()
                && base_comment(tuple).is_some_and(|base| {
                    tuple.comment.as_deref() != Some(self.comment(base).as_str())
                })
                && (self.is_exact_allow(family, tuple) || self.is_exact_deny(family, tuple))
            {
                unmarked += 1;
            }
            if base_comment(tuple) == Some(names::COMMENT)
                && tuple.action == "allow"
                && let Some(net) = source_network(tuple).filter(|net| Family::of(net) == family)
            {
                plan.ranges.insert(net);
            }
            if delete_args(tuple).is_none() {
                unreachable.push(rules::render_tuple_line(tuple));
                continue;
            }
            if self.is_exact_allow(family, tuple) || self.is_exact_deny(family, tuple) {
                if !seen.insert(tuple.clone()) {
                    duplicates += 1;
                }
            } else if base_comment(tuple) == Some(names::COMMENT)
                || self.policy.restrict
                || tuple.action != "deny"
            {
                altered += 1;
            }
        }
        for line in unreachable {
            plan.warnings.push(format!(
                "a {family} ufw rule carries our comment but has a shape we never write, so it \
                 is left alone: {line}"
            ));
        }
        if unmarked > 0 {
            plan.repairs.push(format!(
                "mark {unmarked} {family} rule(s) of ours with this state directory's owner id"
            ));
        }
        if duplicates > 0 {
            plan.repairs.push(format!(
                "delete {duplicates} duplicate {family} rule(s) of ours"
            ));
        }
        if altered > 0 {
            plan.repairs.push(format!(
                "rewrite {altered} {family} rule(s) of ours that differ from `tcp {}`",
                self.ports()
            ));
        }
        let deny_at = rules
            .iter()
            .position(|tuple| self.is_exact_deny(family, tuple));
        let last_allow = rules
            .iter()
            .rposition(|tuple| self.is_exact_allow(family, tuple));
        let stray_denies = rules
            .iter()
            .filter(|tuple| {
                base_comment(tuple) == Some(names::RESTRICT_COMMENT) && self.is_ours(family, tuple)
            })
            .count();
        if self.policy.restrict {
            match (deny_at, last_allow) {
                (None, _) => plan
                    .repairs
                    .push(format!("add the {family} restrict deny after our allows")),
                (Some(deny), Some(allow)) if deny < allow => plan
                    .repairs
                    .push(format!("move the {family} restrict deny after our allows")),
                _ if !self.deny_in_place(family, rules) => plan.repairs.push(format!(
                    "move the {family} restrict deny after the admin's own allows of the \
                     managed ports (restrict keeps them working)"
                )),
                _ => {}
            }
            plan.warnings.extend(self.cut_allows(family, rules));
        } else if stray_denies > 0 {
            plan.repairs.push(format!(
                "delete the {family} restrict deny (restrict is off)"
            ));
        }
        // A rule that is not ours but has exactly our spec: ufw keeps one rule per spec, so ours
        // could not be added next to it.
        for tuple in rules.iter().filter(|tuple| !self.is_ours(family, tuple)) {
            if self.allow_shape(family, tuple) {
                plan.warnings.push(format!(
                    "ufw rule `allow tcp {} from {}` is not ours (comment {:?}, not marked with \
                     this state directory's owner id); ufw keeps one rule per spec, so ours \
                     cannot be added for that range: delete it if this tool should manage it",
                    tuple.dport,
                    tuple.src,
                    tuple.comment.as_deref().unwrap_or(""),
                ));
            }
        }
        plan
    }

    fn allow_args(&self, range: &IpNet, position: &str) -> Vec<String> {
        let position = Some(position.to_owned()).filter(|position| !position.is_empty());
        self.managed_ports_args(
            position.into_iter().collect(),
            "allow",
            &range.to_string(),
            names::COMMENT,
        )
    }

    fn deny_args(&self, family: Family, position: Option<usize>) -> Vec<String> {
        let position = match position {
            Some(0) => vec!["prepend".to_owned()],
            Some(at) => vec!["insert".to_owned(), at.to_string()],
            None => Vec::new(),
        };
        self.managed_ports_args(
            position,
            "deny",
            names::everywhere(family),
            names::RESTRICT_COMMENT,
        )
    }

    /// `ufw POSITION… ACTION proto tcp from SOURCE to any port PORTS comment COMMENT`: the
    /// arguments that write one of our rules for the managed ports, marked with our owner.
    fn managed_ports_args(
        &self,
        position: Vec<String>,
        action: &str,
        source: &str,
        comment: &str,
    ) -> Vec<String> {
        let mut args = position;
        args.extend(
            [
                action,
                "proto",
                "tcp",
                "from",
                source,
                "to",
                "any",
                "port",
                &self.ports(),
                "comment",
                &self.comment(comment),
            ]
            .map(str::to_owned),
        );
        args
    }

    fn program(&self) -> Result<PathBuf, ToolError> {
        if self.options.program.components().count() > 1 {
            Ok(self.options.program.clone())
        } else {
            tool::locate(&self.options.program.to_string_lossy())
        }
    }

    fn observe_snapshot(&self, snapshot: &Snapshot) -> Observed {
        let mut observed = Observed {
            basis: self.basis(snapshot),
            ..Observed::default()
        };
        for family in Family::ALL {
            observed.owners.extend(
                self.ours(snapshot, family)
                    .filter_map(|tuple| tuple.comment.as_deref())
                    .filter_map(cf_allowlist_backend::owner_of)
                    .map(str::to_owned),
            );
        }
        for family in Family::ALL {
            let plan = self.judge(snapshot, family);
            observed.ranges.extend(plan.ranges.iter().copied());
            observed.repairs.extend(plan.repairs);
            observed.warnings.extend(plan.warnings);
        }
        if !snapshot.active {
            // Only a backend allowed to enable ufw can repair this; otherwise it is a fact for
            // the admin, with what to do, and never a promise that a sync will fix it.
            if self.options.enable {
                observed.repairs.push(
                    "enable ufw (it is inactive; the backend's `enable` option is set)".to_owned(),
                );
                observed
                    .warnings
                    .push("ufw is inactive: its rules, ours included, are not in force".to_owned());
            } else {
                observed.warnings.push(INACTIVE_WARNING.to_owned());
            }
        }
        observed
    }

    /// Runs rule commands `steps` in order, as one batch or one call each (see
    /// [`UfwOptions::write`]); on a failure reports what was applied before it.
    fn run_steps(
        &self,
        program: &Path,
        steps: &[Step],
        applied: &mut Vec<String>,
        total: usize,
    ) -> Result<(), UfwError> {
        if steps.is_empty() {
            return Ok(());
        }
        if self.options.write == Write::Batch
            && let Some(interpreter) = batch::interpreter_of(program)
        {
            let args: Vec<Vec<String>> = steps.iter().map(batch_args).collect();
            let outcome = batch::run(&interpreter, program, &args);
            let before = applied.len();
            applied.extend(
                outcome
                    .applied
                    .iter()
                    .filter_map(|index| steps.get(*index))
                    .map(|step| step.phrase.clone()),
            );
            match outcome.result {
                Ok(()) => return Ok(()),
                // This ufw cannot run the batch, and it did nothing: one call per rule instead.
                Err(batch::BatchError::Unsupported(_)) if applied.len() == before => {}
                Err(batch::BatchError::Unsupported(source) | batch::BatchError::Failed(source))
                    if applied.is_empty() =>
                {
                    return Err(UfwError::Tool(source));
                }
                Err(batch::BatchError::Unsupported(source) | batch::BatchError::Failed(source)) => {
                    let failed = steps
                        .get(applied.len() - before)
                        .map_or_else(|| "the live load".to_owned(), |step| step.phrase.clone());
                    return Err(UfwError::Partial {
                        applied: std::mem::take(applied),
                        total,
                        failed,
                        source,
                    });
                }
            }
        }
        self.run_calls(program, steps, applied, total)
    }

    /// Runs `steps` one `ufw` call each; on a failure reports what was applied before it.
    fn run_calls(
        &self,
        program: &Path,
        steps: &[Step],
        applied: &mut Vec<String>,
        total: usize,
    ) -> Result<(), UfwError> {
        for step in steps {
            let args = self.call_args(step)?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match tool::run(program, &args, None) {
                Ok(_) => applied.push(step.phrase.clone()),
                Err(source) if applied.is_empty() => return Err(UfwError::Tool(source)),
                Err(source) => {
                    return Err(UfwError::Partial {
                        applied: std::mem::take(applied),
                        total,
                        failed: step.phrase.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// A step's `ufw` arguments for one call of its own. The ufw command line can place a rule
    /// only by number, so a step that goes after a rule finds that rule by its spec in the files
    /// just before the call, and names the number it has now. This is the one number this
    /// backend passes ufw, and only without a batch (`write = "calls"`, or a ufw the batch does
    /// not support): a ufw call of somebody else's in the milliseconds between the read and the
    /// call could shift it, which the read-back notices and the next run repairs.
    fn call_args(&self, step: &Step) -> Result<Vec<String>, UfwError> {
        let Some(anchor) = &step.after else {
            return Ok(step.args.clone());
        };
        let now = Snapshot::read(&self.options.rules_dir)?;
        let family = if now.family(Family::V4).contains(anchor) {
            Family::V4
        } else {
            Family::V6
        };
        let rules = now.family(family);
        let at = rules
            .iter()
            .position(|tuple| same_spec(tuple, anchor))
            .ok_or_else(|| UfwError::AnchorGone {
                step: step.phrase.clone(),
                rule: describe(anchor),
            })?;
        let mut args = Vec::new();
        if at + 1 < rules.len() {
            // ufw numbers IPv6 rules after every IPv4 rule.
            let offset = match family {
                Family::V4 => 0,
                Family::V6 => now.family(Family::V4).len(),
            };
            args.extend(["insert".to_owned(), (offset + at + 2).to_string()]);
        }
        args.extend(step.args.iter().cloned());
        Ok(args)
    }

    /// Writes the steps of a change in their order: adds, marks, a misplaced deny's removal,
    /// restrict's deny, the rest of the deletions.
    fn write_steps(
        &self,
        program: &Path,
        applied: &mut Vec<String>,
        total: usize,
        [adds, marks, deletes]: [Vec<Step>; 3],
        restrict_families: Vec<Family>,
    ) -> Result<(), UfwError> {
        self.run_steps(program, &adds, applied, total)?;
        self.run_steps(program, &marks, applied, total)?;
        // A misplaced deny must go before it can be inserted again (ufw holds one rule per
        // spec); its delete is among `deletes`, so run that one first.
        let (misplaced_denies, deletes): (Vec<Step>, Vec<Step>) = deletes
            .into_iter()
            .partition(|step| step.args.get(1).map(String::as_str) == Some("deny"));
        if !restrict_families.is_empty() {
            self.run_steps(program, &misplaced_denies, applied, total)?;
            for family in restrict_families {
                // Which rule the deny follows is chosen from the files as ufw has just written
                // them; where that rule is, is found by its spec when the deny is written.
                let now = Snapshot::read(&self.options.rules_dir)?;
                let rules = now.family(family);
                let after = self.deny_anchor(family, rules).map(|at| rules[at].clone());
                self.run_steps(
                    program,
                    &[Step {
                        phrase: format!("restrict deny for {family}"),
                        args: self.deny_args(family, after.is_none().then_some(0)),
                        after,
                    }],
                    applied,
                    total,
                )?;
            }
            self.run_steps(program, &deletes, applied, total)?;
        } else {
            self.run_steps(program, &misplaced_denies, applied, total)?;
            self.run_steps(program, &deletes, applied, total)?;
        }
        Ok(())
    }

    fn apply_snapshot(&self, snapshot: &Snapshot, change: &Change) -> Result<(), UfwError> {
        if !snapshot.active && !self.options.enable {
            return Err(UfwError::Inactive);
        }
        let program = self.program()?;
        let mut applied = Vec::new();
        // Counted up front so a partial failure can say "k of n".
        let mut adds = Vec::new();
        let mut marks = Vec::new();
        let mut deletes = Vec::new();
        for family in Family::ALL {
            let rules = snapshot.family(family);
            let wanted: Vec<&IpNet> = change.target.family(family).collect();
            // Adds: each missing exact allow, prepended in descending order so that the list
            // reads in ascending order.
            for range in wanted.iter().rev() {
                let present = rules.iter().any(|tuple| {
                    self.is_exact_allow(family, tuple) && source_network(tuple) == Some(**range)
                });
                if !present {
                    adds.push(Step {
                        phrase: format!("allow {range}"),
                        args: self.allow_args(range, "prepend"),
                        after: None,
                    });
                }
            }
            // Deletes: ours that are not wanted, extra copies, and a misplaced or unwanted deny.
            let mut kept = std::collections::BTreeSet::new();
            let deny_misplaced = rules.iter().any(|tuple| self.is_exact_deny(family, tuple))
                && !self.deny_in_place(family, rules);
            for tuple in rules.iter().filter(|tuple| self.is_ours(family, tuple)) {
                let Some(args) = delete_args(tuple) else {
                    continue;
                };
                let keep = if self.is_exact_allow(family, tuple) {
                    source_network(tuple).is_some_and(|net| change.target.contains(&net))
                } else {
                    self.is_exact_deny(family, tuple) && self.policy.restrict && !deny_misplaced
                };
                if keep && kept.insert(tuple.clone()) {
                    // Kept, but written without our mark (or with another directory's): the
                    // same spec added again without a position replaces it in place, with the
                    // mark (ufw updates a rule that differs only in its comment).
                    let marked = base_comment(tuple).map(|base| self.comment(base));
                    if self.owner.is_some() && tuple.comment != marked {
                        marks.push(Step {
                            phrase: format!(
                                "mark {} {} from {}",
                                tuple.action, tuple.dport, tuple.src
                            ),
                            args: match source_network(tuple) {
                                Some(range) if tuple.action == "allow" => {
                                    self.allow_args(&range, "")
                                }
                                _ => self.deny_args(family, None),
                            },
                            after: None,
                        });
                    }
                    continue;
                }
                deletes.push(Step {
                    phrase: format!("delete {} {} from {}", tuple.action, tuple.dport, tuple.src),
                    args,
                    after: None,
                });
            }
        }
        let restrict_families: Vec<Family> = if self.policy.restrict {
            Family::ALL
                .into_iter()
                .filter(|family| !self.deny_in_place(*family, snapshot.family(*family)))
                .collect()
        } else {
            Vec::new()
        };
        let enable = !snapshot.active;
        let total = adds.len()
            + marks.len()
            + deletes.len()
            + restrict_families.len()
            + usize::from(enable);

        self.write_steps(
            &program,
            &mut applied,
            total,
            [adds, marks, deletes],
            restrict_families,
        )?;
        if enable {
            // Last, so that ufw starts with every rule of ours already in its files.
            self.run_calls(
                &program,
                &[Step {
                    phrase: "enable ufw".to_owned(),
                    args: vec!["--force".to_owned(), "enable".to_owned()],
                    after: None,
                }],
                &mut applied,
                total,
            )?;
        }
        Ok(())
    }
}

/// A step as one line of a batch: its arguments, or for a step placed after a rule,
/// `after` + that rule's spec + `--` + its arguments (the batch finds the rule under ufw's lock).
fn batch_args(step: &Step) -> Vec<String> {
    match step.after.as_ref().and_then(delete_args) {
        Some(anchor) => std::iter::once("after".to_owned())
            .chain(anchor.into_iter().skip(1))
            .chain(std::iter::once("--".to_owned()))
            .chain(step.args.iter().cloned())
            .collect(),
        None => step.args.clone(),
    }
}

/// Whether two rules are the same to ufw (which ignores comments when it matches rules).
fn same_spec(left: &Tuple, right: &Tuple) -> bool {
    Tuple {
        comment: None,
        ..left.clone()
    } == Tuple {
        comment: None,
        ..right.clone()
    }
}

/// A rule as the admin would recognise it: `allow any 443 from 203.0.113.200`.
fn describe(tuple: &Tuple) -> String {
    format!(
        "`{} {} {} from {}`",
        tuple.action, tuple.protocol, tuple.dport, tuple.src
    )
}

/// `ufw delete …` arguments that name `tuple` by its spec, or `None` for shapes this backend
/// never writes (application profiles, routed or outgoing rules, interfaces).
fn delete_args(tuple: &Tuple) -> Option<Vec<String>> {
    if tuple.apps.is_some() || tuple.direction != "in" || tuple.action.contains(':') {
        return None;
    }
    let mut args = vec!["delete".to_owned(), tuple.action.clone()];
    if tuple.protocol != "any" {
        args.extend(["proto".to_owned(), tuple.protocol.clone()]);
    }
    args.extend(["from".to_owned(), tuple.src.clone()]);
    if tuple.sport != "any" {
        args.extend(["port".to_owned(), tuple.sport.clone()]);
    }
    args.extend(["to".to_owned(), tuple.dst.clone()]);
    if tuple.dport != "any" {
        args.extend(["port".to_owned(), tuple.dport.clone()]);
    }
    Some(args)
}

impl Backend for UfwBackend {
    fn label(&self) -> String {
        LABEL.to_owned()
    }

    fn observe(&self) -> Result<Observed, BackendError> {
        let snapshot =
            Snapshot::read(&self.options.rules_dir).map_err(|error| error.at("read the rules"))?;
        Ok(self.observe_snapshot(&snapshot))
    }

    fn apply(&self, change: &Change) -> Result<(), BackendError> {
        if change.is_empty() {
            return Ok(());
        }
        let snapshot =
            Snapshot::read(&self.options.rules_dir).map_err(|error| error.at("read the rules"))?;
        if self.basis(&snapshot) != change.basis {
            return Err(BackendError::stale(
                LABEL,
                format!(
                    "our rules in {} or ufw's state changed since they were observed",
                    self.options.rules_dir.display()
                ),
            ));
        }
        self.apply_snapshot(&snapshot, change)
            .map_err(|error| error.at("apply the change"))
    }

    fn purge(&self) -> Result<Vec<String>, BackendError> {
        let fail = |error: UfwError| error.at("purge");
        let snapshot = Snapshot::read(&self.options.rules_dir).map_err(fail)?;
        let mut steps = Vec::new();
        // Allows first, then the restrict deny: the ports are never open to everyone meanwhile.
        for restrict in [false, true] {
            for family in Family::ALL {
                for tuple in self.ours(&snapshot, family) {
                    if (base_comment(tuple) == Some(names::RESTRICT_COMMENT)) != restrict {
                        continue;
                    }
                    if let Some(args) = delete_args(tuple) {
                        steps.push(Step {
                            phrase: format!(
                                "ufw rule {} tcp {} from {} ({family})",
                                tuple.action, tuple.dport, tuple.src
                            ),
                            args,
                            after: None,
                        });
                    }
                }
            }
        }
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let program = self.program().map_err(|error| fail(error.into()))?;
        let mut applied = Vec::new();
        let total = steps.len();
        self.run_steps(&program, &steps, &mut applied, total)
            .map_err(fail)?;
        Ok(applied)
    }
}

#[cfg(feature = "harness")]
pub mod harness;

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(src: &str, dport: &str, comment: Option<&str>) -> Tuple {
        Tuple {
            action: "allow".into(),
            protocol: "tcp".into(),
            dport: dport.into(),
            dst: "0.0.0.0/0".into(),
            sport: "any".into(),
            src: src.into(),
            apps: None,
            direction: "in".into(),
            comment: comment.map(str::to_owned),
        }
    }

    #[test]
    fn a_step_placed_after_a_rule_names_that_rule_by_its_spec_in_a_batch() {
        let step = Step {
            phrase: "restrict deny for IPv4".into(),
            args: vec!["deny".into(), "from".into(), "0.0.0.0/0".into()],
            after: Some(tuple("203.0.113.200", "443", Some("partner"))),
        };
        assert_eq!(
            batch_args(&step).join(" "),
            "after allow proto tcp from 203.0.113.200 to 0.0.0.0/0 port 443 -- deny from 0.0.0.0/0"
        );
        assert!(same_spec(
            &tuple("192.0.2.1", "80", Some("a")),
            &tuple("192.0.2.1", "80", None)
        ));
        assert!(!same_spec(
            &tuple("192.0.2.1", "80", None),
            &tuple("192.0.2.1", "443", None)
        ));
    }

    #[test]
    fn owner_marks_decide_what_is_ours() {
        let policy = Policy {
            ports: vec![80, 443],
            restrict: false,
        };
        let backend =
            UfwBackend::new(UfwOptions::default(), policy.clone()).owned_by(Some("abc".into()));
        let exact = |comment: &str| tuple("198.51.100.0/25", "80,443", Some(comment));
        assert!(backend.is_ours(Family::V4, &exact("cf-allowlist owner=abc")));
        // Another directory's mark: ours to report (the core's owner guard judges it).
        assert!(backend.is_ours(Family::V4, &exact("cf-allowlist owner=def")));
        // Unmarked: only adopted when told to, and only in a shape we write.
        assert!(!backend.is_ours(Family::V4, &exact("cf-allowlist")));
        let adopting = backend.clone().adopting_unmarked(true);
        assert!(adopting.is_ours(Family::V4, &exact("cf-allowlist")));
        let hand_made = tuple("198.51.100.8", "22", Some("cf-allowlist"));
        assert!(!adopting.is_ours(Family::V4, &hand_made));
        assert!(!adopting.is_ours(Family::V4, &exact("web")));
        // Without an owner (the first release's behaviour), our comment is enough.
        let unowned = UfwBackend::new(UfwOptions::default(), policy);
        assert!(unowned.is_ours(Family::V4, &hand_made));
    }
}
