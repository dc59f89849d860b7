//! Prometheus metrics for the textfile collector: one file, rewritten atomically (temporary
//! file in the same directory, then rename) at the end of every `sync`, `rollback` and
//! `restore`, success or failure, from the same [`Outcome`] the printer renders.
//!
//! A failed run measures little (no generation was applied, no backend read back), so what a
//! run did not measure is carried over from the previous file: the time of the last success,
//! the generation, the counts and each backend's gauges survive a failure, and a refusal
//! counter keeps counting. The file is the only record of refusals: a refused run leaves the
//! state directory untouched by contract.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cf_allowlist_backend::Family;

use crate::report::{Outcome, Report, SyncOutcome};

/// The gauge doctor reads: refusals since the last successful run.
pub const REFUSALS_SINCE_SUCCESS: &str = "cf_allowlist_refusals_since_success";

/// One metric family: name, type, help.
const FAMILIES: [(&str, &str, &str); 13] = [
    (
        "cf_allowlist_last_run_timestamp_seconds",
        "gauge",
        "When the last sync, rollback or restore ended (Unix time).",
    ),
    (
        "cf_allowlist_last_run_exit_code",
        "gauge",
        "The last run's exit code (0 success, 1 error, 3 refused, 4 lock busy, 5 not effective).",
    ),
    (
        "cf_allowlist_last_success_timestamp_seconds",
        "gauge",
        "When a run last ended with exit code 0 (Unix time; 0 if never).",
    ),
    (
        "cf_allowlist_run_duration_seconds",
        "gauge",
        "How long the last run took.",
    ),
    (
        "cf_allowlist_generation",
        "gauge",
        "The generation the backends were last brought to.",
    ),
    (
        "cf_allowlist_ranges",
        "gauge",
        "Ranges in that generation, per address family.",
    ),
    (
        "cf_allowlist_pinned",
        "gauge",
        "1 while a rollback pins the generation (upstream is not followed).",
    ),
    (
        "cf_allowlist_last_change_ranges",
        "gauge",
        "Ranges added and removed upstream by the last run that changed the list.",
    ),
    (
        "cf_allowlist_backend_in_sync",
        "gauge",
        "1 when the backend holds exactly the generation, structure intact.",
    ),
    (
        "cf_allowlist_backend_effective",
        "gauge",
        "1 when the listed ranges get through the whole host firewall to the backend's ports, 0 when something else blocks them (absent when unsure or not a host firewall).",
    ),
    (
        "cf_allowlist_refusals_total",
        "counter",
        "Runs a safety guard refused.",
    ),
    (
        REFUSALS_SINCE_SUCCESS,
        "gauge",
        "Runs a safety guard refused since the last successful run.",
    ),
    (
        "cf_allowlist_last_run_success",
        "gauge",
        "1 when the last run ended with exit code 0.",
    ),
];

/// One sample: the labels (rendered, with braces, or empty) and the value.
type Samples = Vec<(String, f64)>;

/// Writes the metrics of `outcome` to `path` atomically. `started` is when the run began.
pub fn write(path: &Path, outcome: &Outcome, started: Instant) -> std::io::Result<()> {
    let previous = read_samples(path);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let text = render(
        &measure(outcome, now, started.elapsed().as_secs_f64()),
        &previous,
    );
    // The collector runs as another user (node_exporter): the file must be readable.
    cf_allowlist_backend::atomic::AtomicWrite {
        prefix: ".cf-allowlist-metrics",
        suffix: "",
        mode: 0o644,
    }
    .write(path, text.as_bytes())
}

/// What this run measured, by family; families it did not measure are absent.
fn measure(outcome: &Outcome, now: f64, duration: f64) -> BTreeMap<&'static str, Samples> {
    let mut measured: BTreeMap<&'static str, Samples> = BTreeMap::new();
    let mut one = |name: &'static str, value: f64| {
        measured.insert(name, vec![(String::new(), value)]);
    };
    let code = outcome.exit_status().code();
    let success = code == 0;
    one("cf_allowlist_last_run_timestamp_seconds", now);
    one("cf_allowlist_last_run_exit_code", f64::from(code));
    one("cf_allowlist_run_duration_seconds", duration);
    one(
        "cf_allowlist_last_run_success",
        if success { 1.0 } else { 0.0 },
    );
    if success {
        one("cf_allowlist_last_success_timestamp_seconds", now);
        one(REFUSALS_SINCE_SUCCESS, 0.0);
    }
    let Some(Report::Sync(report)) = &outcome.report else {
        return measured;
    };
    let plan = &report.plan;
    match &report.outcome {
        SyncOutcome::Applied { generation } => {
            measured.insert(
                "cf_allowlist_generation",
                vec![(String::new(), *generation as f64)],
            );
            measured.insert(
                "cf_allowlist_ranges",
                Family::ALL
                    .iter()
                    .map(|family| {
                        let name = match family {
                            Family::V4 => "ipv4",
                            Family::V6 => "ipv6",
                        };
                        (
                            format!("{{family=\"{name}\"}}"),
                            plan.target.count(*family) as f64,
                        )
                    })
                    .collect(),
            );
            measured.insert(
                "cf_allowlist_pinned",
                vec![(String::new(), if plan.pinned.is_some() { 1.0 } else { 0.0 })],
            );
            if let Some(upstream) = plan
                .upstream
                .as_ref()
                .filter(|upstream| !upstream.added.is_empty() || !upstream.removed.is_empty())
            {
                measured.insert(
                    "cf_allowlist_last_change_ranges",
                    vec![
                        (
                            "{direction=\"added\"}".to_owned(),
                            upstream.added.len() as f64,
                        ),
                        (
                            "{direction=\"removed\"}".to_owned(),
                            upstream.removed.len() as f64,
                        ),
                    ],
                );
            }
            // Every backend read back the target before the generation was recorded.
            let backends = |value: &dyn Fn(&crate::plan::BackendPlan) -> Option<f64>| {
                plan.backends
                    .iter()
                    .filter_map(|backend| {
                        value(backend).map(|value| (backend_label(&backend.spec.describe()), value))
                    })
                    .collect::<Samples>()
            };
            measured.insert("cf_allowlist_backend_in_sync", backends(&|_| Some(1.0)));
            measured.insert(
                "cf_allowlist_backend_effective",
                backends(&|backend| {
                    backend
                        .effective
                        .map(|effective| f64::from(u8::from(effective)))
                }),
            );
        }
        SyncOutcome::Refused => {
            measured.insert(
                "cf_allowlist_backend_in_sync",
                plan.backends
                    .iter()
                    .map(|backend| {
                        (
                            backend_label(&backend.spec.describe()),
                            f64::from(u8::from(backend.change.is_empty())),
                        )
                    })
                    .collect(),
            );
        }
        SyncOutcome::Previewed { .. } | SyncOutcome::Skipped { .. } => {}
    }
    measured
}

