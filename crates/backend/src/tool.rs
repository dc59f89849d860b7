//! Running a firewall's own command-line tool, shared by the backends that drive one.
//!
//! Cron and systemd start jobs with a short `PATH` (often `/usr/bin:/bin`), while `nft`,
//! `iptables` and `ufw` live in `/usr/sbin`; so a tool is looked up in `PATH` and then in the
//! usual sbin folders rather than failing with "not found" only when run from cron.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why running a tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The tool is not installed, or not where we looked.
    #[error("`{name}` was not found in PATH, /usr/sbin or /sbin")]
    NotFound {
        /// The tool's name.
        name: String,
    },
    /// The process could not be started or talked to.
    #[error("could not run `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The tool ran and reported failure.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
}

impl ToolError {
    /// What kind of backend failure this is.
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind;
        match self {
            ToolError::NotFound { .. } => ErrorKind::MissingTool,
            ToolError::Spawn { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                ErrorKind::Permission
            }
            ToolError::Spawn { .. } => ErrorKind::Transient,
            ToolError::Failed { stderr, .. } => {
                // Every netfilter tool says one of these when run without CAP_NET_ADMIN.
                let lower = stderr.to_ascii_lowercase();
                if [
                    "permission denied",
                    "operation not permitted",
                    "must be root",
                ]
                .iter()
                .any(|phrase| lower.contains(phrase))
                {
                    ErrorKind::Permission
                } else if lower.contains("resource temporarily unavailable")
                    || lower.contains("another app is currently holding the xtables lock")
                {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Rejected
                }
            }
        }
    }
}

/// Finds `name` in `PATH`, then in `/usr/sbin`, `/sbin`, `/usr/bin` and `/bin`. A program
/// found is remembered for this process (per `PATH`): a sync asks for `nft` several times, each
/// a walk over every directory.
pub fn locate(name: &str) -> Result<PathBuf, ToolError> {
    type Found = std::collections::HashMap<(Option<std::ffi::OsString>, String), PathBuf>;
    static FOUND: std::sync::Mutex<Option<Found>> = std::sync::Mutex::new(None);
    let path = std::env::var_os("PATH");
    let key = (path.clone(), name.to_owned());
    if let Some(found) = FOUND
        .lock()
        .ok()
        .and_then(|found| found.as_ref()?.get(&key).cloned())
        .filter(|found| is_executable(found))
    {
        return Ok(found);
    }
    let path_dirs = path
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let found = path_dirs
        .into_iter()
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| ToolError::NotFound {
            name: name.to_owned(),
        })?;
    if let Ok(mut cache) = FOUND.lock() {
        cache.get_or_insert_default().insert(key, found.clone());
    }
    Ok(found)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `program args…` with `input` on stdin; returns stdout if it exits successfully.
pub fn run(program: &Path, args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>, ToolError> {
    let command = std::iter::once(program.display().to_string())
        .chain(args.iter().map(|arg| (*arg).to_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let output = output(program, args, input).map_err(|source| ToolError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(ToolError::Failed {
            command,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output.stdout)
}

/// Runs `program args…` with `input` on stdin and returns what it did, whatever its exit
/// status (for callers that read a failing process's output too).
///
/// The input goes through an unnamed temporary file, complete before the program starts: if
/// we are killed while feeding a pipe, `nft -f -`, `iptables-restore` or a client reading a
/// list of steps would read a truncated input that may still parse, and apply half of a
/// change.
pub fn output<S: AsRef<std::ffi::OsStr>>(
    program: impl AsRef<std::ffi::OsStr>,
    args: impl IntoIterator<Item = S>,
    input: Option<&[u8]>,
) -> std::io::Result<std::process::Output> {
    let stdin = match input {
        Some(input) => {
            let mut file = tempfile::tempfile()?;
            file.write_all(input)?;
            file.seek(SeekFrom::Start(0))?;
            Stdio::from(file)
        }
        None => Stdio::null(),
    };
    Command::new(program)
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
}

/// Splits a line of `iptables-save` output into words the way iptables reads them: whitespace
/// separates, double quotes group (`--comment "cf-allowlist owner=…"`), a backslash inside
/// quotes escapes the next character. Returns the words and whether the quotes were balanced.
pub fn split_words(line: &str) -> (Vec<String>, bool) {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut has_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_word = true;
            }
            '\\' if in_quotes => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_word {
                    words.push(std::mem::take(&mut current));
                    has_word = false;
                }
            }
            c => {
                current.push(c);
                has_word = true;
            }
        }
    }
    if has_word {
        words.push(current);
    }
    (words, !in_quotes)
}
