//! The errors a command can end with, and the one place that maps them to exit codes and hints.

use std::fmt;
use std::path::PathBuf;

use cf_allowlist_backend::{BackendError, ErrorKind};
use serde_json::{Value, json};

use crate::sources::SourceError;
use crate::state::StateError;

/// How the process exits. These numbers are a documented contract (README, `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: success (applied, or nothing to do).
    Success,
    /// 1: an error; nothing was changed unless the message says so.
    Failure,
    /// 2: `sync --dry-run --detailed-exitcode` found changes to make.
    ChangesPending,
    /// 3: a safety guard refused the change (override with `--force`).
    Refused,
    /// 4: another run held the lock for longer than the lock timeout.
    LockBusy,
    /// 5: applied, but another table, chain or firewall still blocks a listed range.
    NotEffective,
    /// 1 from `doctor` (monitoring-plugin convention): WARNING, the worst finding is a warning.
    Warning,
    /// 2 from `doctor`: CRITICAL, at least one problem.
    Critical,
    /// 3 from `doctor`: UNKNOWN, doctor itself could not run.
    Unknown,
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::ChangesPending => 2,
            ExitStatus::Refused => 3,
            ExitStatus::LockBusy => 4,
            ExitStatus::NotEffective => 5,
            ExitStatus::Warning => 1,
            ExitStatus::Critical => 2,
            ExitStatus::Unknown => 3,
        }
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("could not read config file {path}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid.
    #[error("config file {path} is invalid")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A setting that makes no sense.
    #[error("invalid setting: {0}")]
    Setting(String),
    /// A source failed; nothing was changed. (The source error is the message itself, not a
    /// cause: printing it again as `caused by` would say the same twice. Its own causes, such
    /// as the OS or TLS error under a failed request, are this error's causes.)
    #[error(transparent)]
    Source(SourceFailed),
    /// `sync` without a backend.
    #[error("no backend is configured")]
    NoBackend,
    /// The state directory failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// After apply, the firewall does not hold what was planned.
    #[error("{backend} does not hold the planned ranges after apply: {detail}")]
    ReadBack {
        /// The backend.
        backend: String,
        /// What differs.
        detail: String,
    },
    /// A safety guard refused the change; nothing was changed.
    #[error("refused to apply: {}; nothing was changed", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Refused(Vec<crate::guards::Refusal>),
    /// Applied, but other rules still block listed ranges on managed ports.
    #[error("applied, but not effective: {}", blockers.join("; "))]
    NotEffective {
        /// What blocks, each with the backend that would work instead.
        blockers: Vec<String>,
    },
    /// Nothing to roll back to.
    #[error("cannot roll back: {0}")]
    Rollback(String),
    /// A saved generation that fails the checks `sync` applies to a fresh list, or a state
    /// that had to be recovered, which `restore` does not trust.
    #[error("refusing to apply {what}: {reason}; nothing was changed")]
    Untrusted {
        /// What: `generation N`, or `the saved state`.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A later step failed after some backends were already changed: the firewall is not what
    /// it was, and the state does not record it.
    #[error("{} already hold generation {generation} ({ranges}), which the state does not record", applied.join(" and "))]
    Partial {
        /// The backends that were changed, described.
        applied: Vec<String>,
        /// The generation they hold (the one that would have been recorded).
        generation: u64,
        /// Its counts.
        ranges: String,
        /// What failed.
        #[source]
        source: Box<Error>,
    },
}

impl From<SourceError> for Error {
    fn from(error: SourceError) -> Error {
        Error::Source(SourceFailed(error))
    }
}

/// A failed source as the end of a command: the source error's message followed by "nothing
/// was changed", with the source error's causes as its own. (A separate type because thiserror
/// cannot forward only a field's causes.)
#[derive(Debug)]
pub struct SourceFailed(pub SourceError);

impl fmt::Display for SourceFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; nothing was changed", self.0)
    }
}

impl std::error::Error for SourceFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

