//! Getting a source's body: over HTTP(S) with timeouts on connect and on the whole request, a
//! cap on the body size, and redirects followed only on the same host (Cloudflare's own moved
//! `/ips-v4` to `/ips-v4/` once; a redirect elsewhere is not Cloudflare's list); or from a
//! local file, which must be a regular file and is bounded by the same size and time limits
//! (a FIFO, a device or a hung mount would otherwise hold the lock for good).
//!
//! Failures are [`SourceError`]s named after the source as the user wrote it. The transport's
//! own error is kept whole in a [`FetchError`], so the `caused by` line reaches the OS or TLS
//! error.

use std::fmt;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::SourceError;

/// Limits for fetching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSettings {
    /// Time to set up the connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time for the whole request, body included, redirects included; for a file source, the
    /// time to open and read it.
    pub total_timeout: Duration,
    /// The largest body (or file) accepted; real lists are well under 1 KiB.
    pub max_body_bytes: u64,
    /// Whether JSON answers must carry JD Cloud's ranges too (`jdcloud = true`).
    pub jdcloud: bool,
}

impl Default for FetchSettings {
    fn default() -> FetchSettings {
        FetchSettings {
            connect_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
            jdcloud: false,
        }
    }
}

/// The most redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;
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

/// The step of an HTTP exchange at which the transport failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchStep {
    /// Resolving, connecting, the TLS handshake, sending, or waiting for the status line.
    Request,
    /// Reading the body of a 200.
    Body,
}

/// The transport failed: name resolution, connection, TLS, a timeout, a body cut short.
///
/// Its message is the transport's own (ureq's text, which carries the OS or TLS error, such as
/// `io: Connection refused (os error 111)` or `invalid peer certificate: UnknownIssuer`). The
/// step, whether it was a timeout and how many attempts were made are fields that
/// [`SourceError`]'s own message states, so the `caused by` line never repeats the line above
/// it. ureq's error reports no `source()` of its own, so its text ends the chain.
#[derive(Debug)]
pub struct FetchError {
    step: FetchStep,
    attempts: u32,
    error: ureq::Error,
}

impl FetchError {
    /// The step that failed.
    pub fn step(&self) -> FetchStep {
        self.step
    }

    /// How many attempts were made, the failing one included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether a time limit (connect or whole-request) ran out.
    pub fn is_timeout(&self) -> bool {
        match &self.error {
            ureq::Error::Timeout(_) => true,
            ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::TimedOut,
            _ => false,
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for FetchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The message is ureq's; its causes (none today) are ours.
        std::error::Error::source(&self.error)
    }
}

/// Why a redirect was not followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    /// A redirect status without a usable `Location` header.
    #[error("HTTP {status} without a Location")]
    NoLocation {
        /// The status.
        status: u16,
    },
    /// A `Location` that is not a URL we can follow.
    #[error("redirect to unusable location {location:?}")]
    Unusable {
        /// The `Location` header.
        location: String,
    },
    /// A redirect to another host (or port).
    #[error("redirected to another host ({authority}); only same-host redirects are followed")]
    OtherHost {
        /// The other host, with its port if any.
        authority: String,
    },
    /// A redirect from https to plain http.
    #[error("redirected from https to plain http")]
    Downgrade,
    /// More than [`MAX_REDIRECTS`] redirects.
    #[error("more than {limit} redirects")]
    TooMany {
        /// The limit.
        limit: usize,
    },
}

/// Why one attempt failed, and whether another may succeed.
struct Failure {
    error: SourceError,
    retry: bool,
}

/// GETs `url`; retries connection errors and 5xx answers (at most [`ATTEMPTS`] tries, with
/// backoff, within the whole-request deadline); returns the answer or why there is none, named
/// after `url`.
pub fn get(
    url: &str,
    settings: &FetchSettings,
    validators: Option<&Validators>,
) -> Result<Answer, SourceError> {
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
            Err(failure) => return Err(with_attempts(failure.error, attempt)),
        }
    }
}

/// Records how many attempts a failure took, where its message says so.
fn with_attempts(mut error: SourceError, made: u32) -> SourceError {
    match &mut error {
        SourceError::Request { cause, .. } => cause.attempts = made,
        SourceError::Status { attempts, .. } => *attempts = made,
        _ => {}
    }
    error
}

