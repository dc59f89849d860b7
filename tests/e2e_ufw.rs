//! ufw end to end, proven by TCP connects from the edge through the rules ufw loaded.
//!
//! The whole test runs on one thread inside a `cf_allowlist_ufw::harness::Sandbox` (a private
//! mount and network namespace holding copies of ufw's files), so ufw, `ip netns exec` and the
//! CLI started from it see only the copies; the lab's namespaces are made from that thread too.
//! The sandbox checks, when the test ends, that the host's ufw files are byte-identical.

use std::path::{Path, PathBuf};

use cf_allowlist_backend::{Backend, Change, Policy, Ranges};
use cf_allowlist_ufw::harness::{Sandbox, tcp_allow};
use cf_allowlist_ufw::{UfwBackend, UfwOptions, Write};

use crate::support::cmd::Outcome;
use crate::support::fixture::Reply;
use crate::support::lab::{
    IN_FIRST_LIST, IN_SECOND_LIST, Lab, SECOND_V4, expect_open, with_ufw_lab,
};
use crate::support::require_root;

/// Both rules files with their modification times: equal values mean ufw rewrote neither.
fn files_and_mtimes() -> Vec<(Vec<u8>, std::time::SystemTime)> {
    ["user.rules", "user6.rules"]
        .iter()
        .map(|name| {
            let path = Path::new("/etc/ufw").join(name);
            (
                std::fs::read(&path).unwrap(),
                std::fs::metadata(&path).unwrap().modified().unwrap(),
            )
        })
        .collect()
}

fn rules_text() -> String {
    files_and_mtimes()
        .into_iter()
        .map(|(bytes, _)| String::from_utf8(bytes).unwrap())
        .collect()
}

/// A ufw that records every call in `calls`, then runs the real one.
fn counting_ufw(dir: &Path) -> (PathBuf, PathBuf) {
    let calls = dir.join("ufw-calls");
    std::fs::write(&calls, "").unwrap();
    let wrapper = dir.join("ufw-counting");
    let ufw = cf_allowlist_backend::tool::locate("ufw").expect("ufw is installed");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec {} \"$@\"\n",
            calls.display(),
            ufw.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, calls)
}

fn call_count(calls: &Path) -> usize {
    std::fs::read_to_string(calls).unwrap().lines().count()
}

fn sync(lab: &Lab, config: &str, extra: &[&str]) -> Outcome {
    lab.sync_config(config, extra)
}

/// The whole story, writing in `write` mode. In calls mode the program is a wrapper that counts
/// ufw calls; in batch mode it is ufw itself (a shell wrapper would make the backend fall back to
/// calls), and runs that must not write are checked by the files' bytes and times alone.
fn scenario(sandbox: &Sandbox, write: Write) {
    let lab = Lab::new();
    let ufw = |args: &[&str]| lab.origin.exec("ufw", args);
    let (wrapper, calls) = counting_ufw(sandbox.path());
    let program = match write {
        Write::Calls => wrapper,
        Write::Batch => cf_allowlist_backend::tool::locate("ufw").unwrap(),
    };
    let config = lab.write_config(&format!(
        "[[backend]]\nkind = \"ufw\"\nprogram = \"{}\"\nwrite = \"{write}\"\n",
        program.display()
    ));

    // The admin's own rules: default deny, ssh from the admin range, and an explicit deny for
    // 443 that our allows must come before.
    crate::support::admin_ufw_rules(ufw);

    // Inactive: said, and nothing changes.
    let base = rules_text();
    sync(&lab, &config, &[])
        .code(1)
        .stderr_has("ufw is inactive");
    assert_eq!(rules_text(), base, "a refused sync changed ufw's rules");
    assert_eq!(call_count(&calls), 0, "a refused sync ran ufw");

    ufw(&["--force", "enable"]);
    let base = rules_text();
    lab.assert_only_admin_ssh_open();

    sync(&lab, &config, &["--dry-run"])
        .code(0)
        .stdout_has("+ 198.51.100.0/25")
        .stdout_has("+ 2001:db8:cf::/48");
    assert_eq!(rules_text(), base, "dry run changed the rules");
    assert_eq!(call_count(&calls), 0, "dry run ran ufw");

    sync(&lab, &config, &[])
        .code(0)
        .stdout_has("applied generation 1");
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
    let status = ufw(&["status"]);
    assert!(status.contains("# cf-allowlist"), "{status}");
    let applied = files_and_mtimes();

    // Nothing to change: ufw is not run and no file is rewritten.
    let before = call_count(&calls);
    assert_eq!(
        before > 0,
        write == Write::Calls,
        "the counting wrapper counts calls mode only"
    );
    sync(&lab, &config, &[]).code(0).silent();
    assert_eq!(call_count(&calls), before, "a no-op sync ran ufw");
    assert_eq!(files_and_mtimes(), applied, "a no-op sync rewrote a file");

    lab.fixture.set("/ips-v4", Reply::ok(SECOND_V4));
    lab.assert_moved_to_the_second_list(&sync(&lab, &config, &[]));

    // A rule deleted by hand is restored, once.
    ufw(&tcp_allow("delete", "198.51.100.0/25", "80,443"));
    assert!(!lab.open().contains("198.51.100.10 80"));
    sync(&lab, &config, &[])
        .code(0)
        .stdout_has("+ 198.51.100.0/25");
    assert_eq!(lab.open(), expect_open(&IN_SECOND_LIST));
    let before = call_count(&calls);
    sync(&lab, &config, &[]).code(0).silent();
    assert_eq!(call_count(&calls), before);

    // ufw keeps our rules across its own reload.
    ufw(&["reload"]);
    assert_eq!(lab.open(), expect_open(&IN_SECOND_LIST));

    lab.cf(&["purge"]).code(0).stdout_has("purged ufw");
    assert_eq!(
        rules_text(),
        base,
        "purge did not leave the foreign rules and the deny exactly as they were"
    );
    assert_eq!(lab.open(), expect_open(&[]));
}

