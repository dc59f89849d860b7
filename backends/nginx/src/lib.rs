//! The nginx real-IP backend (`kind = "nginx-realip"`).
//!
//! Behind Cloudflare every request reaches the origin from a Cloudflare address, and the
//! visitor's address travels in the `CF-Connecting-IP` header. nginx must believe that header
//! only from Cloudflare's ranges, so its list follows the same upstream as the firewall's. This
//! backend owns one include file (by default [`names::DEFAULT_PATH`]) holding a header comment,
//! one `set_real_ip_from` line per range and `real_ip_header CF-Connecting-IP;`.
//!
//! It is not a firewall, so it is shaped a little differently from the others:
//!
//! - **The unit of change is the whole file.** A new version is written to a temporary file
//!   beside it (created `O_EXCL`, fsynced) and renamed over it, so nginx and every reader see the
//!   old file or the new, never half of one; then the configured test command (`nginx -t`) checks
//!   nginx's whole configuration with it. If the test fails, the previous file (or its absence)
//!   is put back the same way and nginx is not reloaded. Between the rename and the restore the
//!   new file is on disk, unloaded: an unrelated reload in that moment would be refused by
//!   nginx itself (a reload with a bad configuration keeps the old workers).
//! - **Reloading is part of applying.** After a good test the configured reload command runs.
//!   A marker file ([`names::reload_pending_marker`]) is written before the file is installed
//!   and removed after the reload succeeded; while it exists, observe reports a reload to make,
//!   so a failed or interrupted reload is retried by the next sync.
//! - **An empty target keeps the file**, with no `set_real_ip_from` line: nginx then trusts the
//!   header from nobody, which is what an empty list means, and the structure stays in place.
//! - **Ports and restrict do not apply**: a real-IP list has neither (the registry refuses
//!   `restrict = true` for this kind).
//! - **Ownership is the header.** A file at `path` whose first line is not
//!   [`names::HEADER_FIRST_LINE`] is somebody else's: it is never rewritten or deleted, and
//!   observing it is an error. Inside our file, observe is strict: a line it does not recognise,
//!   a duplicate, or any difference from what this backend would write is drift to repair.

pub mod names;
mod registry;

#[cfg(feature = "harness")]
pub mod harness;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cf_allowlist_backend::tool::{self, ToolError};
use cf_allowlist_backend::{Backend, BackendError, Basis, Change, ErrorKind, Observed, Ranges};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Which web server's real-IP list a file is: the lines differ, the handling does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Server {
    /// nginx's realip module: `set_real_ip_from RANGE;` and `real_ip_header`.
    Nginx,
    /// Apache's mod_remoteip: `RemoteIPTrustedProxy RANGE` and `RemoteIPHeader`.
    Apache,
    /// Caddy (2.7 or newer): the `trusted_proxies static` and `client_ip_headers` options of a
    /// `servers` block, in a snippet imported there.
    Caddy,
}

