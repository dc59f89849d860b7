//! The command-line contract that needs no firewall: sources, validation errors, exit codes,
//! output formats and the state directory. Sources are local files or a fixture server on the
//! host's loopback.

use std::path::Path;
use std::time::Duration;

use crate::support::cmd::{builtin_dry_run, cf};
use crate::support::fixture::{FixtureServer, Reply};

fn write(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

#[test]
fn dry_run_on_the_builtin_list_needs_no_network_and_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    builtin_dry_run(&[])
        .state(&state)
        .run()
        .code(0)
        .stdout_has("22 ranges (15 IPv4, 7 IPv6) from builtin")
        .stdout_has("104.16.0.0/13")
        .stderr_has("warning: using the builtin list of Cloudflare's ranges from 2026-10-01");
    assert!(!state.exists());
}

#[test]
fn dry_run_with_detailed_exitcode_reports_pending_news_without_a_backend() {
    let dir = tempfile::tempdir().unwrap();
    cf(&[
        "sync",
        "--dry-run",
        "--detailed-exitcode",
        "--source",
        "builtin",
        "-q",
    ])
    .state(&dir.path().join("state"))
    .run()
    .code(2)
    .silent();
}

#[test]
fn sync_without_a_backend_says_how_to_choose_one() {
    let dir = tempfile::tempdir().unwrap();
    cf(&["sync", "--source", "builtin"])
        .state(&dir.path().join("state"))
        .run()
        .code(1)
        .stderr_has("error: no backend is configured")
        .stderr_has("hint: choose one with `--backend nftables`");
}

#[test]
fn an_html_challenge_page_is_refused_naming_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let page = write(
        dir.path(),
        "page",
        "<!DOCTYPE html>\n<html><head><title>Just a moment...</title></head></html>\n",
    );
    cf(&["sync", "--dry-run", "--source", &page])
        .state(&dir.path().join("state"))
        .run()
        .code(1)
        .stderr_has(&format!("error: source {page}: line 1 is not a CIDR range"))
        .stderr_has("nothing was changed");
}

#[test]
fn a_private_range_in_a_list_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let list = write(dir.path(), "list", "198.51.100.0/24\n10.0.0.0/8\n");
    cf(&["sync", "--dry-run", "--source", &list])
        .state(&dir.path().join("state"))
        .run()
        .code(1)
        .stderr_has("10.0.0.0/8 is refused: it overlaps private (RFC 1918) space");
}

#[test]
fn the_json_api_and_text_lists_combine_and_dedupe() {
    let server = FixtureServer::start(None);
    server.set(
        "/client/v4/ips",
        Reply::ok(
            r#"{"result":{"ipv4_cidrs":["198.51.100.0/24"],"ipv6_cidrs":["2001:db8::/32"],"etag":"e"},"success":true,"errors":[],"messages":[]}"#,
        ),
    );
    server.set("/ips-v4", Reply::ok("198.51.100.0/24\r\n203.0.113.0/24"));
    server.set(
        "/moved",
        Reply::status(301, "").header("Location", "/ips-v4"),
    );
    let dir = tempfile::tempdir().unwrap();
    let json = cf(&[
        "sync",
        "--dry-run",
        "--output",
        "json",
        "--source",
        &server.url("/client/v4/ips"),
        "--source",
        &server.url("/moved"),
    ])
    .state(&dir.path().join("state"))
    .run()
    .code(0)
    .stderr_has("is plain http")
    .json();
    assert_eq!(
        json["ranges"]["list"],
        serde_json::json!(["198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"])
    );
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["changed"], false);
}

#[test]
fn an_http_error_and_a_redirect_to_another_host_are_refused() {
    let server = FixtureServer::start(None);
    server.set("/gone", Reply::status(403, "<html>Access denied</html>"));
    server.set(
        "/elsewhere",
        Reply::status(302, "").header("Location", "http://203.0.113.9/ips-v4"),
    );
    let dir = tempfile::tempdir().unwrap();
    cf(&["sync", "--dry-run", "--source", &server.url("/gone")])
        .state(&dir.path().join("state"))
        .run()
        .code(1)
        .stderr_has("HTTP 403");
    cf(&["sync", "--dry-run", "--source", &server.url("/elsewhere")])
        .state(&dir.path().join("state"))
        .run()
        .code(1)
        .stderr_has("redirected to another host");
}

#[test]
fn a_config_file_with_a_typo_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "source = [\"builtin\"]\n");
    cf(&["--config", &config, "sync", "--dry-run"])
        .run()
        .code(1)
        .stderr_has("is invalid")
        .stderr_has("unknown field `source`");
}

#[test]
fn the_config_file_sets_sources() {
    let dir = tempfile::tempdir().unwrap();
    let list = write(dir.path(), "list", "203.0.113.0/24\n");
    let config = write(
        dir.path(),
        "config.toml",
        &format!("sources = [\"file://{list}\"]\nports = [8443]\n"),
    );
    cf(&["--config", &config, "sync", "--dry-run"])
        .state(&dir.path().join("state"))
        .run()
        .code(0)
        .stdout_has("1 ranges (1 IPv4, 0 IPv6)");
}

