//! A small builder for running `cf-allowlist` and checking what it printed and how it exited.

use std::path::Path;
use std::process::Command;

/// A command line to run.
pub struct Run {
    command: Command,
    display: String,
}

/// `cf-allowlist ARGS…` (optionally inside a namespace, see [`Run::in_netns`]).
pub fn cf(args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cf-allowlist"));
    command.args(args);
    command.env_remove("CF_ALLOWLIST_CONFIG");
    command.env_remove("CF_ALLOWLIST_STATE_DIR");
    Run {
        command,
        display: format!("cf-allowlist {}", args.join(" ")),
    }
}

/// `cf-allowlist --config CONFIG sync --source SOURCE`.
pub fn cf_sync(config: &Path, source: &Path) -> Run {
    cf(&[
        "--config",
        config.to_str().unwrap(),
        "sync",
        "--source",
        source.to_str().unwrap(),
    ])
}

/// `cf-allowlist sync --dry-run --source builtin ARGS…`: a dry run that needs no list server.
pub fn builtin_dry_run(args: &[&str]) -> Run {
    let mut all = vec!["sync", "--dry-run", "--source", "builtin"];
    all.extend_from_slice(args);
    cf(&all)
}

/// What a run printed and how it exited.
#[derive(Debug)]
pub struct Outcome {
    /// The command, for messages.
    pub command: String,
    /// Exit code.
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl Run {
    /// Runs the same arguments inside network namespace `netns` (`ip netns exec`).
    pub fn in_netns(self, netns: &str) -> Run {
        let display = format!("(in {netns}) {}", self.display);
        self.wrapped("ip", &["netns", "exec", netns], display)
    }

    /// Runs the same command under `strace`, following children, logging the netlink and
    /// socket sends (`sendto`, `sendmsg`, decoded) to `log`: to count what a run asks the
    /// kernel. Wrap after [`Run::in_netns`] (strace follows `ip netns exec` into the run).
    pub fn traced(self, log: &Path) -> Run {
        let log = log.display().to_string();
        let display = format!("(traced) {}", self.display);
        self.wrapped(
            "strace",
            &[
                "-f",
                "-qq",
                "-s",
                "256",
                "-e",
                "trace=sendto,sendmsg",
                "-o",
                &log,
            ],
            display,
        )
    }

    /// `wrapper WRAPPER_ARGS… PROGRAM ARGS…`, with the environment set so far.
    fn wrapped(self, wrapper: &str, wrapper_args: &[&str], display: String) -> Run {
        let program = self.command.get_program().to_owned();
        let args: Vec<_> = self.command.get_args().map(ToOwned::to_owned).collect();
        let mut command = Command::new(wrapper);
        command.args(wrapper_args).arg(program).args(args);
        // Whatever was set or removed so far carries over (the wrappers pass it on).
        for (key, value) in self.command.get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        Run { command, display }
    }

    /// Sets an environment variable for the run (before or after [`Run::in_netns`]).
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Run {
        self.command.env(key, value);
        self
    }

    /// Removes an environment variable for the run.
    pub fn env_remove(mut self, key: &str) -> Run {
        self.command.env_remove(key);
        self
    }

    /// Adds `--state-dir DIR` (a global flag, so it may follow the subcommand).
    pub fn state(mut self, dir: &Path) -> Run {
        self.command.arg("--state-dir").arg(dir);
        self
    }

    /// Runs it.
    pub fn run(mut self) -> Outcome {
        let output = self.command.output().expect("spawn cf-allowlist");
        Outcome {
            command: self.display,
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Outcome {
    /// Asserts the exit code.
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Outcome {
        assert_eq!(self.code, expected, "unexpected exit code\n{self}");
        self
    }

    /// Asserts stdout contains `text`.
    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Outcome {
        self.expect_text("stdout", text, true)
    }

    /// Asserts stdout does not contain `text`.
    #[track_caller]
    pub fn stdout_lacks(&self, text: &str) -> &Outcome {
        self.expect_text("stdout", text, false)
    }

    /// Asserts stderr contains `text`.
    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Outcome {
        self.expect_text("stderr", text, true)
    }

    /// Asserts stderr does not contain `text`.
    #[track_caller]
    pub fn stderr_lacks(&self, text: &str) -> &Outcome {
        self.expect_text("stderr", text, false)
    }

    /// Asserts that `stream` (`"stdout"` or `"stderr"`) contains `text` exactly when `wanted`.
    #[track_caller]
    fn expect_text(&self, stream: &str, text: &str, wanted: bool) -> &Outcome {
        let output = if stream == "stdout" {
            &self.stdout
        } else {
            &self.stderr
        };
        let found = if wanted { "lacks" } else { "has" };
        assert_eq!(
            output.contains(text),
            wanted,
            "{stream} {found} {text:?}\n{self}"
        );
        self
    }

    /// Asserts stdout is empty.
    #[track_caller]
    pub fn silent(&self) -> &Outcome {
        assert!(self.stdout.is_empty(), "stdout is not empty\n{self}");
        self
    }

    /// Asserts nothing was printed at all, on stdout or stderr (what cron mails).
    #[track_caller]
    pub fn says_nothing(&self) -> &Outcome {
        assert!(
            self.stdout.is_empty() && self.stderr.is_empty(),
            "the run printed something\n{self}"
        );
        self
    }

    /// stdout parsed as one JSON object, checked against `schema/output.schema.json`.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        let json: serde_json::Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not one JSON object ({error})\n{self}"));
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../schema/output.schema.json"))
                .expect("the schema is JSON");
        let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|error| format!("{error} at {}", error.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "stdout does not match the schema: {errors:#?}\n{self}"
        );
        json
    }
    /// Asserts the exit code, and that stdout is the JSON error object of that exit code whose
    /// message contains `text`; returns the object.
    #[track_caller]
    pub fn json_error(&self, code: i32, text: &str) -> serde_json::Value {
        self.code(code);
        let json = self.json();
        assert_eq!(json["exit_code"], code, "{json:#}");
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(text), "message lacks {text:?}\n{json:#}");
        json
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\nexit {}\n--- stdout\n{}--- stderr\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}