impl Server {
    /// The backend's label, as in the config (`kind`).
    pub fn label(self) -> &'static str {
        match self {
            Server::Nginx => "nginx-realip",
            Server::Apache => "apache-realip",
            Server::Caddy => "caddy-realip",
        }
    }

    /// The server's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Server::Nginx => "nginx",
            Server::Apache => "Apache",
            Server::Caddy => "Caddy",
        }
    }

    /// The Debian package that provides the server's control program, for the missing-tool
    /// hint.
    fn package(self) -> &'static str {
        match self {
            Server::Nginx => "nginx-light",
            Server::Apache => "apache2",
            Server::Caddy => "caddy",
        }
    }

    /// The header comment after [`names::HEADER_FIRST_LINE`].
    fn header_rest(self) -> &'static [&'static str] {
        match self {
            Server::Nginx => &names::HEADER_REST,
            Server::Apache => &names::APACHE_HEADER_REST,
            Server::Caddy => &names::CADDY_HEADER_REST,
        }
    }

    /// What stands before and after a range on its line.
    fn range_affixes(self) -> (String, &'static str) {
        match self {
            Server::Nginx => (format!("{} ", names::SET_REAL_IP_FROM), ";"),
            Server::Apache => (format!("{} ", names::REMOTE_IP_TRUSTED_PROXY), ""),
            // One directive continued over a line per range (Caddyfile's `\` continuation).
            Server::Caddy => ("\t".to_owned(), " \\"),
        }
    }

    /// The lines before the ranges (after the header comment), each exactly once.
    fn opening_lines(self) -> Vec<String> {
        match self {
            Server::Nginx | Server::Apache => Vec::new(),
            Server::Caddy => vec![format!("{} \\", names::CADDY_TRUSTED_PROXIES)],
        }
    }

    /// The lines after the ranges, each exactly once: the one naming the header that carries
    /// the client's address (Caddy's continued directive is ended by a comment line first).
    fn closing_lines(self) -> Vec<String> {
        match self {
            Server::Nginx => vec![format!(
                "{} {};",
                names::REAL_IP_HEADER,
                names::CF_CONNECTING_IP
            )],
            Server::Apache => vec![format!(
                "{} {}",
                names::REMOTE_IP_HEADER,
                names::CF_CONNECTING_IP
            )],
            Server::Caddy => vec![
                names::CADDY_END_OF_RANGES.to_owned(),
                format!(
                    "{} {}",
                    names::CADDY_CLIENT_IP_HEADERS,
                    names::CF_CONNECTING_IP
                ),
            ],
        }
    }

    /// What to add to a refused test for this server, if anything.
    fn refusal_hint(self) -> &'static str {
        match self {
            Server::Nginx | Server::Apache => "",
            Server::Caddy => names::CADDY_VERSION_HINT,
        }
    }
}

/// The options of one real-IP kind: where its file goes and how the server is checked and
/// reloaded. The kinds differ only in their defaults.
macro_rules! web_server_options {
    ($(#[$doc:meta])* $name:ident, $server:literal, $path:expr, $test:expr, $reload:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            #[doc = concat!("The include file this backend owns; absolute. ", $server, " must include it.")]
            pub path: PathBuf,
            #[doc = concat!("The command that checks ", $server, "'s configuration, as an argument vector (no shell).")]
            pub test_command: Vec<String>,
            #[doc = concat!("The command that makes ", $server, " load the new file, as an argument vector (no shell).")]
            pub reload_command: Vec<String>,
        }

        impl Default for $name {
            fn default() -> $name {
                $name {
                    path: PathBuf::from($path),
                    test_command: $test.map(str::to_owned).to_vec(),
                    reload_command: $reload.map(str::to_owned).to_vec(),
                }
            }
        }

        impl $name {
            /// Checks the options at config load: an absolute path naming a file, and
            /// non-empty commands; the message completes "invalid backend options: …".
            pub fn check(&self) -> Result<(), String> {
                check_options(&self.path, &self.test_command, &self.reload_command, $server)
            }
        }
    };
}

web_server_options!(
    /// Where the file goes and how nginx is checked and reloaded (`kind = "nginx-realip"`).
    /// nginx must include the file in its `http` block (Debian's stock `nginx.conf` includes
    /// `/etc/nginx/conf.d/*.conf`).
    NginxOptions,
    "nginx",
    names::DEFAULT_PATH,
    names::DEFAULT_TEST_COMMAND,
    names::DEFAULT_RELOAD_COMMAND
);

web_server_options!(
    /// Where Apache's file goes and how Apache is checked and reloaded
    /// (`kind = "apache-realip"`). Apache must include it (Debian: `a2enconf
    /// cf-allowlist-remoteip` for the default path) and load mod_remoteip.
    ApacheOptions,
    "Apache",
    names::APACHE_DEFAULT_PATH,
    names::APACHE_DEFAULT_TEST_COMMAND,
    names::APACHE_DEFAULT_RELOAD_COMMAND
);

web_server_options!(
    /// Where Caddy's snippet goes and how Caddy is checked and reloaded
    /// (`kind = "caddy-realip"`). The Caddyfile must import it inside the global options'
    /// `servers { }` block.
    CaddyOptions,
    "Caddy",
    names::CADDY_DEFAULT_PATH,
    names::CADDY_DEFAULT_TEST_COMMAND,
    names::CADDY_DEFAULT_RELOAD_COMMAND
);

