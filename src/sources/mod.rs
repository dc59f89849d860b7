//! Where ranges come from: naming a source, fetching its body, and reading the body strictly
//! into networks. This module and [`fetch`] are the only code that opens a network connection.

pub mod fetch;
pub mod memo;
pub mod parse;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use fetch::{FetchError, FetchSettings};

use crate::validate::Refused;

/// The date the embedded copy of Cloudflare's list was taken.
pub const BUILTIN_DATE: &str = "2026-10-01";
const BUILTIN_V4: &str = include_str!("../builtin/ips-v4");
const BUILTIN_V6: &str = include_str!("../builtin/ips-v6");

/// The source used with `jdcloud` when none is configured: the JSON API, asked for JD Cloud's
/// ranges too.
pub const JDCLOUD_SOURCE: &str = "https://api.cloudflare.com/client/v4/ips?networks=jdcloud";

/// Cloudflare's published lists, used when no source is configured.
pub const DEFAULT_SOURCES: [&str; 2] = [
    "https://www.cloudflare.com/ips-v4",
    "https://www.cloudflare.com/ips-v6",
];

/// A place to read ranges from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An http:// or https:// URL serving a text list or Cloudflare's JSON API.
    Url(String),
    /// A local file holding a text list or the JSON API's answer.
    File(PathBuf),
    /// The copy of Cloudflare's list embedded at build time.
    Builtin,
}

impl Source {
    /// Reads a source as the user names it.
    pub fn parse(text: &str) -> Result<Source, SourceError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SourceError::Name {
                name: text.to_owned(),
                reason: "a source cannot be empty",
            });
        }
        if text == "builtin" {
            return Ok(Source::Builtin);
        }
        if let Some(path) = text.strip_prefix("file://") {
            return Ok(Source::File(PathBuf::from(path)));
        }
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("https://") || lower.starts_with("http://") {
            return Ok(Source::Url(text.to_owned()));
        }
        if lower.contains("://") {
            return Err(SourceError::Name {
                name: text.to_owned(),
                reason: "only https://, http://, file:// and plain paths are supported",
            });
        }
        Ok(Source::File(PathBuf::from(text)))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Url(url) => f.write_str(url),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Builtin => f.write_str("builtin"),
        }
    }
}

