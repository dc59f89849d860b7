//! One judgement (issue 17): the dry run returns what the run returns, no sync makes
//! Cloudflare's reach worse, a block is reported on every run, hints are simulated, and each
//! guard is overridden by name. Every case runs the CLI in the lab's origin and checks the
//! outcome with real TCP connects from the edge.

use std::path::PathBuf;

use crate::support::cmd::Outcome;
use crate::support::lab::{IN_FIRST_LIST, Lab, ORIGIN_NFT_RULESET, expect_open, with_ufw_lab};

/// Writes `text` as the lab's config file and returns its path.
fn config(lab: &Lab, name: &str, text: &str) -> String {
    let path: PathBuf = lab.state.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `cf-allowlist --config CONFIG sync --source … EXTRA…`.
fn sync(lab: &Lab, config: &str, extra: &[&str]) -> Outcome {
    lab.sync_config(config, extra)
}

/// A dry run and then a run of `config` both exit 0 without `text` on stderr.
#[track_caller]
fn dry_run_and_run_lack(lab: &Lab, config: &str, text: &str) {
    sync(lab, config, &["--dry-run"]).code(0).stderr_lacks(text);
    sync(lab, config, &[]).code(0).stderr_lacks(text);
}

/// A lab whose origin holds its own ruleset plus `batch` (an nft batch, or nothing), and the
/// path of a config with the nftables backend alone.
fn nftables_lab(batch: &str) -> (Lab, String) {
    let lab = Lab::new();
    lab.load_nft_ruleset();
    if !batch.is_empty() {
        lab.origin.nft_batch(batch);
    }
    let nft = config(&lab, "nft.toml", NFTABLES_ONLY);
    (lab, nft)
}

const NFT_AND_IPTABLES: &str =
    "[[backend]]\nkind = \"nftables\"\n[[backend]]\nkind = \"iptables\"\nvariant = \"nft\"\n";
const IPTABLES_ONLY: &str = "[[backend]]\nkind = \"iptables\"\nvariant = \"nft\"\n";
const NFTABLES_ONLY: &str = "[[backend]]\nkind = \"nftables\"\n";
const NFTABLES_IN_SECOND: &str = "[[backend]]\nkind = \"nftables\"\ntable = \"second\"\n";
/// iptables-nft with restrict (more keys of the backend may follow).
const RESTRICT: &str = "[[backend]]\nkind = \"iptables\"\nvariant = \"nft\"\nrestrict = true\n";

/// Scenario 1: on a policy-drop host synced with nftables and iptables, removing the nftables
/// backend would remove the accepts that carry the traffic. The dry run and the run both
/// refuse it (guard `reach`), naming the backend, and nothing changes; so does the rerun.
#[test]
fn removing_the_backend_that_carries_the_traffic_is_refused_by_the_reach_guard() {
    let lab = Lab::new();
    lab.load_nft_ruleset();
    let both = config(&lab, "both.toml", NFT_AND_IPTABLES);
    sync(&lab, &both, &[]).code(0);
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));

    let iptables = config(&lab, "iptables.toml", IPTABLES_ONLY);
    for extra in [&["--dry-run"][..], &[], &[]] {
        sync(&lab, &iptables, extra)
            .code(3)
            .stderr_has("[reach]")
            .stderr_has("nftables (inet filter input")
            .stderr_has("--force=reach");
        assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST), "{extra:?}");
    }
    let json = sync(&lab, &iptables, &["--dry-run", "--output", "json"]).json();
    assert_eq!(json["exit_code"], 3, "{json:#}");
    assert_eq!(json["refused_by"], serde_json::json!(["reach"]), "{json:#}");
    // Named, the override lets it through, and the run then says what it broke: exit 5.
    sync(&lab, &iptables, &["--force=reach"]).code(5);
    assert_eq!(lab.open(), expect_open(&[]));
}

/// Scenario 3: the first dry run on a stock policy-drop host judges the firewall the run will
/// leave (our accepts in place): effective, no blocker, no hint to use the config being run.
#[test]
fn the_first_dry_run_on_a_policy_drop_host_is_not_a_false_alarm() {
    let (lab, nft) = nftables_lab("");
    let preview = sync(&lab, &nft, &["--dry-run", "--output", "json"]);
    let json = preview.json();
    assert_eq!(json["exit_code"], 0, "{json:#}");
    assert_eq!(json["backends"][0]["effective"], true, "{json:#}");
    assert_eq!(json["backends"][0]["blockers"], serde_json::json!([]));
    sync(&lab, &nft, &["--dry-run"])
        .code(0)
        .stdout_has("+ 198.51.100.0/25")
        .stderr_lacks("blocked by");
    sync(&lab, &nft, &[]).code(0);
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
}

