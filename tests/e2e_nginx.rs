//! nginx real-IP end to end: a real nginx from Debian's packages, on its own configuration (its
//! own prefix, pid file, logs and `conf.d/`, never `/etc/nginx`), listening inside a network
//! namespace the test makes, where the clients bind documentation addresses on the loopback.
//! The CLI is run as cron would (inside the namespace: `nginx -t` binds the listen addresses
//! it checks), with a config file naming the include file and the commands
//! that test and reload this nginx; what nginx then believes is read from its access log.
//!
//! A reload is awaited by watching the master's worker processes be replaced (the master is
//! this test's child, so its PID is known); how many reloads were sent is counted from the
//! "signal process started" lines that each `nginx -s reload` writes before it exits.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cf_allowlist_nginx::harness::Sandbox;

use crate::support::cmd::{Outcome, cf};
use crate::support::netns::{Netns, http_exchange};
use crate::support::{require_root, snapshot_files};

const SERVER_V4: &str = "192.0.2.1";
const SERVER_V6: &str = "2001:db8:1::1";
const PORT: u16 = 8080;
/// Inside the first list.
const LISTED_V4: &str = "198.51.100.10";
const LISTED_V6: &str = "2001:db8:cf::10";
/// Outside the first list; inside the second.
const UNLISTED_V4: &str = "203.0.113.10";
/// Never listed.
const UNLISTED_V6: &str = "2001:db8:bad::10";

const FIRST_LIST: &str = "198.51.100.0/24\n2001:db8:cf::/48\n";
const SECOND_LIST: &str = "198.51.100.0/24\n203.0.113.0/24\n2001:db8:cf::/48\n";

/// A real nginx on a [`Sandbox`], inside its own namespace; stopped by its PID on drop.
struct Nginx {
    master: Child,
    sandbox: Sandbox,
    netns: Netns,
    work: tempfile::TempDir,
}