#[test]
fn detailed_exitcode_requires_dry_run() {
    cf(&["sync", "--detailed-exitcode", "--source", "builtin"])
        .run()
        .code(1)
        .stderr_has("the following required arguments were not provided")
        .stderr_has("--dry-run");
}

#[test]
fn every_exit_path_prints_one_json_object() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // A usage error.
    cf(&["sync", "--detailed-exitcode", "--output", "json"])
        .run()
        .json_error(1, "required arguments");
    // A config error.
    let missing = dir.path().join("missing.toml").display().to_string();
    let json = cf(&["--config", &missing, "--output", "json", "status"])
        .run()
        .json_error(1, "could not read config file");
    assert_eq!(json["command"], "status");
    assert!(!json["error"]["causes"].as_array().unwrap().is_empty());
    // A source error.
    let list = write(dir.path(), "list", "10.0.0.0/8\n");
    let json = cf(&["sync", "--dry-run", "--output", "json", "--source", &list])
        .state(&state)
        .run()
        .code(1)
        .json();
    assert_eq!(json["changed"], false);
    // No backend.
    let json = cf(&["sync", "--output", "json", "--source", "builtin"])
        .state(&state)
        .run()
        .code(1)
        .json();
    assert!(
        json["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("--backend nftables")
    );
    // Every read-only command on a fresh state.
    for command in ["status", "history"] {
        let json = cf(&["--output", "json", command])
            .state(&state)
            .run()
            .code(0)
            .json();
        assert_eq!(json["command"], command);
    }
    // A dry run, with the builtin list's warning in the array.
    let json = builtin_dry_run(&["--output", "json"])
        .state(&state)
        .run()
        .code(0)
        .json();
    let warning = json["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("builtin list"), "{json:#}");
    // The lock held by another run.
    let held = cf_allowlist::state::StateDir::new(&state);
    let _lock = held.lock(Duration::from_secs(1)).unwrap();
    let config = write(dir.path(), "config.toml", "lock_timeout_secs = 1\n");
    cf(&["--config", &config, "--output", "json", "unpin"])
        .state(&state)
        .run()
        .json_error(4, "held the lock");
}

#[test]
fn status_and_history_on_a_fresh_state_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let run = |command: &str| cf(&[command]).state(&state).run();
    run("status").code(0).stdout_has("no sync yet");
    run("history").code(0).stdout_has("no generations yet");
    run("rollback")
        .code(1)
        .stderr_has("cannot roll back: no backend to roll back: no sync has been recorded");
}

#[test]
fn a_corrupt_state_file_is_reported_and_rebuilt_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.json"), "{\"version\": 1, \"curr").unwrap();
    cf(&["status"])
        .state(dir.path())
        .run()
        .code(0)
        .stderr_has("state.json is corrupt")
        .stderr_has("rebuilt it from nothing");
}

#[test]
fn a_run_that_cannot_get_the_lock_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let state = cf_allowlist::state::StateDir::new(dir.path());
    let _held = state.lock(Duration::from_secs(1)).unwrap();
    let config = write(dir.path(), "config.toml", "lock_timeout_secs = 1\n");
    cf(&["--config", &config, "unpin"])
        .state(dir.path())
        .run()
        .code(4)
        .stderr_has("another cf-allowlist run has held the lock");
}

