//! The state directory: numbered generations of the applied list, a small `state.json`
//! pointing at the current one (plus pin and last sync), and a lock file.
//!
//! Every file is replaced atomically (temporary file, fsync, rename, fsync of the directory) so
//! that a crash leaves either the old or the new file, never half of one. Two are replaced
//! atomically without the fsyncs, because losing them costs nothing but a slower next run: the
//! generation proof (void after the reboot any power cut implies) and the source cache. A file that does not
//! parse is an error, never "no state": treating it as empty would look like a huge change.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use cf_allowlist_backend::Ranges;
use ipnet::IpNet;

use crate::backends::BackendSpec;
use crate::sources::CachedSource;

/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cf-allowlist";
const STATE_FILE: &str = "state.json";
const SOURCES_FILE: &str = "sources.json";
const GENERATIONS_DIR: &str = "generations";
const LOCK_FILE: &str = "lock";
/// A copy of the pin outside `state.json`, so that a pin survives the rebuild of a corrupt
/// `state.json` (a boot-time restore must not silently unpin a rollback).
const PIN_FILE: &str = "pin.json";
/// What a sync that changed some backends and then failed left unrecorded.
const UNRECORDED_FILE: &str = "unrecorded.json";

/// The state directory's owner id, created once, under the lock and never replaced while it
/// reads, when the directory is first locked: before anything is written to a firewall, so
/// that every mark we write names an id we keep (ten first runs at once agree on one id).
const OWNER_FILE: &str = "owner";
/// The owner id shown before the first real run has created one.
pub const NEW_OWNER: &str = "(new)";
/// When the last sync that changed nothing succeeded: one small line, written without fsync
/// (losing it in a crash costs only a slightly older "last sync" in `status`). A no-op sync
/// writes only this, instead of rewriting `state.json` and `sources.json` (4 fsyncs and 2
/// renames) on every cron run.
const LAST_RUN_FILE: &str = "last-run";
/// The generation proof of the last verified sync (see [`crate::proof`]).
const PROOF_FILE: &str = "proof.json";
/// The validated list the proof was recorded with (see [`crate::sources::memo`]).
const LIST_MEMO_FILE: &str = "proof-list";
/// How many generations are kept; older ones are deleted after a new one is written.
pub const KEEP_GENERATIONS: usize = 50;
const FORMAT_VERSION: u32 = 1;

/// What went wrong with the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file or folder could not be read or written.
    #[error("could not {action} {path}")]
    Io {
        /// What we tried, as a verb phrase.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file that exists but does not parse.
    #[error("{path} is corrupt")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Another run held the lock for longer than we wait.
    #[error("another cf-allowlist run has held the lock on {path} for over {waited:?}")]
    LockBusy {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// A generation that does not exist.
    #[error("there is no generation {0}")]
    NoSuchGeneration(u64),
    /// A state directory or file that someone other than us could have written.
    #[error("{path} is {problem}: refusing to trust it")]
    Insecure {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong, as a phrase.
        problem: String,
    },
    /// A generation whose ranges do not match its recorded digest: damaged or tampered with.
    #[error("{path} is corrupt: its ranges do not match its sha256")]
    DigestMismatch {
        /// The file.
        path: PathBuf,
    },
}

impl StateError {
    /// Whether the error means a file is unreadable as state (as opposed to the directory
    /// being unreachable): such files are recovered from or skipped, never trusted.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            StateError::Corrupt { .. } | StateError::DigestMismatch { .. }
        )
    }
}

/// The pointer file: which generation is applied, whether it is pinned, the last sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The file format.
    pub version: u32,
    /// The generation the backends were last brought to.
    pub current_generation: Option<u64>,
    /// Set by rollback: sync keeps this generation until `unpin`.
    pub pinned: Option<Pin>,
    /// The last successful sync.
    pub last_sync: Option<LastSync>,
    /// When `purge` last removed every backend's rules (cleared by the next sync): `restore`
    /// must not bring back what an admin purged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged: Option<String>,
    /// This state directory's id (from the `owner` file, not saved in `state.json`), marked on
    /// the firewall parts it writes so that two state directories managing one firewall
    /// notice each other instead of undoing each other.
    #[serde(skip)]
    pub owner: Option<String>,
    /// Every backend this state directory has written to and not purged (its kind and place),
    /// so that parts left behind by a changed config are removed, not orphaned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub written: Vec<BackendSpec>,
}

