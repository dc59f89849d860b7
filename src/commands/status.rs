//! `status`: the last sync, the current generation, and what each backend really holds against
//! it (drift). Read-only: no lock, no writes.

use std::fmt::Write as _;

use serde_json::json;

use cf_allowlist_backend::{Change, Family, Ranges};

use crate::backends::BackendSpec;
use crate::error::{Error, ExitStatus};
use crate::printer::Printer;
use crate::state::StateDir;

/// Prints the status; `backends` overrides those of the last sync.
pub fn run(
    state_dir: &StateDir,
    backends: Option<Vec<BackendSpec>>,
    printer: &Printer,
) -> Result<ExitStatus, Error> {
    let loaded = state_dir.load()?;
    for message in &loaded.recovered {
        printer.warn(message);
    }
    let (state, generation) = (loaded.state, loaded.current);
    let backends = backends
        .or_else(|| state.last_sync.as_ref().map(|last| last.backends.clone()))
        .unwrap_or_default();
    let target = generation
        .as_ref()
        .map(|generation| generation.ranges.clone())
        .unwrap_or_default();

    let mut text = String::new();
    let mut backend_json = Vec::new();
    match (&state.last_sync, &generation) {
        (Some(last), Some(generation)) => {
            let _ = writeln!(text, "last sync: {}", last.time);
            let _ = writeln!(
                text,
                "generation {} from {}: {} IPv4, {} IPv6 (sha256 {})",
                generation.generation,
                generation.time,
                generation.ranges.count(Family::V4),
                generation.ranges.count(Family::V6),
                &generation.sha256[..16]
            );
        }
        _ => text.push_str("no sync yet\n"),
    }
    if let Some(pin) = &state.pinned {
        let _ = writeln!(
            text,
            "pinned to generation {} since {} (`cf-allowlist unpin` to follow upstream)",
            pin.generation, pin.since
        );
    }
    for spec in &backends {
        let observed = spec.build().observe()?;
        let change = Change::between(&observed, &target);
        let in_sync = change.is_empty();
        let _ = writeln!(
            text,
            "{}: {}",
            spec.describe(),
            if in_sync {
                format!("in sync ({} ranges)", observed.ranges.len())
            } else {
                describe_drift(&change)
            }
        );
        for warning in &observed.warnings {
            printer.warn(&format!("{}: {warning}", spec.describe()));
        }
        backend_json.push(json!({
            "backend": spec.kind(),
            "description": spec.describe(),
            "in_sync": in_sync,
            "missing": change.add.to_strings(),
            "unexpected": change.remove.to_strings(),
            "repairs": change.repairs,
            "warnings": observed.warnings,
        }));
    }
    printer.text(&text);
    printer.json(&json!({
        "last_sync": state.last_sync.as_ref().map(|last| &last.time),
        "generation": generation.as_ref().map(|generation| generation.generation),
        "sha256": generation.as_ref().map(|generation| &generation.sha256),
        "ranges": {"ipv4": target.count(Family::V4), "ipv6": target.count(Family::V6)},
        "pinned": state.pinned.as_ref().map(|pin| json!({"generation": pin.generation, "since": pin.since})),
        "backends": backend_json,
    }));
    Ok(ExitStatus::Success)
}

fn describe_drift(change: &Change) -> String {
    let list = |ranges: &Ranges| ranges.to_strings().join(", ");
    let mut parts = Vec::new();
    if !change.add.is_empty() {
        parts.push(format!("missing {}", list(&change.add)));
    }
    if !change.remove.is_empty() {
        parts.push(format!("unexpected {}", list(&change.remove)));
    }
    parts.extend(
        change
            .repairs
            .iter()
            .map(|repair| format!("needs to {repair}")),
    );
    format!("drift: {} (the next sync repairs it)", parts.join("; "))
}
