//! `doctor` end to end: each broken situation is built for real in namespaces the test makes
//! (a drop in a second nftables table, a REJECT before our iptables jump, a ufw deny inserted
//! before our allows, no listener, certificates the test generates and serves with
//! `openssl s_server`, a stale state), and doctor must report exactly the right finding and
//! exit code for each, and nothing for a healthy origin. The metrics file is parsed with
//! `prometheus_client`'s own parser from the test venv.
//!
//! Not built: a full conntrack table. `nf_conntrack_max` is read-only outside the initial
//! network namespace (kernel 6.x), and filling the default 262,144 entries is not a test;
//! the thresholds are unit-tested in `src/commands/doctor.rs`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::support::cmd::{Outcome, cf};
use crate::support::lab::{Lab, ORIGIN_V4, with_ufw_lab};
use crate::support::netns::{Netns, connects, must};
use crate::support::{require_root, snapshot_files};

/// A finding reduced to what the tests compare: level, check, subject.
type Found = (String, String, String);

/// Every finding that is not ok, as (level, check, subject), with the evidence alongside.
fn not_ok(json: &Value) -> Vec<(Found, String)> {
    json["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks: {json:#}"))
        .iter()
        .filter(|finding| finding["level"] != "ok")
        .map(|finding| {
            let text = |key: &str| finding[key].as_str().unwrap_or("").to_owned();
            (
                (text("level"), text("check"), text("subject")),
                text("evidence"),
            )
        })
        .collect()
}

/// Asserts the exit code and exactly these non-ok findings, each with evidence containing
/// its text; returns the JSON.
#[track_caller]
fn expect(outcome: &Outcome, code: i32, findings: &[(&str, &str, &str, &str)]) -> Value {
    let json = outcome.json();
    outcome.code(code);
    let found = not_ok(&json);
    let wanted: Vec<Found> = findings
        .iter()
        .map(|(level, check, subject, _)| {
            (
                (*level).to_owned(),
                (*check).to_owned(),
                (*subject).to_owned(),
            )
        })
        .collect();
    assert_eq!(
        found.iter().map(|(key, _)| key.clone()).collect::<Vec<_>>(),
        wanted,
        "findings differ\n{json:#}"
    );
    for ((_, evidence), (_, _, _, needle)) in found.iter().zip(findings) {
        assert!(evidence.contains(needle), "{evidence:?} lacks {needle:?}");
    }
    json
}

/// The nft ruleset (with handles) and the legacy table lists: what reading must not change.
fn firewall_view(netns: &Netns) -> (String, String) {
    let names = netns.run_inside(|| {
        ["ip_tables_names", "ip6_tables_names"]
            .iter()
            .map(|file| {
                std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap_or_default()
            })
            .collect::<String>()
    });
    (netns.exec("nft", &["-s", "-a", "list", "ruleset"]), names)
}