/// A new owner id: 16 random hex digits.
pub fn new_owner_id() -> String {
    let mut bytes = [0u8; 8];
    // /dev/urandom never blocks and is always there on Linux; a failure leaves the time-based
    // fallback, which is unique enough to tell two state directories apart.
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut bytes))
        .is_err()
    {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = ((nanos as u64) ^ u64::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Backends a failed sync changed before it failed: they hold ranges no generation records.
/// Written (best effort) when a sync fails part-way, removed by the next successful sync, so
/// that `status` can say what those backends hold instead of calling it unexpected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unrecorded {
    /// When the sync failed.
    pub time: String,
    /// The backends it changed, as the plan describes them.
    pub backends: Vec<String>,
    /// The ranges it brought them to.
    pub ranges: Ranges,
}

/// A pinned generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The generation.
    pub generation: u64,
    /// When it was pinned (RFC 3339).
    pub since: String,
}

/// What the last successful sync (or rollback) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSync {
    /// When (RFC 3339).
    pub time: String,
    /// The backends it kept, so that status, rollback and purge can act on them.
    pub backends: Vec<BackendSpec>,
}

/// One saved version of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// Its number, counting from 1.
    pub generation: u64,
    /// When it was first applied (RFC 3339).
    pub time: String,
    /// The sources it came from.
    pub sources: Vec<String>,
    /// sha256 of the ranges, one per line in order, each followed by a newline.
    pub sha256: String,
    /// The ranges.
    pub ranges: Ranges,
}

/// A generation serialised, ready to be written ([`StateDir::write_prepared_generation`]).
#[derive(Debug, Clone)]
pub struct Prepared {
    generation: u64,
    json: Vec<u8>,
}

impl Generation {
    /// This generation's file, serialised.
    pub fn prepare(&self) -> Prepared {
        Prepared {
            generation: self.generation,
            json: to_json(self),
        }
    }

    /// A new generation of `ranges`.
    pub fn new(generation: u64, sources: Vec<String>, ranges: Ranges) -> Generation {
        Generation {
            generation,
            time: now_rfc3339(),
            sources,
            sha256: digest(&ranges),
            ranges,
        }
    }
}

