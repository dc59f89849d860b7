//! The plan: what a sync (or rollback) will do, as a value. Dry-run prints it, apply executes
//! exactly it, JSON output serialises it; nothing decides twice.

use std::fmt::Write as _;

use serde_json::{Value, json};

use cf_allowlist_backend::{Change, Family, Ranges};

use crate::backends::BackendSpec;
use crate::guards::{Guard, Refusal};
use crate::state::Pin;
use crate::validate::counts;

/// How the list differs from the saved snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamChange {
    /// The generation compared against; `None` on a first run.
    pub previous_generation: Option<u64>,
    /// Ranges new upstream.
    pub added: Ranges,
    /// Ranges gone upstream.
    pub removed: Ranges,
}

impl UpstreamChange {
    /// The change from `previous` (generation number and ranges) to `ranges`.
    pub fn between(previous: Option<(u64, &Ranges)>, ranges: &Ranges) -> UpstreamChange {
        let empty = Ranges::new();
        let before = previous.map_or(&empty, |(_, ranges)| ranges);
        UpstreamChange {
            previous_generation: previous.map(|(number, _)| number),
            added: ranges.difference(before),
            removed: before.difference(ranges),
        }
    }
}

/// One backend's part of the plan.
#[derive(Debug, Clone)]
pub struct BackendPlan {
    /// The backend.
    pub spec: BackendSpec,
    /// What it must do.
    pub change: Change,
    /// What the backend wants the user to know.
    pub warnings: Vec<String>,
    /// Whether the target's ranges really reach the managed ports through the whole host
    /// firewall (the shadowing analysis): `Some(false)` when one is certainly blocked
    /// elsewhere, `None` when the analysis cannot be sure or does not apply.
    pub effective: Option<bool>,
    /// What blocks them, with a hint that works.
    pub blockers: Vec<String>,
}

/// Everything one run will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Whether this is a preview.
    pub dry_run: bool,
    /// Where the ranges came from.
    pub sources: Vec<String>,
    /// The ranges every backend is brought to.
    pub target: Ranges,
    /// The change against the snapshot (absent when pinned or rolling back).
    pub upstream: Option<UpstreamChange>,
    /// The pin in force, if any.
    pub pinned: Option<Pin>,
    /// Per backend.
    pub backends: Vec<BackendPlan>,
    /// Reasons a safety guard gives against the plan (empty when it passes or with --force).
    pub refusals: Vec<Refusal>,
    /// What the judgement wants the user to know about the plan as a whole (the shadowing
    /// analysis's doubts, Docker); rendered once, with the backends' own warnings.
    pub warnings: Vec<String>,
    /// Backends this state directory wrote to that are no longer configured: everything of
    /// ours there is removed once the configured backends hold the target.
    pub retired: Vec<BackendSpec>,
}

impl Plan {
    /// A plan that does nothing (for commands that ended before planning).
    pub fn empty() -> Plan {
        Plan {
            dry_run: false,
            sources: Vec::new(),
            target: Ranges::new(),
            upstream: None,
            pinned: None,
            backends: Vec::new(),
            refusals: Vec::new(),
            warnings: Vec::new(),
            retired: Vec::new(),
        }
    }

    /// The guards that refused the plan, each once.
    pub fn refused_by(&self) -> Vec<Guard> {
        let mut guards: Vec<Guard> = self.refusals.iter().map(|refusal| refusal.guard).collect();
        guards.sort_unstable();
        guards.dedup();
        guards
    }

    /// Whether any backend has something to write.
    pub fn changes_firewall(&self) -> bool {
        !self.retired.is_empty()
            || self
                .backends
                .iter()
                .any(|backend| !backend.change.is_empty())
    }

    /// Whether the plan has anything to report: firewall writes or an upstream change.
    pub fn has_news(&self) -> bool {
        self.changes_firewall()
            || self
                .upstream
                .as_ref()
                .is_some_and(|up| !up.added.is_empty() || !up.removed.is_empty())
    }

