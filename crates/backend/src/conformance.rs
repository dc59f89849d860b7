//! Behaviours every backend must show, run against each of them from the integration tests
//! (the in-memory one included), in the manner of object_store's `integration.rs`.
//!
//! A backend is exercised through a [`Harness`], which knows how to look at and disturb the real
//! firewall behind it. Each behaviour is a plain function; [`conformance_tests!`](crate::conformance_tests) turns the
//! whole list into one `#[test]` each, run on a fresh thread so that a harness may confine
//! itself to that thread (for example in a network namespace made with `unshare`).

use ipnet::IpNet;

use crate::{Backend, Change, ErrorKind, Observed, Policy, Ranges};

/// Access to the firewall behind a backend, for the conformance suite.
pub trait Harness {
    /// A backend on this harness's firewall with the given policy.
    fn backend(&self, policy: &Policy) -> Box<dyn Backend>;
    /// The whole firewall as text, with rule identities (handles) where the firewall has them:
    /// two equal dumps mean nothing was rewritten.
    fn dump(&self) -> String;
    /// Adds a rule that belongs to somebody else.
    fn add_foreign_rule(&self);
    /// Whether the foreign rule is still there, exactly once.
    fn foreign_rule_present(&self) -> bool;
    /// The kinds of drift [`Harness::cause_drift`] can cause.
    fn drift_kinds(&self) -> Vec<&'static str>;
    /// Disturbs our part of the firewall as an admin or another tool might.
    fn cause_drift(&self, kind: &str);
    /// The verdicts of our rules (`accept`, `drop`) in the order the firewall evaluates them,
    /// one list per chain (or rule list) of ours.
    fn our_verdicts_in_order(&self) -> Vec<Vec<String>>;
    /// The ranges the firewall allowed after each write of the last apply, where the firewall
    /// can show its intermediate states; `None` where one apply is one transaction and no
    /// intermediate state exists to look at (the crash tests in `tests/e2e_safety.rs` probe
    /// those with packets instead).
    fn states_during_last_apply(&self) -> Option<Vec<Ranges>> {
        None
    }
    /// Whether the backend keeps parts of its own (sets, chains, lists) that exist even when
    /// they allow nothing, so that a fresh firewall reports them as missing. A cloud firewall
    /// made only of per-range rules (AWS security groups in rules mode) has none.
    fn has_structure_without_ranges(&self) -> bool {
        true
    }
}

/// The policy the suite uses unless a behaviour says otherwise.
pub fn default_policy() -> Policy {
    Policy {
        ports: vec![80, 443],
        restrict: false,
    }
}

fn ranges(list: &[&str]) -> Ranges {
    list.iter()
        .map(|text| text.parse::<IpNet>().expect("suite ranges are valid"))
        .collect()
}

/// A first target, documentation ranges of both families.
pub fn target_a() -> Ranges {
    ranges(&["192.0.2.0/24", "198.51.100.0/25", "2001:db8:a::/48"])
}

/// A second target that overlaps [`target_a`] in one range.
pub fn target_b() -> Ranges {
    ranges(&[
        "198.51.100.0/25",
        "203.0.113.0/24",
        "2001:db8:b::/48",
        "2001:db8:c::/48",
    ])
}

fn observe(backend: &dyn Backend) -> Observed {
    backend
        .observe()
        .unwrap_or_else(|error| panic!("observe failed: {error}: {:?}", error.source))
}

/// Observes, plans and applies `target`; returns the change that was applied.
pub fn sync(backend: &dyn Backend, target: &Ranges) -> Change {
    let change = Change::between(&observe(backend), target);
    backend
        .apply(&change)
        .unwrap_or_else(|error| panic!("apply failed: {error}: {:?}", error.source));
    change
}

fn assert_holds_exactly(backend: &dyn Backend, target: &Ranges) {
    let observed = observe(backend);
    assert_eq!(
        &observed.ranges, target,
        "observed ranges differ from the target"
    );
    assert!(
        observed.repairs.is_empty(),
        "structure not intact after apply: {:?}",
        observed.repairs
    );
}

