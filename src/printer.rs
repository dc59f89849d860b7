//! All user output goes through the [`Printer`]: data on stdout (text or one JSON object),
//! diagnostics on stderr, filtered by `--quiet` and `--verbose`. cf-allowlist never colours its
//! output, so `NO_COLOR` needs no handling. Cron mails whatever a job prints, so a sync that
//! changed nothing prints nothing unless `-v`.

use std::io::Write;

use crate::cli::OutputFormat;

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
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    format: OutputFormat,
    verbosity: Verbosity,
}

impl Printer {
    /// A printer for `format` at `verbosity`.
    pub fn new(format: OutputFormat, verbosity: Verbosity) -> Printer {
        Printer { format, verbosity }
    }

    /// Whether stdout carries JSON.
    pub fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Whether `-v` was given.
    pub fn is_verbose(&self) -> bool {
        self.verbosity == Verbosity::Verbose
    }

    /// Text for stdout (text format only, not with `--quiet`).
    pub fn text(&self, text: &str) {
        if self.format == OutputFormat::Text
            && self.verbosity > Verbosity::Quiet
            && !text.is_empty()
        {
            write_out(&mut std::io::stdout().lock(), text);
        }
    }

    /// The command's JSON object (JSON format only; printed even with `--quiet`, since a
    /// caller that asked for JSON parses it).
    pub fn json(&self, value: &serde_json::Value) {
        if self.format == OutputFormat::Json {
            let mut text = serde_json::to_string_pretty(value).expect("JSON values serialise");
            text.push('\n');
            write_out(&mut std::io::stdout().lock(), &text);
        }
    }

    /// `warning: …` on stderr, unless `--quiet`.
    pub fn warn(&self, message: &str) {
        if self.verbosity > Verbosity::Quiet {
            write_out(
                &mut std::io::stderr().lock(),
                &format!("warning: {message}\n"),
            );
        }
    }

    /// A note on stderr, only with `-v`.
    pub fn note(&self, message: &str) {
        if self.verbosity == Verbosity::Verbose {
            write_out(&mut std::io::stderr().lock(), &format!("{message}\n"));
        }
    }

    /// `error: …`, each cause on an indented `caused by:` line, then `hint: …`; always shown.
    pub fn error(&self, error: &dyn std::error::Error, hint: Option<&str>) {
        let mut text = format!("error: {error}\n");
        let mut cause = error.source();
        while let Some(inner) = cause {
            text.push_str(&format!("  caused by: {inner}\n"));
            cause = inner.source();
        }
        if let Some(hint) = hint {
            text.push_str(&format!("hint: {hint}\n"));
        }
        write_out(&mut std::io::stderr().lock(), &text);
    }
}

fn write_out(stream: &mut dyn Write, text: &str) {
    // A closed pipe (`cf-allowlist history | head`) is not worth a panic.
    let _ = stream.write_all(text.as_bytes());
    let _ = stream.flush();
}
