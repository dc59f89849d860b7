//! The stored generation proof (issue 19): a no-op sync after a verified one lists nothing
//! when the ruleset generation, the boot, the namespace and the request are all unchanged, and
//! re-reports the recorded verdict (a block too, exit 5); any other writer's transaction moves
//! the generation and the next sync reads and judges the firewall again; a proof recorded in
//! another namespace is never used. That a run listed nothing is counted with `nft` wrappers on
//! the PATH ([`counting_path`]); that it read shows in the proof it records anew (the ruleset
//! is read over netlink, without nft, when it holds only what that reader renders); what it
//! reports is checked against real TCP connects.

use std::path::Path;

use crate::counts::counting_path;
use crate::support::cmd::{Outcome, cf, cf_sync};
use crate::support::fixture::Reply;
use crate::support::lab::{IN_FIRST_LIST, IN_SECOND_LIST, LIST_V6, Lab, SECOND_V4, expect_open};
use crate::support::netns::Netns;

/// A table whose base chain drops HTTPS whatever our accepts say (a drop is final).
const DROP_HTTPS: &str = "table inet second {
  chain input {
    type filter hook input priority 10; policy accept;
    tcp dport 443 drop comment \"no https\"
  }
}
";

/// `cf-allowlist --config CONFIG sync --source … EXTRA…` in the lab's origin, counting the
/// firewall tools it runs; returns the outcome and the runs.
fn counted(lab: &Lab, config: &str, extra: &[&str]) -> (Outcome, Vec<String>) {
    let (path, log) = counting_path(lab.state.path());
    let _ = std::fs::remove_file(&log);
    let sources = lab.source_args();
    let mut args = vec!["--config", config, "sync"];
    args.extend(sources.iter().map(String::as_str));
    args.extend_from_slice(extra);
    let outcome = cf(&args)
        .state(&lab.state_dir())
        .in_netns(&lab.origin.name)
        .env("PATH", path)
        .run();
    let runs = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    (outcome, runs)
}

