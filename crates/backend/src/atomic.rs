//! The one atomic file write, shared by the state directory, the metrics file and the nginx
//! backend's include file: a reader sees the old file or the new one, never a part, and after a
//! crash the new one is there or the old one is.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// How the temporary file beside the target is named and which mode the file gets.
#[derive(Debug, Clone, Copy)]
pub struct AtomicWrite<'a> {
    /// The temporary file's name starts with this (a dot keeps it out of listings and globs).
    pub prefix: &'a str,
    /// And ends with this (so that a glob such as nginx's `*.conf` never includes it).
    pub suffix: &'a str,
    /// The file's mode.
    pub mode: u32,
}

impl AtomicWrite<'_> {
    /// Writes `bytes` to `path`: a temporary file beside it (random name, created
    /// `O_CREAT|O_EXCL` so a planted link cannot redirect it) with the mode, fsynced, renamed
    /// over `path`, then the folder fsynced so the rename survives a crash.
    pub fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        self.write_as(path, bytes, false)
    }

    /// [`AtomicWrite::write`], but only if `path` does not exist yet: the temporary file is
    /// linked in, never renamed over, so an existing file fails with `AlreadyExists` and is
    /// left as it was (create-once files such as an owner id written by concurrent runs).
    pub fn write_new(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        self.write_as(path, bytes, true)
    }

    fn write_as(&self, path: &Path, bytes: &[u8], new: bool) -> std::io::Result<()> {
        let folder = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut temporary = tempfile::Builder::new()
            .prefix(self.prefix)
            .suffix(self.suffix)
            .permissions(std::fs::Permissions::from_mode(self.mode))
            .tempfile_in(folder)?;
        temporary.write_all(bytes)?;
        temporary.as_file().sync_all()?;
        if new {
            temporary
                .persist_noclobber(path)
                .map_err(|error| error.error)?;
        } else {
            temporary.persist(path).map_err(|error| error.error)?;
        }
        sync_folder(folder)
    }
}

/// Fsyncs a folder, so that a rename or removal in it survives a crash.
pub fn sync_folder(folder: &Path) -> std::io::Result<()> {
    std::fs::File::open(folder)?.sync_all()
}