/// The content digest of a list of ranges.
pub fn digest(ranges: &Ranges) -> String {
    use std::fmt::Write as _;
    // Each range's text and a newline. Formatting is most of the cost at 100,000 ranges: a
    // long list is formatted in pieces on the cores, and hashed in order.
    let text = |part: &[&IpNet]| {
        let mut text = String::with_capacity(part.len() * 24);
        for range in part {
            let _ = writeln!(text, "{range}");
        }
        text
    };
    let all: Vec<&IpNet> = ranges.iter().collect();
    let pieces = if all.len() < 20_000 {
        vec![text(&all)]
    } else {
        let parts: Vec<&[&IpNet]> = all
            .chunks(all.len().div_ceil(crate::parallel::cores(8)))
            .collect();
        crate::parallel::map(&parts, |part| text(part))
    };
    let mut hasher = Sha256::new();
    for piece in &pieces {
        hasher.update(piece.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The current time as RFC 3339, to the second.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The state as a run starts from, and what had to be recovered to get it.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The pointer file (rebuilt if it was corrupt).
    pub state: State,
    /// The current generation: the snapshot upstream is compared with.
    pub current: Option<Generation>,
    /// One message per file that was unreadable and what was used instead.
    pub recovered: Vec<String>,
    /// `state.json` exactly as read (before the `last-run` time was laid over it), or `None`
    /// when it was missing or rebuilt: a run whose new state equals it need not write it.
    pub on_disk: Option<State>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

/// Held while a run may change the firewall or the state; released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    /// How long we waited for it.
    pub waited: Duration,
    /// Whether another run held it when we first asked.
    pub contended: bool,
    /// The fsyncs of an owner id this lock just created, running while the run reads and
    /// plans ([`Lock::settle`]).
    owner_sync: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    owner_path: PathBuf,
}

impl Lock {
    /// Waits until an owner id this lock created is durable. Called before anything is
    /// written to a firewall: every mark names the id. (A crash before this leaves at worst a
    /// torn id file, replaced on the next run, which no firewall names.)
    pub fn settle(&mut self) -> Result<(), StateError> {
        match self.owner_sync.take() {
            Some(sync) => sync
                .join()
                .expect("syncing the owner id")
                .map_err(StateDir::io("write", &self.owner_path)),
            None => Ok(()),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Before the lock file (and so the lock) goes.
        let _ = self.settle();
    }
}

impl StateDir {
    /// The state directory at `path` (which may not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> StateDir {
        StateDir { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
        let path = path.to_owned();
        move |source| StateError::Io {
            action,
            path,
            source,
        }
    }

    /// Creates the directory (mode 0700) if needed and takes the exclusive lock, waiting at
    /// most `timeout` for another run to finish; then, holding it, gives the directory its
    /// owner id if it has none.
    pub fn lock(&self, timeout: Duration) -> Result<Lock, StateError> {
        let mut lock = self.lock_settling_later(timeout)?;
        lock.settle()?;
        Ok(lock)
    }

    /// [`StateDir::lock`], but a new owner id's fsyncs run on another thread until
    /// [`Lock::settle`], which the caller must call before it writes to any firewall.
    pub fn lock_settling_later(&self, timeout: Duration) -> Result<Lock, StateError> {
        self.create()?;
        let path = self.path.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(Self::io("open", &path))?;
        let started = Instant::now();
        let mut contended = false;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    let owner_sync = self.create_owner()?;
                    return Ok(Lock {
                        _file: file,
                        waited: started.elapsed(),
                        contended,
                        owner_sync,
                        owner_path: self.path.join(OWNER_FILE),
                    });
                }
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < timeout => {
                    contended = true;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(StateError::LockBusy {
                        path,
                        waited: timeout,
                    });
                }
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(StateError::Io {
                        action: "lock",
                        path,
                        source,
                    });
                }
            }
        }
    }

    fn create(&self) -> Result<(), StateError> {
        let generations = self.path.join(GENERATIONS_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&generations)
            .map_err(Self::io("create", &generations))?;
        self.check_directories()
    }

    /// Gives the directory an owner id if it has none; called with the lock held. A missing
    /// file is created only if it still does not exist (create-new), so that an id another run
    /// already wrote into the rules is never replaced, even by a run of an older release that
    /// wrote it without the lock; only a damaged one is replaced.
    /// The file is linked in at once (so this run reads it); its fsyncs are returned, running.
    fn create_owner(
        &self,
    ) -> Result<Option<std::thread::JoinHandle<std::io::Result<()>>>, StateError> {
        let path = self.path.join(OWNER_FILE);
        if self.read_owner()?.is_some() {
            return Ok(None);
        }
        if path.exists() {
            return write_json(&path, &new_owner_id()).map(|()| None);
        }
        match STATE_FILES.write_new_unsynced(&path, &to_json(&new_owner_id())) {
            Ok(file) => {
                let folder = self.path.clone();
                Ok(Some(std::thread::spawn(move || {
                    file.sync_all()?;
                    cf_allowlist_backend::atomic::sync_folder(&folder)
                })))
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
            Err(error) => Err(Self::io("create", &path)(error)),
        }
    }

    /// The owner id, if the directory has one.
    pub fn read_owner(&self) -> Result<Option<String>, StateError> {
        match read_json::<String>(&self.path.join(OWNER_FILE)) {
            Ok(owner) => Ok(owner.filter(|owner| !owner.is_empty())),
            // A damaged id is replaced: the worst it costs is one refusal to adopt our own
            // parts, which --force or purge resolves.
            Err(error) if error.is_corrupt() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Refuses a state directory that another user could write to (see [`check_secure`]).
    fn check_directories(&self) -> Result<(), StateError> {
        for dir in [self.path.clone(), self.path.join(GENERATIONS_DIR)] {
            match fs::metadata(&dir) {
                Ok(metadata) => check_secure(&dir, &metadata)?,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(Self::io("read", &dir)(error)),
            }
        }
        Ok(())
    }

    /// Reads `state.json`; a missing file is the empty state.
    pub fn read_state(&self) -> Result<State, StateError> {
        Ok(read_json(&self.path.join(STATE_FILE))?.unwrap_or(State {
            version: FORMAT_VERSION,
            ..State::default()
        }))
    }

    /// Loads the state for a run. A corrupt `state.json` is rebuilt from the newest readable
    /// generation (the pin and the record of the last sync's backends are lost, and said so);
    /// an unreadable current generation is replaced by the newest readable one before it.
    /// Either way the run is told, never handed an empty state that would look like a huge
    /// change.
    pub fn load(&self) -> Result<Loaded, StateError> {
        self.check_directories()?;
        let mut recovered = Vec::new();
        let mut on_disk = None;
        let mut state = match self.read_state() {
            Ok(state) => {
                if self.path.join(STATE_FILE).exists() {
                    on_disk = Some(state.clone());
                }
                state
            }
            Err(StateError::Corrupt { path, source }) => {
                let newest = self.newest_readable(None)?;
                let pinned: Option<Pin> = read_json(&self.path.join(PIN_FILE)).ok().flatten();
                recovered.push(format!(
                    "{} is corrupt ({source}); rebuilt it from {}{} (the record of the last sync's backends was lost)",
                    path.display(),
                    newest.as_ref().map_or("nothing".to_owned(), |generation| format!("generation {}", generation.generation)),
                    pinned.as_ref().map_or(String::new(), |pin| format!(", keeping the pin on generation {}", pin.generation)),
                ));
                State {
                    version: FORMAT_VERSION,
                    current_generation: pinned
                        .as_ref()
                        .map(|pin| pin.generation)
                        .or(newest.map(|generation| generation.generation)),
                    pinned,
                    ..State::default()
                }
            }
            Err(error) => return Err(error),
        };
        if let (Some(last), Some(time)) = (state.last_sync.as_mut(), self.read_last_run())
            && time > last.time
        {
            last.time = time;
        }
        state.owner = Some(match self.read_owner()? {
            Some(owner) => owner,
            // A directory never locked (a dry run, status): the first real run creates the
            // id; until then previews show this placeholder (a random id would differ from
            // the real run's). Nobody's parts carry it and nothing is written with it.
            None => NEW_OWNER.to_owned(),
        });
        if state.written.is_empty()
            && let Some(last) = &state.last_sync
        {
            // A state from before `written` was recorded: the last sync's backends are what
            // it wrote.
            state.written = last.backends.clone();
        }
        let current =
            match state.current_generation {
                None => None,
                Some(number) => match self.read_generation(number) {
                    Ok(generation) => Some(generation),
                    Err(
                        error @ (StateError::Corrupt { .. }
                        | StateError::DigestMismatch { .. }
                        | StateError::NoSuchGeneration(_)),
                    ) => {
                        let previous = self.newest_readable(Some(number))?;
                        recovered.push(format!(
                            "generation {number} is unreadable ({error}); using {} as the snapshot",
                            previous.as_ref().map_or(
                                "no snapshot".to_owned(),
                                |generation| format!("generation {}", generation.generation)
                            ),
                        ));
                        state.current_generation =
                            previous.as_ref().map(|generation| generation.generation);
                        previous
                    }
                    Err(error) => return Err(error),
                },
            };
        Ok(Loaded {
            state,
            current,
            recovered,
            on_disk,
        })
    }

    /// The newest generation that reads cleanly, below `below` if given.
    fn newest_readable(&self, below: Option<u64>) -> Result<Option<Generation>, StateError> {
        for number in self.generations()?.into_iter().rev() {
            if below.is_some_and(|limit| number >= limit) {
                continue;
            }
            match self.read_generation(number) {
                Ok(generation) => return Ok(Some(generation)),
                Err(error) if error.is_corrupt() => continue,
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }

    /// The cache of source answers (for conditional requests). A missing or unreadable cache
    /// is empty: the worst it costs is one unconditional request per source.
    pub fn read_source_cache(&self) -> BTreeMap<String, CachedSource> {
        read_json(&self.path.join(SOURCES_FILE))
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Replaces the cache of source answers: atomically but without fsync (a cache lost in a
    /// power cut costs one unconditional request per source; a torn one reads as empty).
    pub fn write_source_cache(
        &self,
        cache: &BTreeMap<String, CachedSource>,
    ) -> Result<(), StateError> {
        write_unsynced(&self.path.join(SOURCES_FILE), cache)
    }

    /// What a sync that failed part-way left unrecorded, if anything.
    pub fn read_unrecorded(&self) -> Option<Unrecorded> {
        read_json(&self.path.join(UNRECORDED_FILE)).ok().flatten()
    }

    /// Records (or, with `None`, clears) what a failed sync left unrecorded.
    pub fn write_unrecorded(&self, unrecorded: Option<&Unrecorded>) -> Result<(), StateError> {
        let path = self.path.join(UNRECORDED_FILE);
        match unrecorded {
            Some(unrecorded) => write_json(&path, unrecorded),
            None => match fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(Self::io("remove", &path)(error)),
            },
        }
    }

    /// Replaces `state.json`, and keeps the copy of the pin beside it in step.
    pub fn write_state(&self, state: &State) -> Result<(), StateError> {
        self.stage_state(state)?.commit()
    }

    /// The first half of [`StateDir::write_state`]: the pin's copy updated, and the new
    /// `state.json` written and fsynced beside the old one, not yet in place.
    pub fn stage_state(&self, state: &State) -> Result<StagedFile, StateError> {
        let pin_path = self.path.join(PIN_FILE);
        match &state.pinned {
            Some(pin) => write_json(&pin_path, pin)?,
            None => match fs::remove_file(&pin_path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(Self::io("remove", &pin_path)(error)),
            },
        }
        stage(&self.path.join(STATE_FILE), &to_json(state))
    }

    /// Records the time of a successful sync that changed nothing: one line, no fsync, no
    /// rename (the `last-run` file). Created with mode 0600 and never through a symlink.
    pub fn write_last_run(&self, time: &str) -> Result<(), StateError> {
        let path = self.path.join(LAST_RUN_FILE);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|mut file| file.write_all(format!("{time}\n").as_bytes()))
            .map_err(Self::io("write", &path))
    }

    /// The generation proof the last verified sync recorded; `None` when there is none or it
    /// does not read as one (then the run takes the full path, and may record a new one).
    pub fn read_proof(&self) -> Option<crate::proof::Proof> {
        // A directory another user may write to is refused by the full path's load, loudly;
        // nothing in it is trusted here either.
        self.check_directories().ok()?;
        read_json(&self.path.join(PROOF_FILE)).ok().flatten()
    }

    /// Records a generation proof: atomically but without fsync. Only a power cut or a kernel
    /// crash can lose a write that was not synced, and both reboot: the boot id the proof
    /// names changes and the proof is void anyway (a torn file reads as no proof).
    pub fn write_proof(&self, proof: &crate::proof::Proof) -> Result<(), StateError> {
        write_unsynced(&self.path.join(PROOF_FILE), proof)
    }

    /// The validated list the last proof was recorded with, if there is one and it reads as
    /// one (it is checked against the proof's own answers before it is used).
    pub fn read_list_memo(&self) -> Option<crate::sources::memo::Memo> {
        self.check_directories().ok()?;
        crate::sources::memo::Memo::read(fs::read(self.path.join(LIST_MEMO_FILE)).ok()?)
    }

    /// Records (or, with `None`, removes) the validated list a proof is recorded with:
    /// atomically but without fsync, as the proof (a torn file reads as no memo).
    pub fn write_list_memo(&self, memo: Option<&[u8]>) -> Result<(), StateError> {
        let path = self.path.join(LIST_MEMO_FILE);
        match memo {
            Some(bytes) => STATE_FILES
                .write_unsynced(&path, bytes)
                .map_err(StateDir::io("write", &path)),
            None => match fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    Err(StateDir::io("remove", &path)(error))
                }
                _ => Ok(()),
            },
        }
    }

    /// [`StateDir::write_list_memo`] of `memo`, unless the file holds exactly it already (a
    /// no-op that had to read its list in full only mends a memo, it does not rewrite one).
    pub fn mend_list_memo(&self, memo: &[u8]) -> Result<(), StateError> {
        if fs::read(self.path.join(LIST_MEMO_FILE)).is_ok_and(|held| held == memo) {
            return Ok(());
        }
        self.write_list_memo(Some(memo))
    }

    /// The time in `last-run`, if it reads as one of ours (a torn write reads as nothing).
    fn read_last_run(&self) -> Option<String> {
        let text = fs::read_to_string(self.path.join(LAST_RUN_FILE)).ok()?;
        let time = text.strip_suffix('\n')?;
        humantime::parse_rfc3339(time).ok()?;
        Some(time.to_owned())
    }

    fn generation_path(&self, generation: u64) -> PathBuf {
        self.path
            .join(GENERATIONS_DIR)
            .join(format!("{generation:08}.json"))
    }

    /// A fingerprint of one generation's file (inode, size, modification time), without
    /// reading it: a proof that names it holds only while the snapshot is exactly the file it
    /// verified (a truncated or edited snapshot must be found by the full path's load).
    pub fn snapshot_fingerprint(&self, generation: u64) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::symlink_metadata(self.generation_path(generation)).ok()?;
        Some(format!(
            "{}:{}:{}.{}",
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec()
        ))
    }

    /// Reads one generation and verifies its digest.
    pub fn read_generation(&self, generation: u64) -> Result<Generation, StateError> {
        let path = self.generation_path(generation);
        let read: Generation = read_json(&path)?.ok_or(StateError::NoSuchGeneration(generation))?;
        if read.sha256 != digest(&read.ranges) || read.generation != generation {
            return Err(StateError::DigestMismatch { path });
        }
        Ok(read)
    }

    /// Writes a generation, then deletes all but the newest [`KEEP_GENERATIONS`].
    pub fn write_generation(&self, generation: &Generation) -> Result<(), StateError> {
        self.write_prepared_generation(&generation.prepare())
    }

    /// [`StateDir::write_generation`] of a generation serialised beforehand.
    pub fn write_prepared_generation(&self, prepared: &Prepared) -> Result<(), StateError> {
        self.commit_generation(self.stage_generation(prepared)?)
    }

    /// The first half of [`StateDir::write_prepared_generation`]: the generation's file
    /// written and fsynced beside its place, not yet in it (a sync stages the new generation
    /// while its firewall write runs, and drops it if the write fails).
    pub fn stage_generation(&self, prepared: &Prepared) -> Result<StagedFile, StateError> {
        self.create()?;
        stage(&self.generation_path(prepared.generation), &prepared.json)
    }

    /// Puts a staged generation in place, then deletes all but the newest
    /// [`KEEP_GENERATIONS`].
    /// Also deletes the temporary files a killed run left in the generations folder: only a
    /// sync holding the lock writes there, so while this one holds it, any other is a leftover.
    pub fn commit_generation(&self, staged: StagedFile) -> Result<(), StateError> {
        staged.commit()?;
        let (numbers, leftovers) = self.generation_files()?;
        if numbers.len() > KEEP_GENERATIONS {
            for old in &numbers[..numbers.len() - KEEP_GENERATIONS] {
                let path = self.generation_path(*old);
                fs::remove_file(&path).map_err(Self::io("remove", &path))?;
            }
        }
        for leftover in leftovers {
            let path = self.path.join(GENERATIONS_DIR).join(leftover);
            fs::remove_file(&path).map_err(Self::io("remove", &path))?;
        }
        Ok(())
    }

    /// The numbers of the saved generations, oldest first.
    pub fn generations(&self) -> Result<Vec<u64>, StateError> {
        Ok(self.generation_files()?.0)
    }

    /// The numbers of the saved generations, oldest first, and the names of the temporary
    /// files beside them.
    fn generation_files(&self) -> Result<(Vec<u64>, Vec<std::ffi::OsString>), StateError> {
        let dir = self.path.join(GENERATIONS_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Vec::new(), Vec::new()));
            }
            Err(error) => return Err(Self::io("read", &dir)(error)),
        };
        let (mut numbers, mut temporary) = (Vec::new(), Vec::new());
        for entry in entries {
            let entry = entry.map_err(Self::io("read", &dir))?;
            let name = entry.file_name();
            let text = name.to_str();
            if let Some(number) = text
                .and_then(|name| name.strip_suffix(".json"))
                .and_then(|stem| stem.parse::<u64>().ok())
            {
                numbers.push(number);
            } else if text.is_some_and(|name| name.starts_with(STATE_FILES.prefix)) {
                temporary.push(name);
            }
        }
        numbers.sort_unstable();
        Ok((numbers, temporary))
    }
}