/// The proof the lab's state directory holds.
fn proof(lab: &Lab) -> Option<serde_json::Value> {
    let bytes = std::fs::read(lab.state_dir().join("proof.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[test]
fn a_block_is_re_reported_by_the_proven_noop_and_another_writer_makes_the_next_sync_read() {
    let lab = Lab::new();
    lab.load_nft_ruleset();
    let config = lab.write_config("[[backend]]\nkind = \"nftables\"\n");

    let (first, runs) = counted(&lab, &config, &[]);
    first.code(0);
    assert!(
        runs.len() <= 2,
        "first apply: one listing, one batch: {runs:#?}"
    );
    let (noop, runs) = counted(&lab, &config, &[]);
    noop.code(0).stderr_lacks("blocked");
    assert_eq!(runs, Vec::<String>::new(), "a proven no-op lists nothing");
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));

    // Another writer: the generation moves, the next sync reads, and finds the block. (The
    // ruleset is read over netlink, no nft process: that it was read shows in the new proof.)
    lab.origin.nft_batch(DROP_HTTPS);
    let proven = proof(&lab);
    let (after, _) = counted(&lab, &config, &[]);
    after.code(5).stderr_has("inet second input");
    assert_ne!(
        proof(&lab),
        proven,
        "a moved generation is read and proven anew"
    );
    // Once more after another transaction (of nothing that matters), for the full reading's
    // JSON report.
    lab.origin.nft_batch("add table inet unrelated\n");
    let proven = proof(&lab);
    let (full_json, _) = counted(&lab, &config, &["--output", "json"]);
    assert_ne!(
        proof(&lab),
        proven,
        "a moved generation is read and proven anew"
    );
    // That run found nothing to change at an unmoved generation: it recorded the block, and
    // every no-op after it reports the block again without listing, text and JSON alike.
    for _ in 0..2 {
        let (noop, runs) = counted(&lab, &config, &[]);
        noop.code(5).stderr_has("inet second input");
        assert_eq!(runs, Vec::<String>::new(), "a proven no-op lists nothing");
    }
    // `status` and the dry run use the same proof, and say the same.
    let (path, log) = counting_path(lab.state.path());
    for command in [&["status"][..], &["sync", "--dry-run"]] {
        let _ = std::fs::remove_file(&log);
        let sources = lab.source_args();
        let mut args = vec!["--config", &config];
        args.extend_from_slice(command);
        if command[0] == "sync" {
            args.extend(sources.iter().map(String::as_str));
        }
        let outcome = cf(&args)
            .state(&lab.state_dir())
            .in_netns(&lab.origin.name)
            .env("PATH", &path)
            .run();
        let said = format!("{}{}", outcome.stdout, outcome.stderr);
        assert!(said.contains("inet second input"), "{outcome:?}");
        assert_eq!(std::fs::read_to_string(&log).unwrap_or_default(), "");
    }
    let (proven_json, runs) = counted(&lab, &config, &["--output", "json"]);
    assert_eq!(runs, Vec::<String>::new());
    assert_eq!(proven_json.code, 5);
    assert_eq!(
        proven_json.json(),
        full_json.json(),
        "the proven no-op's report is the full reading's"
    );
    let open = lab.open();
    assert!(
        !open.iter().any(|pair| pair.ends_with(" 443")),
        "443 is blocked: {open:?}"
    );
    assert!(open.iter().any(|pair| pair.ends_with(" 80")), "{open:?}");
}

#[test]
fn a_proof_recorded_in_another_namespace_is_not_used() {
    crate::support::require_root();
    let (one, other) = (Netns::new("proof"), Netns::new("proof"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[[backend]]\nkind = \"nftables\"\n").unwrap();
    let source = dir.path().join("list");
    std::fs::write(&source, "198.51.100.0/25\n2001:db8:cf::/48\n").unwrap();
    let state = dir.path().join("state");
    let proof_file = state.join("proof.json");
    let sync_in = |netns: &Netns| {
        let (path, log) = counting_path(dir.path());
        let _ = std::fs::remove_file(&log);
        cf_sync(&config, &source)
            .state(&state)
            .in_netns(&netns.name)
            .env("PATH", path)
            .run()
            .code(0);
        std::fs::read_to_string(&log).unwrap_or_default()
    };
    // One state directory synced in the other namespace, then in this one: the same request.
    sync_in(&other);
    let recorded_there: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&proof_file).unwrap()).unwrap();
    sync_in(&one);
    let mut recorded_here: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&proof_file).unwrap()).unwrap();
    assert_eq!(recorded_here["asked"], recorded_there["asked"]);
    assert_ne!(
        recorded_here["moment"]["namespace"],
        recorded_there["moment"]["namespace"]
    );
    // This namespace's proof, at the other namespace's generation: only the namespace differs
    // from what the other namespace would prove. It must read.
    recorded_here["moment"]["generation"] = recorded_there["moment"]["generation"].clone();
    write_private(&proof_file, &recorded_here);
    sync_in(&other);
    // Read (over netlink, no nft process) and proven anew in this namespace.
    let recorded_now: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&proof_file).unwrap()).unwrap();
    assert_eq!(
        recorded_now["moment"]["namespace"], recorded_there["moment"]["namespace"],
        "a proof from another namespace was trusted"
    );
    // Its own proof, as recorded there, is used.
    write_private(&proof_file, &recorded_there);
    assert_eq!(sync_in(&other), "", "the namespace's own proof is used");
}