fn in_sandbox<T: Send + 'static>(work: impl FnOnce(&Sandbox) -> T + Send + 'static) -> T {
    require_root();
    cf_allowlist_testkit::on_new_thread(move || {
        let sandbox = Sandbox::enter();
        let result = work(&sandbox);
        sandbox.assert_host_untouched();
        result
    })
}

#[test]
fn ufw_end_to_end_one_call_per_rule() {
    in_sandbox(|sandbox| scenario(sandbox, Write::Calls));
}

#[test]
fn ufw_end_to_end_in_batches() {
    in_sandbox(|sandbox| scenario(sandbox, Write::Batch));
}

fn documentation_ranges(v4_hosts: std::ops::Range<u32>, v6_nets: std::ops::Range<u32>) -> Ranges {
    v4_hosts
        .map(|host| format!("198.51.100.{host}/32"))
        .chain(v6_nets.map(|net| format!("2001:db8:{net:x}::/48")))
        .map(|text| text.parse().unwrap())
        .collect()
}

/// Both rules files and both families' live filter tables, without counters and comments.
fn ufw_state() -> String {
    let mut text = rules_text();
    for tool in ["iptables-save", "ip6tables-save"] {
        let output = std::process::Command::new(tool)
            .args(["-t", "filter"])
            .output()
            .unwrap();
        assert!(output.status.success());
        for line in String::from_utf8(output.stdout).unwrap().lines() {
            if line.starts_with('#') {
                continue;
            }
            let line = match line.find(" [") {
                Some(at) if line.starts_with(':') => &line[..at],
                _ => line,
            };
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// The same admin rules, then the same syncs (40 ranges with restrict, then a third of them
/// replaced), written one way in a fresh sandbox; returns the files and live rules after each.
fn write_story(write: Write) -> Vec<String> {
    in_sandbox(move |_| {
        let ufw = |args: &[&str]| crate::support::netns::must("ufw", args);
        crate::support::admin_ufw_rules(ufw);
        ufw(&["--force", "enable"]);
        let backend = UfwBackend::new(
            UfwOptions {
                write,
                ..UfwOptions::default()
            },
            Policy {
                ports: vec![80, 443],
                restrict: true,
            },
        );
        let mut states = Vec::new();
        for target in [
            documentation_ranges(1..21, 0..20),
            documentation_ranges(8..28, 6..26),
        ] {
            let change = Change::between(&backend.observe().unwrap(), &target);
            backend.apply(&change).unwrap();
            assert_eq!(backend.observe().unwrap().ranges, target);
            states.push(ufw_state());
        }
        states
    })
}

/// The batch writes exactly what one `ufw` call per rule writes: the same rules files byte for
/// byte, and the same live rules in both families.
#[test]
fn ufw_batch_writes_what_ufw_writes() {
    let by_calls = write_story(Write::Calls);
    let by_batch = write_story(Write::Batch);
    assert!(
        by_calls[0].contains(
            "-A ufw-user-input -p tcp -m multiport --dports 80,443 -s 198.51.100.1 -j ACCEPT"
        ),
        "{}",
        by_calls[0]
    );
    assert!(
        by_calls[1].contains("-s 2001:db8:19::/48"),
        "{}",
        by_calls[1]
    );
    for (calls, batch) in by_calls.iter().zip(&by_batch) {
        assert_eq!(calls, batch, "the batch wrote something else than ufw");
    }
}

/// restrict keeps an admin's explicit allow (issue 17, scenario 5): the admin's ufw lets
/// 203.0.113.200 reach 443 (`ufw insert 1 allow from … to any port 443`, written before our
/// first sync) and everyone reach 80, 443 and 8080; `sync --restrict` must close the web ports
/// to everyone else without cutting that allow.
#[test]
fn ufw_restrict_keeps_an_admins_explicit_allow() {
    in_sandbox(|sandbox| {
        let lab = Lab::new();
        let ufw = |args: &[&str]| lab.origin.exec("ufw", args);
        let program = cf_allowlist_backend::tool::locate("ufw").unwrap();
        for write in [Write::Batch, Write::Calls] {
            let (wrapper, _) = counting_ufw(sandbox.path());
            let config = lab.write_config(&format!(
                "[[backend]]\nkind = \"ufw\"\nprogram = \"{}\"\nwrite = \"{write}\"\n",
                match write {
                    Write::Batch => program.display(),
                    Write::Calls => wrapper.display(),
                }
            ));
            crate::support::admin_ssh_ufw_rules(ufw);
            ufw(&["allow", "80,443,8080/tcp"]);
            ufw(&[
                "insert",
                "1",
                "allow",
                "from",
                "203.0.113.200",
                "to",
                "any",
                "port",
                "443",
            ]);
            ufw(&["--force", "enable"]);
            sync(&lab, &config, &["--restrict"]).code(0);
            assert_eq!(
                lab.open(),
                crate::e2e_restrict::open_with_restrict_and_the_kept_allow(),
                "{write}: restrict cut the admin's allow or left a source open:\n{}",
                ufw(&["status", "numbered"])
            );
            sync(&lab, &config, &["--restrict"]).code(0).silent();
            lab.cf(&["--config", &config, "purge"]).code(0);
            ufw(&["--force", "reset"]);
        }
    });
}

/// A hand-made rule that borrows our comment is not ours (issue 18, item 4): `ufw allow proto
/// tcp from 198.51.100.10 to any port 22 comment 'cf-allowlist'` carries SSH for that source and
/// must survive every sync and purge; the rules we write carry this state directory's owner mark.
#[test]
fn ufw_leaves_a_hand_made_rule_with_our_comment_alone() {
    with_ufw_lab(|lab| {
        let ufw = |args: &[&str]| lab.origin.exec("ufw", args);
        let allow_with_our_comment = |source, ports| {
            let mut args = tcp_allow("", source, ports);
            args.extend(["comment", "cf-allowlist"]);
            ufw(&args)
        };
        crate::support::admin_ssh_ufw_rules(ufw);
        allow_with_our_comment("198.51.100.10", "22");
        // One of ours as the first release wrote it, without an owner mark: adopted and marked.
        allow_with_our_comment("198.51.100.0/25", "80,443");
        ufw(&["--force", "enable"]);
        // This state directory wrote to ufw before owners were marked: its record says so,
        // which is what lets it adopt its own unmarked rules (and only then).
        write_state_recording_ufw(&lab.state_dir());
        let mut expected = expect_open(&IN_FIRST_LIST);
        expected.insert("198.51.100.10 22".to_owned());
        lab.sync("ufw", &[]).code(0);
        assert_eq!(lab.open(), expected, "{}", ufw(&["status", "numbered"]));
        let status = ufw(&["status"]);
        assert!(status.contains("# cf-allowlist owner="), "{status}");
        let unmarked: Vec<&str> = status
            .lines()
            .filter(|line| line.ends_with("# cf-allowlist"))
            .collect();
        assert_eq!(
            unmarked.len(),
            1,
            "only the hand-made rule stays unmarked: {status}"
        );
        assert!(unmarked[0].contains("22/tcp"), "{status}");
        lab.sync("ufw", &[]).code(0).silent();
        // Another state directory finds our marks and refuses to adopt the rules, as with
        // nftables and iptables.
        let files = rules_text();
        lab.assert_another_state_directory_refuses_to_adopt("ufw");
        assert_eq!(
            rules_text(),
            files,
            "a refused adoption changed ufw's rules"
        );
        lab.cf(&["purge"]).code(0);
        let mut after_purge = expect_open(&[]);
        after_purge.insert("198.51.100.10 22".to_owned());
        assert_eq!(lab.open(), after_purge, "{}", ufw(&["status", "numbered"]));
    });
}

/// ufw switched off with `enable = false` (issue 17, item 7): no sync can enable it, so nothing
/// may say the next sync repairs it; what is said tells the admin what to do.
#[test]
fn ufw_switched_off_says_what_the_admin_must_do() {
    with_ufw_lab(|lab| {
        let ufw = |args: &[&str]| lab.origin.exec("ufw", args);
        ufw(&tcp_allow("", "192.0.2.0/24", "22"));
        ufw(&["--force", "enable"]);
        lab.sync("ufw", &[]).code(0);
        ufw(&["disable"]);
        for command in [&["status"][..], &["doctor"][..]] {
            let outcome = lab.cf(command);
            let text = format!("{}{}", outcome.stdout, outcome.stderr);
            assert!(
                !text.contains("next sync") && !text.contains("needs to enable ufw"),
                "{command:?} promises a repair no sync can make:\n{text}"
            );
            assert!(text.contains("run `ufw enable`"), "{command:?}:\n{text}");
        }
        ufw(&["--force", "enable"]);
        lab.cf(&["purge"]).code(0);
    });
}

/// One `ufw` call per rule (`write = "calls"`): each call reloads ufw's user chains (issue 20
/// says it empties them for a moment; ufw 0.36 flushes only its logging chains and replaces
/// `ufw-user-input` in one `iptables-restore -n`). While a sync replaces 30 ranges in calls
/// mode, the live filter table is read again and again, and every reading must hold the accept
/// of a range listed before and after.
#[test]
fn ufw_calls_mode_keeps_a_listed_range_open_during_an_apply() {
    use std::sync::atomic::{AtomicBool, Ordering};
    with_ufw_lab(|lab| {
        let ufw = |args: &[&str]| lab.origin.exec("ufw", args);
        ufw(&["default", "deny", "incoming"]);
        ufw(&["--force", "enable"]);
        let config = lab.write_config("[[backend]]\nkind = \"ufw\"\nwrite = \"calls\"\n");
        let list = |hosts: std::ops::Range<u32>| -> String {
            std::iter::once("198.51.100.0/28".to_owned())
                .chain(hosts.map(|host| format!("203.0.113.{host}/32")))
                .collect::<Vec<_>>()
                .join("\n")
        };
        lab.fixture.set("/ips-v4", Reply::ok(list(100..130)));
        sync(lab, &config, &[]).code(0);

        let stop = AtomicBool::new(false);
        let (readings, missing) = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let (mut readings, mut missing) = (0, 0);
                while !stop.load(Ordering::SeqCst) {
                    let table = lab.origin.exec("iptables-save", &["-t", "filter"]);
                    readings += 1;
                    let open = table.lines().any(|line| {
                        line.contains("-s 198.51.100.0/28") && line.ends_with("-j ACCEPT")
                    });
                    if !open {
                        missing += 1;
                    }
                }
                (readings, missing)
            });
            lab.fixture.set("/ips-v4", Reply::ok(list(150..180)));
            sync(lab, &config, &["--force"]).code(0);
            stop.store(true, Ordering::SeqCst);
            reader.join().unwrap()
        });
        assert!(readings > 20, "the table was read only {readings} times");
        assert_eq!(
            missing, 0,
            "{missing} of {readings} readings of the live table had no accept for a listed range"
        );
        lab.cf(&["--config", &config, "purge"]).code(0);
    });
}

/// A state directory as a release before owner marks left it after a ufw sync: `written`
/// records the ufw backend, no owner id yet.
fn write_state_recording_ufw(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let state = serde_json::json!({
        "version": 1,
        "current_generation": null,
        "pinned": null,
        "last_sync": null,
        "written": [{
            "kind": "ufw",
            "policy": {"ports": [80, 443], "restrict": false},
            "ufw": {}
        }]
    });
    let path = dir.join("state.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