fn check_options(
    path: &Path,
    test_command: &[String],
    reload_command: &[String],
    server: &str,
) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!(
            "`path` must be absolute, not {:?}: {server} and cron resolve relative paths differently",
            path.display().to_string()
        ));
    }
    if path.file_name().is_none() || path.to_string_lossy().ends_with('/') {
        return Err(format!(
            "`path` must name a file, not the folder {:?}",
            path.display().to_string()
        ));
    }
    for (key, command) in [
        ("test_command", test_command),
        ("reload_command", reload_command),
    ] {
        if command.first().is_none_or(|program| program.is_empty()) {
            return Err(format!(
                "`{key}` must be a non-empty argument vector such as [\"nginx\", \"-t\"]"
            ));
        }
    }
    Ok(())
}

/// What can go wrong in this backend.
#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    /// The file at `path` is not ours.
    #[error(
        "{path} exists and is not cf-allowlist's (its first line is not {header:?}); move it away or set `path` to another file",
        header = names::HEADER_FIRST_LINE
    )]
    NotOurs {
        /// The file.
        path: PathBuf,
    },
    /// The path is a symbolic link or not a regular file.
    #[error("{path} is not a regular file (a symbolic link or a folder); refusing to replace it")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done, as a phrase ("could not write").
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The test command refused the configuration with the new file.
    #[error("the test command refused the configuration with the new file; {restored}{hint}")]
    Invalid {
        /// What became of the previous file.
        restored: String,
        /// What may be wrong, for a server whose refusals have a known cause.
        hint: &'static str,
        /// The test command's failure.
        #[source]
        source: ToolError,
    },
    /// The reload command failed after the new file was installed.
    #[error(
        "{path} is valid and in place, but {server} did not reload: it still uses the previous list (the next sync retries the reload)",
        server = server.name()
    )]
    Reload {
        /// The web server.
        server: Server,
        /// The file.
        path: PathBuf,
        /// The reload command's failure.
        #[source]
        source: ToolError,
    },
    /// The reload command failed after the file was deleted.
    #[error(
        "{path} was deleted, but {server} did not reload: it still trusts the header from the old list until it reloads (`cf-allowlist purge` again retries)",
        server = server.name()
    )]
    ReloadAfterPurge {
        /// The web server.
        server: Server,
        /// The file.
        path: PathBuf,
        /// The reload command's failure.
        #[source]
        source: ToolError,
    },
    /// A test or reload command is empty (refused at config load; here for a hand-built spec).
    #[error("the {0} is empty")]
    EmptyCommand(&'static str),
}

impl NginxError {
    /// The backend error of `server`'s backend for a failed `step`.
    fn at(self, server: Server, step: &'static str) -> BackendError {
        let (kind, package) = match &self {
            NginxError::Invalid { source, .. }
            | NginxError::Reload { source, .. }
            | NginxError::ReloadAfterPurge { source, .. } => {
                let kind = source.kind();
                (
                    kind,
                    (kind == ErrorKind::MissingTool).then_some(server.package()),
                )
            }
            NginxError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                (ErrorKind::Permission, None)
            }
            _ => (ErrorKind::Rejected, None),
        };
        BackendError {
            package,
            ..BackendError::new(server.label(), step, kind, self)
        }
    }
}

/// What the disk holds of ours.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Live {
    /// The include file's bytes; `None` when it does not exist.
    file: Option<Vec<u8>>,
    /// Whether a reload is owed.
    reload_pending: bool,
}

impl Live {
    fn basis(&self) -> Basis {
        Basis::of(self)
    }
}

/// nginx's file as this backend writes it for `ranges`.
pub fn render(ranges: &Ranges) -> String {
    render_for(Server::Nginx, ranges)
}

/// `server`'s file as this backend writes it for `ranges`.
pub fn render_for(server: Server, ranges: &Ranges) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "{}", names::HEADER_FIRST_LINE);
    for line in server.header_rest() {
        let _ = writeln!(text, "{line}");
    }
    for line in server.opening_lines() {
        let _ = writeln!(text, "{line}");
    }
    let (before, after) = server.range_affixes();
    for net in ranges {
        let _ = writeln!(text, "{before}{net}{after}");
    }
    for line in server.closing_lines() {
        let _ = writeln!(text, "{line}");
    }
    text
}

