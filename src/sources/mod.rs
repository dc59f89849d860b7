//! Where ranges come from: naming a source, fetching its body, and reading the body strictly
//! into networks. This module and [`fetch`] are the only code that opens a network connection.

pub mod fetch;
pub mod parse;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use fetch::FetchSettings;

/// The date the embedded copy of Cloudflare's list was taken.
pub const BUILTIN_DATE: &str = "2026-10-01";
const BUILTIN_V4: &str = include_str!("../builtin/ips-v4");
const BUILTIN_V6: &str = include_str!("../builtin/ips-v6");

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
            return Err(SourceError::new(text, "a source cannot be empty"));
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
            return Err(SourceError::new(
                text,
                "only https://, http://, file:// and plain paths are supported",
            ));
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

/// A source that could not be used, and why. One per failing source; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("source {source_name}: {reason}")]
pub struct SourceError {
    /// The source as the user named it.
    pub source_name: String,
    /// What was wrong, as a lowercase phrase.
    pub reason: String,
}

impl SourceError {
    /// A failure of `source` for `reason`.
    pub fn new(source: impl fmt::Display, reason: impl Into<String>) -> SourceError {
        SourceError {
            source_name: source.to_string(),
            reason: reason.into(),
        }
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
    let mut fetched = Fetched {
        source: source.clone(),
        networks: Vec::new(),
        warning: None,
        not_modified: false,
        cache: None,
    };
    let body = match source {
        Source::Builtin => {
            fetched.warning = Some(builtin_warning(SystemTime::now()));
            format!("{BUILTIN_V4}\n{BUILTIN_V6}").into_bytes()
        }
        Source::File(path) => fetch::read_file(path, settings.max_body_bytes)
            .map_err(|reason| SourceError::new(source, reason))?,
        Source::Url(url) => {
            if url.to_ascii_lowercase().starts_with("http://") {
                fetched.warning = Some(format!(
                    "source {url} is plain http: its answer is not authenticated"
                ));
            }
            let validators = cached
                .filter(|cached| cached.etag.is_some() || cached.last_modified.is_some())
                .map(|cached| fetch::Validators {
                    etag: cached.etag.clone(),
                    last_modified: cached.last_modified.clone(),
                });
            match fetch::get(url, settings, validators.as_ref())
                .map_err(|reason| SourceError::new(source, reason))?
            {
                fetch::Answer::NotModified => {
                    let cached = cached.expect("validators come from the cache");
                    fetched.networks = cached.networks.clone();
                    fetched.not_modified = true;
                    fetched.cache = Some(cached.clone());
                    return Ok(fetched);
                }
                fetch::Answer::Fresh {
                    body,
                    etag,
                    last_modified,
                } => {
                    if etag.is_some() || last_modified.is_some() {
                        fetched.cache = Some(CachedSource {
                            etag,
                            last_modified,
                            networks: Vec::new(),
                        });
                    }
                    body
                }
            }
        }
    };
    fetched.networks =
        parse::parse_body(&body).map_err(|error| SourceError::new(source, error.to_string()))?;
    if let Some(cache) = fetched.cache.as_mut() {
        cache.networks = fetched.networks.clone();
    }
    Ok(fetched)
}

fn builtin_warning(now: SystemTime) -> String {
    let taken = humantime::parse_rfc3339(&format!("{BUILTIN_DATE}T00:00:00Z"))
        .expect("BUILTIN_DATE is a valid date");
    let days = now
        .duration_since(taken)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        / 86_400;
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
