//! All user output goes through the [`Printer`]: data on stdout (text, or exactly one JSON
//! object), diagnostics on stderr, filtered by `--quiet` and `--verbose`. cf-allowlist never
//! colours its output, so `NO_COLOR` needs no handling.
//!
//! Commands report warnings to the printer as they go; the printer holds them and renders them
//! with the command's [`Outcome`] once, at the end: on stderr, and in the JSON object's
//! `warnings` array. Cron mails whatever a job prints, so a sync that changed nothing prints
//! nothing unless `-v`, and warnings that would repeat on every such run (the builtin list's
//! age, plain http) are held back until a run has something to say.

use std::cell::RefCell;
use std::io::Write;

use crate::cli::OutputFormat;
use crate::report::{Outcome, Warning};

/// How much to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Errors only.
    Quiet,
    /// Changes, warnings and errors.
    Normal,
    /// Also what was checked.
    Verbose,
}

/// Writes output according to the user's flags.
#[derive(Debug)]
pub struct Printer {
    format: OutputFormat,
    verbosity: Verbosity,
    warnings: RefCell<Vec<Warning>>,
}

impl Printer {
    /// A printer for `format` at `verbosity`.
    pub fn new(format: OutputFormat, verbosity: Verbosity) -> Printer {
        Printer {
            format,
            verbosity,
            warnings: RefCell::default(),
        }
    }

    /// Whether stdout carries JSON.
    pub fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Whether `-v` was given.
    pub fn is_verbose(&self) -> bool {
        self.verbosity == Verbosity::Verbose
    }

    /// A warning that needs attention whenever it occurs.
    pub fn warn(&self, message: impl Into<String>) {
        self.push_warning(message.into(), false);
    }

    /// A warning that would repeat on every run while nothing changes: shown on stderr only
    /// when the run has something to say anyway (a change, a dry run, `status`, `-v`); always
    /// in the JSON `warnings`.
    pub fn warn_repeating(&self, message: impl Into<String>) {
        self.push_warning(message.into(), true);
    }

    fn push_warning(&self, message: String, repeating: bool) {
        let mut warnings = self.warnings.borrow_mut();
        if !warnings.iter().any(|warning| warning.message == message) {
            warnings.push(Warning { message, repeating });
        }
    }

    /// The warnings so far.
    pub fn warnings(&self) -> Vec<Warning> {
        self.warnings.borrow().clone()
    }

    /// A note on stderr, only with `-v`, right away.
    pub fn note(&self, message: &str) {
        if self.verbosity == Verbosity::Verbose {
            write_out(&mut std::io::stderr().lock(), &format!("{message}\n"));
        }
    }

    /// Renders a command's outcome, once: warnings and the error on stderr, the report on
    /// stdout (text, or the one JSON object, which is printed even with `--quiet` since a caller
    /// that asked for JSON parses it).
    pub fn finish(&self, outcome: &Outcome) {
        let warnings = self.warnings.borrow();
        let show_repeating = self.is_verbose() || outcome.shows_repeating_warnings();
        if self.verbosity > Verbosity::Quiet {
            let mut stderr = String::new();
            for warning in warnings.iter() {
                if show_repeating || !warning.repeating {
                    stderr.push_str(&format!("warning: {}\n", warning.message));
                }
            }
            write_out(&mut std::io::stderr().lock(), &stderr);
        }
        match self.format {
            OutputFormat::Json => {
                let mut text = serde_json::to_string_pretty(&outcome.to_json(&warnings))
                    .expect("JSON values serialise");
                text.push('\n');
                write_out(&mut std::io::stdout().lock(), &text);
            }
            OutputFormat::Text => {
                if let Some(report) = &outcome.report
                    && self.verbosity > Verbosity::Quiet
                {
                    write_out(
                        &mut std::io::stdout().lock(),
                        &report.text(self.is_verbose()),
                    );
                }
            }
        }
        if let Some(error) = &outcome.error {
            write_out(&mut std::io::stderr().lock(), &render_error(error));
        }
    }
}

impl Printer {
    /// `error: MESSAGE` on stderr, for the few commands that do not produce a report.
    pub fn fail(&self, message: &str) {
        write_out(
            &mut std::io::stderr().lock(),
            &format!("error: {message}\n"),
        );
    }
}

/// `error: …`, each cause on an indented `caused by:` line, then `hint: …`.
pub fn render_error(error: &crate::error::Error) -> String {
    let mut text = format!("error: {error}\n");
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        text.push_str(&format!("  caused by: {inner}\n"));
        cause = inner.source();
    }
    if let Some(hint) = error.hint() {
        text.push_str(&format!("hint: {hint}\n"));
    }
    text
}

fn write_out(stream: &mut dyn Write, text: &str) {
    if text.is_empty() {
        return;
    }
    // A closed pipe (`cf-allowlist history | head`) is not worth a panic.
    let _ = stream.write_all(text.as_bytes());
    let _ = stream.flush();
}

/// An error and its causes on one line, `error: cause: cause`, for one-line evidence.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    text
}
