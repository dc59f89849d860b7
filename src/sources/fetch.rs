//! Getting a source's body: over HTTP(S) with timeouts on connect and on the whole request, a
//! cap on the body size, and redirects followed only on the same host (Cloudflare's own moved
//! `/ips-v4` to `/ips-v4/` once; a redirect elsewhere is not Cloudflare's list).

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

/// Limits for fetching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSettings {
    /// Time to set up the connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time for the whole request, body included, redirects included.
    pub total_timeout: Duration,
    /// The largest body accepted; real lists are well under 1 KiB.
    pub max_body_bytes: u64,
}

impl Default for FetchSettings {
    fn default() -> FetchSettings {
        FetchSettings {
            connect_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
        }
    }
}

const MAX_REDIRECTS: usize = 5;
/// Attempts per source on connection errors and 5xx answers.
pub const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// What a source's server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A 200 with its body and cache validators.
    Fresh {
        /// The body.
        body: Vec<u8>,
        /// The `ETag` header.
        etag: Option<String>,
        /// The `Last-Modified` header.
        last_modified: Option<String>,
    },
    /// A 304: unchanged since the validators we sent.
    NotModified,
}

/// Validators from an earlier answer, sent as `If-None-Match` / `If-Modified-Since`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// The earlier `ETag`.
    pub etag: Option<String>,
    /// The earlier `Last-Modified`.
    pub last_modified: Option<String>,
}

/// Why one attempt failed, and whether another may succeed.
struct Failure {
    reason: String,
    retry: bool,
}

/// GETs `url`; retries connection errors and 5xx answers (at most [`ATTEMPTS`] tries, with
/// backoff, within the whole-request deadline); returns the answer or a reason.
pub fn get(
    url: &str,
    settings: &FetchSettings,
    validators: Option<&Validators>,
) -> Result<Answer, String> {
    let deadline = Instant::now() + settings.total_timeout;
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match get_once(url, settings, remaining, validators) {
            Ok(answer) => return Ok(answer),
            Err(failure)
                if failure.retry
                    && attempt < ATTEMPTS
                    && deadline.saturating_duration_since(Instant::now()) > backoff =>
            {
                std::thread::sleep(backoff);
                backoff *= 2;
                attempt += 1;
            }
            Err(failure) if attempt > 1 => {
                return Err(format!("{} (after {attempt} attempts)", failure.reason));
            }
            Err(failure) => return Err(failure.reason),
        }
    }
}

fn get_once(
    url: &str,
    settings: &FetchSettings,
    remaining: Duration,
    validators: Option<&Validators>,
) -> Result<Answer, Failure> {
    let fail = |reason: String, retry: bool| Failure { reason, retry };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(settings.connect_timeout.min(remaining)))
        .timeout_global(Some(remaining))
        .max_redirects(0)
        .max_redirects_will_error(false)
        .http_status_as_error(false)
        .user_agent(concat!("cf-allowlist/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut current = url.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        let mut request = agent.get(&current);
        if let Some(validators) = validators {
            if let Some(etag) = &validators.etag {
                request = request.header("If-None-Match", etag);
            }
            if let Some(last_modified) = &validators.last_modified {
                request = request.header("If-Modified-Since", last_modified);
            }
        }
        let mut response = request.call().map_err(|error| {
            // Passing network trouble is retried; a refused certificate or a timeout is not.
            let retry = match &error {
                ureq::Error::Io(io) => matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::NotConnected
                ),
                ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
                _ => false,
            };
            fail(format!("request failed: {error}"), retry)
        })?;
        let status = response.status();
        if status == 304 && validators.is_some() {
            return Ok(Answer::NotModified);
        }
        if status.is_redirection() {
            let location = response
                .headers()
                .get("location")
                .and_then(|value| value.to_str().ok())
                .ok_or_else(|| {
                    fail(
                        format!("HTTP {} without a Location", status.as_u16()),
                        false,
                    )
                })?;
            current =
                same_host_redirect(&current, location).map_err(|reason| fail(reason, false))?;
            continue;
        }
        if status != 200 {
            let reason = format!(
                "HTTP {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
            return Err(fail(
                reason.trim_end().to_owned(),
                status.is_server_error() || status == 429,
            ));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let (etag, last_modified) = (header("etag"), header("last-modified"));
        let body = response
            .body_mut()
            .with_config()
            .limit(settings.max_body_bytes)
            .read_to_vec()
            .map_err(|error| match error {
                ureq::Error::BodyExceedsLimit(limit) => {
                    fail(format!("the answer is larger than {limit} bytes"), false)
                }
                other => fail(format!("reading the answer failed: {other}"), false),
            })?;
        return Ok(Answer::Fresh {
            body,
            etag,
            last_modified,
        });
    }
    Err(fail(format!("more than {MAX_REDIRECTS} redirects"), false))
}

/// Resolves a redirect's Location against `from`, refusing another host or a downgrade to http.
fn same_host_redirect(from: &str, location: &str) -> Result<String, String> {
    let (from_scheme, from_authority, from_path) = split_url(from).ok_or("malformed URL")?;
    let target = if location.starts_with("//") || location.contains("://") {
        location.to_owned()
    } else if location.starts_with('/') {
        format!("{from_scheme}://{from_authority}{location}")
    } else {
        // A relative reference: resolved against the current path's folder.
        let folder = &from_path[..from_path.rfind('/').map_or(0, |at| at + 1)];
        let folder = if folder.is_empty() { "/" } else { folder };
        format!("{from_scheme}://{from_authority}{folder}{location}")
    };
    let (scheme, authority, _) =
        split_url(&target).ok_or_else(|| format!("redirect to unusable location {location:?}"))?;
    if !authority.eq_ignore_ascii_case(from_authority) {
        return Err(format!(
            "redirected to another host ({authority}); only same-host redirects are followed"
        ));
    }
    if from_scheme == "https" && scheme != "https" {
        return Err("redirected from https to plain http".to_owned());
    }
    Ok(target)
}

fn split_url(url: &str) -> Option<(String, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    (!authority.is_empty()).then(|| (scheme.to_ascii_lowercase(), authority, path))
}

/// Reads a local file, refusing one larger than `limit` without reading it all.
pub fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|error| format!("cannot open: {error}"))?;
    let mut body = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|error| format!("cannot read: {error}"))?;
    if body.len() as u64 > limit {
        return Err(format!("the file is larger than {limit} bytes"));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_on_the_same_host() {
        assert_eq!(
            same_host_redirect("https://www.cloudflare.com/ips-v4", "/ips-v4/").unwrap(),
            "https://www.cloudflare.com/ips-v4/"
        );
        assert_eq!(
            same_host_redirect("http://127.0.0.1:8080/a", "http://127.0.0.1:8080/b").unwrap(),
            "http://127.0.0.1:8080/b"
        );
        assert_eq!(
            same_host_redirect("https://www.cloudflare.com/lists/ips-v4", "ips-v4/").unwrap(),
            "https://www.cloudflare.com/lists/ips-v4/"
        );
        assert!(
            same_host_redirect("https://www.cloudflare.com/ips-v4", "https://evil.test/x").is_err()
        );
        assert!(same_host_redirect("https://a.test/x", "//b.test/x").is_err());
        assert!(same_host_redirect("https://a.test/x", "http://a.test/x").is_err());
        assert!(same_host_redirect("http://127.0.0.1:8080/a", "http://127.0.0.1:9090/a").is_err());
    }
}
