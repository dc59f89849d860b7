//! What a command did, as typed values. A command decides and returns its report; the printer
//! renders it once, as text or as one JSON object, and [`crate::metrics`] writes the metrics
//! file from the same outcome, so that every output comes from one source.
//!
//! The JSON form of every report is wrapped in one envelope (see [`Outcome::to_json`]):
//! `command`, `exit_code`, `changed`, `warnings`, and `error` when the command failed. The
//! published schema is `schema/output.schema.json`.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use cf_allowlist_backend::{Change, Family, Ranges};

use crate::error::{Error, ExitStatus};
use crate::plan::Plan;
use crate::state::Pin;
use crate::validate::counts;

/// A warning, and whether it repeats on every run while nothing changes (such warnings are
/// shown only when a run has something to say anyway, so that cron stays quiet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The message, a lowercase phrase.
    pub message: String,
    /// Whether it would repeat on every no-op run.
    pub repeating: bool,
}

/// What a command ended with: its report, its error, or both (a refusal has a plan to show and
/// an error to report).
#[derive(Debug)]
pub struct Outcome {
    /// The command's name, as typed.
    pub command: &'static str,
    /// The report, when the command got far enough to make one.
    pub report: Option<Report>,
    /// The error, when it failed.
    pub error: Option<Error>,
}

impl Outcome {
    /// How the process exits.
    pub fn exit_status(&self) -> ExitStatus {
        // doctor follows the monitoring-plugin convention whether or not it failed.
        if let Some(Report::Doctor(report)) = &self.report {
            return report.exit_status();
        }
        match (&self.error, &self.report) {
            (Some(error), _) => error.exit_status(),
            (None, Some(report)) => report.exit_status(),
            (None, None) => ExitStatus::Success,
        }
    }

    /// Whether the firewall was changed (in a dry run: would be).
    pub fn changed(&self) -> bool {
        let by_report = self.report.as_ref().is_some_and(Report::changed);
        // An error after a partial apply still changed the firewall.
        let by_error = matches!(&self.error, Some(Error::Partial { .. }));
        by_report || by_error
    }

    /// Whether warnings that repeat on every run are shown (without `-v`): on an error, and
    /// when the report has something to say anyway.
    pub fn shows_repeating_warnings(&self) -> bool {
        self.error.is_some()
            || self
                .report
                .as_ref()
                .is_some_and(Report::shows_repeating_warnings)
    }

    /// The one JSON object this command prints. `warnings_shown` holds the warnings the text
    /// output prints on stderr (without `-v`), so that a wrapper (the Ansible module) warns
    /// exactly when the tool would.
    pub fn to_json(&self, warnings: &[Warning]) -> Value {
        let mut object = match self.report.as_ref().map(Report::to_json) {
            Some(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        object.insert("command".into(), json!(self.command));
        object.insert("exit_code".into(), json!(self.exit_status().code()));
        object.insert("changed".into(), json!(self.changed()));
        object.insert(
            "warnings".into(),
            json!(
                warnings
                    .iter()
                    .map(|warning| &warning.message)
                    .collect::<Vec<_>>()
            ),
        );
        let show_repeating = self.shows_repeating_warnings();
        object.insert(
            "warnings_shown".into(),
            json!(
                warnings
                    .iter()
                    .filter(|warning| show_repeating || !warning.repeating)
                    .map(|warning| &warning.message)
                    .collect::<Vec<_>>()
            ),
        );
        if let Some(error) = &self.error {
            object.insert("error".into(), error.to_json());
        }
        Value::Object(object)
    }
}

/// One command's report.
#[derive(Debug)]
pub enum Report {
    /// `sync`, `rollback`, `restore`.
    Sync(SyncReport),
    /// `status`.
    Status(StatusReport),
    /// `history`.
    History(HistoryReport),
    /// `purge`.
    Purge(PurgeReport),
    /// `unpin`.
    Unpin(UnpinReport),
    /// `doctor`.
    Doctor(DoctorReport),
    /// `config check`.
    Config(ConfigReport),
}

impl Report {
    /// The report as JSON (without the envelope).
    pub fn to_json(&self) -> Value {
        let value = match self {
            Report::Sync(report) => return report.to_json(),
            Report::Status(report) => serde_json::to_value(report),
            Report::History(report) => serde_json::to_value(report),
            Report::Purge(report) => serde_json::to_value(report),
            Report::Unpin(report) => serde_json::to_value(report),
            Report::Doctor(report) => serde_json::to_value(report),
            Report::Config(report) => serde_json::to_value(report),
        };
        value.expect("reports serialise")
    }

    /// The report as text for stdout; empty when there is nothing worth saying.
    pub fn text(&self, verbose: bool) -> String {
        match self {
            Report::Sync(report) => report.text(verbose),
            Report::Status(report) => report.text(),
            Report::History(report) => report.text(),
            Report::Purge(report) => report.text(),
            Report::Unpin(report) => report.text(),
            Report::Doctor(report) => report.text(),
            Report::Config(report) => report.text(),
        }
    }

    /// Whether the firewall was (or, in a dry run, would be) changed.
    pub fn changed(&self) -> bool {
        match self {
            Report::Sync(report) => report.changed(),
            Report::Purge(report) => !report.removed.is_empty(),
            Report::Status(_)
            | Report::History(_)
            | Report::Unpin(_)
            | Report::Doctor(_)
            | Report::Config(_) => false,
        }
    }

    /// How the process exits when nothing failed.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Report::Sync(report) => report.exit_status(),
            Report::Doctor(report) => report.exit_status(),
            _ => ExitStatus::Success,
        }
    }

