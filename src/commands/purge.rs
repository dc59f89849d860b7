//! `purge`: remove everything the tool created from each backend, then check nothing of ours is
//! left. Saved generations stay, so a later sync (or rollback) can bring the rules back.

use crate::error::Error;
use crate::printer::Printer;
use crate::report::PurgeReport;
use crate::settings::Settings;
use crate::state::{StateDir, now_rfc3339};

/// Purges the chosen backends (default: those of the last sync).
pub fn run(settings: &Settings, printer: &Printer) -> Result<PurgeReport, Error> {
    let state_dir = StateDir::new(&settings.state_dir);
    let _lock = state_dir.lock(settings.lock_timeout)?;
    let loaded = state_dir.load()?;
    for message in &loaded.recovered {
        printer.warn(message.clone());
    }
    let mut state = loaded.state;
    // Everything recorded: the last sync's backends and every backend written to since.
    let mut recorded = state
        .last_sync
        .as_ref()
        .map(|last| last.backends.clone())
        .unwrap_or_default();
    for spec in &state.written {
        if !recorded.contains(spec) {
            recorded.push(spec.clone());
        }
    }
    let specs = if settings.backends.is_empty() {
        recorded
    } else {
        settings.backends.clone()
    };
    if specs.is_empty() {
        return Err(Error::NoBackend);
    }
    let mut report = PurgeReport {
        purged: Vec::new(),
        removed: Vec::new(),
    };
    // The same survey as every command (each backend built once, observed once): purge's
    // target is nothing, and of the guards only ownership concerns it, as a warning.
    let nothing = cf_allowlist_backend::Ranges::new();
    let judged = crate::judgement::judge(&crate::judgement::Request::looking(
        &specs,
        vec![&nothing; specs.len()],
        state.owner.as_deref(),
        &state.written,
    ))?;
    for refusal in judged
        .refusals
        .iter()
        .filter(|refusal| refusal.guard == crate::guards::Guard::Owner)
    {
        printer.warn(format!(
            "removed parts that belonged to another cf-allowlist state directory: {}",
            refusal.reason
        ));
    }
    for (spec, backend) in specs.iter().zip(&judged.instances.configured) {
        let removed = backend.purge()?;
        let after = backend.observe()?;
        if !after.ranges.is_empty() {
            return Err(Error::ReadBack {
                backend: backend.label(),
                detail: format!(
                    "still allows {} after purge",
                    after.ranges.to_strings().join(", ")
                ),
            });
        }
        report.removed.extend(
            removed
                .into_iter()
                .map(|part| format!("{}: {part}", spec.kind().name())),
        );
        report.purged.push(spec.describe());
    }
    if let Some(last) = state.last_sync.as_mut() {
        last.backends.retain(|spec| !specs.contains(spec));
    }
    state.written.retain(|spec| !specs.contains(spec));
    if state
        .last_sync
        .as_ref()
        .is_none_or(|last| last.backends.is_empty())
    {
        state.purged = Some(now_rfc3339());
    }
    state_dir.write_state(&state)?;
    Ok(report)
}
