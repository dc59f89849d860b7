//! `status`: the last sync, the current generation, and what each backend really holds against
//! it (drift). Read-only: no lock, no writes.

use cf_allowlist_backend::{Change, Ranges};

use crate::backends::BackendSpec;
use crate::error::Error;
use crate::guards::Guard;
use crate::judgement::{self, Request};
use crate::printer::Printer;
use crate::proof;
use crate::report::{BackendStatus, FamilyCounts, StatusReport};
use crate::state::{Generation, State, StateDir};

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
    let unrecorded = state_dir.read_unrecorded();
    // A backend a failed sync changed holds that sync's ranges, which no generation records:
    // compare it with those, and say so, rather than call them unexpected.
    let holds_unrecorded = |spec: &BackendSpec| {
        unrecorded
            .as_ref()
            .filter(|unrecorded| unrecorded.backends.contains(&spec.describe()))
    };
    let targets = backends
        .iter()
        .map(|spec| holds_unrecorded(spec).map_or(&target, |unrecorded| &unrecorded.ranges))
        .collect();
    if unrecorded.is_none()
        && let Some(stored) = proof::holding(state_dir, &state, generation.as_ref(), &backends)
    {
        for warning in backends
            .iter()
            .zip(&stored.backends)
            .flat_map(|(spec, verdict)| {
                verdict
                    .warnings
                    .iter()
                    .map(move |warning| format!("{}: {warning}", spec.describe()))
            })
            .chain(stored.warnings.iter().cloned())
        {
            printer.warn(warning);
        }
        let held = Change {
            target: target.clone(),
            unchanged: target.clone(),
            ..Change::default()
        };
        let statuses = backends
            .iter()
            .zip(stored.backends)
            .map(|(spec, verdict)| {
                BackendStatus::new(spec.kind().name(), spec.describe(), &held, verdict.warnings)
                    .with_effect(verdict.effective, verdict.blockers)
            })
            .collect();
        return Ok(report(&state, generation.as_ref(), &target, statuses));
    }
    let judged = judgement::judge(&Request::looking(
        &backends,
        targets,
        state.owner.as_deref(),
        &state.written,
    ))?;
    for spec in &backends {
        if let Some(unrecorded) = holds_unrecorded(spec) {
            printer.warn(format!(
                "{}: holds the ranges of a sync that failed at {} ({}), which no generation records; the next successful sync records them",
                spec.describe(),
                unrecorded.time,
                crate::validate::counts(&unrecorded.ranges)
            ));
        }
    }
    for refusal in judged
        .refusals
        .iter()
        .filter(|refusal| refusal.guard == Guard::Owner)
    {
        printer.warn(refusal.reason.clone());
    }
    for warning in judged
        .backends
        .iter()
        .flat_map(|plan| plan.warnings.iter().map(move |warning| (plan, warning)))
        .map(|(plan, warning)| format!("{}: {warning}", plan.spec.describe()))
        .chain(judged.warnings.iter().cloned())
    {
        printer.warn(warning);
    }
    let plans = judged.backends;
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
    Ok(report(&state, generation.as_ref(), &target, statuses))
}

fn report(
    state: &State,
    generation: Option<&Generation>,
    target: &Ranges,
    backends: Vec<BackendStatus>,
) -> StatusReport {
    StatusReport {
        last_sync: state.last_sync.as_ref().map(|last| last.time.clone()),
        generation: generation.as_ref().map(|generation| generation.generation),
        generation_time: generation
            .as_ref()
            .map(|generation| generation.time.clone()),
        sha256: generation
            .as_ref()
            .map(|generation| generation.sha256.clone()),
        ranges: FamilyCounts::of(target),
        pinned: state.pinned.clone(),
        purged_at: state.purged.clone(),
        backends,
    }
}