    /// Whether warnings that repeat on every run should be shown: when the run has something
    /// to say anyway, and always for commands a person runs to look.
    pub fn shows_repeating_warnings(&self) -> bool {
        match self {
            Report::Sync(report) => report.has_news(),
            _ => true,
        }
    }
}

/// Which command applied a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncCommand {
    /// `sync`.
    Sync,
    /// `rollback`.
    Rollback,
    /// `restore`.
    Restore,
}

/// How a plan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// `--dry-run`: printed, nothing changed.
    Previewed {
        /// `--detailed-exitcode` was given.
        detailed_exitcode: bool,
    },
    /// A safety guard refused the plan; nothing changed.
    Refused,
    /// Applied (or already in place) and recorded as this generation.
    Applied {
        /// The generation the backends now hold.
        generation: u64,
    },
    /// Nothing was done, for this reason (restore with nothing saved, or after a purge).
    Skipped {
        /// Why, as a lowercase phrase.
        reason: String,
    },
}

/// What `sync`, `rollback` or `restore` planned and did.
#[derive(Debug, Clone)]
pub struct SyncReport {
    /// Which command.
    pub command: SyncCommand,
    /// The plan, as applied (re-planned once if a backend refused a stale one).
    pub plan: Plan,
    /// How it ended.
    pub outcome: SyncOutcome,
    /// How long this run waited for another's lock, when it had to wait.
    pub waited: Option<Duration>,
}

impl SyncReport {
    fn generation(&self) -> Option<u64> {
        match self.outcome {
            SyncOutcome::Applied { generation } => Some(generation),
            _ => None,
        }
    }

    fn changed(&self) -> bool {
        match self.outcome {
            SyncOutcome::Refused | SyncOutcome::Skipped { .. } => false,
            _ => self.plan.changes_firewall(),
        }
    }

    /// Whether the run has anything to report: a preview, a firewall change, an upstream
    /// change, a refusal, or a rollback.
    pub fn has_news(&self) -> bool {
        match &self.outcome {
            SyncOutcome::Previewed { .. } | SyncOutcome::Refused | SyncOutcome::Skipped { .. } => {
                true
            }
            SyncOutcome::Applied { .. } => {
                self.command == SyncCommand::Rollback
                    || self.plan.has_news()
                    || !self.blockers().is_empty()
            }
        }
    }