/// Whether `bytes` is a file of ours (its first line is our header).
pub fn is_ours(bytes: &[u8]) -> bool {
    let first = bytes
        .split(|byte| *byte == b'\n')
        .next()
        .unwrap_or_default();
    first == names::HEADER_FIRST_LINE.as_bytes()
}

/// Reads a file of ours back: the ranges it trusts and what differs from what we would write.
/// Strict: every line that is not our header, one canonical `set_real_ip_from CIDR;` or the
/// one `real_ip_header CF-Connecting-IP;` is reported.
pub fn parse(bytes: &[u8], path: &Path) -> (Ranges, Vec<String>) {
    parse_for(Server::Nginx, bytes, path)
}

/// [`parse`] for `server`'s file.
pub fn parse_for(server: Server, bytes: &[u8], path: &Path) -> (Ranges, Vec<String>) {
    let text = String::from_utf8_lossy(bytes);
    let mut ranges = Ranges::new();
    let mut repairs = Vec::new();
    let mut header_lines = 0;
    let header: Vec<&str> = std::iter::once(names::HEADER_FIRST_LINE)
        .chain(server.header_rest().iter().copied())
        .collect();
    // The lines that stand once in the file (the header directive, Caddy's opening line).
    let fixed: Vec<String> = server
        .opening_lines()
        .into_iter()
        .chain(server.closing_lines())
        .collect();
    for (index, line) in text.lines().enumerate() {
        if index < header.len() && line == header[index] {
            header_lines += 1;
            continue;
        }
        if fixed.iter().any(|wanted| line == wanted) {
            // Counted once over the whole file, below.
            continue;
        }
        match parse_range_line(server, line) {
            Some(net) => {
                if !ranges.insert(net) {
                    repairs.push(format!("remove the duplicate `{line}`"));
                }
            }
            None => repairs.push(format!(
                "remove unrecognised line {}: {:?}",
                index + 1,
                line
            )),
        }
    }
    for wanted in &fixed {
        match text.lines().filter(|line| line == wanted).count() {
            0 => repairs.push(format!("add `{wanted}`")),
            1 => {}
            n => repairs.push(format!("remove {} duplicate `{wanted}`", n - 1)),
        }
    }
    if header_lines != header.len() {
        repairs.push("restore the header comment".to_owned());
    }
    if repairs.is_empty() && render_for(server, &ranges).as_bytes() != bytes {
        repairs.push(format!(
            "rewrite {} in the order and form cf-allowlist writes",
            path.display()
        ));
    }
    (ranges, repairs)
}

/// `set_real_ip_from CIDR;` (or Apache's `RemoteIPTrustedProxy CIDR`, or Caddy's continued
/// `\tCIDR \`) exactly as we write it: one space, a network without host bits in its
/// canonical spelling. Anything else (a bare address, `unix:`, host bits set) is not ours.
fn parse_range_line(server: Server, line: &str) -> Option<IpNet> {
    let (before, after) = server.range_affixes();
    let argument = line.strip_prefix(before.as_str())?.strip_suffix(after)?;
    let net: IpNet = argument.parse().ok()?;
    (net.trunc() == net && net.to_string() == argument).then_some(net)
}

/// Keeps a web server's include file listing the ranges it trusts with the real-IP header
/// (nginx's, or Apache's with [`NginxBackend::apache`]).
#[derive(Debug, Clone)]
pub struct NginxBackend {
    server: Server,
    options: NginxOptions,
}

impl NginxBackend {
    /// A backend owning the nginx file and commands of `options`.
    pub fn new(options: NginxOptions) -> NginxBackend {
        NginxBackend {
            server: Server::Nginx,
            options,
        }
    }

    /// A backend owning the Apache (mod_remoteip) file and commands of `options`.
    pub fn apache(options: ApacheOptions) -> NginxBackend {
        NginxBackend {
            server: Server::Apache,
            options: NginxOptions {
                path: options.path,
                test_command: options.test_command,
                reload_command: options.reload_command,
            },
        }
    }

    /// A backend owning Caddy's `servers` snippet and the commands of `options`.
    pub fn caddy(options: CaddyOptions) -> NginxBackend {
        NginxBackend {
            server: Server::Caddy,
            options: NginxOptions {
                path: options.path,
                test_command: options.test_command,
                reload_command: options.reload_command,
            },
        }
    }

