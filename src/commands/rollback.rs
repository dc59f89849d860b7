//! `rollback` and `unpin`. Rolling back applies an earlier generation to the backends of the
//! last sync and pins it, so the next cron sync does not undo the rollback; `unpin` lets sync
//! follow upstream again.

use serde_json::json;

use crate::commands::{apply_plans, plan_backends, print_warnings};
use crate::error::{Error, ExitStatus};
use crate::plan::Plan;
use crate::printer::Printer;
use crate::settings::Settings;
use crate::state::{LastSync, Pin, StateDir, now_rfc3339};
use crate::validate::counts;

/// Applies generation `to` (default: the one before the current) and pins it.
pub fn run(settings: &Settings, to: Option<u64>, printer: &Printer) -> Result<ExitStatus, Error> {
    let state_dir = StateDir::new(&settings.state_dir);
    let _lock = state_dir.lock(settings.lock_timeout)?;
    let mut state = state_dir.read_state()?;
    let Some(last_sync) = state.last_sync.clone() else {
        return Err(Error::Rollback("no sync has been recorded yet".to_owned()));
    };
    let backends = if settings.backends.is_empty() {
        last_sync.backends.clone()
    } else {
        settings.backends.clone()
    };
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
    // A rollback is an explicit request for this exact list, so the shrink guard does not apply.
    let plans = plan_backends(&backends, &generation.ranges, false, &mut Vec::new())?;
    let pin = Pin {
        generation: number,
        since: now_rfc3339(),
    };
    let plan = Plan {
        dry_run: false,
        sources: generation.sources.clone(),
        target: generation.ranges.clone(),
        upstream: None,
        pinned: Some(pin.clone()),
        backends: plans,
        refusals: Vec::new(),
    };
    print_warnings(&plan.backends, printer);
    apply_plans(&plan.backends, printer)?;
    state.current_generation = Some(number);
    state.pinned = Some(pin);
    state.last_sync = Some(LastSync {
        time: now_rfc3339(),
        backends,
    });
    state_dir.write_state(&state)?;
    printer.json(&plan.to_json(Some(number)));
    let mut text = plan.render_text(false);
    text.push_str(&format!(
        "rolled back to generation {number} ({}) and pinned it; `cf-allowlist unpin` to follow upstream again\n",
        counts(&generation.ranges)
    ));
    printer.text(&text);
    Ok(ExitStatus::Success)
}

/// Removes the pin.
pub fn unpin(settings: &Settings, printer: &Printer) -> Result<ExitStatus, Error> {
    let state_dir = StateDir::new(&settings.state_dir);
    let _lock = state_dir.lock(settings.lock_timeout)?;
    let mut state = state_dir.read_state()?;
    let was = state.pinned.take();
    if was.is_some() {
        state_dir.write_state(&state)?;
    }
    printer.json(&json!({ "unpinned": was.as_ref().map(|pin| pin.generation) }));
    printer.text(&match was {
        Some(pin) => format!(
            "unpinned generation {}: the next sync follows upstream again\n",
            pin.generation
        ),
        None => "not pinned\n".to_owned(),
    });
    Ok(ExitStatus::Success)
}
