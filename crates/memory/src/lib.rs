//! An in-memory firewall and a backend for it.
//!
//! It models what every real backend has: somebody else's rules, one set of ours per family and
//! our rules that match them, any of which an admin may delete or duplicate. It is the reference
//! implementation of the [`Backend`] contract, used by the conformance suite and by the core's
//! tests, which need a firewall but not a kernel. Faults can be injected ([`Faults`]) so that
//! those tests can drive every failure path of the core: a failed apply, a read-back that
//! differs from the plan, a firewall that changes between observation and apply.
//!
//! Firewalls are found by name ([`SharedFirewall::named`]), so that a backend built by the core
//! from a saved spec reaches the same firewall a test set up.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cf_allowlist_backend::{
    Backend, BackendError, Basis, Change, ErrorKind, Family, Observed, Policy, Ranges,
};
use ipnet::IpNet;

/// Failures to inject; each is consumed when it fires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Fail the next apply with this kind, before writing anything.
    pub fail_next_apply: Option<ErrorKind>,
    /// Fail the next observe.
    pub fail_next_observe: bool,
    /// After the next apply, add this range as if another tool had (the read-back then
    /// differs from the plan).
    pub extra_after_apply: Option<IpNet>,
    /// Before the next apply, add this foreign-to-the-plan range to our set as if an admin had
    /// (the plan is then stale).
    pub disturb_before_apply: Option<IpNet>,
}

/// The state of the pretend firewall.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryFirewall {
    /// Rules that belong to somebody else, as free text.
    pub foreign_rules: Vec<String>,
    /// Our set of allowed ranges; `None` when it does not exist.
    pub set: Option<Ranges>,
    /// Our rules, each with the policy it was written for; more than one is drift.
    pub rules: Vec<Policy>,
    /// How many writes changed the firewall.
    pub writes: u64,
    /// The set after each write of the last apply.
    pub last_apply_states: Vec<Ranges>,
    /// Faults to inject.
    pub faults: Faults,
    /// The owner mark on our parts, as the last apply wrote it.
    pub owner: Option<String>,
}

impl MemoryFirewall {
    fn basis(&self) -> Basis {
        Basis::of((&self.set, &self.rules, &self.owner))
    }
}

impl fmt::Display for MemoryFirewall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for rule in &self.foreign_rules {
            writeln!(f, "foreign {rule}")?;
        }
        if let Some(set) = &self.set {
            writeln!(f, "set {{ {} }}", set.to_strings().join(", "))?;
        }
        for rule in &self.rules {
            writeln!(f, "rule ports {:?} restrict {}", rule.ports, rule.restrict)?;
        }
        Ok(())
    }
}

/// A handle on a shared [`MemoryFirewall`]; clones see the same firewall.
#[derive(Debug, Clone, Default)]
pub struct SharedFirewall(Arc<Mutex<MemoryFirewall>>);

impl SharedFirewall {
    /// A new, empty firewall.
    pub fn new() -> SharedFirewall {
        SharedFirewall::default()
    }

    /// The process-wide firewall called `name`, created empty on first use.
    pub fn named(name: &str) -> SharedFirewall {
        static FIREWALLS: OnceLock<Mutex<HashMap<String, SharedFirewall>>> = OnceLock::new();
        FIREWALLS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Locks the firewall for reading or changing it directly.
    pub fn lock(&self) -> MutexGuard<'_, MemoryFirewall> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A backend that keeps a [`SharedFirewall`] open to a set of ranges.
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    firewall: SharedFirewall,
    policy: Policy,
    label: String,
    owner: Option<String>,
}

impl MemoryBackend {
    /// A backend on `firewall` that writes rules for `policy`.
    pub fn new(firewall: SharedFirewall, policy: Policy) -> MemoryBackend {
        MemoryBackend {
            firewall,
            policy,
            label: "memory".to_owned(),
            owner: None,
        }
    }

    /// The same, marking what it writes as `owner`'s.
    pub fn owned_by(mut self, owner: Option<String>) -> MemoryBackend {
        self.owner = owner;
        self
    }

    /// The same, labelled `label` in messages (to tell two memory backends apart).
    pub fn labelled(mut self, label: impl Into<String>) -> MemoryBackend {
        self.label = label.into();
        self
    }

