//! Writing several rules through ufw's own code in one process.
//!
//! One `ufw` call costs 0.1 to 0.4 s, and most of it is not the rule: each call starts Python,
//! loads ufw, and (when ufw is enabled) reloads ufw's user chains: `iptables -F` and `-Z` on
//! its user *logging* chains (`ufw-user-logging-input`, …: `chains['user']` in ufw 0.36), then
//! `iptables-restore -n` of the rules file, which replaces `ufw-user-input` in one transaction
//! (measured: no reading of the live table during 50 such calls lacked a rule). The
//! batch (`batch.py`, run with the interpreter of the `ufw` program itself) takes ufw's lock
//! (`/run/ufw.lock`, which every `ufw` command takes too, so concurrent calls wait), parses each
//! command with ufw's own parser and writes it with ufw's own `set_rule(rule,
//! allow_reload=False)`, exactly as `ufw` would write the files; and at the end loads each
//! family's rules file with one `iptables-restore -n`, the same file and tool ufw's reload uses,
//! but without the flush before it: the file declares ufw's user chains, so each is replaced in
//! one transaction and is never empty. The test `ufw_batch_writes_what_ufw_writes` proves that
//! the files and the live rules come out identical to what one `ufw` call per rule produces.
//!
//! The batch uses ufw's internal Python interface (`UFWFrontend`, `set_rule`), checked before
//! anything is done: a ufw without it answers "unsupported" and the backend falls back to one
//! call per rule.

use std::path::{Path, PathBuf};

use cf_allowlist_backend::tool::{self, ToolError};

/// The batch program.
pub const SCRIPT: &str = include_str!("batch.py");

/// The Python interpreter that runs the `ufw` program (from its `#!` line), if it is Python.
pub fn interpreter_of(program: &Path) -> Option<PathBuf> {
    let text = std::fs::read(program).ok()?;
    let first = text.split(|byte| *byte == b'\n').next()?;
    let first = std::str::from_utf8(first).ok()?;
    let interpreter = first.strip_prefix("#!")?.split_whitespace().next()?;
    let interpreter = PathBuf::from(interpreter);
    interpreter
        .file_name()?
        .to_str()?
        .starts_with("python")
        .then_some(interpreter)
}

/// Why a batch did not complete.
#[derive(Debug)]
pub enum BatchError {
    /// The installed ufw lacks what the batch needs.
    Unsupported(ToolError),
    /// A command or the live load failed.
    Failed(ToolError),
}

/// What a batch did.
#[derive(Debug)]
pub struct Outcome {
    /// The indexes of the commands that were written, in order.
    pub applied: Vec<usize>,
    /// Whether everything, the live load included, succeeded.
    pub result: Result<(), BatchError>,
}

/// Runs `commands` (each the arguments that would follow `ufw`) in one batch, with the
/// interpreter of the ufw `program`.
pub fn run(interpreter: &Path, program: &Path, commands: &[Vec<String>]) -> Outcome {
    let display = format!(
        "{} -c <batch of {} ufw commands>",
        interpreter.display(),
        commands.len()
    );
    let spawn_error = |source| ToolError::Spawn {
        command: display.clone(),
        source,
    };
    let input: String = commands
        .iter()
        .map(|args| format!("{}\n", args.join("\t")))
        .collect();
    // The batch is complete before the process starts (tool::output): a batch read half-way
    // must not look like a shorter one.
    let script_args: [&std::ffi::OsStr; 3] = ["-c".as_ref(), SCRIPT.as_ref(), program.as_ref()];
    let output = match tool::output(interpreter, script_args, Some(input.as_bytes())) {
        Ok(output) => output,
        Err(source) => {
            return Outcome {
                applied: Vec::new(),
                result: Err(BatchError::Failed(spawn_error(source))),
            };
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let applied = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("applied\t"))
        .filter_map(|rest| rest.split('\t').next()?.parse().ok())
        .collect();
    let result = if output.status.success() {
        Ok(())
    } else {
        let error = ToolError::Failed {
            command: display,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        };
        if output.status.code() == Some(4) {
            Err(BatchError::Unsupported(error))
        } else {
            Err(BatchError::Failed(error))
        }
    };
    Outcome { applied, result }
}