/// Rewrites `last_sync.time` in the state to `age` ago, as if the timer had stopped then.
fn age_last_sync(state_dir: &Path, age: Duration) {
    let path = state_dir.join("state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    state["last_sync"]["time"] = humantime::format_rfc3339_seconds(SystemTime::now() - age)
        .to_string()
        .into();
    std::fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
}

const NFT_SUBJECT: &str = "nftables (inet filter input, tcp 80,443)";

#[test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs root: cargo test --features e2e")]
fn doctor_finds_a_healthy_origin_ok_then_a_stale_sync() {
    let lab = Lab::synced_with_nftables();

    let before = (firewall_view(&lab.origin), snapshot_files(&lab.state_dir()));
    let text = lab.cf(&["doctor"]);
    text.code(0);
    let first = text.stdout.lines().next().unwrap_or("");
    assert!(first.starts_with("CF-ALLOWLIST OK - "), "{text}");
    let json = expect(&lab.cf(&["--output", "json", "doctor"]), 0, &[]);
    assert_eq!(json["status"], "ok");
    let checks: BTreeSet<&str> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|finding| finding["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        checks,
        BTreeSet::from([
            "state",
            "coverage",
            "shadowing",
            "listener",
            "tls",
            "headroom"
        ])
    );
    // Read-only: no rule, no legacy table, no state file changed.
    assert_eq!(
        (firewall_view(&lab.origin), snapshot_files(&lab.state_dir())),
        before,
        "doctor changed something"
    );

    age_last_sync(&lab.state_dir(), Duration::from_secs(3 * 3600));
    expect(
        &lab.cf(&["--output", "json", "doctor"]),
        1,
        &[("warning", "state", "last sync", "older than 2h")],
    );
    // A longer --max-age accepts it; past a day it is a problem whatever the setting.
    expect(
        &lab.cf(&["--output", "json", "doctor", "--max-age", "4h"]),
        0,
        &[],
    );
    age_last_sync(&lab.state_dir(), Duration::from_secs(25 * 3600));
    expect(
        &lab.cf(&["--output", "json", "doctor", "--max-age", "48h"]),
        2,
        &[("problem", "state", "last sync", "1day 1h")],
    );
}

#[test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs root: cargo test --features e2e")]
fn doctor_names_a_drop_in_a_second_table() {
    let lab = Lab::synced_with_nftables();
    lab.origin.nft_batch(
        "table inet second {
  chain input {
    type filter hook input priority 10; policy accept;
    tcp dport 443 drop comment \"second table\"
  }
}
",
    );
    // The packets agree: a listed source reaches 80 but no longer 443.
    let source: IpAddr = "198.51.100.10".parse().unwrap();
    let origin: IpAddr = ORIGIN_V4.parse().unwrap();
    assert!(connects(&lab.edge, source, origin, 80));
    assert!(!connects(&lab.edge, source, origin, 443));
    let json = expect(
        &lab.cf(&["--output", "json", "doctor"]),
        2,
        &[("problem", "shadowing", NFT_SUBJECT, "inet second input")],
    );
    assert_eq!(json["status"], "critical");
    let text = lab.cf(&["doctor"]);
    text.code(2)
        .stdout_has("CF-ALLOWLIST CRITICAL - 1 problem: shadowing ")
        .stdout_has("second table");
}

#[test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs root: cargo test --features e2e")]
fn doctor_names_a_reject_before_our_iptables_jump() {
    let lab = Lab::new();
    lab.load_iptables_rules("nft");
    lab.sync("iptables", &[]).code(0);
    expect(&lab.cf(&["--output", "json", "doctor"]), 0, &[]);
    lab.origin.exec(
        "iptables-nft",
        &[
            "-I", "INPUT", "1", "-p", "tcp", "--dport", "80", "-j", "REJECT",
        ],
    );
    let source: IpAddr = "198.51.100.10".parse().unwrap();
    assert!(!connects(&lab.edge, source, ORIGIN_V4.parse().unwrap(), 80));
    let json = lab.cf(&["--output", "json", "doctor"]).json();
    let subject = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|finding| finding["check"] == "coverage")
        .map(|finding| finding["subject"].as_str().unwrap().to_owned())
        .unwrap();
    assert!(subject.starts_with("iptables ("), "{subject}");
    expect(
        &lab.cf(&["--output", "json", "doctor"]),
        2,
        &[("problem", "shadowing", subject.as_str(), "-j REJECT")],
    );
}

