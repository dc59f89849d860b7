//! Safety end to end: hostile upstream answers, benign quirks, conditional requests, retries,
//! SIGKILL at every step of a sync, ten syncs at once, and restore without network. Every
//! case runs against the nftables backend in the two-namespace lab, and "changes nothing" is
//! checked byte for byte on the ruleset and on every file of the state directory.

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::cmd::Outcome;
use crate::support::fixture::{Behaviour, Reply};
use crate::support::lab::{
    IN_FIRST_LIST, IN_SECOND_LIST, LIST_V4, LIST_V6, Lab, ORIGIN_V4, ORIGIN_V6, SECOND_V4,
    expect_open,
};
use crate::support::netns::connects;
use crate::support::snapshot_files;

/// Sources listed in both lists: they must stay open through anything.
const IN_BOTH: [&str; 3] = ["198.51.100.10", "198.51.100.200", "2001:db8:cf::10"];

/// A lab whose origin runs the nftables ruleset and has been synced once to the first list,
/// with short fetch timeouts so that hanging servers cost seconds, not half a minute.
fn synced_lab() -> (Lab, String) {
    let lab = Lab::new();
    lab.load_nft_ruleset();
    let config = lab.write_config(
        "connect_timeout_secs = 2\nrequest_timeout_secs = 4\n[[backend]]\nkind = \"nftables\"\n",
    );
    sync(&lab, &config, &[])
        .code(0)
        .stdout_has("applied generation 1");
    (lab, config)
}

fn sync(lab: &Lab, config: &str, extra: &[&str]) -> Outcome {
    lab.sync_config(config, extra)
}

fn sync_from(lab: &Lab, config: &str, source: &str) -> Outcome {
    lab.cf(&["--config", config, "sync", "--source", source])
}

fn all_open(lab: &Lab, sources: &[&str]) -> bool {
    sources.iter().all(|source| {
        let source: IpAddr = source.parse().unwrap();
        let destination: IpAddr = if source.is_ipv4() {
            ORIGIN_V4
        } else {
            ORIGIN_V6
        }
        .parse()
        .unwrap();
        connects(&lab.edge, source, destination, 443)
    })
}

struct Case {
    name: &'static str,
    path: &'static str,
    behaviour: Behaviour,
    code: i32,
    reason: &'static str,
}

fn case(
    name: &'static str,
    path: &'static str,
    behaviour: impl Into<Behaviour>,
    code: i32,
    reason: &'static str,
) -> Case {
    Case {
        name,
        path,
        behaviour: behaviour.into(),
        code,
        reason,
    }
}

fn json(body: &str) -> Reply {
    Reply::ok(body).header("Content-Type", "application/json")
}