fn get_once(
    url: &str,
    settings: &FetchSettings,
    remaining: Duration,
    validators: Option<&Validators>,
) -> Result<Answer, Failure> {
    let source_name = || url.to_owned();
    let fail = |error: SourceError, retry: bool| Failure { error, retry };
    let transport = |step: FetchStep, error: ureq::Error| SourceError::Request {
        source_name: source_name(),
        cause: FetchError {
            step,
            attempts: 1,
            error,
        },
    };
    let redirect = |reason: RedirectError| {
        fail(
            SourceError::Redirect {
                source_name: source_name(),
                reason,
            },
            false,
        )
    };
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
            fail(transport(FetchStep::Request, error), retry)
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
                    redirect(RedirectError::NoLocation {
                        status: status.as_u16(),
                    })
                })?;
            current = same_host_redirect(&current, location).map_err(redirect)?;
            continue;
        }
        if status != 200 {
            return Err(fail(
                SourceError::Status {
                    source_name: source_name(),
                    status: status.as_u16(),
                    attempts: 1,
                },
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
                ureq::Error::BodyExceedsLimit(limit) => fail(
                    SourceError::TooLarge {
                        source_name: source_name(),
                        limit,
                    },
                    false,
                ),
                other => fail(transport(FetchStep::Body, other), false),
            })?;
        return Ok(Answer::Fresh {
            body,
            etag,
            last_modified,
        });
    }
    Err(redirect(RedirectError::TooMany {
        limit: MAX_REDIRECTS,
    }))
}

/// The reason phrase of an HTTP status, if it has a standard one.
pub(crate) fn status_reason(status: u16) -> Option<&'static str> {
    ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
}

/// Resolves a redirect's Location against `from`, refusing another host or a downgrade to http.
fn same_host_redirect(from: &str, location: &str) -> Result<String, RedirectError> {
    let unusable = || RedirectError::Unusable {
        location: location.to_owned(),
    };
    let (from_scheme, from_authority, from_path) = split_url(from).ok_or_else(unusable)?;
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
    let (scheme, authority, _) = split_url(&target).ok_or_else(unusable)?;
    if !authority.eq_ignore_ascii_case(from_authority) {
        return Err(RedirectError::OtherHost {
            authority: authority.to_owned(),
        });
    }
    if from_scheme == "https" && scheme != "https" {
        return Err(RedirectError::Downgrade);
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

/// Reads a local file source: only a regular file, at most `settings.max_body_bytes`, within
/// `settings.total_timeout`. Failures are named after `path`.
///
/// The kind of file is judged by the metadata of the opened file itself, so that nothing can
/// be swapped in between a check and the open. The open uses `O_NONBLOCK`, so that opening a
/// FIFO without a writer returns at once instead of waiting for one (the flag has no effect
/// on reading a regular file), and `O_NOCTTY`, so that a terminal named by mistake never
/// becomes this process's controlling terminal. A plain `stat` first refuses most wrong kinds
/// without opening them at all, since opening a device can have effects of its own; it is only
/// a shortcut, the opened file's metadata decides.
///
/// The time limit covers everything that can block: the `stat`, the open, the metadata and
/// the reads, which run in a helper thread. A regular file on a hung network mount can block
/// in the kernel where no thread can be interrupted; such a thread is abandoned when the
/// limit passes and ends with the process, which reports the source as timed out.
pub fn read_file(path: &Path, settings: &FetchSettings) -> Result<Vec<u8>, SourceError> {
    let limit = settings.max_body_bytes;
    let owned = path.to_owned();
    match within(settings.total_timeout, move || {
        read_regular_file(&owned, limit)
    }) {
        Ok(Some(read)) => read,
        Ok(None) => Err(SourceError::FileTimedOut {
            source_name: path.display().to_string(),
            limit: settings.total_timeout,
        }),
        Err(cause) => Err(SourceError::File {
            source_name: path.display().to_string(),
            cause,
        }),
    }
}

/// Runs `work` in a helper thread and waits at most `limit` for its result; `None` if it did
/// not finish in time (the thread is then left to finish, or not, on its own), an error if no
/// thread could be started.
fn within<T: Send + 'static>(
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<Option<T>> {
    let (sender, receiver) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("read-source".to_owned())
        .spawn(move || {
            // The receiver is gone if the wait timed out; the result is then unwanted.
            let _ = sender.send(work());
        })?;
    match receiver.recv_timeout(limit) {
        Ok(result) => Ok(Some(result)),
        Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(std::io::Error::other(
            "the thread reading it stopped without an answer",
        )),
    }
}

fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>, SourceError> {
    let source_name = || path.display().to_string();
    let not_regular = |metadata: &Metadata| {
        file_kind(metadata).map(|what| SourceError::NotARegularFile {
            source_name: source_name(),
            what,
        })
    };
    let io_error = |cause: std::io::Error| SourceError::File {
        source_name: source_name(),
        cause,
    };
    if let Some(refusal) = std::fs::metadata(path).ok().as_ref().and_then(not_regular) {
        return Err(refusal);
    }
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io_error)?;
    if let Some(refusal) = not_regular(&file.metadata().map_err(io_error)?) {
        return Err(refusal);
    }
    let mut body = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut body)
        .map_err(io_error)?;
    if body.len() as u64 > limit {
        return Err(SourceError::FileTooLarge {
            source_name: source_name(),
            limit,
        });
    }
    Ok(body)
}