/// Writes a state file as cf-allowlist does (mode 0600: it refuses group- or world-writable
/// state).
fn write_private(path: &Path, value: &serde_json::Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// A served IPv6 list long enough for a memo (over 256 KiB): 2001:db8:cf::/48 (the edge's
/// listed source) unless `without_cf`, then 12,000 /64s no packet uses.
fn long_v6_list(without_cf: bool) -> String {
    let mut list = String::new();
    if !without_cf {
        list.push_str(LIST_V6);
    }
    for index in 0..12_000 {
        list.push_str(&format!("2001:db8:f000:{index:x}::/64\n"));
    }
    assert!(list.len() > 256 * 1024);
    list
}

/// A lab whose sources serve a long IPv6 list, synced once with the nftables backend: the lab,
/// its config and where the sync recorded the list's memo.
fn synced_long_list_lab() -> (Lab, String, std::path::PathBuf) {
    let lab = Lab::new();
    lab.load_nft_ruleset();
    lab.fixture.set("/ips-v6", Reply::ok(long_v6_list(false)));
    let config = lab.write_config("[[backend]]\nkind = \"nftables\"\n");
    let memo = lab.state_dir().join("proof-list");
    counted(&lab, &config, &[]).0.code(0);
    (lab, config, memo)
}

#[test]
fn a_long_list_taken_from_its_memo_is_always_the_served_one() {
    let (lab, config, memo) = synced_long_list_lab();
    assert!(
        memo.exists(),
        "a proven sync of a long list records its memo"
    );
    let (noop, runs) = counted(&lab, &config, &[]);
    noop.code(0).stdout_lacks("+ ").stdout_lacks("- ");
    assert_eq!(runs, Vec::<String>::new(), "a proven no-op lists nothing");
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));

    // The short list changes, the long one does not: the change is made.
    lab.fixture.set("/ips-v4", Reply::ok(SECOND_V4));
    let moved = counted(&lab, &config, &[]).0;
    lab.assert_moved_to_the_second_list(&moved);

    // The long list loses the edge's range: its memo must not stand in for it.
    lab.fixture.set("/ips-v6", Reply::ok(long_v6_list(true)));
    counted(&lab, &config, &[])
        .0
        .code(0)
        .stdout_has("- 2001:db8:cf::/48");
    let without_cf: Vec<&str> = IN_SECOND_LIST
        .into_iter()
        .filter(|source| *source != "2001:db8:cf::10")
        .collect();
    assert_eq!(lab.open(), expect_open(&without_cf));

    // It comes back (and a memo is recorded with it).
    lab.fixture.set("/ips-v6", Reply::ok(long_v6_list(false)));
    counted(&lab, &config, &[])
        .0
        .code(0)
        .stdout_has("+ 2001:db8:cf::/48");
    assert_eq!(lab.open(), expect_open(&IN_SECOND_LIST));

    // Stricter rules refuse a range the memo's reading accepted: the run reads the list again,
    // refuses it, and changes nothing.
    let strict = lab.write_config("broadest_prefix_v6 = 56\n[[backend]]\nkind = \"nftables\"\n");
    let before = lab.origin.ruleset();
    let refused = counted(&lab, &strict, &[]).0;
    assert_ne!(refused.code, 0, "{refused:?}");
    refused.stderr_has("2001:db8:cf::/48 is refused");
    assert_eq!(lab.origin.ruleset(), before);
    assert_eq!(lab.open(), expect_open(&IN_SECOND_LIST));
    lab.write_config("[[backend]]\nkind = \"nftables\"\n");

    // An edited memo (2001:db8:cf::/48 made 2001:db8:ce::/48) is not used. The snapshot file
    // is rewritten (the same bytes, a new modification time): the proof no longer holds at
    // this generation, so the full path would apply what the memo gave.
    let mut entry = vec![6, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0xcf];
    entry.extend([0; 10]);
    entry.push(48);
    let mut bytes = std::fs::read(&memo).unwrap();
    let at = bytes
        .windows(entry.len())
        .position(|window| window == entry)
        .expect("the memo holds 2001:db8:cf::/48");
    bytes[at + 6] = 0xce;
    std::fs::write(&memo, &bytes).unwrap();
    let generations = lab.state_dir().join("generations");
    let snapshot = std::fs::read_dir(&generations)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .max()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&snapshot, std::fs::read(&snapshot).unwrap()).unwrap();
    let (read, _) = counted(&lab, &config, &[]);
    read.code(0).stdout_lacks("+ ").stdout_lacks("- ");
    assert_eq!(lab.open(), expect_open(&IN_SECOND_LIST));
}

#[test]
fn a_damaged_memo_is_written_again_by_the_proven_no_op_that_read_the_list_in_full() {
    let (lab, config, memo) = synced_long_list_lab();
    let recorded = std::fs::read(&memo).unwrap();

    // Torn in the middle of its ranges: the no-op reads the list in full, and its proof holds.
    std::fs::write(&memo, &recorded[..recorded.len() / 2]).unwrap();
    let (noop, runs) = counted(&lab, &config, &[]);
    noop.code(0).stdout_lacks("+ ").stdout_lacks("- ");
    assert_eq!(runs, Vec::<String>::new(), "a proven no-op lists nothing");
    assert!(
        std::fs::read(&memo).unwrap() == recorded,
        "the no-op did not write the memo again"
    );

    // A dry run writes nothing, the memo included.
    std::fs::remove_file(&memo).unwrap();
    counted(&lab, &config, &["--dry-run"]).0.code(0);
    assert!(!memo.exists(), "a dry run wrote the memo");
    assert_eq!(lab.open(), expect_open(&IN_FIRST_LIST));
}
