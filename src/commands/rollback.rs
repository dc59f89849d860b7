//! `rollback`, `restore` and `unpin`: the commands that apply a saved generation instead of
//! fetching. Rolling back applies an earlier generation and pins it, so the next cron sync does
//! not undo the rollback; restoring re-applies the current one without touching the network
//! (at boot, or after a reload of the firewall's saved configuration wiped runtime rules);
//! `unpin` lets sync follow upstream again.

use crate::backends::BackendSpec;
use crate::commands::{Pending, apply_plans, partial, print_warnings};
use crate::error::Error;
use crate::guards::Force;
use crate::judgement::{self, Request};
use crate::plan::Plan;
use crate::printer::Printer;
use crate::report::{SyncCommand, SyncOutcome, SyncReport, UnpinReport};
use crate::settings::Settings;
use crate::state::{Generation, LastSync, Loaded, Lock, Pin, StateDir, now_rfc3339};
use crate::validate::{self, Limits, counts};

use ipnet::IpNet;

/// Brings `backends` to `generation` (no shrink guard: the generation was applied before, and
/// asking for it is explicit) and returns the plan that was applied. The other guards apply as
/// to a sync: a plan that another directory owns, that restricts SSH, or that cuts Cloudflare's
/// reach is refused before anything is written. The generation's digest
/// was checked when it was read; its ranges pass the same rules as a fresh list's first, so a
/// state file someone edited cannot open the firewall to them.
fn apply_generation(
    generation: &Generation,
    backends: &[BackendSpec],
    pinned: Option<Pin>,
    limits: &Limits,
    owner: Option<&str>,
    force: &Force,
    printer: &Printer,
) -> Result<Plan, Error> {
    let networks: Vec<IpNet> = generation.ranges.iter().copied().collect();
    let what = format!("generation {}", generation.generation);
    let validated = validate::validate(&networks, limits).map_err(|refused| Error::Untrusted {
        what: what.clone(),
        reason: refused.to_string(),
    })?;
    if validated.ranges != generation.ranges {
        return Err(Error::Untrusted {
            what,
            reason: "it lists ranges inside other listed ranges, which sync never records"
                .to_owned(),
        });
    }
    let judged = judgement::judge(&Request {
        specs: backends,
        targets: vec![&generation.ranges; backends.len()],
        retired: &[],
        owner,
        // The last sync's backends, which this directory wrote.
        written: backends,
        shrink: false,
        writes: true,
        ssh: false,
    })?;
    let (forced, refusals): (Vec<_>, Vec<_>) = judged
        .refusals
        .into_iter()
        .partition(|refusal| force.overrides(refusal.guard));
    if !refusals.is_empty() {
        return Err(Error::Refused(refusals));
    }
    let mut warnings = judged.warnings;
    warnings.extend(
        forced
            .into_iter()
            .map(|refusal| format!("--force={} overrides: {}", refusal.guard, refusal.reason)),
    );
    let mut plan = Plan {
        dry_run: false,
        sources: generation.sources.clone(),
        target: generation.ranges.clone(),
        upstream: None,
        pinned,
        backends: judged.backends,
        refusals: Vec::new(),
        warnings,
        retired: Vec::new(),
    };
    print_warnings(&plan, printer);
    let pending = Pending {
        generation: generation.generation,
        ranges: counts(&generation.ranges),
    };
    apply_plans(
        &mut plan.backends,
        &judged.instances.configured,
        &pending,
        printer,
    )?;
    Ok(plan)
}

/// Takes the lock and loads the state, warning about anything that had to be recovered.
fn lock_and_load(
    settings: &Settings,
    printer: &Printer,
) -> Result<(StateDir, Lock, Loaded), Error> {
    let state_dir = StateDir::new(&settings.state_dir);
    let lock = state_dir.lock(settings.lock_timeout)?;
    let loaded = state_dir.load()?;
    for message in &loaded.recovered {
        printer.warn(message.clone());
    }
    Ok((state_dir, lock, loaded))
}

/// The backends to act on: those chosen with `--backend`, else those of the last sync.
fn chosen_backends(settings: &Settings, last_sync: Option<&LastSync>) -> Vec<BackendSpec> {
    if settings.backends.is_empty() {
        last_sync
            .map(|last| last.backends.clone())
            .unwrap_or_default()
    } else {
        settings.backends.clone()
    }
}