/// What a file is, as a phrase, if it is not a regular file.
fn file_kind(metadata: &Metadata) -> Option<&'static str> {
    let kind = metadata.file_type();
    if kind.is_file() {
        return None;
    }
    Some(if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "an unknown kind of file"
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

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
        assert_eq!(
            same_host_redirect("https://a.test/x", "http://a.test/x").unwrap_err(),
            RedirectError::Downgrade
        );
        assert_eq!(
            same_host_redirect("http://127.0.0.1:8080/a", "http://127.0.0.1:9090/a").unwrap_err(),
            RedirectError::OtherHost {
                authority: "127.0.0.1:9090".to_owned()
            }
        );
    }

    /// The error's message and each cause's, as the printer shows them.
    fn chain(error: &SourceError) -> Vec<String> {
        let mut lines = vec![error.to_string()];
        let mut cause = error.source();
        while let Some(inner) = cause {
            lines.push(inner.to_string());
            cause = inner.source();
        }
        lines
    }

    /// Settings that keep tests fast.
    fn quick() -> FetchSettings {
        FetchSettings {
            connect_timeout: Duration::from_secs(2),
            total_timeout: Duration::from_secs(10),
            max_body_bytes: 64,
            jdcloud: false,
        }
    }

    /// A loopback server that answers every request with `reply`, then closes.
    fn serve(reply: impl Into<Vec<u8>>) -> String {
        let reply = reply.into();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                read_request_head(&mut stream);
                let _ = stream.write_all(&reply);
            }
        });
        format!("http://{address}/ips-v4")
    }

    /// Asserts the error's message and causes are just `message`.
    #[track_caller]
    fn assert_chain(error: &SourceError, message: String) {
        assert_eq!(chain(error), [message]);
    }

    /// Serves `reply` once and fetches it with [`quick`] settings, which must fail: the URL
    /// and the error.
    fn fetch_failing(reply: impl Into<Vec<u8>>) -> (String, SourceError) {
        let url = serve(reply);
        let error = get(&url, &quick(), None).unwrap_err();
        (url, error)
    }

    fn read_request_head(stream: &mut TcpStream) {
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
    }

    #[test]
    fn a_refused_connection_shows_the_os_error_as_its_cause() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/ips-v4");
        let error = get(&url, &quick(), None).unwrap_err();
        let lines = chain(&error);
        assert_eq!(
            lines[0],
            format!("source {url}: request failed (after {ATTEMPTS} attempts)")
        );
        assert!(lines[1].contains("Connection refused"), "{lines:?}");
        assert!(lines[1].contains("os error"), "{lines:?}");
        let SourceError::Request { cause, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(
            (cause.step(), cause.attempts(), cause.is_timeout()),
            (FetchStep::Request, ATTEMPTS, false)
        );
        assert!(error.is_network());
        assert_eq!(error.source_name(), url);
    }

    #[test]
    fn a_server_that_never_answers_is_a_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ips-v4", listener.local_addr().unwrap());
        let settings = FetchSettings {
            total_timeout: Duration::from_millis(300),
            ..quick()
        };
        let error = get(&url, &settings, None).unwrap_err();
        let lines = chain(&error);
        assert_eq!(lines[0], format!("source {url}: request failed: timeout"));
        assert!(lines[1].starts_with("timeout"), "{lines:?}");
        assert!(error.is_network());
        drop(listener);
    }

    #[test]
    fn an_http_error_names_its_status() {
        let (url, error) = fetch_failing("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n");
        assert_chain(&error, format!("source {url}: HTTP 403 Forbidden"));
        assert!(matches!(error, SourceError::Status { status: 403, .. }));
        assert!(error.is_network());
    }

    #[test]
    fn a_server_error_is_retried_and_says_so() {
        let (url, error) =
            fetch_failing("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        assert_chain(
            &error,
            format!("source {url}: HTTP 503 Service Unavailable (after {ATTEMPTS} attempts)"),
        );
    }

    #[test]
    fn a_redirect_to_another_host_is_refused_without_following_it() {
        let (url, error) = fetch_failing(concat!(
            "HTTP/1.1 302 Found\r\n",
            "location: http://203.0.113.9/ips-v4\r\n",
            "content-length: 0\r\n\r\n",
        ));
        assert_chain(
            &error,
            format!(
                "source {url}: redirected to another host (203.0.113.9); only same-host \
                 redirects are followed"
            ),
        );
        assert!(error.is_network());
    }

    #[test]
    fn a_redirect_loop_is_cut_off() {
        let (url, error) =
            fetch_failing("HTTP/1.1 302 Found\r\nlocation: /ips-v4\r\ncontent-length: 0\r\n\r\n");
        assert_chain(
            &error,
            format!("source {url}: more than {MAX_REDIRECTS} redirects"),
        );
    }

    #[test]
    fn an_answer_over_the_size_limit_is_refused() {
        let (url, error) = fetch_failing(format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{}",
            "0".repeat(100)
        ));
        assert_chain(
            &error,
            format!("source {url}: the answer is larger than 64 bytes"),
        );
        assert!(error.is_network());
    }

    #[test]
    fn a_body_cut_short_is_a_failed_read() {
        let (url, error) =
            fetch_failing("HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n198.51.100.0/24\n");
        let lines = chain(&error);
        assert_eq!(lines[0], format!("source {url}: reading the answer failed"));
        assert_eq!(lines.len(), 2, "{lines:?}");
        let SourceError::Request { cause, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(cause.step(), FetchStep::Body);
    }

    /// Runs `work` in a thread and fails, rather than hangs, if it takes longer than `limit`.
    fn finishes_within<T: Send + 'static>(
        limit: Duration,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || sender.send(work()));
        receiver
            .recv_timeout(limit)
            .expect("the work did not finish in time")
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("list");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let settings = FetchSettings {
            total_timeout: Duration::from_secs(60),
            ..quick()
        };
        let started = Instant::now();
        let error = finishes_within(Duration::from_secs(20), move || read_file(&fifo, &settings))
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "it waited");
        let name = dir.path().join("list").display().to_string();
        assert_chain(
            &error,
            format!("source {name}: not a regular file (a FIFO)"),
        );
        assert!(!error.is_network());
    }

    #[test]
    fn a_device_is_refused() {
        let error = finishes_within(Duration::from_secs(20), || {
            read_file(Path::new("/dev/zero"), &FetchSettings::default())
        })
        .unwrap_err();
        assert_eq!(
            chain(&error),
            ["source /dev/zero: not a regular file (a character device)"]
        );
        assert!(matches!(
            error,
            SourceError::NotARegularFile {
                what: "a character device",
                ..
            }
        ));
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let error = read_file(dir.path(), &quick()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "source {}: not a regular file (a directory)",
                dir.path().display()
            )
        );
    }

    #[test]
    fn a_file_over_the_size_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list");
        std::fs::write(&path, [b'#'; 65]).unwrap();
        let error = read_file(&path, &quick()).unwrap_err();
        assert_chain(
            &error,
            format!(
                "source {}: the file is larger than 64 bytes",
                path.display()
            ),
        );
        std::fs::write(&path, [b'#'; 64]).unwrap();
        assert_eq!(read_file(&path, &quick()).unwrap().len(), 64);
    }

    #[test]
    fn a_missing_file_shows_the_os_error_as_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing");
        let error = read_file(&path, &quick()).unwrap_err();
        let lines = chain(&error);
        assert_eq!(
            lines[0],
            format!("source {}: cannot read the file", path.display())
        );
        assert!(lines[1].contains("No such file or directory"), "{lines:?}");
        assert!(!error.is_network());
    }

    #[test]
    fn work_past_its_deadline_is_abandoned() {
        let started = Instant::now();
        let outcome = within(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_secs(5));
        })
        .unwrap();
        assert_eq!(outcome, None);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            within(Duration::from_secs(5), || 7).unwrap(),
            Some(7),
            "quick work is waited for"
        );
    }
}