fn hostile_cases() -> Vec<Case> {
    const V4: &str = "/ips-v4";
    const V6: &str = "/ips-v6";
    const API: &str = "/client/v4/ips";
    let cloudflare_error_page = "<!DOCTYPE html>\n<html><head><title>Attention Required! | Cloudflare</title></head>\n<body>Error 1020: Access denied</body></html>\n";
    vec![
        case(
            "403 with a Cloudflare error page",
            V4,
            Reply::status(403, cloudflare_error_page),
            1,
            "HTTP 403",
        ),
        case("404", V4, Reply::status(404, "not found"), 1, "HTTP 404"),
        case("500", V4, Reply::status(500, "oops"), 1, "HTTP 500"),
        case("502", V4, Reply::status(502, "bad gateway"), 1, "HTTP 502"),
        case(
            "503",
            V4,
            Reply::status(503, "unavailable"),
            1,
            "HTTP 503 Service Unavailable (after 3 attempts)",
        ),
        case("429", V4, Reply::status(429, "slow down"), 1, "HTTP 429"),
        case(
            "a bot challenge page with 200",
            V4,
            Reply::ok("<!DOCTYPE html>\n<html><title>Just a moment...</title></html>"),
            1,
            "line 1 is not a CIDR range",
        ),
        case(
            "a plain word",
            V4,
            Reply::ok("OK\n"),
            1,
            "line 1 is not a CIDR range: \"OK\"",
        ),
        case(
            "an empty body",
            V4,
            Reply::ok(""),
            1,
            "the answer holds no ranges",
        ),
        case(
            "a blank body",
            V4,
            Reply::ok(" \r\n\n\t\n"),
            1,
            "the answer holds no ranges",
        ),
        case(
            "an invalid line",
            V6,
            Reply::ok("2001:db8:cf::/48\nnot-an-address\n"),
            1,
            "line 2 is not a CIDR range: \"not-an-address\"",
        ),
        case(
            "a truncated line",
            V4,
            Reply::ok("198.51.100.0/25\n198.51.100.128/25\n203.0.113."),
            1,
            "line 3 is not a CIDR range",
        ),
        case(
            "two lines glued together",
            V4,
            Reply::ok("198.51.100.0/25\n198.51.100.128/25\n203.0.113.0/252001:db8:cf::/48"),
            1,
            "\"203.0.113.0/252001:db8:cf::/48\"",
        ),
        case(
            "a NUL byte",
            V4,
            Reply::ok(&b"198.51.100.0/25\n198.51.100.128/25\0\n"[..]),
            1,
            "line 2 is not a CIDR range",
        ),
        case(
            "a prefix longer than the family",
            V4,
            Reply::ok("198.51.100.0/33\n"),
            1,
            "not a CIDR range",
        ),
        case(
            "host bits set",
            V4,
            Reply::ok("198.51.100.7/25\n"),
            1,
            "has host bits set",
        ),
        case(
            "an IPv4 default route",
            V4,
            Reply::ok("198.51.100.0/25\n0.0.0.0/0\n"),
            1,
            "0.0.0.0/0 is refused: it is a default route",
        ),
        case(
            "an IPv6 default route",
            V6,
            Reply::ok("::/0\n"),
            1,
            "::/0 is refused: it is a default route",
        ),
        case(
            "a private range",
            V4,
            Reply::ok("198.51.100.0/25\n10.0.0.0/8\n"),
            1,
            "10.0.0.0/8 is refused: it overlaps private",
        ),
        case(
            "loopback",
            V4,
            Reply::ok("127.0.0.0/8\n"),
            1,
            "overlaps loopback space",
        ),
        case(
            "link-local",
            V4,
            Reply::ok("169.254.0.0/16\n"),
            1,
            "overlaps link-local space",
        ),
        case(
            "multicast",
            V4,
            Reply::ok("224.0.0.0/4\n"),
            1,
            "overlaps multicast space",
        ),
        case(
            "IPv6 unique local",
            V6,
            Reply::ok("fd00::/8\n"),
            1,
            "unique local (ULA) space",
        ),
        case(
            "IPv6 link-local",
            V6,
            Reply::ok("fe80::/10\n"),
            1,
            "link-local space, outside global unicast",
        ),
        case(
            "an over-broad prefix",
            V4,
            Reply::ok("8.0.0.0/7\n"),
            1,
            "broader than /12",
        ),
        case(
            "bytes that are not UTF-8",
            V4,
            Reply::ok(&[0xff, 0xfe, 0x31, 0x0a][..]),
            1,
            "not UTF-8 text",
        ),
        case(
            "a body cut short",
            V4,
            Behaviour::ShortBody {
                declared: 100,
                body: b"198.51.100.0/25\n".to_vec(),
            },
            1,
            "reading the answer failed",
        ),
        case(
            "an endless body",
            V4,
            Behaviour::Endless,
            1,
            "the answer is larger than 1048576 bytes",
        ),
        case(
            "a server that never answers",
            V4,
            Behaviour::Hang,
            1,
            "timeout",
        ),
        case(
            "a server that trickles a byte a second",
            V4,
            Behaviour::Trickle(LIST_V4.as_bytes().to_vec()),
            1,
            "timeout",
        ),
        case(
            "a redirect to another host",
            V4,
            Reply::status(302, "").header("Location", "http://192.0.2.77/ips-v4"),
            1,
            "redirected to another host (192.0.2.77)",
        ),
        case(
            "a redirect loop",
            V4,
            Reply::status(301, "").header("Location", "/ips-v4"),
            1,
            "more than 5 redirects",
        ),
        case(
            "most of a family gone",
            V4,
            Reply::ok("203.0.113.0/25\n"),
            3,
            "would remove 2 of its 3 IPv4 ranges",
        ),
        case(
            "JSON success false",
            API,
            json(
                r#"{"result":null,"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"messages":[]}"#,
            ),
            1,
            "success is false",
        ),
        case(
            "JSON empty arrays",
            API,
            json(
                r#"{"result":{"ipv4_cidrs":[],"ipv6_cidrs":[]},"success":true,"errors":[],"messages":[]}"#,
            ),
            1,
            "the answer holds no ranges",
        ),
        case(
            "JSON mistyped array",
            API,
            json(r#"{"result":{"ipv4_cidrs":"198.51.100.0/25","ipv6_cidrs":[]},"success":true}"#),
            1,
            "`ipv4_cidrs` is not an array",
        ),
        case(
            "JSON cut off",
            API,
            json(r#"{"result":{"ipv4_cidrs":["198.51.100.0/25","198.51"#),
            1,
            "not valid JSON",
        ),
        case(
            "JSON with the wrong family",
            API,
            json(
                r#"{"result":{"ipv4_cidrs":["2001:db8:cf::/48"],"ipv6_cidrs":[]},"success":true}"#,
            ),
            1,
            "of the other address family",
        ),
        case(
            "JSON with success as a string",
            API,
            json(r#"{"result":{"ipv4_cidrs":["198.51.100.0/25"]},"success":"true"}"#),
            1,
            "no boolean `success`",
        ),
        case(
            "JSON where IPv6 vanished",
            API,
            json(
                r#"{"result":{"ipv4_cidrs":["198.51.100.0/25","198.51.100.128/25","203.0.113.0/25"],"ipv6_cidrs":[]},"success":true,"errors":[],"messages":[]}"#,
            ),
            3,
            "would leave no IPv6 ranges",
        ),
    ]
}

#[test]
fn hostile_upstream_answers_change_nothing_and_say_why() {
    let (lab, config) = synced_lab();
    let ruleset = lab.origin.ruleset();
    let state = snapshot_files(&lab.state_dir());
    let cases = hostile_cases();
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        lab.fixture.set("/ips-v4", Reply::ok(LIST_V4));
        lab.fixture.set("/ips-v6", Reply::ok(LIST_V6));
        lab.fixture.set(case.path, case.behaviour);
        let url = lab.fixture.url(case.path);
        let outcome = if case.path.starts_with("/client") {
            sync_from(&lab, &config, &url)
        } else {
            sync(&lab, &config, &[])
        };
        let error_lines: Vec<&str> = outcome
            .stderr
            .lines()
            .filter(|line| line.starts_with("error: "))
            .collect();
        let problems = [
            (
                outcome.code != case.code,
                format!("exit {} instead of {}", outcome.code, case.code),
            ),
            (
                error_lines.len() != 1,
                format!("{} error lines", error_lines.len()),
            ),
            (
                !error_lines
                    .first()
                    .is_some_and(|line| line.contains(case.reason)),
                format!("error lacks {:?}", case.reason),
            ),
            (
                case.code == 1 && !error_lines.first().is_some_and(|line| line.contains(&url)),
                "error does not name the source".to_owned(),
            ),
            (outcome.stderr.contains("panicked"), "panic".to_owned()),
            (
                lab.origin.ruleset() != ruleset,
                "the ruleset changed".to_owned(),
            ),
            (
                snapshot_files(&lab.state_dir()) != state,
                "the state directory changed".to_owned(),
            ),
        ];
        for (failed, problem) in problems {
            if failed {
                failures.push(format!("{}: {problem}\n{outcome}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
}

#[test]
fn benign_quirks_are_accepted_as_the_same_list() {
    let (lab, config) = synced_lab();
    let ruleset = lab.origin.ruleset();
    let mut gzipped = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzipped.write_all(LIST_V4.as_bytes()).unwrap();
    let gzipped = gzipped.finish().unwrap();
    let quirks: Vec<(&str, Reply)> = vec![
        ("a byte order mark", Reply::ok(format!("\u{feff}{LIST_V4}"))),
        ("CRLF line ends", Reply::ok(LIST_V4.replace('\n', "\r\n"))),
        (
            "padding and blank lines",
            Reply::ok(format!("\n  {}  \n\n", LIST_V4.replace('\n', "  \n\t"))),
        ),
        ("a final newline", Reply::ok(format!("{LIST_V4}\n"))),
        (
            "gzip",
            Reply::ok(gzipped).header("Content-Encoding", "gzip"),
        ),
        (
            "a same-host redirect",
            Reply::status(301, "").header("Location", "/ips-v4/"),
        ),
    ];
    lab.fixture.set("/ips-v4/", Reply::ok(LIST_V4));
    for (name, reply) in quirks {
        lab.fixture.set("/ips-v4", reply);
        let outcome = sync(&lab, &config, &[]);
        assert_eq!(outcome.code, 0, "{name}\n{outcome}");
        assert!(
            outcome.stdout.is_empty(),
            "{name} looked like a change\n{outcome}"
        );
    }
    lab.fixture.set(
        "/client/v4/ips",
        json(r#"{"result":{"ipv4_cidrs":["198.51.100.0/25","198.51.100.128/25","203.0.113.0/25"],"ipv6_cidrs":["2001:db8:cf::/48"],"etag":"x"},"success":true,"errors":[],"messages":[]}"#),
    );
    let url = lab.fixture.url("/client/v4/ips");
    sync_from(&lab, &config, &url).code(0).silent();
    assert_eq!(lab.origin.ruleset(), ruleset);
}

#[test]
fn conditional_requests_use_the_snapshot_and_still_repair_drift() {
    let (lab, config) = synced_lab();
    lab.fixture.set(
        "/ips-v4",
        Behaviour::Conditional {
            etag: "\"v1\"".into(),
            body: LIST_V4.into(),
        },
    );
    sync(&lab, &config, &[]).code(0).silent();
    let before = lab.fixture.requests().len();
    sync(&lab, &config, &["-v"])
        .code(0)
        .stderr_has("not modified since the last fetch");
    let requests = lab.fixture.requests();
    let conditional = requests[before..]
        .iter()
        .find(|request| request.path == "/ips-v4")
        .unwrap();
    assert_eq!(conditional.header("if-none-match"), Some("\"v1\""));

    // The firewall is reloaded; upstream still answers 304: the snapshot repairs it.
    lab.load_nft_ruleset();
    assert_eq!(lab.open(), expect_open(&[]));
    sync(&lab, &config, &[])
        .code(0)
        .stdout_has("~ create set cf_allowlist_v4");
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
}

#[test]
fn a_passing_server_error_is_retried() {
    let (lab, config) = synced_lab();
    lab.fixture.set_sequence(
        "/ips-v4",
        vec![
            Reply::status(503, "busy").into(),
            Reply::ok(SECOND_V4).into(),
        ],
    );
    sync(&lab, &config, &[])
        .code(0)
        .stdout_has("+ 203.0.113.128/25");
    let attempts = lab
        .fixture
        .requests()
        .iter()
        .filter(|r| r.path == "/ips-v4")
        .count();
    assert_eq!(
        attempts, 3,
        "one for the first sync, then a 503 and a retry"
    );
    assert_eq!(lab.open(), expect_open(&IN_SECOND_LIST));
}

/// `cf-allowlist sync` inside the origin, as a command to spawn (and kill) ourselves.
fn sync_command(lab: &Lab, config: &str) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &lab.origin.name])
        .arg(env!("CARGO_BIN_EXE_cf-allowlist"))
        .args(["--config", config, "--state-dir"])
        .arg(lab.state_dir())
        .arg("sync")
        .args(lab.source_args())
        .stdout(Stdio::null());
    command
}

/// Starts a sync that pauses at `point`, waits until it says so, and kills it with SIGKILL.
fn kill_at(lab: &Lab, config: &str, point: &str) {
    let mut child = sync_command(lab, config)
        .env(cf_allowlist::failpoint::PAUSE_VARIABLE, point)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "sync ended before pausing at {point}"
        );
        if line.contains(&format!("paused at {point}")) {
            break;
        }
    }
    // `ip netns exec` execs the program, so this PID is the sync itself, which we started.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.code().is_none(),
        "the sync was not killed at {point}"
    );
}

#[test]
fn sigkill_at_every_step_never_closes_a_listed_range_and_the_next_run_converges() {
    let (lab, config) = synced_lab();
    let lists = [LIST_V4, SECOND_V4];
    for (round, point) in ["before-apply", "after-apply", "after-generation-write"]
        .iter()
        .enumerate()
    {
        lab.fixture
            .set("/ips-v4", Reply::ok(lists[(round + 1) % 2]));
        kill_at(&lab, &config, point);
        assert!(
            all_open(&lab, &IN_BOTH),
            "a range in both lists closed after a kill at {point}"
        );
        lab.cf(&["status"]).code(0);
        sync(&lab, &config, &[]).code(0);
        let expected = if round % 2 == 0 {
            IN_SECOND_LIST
        } else {
            IN_FIRST_LIST
        };
        assert_eq!(
            lab.open(),
            expect_open(&expected),
            "no convergence after a kill at {point}"
        );
        sync(&lab, &config, &[]).code(0).silent();
    }

    // Kills at arbitrary moments: with a delay swept across a run's lifetime.
    for round in 0..16u64 {
        lab.fixture
            .set("/ips-v4", Reply::ok(lists[(round % 2) as usize]));
        let mut child = sync_command(&lab, &config)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(round * 3));
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            all_open(&lab, &IN_BOTH),
            "a range in both lists closed after a kill at {} ms",
            round * 3
        );
        lab.cf(&["status"]).code(0);
    }
    lab.fixture.set("/ips-v4", Reply::ok(LIST_V4));
    sync(&lab, &config, &[]).code(0);
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
    let ruleset = lab.origin.ruleset();
    assert_eq!(
        ruleset
            .matches("comment \"cf-allowlist ipv4 owner=")
            .count(),
        1,
        "{ruleset}"
    );
}