/// A source that could not be used, and why: a variant per step that can fail, each naming
/// the source as the user wrote it.
///
/// Where another layer failed (the transport, the file system) the message names the step and
/// [`source()`](std::error::Error::source) is that layer's error, shown as `caused by:` lines.
/// Where this crate itself judged the source (a bad line, a refused range, a redirect
/// elsewhere, an HTTP status) the message says it all and there is no cause: a `caused by`
/// line would say the same again, and the exact reason belongs on the `error:` line.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The text does not name a source.
    #[error("source {name}: {reason}")]
    Name {
        /// The text as the user wrote it (trimmed).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The transport failed: name resolution, connection, TLS, a timeout, a body cut short.
    #[error("source {source_name}: {}", request_summary(cause))]
    Request {
        /// The source.
        source_name: String,
        /// The transport's error, with the step and the number of attempts.
        #[source]
        cause: fetch::FetchError,
    },
    /// The server answered with a status other than 200 (or 304 to a conditional request).
    #[error("source {source_name}: {}", status_summary(*status, *attempts))]
    Status {
        /// The source.
        source_name: String,
        /// The status code.
        status: u16,
        /// How many attempts were made (5xx and 429 are retried).
        attempts: u32,
    },
    /// The server's answer is larger than the size limit.
    #[error("source {source_name}: the answer is larger than {limit} bytes")]
    TooLarge {
        /// The source.
        source_name: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A redirect was not followed.
    #[error("source {source_name}: {reason}")]
    Redirect {
        /// The source.
        source_name: String,
        /// Why not.
        reason: fetch::RedirectError,
    },
    /// A file source could not be opened or read.
    #[error("source {source_name}: cannot read the file")]
    File {
        /// The source.
        source_name: String,
        /// The file system's error.
        #[source]
        cause: std::io::Error,
    },
    /// A file source is a FIFO, a device, a directory or a socket, which could block forever
    /// or never end.
    #[error("source {source_name}: not a regular file ({what})")]
    NotARegularFile {
        /// The source.
        source_name: String,
        /// What it is instead, as a phrase ("a FIFO").
        what: &'static str,
    },
    /// A file source is larger than the size limit.
    #[error("source {source_name}: the file is larger than {limit} bytes")]
    FileTooLarge {
        /// The source.
        source_name: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A file source was not opened and read within the whole-request time limit (a hung
    /// network mount).
    #[error(
        "source {source_name}: the file was not read within {}",
        humantime::format_duration(*limit)
    )]
    FileTimedOut {
        /// The source.
        source_name: String,
        /// The time limit.
        limit: Duration,
    },
    /// The body is not a list of ranges.
    #[error("source {source_name}: {cause}")]
    Parse {
        /// The source.
        source_name: String,
        /// What is wrong with the body (stated in the message, so not a `source()`).
        cause: parse::ParseError,
    },
    /// A range the source listed (or, for `(all sources)`, the merged list) broke a rule.
    #[error("source {source_name}: {cause}")]
    Refused {
        /// The source.
        source_name: String,
        /// The range and the rule (stated in the message, so not a `source()`).
        cause: Refused,
    },
}

impl SourceError {
    /// A range from `source` refused by validation. `source` may also name a group of sources,
    /// such as `(all sources)` when the merged list fails.
    pub fn refused(source: impl fmt::Display, cause: Refused) -> SourceError {
        SourceError::Refused {
            source_name: source.to_string(),
            cause,
        }
    }

    /// The source as the user named it.
    pub fn source_name(&self) -> &str {
        match self {
            SourceError::Name { name, .. } => name,
            SourceError::Request { source_name, .. }
            | SourceError::Status { source_name, .. }
            | SourceError::TooLarge { source_name, .. }
            | SourceError::Redirect { source_name, .. }
            | SourceError::File { source_name, .. }
            | SourceError::NotARegularFile { source_name, .. }
            | SourceError::FileTooLarge { source_name, .. }
            | SourceError::FileTimedOut { source_name, .. }
            | SourceError::Parse { source_name, .. }
            | SourceError::Refused { source_name, .. } => source_name,
        }
    }

    /// Whether talking to a URL source failed (the transport, an HTTP status, a redirect, an
    /// answer too large), as opposed to a bad name, a bad file or a bad list. This is the
    /// failure a host without access to Cloudflare sees.
    pub fn is_network(&self) -> bool {
        matches!(
            self,
            SourceError::Request { .. }
                | SourceError::Status { .. }
                | SourceError::Redirect { .. }
                | SourceError::TooLarge { .. }
        )
    }
}

/// The `error:` line's phrase for a transport failure: the step, whether a time limit ran out
/// and how many attempts were made; the transport's own text follows as the cause.
fn request_summary(cause: &fetch::FetchError) -> String {
    let step = match cause.step() {
        fetch::FetchStep::Request => "request failed",
        fetch::FetchStep::Body => "reading the answer failed",
    };
    let timeout = if cause.is_timeout() { ": timeout" } else { "" };
    format!("{step}{timeout}{}", after_attempts(cause.attempts()))
}

/// The `error:` line's phrase for an HTTP status: `HTTP 503 Service Unavailable (after 3
/// attempts`.
fn status_summary(status: u16, attempts: u32) -> String {
    let reason = fetch::status_reason(status)
        .map(|reason| format!(" {reason}"))
        .unwrap_or_default();
    format!("HTTP {status}{reason}{}", after_attempts(attempts))
}

fn after_attempts(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    }
}

/// What a source answered last time, kept in the state directory so that the next fetch can
/// be conditional (`If-None-Match` / `If-Modified-Since`) and a 304 still yields its ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedSource {
    /// The `ETag` of the last 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The `Last-Modified` of the last 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// The networks that answer held.
    pub networks: Vec<IpNet>,
    /// Whether JD Cloud's ranges were asked for (a cached answer read without them is no
    /// answer for a run that wants them, and the other way round).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub jdcloud: bool,
}

/// The networks one source yielded, in the order it listed them.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The source.
    pub source: Source,
    /// Its networks, parsed but not yet validated against the range rules.
    pub networks: Vec<IpNet>,
    /// Something the user should hear about this source (the builtin list's age, plain http).
    pub warning: Option<String>,
    /// Whether the server answered 304 and the cached networks were used.
    pub not_modified: bool,
    /// What to remember for the next conditional request (URL sources with validators).
    pub cache: Option<CachedSource>,
}