/// Refuses a path that is not owned by the user we run as, or that group or others may write
/// to: a state file another user could edit would let them choose what root's boot-time
/// `restore` opens.
fn check_secure(path: &Path, metadata: &fs::Metadata) -> Result<(), StateError> {
    use std::os::unix::fs::MetadataExt;
    let us = our_uid()?;
    let problem = if metadata.uid() != us {
        Some(format!(
            "owned by uid {}, not by the user running cf-allowlist (uid {us})",
            metadata.uid()
        ))
    } else if metadata.mode() & 0o022 != 0 {
        Some(format!(
            "writable by {} (mode {:o})",
            if metadata.mode() & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            },
            metadata.mode() & 0o777
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(StateError::Insecure {
            path: path.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

/// The user we run as (the owner of `/proc/self`), read once per process: a run checks a
/// dozen state files, and the user does not change during one.
fn our_uid() -> Result<u32, StateError> {
    use std::os::unix::fs::MetadataExt;
    static UID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    if let Some(uid) = UID.get() {
        return Ok(*uid);
    }
    let uid = fs::metadata("/proc/self")
        .map(|meta| meta.uid())
        .map_err(StateDir::io("read", Path::new("/proc/self")))?;
    Ok(*UID.get_or_init(|| uid))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StateDir::io("read", path)(error)),
    };
    let metadata = file.metadata().map_err(StateDir::io("read", path))?;
    check_secure(path, &metadata)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).map_err(StateDir::io("read", path))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StateError::Corrupt {
            path: path.to_owned(),
            source,
        })
}

/// Writes `value` as JSON to `path` atomically: a temporary file with a random name in the same
/// directory, created exclusively (a planted symlink cannot redirect it) with mode 0600, fsync,
/// rename over the target, fsync of the directory.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    stage(path, &to_json(value))?.commit()
}