/// Before the first apply nothing of ours is allowed; after it exactly the target is.
pub fn fresh_apply_allows_exactly_the_target(harness: &dyn Harness) {
    let backend = harness.backend(&default_policy());
    let before = observe(backend.as_ref());
    assert!(
        before.ranges.is_empty(),
        "a fresh firewall holds ranges of ours"
    );
    if harness.has_structure_without_ranges() {
        assert!(
            !before.repairs.is_empty(),
            "a fresh firewall should report the structure as missing"
        );
    }
    sync(backend.as_ref(), &target_a());
    assert_holds_exactly(backend.as_ref(), &target_a());
}

/// A second sync to the same target plans nothing and writes nothing.
pub fn apply_is_idempotent(harness: &dyn Harness) {
    let backend = harness.backend(&default_policy());
    sync(backend.as_ref(), &target_a());
    let after_first = harness.dump();
    let second = sync(backend.as_ref(), &target_a());
    assert!(second.is_empty(), "second sync planned changes: {second:?}");
    assert_eq!(
        harness.dump(),
        after_first,
        "second sync rewrote the firewall"
    );
}

/// Moving to another target adds and removes only the difference.
pub fn update_changes_only_the_difference(harness: &dyn Harness) {
    let backend = harness.backend(&default_policy());
    sync(backend.as_ref(), &target_a());
    let change = sync(backend.as_ref(), &target_b());
    assert_eq!(change.add, target_b().difference(&target_a()));
    assert_eq!(change.remove, target_a().difference(&target_b()));
    assert!(change.repairs.is_empty(), "{:?}", change.repairs);
    assert_holds_exactly(backend.as_ref(), &target_b());
}

/// Apply, update and purge never touch somebody else's rule.
pub fn foreign_rules_survive(harness: &dyn Harness) {
    harness.add_foreign_rule();
    let backend = harness.backend(&default_policy());
    sync(backend.as_ref(), &target_a());
    assert!(
        harness.foreign_rule_present(),
        "apply lost the foreign rule"
    );
    sync(backend.as_ref(), &target_b());
    assert!(
        harness.foreign_rule_present(),
        "update lost the foreign rule"
    );
    backend.purge().expect("purge");
    assert!(
        harness.foreign_rule_present(),
        "purge lost the foreign rule"
    );
}

/// A plan made before somebody changed our parts is refused as stale, and nothing is written.
pub fn a_stale_plan_is_refused(harness: &dyn Harness) {
    let backend = harness.backend(&default_policy());
    sync(backend.as_ref(), &target_a());
    let change = Change::between(&observe(backend.as_ref()), &target_b());
    let kinds = harness.drift_kinds();
    harness.cause_drift(kinds[0]);
    let disturbed = harness.dump();
    let error = backend
        .apply(&change)
        .expect_err("a plan made before the firewall changed was applied");
    assert_eq!(error.kind, ErrorKind::Stale, "{error}: {:?}", error.source);
    assert_eq!(
        harness.dump(),
        disturbed,
        "a refused plan wrote to the firewall"
    );
    // Re-planned from a new observation, the same target applies.
    sync(backend.as_ref(), &target_b());
    assert_holds_exactly(backend.as_ref(), &target_b());
}

/// Somebody else's rule added between observation and apply does not make the plan stale,
/// and survives it.
pub fn foreign_changes_do_not_make_a_plan_stale(harness: &dyn Harness) {
    let backend = harness.backend(&default_policy());
    sync(backend.as_ref(), &target_a());
    let change = Change::between(&observe(backend.as_ref()), &target_b());
    harness.add_foreign_rule();
    backend
        .apply(&change)
        .unwrap_or_else(|error| panic!("apply failed: {error}: {:?}", error.source));
    assert!(
        harness.foreign_rule_present(),
        "apply lost the foreign rule"
    );
    assert_holds_exactly(backend.as_ref(), &target_b());
}