    fn error(&self, error: NginxError, step: &'static str) -> BackendError {
        error.at(self.server, step)
    }

    fn path(&self) -> &Path {
        &self.options.path
    }

    fn folder(&self) -> &Path {
        self.path().parent().unwrap_or(Path::new("/"))
    }

    fn read(&self) -> Result<Live, NginxError> {
        let path = self.path();
        let file = match std::fs::symlink_metadata(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(NginxError::Io {
                    action: "could not read",
                    path: path.to_owned(),
                    source,
                });
            }
            Ok(meta) if !meta.file_type().is_file() => {
                return Err(NginxError::NotAFile {
                    path: path.to_owned(),
                });
            }
            Ok(_) => Some(std::fs::read(path).map_err(|source| NginxError::Io {
                action: "could not read",
                path: path.to_owned(),
                source,
            })?),
        };
        if let Some(bytes) = &file
            && !is_ours(bytes)
        {
            return Err(NginxError::NotOurs {
                path: path.to_owned(),
            });
        }
        let marker = names::reload_pending_marker(path);
        let reload_pending = std::fs::symlink_metadata(&marker).is_ok();
        Ok(Live {
            file,
            reload_pending,
        })
    }

    fn run(&self, command: &[String], what: &'static str) -> Result<(), RunError> {
        let (program, args) = command.split_first().ok_or(RunError::Empty(what))?;
        let program = if program.contains('/') {
            PathBuf::from(program)
        } else {
            tool::locate(program).map_err(RunError::Tool)?
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tool::run(&program, &args, None)
            .map(drop)
            .map_err(RunError::Tool)
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), NginxError> {
        write_atomically(path, bytes).map_err(|source| NginxError::Io {
            action: "could not write",
            path: path.to_owned(),
            source,
        })
    }

    fn remove(&self, path: &Path) -> Result<(), NginxError> {
        let io = |source| NginxError::Io {
            action: "could not delete",
            path: path.to_owned(),
            source,
        };
        match std::fs::remove_file(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            other => other.map_err(io)?,
        }
        cf_allowlist_backend::atomic::sync_folder(self.folder()).map_err(io)
    }

    /// Puts `previous` back at the path (or removes the file when there was none); says what
    /// happened, for the error message.
    fn restore(&self, previous: Option<&[u8]>) -> String {
        let result = match previous {
            Some(bytes) => self.write(self.path(), bytes),
            None => self.remove(self.path()),
        };
        match (result, previous) {
            (Ok(()), Some(_)) => format!(
                "the previous file was put back and {} was not reloaded",
                self.server.name()
            ),
            (Ok(()), None) => format!(
                "the new file was removed again and {} was not reloaded",
                self.server.name()
            ),
            (Err(error), _) => format!(
                "putting the previous file back failed too ({error}: {}); {} was not reloaded",
                std::error::Error::source(&error)
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                self.server.name()
            ),
        }
    }
}

/// A failure to run a configured command.
enum RunError {
    Empty(&'static str),
    Tool(ToolError),
}

impl Backend for NginxBackend {
    fn label(&self) -> String {
        self.server.label().to_owned()
    }

    fn observe(&self) -> Result<Observed, BackendError> {
        let live = self
            .read()
            .map_err(|error| self.error(error, "read the include file"))?;
        let path = self.path();
        let (ranges, mut repairs) = match &live.file {
            None => (Ranges::new(), vec![format!("create {}", path.display())]),
            Some(bytes) => parse_for(self.server, bytes, path),
        };
        if live.reload_pending {
            repairs.push(format!(
                "reload {} (the last reload did not complete)",
                self.server.name()
            ));
        }
        Ok(Observed {
            ranges,
            repairs,
            warnings: Vec::new(),
            basis: live.basis(),
            ..Observed::default()
        })
    }