/// A state file written and fsynced beside its place ([`StateDir::stage_state`],
/// [`StateDir::stage_generation`]): committing renames it into place and fsyncs the directory;
/// dropping it deletes it.
#[derive(Debug)]
pub struct StagedFile {
    staged: cf_allowlist_backend::atomic::Staged,
    path: PathBuf,
}

impl StagedFile {
    /// Renames the file into place and fsyncs its directory.
    pub fn commit(self) -> Result<(), StateError> {
        self.staged
            .commit()
            .map_err(StateDir::io("write", &self.path))
    }
}

fn stage(path: &Path, bytes: &[u8]) -> Result<StagedFile, StateError> {
    Ok(StagedFile {
        staged: STATE_FILES
            .stage(path, bytes)
            .map_err(StateDir::io("write", path))?,
        path: path.to_owned(),
    })
}

/// [`write_json`] without the fsyncs, for files whose loss in a power cut costs nothing.
fn write_unsynced<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    STATE_FILES
        .write_unsynced(path, &to_json(value))
        .map_err(StateDir::io("write", path))
}

/// How state files are written: private, beside their target under a hidden name.
const STATE_FILES: cf_allowlist_backend::atomic::AtomicWrite<'static> =
    cf_allowlist_backend::atomic::AtomicWrite {
        prefix: ".cf-allowlist.",
        suffix: "",
        mode: 0o600,
    };