/// The temporary files in the state directory's generations folder.
fn temporary_generation_files(lab: &Lab) -> Vec<String> {
    std::fs::read_dir(lab.state_dir().join("generations"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with(".cf-allowlist."))
        .collect()
}

#[test]
fn a_generation_a_killed_run_was_staging_is_deleted_by_the_next_run_that_writes_one() {
    let (lab, config) = synced_lab();
    lab.fixture.set("/ips-v4", Reply::ok(SECOND_V4));
    // A new generation's file is written beside its place while the run reads and judges:
    // kill the run once it is there, before the firewall write.
    let mut child = sync_command(&lab, &config)
        .env(cf_allowlist::failpoint::PAUSE_VARIABLE, "before-apply")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("paused at before-apply") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the sync ended");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while temporary_generation_files(&lab).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no generation was being staged"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let left = temporary_generation_files(&lab);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));

    sync(&lab, &config, &[])
        .code(0)
        .stdout_has("applied generation 2");
    assert_eq!(lab.open(), expect_open(&IN_SECOND_LIST));
    assert_eq!(temporary_generation_files(&lab), Vec::<String>::new());
}

#[test]
fn ten_syncs_at_once_apply_once_and_the_others_say_they_waited() {
    let (lab, config) = synced_lab();
    lab.fixture.set("/ips-v4", Reply::ok(SECOND_V4));
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..10)
            .map(|_| scope.spawn(|| sync(&lab, &config, &[])))
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    let applied = outcomes
        .iter()
        .filter(|outcome| outcome.stdout.contains("applied generation 2"))
        .count();
    assert_eq!(
        applied,
        1,
        "{}",
        outcomes.iter().map(ToString::to_string).collect::<String>()
    );
    for outcome in &outcomes {
        assert_eq!(outcome.code, 0, "{outcome}");
        assert!(!outcome.stderr.contains("panicked"), "{outcome}");
        if !outcome.stdout.contains("applied") {
            let said: Vec<&str> = outcome
                .stderr
                .lines()
                .filter(|line| !line.contains("is plain http"))
                .collect();
            assert!(
                said.is_empty()
                    || said
                        .iter()
                        .all(|line| line.contains("nothing left to change")),
                "{outcome}"
            );
        }
    }
    assert!(
        outcomes
            .iter()
            .any(|outcome| outcome.stderr.contains("waited")),
        "nobody waited?"
    );
    let ruleset = lab.origin.ruleset();
    for part in [
        "comment \"cf-allowlist ipv4 owner=",
        "comment \"cf-allowlist ipv6 owner=",
        "set cf_allowlist_v4 ",
    ] {
        assert_eq!(ruleset.matches(part).count(), 1, "{part}:\n{ruleset}");
    }
    assert_eq!(lab.open(), expect_open(&IN_SECOND_LIST));
    lab.cf(&["history"]).code(0).stdout_has("   2  ");
}

