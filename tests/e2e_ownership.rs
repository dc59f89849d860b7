//! Everything the tool created and nothing else: foreign rules are never touched, even when
//! they appear between our read and our write; read-only commands write nothing, anywhere.
//! Proven with real packets and byte-for-byte ruleset comparisons.

use std::os::unix::fs::PermissionsExt;

use crate::support::cmd::{builtin_dry_run, cf};
use crate::support::lab::{IN_FIRST_LIST, Lab, expect_open};
use crate::support::netns::Netns;

/// The foreign INPUT rules of a save, in order (everything in INPUT that is not our jump).
fn foreign_input_rules(save: &str) -> Vec<String> {
    save.lines()
        .filter(|line| line.starts_with("-A INPUT ") && !line.contains("-j CF-ALLOWLIST"))
        .map(str::to_owned)
        .collect()
}

/// A directory holding an `iptables-nft-restore` that first inserts a partner's rule at the
/// top of INPUT (as fail2ban or Docker might, between our read and our write), once.
fn racing_restore(dir: &std::path::Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let marker = dir.join("inserted");
    let script = format!(
        "#!/bin/sh\n\
         if [ ! -e {marker} ]; then\n\
           touch {marker}\n\
           /usr/sbin/iptables-nft -I INPUT 1 -s 203.0.113.200 -p tcp --dport 8080 -m comment --comment partner -j ACCEPT\n\
         fi\n\
         exec /usr/sbin/iptables-nft-restore \"$@\"\n",
        marker = marker.display()
    );
    let path = bin.join("iptables-nft-restore");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display())
}

#[test]
fn a_rule_inserted_into_input_between_our_read_and_our_write_survives() {
    let lab = Lab::new();
    lab.load_iptables_rules("nft");
    let config = lab.write_config("[[backend]]\nkind = \"iptables\"\nvariant = \"nft\"\n");
    let sync = |extra: &[&str]| {
        let mut args = vec!["--config".to_owned(), config.clone(), "sync".to_owned()];
        args.extend(lab.source_args());
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    };
    let args = sync(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.cf(&args).code(0);
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));

    // Our jump is duplicated (drift), so the next sync must delete a jump; while it runs, a
    // partner's rule lands at the top of INPUT.
    let our_jump = "-A INPUT -m comment --comment cf-allowlist -j CF-ALLOWLIST";
    let our_jump: Vec<&str> = our_jump.split(' ').collect();
    lab.origin.exec("iptables-nft", &our_jump);
    let before = foreign_input_rules(&lab.origin.exec("iptables-nft-save", &["-t", "filter"]));
    let path = racing_restore(lab.state.path());
    let outcome = cf(&args)
        .state(&lab.state_dir())
        .in_netns(&lab.origin.name)
        .env("PATH", &path)
        .run();
    outcome.code(0);
    let save = lab.origin.exec("iptables-nft-save", &["-t", "filter"]);
    let after = foreign_input_rules(&save);
    assert_eq!(after.len(), before.len() + 1, "{save}");
    assert!(after[0].contains("--comment partner"), "{save}");
    assert_eq!(
        &after[1..],
        &before[..],
        "a foreign rule was deleted\n{save}"
    );
    assert_eq!(save.matches("-j CF-ALLOWLIST").count(), 1, "{save}");
    // The partner's rule works, and so do ours.
    let mut expected: Vec<&str> = IN_FIRST_LIST.to_vec();
    expected.retain(|source| !source.contains(':'));
    let open = lab.open();
    assert!(open.contains("203.0.113.200 8080"), "{open:?}");
    for source in expected {
        assert!(
            open.contains(&format!("{source} 443")),
            "{source} lost 443: {open:?}"
        );
    }

    // Purge, racing the same way, removes only ours.
    std::fs::remove_file(lab.state.path().join("inserted")).unwrap();
    lab.origin.exec(
        "iptables-nft",
        &[
            "-D",
            "INPUT",
            "-s",
            "203.0.113.200",
            "-p",
            "tcp",
            "--dport",
            "8080",
            "-m",
            "comment",
            "--comment",
            "partner",
            "-j",
            "ACCEPT",
        ],
    );
    let before = foreign_input_rules(&lab.origin.exec("iptables-nft-save", &["-t", "filter"]));
    cf(&["--config", &config, "purge"])
        .state(&lab.state_dir())
        .in_netns(&lab.origin.name)
        .env("PATH", &path)
        .run()
        .code(0);
    let save = lab.origin.exec("iptables-nft-save", &["-t", "filter"]);
    let after = foreign_input_rules(&save);
    assert!(after[0].contains("--comment partner"), "{save}");
    assert_eq!(
        &after[1..],
        &before[..],
        "purge deleted a foreign rule\n{save}"
    );
    assert!(!save.contains("CF-ALLOWLIST"), "{save}");
}