    /// What certainly blocks listed ranges on the firewall the plan leaves, after an apply or
    /// in its preview (empty when effective or unsure).
    pub fn blockers(&self) -> Vec<String> {
        match self.outcome {
            SyncOutcome::Applied { .. } | SyncOutcome::Previewed { .. } => self
                .plan
                .backends
                .iter()
                .filter(|backend| backend.effective == Some(false))
                .flat_map(|backend| {
                    backend
                        .blockers
                        .iter()
                        .map(|blocker| format!("{}: {blocker}", backend.spec.describe()))
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn exit_status(&self) -> ExitStatus {
        let no_backend = self.plan.backends.is_empty();
        if self.outcome == SyncOutcome::Refused {
            return ExitStatus::Refused;
        }
        if !self.blockers().is_empty() {
            return ExitStatus::NotEffective;
        }
        match self.outcome {
            SyncOutcome::Previewed {
                detailed_exitcode: true,
            } if self.plan.changes_firewall() || (no_backend && self.plan.has_news()) => {
                ExitStatus::ChangesPending
            }
            _ => ExitStatus::Success,
        }
    }

    fn to_json(&self) -> Value {
        let mut value = self.plan.to_json(self.generation());
        if let SyncOutcome::Skipped { reason } = &self.outcome {
            value["skipped"] = json!(reason);
        }
        value
    }

    fn text(&self, verbose: bool) -> String {
        let no_backend = self.plan.backends.is_empty();
        let mut text = String::new();
        match &self.outcome {
            SyncOutcome::Previewed { .. } => {
                text.push_str(&self.plan.render_text(no_backend));
                text.push_str(if self.plan.changes_firewall() {
                    "dry run: nothing was changed\n"
                } else if no_backend {
                    "dry run: no backend configured, so nothing would be applied\n"
                } else {
                    "dry run: nothing to change\n"
                });
            }
            SyncOutcome::Refused => {
                text.push_str(&self.plan.render_text(no_backend));
                if self.plan.dry_run {
                    text.push_str("dry run: nothing was changed\n");
                }
            }
            SyncOutcome::Skipped { reason } => {
                let _ = writeln!(text, "nothing done: {reason}");
            }
            SyncOutcome::Applied { generation } => {
                let ranges = counts(&self.plan.target);
                match self.command {
                    SyncCommand::Rollback => {
                        text.push_str(&self.plan.render_text(false));
                        let _ = writeln!(
                            text,
                            "rolled back to generation {generation} ({ranges}) and pinned it; `cf-allowlist unpin` to follow upstream again"
                        );
                    }
                    SyncCommand::Restore if self.plan.changes_firewall() || verbose => {
                        text.push_str(&self.plan.render_text(false));
                        let _ = writeln!(text, "restored generation {generation} ({ranges})");
                    }
                    SyncCommand::Sync if self.plan.has_news() || verbose => {
                        text.push_str(&self.plan.render_text(false));
                        if self.plan.changes_firewall() {
                            let _ = writeln!(text, "applied generation {generation} ({ranges})");
                        } else if self.plan.has_news() {
                            let _ = writeln!(text, "recorded generation {generation} ({ranges})");
                        } else {
                            let _ = writeln!(
                                text,
                                "nothing to change: generation {generation} ({ranges}) is in place"
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
        text
    }
}

/// One backend as `status` found it.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    /// Its kind.
    pub backend: &'static str,
    /// Where it writes.
    pub description: String,
    /// Whether it holds exactly the current generation, structure intact.
    pub in_sync: bool,
    /// How many ranges it allows.
    pub held: usize,
    /// Ranges of the generation it does not allow.
    pub missing: Vec<String>,
    /// Ranges it allows that the generation does not list.
    pub unexpected: Vec<String>,
    /// Structural repairs the next sync would make.
    pub repairs: Vec<String>,
    /// What the backend wants the user to know.
    pub warnings: Vec<String>,
    /// Whether the listed ranges really get through the whole host firewall (`None`: unsure
    /// or not a host firewall).
    pub effective: Option<bool>,
    /// What blocks them.
    pub blockers: Vec<String>,
}

impl BackendStatus {
    /// The same, with the shadowing analysis's verdict.
    pub fn with_effect(mut self, effective: Option<bool>, blockers: Vec<String>) -> BackendStatus {
        self.effective = effective;
        self.blockers = blockers;
        self
    }

    /// The status of a backend that observed `change` against the current generation.
    pub fn new(
        backend: &'static str,
        description: String,
        change: &Change,
        warnings: Vec<String>,
    ) -> BackendStatus {
        BackendStatus {
            backend,
            description,
            in_sync: change.is_empty(),
            held: change.unchanged.len() + change.remove.len(),
            missing: change.add.to_strings(),
            unexpected: change.remove.to_strings(),
            repairs: change.repairs.clone(),
            warnings,
            effective: None,
            blockers: Vec::new(),
        }
    }
}

/// Counts per family.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FamilyCounts {
    /// IPv4 ranges.
    pub ipv4: usize,
    /// IPv6 ranges.
    pub ipv6: usize,
}

impl FamilyCounts {
    /// The counts of `ranges`.
    pub fn of(ranges: &Ranges) -> FamilyCounts {
        FamilyCounts {
            ipv4: ranges.count(Family::V4),
            ipv6: ranges.count(Family::V6),
        }
    }
}

/// What `status` found.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// When the last sync ran.
    pub last_sync: Option<String>,
    /// The current generation.
    pub generation: Option<u64>,
    /// When it was first applied.
    #[serde(skip)]
    pub generation_time: Option<String>,
    /// Its digest.
    pub sha256: Option<String>,
    /// Its counts.
    pub ranges: FamilyCounts,
    /// The pin, if any.
    pub pinned: Option<Pin>,
    /// When every backend's rules were purged, if that is the last thing that happened.
    pub purged_at: Option<String>,
    /// Each backend.
    pub backends: Vec<BackendStatus>,
}

impl StatusReport {
    fn text(&self) -> String {
        let mut text = String::new();
        match (&self.last_sync, self.generation) {
            (Some(last), Some(generation)) => {
                let _ = writeln!(text, "last sync: {last}");
                let _ = writeln!(
                    text,
                    "generation {generation} from {}: {} IPv4, {} IPv6 (sha256 {})",
                    self.generation_time.as_deref().unwrap_or("?"),
                    self.ranges.ipv4,
                    self.ranges.ipv6,
                    self.sha256.as_deref().map_or("?", short_digest)
                );
            }
            _ => text.push_str("no sync yet\n"),
        }
        if let Some(pin) = &self.pinned {
            let _ = writeln!(
                text,
                "pinned to generation {} since {} (`cf-allowlist unpin` to follow upstream)",
                pin.generation, pin.since
            );
        }
        if let Some(when) = &self.purged_at {
            let _ = writeln!(
                text,
                "purged at {when}: restore does nothing until the next sync"
            );
        }
        for backend in &self.backends {
            let _ = writeln!(
                text,
                "{}: {}",
                backend.description,
                if backend.in_sync {
                    format!("in sync ({} ranges)", backend.held)
                } else {
                    describe_drift(backend)
                }
            );
            if backend.effective == Some(false) {
                let _ = writeln!(
                    text,
                    "  not effective: the listed ranges are blocked elsewhere"
                );
            }
            for blocker in &backend.blockers {
                let _ = writeln!(text, "  ! {blocker}");
            }
        }
        text
    }
}

fn describe_drift(backend: &BackendStatus) -> String {
    let mut parts = Vec::new();
    if !backend.missing.is_empty() {
        parts.push(format!("missing {}", backend.missing.join(", ")));
    }
    if !backend.unexpected.is_empty() {
        parts.push(format!("unexpected {}", backend.unexpected.join(", ")));
    }
    parts.extend(
        backend
            .repairs
            .iter()
            .map(|repair| format!("needs to {repair}")),
    );
    let refused: Vec<&String> = backend
        .repairs
        .iter()
        .filter(|repair| refused_repair(repair))
        .collect();
    if refused.is_empty() {
        return format!("drift: {} (the next sync repairs it)", parts.join("; "));
    }
    format!(
        "drift: {} (a sync with these options does not {}: change the backend's options or do it by hand)",
        parts.join("; "),
        refused
            .iter()
            .map(|repair| repair.split(" (").next().unwrap_or(repair))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Whether a backend reports a repair it will refuse with its current options (ufw's "enable
/// ufw … refused unless the backend's `enable` option is set"). A backend says so in the
/// repair's words; status and doctor must not promise that a sync does it.
pub fn refused_repair(repair: &str) -> bool {
    repair.contains("refused unless")
}

/// The first 16 characters of a digest, or all of it if shorter (never slice data read from
/// disk blindly).
pub fn short_digest(digest: &str) -> &str {
    digest.get(..16).unwrap_or(digest)
}

/// One saved generation, as `history` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    /// Its number.
    pub generation: u64,
    /// When it was first applied.
    pub time: String,
    /// IPv4 ranges.
    pub ipv4: usize,
    /// IPv6 ranges.
    pub ipv6: usize,
    /// Its digest.
    pub sha256: String,
    /// Where it came from.
    pub sources: Vec<String>,
    /// Whether it is the current one.
    pub current: bool,
    /// Whether it is pinned.
    pub pinned: bool,
}

/// What `history` found.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryReport {
    /// The readable generations, oldest first.
    pub generations: Vec<HistoryEntry>,
    /// Generations that could not be read, with why.
    pub unreadable: Vec<String>,
}

impl HistoryReport {
    fn text(&self) -> String {
        let mut text = String::new();
        for entry in &self.generations {
            let mut marks = Vec::new();
            if entry.current {
                marks.push("current");
            }
            if entry.pinned {
                marks.push("pinned");
            }
            let _ = writeln!(
                text,
                "{:>4}  {}  {:>3} IPv4 {:>3} IPv6  sha256 {}  {}{}",
                entry.generation,
                entry.time,
                entry.ipv4,
                entry.ipv6,
                entry.sha256.get(..12).unwrap_or(&entry.sha256),
                entry.sources.join(","),
                if marks.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", marks.join(", "))
                }
            );
        }
        if self.generations.is_empty() {
            text.push_str("no generations yet\n");
        }
        text
    }
}

/// What `purge` removed.
#[derive(Debug, Clone, Serialize)]
pub struct PurgeReport {
    /// Each backend purged.
    pub purged: Vec<String>,
    /// Every part removed, as `backend: part`.
    pub removed: Vec<String>,
}

impl PurgeReport {
    fn text(&self) -> String {
        let mut text = String::new();
        for part in &self.removed {
            let _ = writeln!(text, "removed {part}");
        }
        for backend in &self.purged {
            let _ = writeln!(text, "purged {backend}");
        }
        text
    }
}

/// What `unpin` did.
#[derive(Debug, Clone, Serialize)]
pub struct UnpinReport {
    /// The generation that was pinned, if one was.
    pub unpinned: Option<u64>,
}

impl UnpinReport {
    fn text(&self) -> String {
        match self.unpinned {
            Some(generation) => {
                format!("unpinned generation {generation}: the next sync follows upstream again\n")
            }
            None => "not pinned\n".to_owned(),
        }
    }
}

/// How bad one doctor finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Checked and fine.
    Ok,
    /// Works now, but needs attention (WARNING).
    Warning,
    /// Cloudflare cannot reach the origin, or soon will not (CRITICAL).
    Problem,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Problem => "problem",
        }
    }
}

/// One finding of `doctor`: a check, what it looked at, what it saw, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check: `state`, `coverage`, `shadowing`, `listener`, `tls`, `headroom`.
    pub check: &'static str,
    /// How bad it is.
    pub level: Level,
    /// What was looked at (a backend, a port, a counter).
    pub subject: String,
    /// One line of evidence.
    pub evidence: String,
    /// What to do about it (none when all is well).
    pub hint: Option<String>,
}

impl Finding {
    /// A finding without a hint.
    pub fn new(
        check: &'static str,
        level: Level,
        subject: impl Into<String>,
        evidence: impl Into<String>,
    ) -> Finding {
        Finding {
            check,
            level,
            subject: subject.into(),
            evidence: evidence.into(),
            hint: None,
        }
    }

    /// A finding at [`Level::Ok`]: checked and fine.
    pub fn ok(
        check: &'static str,
        subject: impl Into<String>,
        evidence: impl Into<String>,
    ) -> Finding {
        Finding::new(check, Level::Ok, subject, evidence)
    }

    /// A finding at [`Level::Warning`].
    pub fn warning(
        check: &'static str,
        subject: impl Into<String>,
        evidence: impl Into<String>,
    ) -> Finding {
        Finding::new(check, Level::Warning, subject, evidence)
    }

    /// A finding at [`Level::Problem`].
    pub fn problem(
        check: &'static str,
        subject: impl Into<String>,
        evidence: impl Into<String>,
    ) -> Finding {
        Finding::new(check, Level::Problem, subject, evidence)
    }

    /// The same with a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Finding {
        self.hint = Some(hint.into());
        self
    }
}

/// doctor's overall verdict, as the monitoring-plugin convention names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DoctorStatus {
    /// Exit 0: every check passed.
    Ok,
    /// Exit 1: the worst finding is a warning.
    Warning,
    /// Exit 2: at least one problem.
    Critical,
    /// Exit 3: doctor itself could not run.
    Unknown,
}

/// What `doctor` found.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// The verdict.
    pub status: DoctorStatus,
    /// The one-line summary (the text output's first line, after the status).
    pub summary: String,
    /// Every finding, problems first.
    pub checks: Vec<Finding>,
}