#[test]
fn restore_reapplies_the_snapshot_without_the_network() {
    let (lab, config) = synced_lab();
    lab.load_nft_ruleset();
    assert_eq!(lab.open(), expect_open(&[]));
    lab.fixture.set("/ips-v4", Reply::status(500, "down"));
    let before = lab.fixture.requests().len();
    lab.cf(&["--config", &config, "restore"])
        .code(0)
        .stdout_has("restored generation 1");
    assert_eq!(
        lab.fixture.requests().len(),
        before,
        "restore fetched something"
    );
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
    lab.cf(&["--config", &config, "restore"]).code(0).silent();
}

#[test]
fn a_truncated_snapshot_is_reported_and_the_previous_generation_used() {
    let (lab, config) = synced_lab();
    lab.fixture.set("/ips-v4", Reply::ok(SECOND_V4));
    sync(&lab, &config, &[])
        .code(0)
        .stdout_has("applied generation 2");
    let path = lab.state_dir().join("generations/00000002.json");
    let text = std::fs::read(&path).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    // Against generation 1 the upstream list differs, but the firewall already holds it.
    sync(&lab, &config, &[])
        .code(0)
        .stderr_has("generation 2 is unreadable")
        .stderr_has("using generation 1 as the snapshot")
        .stdout_has("upstream changed since generation 1")
        .stdout_has("recorded generation 3");
    assert_eq!(lab.open(), expect_open(&IN_SECOND_LIST));
}