/// The kernel's view of a namespace that no firewall tool has touched: no nft ruleset, no
/// legacy tables.
fn kernel_state(netns: &Netns) -> (String, String, String) {
    (
        netns.exec("nft", &["list", "ruleset"]),
        netns.exec("cat", &["/proc/net/ip_tables_names"]),
        netns.exec("cat", &["/proc/net/ip6_tables_names"]),
    )
}

/// A new namespace (root only), a temporary directory, and a state path in it that does not
/// exist yet.
fn fresh_namespace(name: &str) -> (Netns, tempfile::TempDir, std::path::PathBuf) {
    crate::support::require_root();
    let netns = Netns::new(name);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    (netns, dir, state)
}

#[test]
fn status_and_a_dry_run_change_nothing_in_the_kernel() {
    let (netns, _dir, state) = fresh_namespace("readonly");
    let before = kernel_state(&netns);
    assert_eq!(before, (String::new(), String::new(), String::new()));
    for backend in ["nftables", "iptables"] {
        builtin_dry_run(&["--backend", backend])
            .state(&state)
            .in_netns(&netns.name)
            .run()
            .code(0);
        cf(&["status", "--backend", backend])
            .state(&state)
            .in_netns(&netns.name)
            .run()
            .code(0);
    }
    assert_eq!(
        kernel_state(&netns),
        before,
        "a read-only command changed the kernel's tables"
    );
    assert!(
        !state.exists(),
        "a read-only command created the state directory"
    );
}

#[test]
fn a_second_state_directory_refuses_to_adopt_the_first_ones_rules() {
    let lab = Lab::synced_with_nftables();
    let ruleset = lab.origin.ruleset();
    lab.assert_another_state_directory_refuses_to_adopt("nftables");
    assert_eq!(
        lab.origin.ruleset(),
        ruleset,
        "a refused adoption changed the ruleset"
    );
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
}

#[test]
fn moving_to_another_chain_leaves_nothing_behind_and_closes_nothing() {
    let lab = Lab::synced_with_nftables();
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
    // The admin restructures: web traffic goes through a chain of its own, jumped to from input
    // before the web ports' drop, and points cf-allowlist at it.
    lab.origin.nft_batch(
        "add chain inet filter web\n\
         insert rule inet filter input tcp dport { 80, 443 } jump web\n",
    );
    let config =
        lab.write_config("[[backend]]\nkind = \"nftables\"\ntable = \"filter\"\nchain = \"web\"\n");
    lab.sync_config(&config, &["--dry-run"])
        .code(0)
        .stdout_has("remove rule \"cf-allowlist ipv4 owner=")
        .stdout_has("from inet filter input (no longer configured)");
    lab.sync_config(&config, &[]).code(0);
    let ruleset = lab
        .origin
        .exec("nft", &["list", "chain", "inet", "filter", "input"]);
    assert!(
        !ruleset.contains("cf-allowlist"),
        "our old rules stayed:\n{ruleset}"
    );
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
    lab.cf(&["--config", &config, "purge"]).code(0);
    assert!(
        !lab.origin.ruleset().contains("cf-allowlist"),
        "{}",
        lab.origin.ruleset()
    );
}

