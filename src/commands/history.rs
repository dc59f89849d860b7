//! `history`: the saved generations, newest last.

use std::fmt::Write as _;

use serde_json::json;

use cf_allowlist_backend::Family;

use crate::error::{Error, ExitStatus};
use crate::printer::Printer;
use crate::state::StateDir;

/// Lists the generations.
pub fn run(state_dir: &StateDir, printer: &Printer) -> Result<ExitStatus, Error> {
    let state = state_dir.read_state()?;
    let mut text = String::new();
    let mut entries = Vec::new();
    for number in state_dir.generations()? {
        let generation = state_dir.read_generation(number)?;
        let mut marks = Vec::new();
        if state.current_generation == Some(number) {
            marks.push("current");
        }
        if state
            .pinned
            .as_ref()
            .is_some_and(|pin| pin.generation == number)
        {
            marks.push("pinned");
        }
        let _ = writeln!(
            text,
            "{number:>4}  {}  {:>3} IPv4 {:>3} IPv6  sha256 {}  {}{}",
            generation.time,
            generation.ranges.count(Family::V4),
            generation.ranges.count(Family::V6),
            &generation.sha256[..12],
            generation.sources.join(","),
            if marks.is_empty() {
                String::new()
            } else {
                format!("  ({})", marks.join(", "))
            }
        );
        entries.push(json!({
            "generation": number,
            "time": generation.time,
            "ipv4": generation.ranges.count(Family::V4),
            "ipv6": generation.ranges.count(Family::V6),
            "sha256": generation.sha256,
            "sources": generation.sources,
            "current": state.current_generation == Some(number),
            "pinned": state.pinned.as_ref().is_some_and(|pin| pin.generation == number),
        }));
    }
    if entries.is_empty() {
        text.push_str("no generations yet\n");
    }
    printer.text(&text);
    printer.json(&json!({ "generations": entries }));
    Ok(ExitStatus::Success)
}