/// Scenario 3 (jump chain): our chain is reached by a `jump` from the input hook; no sync or
/// status calls it unattached, and the accepts work.
#[test]
fn a_chain_reached_by_jump_from_the_input_hook_is_not_called_unattached() {
    let lab = Lab::new();
    // The origin's own ruleset with an extra chain `allow` that input jumps to before its drop.
    lab.origin.nft_batch(
        &ORIGIN_NFT_RULESET
            .replace("  chain input {", "  chain allow { }\n  chain input {")
            .replace(
                "    tcp dport { 80, 443 } drop",
                "    jump allow\n    tcp dport { 80, 443 } drop",
            ),
    );
    let nft = config(
        &lab,
        "nft.toml",
        "[[backend]]\nkind = \"nftables\"\nchain = \"allow\"\n",
    );
    dry_run_and_run_lack(&lab, &nft, "not attached");
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
    lab.cf(&["--config", &nft, "status"])
        .code(0)
        .stderr_lacks("not attached");
}

/// A second table that drops 443 on the input hook, at a priority after `inet filter`.
const SECOND_TABLE: &str = "table inet second {
  chain input {
    type filter hook input priority 10; policy accept;
    tcp dport 443 drop comment \"no https\"
  }
}
";

/// Scenario 4: while Cloudflare is blocked, every sync says so with exit 5, the no-op too.
#[test]
fn a_block_is_reported_by_every_sync_not_only_the_first() {
    let (lab, nft) = nftables_lab(SECOND_TABLE);
    for extra in [&["--dry-run"][..], &[], &[]] {
        sync(&lab, &nft, extra)
            .code(5)
            .stderr_has("inet second input");
    }
    sync(&lab, &nft, &["--dry-run"]).code(5);
}

/// Scenario 2: the hint for a drop in another table does not propose moving our rules there
/// (which the analysis finds worse: the policy drop of `inet filter` then drops 80 too); it
/// says what to change by hand, naming the rule.
#[test]
fn a_hint_proposes_only_a_config_the_analysis_finds_effective() {
    let (lab, nft) = nftables_lab(SECOND_TABLE);
    let run = sync(&lab, &nft, &[]);
    run.code(5)
        .stderr_lacks("table = \"second\"")
        .stderr_lacks("table=\"second\"")
        .stderr_has("no https");
    // Following the hint the old version gave is judged before anything is written: it would
    // cut 80 as well, so the reach guard refuses it.
    let second = config(&lab, "second.toml", NFTABLES_IN_SECOND);
    sync(&lab, &second, &["--dry-run"])
        .code(3)
        .stderr_has("[reach]");
    let open = lab.open();
    assert!(open.contains("198.51.100.10 80"), "{open:?}");
}

/// Scenario 6: one bare `--force` does not switch off the SSH guard; `--force=ssh` does, and
/// each refusal names its guard and the override.
#[test]
fn a_bare_force_does_not_override_the_ssh_guard() {
    let (lab, nft) = nftables_lab("");
    let restrict_ssh = ["--restrict", "--ports", "22,80,443"];
    let mut extra = restrict_ssh.to_vec();
    extra.push("--force");
    sync(&lab, &nft, &extra)
        .code(3)
        .stderr_has("[ssh]")
        .stderr_has("--force=ssh");
    assert!(lab.open().contains("192.0.2.2 22"));
    let mut extra = restrict_ssh.to_vec();
    extra.push("--force=shrink");
    sync(&lab, &nft, &extra).code(3).stderr_has("[ssh]");
    let mut extra = restrict_ssh.to_vec();
    extra.push("--force=ssh");
    sync(&lab, &nft, &extra).code(0);
    // Restricted by name; the admin's own explicit allow of SSH from 192.0.2.0/24 keeps
    // working (restrict keeps explicit allows), and the listed sources now reach 22 too.
    let open = lab.open();
    assert!(open.contains("192.0.2.2 22"), "{open:?}");
    assert!(open.contains("198.51.100.10 22"), "{open:?}");
    assert!(!open.contains("203.0.113.200 22"), "{open:?}");
}

/// Scenario 8: one rule for Docker's warning: a backend that also filters DOCKER-USER is exempt
/// in sync and doctor alike.
#[test]
fn docker_is_warned_about_once_and_not_for_a_backend_that_filters_docker_user() {
    let lab = Lab::new();
    lab.load_iptables_rules("nft");
    for tool in ["iptables-nft", "ip6tables-nft"] {
        lab.origin.exec(tool, &["-N", "DOCKER"]);
        lab.origin.exec(tool, &["-N", "DOCKER-USER"]);
    }
    let exempt = config(
        &lab,
        "docker.toml",
        &format!("{RESTRICT}docker_user = true\n"),
    );
    dry_run_and_run_lack(&lab, &exempt, "Docker");
    let doctor = lab.cf(&["--config", &exempt, "doctor"]);
    assert!(!doctor.stdout.contains("Docker"), "{doctor}");
    let plain = config(&lab, "plain.toml", RESTRICT);
    sync(&lab, &plain, &["--dry-run"])
        .code(0)
        .stderr_has("Docker");
}