/// A python https server on the host's loopback with a self-signed certificate; killed (by the
/// PID we started) on drop.
struct HttpsServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl HttpsServer {
    fn start() -> HttpsServer {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .args([
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
            ])
            .current_dir(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl is installed");
        assert!(status.success());
        std::fs::write(dir.path().join("ips-v4"), "198.51.100.0/24\n").unwrap();
        let script = "import http.server, ssl, sys\n\
            server = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)\n\
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
            context.load_cert_chain('cert.pem', 'key.pem')\n\
            server.socket = context.wrap_socket(server.socket, server_side=True)\n\
            print(server.server_address[1], flush=True)\n\
            server.serve_forever()\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 is installed");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server's port");
        HttpsServer {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_https_source_with_an_untrusted_certificate_is_refused() {
    let server = HttpsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("https://127.0.0.1:{}/ips-v4", server.port);
    let outcome = cf(&["sync", "--dry-run", "--source", &url])
        .state(&dir.path().join("state"))
        .run();
    outcome
        .code(1)
        .stderr_has(&format!("error: source {url}: request failed"))
        .stderr_has("invalid peer certificate");
    assert!(
        !outcome.stderr.contains("attempts"),
        "a refused certificate was retried\n{outcome}"
    );
}

#[test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs root: cargo test --features e2e")]
fn restricting_the_port_of_this_ssh_session_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    builtin_dry_run(&["--backend", "nftables", "--restrict", "--ports", "2222"])
        .state(&dir.path().join("state"))
        .env("SSH_CONNECTION", "192.0.2.9 50000 192.0.2.1 2222")
        .run()
        .code(3)
        .stderr_has("drop SSH on port 2222 (the port of this SSH session ($SSH_CONNECTION))")
        .stderr_has("[ssh]")
        .stderr_has("hint: ssh: leave the SSH port out of `ports`")
        .stderr_has("--force=ssh (a bare --force does not override this guard)");
}

#[test]
fn config_mistakes_fail_at_load_before_any_fetch() {
    let dir = tempfile::tempdir().unwrap();
    for (config, message) in [
        (
            "connect_timeout_secs = 0\n",
            "`connect_timeout_secs` must be greater than 0",
        ),
        (
            "[[backend]]\nkind = \"nftables\"\nchain = \"in put\"\n",
            "chain name \"in put\" must be",
        ),
        (
            "[[backend]]\nkind = \"nftables\"\n[[backend]]\nkind = \"nftables\"\ntable = \"other\"\n",
            "only one nftables backend can be configured",
        ),
        (
            "[[backend]]\nkind = \"nftables\"\nvariant = \"legacy\"\n",
            "unknown field `variant`",
        ),
    ] {
        let path = write(dir.path(), "config.toml", config);
        // Fetching this would fail differently: a config error must come first.
        cf(&[
            "--config",
            &path,
            "sync",
            "--dry-run",
            "--source",
            "http://127.0.0.1:9/never",
        ])
        .run()
        .code(1)
        .stderr_has(message);
    }
}

#[test]
fn config_check_prints_the_resolved_settings_or_the_mistake() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/config.example.toml");
    cf(&["config", "check", example])
        .run()
        .code(0)
        .stdout_has("config.example.toml: valid")
        .stdout_has("backend nftables (inet filter input, tcp 80,443)");
    let json = cf(&["--output", "json", "config", "check", example])
        .run()
        .code(0)
        .json();
    assert_eq!(json["settings"]["backends"][1]["kind"], "iptables");
    assert_eq!(json["settings"]["connect_timeout_secs"], 10);
    let dir = tempfile::tempdir().unwrap();
    let broken = write(
        dir.path(),
        "config.toml",
        "[[backend]]\nkind = \"nftables\"\nmode = \"ipset\"\n",
    );
    let json = cf(&["--output", "json", "config", "check", &broken])
        .run()
        .code(1)
        .json();
    assert!(
        json["error"]["causes"][0]
            .as_str()
            .unwrap()
            .contains("unknown field `mode`"),
        "{json:#}"
    );
}

#[test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs root: cargo test --features e2e")]
fn without_root_or_without_nft_the_error_says_what_to_do() {
    crate::support::require_root();
    let bin = env!("CARGO_BIN_EXE_cf-allowlist");
    // As an unprivileged user, in a namespace of our own: nft is refused by the kernel.
    let output = std::process::Command::new("unshare")
        .args([
            "-n",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin,
        ])
        .args([
            "sync",
            "--dry-run",
            "--backend",
            "nftables",
            "--source",
            "builtin",
        ])
        .args(["--state-dir", "/nonexistent/state", "--output", "json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(1), "{json:#}");
    let hint = json["error"]["hint"].as_str().unwrap();
    assert!(hint.starts_with("run as root"), "{json:#}");
    assert!(
        !hint.contains("status"),
        "the hint suggests a command that fails the same way: {hint}"
    );
    // With nft missing (hidden by a mount namespace of our own), the hint names the package.
    let output = std::process::Command::new("unshare")
        .args(["-m", "-n", "sh", "-c"])
        .arg(format!(
            "mount --bind /dev/null /usr/sbin/nft && exec {bin} sync --dry-run --backend nftables --source builtin --state-dir /nonexistent/state"
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("`nft` was not found"), "{stderr}");
    assert!(
        stderr.contains("hint: install it: `apt-get install nftables`"),
        "{stderr}"
    );
}

#[test]
fn the_top_level_help_lists_every_exit_code() {
    cf(&["--help"])
        .run()
        .code(0)
        .stdout_has("4 another run holds the lock")
        .stdout_has("5 applied but not effective");
}

#[test]
fn a_port_out_of_range_is_refused_as_outside_1_to_65535() {
    let dir = tempfile::tempdir().unwrap();
    for ports in ["70000", "0"] {
        let outcome = builtin_dry_run(&["--ports", ports])
            .state(&dir.path().join("state"))
            .run();
        assert_ne!(outcome.code, 0, "{outcome}");
        outcome.stderr_lacks("0..=65535");
        assert!(
            outcome.stderr.contains("1..=65535") || outcome.stderr.contains("1 to 65535"),
            "{outcome}"
        );
    }
}

#[test]
fn restore_with_nothing_saved_creates_no_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    cf(&["restore"])
        .state(&state)
        .run()
        .code(0)
        .stdout_has("no generation has been saved yet");
    assert!(!state.exists(), "restore created the state directory");
}
