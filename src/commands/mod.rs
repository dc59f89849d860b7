//! One function per command, each taking only resolved settings. Surveying, planning and
//! judging is [`crate::judgement`]'s; the shared part of `sync`, `rollback` and `restore`,
//! applying a judged plan with the backends it was judged with, lives here.

pub mod completions;
pub mod config;
pub mod doctor;
pub mod history;
pub mod purge;
pub mod rollback;
pub mod status;
pub mod sync;

use cf_allowlist_backend::{Backend, Change, ErrorKind};

use crate::error::Error;
use crate::plan::{BackendPlan, Plan};
use crate::printer::Printer;

/// Applies each backend's change, then reads the firewall back and checks it holds exactly
/// the target with its structure intact. A backend that refuses its plan as stale (the firewall
/// changed since it was observed) is observed and planned again, once, and `plans` is updated
/// to what was applied. When a backend fails after others were changed, the error says which
/// ones now hold `pending` (the generation the run would have recorded).
pub fn apply_plans(
    plans: &mut [BackendPlan],
    backends: &[Box<dyn Backend>],
    pending: &Pending,
    printer: &Printer,
) -> Result<(), Error> {
    let mut applied: Vec<String> = Vec::new();
    for (plan, backend) in plans.iter_mut().zip(backends) {
        apply_one(plan, backend.as_ref(), printer)
            .map_err(|error| partial(&applied, pending, error))?;
        if !plan.change.is_empty() {
            applied.push(plan.spec.describe());
        }
    }
    Ok(())
}

/// The generation a run is bringing the backends to, for messages about partial changes.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its number.
    pub generation: u64,
    /// Its counts, as `15 IPv4, 7 IPv6`.
    pub ranges: String,
}

/// Wraps `error` as a partial change when `applied` names backends already changed.
pub fn partial(applied: &[String], pending: &Pending, error: Error) -> Error {
    if applied.is_empty() {
        return error;
    }
    Error::Partial {
        applied: applied.to_vec(),
        generation: pending.generation,
        ranges: pending.ranges.clone(),
        source: Box::new(error),
    }
}

fn apply_one(
    plan: &mut BackendPlan,
    backend: &dyn Backend,
    printer: &Printer,
) -> Result<(), Error> {
    if plan.change.is_empty() {
        return Ok(());
    }
    match backend.apply(&plan.change) {
        Err(error) if error.kind == ErrorKind::Stale => {
            printer.warn(format!(
                "{}: the firewall changed since it was observed ({}); planned again",
                plan.spec.describe(),
                error.source
            ));
            let observed = backend.observe()?;
            plan.change = Change::between(&observed, &plan.change.target);
            plan.warnings = observed.warnings;
            backend.apply(&plan.change)?;
        }
        result => result?,
    }
    let after = backend.observe()?;
    let missing = plan.change.target.difference(&after.ranges);
    let extra = after.ranges.difference(&plan.change.target);
    if !missing.is_empty() || !extra.is_empty() || !after.repairs.is_empty() {
        let mut detail = Vec::new();
        if !missing.is_empty() {
            detail.push(format!("missing {}", missing.to_strings().join(", ")));
        }
        if !extra.is_empty() {
            detail.push(format!("unexpected {}", extra.to_strings().join(", ")));
        }
        detail.extend(
            after
                .repairs
                .iter()
                .map(|repair| format!("still to {repair}")),
        );
        return Err(Error::ReadBack {
            backend: backend.label(),
            detail: detail.join("; "),
        });
    }
    printer.note(&format!(
        "{}: read back {} ranges, as planned",
        plan.spec.describe(),
        after.ranges.len()
    ));
    Ok(())
}

/// Hands every backend's warnings and the plan's own to the printer: the one place a plan's
/// warnings are rendered.
pub fn print_warnings(plan: &Plan, printer: &Printer) {
    for backend in &plan.backends {
        for warning in &backend.warnings {
            printer.warn_repeating(format!("{}: {warning}", backend.spec.describe()));
        }
    }
    for warning in &plan.warnings {
        printer.warn_repeating(warning.clone());
    }
}