const UFW4: &str = include_str!("../crates/netfilter/testdata/ufw4.rules");
const UFW6: &str = include_str!("../crates/netfilter/testdata/ufw6.rules");
const FIREWALLD: &str = include_str!("../crates/netfilter/testdata/firewalld.nft");

/// One host shape: how to build the firewall, the config to run, and (for a backend removal)
/// the config synced before.
struct Shape {
    name: &'static str,
    build: fn(&Lab),
    before: Option<&'static str>,
    config: &'static str,
}

fn ufw_like(lab: &Lab, variant: &str) {
    lab.origin
        .exec_with_input(&format!("iptables-{variant}-restore"), &[], UFW4);
    lab.origin
        .exec_with_input(&format!("ip6tables-{variant}-restore"), &[], UFW6);
}

fn shapes() -> Vec<Shape> {
    let nft_filter = "[[backend]]\nkind = \"nftables\"\n";
    vec![
        Shape {
            name: "policy drop",
            build: Lab::load_nft_ruleset,
            before: None,
            config: nft_filter,
        },
        Shape {
            name: "policy accept",
            build: |lab| {
                lab.origin.nft_batch(
                    "table inet filter {\n chain input {\n type filter hook input priority filter; policy accept;\n }\n}\n",
                )
            },
            before: None,
            config: nft_filter,
        },
        Shape {
            name: "ufw-like on iptables-nft",
            build: |lab| ufw_like(lab, "nft"),
            before: None,
            config: nft_filter,
        },
        Shape {
            name: "ufw-like on iptables-legacy",
            build: |lab| ufw_like(lab, "legacy"),
            before: None,
            config: nft_filter,
        },
        Shape {
            name: "firewalld-like reject",
            build: |lab| lab.origin.nft_batch(FIREWALLD),
            before: None,
            config: nft_filter,
        },
        Shape {
            name: "firewalld-like reject, written into its chain",
            build: |lab| lab.origin.nft_batch(FIREWALLD),
            before: None,
            config: "[[backend]]\nkind = \"nftables\"\ntable = \"firewalld\"\nchain = \"filter_INPUT\"\n",
        },
        Shape {
            name: "second table",
            build: |lab| {
                lab.load_nft_ruleset();
                lab.origin.nft_batch(SECOND_TABLE);
            },
            before: None,
            config: nft_filter,
        },
        Shape {
            name: "jump chain",
            build: |lab| {
                lab.origin.nft_batch(
                    "table inet filter {\n chain allow { }\n chain input {\n type filter hook input priority filter; policy drop;\n ct state established,related accept\n iif lo accept\n jump allow\n tcp dport { 80, 443 } drop\n }\n}\n",
                )
            },
            before: None,
            config: "[[backend]]\nkind = \"nftables\"\nchain = \"allow\"\n",
        },
        Shape {
            name: "docker-like",
            build: |lab| {
                lab.load_iptables_rules("nft");
                for tool in ["iptables-nft", "ip6tables-nft"] {
                    lab.origin.exec(tool, &["-N", "DOCKER"]);
                    lab.origin.exec(tool, &["-N", "DOCKER-USER"]);
                }
            },
            before: None,
            config: "[[backend]]\nkind = \"iptables\"\nvariant = \"nft\"\nrestrict = true\n",
        },
        Shape {
            name: "iptables policy drop, legacy",
            build: |lab| lab.load_iptables_rules("legacy"),
            before: None,
            config: "[[backend]]\nkind = \"iptables\"\nvariant = \"legacy\"\n",
        },
        Shape {
            name: "two backends",
            build: Lab::load_nft_ruleset,
            before: None,
            config: NFT_AND_IPTABLES,
        },
        Shape {
            name: "backend removal",
            build: Lab::load_nft_ruleset,
            before: Some(NFT_AND_IPTABLES),
            config: IPTABLES_ONLY,
        },
        Shape {
            name: "restrict with admin allows",
            build: |lab| {
                lab.load_nft_ruleset();
                lab.origin.nft_batch(
                    "insert rule inet filter input ip saddr 192.0.2.99 tcp dport 443 accept comment \"admin allow\"\n",
                );
            },
            before: None,
            config: "[[backend]]\nkind = \"nftables\"\nrestrict = true\n",
        },
        Shape {
            name: "table move into a dropping table",
            build: |lab| {
                lab.load_nft_ruleset();
                lab.origin.nft_batch(SECOND_TABLE);
            },
            before: Some(NFTABLES_ONLY),
            config: "[[backend]]\nkind = \"nftables\"\ntable = \"second\"\n",
        },
    ]
}