impl Nginx {
    fn start() -> Nginx {
        require_root();
        let netns = Netns::new("nginx");
        netns.add_addresses(
            "lo",
            &[
                "192.0.2.1/32",
                "198.51.100.10/32",
                "203.0.113.10/32",
                "2001:db8:1::1/128",
                "2001:db8:cf::10/128",
                "2001:db8:bad::10/128",
            ],
        );
        let work = tempfile::tempdir().expect("temp dir");
        let access_log = work.path().join("access.log");
        let sandbox = Sandbox::new(&format!(
            "  log_format realip '$remote_addr $realip_remote_addr';\n\
             \x20 server {{\n\
             \x20   listen {SERVER_V4}:{PORT};\n\
             \x20   listen [{SERVER_V6}]:{PORT};\n\
             \x20   access_log {} realip;\n\
             \x20   location / {{ return 200 \"$remote_addr\\n\"; }}\n\
             \x20 }}\n",
            access_log.display()
        ));
        let master = Command::new("ip")
            .args(["netns", "exec", &netns.name])
            .args(sandbox.nginx_command(&["-g", "daemon off;"]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx {
            master,
            sandbox,
            netns,
            work,
        };
        nginx.wait_until(
            || !nginx.workers().is_empty() && nginx.answers(),
            "nginx to start",
        );
        nginx
    }

    /// Waits for `condition`, failing after 10 s (a guard against hanging, not a measurement).
    fn wait_until(&self, condition: impl Fn() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(
                Instant::now() < deadline,
                "gave up waiting for {what}; error log:\n{}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The PIDs of the master's worker processes.
    fn workers(&self) -> BTreeSet<u32> {
        let master = self.master.id();
        std::fs::read_dir("/proc")
            .expect("read /proc")
            .flatten()
            .filter_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                // `pid (comm) state ppid …`: comm may hold spaces, so read after the last ')'.
                let ppid: u32 = stat[stat.rfind(')')? + 1..]
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                (ppid == master).then_some(pid)
            })
            .collect()
    }

    /// Waits until every worker in `before` is gone and new ones serve.
    fn wait_for_reload(&self, before: &BTreeSet<u32>) {
        self.wait_until(
            || {
                let now = self.workers();
                !now.is_empty() && now.is_disjoint(before)
            },
            "nginx to replace its workers after a reload",
        );
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.sandbox.run_dir().join("error.log")).unwrap_or_default()
    }

    /// How many `nginx -s reload` ran against this nginx.
    fn reloads_sent(&self) -> usize {
        self.error_log().matches("signal process started").count()
    }

    fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.work.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn answers(&self) -> bool {
        self.try_request(LISTED_V4, None).is_ok()
    }

    fn try_request(&self, source: &str, header: Option<&str>) -> std::io::Result<String> {
        let source: IpAddr = source.parse().unwrap();
        let server: IpAddr = if source.is_ipv4() {
            SERVER_V4.parse().unwrap()
        } else {
            SERVER_V6.parse().unwrap()
        };
        let mut request = "GET / HTTP/1.0\r\nHost: origin.example\r\n".to_owned();
        if let Some(value) = header {
            request.push_str(&format!("CF-Connecting-IP: {value}\r\n"));
        }
        request.push_str("\r\n");
        // HTTP/1.0: nginx closes after the answer, and it writes the access log line before
        // closing, so the line is there once the answer is read to its end.
        http_exchange(&self.netns, source, server, PORT, request)
    }

    /// Sends a request from `source` claiming `CF-Connecting-IP: claimed`; returns the address
    /// nginx answered with and the access log line (`$remote_addr $realip_remote_addr`).
    fn client_address(&self, source: &str, claimed: &str) -> (String, String) {
        let lines_before = self.access_log().len();
        let answer = self
            .try_request(source, Some(claimed))
            .unwrap_or_else(|error| panic!("request from {source}: {error}"));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let body = answer
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_owned();
        let log = self.access_log();
        assert_eq!(
            log.len(),
            lines_before + 1,
            "one access log line per request"
        );
        (body, log.last().cloned().unwrap())
    }

    /// Asserts which sources nginx believes: a trusted source is logged as the address it
    /// claims, any other as itself.
    #[track_caller]
    fn assert_trusts(&self, trusted: &[&str]) {
        for source in [LISTED_V4, UNLISTED_V4, LISTED_V6, UNLISTED_V6] {
            let claimed = "203.0.113.77";
            let (answered, logged) = self.client_address(source, claimed);
            let expected = if trusted.contains(&source) {
                claimed
            } else {
                source
            };
            assert_eq!(answered, expected, "answer to {source}");
            assert_eq!(
                logged,
                format!("{expected} {source}"),
                "access log line for a request from {source}"
            );
        }
    }

    /// A config file `name` for the CLI: this nginx's include file and the given commands.
    fn config(&self, name: &str, test_command: &[String], reload_command: &[String]) -> PathBuf {
        let path = self.work.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[[backend]]\nkind = \"nginx-realip\"\npath = {:?}\ntest_command = {}\nreload_command = {}\n",
                self.sandbox.include_path().display().to_string(),
                toml_array(test_command),
                toml_array(reload_command),
            ),
        )
        .expect("write config");
        path
    }

    fn good_config(&self) -> PathBuf {
        self.config(
            "config.toml",
            &self.sandbox.test_command(),
            &self.sandbox.reload_command(),
        )
    }

    fn sync(&self, config: &Path, list: &str) -> Outcome {
        let source = self.work.path().join("list");
        std::fs::write(&source, list).expect("write the list");
        cf(&[
            "sync",
            "--config",
            config.to_str().unwrap(),
            "--source",
            source.to_str().unwrap(),
        ])
        .state(&self.work.path().join("state"))
        .in_netns(&self.netns.name)
        .run()
    }

    fn include(&self) -> Option<String> {
        std::fs::read_to_string(self.sandbox.include_path()).ok()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill takes a PID and a signal number; the PID is our own child's.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.master.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.master.wait();
    }
}

