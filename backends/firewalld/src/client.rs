//! Talking to firewalld: our client program (`client.py`), run with the interpreter of
//! firewalld's own `firewall-cmd`, so that it uses the same client library over the same
//! D-Bus interface.
//!
//! One `firewall-cmd` is one Python start (~0.2 to 0.3 s) and one step; a sync that changes
//! runtime and permanent configuration would take a dozen. The client instead reads
//! everything an observation needs (both ipsets and every zone's rich rules, runtime and
//! permanent) in one process, and runs the whole list of an apply's steps in another, printing
//! `done N` after each so that a failure reports what was already applied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cf_allowlist_backend::tool;
use serde::{Deserialize, Serialize};

/// The client program.
pub const SCRIPT: &str = include_str!("client.py");

/// What the client prints for `observe`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
pub struct Snapshot {
    /// The default zone.
    pub default_zone: String,
    /// What is in force.
    pub runtime: Layer,
    /// What firewalld loads at start and reload.
    pub permanent: Layer,
    /// The zones interfaces or sources are bound to (runtime), with those interfaces and
    /// sources.
    #[serde(default)]
    pub active_zones: BTreeMap<String, Vec<String>>,
}

/// One of firewalld's two configurations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
pub struct Layer {
    /// Our ipsets that exist, by name.
    pub ipsets: BTreeMap<String, IpsetInfo>,
    /// Every zone's rich rules, as firewalld prints them.
    pub rich_rules: BTreeMap<String, Vec<String>>,
    /// What each zone opens to every source (runtime only): what opens it (`port`, `service
    /// https`) and the port (`443/tcp`, `8000-8100/tcp`).
    #[serde(default)]
    pub open_ports: BTreeMap<String, Vec<(String, String)>>,
}

/// An ipset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
pub struct IpsetInfo {
    /// Its type (`hash:net`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its options (`family`).
    pub options: BTreeMap<String, String>,
    /// Its description (ours carries the owner mark).
    pub description: String,
    /// Its entries.
    pub entries: Vec<String>,
}

/// One step of an apply, as the client reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Step {
    /// Creates a permanent ipset with its entries.
    PermanentNewIpset {
        /// Its name.
        name: String,
        /// `inet` or `inet6`.
        family: String,
        /// Its short name.
        short: String,
        /// Its description.
        description: String,
        /// Its entries.
        entries: Vec<String>,
    },
    /// Changes a permanent ipset's entries by difference, and sets its description.
    PermanentIpset {
        /// Its name.
        name: String,
        /// Entries to add.
        add: Vec<String>,
        /// Entries to remove.
        remove: Vec<String>,
        /// Its description.
        description: String,
    },
    /// Removes a permanent ipset.
    PermanentRemoveIpset {
        /// Its name.
        name: String,
    },
    /// Adds a rich rule to a zone's permanent configuration.
    PermanentAddRichRule {
        /// The zone.
        zone: String,
        /// The rule.
        rule: String,
    },
    /// Removes a rich rule from a zone's permanent configuration.
    PermanentRemoveRichRule {
        /// The zone.
        zone: String,
        /// The rule.
        rule: String,
    },
    /// Changes a runtime ipset's entries: adds, then removes, one entry at a time (or all at
    /// once into an empty set).
    Entries {
        /// Its name.
        name: String,
        /// Entries to add.
        add: Vec<String>,
        /// Entries to remove.
        remove: Vec<String>,
    },
    /// Adds a rich rule to a zone at runtime.
    AddRichRule {
        /// The zone.
        zone: String,
        /// The rule.
        rule: String,
    },
    /// Removes a rich rule from a zone at runtime.
    RemoveRichRule {
        /// The zone.
        zone: String,
        /// The rule.
        rule: String,
    },
    /// Reloads firewalld: runtime becomes the permanent configuration.
    Reload,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::PermanentNewIpset { name, entries, .. } => write!(
                f,
                "create the permanent ipset {name} with {} entries",
                entries.len()
            ),
            Step::PermanentIpset {
                name, add, remove, ..
            } => write!(
                f,
                "add {} and remove {} permanent entries of {name}",
                add.len(),
                remove.len()
            ),
            Step::PermanentRemoveIpset { name } => write!(f, "remove the permanent ipset {name}"),
            Step::PermanentAddRichRule { zone, rule } => {
                write!(f, "add `{rule}` to zone {zone} (permanent)")
            }
            Step::PermanentRemoveRichRule { zone, rule } => {
                write!(f, "remove `{rule}` from zone {zone} (permanent)")
            }
            Step::Entries { name, add, remove } => write!(
                f,
                "add {} and remove {} runtime entries of {name}",
                add.len(),
                remove.len()
            ),
            Step::AddRichRule { zone, rule } => write!(f, "add `{rule}` to zone {zone}"),
            Step::RemoveRichRule { zone, rule } => write!(f, "remove `{rule}` from zone {zone}"),
            Step::Reload => f.write_str("reload firewalld"),
        }
    }
}