impl DoctorReport {
    /// The report of a doctor run over `checks`: the verdict is the worst finding.
    pub fn of(mut checks: Vec<Finding>) -> DoctorReport {
        // Problems first, then warnings, then what is fine; each group in check order.
        checks.sort_by_key(|finding| std::cmp::Reverse(finding.level));
        let count = |level: Level| checks.iter().filter(|f| f.level == level).count();
        let (problems, warnings) = (count(Level::Problem), count(Level::Warning));
        let status = if problems > 0 {
            DoctorStatus::Critical
        } else if warnings > 0 {
            DoctorStatus::Warning
        } else {
            DoctorStatus::Ok
        };
        let summary = match checks.first() {
            Some(worst) if worst.level > Level::Ok => {
                let mut parts = Vec::new();
                if problems > 0 {
                    parts.push(plural(problems, "problem"));
                }
                if warnings > 0 {
                    parts.push(plural(warnings, "warning"));
                }
                format!(
                    "{}: {} {}: {}",
                    parts.join(", "),
                    worst.check,
                    worst.subject,
                    worst.evidence
                )
            }
            _ => format!("{} passed", plural(checks.len(), "check")),
        };
        DoctorReport {
            status,
            summary,
            checks,
        }
    }

    /// The report of a doctor run that could not run at all.
    pub fn unknown(error: &Error) -> DoctorReport {
        DoctorReport {
            status: DoctorStatus::Unknown,
            summary: format!("doctor could not run: {error}"),
            checks: Vec::new(),
        }
    }