/// With restrict on, the drop comes after every accept of ours.
pub fn the_restrict_drop_comes_after_the_accepts(harness: &dyn Harness) {
    let policy = Policy {
        ports: vec![80, 443],
        restrict: true,
    };
    sync(harness.backend(&policy).as_ref(), &target_a());
    let chains = harness.our_verdicts_in_order();
    assert!(!chains.is_empty(), "no rules of ours found");
    for verdicts in chains {
        let first_drop = verdicts.iter().position(|verdict| verdict == "drop");
        let last_accept = verdicts.iter().rposition(|verdict| verdict == "accept");
        match (first_drop, last_accept) {
            (Some(drop), Some(accept)) => assert!(
                accept < drop,
                "a drop of ours comes before an accept: {verdicts:?}"
            ),
            _ => panic!("expected accepts and a drop, found {verdicts:?}"),
        }
    }
}

/// No range listed both before and after an apply is missing at any step of it, and every new
/// range is in place before a removed one goes.
pub fn no_listed_range_is_missing_during_an_apply(harness: &dyn Harness) {
    let backend = harness.backend(&default_policy());
    sync(backend.as_ref(), &target_a());
    sync(backend.as_ref(), &target_b());
    let Some(states) = harness.states_during_last_apply() else {
        panic!(
            "this harness shows no intermediate states of an apply: skip this behaviour by name, \
             saying why (one transaction, or steps the harness cannot see)"
        );
    };
    assert!(!states.is_empty(), "the apply recorded no state");
    let kept = target_a().intersection(&target_b());
    let added = target_b().difference(&target_a());
    let removed = target_a().difference(&target_b());
    for state in &states {
        assert!(
            kept.difference(state).is_empty(),
            "a kept range was missing mid-apply: {state:?}"
        );
        if removed.iter().any(|net| !state.contains(net)) {
            assert!(
                added.difference(state).is_empty(),
                "a range was removed before every new range was added: {state:?}"
            );
        }
    }
    assert_eq!(states.last(), Some(&target_b()));
}

/// Purge returns the firewall to exactly what it was before the first apply; a second purge
/// is harmless.
pub fn purge_leaves_no_trace(harness: &dyn Harness) {
    harness.add_foreign_rule();
    let before = harness.dump();
    let backend = harness.backend(&default_policy());
    sync(backend.as_ref(), &target_a());
    assert_ne!(harness.dump(), before, "apply changed nothing");
    let removed = backend.purge().expect("purge");
    assert!(!removed.is_empty(), "purge reported removing nothing");
    assert_eq!(harness.dump(), before, "purge left a trace");
    let removed = backend.purge().expect("second purge");
    assert!(removed.is_empty(), "a second purge reported {removed:?}");
    assert_eq!(harness.dump(), before, "second purge changed the firewall");
    assert!(observe(backend.as_ref()).ranges.is_empty());
}

/// Every kind of drift is seen by observe and repaired by one apply, with exactly one copy of
/// each of our parts afterwards (the firewall reads the same as after a clean apply).
pub fn drift_is_repaired(harness: &dyn Harness) {
    let backend = harness.backend(&default_policy());
    let kinds = harness.drift_kinds();
    assert!(!kinds.is_empty(), "a harness must offer drift to repair");
    sync(backend.as_ref(), &target_a());
    let clean = harness.dump();
    for kind in kinds {
        harness.cause_drift(kind);
        let observed = observe(backend.as_ref());
        assert!(
            observed.ranges != target_a() || !observed.repairs.is_empty(),
            "drift {kind:?} went unnoticed"
        );
        sync(backend.as_ref(), &target_a());
        assert_holds_exactly(backend.as_ref(), &target_a());
        assert_eq!(
            strip_handles(&harness.dump()),
            strip_handles(&clean),
            "after repairing {kind:?} the firewall differs from a clean apply"
        );
    }
}