fn toml_array(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| format!("{item:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

fn shell(script: &str) -> Vec<String> {
    vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()]
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs root and nginx: cargo test --features e2e"
)]
fn nginx_trusts_cf_connecting_ip_only_from_the_listed_ranges_and_a_refused_file_is_put_back() {
    let system_nginx_before = snapshot_files(Path::new("/etc/nginx"));
    let nginx = Nginx::start();

    // Before any sync nobody is trusted: every request is logged with its connecting address.
    nginx.assert_trusts(&[]);

    // The first sync writes the file, validates it, reloads nginx once: listed sources are now
    // logged with the address they pass in CF-Connecting-IP, the others with their own.
    let config = nginx.good_config();
    let workers = nginx.workers();
    nginx
        .sync(&config, FIRST_LIST)
        .code(0)
        .stdout_has("nginx-realip (")
        .stdout_has("+ 198.51.100.0/24")
        .stdout_has("+ 2001:db8:cf::/48")
        .stdout_has("applied generation 1");
    assert_eq!(nginx.reloads_sent(), 1);
    nginx.wait_for_reload(&workers);
    nginx.assert_trusts(&[LISTED_V4, LISTED_V6]);
    let first_file = nginx.include().expect("the include file exists");
    assert!(
        first_file.starts_with("# cf-allowlist: generated file, do not edit.\n"),
        "{first_file}"
    );
    assert!(first_file.ends_with(
        "set_real_ip_from 198.51.100.0/24;\nset_real_ip_from 2001:db8:cf::/48;\nreal_ip_header CF-Connecting-IP;\n"
    ));

    // Nothing changed upstream: silent, no write, no reload.
    nginx.sync(&config, FIRST_LIST).code(0).silent();
    assert_eq!(nginx.reloads_sent(), 1, "a no-op sync reloaded nginx");
    assert_eq!(nginx.include().as_deref(), Some(first_file.as_str()));

    // A broken include (simulated by a test command that fails): the sync fails, says why, and
    // leaves the old file in place, nginx not reloaded and still serving the old list.
    let failing_test = nginx.config(
        "failing-test.toml",
        &shell("echo 'nginx: [emerg] simulated broken include' >&2; exit 1"),
        &nginx.sandbox.reload_command(),
    );
    nginx
        .sync(&failing_test, SECOND_LIST)
        .code(1)
        .stderr_has("nginx-realip backend could not validate the new include file")
        .stderr_has("the test command refused the configuration with the new file")
        .stderr_has("the previous file was put back and nginx was not reloaded")
        .stderr_has("simulated broken include");
    assert_eq!(nginx.include().as_deref(), Some(first_file.as_str()));
    assert_eq!(nginx.reloads_sent(), 1, "a refused file was reloaded");
    nginx.assert_trusts(&[LISTED_V4, LISTED_V6]);

    // The reload fails: the valid file stays in place and the error says nginx did not reload;
    // the next sync (file already right) owes and makes the reload.
    let failing_reload = nginx.config(
        "failing-reload.toml",
        &nginx.sandbox.test_command(),
        &shell("echo 'reload refused' >&2; exit 1"),
    );
    nginx
        .sync(&failing_reload, SECOND_LIST)
        .code(1)
        .stderr_has("is valid and in place, but nginx did not reload")
        .stderr_has("reload refused");
    let second_file = nginx.include().expect("the include file exists");
    assert!(second_file.contains("set_real_ip_from 203.0.113.0/24;\n"));
    nginx.assert_trusts(&[LISTED_V4, LISTED_V6]);
    let workers = nginx.workers();
    nginx
        .sync(&config, SECOND_LIST)
        .code(0)
        .stdout_has("~ reload nginx (the last reload did not complete)");
    assert_eq!(nginx.reloads_sent(), 2);
    nginx.wait_for_reload(&workers);
    assert_eq!(nginx.include().as_deref(), Some(second_file.as_str()));
    nginx.assert_trusts(&[LISTED_V4, UNLISTED_V4, LISTED_V6]);
    nginx.sync(&config, SECOND_LIST).code(0).silent();

    // A hand edit is drift: seen and repaired.
    std::fs::write(
        nginx.sandbox.include_path(),
        second_file.replace(
            "real_ip_header",
            "set_real_ip_from 2001:db8:bad::/48;\nreal_ip_header",
        ),
    )
    .unwrap();
    let workers = nginx.workers();
    nginx
        .sync(&config, SECOND_LIST)
        .code(0)
        .stdout_has("- 2001:db8:bad::/48");
    nginx.wait_for_reload(&workers);
    assert_eq!(nginx.include().as_deref(), Some(second_file.as_str()));

    // Purge deletes our file and reloads: nobody is trusted any more.
    let workers = nginx.workers();
    let reloads = nginx.reloads_sent();
    cf(&["purge", "--config", config.to_str().unwrap()])
        .state(&nginx.work.path().join("state"))
        .in_netns(&nginx.netns.name)
        .run()
        .code(0)
        .stdout_has("nginx-realip");
    assert_eq!(nginx.reloads_sent(), reloads + 1);
    nginx.wait_for_reload(&workers);
    assert_eq!(nginx.include(), None, "purge left the include file");
    nginx.assert_trusts(&[]);

    // Nothing of the system's nginx configuration was touched.
    drop(nginx);
    assert_eq!(
        snapshot_files(Path::new("/etc/nginx")),
        system_nginx_before,
        "/etc/nginx changed"
    );
}

