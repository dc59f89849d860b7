//! `purge`: remove everything the tool created from each backend, then check nothing of ours is
//! left. Saved generations stay, so a later sync (or rollback) can bring the rules back.

use crate::commands::foreign_owner;
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
    let recorded = state
        .last_sync
        .as_ref()
        .map(|last| last.backends.clone())
        .unwrap_or_default();
    let specs = if settings.backends.is_empty() {
        recorded.clone()
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
    for spec in &specs {
        let backend = spec.build(state.owner.as_deref());
        if let Some(others) = backend
            .observe()
            .ok()
            .and_then(|observed| foreign_owner(spec, &observed, state.owner.as_deref()))
        {
            printer.warn(format!("removing them anyway: {others}"));
        }
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