/// Applies generation `to` (default: the one before the current) and pins it.
pub fn run(
    settings: &Settings,
    to: Option<u64>,
    force: &Force,
    printer: &Printer,
) -> Result<SyncReport, Error> {
    let (state_dir, _lock, loaded) = lock_and_load(settings, printer)?;
    let mut state = loaded.state;
    if let Some(when) = &state.purged {
        return Err(Error::Rollback(format!(
            "the rules were purged at {when}; `cf-allowlist sync` brings them back, then roll back"
        )));
    }
    let backends = chosen_backends(settings, state.last_sync.as_ref());
    if backends.is_empty() {
        return Err(Error::Rollback(
            "no backend to roll back: no sync has been recorded (or every backend was purged)"
                .to_owned(),
        ));
    }
    let number = match (to, state.current_generation) {
        (Some(number), _) => number,
        (None, Some(current)) => state_dir
            .generations()?
            .into_iter()
            .rfind(|number| *number < current)
            .ok_or_else(|| {
                Error::Rollback(format!("generation {current} is the oldest one kept"))
            })?,
        (None, None) => return Err(Error::Rollback("no generation is current".to_owned())),
    };
    let generation = state_dir.read_generation(number)?;
    // The generation the firewall holds now is proven while nothing committed since the last
    // verified sync: the judgement's reading need not dump our sets from the kernel again.
    crate::proof::vouch(&state_dir, &state, loaded.current.as_ref(), &backends);
    let pin = Pin {
        generation: number,
        since: now_rfc3339(),
    };
    let plan = apply_generation(
        &generation,
        &backends,
        Some(pin.clone()),
        &settings.limits,
        state.owner.as_deref(),
        force,
        printer,
    )?;
    state.current_generation = Some(number);
    state.pinned = Some(pin);
    state.last_sync = Some(LastSync {
        time: now_rfc3339(),
        backends,
    });
    let changed: Vec<String> = changed_backends(&plan);
    state_dir.write_state(&state).map_err(|error| {
        partial(
            &changed,
            &Pending {
                generation: number,
                ranges: counts(&generation.ranges),
            },
            error.into(),
        )
    })?;
    Ok(SyncReport {
        command: SyncCommand::Rollback,
        plan,
        outcome: SyncOutcome::Applied { generation: number },
        waited: None,
    })
}

fn changed_backends(plan: &Plan) -> Vec<String> {
    plan.backends
        .iter()
        .filter(|backend| !backend.change.is_empty())
        .map(|backend| backend.spec.describe())
        .collect()
}

/// Re-applies the current generation (the pinned one, while pinned) to the backends of the last
/// sync, without fetching anything. With nothing saved yet it says so and succeeds, so that a
/// boot-time unit does not fail on a host that has never synced.
pub fn restore(settings: &Settings, printer: &Printer) -> Result<SyncReport, Error> {
    let skipped = |reason: &str| SyncReport {
        command: SyncCommand::Restore,
        plan: Plan::empty(),
        outcome: SyncOutcome::Skipped {
            reason: reason.to_owned(),
        },
        waited: None,
    };
    let nothing_saved = "no generation has been saved yet (run `cf-allowlist sync`)";
    // A boot unit on a host that never synced: taking the lock would create the directory.
    if !settings.state_dir.exists() {
        return Ok(skipped(nothing_saved));
    }
    let (_, _lock, loaded) = lock_and_load(settings, printer)?;
    let backends = chosen_backends(settings, loaded.state.last_sync.as_ref());
    if let Some(when) = &loaded.state.purged {
        // A boot unit must not bring back what an admin purged.
        return Ok(skipped(&format!(
            "the rules were purged at {when}; `cf-allowlist sync` brings them back"
        )));
    }
    if !loaded.recovered.is_empty() {
        return Err(Error::Untrusted {
            what: "the saved state".to_owned(),
            reason: format!(
                "it had to be recovered ({}), and restore applies only a state it can verify",
                loaded.recovered.join("; ")
            ),
        });
    }
    let Some(generation) = loaded.current else {
        return Ok(skipped(nothing_saved));
    };
    if backends.is_empty() {
        return Err(Error::NoBackend);
    }
    let plan = apply_generation(
        &generation,
        &backends,
        loaded.state.pinned.clone(),
        &settings.limits,
        loaded.state.owner.as_deref(),
        &Force::default(),
        printer,
    )?;
    Ok(SyncReport {
        command: SyncCommand::Restore,
        plan,
        outcome: SyncOutcome::Applied {
            generation: generation.generation,
        },
        waited: None,
    })
}

/// Removes the pin.
pub fn unpin(settings: &Settings, printer: &Printer) -> Result<UnpinReport, Error> {
    let (state_dir, _lock, loaded) = lock_and_load(settings, printer)?;
    let mut state = loaded.state;
    let was = state.pinned.take();
    if was.is_some() {
        state_dir.write_state(&state)?;
    }
    Ok(UnpinReport {
        unpinned: was.map(|pin| pin.generation),
    })
}