/// Changing the ports rewrites our rules and the ranges stay.
pub fn changing_the_policy_rewrites_the_rules(harness: &dyn Harness) {
    harness.add_foreign_rule();
    sync(harness.backend(&default_policy()).as_ref(), &target_a());
    for policy in [
        Policy {
            ports: vec![8443],
            restrict: false,
        },
        Policy {
            ports: vec![443, 8443],
            restrict: true,
        },
        default_policy(),
    ] {
        let backend = harness.backend(&policy);
        let observed = observe(backend.as_ref());
        assert_eq!(observed.ranges, target_a());
        assert!(
            !observed.repairs.is_empty(),
            "a policy change to {policy:?} went unnoticed"
        );
        sync(backend.as_ref(), &target_a());
        assert_holds_exactly(backend.as_ref(), &target_a());
        assert!(harness.foreign_rule_present());
    }
}

/// An empty target keeps the structure and allows nothing.
pub fn empty_target_allows_nothing(harness: &dyn Harness) {
    let backend = harness.backend(&default_policy());
    sync(backend.as_ref(), &target_a());
    sync(backend.as_ref(), &Ranges::new());
    assert_holds_exactly(backend.as_ref(), &Ranges::new());
    sync(backend.as_ref(), &target_b());
    assert_holds_exactly(backend.as_ref(), &target_b());
}

/// Drops `handle N` annotations so dumps compare by content where a repair had to re-create a
/// rule (which gets a new handle).
fn strip_handles(dump: &str) -> String {
    dump.lines()
        .map(|line| match line.find(" # handle ") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Defines one `#[test]` per conformance behaviour for the harness that `$make` builds. Each
/// test runs on its own thread, which builds its own harness.
///
/// A behaviour that cannot apply to a backend (a restrict drop for a configuration file that
/// has no verdicts) is skipped by name with the reason, which `cargo test` shows:
///
/// ```text
/// conformance_tests!(harness(); skip {
///     the_restrict_drop_comes_after_the_accepts: "a real-IP list has no drop",
/// });
/// ```
///
/// A skipped behaviour is still compiled as an `#[ignore]`d test carrying the reason (so it
/// counts as skipped, never as passed), and a name that is not a behaviour of the suite does
/// not compile.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!($make; skip {});
    };
    ($make:expr; skip { $($skipped:ident: $reason:literal),* $(,)? }) => {
        $crate::conformance_tests!(@with_skips ($) $make; { $($skipped: $reason),* };
            fresh_apply_allows_exactly_the_target,
            apply_is_idempotent,
            update_changes_only_the_difference,
            foreign_rules_survive,
            purge_leaves_no_trace,
            drift_is_repaired,
            changing_the_policy_rewrites_the_rules,
            empty_target_allows_nothing,
            a_stale_plan_is_refused,
            foreign_changes_do_not_make_a_plan_stale,
            the_restrict_drop_comes_after_the_accepts,
            no_listed_range_is_missing_during_an_apply,
        );
    };
    (@with_skips ($d:tt) $make:expr; { $($skipped:ident: $reason:literal),* };
        $($behaviour:ident),* $(,)?) => {
        // A skipped name must be a behaviour of the suite.
        $(const _: fn(&dyn $crate::conformance::Harness) = $crate::conformance::$skipped;)*
        // One arm per skipped behaviour (its name is matched literally), then the rest.
        macro_rules! __conformance_test {
            $(
                ($skipped) => {
                    #[test]
                    #[ignore = $reason]
                    fn $skipped() {
                        $crate::conformance_tests!(@body $make; $skipped);
                    }
                };
            )*
            ($d name:ident) => {
                #[test]
                fn $d name() {
                    $crate::conformance_tests!(@body $make; $d name);
                }
            };
        }
        $(__conformance_test!($behaviour);)*
    };
    (@body $make:expr; $behaviour:ident) => {
        std::thread::spawn(|| {
            let harness = $make;
            $crate::conformance::$behaviour(&harness);
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    };
}
