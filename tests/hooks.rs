//! The `on_change` hook and JD Cloud's ranges, end to end with the real binary and no root:
//! the backend is nginx-realip writing an include file in a temporary folder (its test and
//! reload commands are `true`), sources are local files or a fixture server on loopback, and
//! the hooks are real scripts that record what they were given.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::cmd::cf;
use crate::support::fixture::{FixtureServer, Reply};

/// A temporary host: a list file, a config with an nginx-realip backend, a state directory,
/// and a hook script that appends its stdin, its arguments and its environment to `calls`.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(hook_body: &str, extra_config: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let site = Site { dir };
        site.serve(&["192.0.2.0/24", "2001:db8::/32"]);
        let hook = site.script("hook.sh", hook_body);
        let config = format!(
            "sources = [{list:?}]\non_change = [{hook:?}, \"first arg\"]\n{extra_config}\n\
             [[backend]]\nkind = \"nginx-realip\"\npath = {realip:?}\n\
             test_command = [\"true\"]\nreload_command = [\"true\"]\n",
            list = site.path("list"),
            realip = site.path("realip.conf"),
        );
        std::fs::write(site.dir.path().join("config.toml"), config).unwrap();
        site
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn serve(&self, ranges: &[&str]) {
        std::fs::write(self.dir.path().join("list"), ranges.join("\n")).unwrap();
    }

    fn script(&self, name: &str, body: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    fn sync(&self, extra: &[&str]) -> crate::support::cmd::Outcome {
        let config = self.path("config.toml");
        let mut args = vec!["--config", config.as_str(), "sync"];
        args.extend_from_slice(extra);
        cf(&args).state(&self.dir.path().join("state")).run()
    }

    /// Each call the recording hook saw: (its stdin as JSON, its arguments and environment).
    fn calls(&self) -> Vec<(serde_json::Value, String)> {
        let Ok(text) = std::fs::read_to_string(self.dir.path().join("calls")) else {
            return Vec::new();
        };
        text.split("\n--end--\n")
            .filter(|call| !call.trim().is_empty())
            .map(|call| {
                let (json, env) = call.rsplit_once("\n--env--\n").unwrap();
                (serde_json::from_str(json).unwrap(), env.to_owned())
            })
            .collect()
    }
}

/// A hook that records its stdin, arguments and environment in `calls` beside it.
const RECORDER: &str = r#"dir=$(dirname "$0")
{ cat; printf '\n--env--\n%s|%s|%s\n--end--\n' "$1" "$CF_ALLOWLIST_COMMAND" "$CF_ALLOWLIST_EXIT_CODE"; } >> "$dir/calls""#;

#[test]
fn the_hook_gets_the_report_of_a_run_that_changed_something_and_not_of_a_no_op() {
    let site = Site::new(RECORDER, "");
    site.sync(&[]).code(0);
    let calls = site.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (report, env) = &calls[0];
    assert_eq!(report["command"], "sync");
    assert_eq!(report["changed"], true);
    assert_eq!(report["generation"], 1);
    assert_eq!(
        report["ranges"]["list"],
        serde_json::json!(["192.0.2.0/24", "2001:db8::/32"])
    );
    assert_eq!(env, "first arg|sync|0");

    // Nothing changed: no call. A dry run of a change: no call either.
    site.sync(&[]).code(0).says_nothing();
    site.serve(&["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32"]);
    site.sync(&["--dry-run"]).code(0);
    assert_eq!(site.calls().len(), 1);

    // The list changed upstream: the next run calls it with the change.
    site.sync(&[]).code(0);
    let calls = site.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].0["upstream"]["added"],
        serde_json::json!(["198.51.100.0/24"])
    );

    // rollback changes the firewall: called, as rollback.
    let config = site.path("config.toml");
    cf(&["--config", &config, "rollback"])
        .state(&site.dir.path().join("state"))
        .run()
        .code(0);
    let calls = site.calls();
    assert_eq!(calls.len(), 3);
    assert!(calls[2].1.ends_with("|rollback|0"), "{}", calls[2].1);
}

#[test]
fn a_failing_hook_is_a_warning_and_the_exit_code_and_json_stay_the_runs() {
    let site = Site::new(
        "cat >/dev/null; echo 'webhook answered 502' >&2; exit 7",
        "",
    );
    let outcome = site.sync(&["--output", "json"]);
    outcome.code(0);
    let json = outcome.json();
    assert_eq!(json["exit_code"], 0);
    assert_eq!(json["changed"], true);
    let warnings = json["warnings"].to_string();
    assert!(
        warnings.contains("failed (exit status: 7): webhook answered 502"),
        "{warnings}"
    );
    // The firewall side is done and recorded: the next run is a no-op (and calls nothing).
    site.sync(&[]).code(0).says_nothing();
}