#[test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs root: cargo test --features e2e")]
fn doctor_names_a_ufw_deny_inserted_before_our_allows_and_ufw_switched_off() {
    with_ufw_lab(|lab| {
        let ufw = |args: &[&str]| lab.origin.exec("ufw", args);
        crate::support::admin_ssh_ufw_rules(ufw);
        ufw(&["--force", "enable"]);
        let config = lab.write_config("[[backend]]\nkind = \"ufw\"\n");
        lab.sync_config(&config, &[]).code(0);
        let doctor = ["--config", config.as_str(), "--output", "json", "doctor"];
        expect(&lab.cf(&doctor), 0, &[]);

        ufw(&["insert", "1", "deny", "443/tcp"]);
        let json = lab.cf(&doctor).json();
        let found = not_ok(&json);
        assert_eq!(found.len(), 1, "{json:#}");
        let ((level, check, subject), evidence) = &found[0];
        assert_eq!((level.as_str(), check.as_str()), ("problem", "shadowing"));
        assert!(subject.starts_with("ufw ("), "{subject}");
        assert!(evidence.contains("blocked by ufw ("), "{evidence}");
        // The deny ufw inserted into its own chain, ahead of our allows.
        assert!(evidence.contains("ufw-user-input"), "{evidence}");
        assert!(evidence.contains("443"), "{evidence}");
        assert_eq!(json["exit_code"], 2);

        // ufw switched off: none of its rules, ours included, are in force.
        ufw(&["disable"]);
        let json = lab.cf(&doctor).json();
        let found = not_ok(&json);
        let keys: Vec<(&str, &str)> = found
            .iter()
            .map(|((level, check, _), _)| (level.as_str(), check.as_str()))
            .collect();
        // With `enable = false` no sync can enable ufw: one warning that says what the admin
        // must do, and no "damaged, the next sync repairs them" (issue 17, item 7).
        assert_eq!(keys, [("warning", "coverage")], "{json:#}");
        assert!(found[0].1.contains("run `ufw enable`"), "{}", found[0].1);
        assert_eq!(json["exit_code"], 1);
    });
}

/// One namespace with the nftables backend synced for port 443 only, from a list file.
struct Origin {
    netns: Netns,
    dir: tempfile::TempDir,
}

impl Origin {
    fn new() -> Origin {
        require_root();
        let origin = Origin {
            netns: Netns::new("doctor"),
            dir: tempfile::tempdir().unwrap(),
        };
        origin.serve_list("198.51.100.0/24\n2001:db8:cf::/48\n");
        origin
            .cf(&["sync", "--backend", "nftables", "--ports", "443"])
            .code(0);
        origin
    }

    fn serve_list(&self, list: &str) {
        std::fs::write(self.dir.path().join("list"), list).unwrap();
    }

    fn cf(&self, args: &[&str]) -> Outcome {
        let list = self.dir.path().join("list").display().to_string();
        let mut full = args.to_vec();
        if args.contains(&"sync") {
            full.extend(["--source", list.as_str()]);
        }
        cf(&full)
            .state(&self.dir.path().join("state"))
            .in_netns(&self.netns.name)
            .run()
    }