    fn error(&self, step: &'static str, kind: ErrorKind, message: String) -> BackendError {
        BackendError::new(self.label.clone(), step, kind, message)
    }
}

impl Backend for MemoryBackend {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn observe(&self) -> Result<Observed, BackendError> {
        let mut firewall = self.firewall.lock();
        if std::mem::take(&mut firewall.faults.fail_next_observe) {
            return Err(self.error(
                "read the firewall",
                ErrorKind::Transient,
                "injected observe failure".to_owned(),
            ));
        }
        let mut repairs = Vec::new();
        if firewall.set.is_none() {
            repairs.push("create the set".to_owned());
        }
        match firewall.rules.as_slice() {
            [] => repairs.push("create the accept rule".to_owned()),
            [rule] if *rule == self.policy => {}
            [_] => repairs.push("rewrite the accept rule for the configured ports".to_owned()),
            _ => repairs.push("remove duplicate accept rules".to_owned()),
        }
        Ok(Observed {
            ranges: firewall.set.clone().unwrap_or_default(),
            repairs,
            warnings: Vec::new(),
            basis: firewall.basis(),
            owners: firewall
                .owner
                .iter()
                .filter(|_| firewall.set.is_some())
                .cloned()
                .collect(),
        })
    }

    fn apply(&self, change: &Change) -> Result<(), BackendError> {
        if change.is_empty() {
            return Ok(());
        }
        let mut firewall = self.firewall.lock();
        if let Some(kind) = firewall.faults.fail_next_apply.take() {
            return Err(self.error(
                "apply the change",
                kind,
                "injected apply failure".to_owned(),
            ));
        }
        if let Some(net) = firewall.faults.disturb_before_apply.take() {
            firewall.set.get_or_insert_with(Ranges::new).insert(net);
        }
        if firewall.basis() != change.basis {
            return Err(BackendError::stale(
                self.label.clone(),
                "our set or rules changed since they were observed",
            ));
        }
        // Two writes, adds first, so that the suite can check no listed range is ever missing.
        let mut set = firewall.set.clone().unwrap_or_default();
        set.extend(change.add.iter().copied());
        firewall.set = Some(set.clone());
        firewall.rules = vec![self.policy.clone()];
        firewall.owner = self.owner.clone();
        let mut states = vec![set.clone()];
        let set = set.difference(&change.remove);
        firewall.set = Some(set.clone());
        states.push(set);
        firewall.last_apply_states = states;
        firewall.writes += 2;
        if let Some(net) = firewall.faults.extra_after_apply.take() {
            firewall.set.get_or_insert_with(Ranges::new).insert(net);
        }
        Ok(())
    }

    fn purge(&self) -> Result<Vec<String>, BackendError> {
        let mut firewall = self.firewall.lock();
        let mut removed = Vec::new();
        if firewall.set.take().is_some() {
            removed.push("the set".to_owned());
        }
        firewall.owner = None;
        if !firewall.rules.is_empty() {
            removed.push(format!("{} accept rule(s)", firewall.rules.len()));
            firewall.rules.clear();
        }
        if !removed.is_empty() {
            firewall.writes += 1;
        }
        Ok(removed)
    }
}

/// The conformance harness for the in-memory backend.
#[cfg(feature = "harness")]
#[derive(Debug, Default)]
pub struct MemoryHarness {
    /// The firewall every backend of this harness shares.
    pub firewall: SharedFirewall,
}

#[cfg(feature = "harness")]
impl cf_allowlist_backend::conformance::Harness for MemoryHarness {
    fn backend(&self, policy: &Policy) -> Box<dyn Backend> {
        Box::new(MemoryBackend::new(self.firewall.clone(), policy.clone()))
    }

    fn dump(&self) -> String {
        self.firewall.lock().to_string()
    }

    fn add_foreign_rule(&self) {
        self.firewall
            .lock()
            .foreign_rules
            .push("tcp dport 22 accept from 192.0.2.0/24".to_owned());
    }

    fn foreign_rule_present(&self) -> bool {
        self.firewall.lock().foreign_rules.len() == 1
    }

    fn drift_kinds(&self) -> Vec<&'static str> {
        vec![
            "rule deleted",
            "rule duplicated",
            "range deleted",
            "everything deleted",
        ]
    }

    fn cause_drift(&self, kind: &str) {
        let mut firewall = self.firewall.lock();
        match kind {
            "rule deleted" => firewall.rules.clear(),
            "rule duplicated" => {
                let rule = firewall.rules[0].clone();
                firewall.rules.push(rule);
            }
            "range deleted" => {
                let set = firewall.set.as_mut().expect("the set exists");
                let first = *set.family(Family::V4).next().expect("an IPv4 range");
                *set = set.iter().copied().filter(|net| *net != first).collect();
            }
            "everything deleted" => {
                firewall.set = None;
                firewall.rules.clear();
            }
            other => panic!("unknown drift {other:?}"),
        }
    }

    fn our_verdicts_in_order(&self) -> Vec<Vec<String>> {
        let firewall = self.firewall.lock();
        let mut verdicts = Vec::new();
        for rule in &firewall.rules {
            verdicts.push("accept".to_owned());
            if rule.restrict {
                verdicts.push("drop".to_owned());
            }
        }
        vec![verdicts]
    }

    fn states_during_last_apply(&self) -> Option<Vec<Ranges>> {
        Some(self.firewall.lock().last_apply_states.clone())
    }
}