/// Fetches and parses one source, conditionally if `cached` holds validators. Never alters
/// anything.
pub fn load(
    source: &Source,
    settings: &FetchSettings,
    cached: Option<&CachedSource>,
) -> Result<Fetched, SourceError> {
    answer(source, settings, cached)?.parse(settings.jdcloud)
}

/// What a source answered, before it is parsed: the body, or (after a 304) the networks
/// cached from its last answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The source.
    pub source: Source,
    /// What it answered.
    pub body: Body,
    /// Something the user should hear about this source (the builtin list's age, plain http).
    pub warning: Option<String>,
    /// What to remember for the next conditional request (its networks still empty for a
    /// body: they are filled in by [`Answer::parse`]).
    pub cache: Option<CachedSource>,
}

/// A source's answer.
#[derive(Debug, Clone)]
pub enum Body {
    /// The bytes it sent (or the file's, or the builtin list's).
    Bytes(Vec<u8>),
    /// The server answered 304: the networks read from its last answer.
    NotModified(Vec<IpNet>),
}

impl Answer {
    /// Whether the server answered 304 and the cached networks are the answer.
    pub fn not_modified(&self) -> bool {
        matches!(self.body, Body::NotModified(_))
    }

    /// A digest of the answer: of the body's bytes, or of the cached networks.
    pub fn digest(&self) -> String {
        match &self.body {
            Body::Bytes(bytes) => crate::proof::sha256_bytes_hex(bytes),
            Body::NotModified(networks) => {
                format!("cached:{}", crate::proof::ranges_digest(networks))
            }
        }
    }

    /// Reads the answer strictly into networks (with `jdcloud`, a JSON answer must also carry
    /// JD Cloud's ranges).
    pub fn parse(self, jdcloud: bool) -> Result<Fetched, SourceError> {
        let mut fetched = Fetched {
            source: self.source,
            networks: Vec::new(),
            warning: self.warning,
            not_modified: false,
            cache: self.cache,
        };
        match self.body {
            Body::NotModified(networks) => {
                fetched.networks = networks;
                fetched.not_modified = true;
            }
            Body::Bytes(body) => {
                fetched.networks =
                    parse::parse_body_with(&body, jdcloud).map_err(|cause| SourceError::Parse {
                        source_name: fetched.source.to_string(),
                        cause,
                    })?;
                if let Some(cache) = fetched.cache.as_mut() {
                    cache.networks = fetched.networks.clone();
                }
            }
        }
        Ok(fetched)
    }
}

/// Fetches one source, conditionally if `cached` holds validators, without reading what it
/// answered. Never alters anything.
pub fn answer(
    source: &Source,
    settings: &FetchSettings,
    cached: Option<&CachedSource>,
) -> Result<Answer, SourceError> {
    let mut answer = Answer {
        source: source.clone(),
        body: Body::Bytes(Vec::new()),
        warning: None,
        cache: None,
    };
    let body = match source {
        Source::Builtin => {
            answer.warning = Some(builtin_warning(SystemTime::now()));
            format!("{BUILTIN_V4}\n{BUILTIN_V6}").into_bytes()
        }
        Source::File(path) => fetch::read_file(path, settings)?,
        Source::Url(url) => {
            if url.to_ascii_lowercase().starts_with("http://") {
                answer.warning = Some(format!(
                    "source {url} is plain http: its answer is not authenticated"
                ));
            }
            let cached = cached.filter(|cached| cached.jdcloud == settings.jdcloud);
            let validators = cached
                .filter(|cached| cached.etag.is_some() || cached.last_modified.is_some())
                .map(|cached| fetch::Validators {
                    etag: cached.etag.clone(),
                    last_modified: cached.last_modified.clone(),
                });
            match fetch::get(url, settings, validators.as_ref())? {
                fetch::Answer::NotModified => {
                    let cached = cached.expect("validators come from the cache");
                    answer.body = Body::NotModified(cached.networks.clone());
                    answer.cache = Some(cached.clone());
                    return Ok(answer);
                }
                fetch::Answer::Fresh {
                    body,
                    etag,
                    last_modified,
                } => {
                    if etag.is_some() || last_modified.is_some() {
                        answer.cache = Some(CachedSource {
                            etag,
                            last_modified,
                            networks: Vec::new(),
                            jdcloud: settings.jdcloud,
                        });
                    }
                    body
                }
            }
        }
    };
    answer.body = Body::Bytes(body);
    Ok(answer)
}