    /// The plan as readable lines: `+`/`-` per range, `~` per structural repair.
    pub fn render_text(&self, list_ranges: bool) -> String {
        let mut out = String::new();
        if let Some(upstream) = &self.upstream {
            match upstream.previous_generation {
                Some(generation) if !upstream.added.is_empty() || !upstream.removed.is_empty() => {
                    let _ = writeln!(
                        out,
                        "upstream changed since generation {generation}: {} added, {} removed",
                        upstream.added.len(),
                        upstream.removed.len()
                    );
                    push_ranges(&mut out, '+', &upstream.added);
                    push_ranges(&mut out, '-', &upstream.removed);
                }
                Some(_) => {}
                None => {
                    let _ = writeln!(out, "first run: no snapshot yet");
                }
            }
        }
        if list_ranges {
            let _ = writeln!(
                out,
                "{} ranges ({}) from {}:",
                self.target.len(),
                counts(&self.target),
                self.sources.join(", ")
            );
            push_ranges(&mut out, ' ', &self.target);
        }
        for backend in &self.backends {
            let change = &backend.change;
            if change.is_empty() {
                let _ = writeln!(
                    out,
                    "{}: in sync ({} ranges)",
                    backend.spec.describe(),
                    change.unchanged.len()
                );
                for blocker in &backend.blockers {
                    let _ = writeln!(out, "  ! {blocker}");
                }
                continue;
            }
            let _ = writeln!(out, "{}:", backend.spec.describe());
            for blocker in &backend.blockers {
                let _ = writeln!(out, "  ! {blocker}");
            }
            for repair in &change.repairs {
                let _ = writeln!(out, "  ~ {repair}");
            }
            push_ranges(&mut out, '+', &change.add);
            push_ranges(&mut out, '-', &change.remove);
            let _ = writeln!(out, "  = {} unchanged", change.unchanged.len());
        }
        for spec in &self.retired {
            let _ = writeln!(
                out,
                "{}:\n  ~ remove everything of ours (no longer configured; after the others are in place)",
                spec.describe()
            );
        }
        out
    }

    /// The plan as JSON; `generation` is the generation applied, if any.
    pub fn to_json(&self, generation: Option<u64>) -> Value {
        let backends: Vec<Value> = self
            .backends
            .iter()
            .map(|backend| {
                json!({
                    "backend": backend.spec.kind().name(),
                    "description": backend.spec.describe(),
                    "changed": !backend.change.is_empty(),
                    "added": backend.change.add.to_strings(),
                    "removed": backend.change.remove.to_strings(),
                    "unchanged": backend.change.unchanged.len(),
                    "repairs": backend.change.repairs,
                    "warnings": backend.warnings,
                    "effective": backend.effective,
                    "blockers": backend.blockers,
                })
            })
            .collect();
        json!({
            "changed": self.changes_firewall(),
            "dry_run": self.dry_run,
            "generation": generation,
            "pinned": self.pinned.as_ref().map(|pin| json!({"generation": pin.generation, "since": pin.since})),
            "sources": self.sources,
            "ranges": {
                "ipv4": self.target.count(Family::V4),
                "ipv6": self.target.count(Family::V6),
                "list": self.target.to_strings(),
            },
            "upstream": self.upstream.as_ref().map(|up| json!({
                "previous_generation": up.previous_generation,
                "added": up.added.to_strings(),
                "removed": up.removed.to_strings(),
            })),
            "backends": backends,
            "refused": self.refusals.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "refused_by": self.refused_by(),
            "retired": self.retired.iter().map(BackendSpec::describe).collect::<Vec<_>>(),
        })
    }
}

fn push_ranges(out: &mut String, marker: char, ranges: &Ranges) {
    for range in ranges {
        let _ = writeln!(out, "  {marker} {range}");
    }
}