impl Error {
    /// The exit status this error ends the process with.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Error::NotEffective { .. } => ExitStatus::NotEffective,
            Error::Refused(_) => ExitStatus::Refused,
            Error::State(StateError::LockBusy { .. }) => ExitStatus::LockBusy,
            _ => ExitStatus::Failure,
        }
    }

    /// The error as the `error` member of a JSON report: message, causes, hint.
    pub fn to_json(&self) -> Value {
        let mut causes = Vec::new();
        let mut cause = std::error::Error::source(self);
        while let Some(inner) = cause {
            causes.push(inner.to_string());
            cause = inner.source();
        }
        json!({
            "message": self.to_string(),
            "causes": causes,
            "hint": self.hint(),
        })
    }

    /// What the user can do about it, if anything.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Partial { source, .. } => Some(match source.hint() {
                Some(hint) => format!(
                    "{hint}; the next successful sync records what the firewall holds"
                ),
                None => "fix the failure and run sync again: it converges from what the firewall holds".to_owned(),
            }),
            Error::Backend(error) => Some(backend_hint(error)),
            #[cfg(not(feature = "aws"))]
            Error::ConfigParse { source, .. } if source.message().contains("unknown variant `aws`") => Some(
                "this build has no AWS backend (it is opt-in): build with `cargo build --release --features aws`; the Debian package has it"
                    .to_owned(),
            ),
            Error::NotEffective { .. } => Some(
                "the rules are in place but another firewall drops the traffic first: follow the advice after each blocker (another backend, or allowing the ranges there)"
                    .to_owned(),
            ),
            Error::NoBackend => Some(
                "choose one with `--backend nftables`, or add a [[backend]] table to the config \
                 file; `sync --dry-run` works without one"
                    .to_owned(),
            ),
            Error::Refused(refusals) => {
                let mut guards: Vec<crate::guards::Guard> =
                    refusals.iter().map(|refusal| refusal.guard).collect();
                guards.sort_unstable();
                guards.dedup();
                Some(
                    guards
                        .iter()
                        .map(|guard| format!("{guard}: {}", guard.hint()))
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            }
            Error::State(StateError::LockBusy { .. }) => Some(
                "wait for the other run to finish, or raise lock_timeout_secs".to_owned(),
            ),
            Error::State(StateError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Some(
                    "run as root (the state directory and the firewall are root's), or give --state-dir a directory you may write for a dry run"
                        .to_owned(),
                )
            }
            Error::State(StateError::Insecure { path, .. }) => Some(format!(
                "make it private to the user that runs cf-allowlist: `chown -R root: {0}` and `chmod -R go-w {0}`",
                path.display()
            )),
            Error::Untrusted { .. } => Some(
                "the state directory may have been tampered with or damaged; `cf-allowlist sync` fetches and validates a fresh list"
                    .to_owned(),
            ),
            Error::State(StateError::Corrupt { path, .. }) => Some(format!(
                "move {} aside; the next sync writes a fresh one",
                path.display()
            )),
            Error::Source(SourceFailed(error)) if error.is_network() => Some(
                "on a host without access to Cloudflare, use `--source builtin` or a local file"
                    .to_owned(),
            ),
            Error::ReadBack { .. } => Some(
                "run `cf-allowlist status` to see what the firewall holds; the state was not updated"
                    .to_owned(),
            ),
            _ => None,
        }
    }
}

/// The hint for a backend failure: the backend's own when it gave one; for a write refused by
/// a read-only file system (the hardened systemd units), the backend's drop-in; else its kind's.
fn backend_hint(error: &BackendError) -> String {
    if let Some(hint) = &error.hint {
        return hint.clone();
    }
    if read_only_file_system(error) {
        return format!(
            "a read-only file system: under the shipped systemd units, install the {} drop-in from /usr/share/doc/cf-allowlist/examples/systemd/ (packaging/README.md, \"systemd drop-ins\")",
            error.backend
        );
    }
    match error.kind {
        ErrorKind::MissingTool => match error.package {
            Some(package) => format!("install it: `apt-get install {package}`"),
            None => "install the firewall's command-line tool".to_owned(),
        },
        ErrorKind::Permission => {
            "run as root (changing or reading the firewall needs CAP_NET_ADMIN)".to_owned()
        }
        ErrorKind::Credentials => {
            "give the backend credentials for its API (the message above says where it looked)"
                .to_owned()
        }
        ErrorKind::Stale => {
            "another tool kept changing our rules while we applied; run sync again".to_owned()
        }
        ErrorKind::Transient => "this may pass: run sync again in a moment".to_owned(),
        ErrorKind::Rejected => {
            "run `cf-allowlist status` to see what the firewall holds; the state was not updated"
                .to_owned()
        }
    }
}

/// Whether a cause of `error` is a write refused by a read-only file system (an `io::Error`,
/// or a tool's message quoting the system's wording, as ufw's Python prints it).
fn read_only_file_system(error: &BackendError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error.source.as_ref());
    while let Some(current) = cause {
        let io_read_only = current
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ReadOnlyFilesystem);
        if io_read_only || current.to_string().contains("Read-only file system") {
            return true;
        }
        cause = current.source();
    }
    false
}