/// How many whole days old the builtin list is at `now`.
pub fn builtin_age_days(now: SystemTime) -> u64 {
    let taken = humantime::parse_rfc3339(&format!("{BUILTIN_DATE}T00:00:00Z"))
        .expect("BUILTIN_DATE is a valid date");
    now.duration_since(taken)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        / 86_400
}

fn builtin_warning(now: SystemTime) -> String {
    let days = builtin_age_days(now);
    format!("using the builtin list of Cloudflare's ranges from {BUILTIN_DATE} ({days} days old)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_named_as_users_write_them() {
        assert_eq!(Source::parse("builtin").unwrap(), Source::Builtin);
        assert_eq!(
            Source::parse("https://www.cloudflare.com/ips-v4").unwrap(),
            Source::Url("https://www.cloudflare.com/ips-v4".to_owned())
        );
        assert_eq!(
            Source::parse("file:///etc/cf/list").unwrap(),
            Source::File("/etc/cf/list".into())
        );
        assert_eq!(
            Source::parse("./list.txt").unwrap(),
            Source::File("./list.txt".into())
        );
        assert!(Source::parse("ftp://example.test/list").is_err());
        assert!(Source::parse("  ").is_err());
    }

    #[test]
    fn a_name_that_is_no_source_says_why() {
        let error = Source::parse(" ftp://example.test/list ").unwrap_err();
        assert_eq!(
            error.to_string(),
            "source ftp://example.test/list: only https://, http://, file:// and plain paths \
             are supported"
        );
        assert_eq!(error.source_name(), "ftp://example.test/list");
        assert!(std::error::Error::source(&error).is_none());
        assert!(!error.is_network());
        assert!(matches!(
            Source::parse("").unwrap_err(),
            SourceError::Name {
                reason: "a source cannot be empty",
                ..
            }
        ));
    }

    #[test]
    fn a_body_that_is_no_list_names_the_source_and_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("page");
        std::fs::write(&path, "<!DOCTYPE html>\n").unwrap();
        let source = Source::File(path.clone());
        let error = load(&source, &FetchSettings::default(), None).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "source {}: line 1 is not a CIDR range: \"<!DOCTYPE html>\"",
                path.display()
            )
        );
        assert!(matches!(
            error,
            SourceError::Parse {
                cause: parse::ParseError::BadLine { line: 1, .. },
                ..
            }
        ));
        // The reason is the message itself; a cause would say it twice.
        assert!(std::error::Error::source(&error).is_none());
        assert!(!error.is_network());
    }

    #[test]
    fn a_refused_range_names_the_source_and_the_rule() {
        let network: IpNet = "10.0.0.0/8".parse().unwrap();
        let refused =
            crate::validate::check(&network, &crate::validate::Limits::default()).unwrap_err();
        let error = SourceError::refused("(all sources)", refused.clone());
        assert_eq!(
            error.to_string(),
            format!("source (all sources): {refused}")
        );
        assert!(error.to_string().contains("10.0.0.0/8 is refused"));
        assert_eq!(error.source_name(), "(all sources)");
        assert!(std::error::Error::source(&error).is_none());
        assert!(!error.is_network());
    }

    #[test]
    fn a_file_read_past_the_time_limit_says_so() {
        let error = SourceError::FileTimedOut {
            source_name: "/mnt/hung/list".to_owned(),
            limit: Duration::from_secs(30),
        };
        assert_eq!(
            error.to_string(),
            "source /mnt/hung/list: the file was not read within 30s"
        );
        assert!(!error.is_network());
    }

    #[test]
    fn the_builtin_list_is_cloudflares_published_one() {
        let fetched = load(&Source::Builtin, &FetchSettings::default(), None).unwrap();
        let v4 = fetched
            .networks
            .iter()
            .filter(|n| matches!(n, IpNet::V4(_)))
            .count();
        let v6 = fetched
            .networks
            .iter()
            .filter(|n| matches!(n, IpNet::V6(_)))
            .count();
        assert_eq!((v4, v6), (15, 7));
        assert!(fetched.warning.unwrap().contains(BUILTIN_DATE));
    }

    #[test]
    fn the_builtin_warning_counts_days() {
        let taken = humantime::parse_rfc3339("2026-10-01T00:00:00Z").unwrap();
        let later = taken + Duration::from_secs(54 * 86_400 + 5);
        assert!(builtin_warning(later).contains("(54 days old)"));
    }
}