    /// doctor's exit code: the monitoring-plugin convention, not the other commands'.
    pub fn exit_status(&self) -> ExitStatus {
        match self.status {
            DoctorStatus::Ok => ExitStatus::Success,
            DoctorStatus::Warning => ExitStatus::Warning,
            DoctorStatus::Critical => ExitStatus::Critical,
            DoctorStatus::Unknown => ExitStatus::Unknown,
        }
    }

    fn text(&self) -> String {
        let status = match self.status {
            DoctorStatus::Ok => "OK",
            DoctorStatus::Warning => "WARNING",
            DoctorStatus::Critical => "CRITICAL",
            DoctorStatus::Unknown => "UNKNOWN",
        };
        let mut text = format!("CF-ALLOWLIST {status} - {}\n", self.summary);
        for finding in &self.checks {
            let _ = writeln!(
                text,
                "{:<8} {:<9} {}: {}",
                finding.level.word(),
                finding.check,
                finding.subject,
                finding.evidence
            );
            if let Some(hint) = &finding.hint {
                let _ = writeln!(text, "{:<18} hint: {hint}", "");
            }
        }
        text
    }
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}
/// What `config check` resolved.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigReport {
    /// The file checked (`None`: the default path, absent, so defaults only).
    pub config_file: Option<String>,
    /// The resolved settings.
    pub settings: ResolvedSettings,
}