    fn apply(&self, change: &Change) -> Result<(), BackendError> {
        if change.is_empty() {
            return Ok(());
        }
        let live = self
            .read()
            .map_err(|error| self.error(error, "read the include file"))?;
        if live.basis() != change.basis {
            return Err(BackendError::stale(
                self.server.label(),
                format!("{} changed since it was observed", self.path().display()),
            ));
        }
        let marker = names::reload_pending_marker(self.path());
        // The marker goes first: from here until nginx has reloaded, a run that dies leaves it
        // behind and the next sync reloads.
        if !live.reload_pending {
            self.write(&marker, b"")
                .map_err(|error| self.error(error, "install the include file"))?;
        }
        let wanted = render_for(self.server, &change.target);
        if live.file.as_deref() != Some(wanted.as_bytes()) {
            self.write(self.path(), wanted.as_bytes())
                .map_err(|error| self.error(error, "install the include file"))?;
            match self.run(&self.options.test_command, "test command") {
                Ok(()) => {}
                Err(failure) => {
                    let restored = self.restore(live.file.as_deref());
                    if !live.reload_pending {
                        // Best effort: a marker left behind only costs one extra reload.
                        let _ = self.remove(&marker);
                    }
                    let error = match failure {
                        RunError::Empty(what) => NginxError::EmptyCommand(what),
                        RunError::Tool(source) => NginxError::Invalid {
                            restored,
                            hint: self.server.refusal_hint(),
                            source,
                        },
                    };
                    return Err(self.error(error, "validate the new include file"));
                }
            }
        }
        match self.run(&self.options.reload_command, "reload command") {
            Ok(()) => {}
            Err(RunError::Empty(what)) => {
                return Err(self.error(NginxError::EmptyCommand(what), "reload the web server"));
            }
            Err(RunError::Tool(source)) => {
                return Err(NginxError::Reload {
                    server: self.server,
                    path: self.path().to_owned(),
                    source,
                }
                .at(self.server, "reload the web server"));
            }
        }
        self.remove(&marker)
            .map_err(|error| self.error(error, "reload the web server"))
    }