/// The safety guard: reasons to refuse going from `before` to `after`, for each family that
/// would lose more than half of its ranges or become empty. `what` names the comparison.
pub fn shrink_refusals(what: &str, before: &Ranges, after: &Ranges) -> Vec<Refusal> {
    let mut reasons = Vec::new();
    // One walk of both sets in order (not a search of `after` for each range).
    let gone = before.difference(after);
    for family in Family::ALL {
        let had = before.count(family);
        if had == 0 {
            continue;
        }
        let removed = gone.count(family);
        if after.count(family) == 0 {
            reasons.push(Refusal::new(
                Guard::Shrink,
                format!("{what} would leave no {family} ranges (it has {had})"),
            ));
        } else if removed * 2 > had {
            reasons.push(Refusal::new(
                Guard::Shrink,
                format!(
                    "{what} would remove {removed} of its {had} {family} ranges (more than half)"
                ),
            ));
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ranges;

    #[test]
    fn the_guard_allows_small_changes_and_refuses_big_shrinks() {
        let before = ranges(&[
            "192.0.2.0/24",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "2001:db8::/32",
        ]);
        assert!(shrink_refusals("x", &before, &before).is_empty());
        let one_less = ranges(&["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32"]);
        assert!(shrink_refusals("x", &before, &one_less).is_empty());
        let two_less = ranges(&["192.0.2.0/24", "2001:db8::/32"]);
        assert_eq!(
            shrink_refusals("the list", &before, &two_less),
            vec![Refusal::new(
                Guard::Shrink,
                "the list would remove 2 of its 3 IPv4 ranges (more than half)"
            )]
        );
        let no_v6 = ranges(&["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"]);
        assert_eq!(
            shrink_refusals("the list", &before, &no_v6),
            vec![Refusal::new(
                Guard::Shrink,
                "the list would leave no IPv6 ranges (it has 1)"
            )]
        );
        assert!(shrink_refusals("x", &Ranges::new(), &no_v6).is_empty());
    }

    fn sample_plan() -> Plan {
        use crate::backends::BackendSpec;
        use cf_allowlist_backend::{Observed, Policy};
        let before = ranges(&["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32"]);
        let target = ranges(&["198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"]);
        let observed = Observed {
            ranges: before.clone(),
            repairs: vec!["insert rule \"cf-allowlist ipv4\" in inet filter input".to_owned()],
            ..Observed::default()
        };
        Plan {
            dry_run: true,
            sources: vec!["builtin".to_owned()],
            target: target.clone(),
            upstream: Some(UpstreamChange::between(Some((4, &before)), &target)),
            pinned: None,
            backends: vec![BackendPlan {
                spec: BackendSpec::Nftables {
                    policy: Policy {
                        ports: vec![80, 443],
                        restrict: false,
                    },
                    nftables: Default::default(),
                },
                change: Change::between(&observed, &target),
                warnings: Vec::new(),
                effective: None,
                blockers: Vec::new(),
            }],
            refusals: Vec::new(),
            warnings: Vec::new(),
            retired: Vec::new(),
        }
    }

    #[test]
    fn the_text_plan_reads_as_documented() {
        assert_eq!(
            sample_plan().render_text(false),
            "upstream changed since generation 4: 1 added, 1 removed
  + 203.0.113.0/24
  - 192.0.2.0/24
nftables (inet filter input, tcp 80,443):
  ~ insert rule \"cf-allowlist ipv4\" in inet filter input
  + 203.0.113.0/24
  - 192.0.2.0/24
  = 2 unchanged
"
        );
    }

    #[test]
    fn the_json_plan_has_the_documented_fields() {
        let json = sample_plan().to_json(None);
        assert_eq!(json["changed"], true);
        assert_eq!(json["dry_run"], true);
        assert_eq!(json["generation"], serde_json::Value::Null);
        assert_eq!(json["ranges"]["ipv4"], 2);
        assert_eq!(json["upstream"]["previous_generation"], 4);
        assert_eq!(json["backends"][0]["backend"], "nftables");
        assert_eq!(
            json["backends"][0]["added"],
            serde_json::json!(["203.0.113.0/24"])
        );
        assert_eq!(
            json["backends"][0]["removed"],
            serde_json::json!(["192.0.2.0/24"])
        );
        assert_eq!(json["backends"][0]["unchanged"], 2);
        assert_eq!(json["refused"], serde_json::json!([]));
    }

    #[test]
    fn the_upstream_change_is_the_difference_with_the_snapshot() {
        let before = ranges(&["192.0.2.0/24", "198.51.100.0/24"]);
        let after = ranges(&["198.51.100.0/24", "203.0.113.0/24"]);
        let change = UpstreamChange::between(Some((3, &before)), &after);
        assert_eq!(change.previous_generation, Some(3));
        assert_eq!(change.added, ranges(&["203.0.113.0/24"]));
        assert_eq!(change.removed, ranges(&["192.0.2.0/24"]));
    }
}
