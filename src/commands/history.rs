//! `history`: the saved generations, oldest first. A generation that cannot be read (damaged,
//! or not matching its digest) is reported and skipped, not fatal.

use cf_allowlist_backend::Family;

use crate::error::Error;
use crate::printer::Printer;
use crate::report::{HistoryEntry, HistoryReport};
use crate::state::StateDir;

/// Lists the generations.
pub fn run(state_dir: &StateDir, printer: &Printer) -> Result<HistoryReport, Error> {
    let loaded = state_dir.load()?;
    for message in &loaded.recovered {
        printer.warn(message.clone());
    }
    let state = loaded.state;
    let mut report = HistoryReport {
        generations: Vec::new(),
        unreadable: Vec::new(),
    };
    for number in state_dir.generations()? {
        let generation = match state_dir.read_generation(number) {
            Ok(generation) => generation,
            Err(error) if error.is_corrupt() => {
                printer.warn(format!("skipped generation {number}: {error}"));
                report.unreadable.push(error.to_string());
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        report.generations.push(HistoryEntry {
            generation: number,
            time: generation.time,
            ipv4: generation.ranges.count(Family::V4),
            ipv6: generation.ranges.count(Family::V6),
            sha256: generation.sha256,
            sources: generation.sources,
            current: state.current_generation == Some(number),
            pinned: state
                .pinned
                .as_ref()
                .is_some_and(|pin| pin.generation == number),
        });
    }
    Ok(report)
}