/// A state file's bytes: pretty JSON and a final newline.
fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut json = serde_json::to_vec_pretty(value).expect("state serialises");
    json.push(b'\n');
    json
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ranges;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generations_round_trip_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path().join("state"));
        let _lock = state_dir.lock(Duration::from_secs(1)).unwrap();
        let generation = Generation::new(1, vec!["builtin".into()], ranges(&["192.0.2.0/24"]));
        state_dir.write_generation(&generation).unwrap();
        assert_eq!(state_dir.read_generation(1).unwrap(), generation);
        assert_eq!(state_dir.generations().unwrap(), vec![1]);
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(state_dir.path()), 0o700);
        assert_eq!(mode(&state_dir.generation_path(1)), 0o600);
    }

    #[test]
    fn the_last_run_file_is_the_last_sync_time_when_newer_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path().join("state"));
        let _lock = state_dir.lock(Duration::from_secs(1)).unwrap();
        let state = State {
            version: FORMAT_VERSION,
            last_sync: Some(LastSync {
                time: "2026-11-01T10:00:00Z".into(),
                backends: Vec::new(),
            }),
            ..State::default()
        };
        state_dir.write_state(&state).unwrap();
        let time = |state_dir: &StateDir| state_dir.load().unwrap().state.last_sync.unwrap().time;
        state_dir.write_last_run("2026-11-02T10:00:00Z").unwrap();
        assert_eq!(time(&state_dir), "2026-11-02T10:00:00Z");
        assert_eq!(
            state_dir
                .load()
                .unwrap()
                .on_disk
                .unwrap()
                .last_sync
                .unwrap()
                .time,
            "2026-11-01T10:00:00Z",
            "on_disk is state.json as written"
        );
        // Older than state.json (a sync that changed something since), or torn: state.json wins.
        state_dir.write_last_run("2026-10-30T10:00:00Z").unwrap();
        assert_eq!(time(&state_dir), "2026-11-01T10:00:00Z");
        fs::write(state_dir.path().join(LAST_RUN_FILE), "2026-11-0").unwrap();
        assert_eq!(time(&state_dir), "2026-11-01T10:00:00Z");
    }

    #[test]
    fn a_missing_state_is_empty_but_a_corrupt_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path());
        assert_eq!(state_dir.read_state().unwrap().current_generation, None);
        fs::write(dir.path().join(STATE_FILE), b"{\"version\": 1, \"curr").unwrap();
        assert!(matches!(
            state_dir.read_state(),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_proof_is_trusted_only_in_a_private_directory_and_intact() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path().join("state"));
        let _lock = state_dir.lock(Duration::from_secs(1)).unwrap();
        let proof = crate::proof::Proof::new(
            crate::proof::Moment {
                boot_id: "boot".into(),
                namespace: 1,
                generation: 7,
            },
            ("asked".into(), "held".into()),
            &[],
            &[],
        );
        state_dir.write_proof(&proof).unwrap();
        assert_eq!(state_dir.read_proof(), Some(proof));
        fs::set_permissions(state_dir.path(), fs::Permissions::from_mode(0o770)).unwrap();
        assert_eq!(state_dir.read_proof(), None, "group-writable directory");
        fs::set_permissions(state_dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(state_dir.path().join(PROOF_FILE), b"{\"version\": 1, \"mom").unwrap();
        assert_eq!(state_dir.read_proof(), None, "torn proof");
    }

    #[test]
    fn a_corrupt_snapshot_falls_back_to_the_previous_generation() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path());
        for number in 1..=2 {
            let list = if number == 1 {
                "192.0.2.0/24"
            } else {
                "198.51.100.0/24"
            };
            state_dir
                .write_generation(&Generation::new(number, vec![], ranges(&[list])))
                .unwrap();
        }
        state_dir
            .write_state(&State {
                version: FORMAT_VERSION,
                current_generation: Some(2),
                ..State::default()
            })
            .unwrap();
        let path = state_dir.generation_path(2);
        let text = fs::read(&path).unwrap();
        fs::write(&path, &text[..text.len() / 2]).unwrap();
        let loaded = state_dir.load().unwrap();
        assert_eq!(loaded.current.unwrap().generation, 1);
        assert_eq!(loaded.state.current_generation, Some(1));
        assert!(
            loaded.recovered[0].contains("generation 2 is unreadable"),
            "{:?}",
            loaded.recovered
        );

        fs::write(dir.path().join(STATE_FILE), b"\0\0\0").unwrap();
        let loaded = state_dir.load().unwrap();
        assert_eq!(loaded.current.unwrap().generation, 1);
        assert!(
            loaded.recovered[0].contains("state.json is corrupt"),
            "{:?}",
            loaded.recovered
        );
    }

    #[test]
    fn a_generation_whose_ranges_do_not_match_its_digest_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path());
        let generation = Generation::new(1, vec![], ranges(&["192.0.2.0/24"]));
        state_dir.write_generation(&generation).unwrap();
        let path = state_dir.generation_path(1);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("192.0.2.0/24", "0.0.0.0/1")).unwrap();
        assert!(matches!(
            state_dir.read_generation(1),
            Err(StateError::DigestMismatch { .. })
        ));
        fs::write(&path, text.replace(&generation.sha256, "short")).unwrap();
        assert!(state_dir.read_generation(1).unwrap_err().is_corrupt());
    }

    #[test]
    fn a_state_written_by_the_first_release_loads() {
        // A copy: the state directory must be owned by the user running the test.
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-0.1.0");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("generations")).unwrap();
        for file in ["state.json", "generations/00000001.json"] {
            std::fs::copy(fixture.join(file), dir.path().join(file)).unwrap();
        }
        let loaded = StateDir::new(dir.path()).load().unwrap();
        assert!(loaded.recovered.is_empty(), "{:?}", loaded.recovered);
        assert_eq!(loaded.state.current_generation, Some(1));
        assert_eq!(loaded.current.unwrap().ranges.len(), 22);
        assert_eq!(loaded.state.last_sync.unwrap().backends.len(), 2);
    }

    #[test]
    fn writing_a_generation_deletes_what_a_killed_run_left_beside_them_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path().join("state"));
        let _lock = state_dir.lock(Duration::from_secs(1)).unwrap();
        let generations = dir.path().join("state").join(GENERATIONS_DIR);
        fs::write(generations.join(".cf-allowlist.Ab12Cd"), "{").unwrap();
        fs::write(generations.join("notes.txt"), "kept").unwrap();
        state_dir
            .write_generation(&Generation::new(1, vec![], ranges(&["192.0.2.0/24"])))
            .unwrap();
        let mut names: Vec<_> = fs::read_dir(&generations)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["00000001.json", "notes.txt"]);
    }

    #[test]
    fn a_list_memo_is_mended_only_when_it_differs() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path());
        let path = dir.path().join(LIST_MEMO_FILE);
        let inode = || fs::metadata(&path).unwrap().ino();
        state_dir.mend_list_memo(b"memo").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"memo");
        let first = inode();
        state_dir.mend_list_memo(b"memo").unwrap();
        assert_eq!(inode(), first, "the same memo was written again");
        fs::write(&path, b"me").unwrap();
        state_dir.mend_list_memo(b"memo").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"memo");
    }

    #[test]
    fn old_generations_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path());
        for number in 1..=(KEEP_GENERATIONS as u64 + 3) {
            state_dir
                .write_generation(&Generation::new(number, vec![], Ranges::new()))
                .unwrap();
        }
        let numbers = state_dir.generations().unwrap();
        assert_eq!(numbers.len(), KEEP_GENERATIONS);
        assert_eq!(numbers[0], 4);
    }

    #[test]
    fn a_second_lock_waits_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path());
        let _held = state_dir.lock(Duration::from_secs(1)).unwrap();
        let error = state_dir.lock(Duration::from_millis(200)).unwrap_err();
        assert!(matches!(error, StateError::LockBusy { .. }), "{error}");
    }

    #[test]
    fn the_digest_is_of_the_ordered_lines() {
        // printf '192.0.2.0/24\n2001:db8::/32\n' | sha256sum
        assert_eq!(
            digest(&ranges(&["2001:db8::/32", "192.0.2.0/24"])),
            "2869f46ecda9c71c548bfd15408876ac4337d51ac42a093d67736fcd038bc777"
        );
    }

    #[test]
    fn a_long_lists_digest_is_of_the_ordered_lines_too() {
        // Formatted in pieces on the cores: the same bytes, hashed in the same order.
        let long: Ranges = (0..50_000u32)
            .map(|index| format!("2001:db8:{:x}:{:x}::/64", index >> 16, index & 0xffff))
            .chain((0..300).map(|index| format!("198.51.100.{}/32", index % 256)))
            .map(|text| text.parse::<IpNet>().unwrap())
            .collect();
        let lines: String = long.iter().map(|range| format!("{range}\n")).collect();
        assert_eq!(
            digest(&long),
            crate::proof::hex(&Sha256::digest(lines.as_bytes()))
        );
    }
}