    fn doctor(&self, extra: &[&str]) -> Outcome {
        let mut args = vec!["--output", "json", "doctor"];
        args.extend_from_slice(extra);
        self.cf(&args)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A certificate and key made with openssl: self-signed for `name`, valid from `start` to
/// `end` (`YYYYMMDDHHMMSSZ`).
fn certificate(dir: &Path, label: &str, name: &str, start: &str, end: &str) -> (PathBuf, PathBuf) {
    let path = |suffix: &str| dir.join(format!("{label}.{suffix}"));
    let ca = dir.join(format!("{label}-ca"));
    std::fs::create_dir_all(&ca).unwrap();
    std::fs::write(ca.join("index.txt"), "").unwrap();
    std::fs::write(ca.join("serial"), "01\n").unwrap();
    std::fs::write(
        path("cnf"),
        format!(
            "[ca]\ndefault_ca = own\n[own]\ndatabase = {0}/index.txt\nnew_certs_dir = {0}\n\
             serial = {0}/serial\ndefault_md = sha256\npolicy = any\ncopy_extensions = copy\n\
             [any]\ncommonName = supplied\n",
            ca.display()
        ),
    )
    .unwrap();
    let text = |suffix: &str| path(suffix).display().to_string();
    let (cnf, key, csr, crt) = (text("cnf"), text("key"), text("csr"), text("crt"));
    // Split at spaces: the paths are in a temporary directory whose name has none.
    assert!(!cnf.contains(' '), "{cnf}");
    let openssl = |command: String| must("openssl", &command.split(' ').collect::<Vec<_>>());
    openssl(format!(
        "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {key} -out {csr} \
         -subj /CN={name} -addext subjectAltName=DNS:{name}"
    ));
    openssl(format!(
        "ca -batch -notext -selfsign -config {cnf} -keyfile {key} -in {csr} -out {crt} \
         -startdate {start} -enddate {end}"
    ));
    (path("crt"), path("key"))
}

/// `openssl s_server` on port 443 inside a namespace; killed by its PID on drop.
struct TlsServer(Child);

impl TlsServer {
    fn start(netns: &Netns, (cert, key): &(PathBuf, PathBuf)) -> TlsServer {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns.name,
                "openssl",
                "s_server",
                "-quiet",
                "-4",
            ])
            .args(["-accept", "443", "-www", "-cert"])
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        let server = TlsServer(child);
        // Wait (boundedly) until the kernel lists the listener.
        let listening = netns.run_inside(|| {
            (0..400).any(|_| {
                let table = std::fs::read_to_string("/proc/thread-self/net/tcp").unwrap();
                if table
                    .lines()
                    .any(|line| line.contains(":01BB 00000000:0000 0A"))
                {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(25));
                false
            })
        });
        assert!(listening, "openssl s_server did not start listening");
        server
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `YYYYMMDDHHMMSSZ`, `days` from now.
fn asn1_time(days: i64) -> String {
    let now = SystemTime::now();
    let then = if days >= 0 {
        now + Duration::from_secs(days as u64 * 86_400)
    } else {
        now - Duration::from_secs(days.unsigned_abs() * 86_400)
    };
    let text = humantime::format_rfc3339_seconds(then).to_string();
    text.chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        + "Z"
}

const FULL: &str = "self-signed: fine for Cloudflare's Full mode, fatal for Full (strict)";

#[test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs root: cargo test --features e2e")]
fn doctor_reports_no_listener_and_each_certificate_fault() {
    let origin = Origin::new();
    expect(
        &origin.doctor(&["--server-name", "origin.example"]),
        2,
        &[(
            "problem",
            "listener",
            "tcp 443",
            "nothing listens on port 443",
        )],
    );

    let dir = origin.dir.path();
    let valid = certificate(
        dir,
        "valid",
        "origin.example",
        &asn1_time(-1),
        &asn1_time(60),
    );
    let server = TlsServer::start(&origin.netns, &valid);
    let subject = "tcp 443 (origin.example)";
    expect(
        &origin.doctor(&["--server-name", "origin.example"]),
        1,
        &[("warning", "tls", subject, FULL)],
    );
    expect(
        &origin.doctor(&["--server-name", "origin.example", "--strict"]),
        2,
        &[("problem", "tls", subject, FULL)],
    );
    expect(
        &origin.doctor(&["--server-name", "www.example"]),
        2,
        &[
            (
                "problem",
                "tls",
                "tcp 443 (www.example)",
                "not valid for www.example (it names origin.example)",
            ),
            ("warning", "tls", "tcp 443 (www.example)", FULL),
        ],
    );
    // Without a name the certificate is not judged.
    expect(&origin.doctor(&[]), 0, &[]);
    drop(server);

    let expired = certificate(
        dir,
        "expired",
        "origin.example",
        &asn1_time(-90),
        &asn1_time(-30),
    );
    let server = TlsServer::start(&origin.netns, &expired);
    expect(
        &origin.doctor(&["--server-name", "origin.example"]),
        2,
        &[
            ("problem", "tls", subject, "the certificate expired on"),
            ("warning", "tls", subject, FULL),
        ],
    );
    drop(server);

    let soon = certificate(
        dir,
        "soon",
        "origin.example",
        &asn1_time(-80),
        &asn1_time(5),
    );
    let _server = TlsServer::start(&origin.netns, &soon);
    let soon_found = &[
        ("warning", "tls", subject, "the certificate expires in "),
        ("warning", "tls", subject, FULL),
    ];
    expect(
        &origin.doctor(&["--server-name", "origin.example"]),
        1,
        soon_found,
    );
    expect(
        &origin.doctor(&["--server-name", "origin.example", "--cert-warn-days", "3"]),
        1,
        &[("warning", "tls", subject, FULL)],
    );
}

/// The samples of a metrics file as `prometheus_client`'s parser reads them: `name{labels}`
/// (labels sorted, JSON) → value. The parser raises on anything the text format forbids.
fn parse_metrics(path: &Path) -> std::collections::BTreeMap<String, f64> {
    let venv = std::env::var_os("CF_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv"));
    let python = venv.join("bin/python3");
    assert!(
        python.exists(),
        "{} is missing: tests/run creates the test venv (python3 -m venv target/test-venv; pip install -r tests/requirements.txt)",
        python.display()
    );
    let script = "import json, sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    assert family.documentation, family.name
    for sample in family.samples:
        print(sample.name + json.dumps(sample.labels, sort_keys=True), repr(sample.value))
";
    let output = must(
        python.to_str().unwrap(),
        &["-c", script, path.to_str().unwrap()],
    );
    output
        .lines()
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

#[test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs root: cargo test --features e2e")]
fn metrics_parse_with_prometheus_client_and_keep_the_last_success_after_a_failure() {
    let origin = Origin::new();
    let metrics = origin.path("cf-allowlist.prom");
    let flag = metrics.display().to_string();
    let sync = || {
        origin.cf(&[
            "sync",
            "--backend",
            "nftables",
            "--ports",
            "443",
            "--metrics-file",
            &flag,
        ])
    };
    origin.serve_list("198.51.100.0/24\n203.0.113.0/24\n2001:db8:cf::/48\n");
    sync().code(0);
    let first = parse_metrics(&metrics);
    let get = |samples: &std::collections::BTreeMap<String, f64>, key: &str| {
        *samples
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {samples:#?}"))
    };
    let backend = "{\"backend\": \"nftables (inet filter input, tcp 443)\"}";
    let in_sync = format!("cf_allowlist_backend_in_sync{backend}");
    let effective = format!("cf_allowlist_backend_effective{backend}");
    for (series, expected) in [
        ("cf_allowlist_ranges{\"family\": \"ipv4\"}", 2.0),
        ("cf_allowlist_ranges{\"family\": \"ipv6\"}", 1.0),
        ("cf_allowlist_generation{}", 2.0),
        ("cf_allowlist_pinned{}", 0.0),
        (
            "cf_allowlist_last_change_ranges{\"direction\": \"added\"}",
            1.0,
        ),
        (
            "cf_allowlist_last_change_ranges{\"direction\": \"removed\"}",
            0.0,
        ),
        (in_sync.as_str(), 1.0),
        (effective.as_str(), 1.0),
        ("cf_allowlist_refusals_total{}", 0.0),
    ] {
        assert_eq!(get(&first, series), expected, "{series}");
    }
    assert!(get(&first, "cf_allowlist_run_duration_seconds{}") > 0.0);
    let success = get(&first, "cf_allowlist_last_success_timestamp_seconds{}");
    assert_eq!(
        success,
        get(&first, "cf_allowlist_last_run_timestamp_seconds{}")
    );

    // A list the validation refuses: the run fails, the file is rewritten, the success stays.
    origin.serve_list("10.0.0.0/8\n");
    sync().code(1);
    let failed = parse_metrics(&metrics);
    for (series, expected) in [
        ("cf_allowlist_last_success_timestamp_seconds{}", success),
        ("cf_allowlist_last_run_success{}", 0.0),
        ("cf_allowlist_last_run_exit_code{}", 1.0),
        ("cf_allowlist_generation{}", 2.0),
        (in_sync.as_str(), 1.0),
    ] {
        assert_eq!(get(&failed, series), expected, "{series}");
    }
    assert!(get(&failed, "cf_allowlist_last_run_timestamp_seconds{}") >= success);
    // Nothing but the file itself in its directory: the temporary file was renamed.
    let strays: Vec<_> = std::fs::read_dir(origin.dir.path())
        .unwrap()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with(".cf-allowlist-metrics")
        })
        .collect();
    assert!(strays.is_empty(), "{strays:?}");
}

#[test]
fn a_doctor_command_line_it_cannot_read_is_unknown() {
    cf(&["--output", "json", "doctor", "--no-such-flag"])
        .run()
        .json_error(3, "--no-such-flag");
}
