//! `purge`: remove everything the tool created from each backend, then check nothing of ours is
//! left. Saved generations stay, so a later sync (or rollback) can bring the rules back.

use serde_json::json;

use crate::error::{Error, ExitStatus};
use crate::printer::Printer;
use crate::settings::Settings;
use crate::state::StateDir;

/// Purges the chosen backends (default: those of the last sync).
pub fn run(settings: &Settings, printer: &Printer) -> Result<ExitStatus, Error> {
    let state_dir = StateDir::new(&settings.state_dir);
    let _lock = state_dir.lock(settings.lock_timeout)?;
    let mut state = state_dir.read_state()?;
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
    let mut purged = Vec::new();
    let mut text = String::new();
    for spec in &specs {
        let backend = spec.build();
        backend.purge()?;
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
        text.push_str(&format!("purged {}\n", spec.describe()));
        purged.push(spec.describe());
    }
    if let Some(last) = state.last_sync.as_mut() {
        last.backends.retain(|spec| !specs.contains(spec));
        state_dir.write_state(&state)?;
    }
    printer.text(&text);
    printer.json(&json!({ "purged": purged }));
    Ok(ExitStatus::Success)
}