/// `{backend="…"}`, escaped as the text format requires.
fn backend_label(description: &str) -> String {
    let escaped = description
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("{{backend=\"{escaped}\"}}")
}

/// The file: every family with HELP and TYPE, this run's samples or else the previous file's.
fn render(
    measured: &BTreeMap<&'static str, Samples>,
    previous: &BTreeMap<String, Samples>,
) -> String {
    let refused = measured
        .get("cf_allowlist_last_run_exit_code")
        .and_then(|samples| samples.first())
        .is_some_and(|(_, code)| *code == 3.0);
    let mut text = String::new();
    for (name, kind, help) in FAMILIES {
        let previous_value = || {
            previous
                .get(name)
                .and_then(|samples| samples.first())
                .map_or(0.0, |(_, value)| *value)
        };
        let samples: Samples = match name {
            "cf_allowlist_refusals_total" => {
                vec![(
                    String::new(),
                    previous_value() + if refused { 1.0 } else { 0.0 },
                )]
            }
            REFUSALS_SINCE_SUCCESS if refused => vec![(String::new(), previous_value() + 1.0)],
            "cf_allowlist_last_success_timestamp_seconds" if !measured.contains_key(name) => {
                vec![(String::new(), previous_value())]
            }
            _ => match measured.get(name).or_else(|| previous.get(name)) {
                Some(samples) => samples.clone(),
                None => continue,
            },
        };
        let _ = writeln!(text, "# HELP {name} {help}");
        let _ = writeln!(text, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(text, "{name}{labels} {value}");
        }
    }
    text
}

/// The samples of a metrics file by family (name without labels); empty when the file is
/// missing or unreadable.
fn read_samples(path: &Path) -> BTreeMap<String, Samples> {
    let mut samples: BTreeMap<String, Samples> = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return samples;
    };
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.find('{') {
            Some(brace) => series.split_at(brace),
            None => (series, ""),
        };
        samples
            .entry(name.to_owned())
            .or_default()
            .push((labels.to_owned(), value));
    }
    samples
}

/// The unlabelled values of a metrics file, by name (for `doctor`).
pub fn read_values(path: &Path) -> BTreeMap<String, f64> {
    read_samples(path)
        .into_iter()
        .filter_map(|(name, samples)| {
            samples
                .iter()
                .find(|(labels, _)| labels.is_empty())
                .map(|(_, value)| (name, *value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_run_did_not_measure_is_carried_over_from_the_previous_file() {
        let mut previous: BTreeMap<String, Samples> = BTreeMap::new();
        previous.insert(
            "cf_allowlist_backend_effective".into(),
            vec![("{backend=\"nftables (inet filter input)\"}".into(), 0.0)],
        );
        previous.insert(
            "cf_allowlist_last_success_timestamp_seconds".into(),
            vec![(String::new(), 100.0)],
        );
        previous.insert(
            "cf_allowlist_refusals_total".into(),
            vec![(String::new(), 2.0)],
        );
        let mut measured: BTreeMap<&'static str, Samples> = BTreeMap::new();
        measured.insert(
            "cf_allowlist_last_run_exit_code",
            vec![(String::new(), 3.0)],
        );
        let text = render(&measured, &previous);
        assert!(text.contains(
            "cf_allowlist_backend_effective{backend=\"nftables (inet filter input)\"} 0\n"
        ));
        assert!(text.contains("cf_allowlist_last_success_timestamp_seconds 100\n"));
        assert!(text.contains("cf_allowlist_refusals_total 3\n"));
        assert!(text.contains("# TYPE cf_allowlist_refusals_total counter\n"));
        assert!(text.contains("cf_allowlist_refusals_since_success 1\n"));
        // Never measured and never written: no family at all, not an empty one.
        assert!(!text.contains("cf_allowlist_generation"));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(
            backend_label("a \"b\" \\c"),
            "{backend=\"a \\\"b\\\" \\\\c\"}"
        );
    }
}