/// The settings every command would run with, as `config check` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedSettings {
    /// The state directory.
    pub state_dir: String,
    /// The sources, in order.
    pub sources: Vec<String>,
    /// Each backend, described, with its saved form.
    pub backends: Vec<ResolvedBackend>,
    /// Refuse IPv4 ranges broader than this prefix length.
    pub broadest_prefix_v4: u8,
    /// Refuse IPv6 ranges broader than this prefix length.
    pub broadest_prefix_v6: u8,
    /// Seconds to connect to a source.
    pub connect_timeout_secs: u64,
    /// Seconds for a whole request.
    pub request_timeout_secs: u64,
    /// The largest answer accepted.
    pub max_body_bytes: u64,
    /// Seconds to wait for another run.
    pub lock_timeout_secs: u64,
    /// Days after which the builtin list's age warning shows on every run.
    pub builtin_max_age_days: u64,
}

/// One resolved backend.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedBackend {
    /// Its kind.
    pub kind: &'static str,
    /// The plan's description of it.
    pub description: String,
    /// The spec as the state records it.
    pub spec: serde_json::Value,
}

impl ConfigReport {
    fn text(&self) -> String {
        let settings = &self.settings;
        let mut text = format!(
            "{}: valid\n",
            self.config_file
                .as_deref()
                .unwrap_or("no config file (defaults)")
        );
        let _ = writeln!(text, "state_dir = {}", settings.state_dir);
        let _ = writeln!(text, "sources = {}", settings.sources.join(", "));
        if settings.backends.is_empty() {
            text.push_str("backends: none (sync needs --backend or a [[backend]] table)\n");
        }
        for backend in &settings.backends {
            let _ = writeln!(text, "backend {}", backend.description);
        }
        let _ = writeln!(
            text,
            "broadest prefixes /{} (IPv4), /{} (IPv6); timeouts {}s connect, {}s request, {}s lock; answers up to {} bytes; builtin list warned about past {} days",
            settings.broadest_prefix_v4,
            settings.broadest_prefix_v6,
            settings.connect_timeout_secs,
            settings.request_timeout_secs,
            settings.lock_timeout_secs,
            settings.max_body_bytes,
            settings.builtin_max_age_days
        );
        text
    }
}