#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs root and nginx: cargo test --features e2e"
)]
fn a_file_that_is_not_ours_is_never_overwritten_or_deleted() {
    let nginx = Nginx::start();
    let path = nginx.sandbox.include_path();
    let admins = "# the admin's own real-IP settings\nset_real_ip_from 192.0.2.0/24;\n";
    std::fs::write(&path, admins).unwrap();
    let config = nginx.good_config();
    nginx
        .sync(&config, FIRST_LIST)
        .code(1)
        .stderr_has("exists and is not cf-allowlist's")
        .stderr_has("move it away or set `path` to another file");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), admins);
    assert_eq!(nginx.reloads_sent(), 0);
}

#[test]
fn restrict_and_a_relative_path_are_refused_at_config_load() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config.toml");
    for (table, expected) in [
        (
            "restrict = true\n",
            "`restrict` does not apply to a real-IP list",
        ),
        ("path = \"conf.d/realip.conf\"\n", "`path` must be absolute"),
        (
            "test_command = []\n",
            "`test_command` must be a non-empty argument vector",
        ),
    ] {
        std::fs::write(
            &config,
            format!("[[backend]]\nkind = \"nginx-realip\"\n{table}"),
        )
        .unwrap();
        cf(&[
            "sync",
            "--dry-run",
            "--config",
            config.to_str().unwrap(),
            "--source",
            "builtin",
        ])
        .state(&work.path().join("state"))
        .run()
        .code(1)
        .stderr_has(expected);
    }
}

/// The real `nginx -t` (not a simulated failure) refusing the configuration: somebody else's
/// file is broken when our change comes; the previous include file is put back byte for byte,
/// no reload is made and no marker or temporary file is left behind.
#[test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs root and nginx: cargo test --features e2e"
)]
fn a_configuration_the_real_nginx_test_refuses_gets_the_previous_file_back() {
    use cf_allowlist_backend::conformance::{Harness, default_policy, sync, target_a, target_b};
    use cf_allowlist_backend::{Change, ErrorKind};
    use cf_allowlist_nginx::harness::NginxHarness;

    require_root();
    let harness = NginxHarness::new();
    let backend = harness.backend(&default_policy());
    sync(backend.as_ref(), &target_a());
    assert_eq!(harness.reloads(), 1);
    let applied = harness.dump();
    let broken = harness.sandbox().conf_dir().join("conf.d/broken.conf");
    std::fs::write(&broken, "server_tokens perhaps;\n").unwrap();
    let with_broken_file = harness.dump();
    let change = Change::between(&backend.observe().unwrap(), &target_b());
    let error = backend
        .apply(&change)
        .expect_err("nginx -t passed a broken config");
    assert_eq!(error.kind, ErrorKind::Rejected);
    let chain = format!("{error}: {}", std::error::Error::source(&error).unwrap());
    assert!(
        chain.contains("the previous file was put back and nginx was not reloaded"),
        "{chain}"
    );
    assert_eq!(
        harness.dump(),
        with_broken_file,
        "the refused apply left a trace"
    );
    assert_eq!(harness.reloads(), 1, "a refused file was reloaded");
    std::fs::remove_file(&broken).unwrap();
    assert_eq!(harness.dump(), applied);
    // With the admin's file fixed, the same target applies.
    sync(backend.as_ref(), &target_b());
    assert_eq!(harness.reloads(), 2);
}
