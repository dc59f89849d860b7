//! The `on_change` hook: a program the admin names, run after a `sync`, `rollback` or
//! `restore` that changed a firewall or saw the upstream list change, with the run's JSON
//! report on its standard input.
//!
//! The hook only learns about a run that has already happened: whatever it does, the run's
//! exit code stays what it was, and a hook that fails, cannot be started or outlives its time
//! limit becomes a warning. It is run directly (an argument vector, never a shell), with its
//! stdout and stderr captured so that it cannot break the one JSON object `--output json`
//! prints; the tail of its stderr goes into the warning when it fails. Standard input is
//! written from another thread, so a hook that never reads it still ends at its time limit.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A resolved hook: the program, its arguments and how long it may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// The program (a path, or a name looked up in `PATH`) and its arguments.
    pub argv: Vec<String>,
    /// How long it may run before it is killed.
    pub timeout: Duration,
}

/// The default time limit of a hook.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a hook did not succeed; the message completes "the on_change hook …".
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// It could not be started.
    #[error("{program} could not be started")]
    Start {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It exited with a non-zero status or was killed by a signal.
    #[error("{program} failed ({status}){stderr}")]
    Failed {
        /// The program.
        program: String,
        /// How it ended.
        status: String,
        /// The tail of what it wrote to stderr, prefixed with ": " when there was any.
        stderr: String,
    },
    /// It ran longer than its time limit and was killed.
    #[error("{program} ran longer than {seconds} s and was stopped")]
    TimedOut {
        /// The program.
        program: String,
        /// The limit.
        seconds: u64,
    },
}

/// The hook's environment: which command ran and how it exited, for hooks that do not parse
/// the JSON.
pub struct Event<'a> {
    /// `sync`, `rollback` or `restore`.
    pub command: &'a str,
    /// The run's exit code.
    pub exit_code: i32,
    /// The run's JSON report, as `--output json` prints it.
    pub report: &'a serde_json::Value,
}

impl Hook {
    /// Runs the hook with `event`'s report on stdin and waits for it, at most its time limit.
    pub fn run(&self, event: &Event<'_>) -> Result<(), HookError> {
        let program = self.argv.first().cloned().unwrap_or_default();
        let mut child = Command::new(&program)
            .args(&self.argv[1..])
            .env("CF_ALLOWLIST_COMMAND", event.command)
            .env("CF_ALLOWLIST_EXIT_CODE", event.exit_code.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| HookError::Start {
                program: program.clone(),
                source,
            })?;
        let mut input = serde_json::to_vec_pretty(event.report).expect("JSON values serialise");
        input.push(b'\n');
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // A hook that does not read its input gets EPIPE or blocks us: neither may hold the run.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let readers = [
            drain(
                child
                    .stdout
                    .take()
                    .map(|out| Box::new(out) as Box<dyn Read + Send>),
            ),
            drain(
                child
                    .stderr
                    .take()
                    .map(|err| Box::new(err) as Box<dyn Read + Send>),
            ),
        ];
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|source| HookError::Start {
                program: program.clone(),
                source,
            })? {
                break Some(status);
            }
            if started.elapsed() >= self.timeout {
                // Our own child, by its handle: nothing else is signalled.
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = writer.join();
        let [_stdout, stderr] = readers.map(|reader| reader.join().unwrap_or_default());
        match status {
            None => Err(HookError::TimedOut {
                program,
                seconds: self.timeout.as_secs(),
            }),
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(HookError::Failed {
                program,
                status: status.to_string(),
                stderr: tail(&stderr),
            }),
        }
    }
}

/// Reads a pipe to its end in a thread (a full pipe would stall the hook).
fn drain(pipe: Option<Box<dyn Read + Send>>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// The last line or so of a hook's stderr, for a warning: `": text"`, or empty.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let chars: Vec<char> = text.chars().collect();
    let start = chars.len().saturating_sub(300);
    let tail: String = chars[start..].iter().collect();
    format!(": {}", tail.replace('\n', " | "))
}

/// Checks a hook's argument vector from the config or the command line.
pub fn resolve(argv: Vec<String>, timeout_secs: Option<u64>) -> Result<Hook, String> {
    if argv.first().is_none_or(|program| program.trim().is_empty()) {
        return Err(
            "on_change must name a program: on_change = [\"/path/to/program\", \"arg\"]".into(),
        );
    }
    let timeout = match timeout_secs {
        Some(0) => return Err("on_change_timeout_secs must be at least 1".into()),
        Some(seconds) => Duration::from_secs(seconds),
        None => DEFAULT_TIMEOUT,
    };
    Ok(Hook { argv, timeout })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &std::path::Path, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("hook.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    fn event(report: &serde_json::Value) -> Event<'_> {
        Event {
            command: "sync",
            exit_code: 0,
            report,
        }
    }

    #[test]
    fn the_hook_gets_the_report_on_stdin_and_the_command_in_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let program = script(
            dir.path(),
            &format!(
                "cat > {0}; echo \"$CF_ALLOWLIST_COMMAND $CF_ALLOWLIST_EXIT_CODE\" >> {0}",
                out.display()
            ),
        );
        let report = serde_json::json!({"command": "sync", "changed": true});
        let hook = resolve(vec![program], None).unwrap();
        hook.run(&event(&report)).unwrap();
        let written = std::fs::read_to_string(&out).unwrap();
        let (json, env) = written.rsplit_once("}\n").unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&format!("{json}}}")).unwrap(),
            report
        );
        assert_eq!(env.trim(), "sync 0");
    }

    #[test]
    fn a_failing_hook_says_how_it_ended_with_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let program = script(dir.path(), "echo 'smtp: connection refused' >&2; exit 3");
        let report = serde_json::json!({});
        let error = resolve(vec![program.clone()], None)
            .unwrap()
            .run(&event(&report))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            format!("{program} failed (exit status: 3): smtp: connection refused")
        );
    }

    #[test]
    fn a_hook_that_never_reads_and_never_ends_is_stopped_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let program = script(dir.path(), "exec sleep 30");
        // Larger than a pipe's buffer, so the writer would block forever on a hook that does
        // not read.
        let report = serde_json::json!({"list": vec!["198.51.100.0/24"; 100_000]});
        let started = Instant::now();
        let error = resolve(vec![program], Some(1))
            .unwrap()
            .run(&event(&report))
            .unwrap_err();
        assert!(
            matches!(error, HookError::TimedOut { seconds: 1, .. }),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_missing_program_and_an_empty_hook_are_errors() {
        let report = serde_json::json!({});
        let error = resolve(vec!["/nonexistent/cf-hook".into()], None)
            .unwrap()
            .run(&event(&report))
            .unwrap_err();
        assert!(matches!(error, HookError::Start { .. }), "{error}");
        assert!(resolve(Vec::new(), None).is_err());
        assert!(resolve(vec![" ".into()], None).is_err());
        assert!(resolve(vec!["x".into()], Some(0)).is_err());
    }
}
