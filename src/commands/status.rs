//! `status`: the last sync, the current generation, and what each backend really holds against
//! it (drift). Read-only: no lock, no writes.

use cf_allowlist_backend::Change;

use crate::backends::BackendSpec;
use crate::commands::{foreign_owner, judge_effect};
use crate::error::Error;
use crate::plan::BackendPlan;
use crate::printer::Printer;
use crate::report::{BackendStatus, FamilyCounts, StatusReport};
use crate::state::StateDir;

/// Reports the status; `backends` overrides those of the last sync.
pub fn run(
    state_dir: &StateDir,
    backends: Option<Vec<BackendSpec>>,
    printer: &Printer,
) -> Result<StatusReport, Error> {
    let loaded = state_dir.load()?;
    for message in &loaded.recovered {
        printer.warn(message.clone());
    }
    let (state, generation) = (loaded.state, loaded.current);
    let backends = backends
        .or_else(|| state.last_sync.as_ref().map(|last| last.backends.clone()))
        .unwrap_or_default();
    let target = generation
        .as_ref()
        .map(|generation| generation.ranges.clone())
        .unwrap_or_default();
    let mut plans = Vec::new();
    for spec in &backends {
        let observed = spec.build(state.owner.as_deref()).observe()?;
        let change = Change::between(&observed, &target);
        if let Some(reason) = foreign_owner(spec, &observed, state.owner.as_deref()) {
            printer.warn(reason);
        }
        for warning in &observed.warnings {
            printer.warn(format!("{}: {warning}", spec.describe()));
        }
        plans.push(BackendPlan {
            spec: spec.clone(),
            change,
            warnings: observed.warnings,
            effective: None,
            blockers: Vec::new(),
        });
    }
    judge_effect(&mut plans, &target, printer);
    let statuses = plans
        .into_iter()
        .map(|plan| {
            BackendStatus::new(
                plan.spec.kind().name(),
                plan.spec.describe(),
                &plan.change,
                plan.warnings,
            )
            .with_effect(plan.effective, plan.blockers)
        })
        .collect();
    Ok(StatusReport {
        last_sync: state.last_sync.as_ref().map(|last| last.time.clone()),
        generation: generation.as_ref().map(|generation| generation.generation),
        generation_time: generation
            .as_ref()
            .map(|generation| generation.time.clone()),
        sha256: generation
            .as_ref()
            .map(|generation| generation.sha256.clone()),
        ranges: FamilyCounts::of(&target),
        pinned: state.pinned.clone(),
        purged_at: state.purged.clone(),
        backends: statuses,
    })
}