#[test]
fn switching_backends_removes_the_old_ones_restrict_drop() {
    let lab = Lab::new();
    // No firewall at all: every port is open to everyone until we restrict.
    let sources = lab.source_args();
    let sync = |backend: &str, extra: &[&str]| {
        let mut args = vec!["sync", "--backend", backend, "--ports", "80"];
        args.extend(sources.iter().map(String::as_str));
        args.extend_from_slice(extra);
        lab.cf(&args)
    };
    sync("iptables", &["--restrict"]).code(0);
    let open = lab.open();
    assert!(open.contains("198.51.100.10 80"), "{open:?}");
    assert!(
        !open.contains("203.0.113.200 80"),
        "restrict did not drop: {open:?}"
    );
    assert!(open.contains("203.0.113.200 443"), "{open:?}");
    // The admin switches to nftables without restrict: the iptables chain and its drop go.
    sync("nftables", &[])
        .code(0)
        .stdout_has("iptables (auto variant, auto mode, tcp 80, restrict):")
        .stdout_has("~ remove everything of ours (no longer configured");
    let open = lab.open();
    assert!(
        open.contains("203.0.113.200 80"),
        "an orphaned restrict drop still blocks: {open:?}"
    );
    let save = lab.origin.exec("iptables-nft-save", &["-t", "filter"]);
    assert!(!save.contains("CF-ALLOWLIST"), "{save}");
}

#[test]
fn purge_finds_our_rules_when_the_state_was_lost() {
    let lab = Lab::new();
    lab.load_nft_ruleset();
    let base = lab.origin.ruleset();
    lab.sync("nftables", &[]).code(0);
    std::fs::remove_dir_all(lab.state_dir()).unwrap();
    lab.cf(&["purge", "--backend", "nftables"])
        .code(0)
        .stdout_has("removed nftables: rule \"cf-allowlist ipv4 owner=")
        .stderr_has("belonged to another cf-allowlist state directory");
    assert_eq!(lab.origin.ruleset(), base, "purge left a trace");
}

#[test]
fn restrict_on_a_host_with_docker_says_published_ports_are_not_covered() {
    let lab = Lab::new();
    lab.load_nft_ruleset();
    // What Docker leaves in iptables-nft: DOCKER and DOCKER-USER chains, FORWARD jumping to them.
    lab.origin.exec_with_input(
        "iptables-nft-restore",
        &["--noflush"],
        "*filter\n:DOCKER - [0:0]\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n-A FORWARD -o docker0 -j DOCKER\n-A DOCKER-USER -j RETURN\nCOMMIT\n",
    );
    lab.sync("nftables", &["--restrict"])
        .code(0)
        .stderr_has("Docker's chains exist: ports Docker publishes are forwarded to containers");
    // Without restrict there is nothing to say.
    lab.sync("nftables", &["--no-restrict", "-v"])
        .code(0)
        .stderr_lacks("Docker's chains exist");
}

/// The owner ids (`owner=…`) a run printed.
fn owner_ids(text: &str) -> std::collections::BTreeSet<String> {
    text.split("owner=")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| !c.is_whitespace() && *c != '"')
                .collect()
        })
        .collect()
}

#[test]
fn a_dry_run_shows_no_made_up_owner_id_and_a_noop_says_it_recorded_nothing() {
    let (netns, dir, state) = fresh_namespace("owner");
    let list = dir.path().join("list");
    std::fs::write(&list, "198.51.100.0/25\n").unwrap();
    let list = list.display().to_string();
    let sync = |extra: &[&str]| {
        let mut args = vec!["sync", "--backend", "nftables", "--source", &list, "-v"];
        args.extend_from_slice(extra);
        cf(&args).state(&state).in_netns(&netns.name).run()
    };
    let preview = sync(&["--dry-run"]);
    preview.code(0);
    assert!(!state.exists(), "the dry run created the state directory");
    sync(&[]).code(0);
    let owner: String =
        serde_json::from_str(&std::fs::read_to_string(state.join("owner")).unwrap()).unwrap();
    for shown in owner_ids(&preview.stdout) {
        assert!(
            shown == owner || !shown.chars().all(|c| c.is_ascii_hexdigit()),
            "the dry run showed owner id {shown}, the run wrote {owner}\n{preview}"
        );
    }
    sync(&[])
        .code(0)
        .stdout_has("nothing to change")
        .stdout_lacks("recorded generation");
}