    fn purge(&self) -> Result<Vec<String>, BackendError> {
        let live = match self.read() {
            // Somebody else's file at our path: nothing there is ours to remove.
            Err(NginxError::NotOurs { .. }) => return Ok(Vec::new()),
            other => other.map_err(|error| self.error(error, "read the include file"))?,
        };
        if live.file.is_none() && !live.reload_pending {
            return Ok(Vec::new());
        }
        let marker = names::reload_pending_marker(self.path());
        let mut removed = Vec::new();
        if live.file.is_some() {
            if !live.reload_pending {
                self.write(&marker, b"")
                    .map_err(|error| self.error(error, "delete the include file"))?;
            }
            self.remove(self.path())
                .map_err(|error| self.error(error, "delete the include file"))?;
            removed.push(format!("the include file {}", self.path().display()));
        }
        match self.run(&self.options.reload_command, "reload command") {
            Ok(()) => {}
            Err(RunError::Empty(what)) => {
                return Err(self.error(NginxError::EmptyCommand(what), "reload the web server"));
            }
            Err(RunError::Tool(source)) => {
                return Err(NginxError::ReloadAfterPurge {
                    server: self.server,
                    path: self.path().to_owned(),
                    source,
                }
                .at(self.server, "reload the web server"));
            }
        }
        self.remove(&marker)
            .map_err(|error| self.error(error, "reload the web server"))?;
        if live.file.is_none() {
            removed.push(format!("a pending reload of {} (done)", self.server.name()));
        }
        Ok(removed)
    }
}

/// Writes `bytes` to `path` atomically, mode 0644, the temporary file named so that nginx's
/// `*.conf` includes never read it.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    cf_allowlist_backend::atomic::AtomicWrite {
        prefix: names::TEMP_PREFIX,
        suffix: names::TEMP_SUFFIX,
        mode: 0o644,
    }
    .write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: &[&str]) -> Ranges {
        list.iter().map(|text| text.parse().unwrap()).collect()
    }

    #[test]
    fn a_rendered_file_parses_back_to_its_ranges_without_repairs() {
        let path = Path::new("/x/cf.conf");
        for target in [
            Ranges::new(),
            ranges(&["192.0.2.0/24", "2001:db8::/32", "198.51.100.0/25"]),
        ] {
            let text = render(&target);
            assert!(is_ours(text.as_bytes()));
            assert_eq!(parse(text.as_bytes(), path), (target, Vec::new()));
        }
    }

    #[test]
    fn the_file_says_who_owns_it_and_what_header_to_trust() {
        let text = render(&ranges(&["192.0.2.0/24"]));
        assert_eq!(
            text,
            "# cf-allowlist: generated file, do not edit.\n\
             # nginx trusts CF-Connecting-IP only from these ranges; `cf-allowlist sync` rewrites this\n\
             # file from Cloudflare's list and `cf-allowlist purge` deletes it.\n\
             set_real_ip_from 192.0.2.0/24;\n\
             real_ip_header CF-Connecting-IP;\n"
        );
    }

    #[test]
    fn apaches_file_names_mod_remoteips_directives_and_parses_back_strictly() {
        let path = Path::new("/x/cf-remoteip.conf");
        let target = ranges(&["192.0.2.0/24", "2001:db8::/32"]);
        let text = render_for(Server::Apache, &target);
        assert_eq!(
            text,
            "# cf-allowlist: generated file, do not edit.\n\
             # Apache (mod_remoteip) trusts CF-Connecting-IP only from these ranges; `cf-allowlist sync`\n\
             # rewrites this file from Cloudflare's list and `cf-allowlist purge` deletes it.\n\
             RemoteIPTrustedProxy 192.0.2.0/24\n\
             RemoteIPTrustedProxy 2001:db8::/32\n\
             RemoteIPHeader CF-Connecting-IP\n"
        );
        assert!(is_ours(text.as_bytes()));
        assert_eq!(
            parse_for(Server::Apache, text.as_bytes(), path),
            (target.clone(), Vec::new())
        );
        // Apache's lines are not nginx's, and the other way round.
        let (_, repairs) = parse_for(Server::Nginx, text.as_bytes(), path);
        assert!(!repairs.is_empty());
        let (_, repairs) = parse_for(Server::Apache, render(&target).as_bytes(), path);
        assert!(!repairs.is_empty());
        // RemoteIPInternalProxy would trust private addresses too: not ours.
        let (held, repairs) = parse_for(
            Server::Apache,
            text.replace("RemoteIPTrustedProxy 192", "RemoteIPInternalProxy 192")
                .as_bytes(),
            path,
        );
        assert_eq!(held, ranges(&["2001:db8::/32"]));
        assert_eq!(
            repairs,
            vec!["remove unrecognised line 4: \"RemoteIPInternalProxy 192.0.2.0/24\""]
        );
    }

    #[test]
    fn caddys_snippet_continues_one_directive_and_parses_back_strictly() {
        let path = Path::new("/x/cf.caddyfile");
        let target = ranges(&["192.0.2.0/24", "2001:db8::/32"]);
        let text = render_for(Server::Caddy, &target);
        assert_eq!(
            text,
            "# cf-allowlist: generated file, do not edit.\n\
             # Caddy trusts CF-Connecting-IP only from these ranges: import this file inside `servers { }`\n\
             # in the Caddyfile's global options. `cf-allowlist sync` rewrites it from Cloudflare's list\n\
             # and `cf-allowlist purge` deletes it. Needs Caddy 2.7 or newer.\n\
             trusted_proxies static \\\n\
             \t192.0.2.0/24 \\\n\
             \t2001:db8::/32 \\\n\
             \t# end of the trusted ranges\n\
             client_ip_headers CF-Connecting-IP\n"
        );
        assert_eq!(
            parse_for(Server::Caddy, text.as_bytes(), path),
            (target.clone(), Vec::new())
        );
        // An empty list keeps the structure: Caddy then trusts nobody's header.
        let empty = render_for(Server::Caddy, &Ranges::new());
        assert!(
            empty.contains("trusted_proxies static \\\n\t# end"),
            "{empty}"
        );
        assert_eq!(
            parse_for(Server::Caddy, empty.as_bytes(), path),
            (Ranges::new(), Vec::new())
        );
        // A range without its continuation would end the directive early: drift, not ours.
        let (held, repairs) = parse_for(
            Server::Caddy,
            text.replace("\t192.0.2.0/24 \\\n", "\t192.0.2.0/24\n")
                .as_bytes(),
            path,
        );
        assert_eq!(held, ranges(&["2001:db8::/32"]));
        assert_eq!(
            repairs,
            vec!["remove unrecognised line 6: \"\\t192.0.2.0/24\""]
        );
        // `private_ranges` would trust every private address: not ours.
        let (_, repairs) = parse_for(
            Server::Caddy,
            text.replace("\t2001:db8::/32 \\", "\tprivate_ranges \\")
                .as_bytes(),
            path,
        );
        assert_eq!(repairs.len(), 1, "{repairs:?}");
        let (_, repairs) = parse_for(
            Server::Caddy,
            text.replace("\t# end of the trusted ranges\n", "")
                .as_bytes(),
            path,
        );
        assert_eq!(repairs, vec!["add `\t# end of the trusted ranges`"]);
    }

    #[test]
    fn anything_not_written_by_us_is_drift() {
        let path = Path::new("/x/cf.conf");
        let clean = render(&ranges(&["192.0.2.0/24", "198.51.100.0/24"]));
        let cases = [
            (
                clean.replace("real_ip_header CF-Connecting-IP;\n", ""),
                "add `real_ip_header CF-Connecting-IP;`",
            ),
            (
                clean.clone() + "real_ip_recursive on;\n",
                "remove unrecognised line 7: \"real_ip_recursive on;\"",
            ),
            (
                clean.replace("198.51.100.0/24", "198.51.100.1/24"),
                "remove unrecognised line 5",
            ),
            (
                clean.replace("198.51.100.0/24;", "198.51.100.7;"),
                "remove unrecognised line 5",
            ),
            (
                clean.replace("set_real_ip_from 198", "set_real_ip_from  198"),
                "remove unrecognised line 5",
            ),
            (
                clean.clone() + "set_real_ip_from 192.0.2.0/24;\n",
                "remove the duplicate `set_real_ip_from 192.0.2.0/24;`",
            ),
            (
                clean.clone() + "real_ip_header CF-Connecting-IP;\n",
                "remove 1 duplicate `real_ip_header CF-Connecting-IP;`",
            ),
            (
                clean.replace("# file from", "# a file from"),
                "restore the header comment",
            ),
            (clean.clone() + "\n", "remove unrecognised line 7: \"\""),
            (clean[..clean.len() - 1].to_owned(), "in the order and form"),
            (
                clean.replace(
                    "set_real_ip_from 192.0.2.0/24;\nset_real_ip_from 198.51.100.0/24;",
                    "set_real_ip_from 198.51.100.0/24;\nset_real_ip_from 192.0.2.0/24;",
                ),
                "in the order and form",
            ),
        ];
        for (text, expected) in cases {
            let (_, repairs) = parse(text.as_bytes(), path);
            assert!(
                repairs.iter().any(|repair| repair.contains(expected)),
                "{expected:?} not in {repairs:?} for\n{text}"
            );
        }
    }

    #[test]
    fn a_hand_added_range_is_read_as_a_range_to_remove() {
        let clean = render(&ranges(&["192.0.2.0/24"]));
        let edited = clean.replace(
            "real_ip_header",
            "set_real_ip_from 203.0.113.0/24;\nreal_ip_header",
        );
        let (found, repairs) = parse(edited.as_bytes(), Path::new("/x/cf.conf"));
        assert_eq!(found, ranges(&["192.0.2.0/24", "203.0.113.0/24"]));
        assert_eq!(repairs, Vec::<String>::new());
    }

    #[test]
    fn only_a_file_with_our_first_line_is_ours() {
        assert!(!is_ours(b"set_real_ip_from 192.0.2.0/24;\n"));
        assert!(!is_ours(b""));
        assert!(!is_ours(b" # cf-allowlist: generated file, do not edit.\n"));
    }

    #[test]
    fn options_refuse_relative_paths_and_empty_commands() {
        let mut options = NginxOptions::default();
        assert_eq!(options.check(), Ok(()));
        options.path = PathBuf::from("conf.d/cf.conf");
        assert!(options.check().unwrap_err().contains("absolute"));
        options.path = PathBuf::from("/etc/nginx/conf.d/");
        assert!(options.check().unwrap_err().contains("name a file"));
        options = NginxOptions {
            reload_command: Vec::new(),
            ..NginxOptions::default()
        };
        assert!(options.check().unwrap_err().contains("reload_command"));
    }
}