/// What must be equal between a dry run and the run: exit code, per-backend verdict and
/// blockers, and the guards that refused.
fn verdict(json: &serde_json::Value) -> serde_json::Value {
    let backends: Vec<serde_json::Value> = json["backends"]
        .as_array()
        .map(|backends| {
            backends
                .iter()
                .map(|backend| {
                    serde_json::json!({
                        "description": backend["description"],
                        "effective": backend["effective"],
                        "blockers": backend["blockers"],
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "exit_code": json["exit_code"],
        "backends": backends,
        "refused_by": json["refused_by"],
    })
}

/// The dry run returns what the run returns, on every host shape of the issue.
#[test]
fn the_dry_run_returns_what_the_run_returns_on_every_host_shape() {
    for shape in shapes() {
        let lab = Lab::new();
        (shape.build)(&lab);
        if let Some(before) = shape.before {
            let before = config(&lab, "before.toml", before);
            let code = sync(&lab, &before, &[]).code;
            assert!(
                code == 0 || code == 5,
                "{}: first sync exit {code}",
                shape.name
            );
        }
        let run = config(&lab, "run.toml", shape.config);
        let preview = sync(&lab, &run, &["--dry-run", "--output", "json"]);
        assert_ne!(preview.code, 1, "{}: {preview}", shape.name);
        let preview = verdict(&preview.json());
        let real = verdict(&sync(&lab, &run, &["--output", "json"]).json());
        assert_eq!(preview, real, "{}", shape.name);
        eprintln!("{}: {}", shape.name, real);
    }
}

/// Switches the lab's ufw on with a default deny for incoming; returns the path of a config
/// with the ufw backend.
fn ufw_denying_incoming(lab: &Lab) -> String {
    lab.origin.exec("ufw", &["default", "deny", "incoming"]);
    lab.origin.exec("ufw", &["--force", "enable"]);
    config(lab, "ufw.toml", "[[backend]]\nkind = \"ufw\"\n")
}

/// Scenario 7: ufw switched off, with the backend's `enable` off: status and doctor say that a
/// sync will not enable it (rather than promise the next sync repairs it), and doctor makes
/// one coverage statement for the backend, not an ok and a problem.
#[test]
fn ufw_switched_off_is_not_promised_to_be_repaired_by_a_sync() {
    with_ufw_lab(|lab| {
        let config = ufw_denying_incoming(lab);
        sync(lab, &config, &[]).code(0);
        lab.origin.exec("ufw", &["disable"]);

        let status = lab.cf(&["--config", &config, "status"]);
        assert!(
            !status.stdout.contains("the next sync repairs it"),
            "{status}"
        );
        assert!(
            format!("{}{}", status.stdout, status.stderr).contains("no sync enables it"),
            "{status}"
        );

        let json = lab
            .cf(&["--config", &config, "--output", "json", "doctor"])
            .json();
        let coverage: Vec<&serde_json::Value> = json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|finding| finding["check"] == "coverage")
            .collect();
        // One statement: ufw's rules are not in force (a warning: nothing blocks Cloudflare,
        // but nothing restricts anyone either), with what the admin must do.
        assert_eq!(coverage.len(), 1, "{json:#}");
        assert_eq!(coverage[0]["level"], "warning", "{json:#}");
        let said = coverage[0].to_string();
        assert!(!said.contains("next sync"), "{said}");
        assert!(said.contains("ufw enable"), "{said}");
    });
}

/// Scenario 3 (ufw): the first dry run of the ufw backend on a host whose ufw denies incoming
/// judges ufw with our allows in it: effective, and no hint to use the backend being run.
#[test]
fn a_ufw_dry_run_does_not_advise_the_ufw_backend() {
    with_ufw_lab(|lab| {
        let config = ufw_denying_incoming(lab);
        let preview = sync(lab, &config, &["--dry-run", "--output", "json"]);
        let json = preview.json();
        assert_eq!(json["exit_code"], 0, "{json:#}");
        assert_eq!(json["backends"][0]["effective"], true, "{json:#}");
        sync(lab, &config, &["--dry-run"])
            .code(0)
            .stderr_lacks("--backend ufw");
        sync(lab, &config, &[]).code(0);
        assert_eq!(
            lab.open(),
            expect_open(&IN_FIRST_LIST)
                .into_iter()
                .filter(|pair| !pair.ends_with(" 22"))
                .collect()
        );
    });
}
