//! One function per command, each taking only resolved settings. The shared part of `sync` and
//! `rollback`, planning a target against every backend and applying the plan, lives here.

pub mod completions;
pub mod history;
pub mod purge;
pub mod rollback;
pub mod status;
pub mod sync;

use cf_allowlist_backend::{Change, Ranges};

use crate::error::Error;
use crate::plan::{BackendPlan, shrink_refusals};
use crate::printer::Printer;
use crate::settings::BackendSpec;

/// Observes every backend and plans its change to `target`; with `guard`, collects the shrink
/// refusals against what each backend holds now.
pub fn plan_backends(
    specs: &[BackendSpec],
    target: &Ranges,
    guard: bool,
    refusals: &mut Vec<String>,
) -> Result<Vec<BackendPlan>, Error> {
    let mut plans = Vec::new();
    for spec in specs {
        let backend = spec.build();
        let observed = backend.observe()?;
        if guard {
            refusals.extend(shrink_refusals(&spec.describe(), &observed.ranges, target));
        }
        plans.push(BackendPlan {
            spec: spec.clone(),
            change: Change::between(&observed, target),
            warnings: observed.warnings,
        });
    }
    Ok(plans)
}

/// Applies each backend's change, then reads the firewall back and checks it holds exactly
/// the target with its structure intact.
pub fn apply_plans(plans: &[BackendPlan], printer: &Printer) -> Result<(), Error> {
    for plan in plans {
        if plan.change.is_empty() {
            continue;
        }
        let backend = plan.spec.build();
        backend.apply(&plan.change)?;
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
    }
    Ok(())
}

/// Prints every backend's warnings.
pub fn print_warnings(plans: &[BackendPlan], printer: &Printer) {
    for plan in plans {
        for warning in &plan.warnings {
            printer.warn(&format!("{}: {warning}", plan.spec.describe()));
        }
    }
}
