//! One function per command, each taking only resolved settings. The shared part of `sync` and
//! `rollback`, planning a target against every backend and applying the plan, lives here.

pub mod completions;
pub mod config;
pub mod doctor;
pub mod history;
pub mod purge;
pub mod rollback;
pub mod status;
pub mod sync;

use cf_allowlist_backend::{Change, ErrorKind, Ranges};

use crate::backends::BackendSpec;
use crate::error::Error;
use crate::plan::{BackendPlan, shrink_refusals};
use crate::printer::Printer;

/// Observes every backend (as `owner`'s) and plans its change to `target`. Collects refusals:
/// parts that another state directory owns (always), and with `guard` the shrink refusals
/// against what each backend holds now.
pub fn plan_backends(
    specs: &[BackendSpec],
    target: &Ranges,
    guard: bool,
    owner: Option<&str>,
    refusals: &mut Vec<String>,
) -> Result<Vec<BackendPlan>, Error> {
    let mut plans = Vec::new();
    for spec in specs {
        let backend = spec.build(owner);
        let observed = backend.observe()?;
        if let Some(reason) = foreign_owner(spec, &observed, owner) {
            refusals.push(reason);
        }
        if guard {
            refusals.extend(shrink_refusals(&spec.describe(), &observed.ranges, target));
        }
        plans.push(BackendPlan {
            spec: spec.clone(),
            change: Change::between(&observed, target),
            warnings: observed.warnings,
            effective: None,
            blockers: Vec::new(),
        });
    }
    Ok(plans)
}

/// Why a backend's parts may not be adopted: they carry another state directory's mark.
pub fn foreign_owner(
    spec: &BackendSpec,
    observed: &cf_allowlist_backend::Observed,
    owner: Option<&str>,
) -> Option<String> {
    let others = other_owners(observed, owner);
    (!others.is_empty()).then(|| {
        format!(
            "{}: its parts belong to another cf-allowlist state directory (owner {}), and two state directories managing one firewall undo each other's changes; `purge` from that directory removes them, `--force` adopts them",
            spec.describe(),
            others.join(", ")
        )
    })
}

/// The owners other than `owner` named on a backend's parts.
pub fn other_owners<'a>(
    observed: &'a cf_allowlist_backend::Observed,
    owner: Option<&str>,
) -> Vec<&'a str> {
    observed
        .owners
        .iter()
        .map(String::as_str)
        .filter(|found| Some(*found) != owner)
        .collect()
}

/// Applies each backend's change, then reads the firewall back and checks it holds exactly
/// the target with its structure intact. A backend that refuses its plan as stale (the firewall
/// changed since it was observed) is observed and planned again, once, and `plans` is updated
/// to what was applied. When a backend fails after others were changed, the error says which
/// ones now hold `pending` (the generation the run would have recorded).
pub fn apply_plans(
    plans: &mut [BackendPlan],
    pending: &Pending,
    owner: Option<&str>,
    printer: &Printer,
) -> Result<(), Error> {
    let mut applied: Vec<String> = Vec::new();
    for plan in plans.iter_mut() {
        apply_one(plan, owner, printer).map_err(|error| partial(&applied, pending, error))?;
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

fn apply_one(plan: &mut BackendPlan, owner: Option<&str>, printer: &Printer) -> Result<(), Error> {
    if plan.change.is_empty() {
        return Ok(());
    }
    let backend = plan.spec.build(owner);
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

/// Hands every backend's warnings to the printer.
pub fn print_warnings(plans: &[BackendPlan], printer: &Printer) {
    for plan in plans {
        for warning in &plan.warnings {
            printer.warn_repeating(format!("{}: {warning}", plan.spec.describe()));
        }
    }
}

/// Runs the shadowing analysis for every backend that filters this host's input and records,
/// per backend, whether the target's ranges really reach its ports. Unsure findings and a
/// firewall that cannot be read become warnings: only a certain block makes a run "not
/// effective".
pub fn judge_effect(plans: &mut [BackendPlan], target: &Ranges, printer: &Printer) {
    if !plans.iter().any(|plan| plan.spec.filters_host_input()) || target.is_empty() {
        return;
    }
    let host = match cf_allowlist_netfilter::read_host() {
        Ok(host) => host,
        Err(error) => {
            printer.warn_repeating(format!(
                "could not check whether other firewall rules block the listed ranges: {error}"
            ));
            return;
        }
    };
    if host.docker_chains_present() {
        for plan in plans
            .iter()
            .filter(|plan| plan.spec.filters_host_input() && plan.spec.policy().restrict)
        {
            printer.warn_repeating(format!(
                "{}: Docker's chains exist: ports Docker publishes are forwarded to containers, not delivered to INPUT, so restrict does not cover them (filter them in Docker's DOCKER-USER chain, or publish them on 127.0.0.1 behind a local proxy)",
                plan.spec.describe()
            ));
        }
    }
    let ranges: Vec<ipnet::IpNet> = target.iter().copied().collect();
    for plan in plans
        .iter_mut()
        .filter(|plan| plan.spec.filters_host_input())
    {
        let summary = host.summary(&ranges, &plan.spec.policy().ports);
        plan.effective = summary.effective;
        plan.blockers = summary.blockers.iter().map(ToString::to_string).collect();
        for doubt in summary.doubts {
            printer.warn_repeating(format!(
                "{}: cannot tell whether the listed ranges get through: {doubt}",
                plan.spec.describe()
            ));
        }
    }
}