/// Why the client failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// firewall-cmd is not installed.
    #[error("`{}` was not found in PATH, /usr/sbin or /sbin", name.display())]
    NotFound {
        /// What was looked for.
        name: PathBuf,
    },
    /// The interpreter could not be started.
    #[error("could not run {command}")]
    Spawn {
        /// The command.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// firewalld's client library is not installed for the interpreter.
    #[error("{0}")]
    NoLibrary(String),
    /// firewalld is not running.
    #[error("{0}")]
    NotRunning(String),
    /// firewalld refused a step.
    #[error("firewalld refused it: {0}")]
    Refused(String),
    /// The client printed what we could not read.
    #[error("could not read what firewalld's client printed: {0}")]
    Unreadable(String),
}

/// How the client ended: the steps done, and the failure if any.
#[derive(Debug)]
pub struct Outcome {
    /// How many steps were done, in order.
    pub done: usize,
    /// Whether every step was done.
    pub result: Result<(), ClientError>,
}

/// The interpreter that runs `firewall_cmd` (from its `#!` line).
pub fn interpreter_of(firewall_cmd: &Path) -> Result<PathBuf, ClientError> {
    let program = cf_allowlist_backend::tool::locate(&firewall_cmd.to_string_lossy())
        .or_else(|_| {
            firewall_cmd
                .is_absolute()
                .then(|| firewall_cmd.to_owned())
                .ok_or(())
        })
        .map_err(|()| ClientError::NotFound {
            name: firewall_cmd.to_owned(),
        })?;
    let text = std::fs::read(&program).map_err(|_| ClientError::NotFound {
        name: program.clone(),
    })?;
    let first = text.split(|byte| *byte == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(first)
        .strip_prefix("#!")
        .and_then(|rest| rest.split_whitespace().next())
        .map(PathBuf::from)
        .ok_or_else(|| {
            ClientError::NoLibrary(format!(
                "{} is not a Python program, so its client library cannot be found",
                program.display()
            ))
        })
}

/// Runs the client with `args` and `input` on stdin; returns its stdout, or the failure its
/// exit code names.
fn run(interpreter: &Path, args: &[&str], input: &[u8]) -> (Vec<u8>, Result<(), ClientError>) {
    let command = format!(
        "{} -c <cf-allowlist firewalld client> {}",
        interpreter.display(),
        args.join(" ")
    );
    let spawn_error = |source| ClientError::Spawn {
        command: command.clone(),
        source,
    };
    // The steps are complete before the client starts (tool::output): a list of steps read
    // half-way must not look like a shorter one.
    let script_args = ["-c", SCRIPT].into_iter().chain(args.iter().copied());
    let output = match tool::output(interpreter, script_args, Some(input)) {
        Ok(output) => output,
        Err(source) => return (Vec::new(), Err(spawn_error(source))),
    };
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let result = match output.status.code() {
        Some(0) => Ok(()),
        Some(3) => Err(ClientError::NotRunning(stderr)),
        Some(4) => Err(ClientError::NoLibrary(stderr)),
        Some(1) => Err(ClientError::Refused(stderr)),
        _ => Err(ClientError::Unreadable(format!(
            "{command} failed ({}): {stderr}",
            output.status
        ))),
    };
    (output.stdout, result)
}

/// Reads our ipsets and every zone's rich rules, runtime and permanent.
pub fn observe(interpreter: &Path, ipsets: &[&str]) -> Result<Snapshot, ClientError> {
    let mut args = vec!["observe"];
    args.extend_from_slice(ipsets);
    let (stdout, result) = run(interpreter, &args, b"");
    result?;
    serde_json::from_slice(&stdout).map_err(|error| ClientError::Unreadable(error.to_string()))
}

/// Runs `steps` in order, stopping at the first that fails.
pub fn apply(interpreter: &Path, steps: &[Step]) -> Outcome {
    let input = serde_json::to_vec(steps).expect("steps serialise");
    let (stdout, result) = run(interpreter, &["apply"], &input);
    let done = String::from_utf8_lossy(&stdout)
        .lines()
        .filter(|line| line.starts_with("done "))
        .count();
    Outcome { done, result }
}
