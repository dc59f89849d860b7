//! An in-memory firewall and a backend for it.
//!
//! It models what every real backend has: somebody else's rules, one set of ours per family and
//! our rules that match them, any of which an admin may delete or duplicate. It is the reference
//! implementation of the [`Backend`] contract, used by the conformance suite and by tests of the
//! core that need a firewall but not a kernel.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use cf_allowlist_backend::{Backend, BackendError, Change, Family, Observed, Policy, Ranges};

/// The state of the pretend firewall.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryFirewall {
    /// Rules that belong to somebody else, as free text.
    pub foreign_rules: Vec<String>,
    /// Our set of allowed ranges; `None` when it does not exist.
    pub set: Option<Ranges>,
    /// Our rules, each with the policy it was written for; more than one is drift.
    pub rules: Vec<Policy>,
    /// How many transactions changed the firewall.
    pub writes: u64,
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
}

impl MemoryBackend {
    /// A backend on `firewall` that writes rules for `policy`.
    pub fn new(firewall: SharedFirewall, policy: Policy) -> MemoryBackend {
        MemoryBackend { firewall, policy }
    }
}

impl Backend for MemoryBackend {
    fn label(&self) -> String {
        "memory".to_owned()
    }

    fn observe(&self) -> Result<Observed, BackendError> {
        let firewall = self.firewall.lock();
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
        })
    }

    fn apply(&self, change: &Change) -> Result<(), BackendError> {
        if change.is_empty() {
            return Ok(());
        }
        let mut firewall = self.firewall.lock();
        let current = firewall.set.clone().unwrap_or_default();
        // Apply exactly the planned difference, as a real firewall's element updates would;
        // removing a range that is not there means the plan is stale, as in nft.
        if let Some(missing) = change.remove.iter().find(|net| !current.contains(net)) {
            return Err(BackendError::new(
                "memory",
                "apply the change",
                format!("{missing} is not in the set: the firewall changed since it was observed"),
            ));
        }
        let next: Ranges = current
            .difference(&change.remove)
            .iter()
            .chain(change.add.iter())
            .copied()
            .collect();
        firewall.set = Some(next);
        firewall.rules = vec![self.policy.clone()];
        firewall.writes += 1;
        Ok(())
    }

    fn purge(&self) -> Result<(), BackendError> {
        let mut firewall = self.firewall.lock();
        if firewall.set.is_some() || !firewall.rules.is_empty() {
            firewall.set = None;
            firewall.rules.clear();
            firewall.writes += 1;
        }
        Ok(())
    }
}

/// The conformance harness for the in-memory backend.
#[derive(Debug, Default)]
pub struct MemoryHarness {
    /// The firewall every backend of this harness shares.
    pub firewall: SharedFirewall,
}

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
}