#[test]
fn a_hook_that_never_ends_is_stopped_at_its_time_limit() {
    let site = Site::new("exec sleep 60", "on_change_timeout_secs = 1");
    let started = Instant::now();
    site.sync(&[])
        .code(0)
        .stderr_has("ran longer than 1 s and was stopped");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_hook_is_checked_at_load() {
    let site = Site::new(RECORDER, "");
    let config = site.path("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("on_change = [", "on_change = [\"\"] #"),
    )
    .unwrap();
    cf(&["config", "check", &config])
        .run()
        .code(1)
        .stderr_has("on_change must name a program");
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/hooks")
        .join(name)
}

/// Puts `program` (a recording stub) first in PATH for the example hooks.
fn stub_bin(site: &Site, program: &str) -> String {
    let bin = site.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join(program);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" > \"{dir}/{program}.args\"\ncat > \"{dir}/{program}.stdin\"\n",
            dir = site.dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn the_mail_and_webhook_examples_send_the_report() {
    for (example_name, program, arg) in [
        ("mail-on-change", "sendmail", "ops@example.com"),
        (
            "webhook-on-change",
            "curl",
            "https://hooks.example.com/cf-allowlist",
        ),
    ] {
        let site = Site::new("", "");
        let config = site.path("config.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let hook = example(example_name).display().to_string();
        let text = text.replace(
            &format!("on_change = [{:?}, \"first arg\"]", site.path("hook.sh")),
            &format!("on_change = [{hook:?}, {arg:?}]"),
        );
        std::fs::write(&config, text).unwrap();
        let path = stub_bin(&site, program);
        cf(&["--config", &config, "sync"])
            .state(&site.dir.path().join("state"))
            .env("PATH", &path)
            .run()
            .code(0)
            .stderr_lacks("on_change");
        let stdin = std::fs::read_to_string(site.dir.path().join(format!("{program}.stdin")))
            .unwrap_or_else(|_| panic!("{example_name} did not run {program}"));
        let args =
            std::fs::read_to_string(site.dir.path().join(format!("{program}.args"))).unwrap();
        assert!(stdin.contains("\"command\": \"sync\""), "{stdin}");
        if program == "sendmail" {
            assert!(stdin.starts_with("To: ops@example.com\n"), "{stdin}");
            assert!(stdin.contains("Subject: cf-allowlist sync on "), "{stdin}");
            assert_eq!(args.trim(), "-t");
        } else {
            assert!(args.trim().ends_with(arg), "{args}");
            assert!(args.contains("--data-binary @-"), "{args}");
        }
    }
}

#[test]
fn jd_cloud_ranges_are_allowed_when_asked_for() {
    let server = FixtureServer::start(None);
    let answer = r#"{"result":{"ipv4_cidrs":["198.51.100.0/24"],"ipv6_cidrs":["2001:db8:a::/48"],"jdcloud_cidrs":["203.0.113.0/24","2001:db8:ff::/48"],"etag":"x"},"success":true,"errors":[],"messages":[]}"#;
    let plain = r#"{"result":{"ipv4_cidrs":["198.51.100.0/24"],"ipv6_cidrs":["2001:db8:a::/48"],"etag":"x"},"success":true,"errors":[],"messages":[]}"#;
    server.set("/client/v4/ips?networks=jdcloud", Reply::ok(answer));
    server.set("/client/v4/ips", Reply::ok(plain));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");

    let with = server.url("/client/v4/ips?networks=jdcloud");
    let outcome = cf(&[
        "sync",
        "--dry-run",
        "--jdcloud",
        "--source",
        &with,
        "--output",
        "json",
    ])
    .state(&state)
    .run();
    outcome.code(0);
    assert_eq!(
        outcome.json()["ranges"]["list"],
        serde_json::json!([
            "198.51.100.0/24",
            "203.0.113.0/24",
            "2001:db8:a::/48",
            "2001:db8:ff::/48"
        ])
    );
    // Without the flag, the same answer yields Cloudflare's ranges only.
    let outcome = cf(&["sync", "--dry-run", "--source", &with, "--output", "json"])
        .state(&state)
        .run();
    assert_eq!(outcome.json()["ranges"]["ipv4"], 1);
    // Asked for, but the URL does not ask the API for them: an error, not a silent omission.
    cf(&[
        "sync",
        "--dry-run",
        "--jdcloud",
        "--source",
        &server.url("/client/v4/ips"),
    ])
    .state(&state)
    .run()
    .code(1)
    .stderr_has("no `jdcloud_cidrs` array")
    .stderr_has("?networks=jdcloud");
    // The builtin list has none: refused before anything is fetched.
    cf(&["sync", "--dry-run", "--jdcloud", "--source", "builtin"])
        .state(&state)
        .run()
        .code(1)
        .stderr_has("the builtin list, which has no JD Cloud ranges");
    assert!(!state.exists());
}
