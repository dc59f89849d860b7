//! Regression checks on counts, never times: how many firewall processes a sync starts and
//! which state files it writes. A cron job runs a no-op sync every few minutes on thousands of
//! hosts (issue 14), so a no-op whose ruleset generation is unchanged since the last verified
//! sync lists nothing (issue 19) and writes nothing but its last-run time.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::support::cmd::{cf, cf_sync};
use crate::support::netns::Netns;
use crate::support::require_root;

/// Wrappers named like the firewall tools that log each run, then run the real tool; returns
/// the PATH that puts them first and the log.
pub fn counting_path(dir: &Path) -> (String, std::path::PathBuf) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("calls.log");
    for tool in [
        "nft",
        "iptables-nft-save",
        "ip6tables-nft-save",
        "iptables-nft-restore",
        "ip6tables-nft-restore",
        "ipset",
    ] {
        let real = ["/usr/sbin", "/sbin", "/usr/bin"]
            .iter()
            .map(|folder| Path::new(folder).join(tool))
            .find(|path| path.exists())
            .unwrap_or_else(|| panic!("{tool} is installed"));
        let script = bin.join(tool);
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> {}\nexec {} \"$@\"\n",
                log.display(),
                real.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    (
        format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()),
        log,
    )
}

/// Runs `sync` in `netns` with the counting PATH; returns the tool runs it made.
fn counted_sync(netns: &Netns, dir: &Path, config: &Path, source: &Path) -> Vec<String> {
    let (path, log) = counting_path(dir);
    let _ = std::fs::remove_file(&log);
    cf_sync(config, source)
        .state(&dir.join("state"))
        .in_netns(&netns.name)
        .env("PATH", path)
        .run()
        .code(0);
    std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every file under the state directory with its inode, modification time and size.
fn state_files(dir: &Path) -> BTreeMap<String, (u64, i64, i64, u64)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                files.insert(
                    entry.path().display().to_string(),
                    (meta.ino(), meta.mtime(), meta.mtime_nsec(), meta.size()),
                );
            }
        }
    }
    files
}

fn setup(backend: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, backend).unwrap();
    let source = dir.path().join("list");
    std::fs::write(
        &source,
        "198.51.100.0/25\n203.0.113.0/24\n2001:db8:cf::/48\n2001:db8:cf:1::/64\n",
    )
    .unwrap();
    (dir, config, source)
}

#[test]
fn a_noop_nftables_sync_lists_nothing_and_writes_only_its_last_run_time() {
    require_root();
    let netns = Netns::new("counts");
    let (dir, config, source) = setup("[[backend]]\nkind = \"nftables\"\n");

    let first = counted_sync(&netns, dir.path(), &config, &source);
    // One reading, no nft at all: observe reads the structure once, over netlink (the ruleset
    // holds only what the netlink reader renders exactly as `nft -t -j list ruleset`, so no
    // nft runs), and the judgement judges from that same listing at the same ruleset
    // generation; then table, chain, sets and rules are created in one netlink transaction
    // (no table of ours yet: nothing for nft's batch to name). The re-check before the write
    // finds the generation unchanged and lists nothing, and there is no read-back: the
    // generation moved by exactly our one transaction, which proves the ruleset is what was
    // read plus what was written.
    assert_eq!(first, Vec::<String>::new(), "first sync");

    let before = state_files(&dir.path().join("state"));
    assert!(
        before.keys().any(|path| path.ends_with("/proof.json")),
        "the verified sync recorded its proof: {before:#?}"
    );
    let noop = counted_sync(&netns, dir.path(), &config, &source);
    // Nothing committed since the last verified sync (same boot, namespace and generation),
    // and it was asked the same: its reading and its verdict still hold (issue 19).
    assert_eq!(noop, Vec::<String>::new(), "no-op sync");
    let mut after = state_files(&dir.path().join("state"));
    let last_run = after
        .keys()
        .find(|path| path.ends_with("/last-run"))
        .cloned()
        .expect("the no-op recorded its time");
    after.remove(&last_run);
    assert_eq!(after, before, "a no-op sync rewrote state files");

    // The same proof serves `status` and the dry run: they read nothing either.
    let (path, log) = counting_path(dir.path());
    for command in [
        &["status"][..],
        &["sync", "--dry-run", "--source", source.to_str().unwrap()],
    ] {
        let _ = std::fs::remove_file(&log);
        let mut args = vec!["--config", config.to_str().unwrap()];
        args.extend_from_slice(command);
        cf(&args)
            .state(&dir.path().join("state"))
            .in_netns(&netns.name)
            .env("PATH", &path)
            .run()
            .code(0);
        assert_eq!(
            std::fs::read_to_string(&log).unwrap_or_default(),
            "",
            "{command:?} read the firewall although the proof holds"
        );
    }
}

#[test]
fn a_noop_iptables_sync_after_a_verified_one_reads_nothing() {
    require_root();
    let netns = Netns::new("counts");
    let (dir, config, source) =
        setup("[[backend]]\nkind = \"iptables\"\nvariant = \"nft\"\nmode = \"rules\"\n");
    let first = counted_sync(&netns, dir.path(), &config, &source);
    let restores = first
        .iter()
        .filter(|call| call.contains("-restore"))
        .count();
    assert_eq!(restores, 2, "one write per family: {first:#?}");
    // Observe reads both families (2; no `ipset save` in rules mode), the judgement reads the
    // nft listing before any write over netlink (the fresh host's ruleset is empty, which the
    // netlink reader renders; no iptables-nft table holds matches nft prints opaquely yet, so
    // no saves), then two restores. The stale-plan re-check and
    // the read-back read nothing: the nf_tables generation vouches for the observation
    // (unmoved) and for the prediction (moved by exactly our two transactions).
    assert!(
        !first.iter().any(|call| call.starts_with("ipset")),
        "rules mode reads no ipsets: {first:#?}"
    );
    assert_eq!(first.len(), 4, "{first:#?}");
    assert!(
        !first.iter().any(|call| call.starts_with("nft")),
        "{first:#?}"
    );

    let before = state_files(&dir.path().join("state"));
    let noop = counted_sync(&netns, dir.path(), &config, &source);
    // iptables-nft's rules are nf_tables rules, and the generation moved by exactly our two
    // restores: the write recorded its proof, and the no-op reads nothing.
    assert_eq!(noop, Vec::<String>::new(), "no-op sync");
    let mut after = state_files(&dir.path().join("state"));
    after.retain(|path, _| !path.ends_with("/last-run"));
    assert_eq!(after, before, "a no-op sync rewrote state files");

    // Another writer's transaction: the next no-op reads (observe, then the judgement: the
    // nft listing, by nft since iptables-nft's xt matches are not rendered over netlink, and
    // the saves of the tables whose matches nft prints opaquely, ours now),
    // and records a new proof; the one after it reads nothing again.
    netns.exec("nft", &["add", "table", "inet", "other"]);
    let moved = counted_sync(&netns, dir.path(), &config, &source);
    assert_eq!(
        moved,
        vec![
            "iptables-nft-save -t filter",
            "ip6tables-nft-save -t filter",
            "nft -t -j list ruleset",
            "iptables-nft-save -t filter",
            "ip6tables-nft-save -t filter"
        ],
        "no-op sync after another writer"
    );
    let proven = counted_sync(&netns, dir.path(), &config, &source);
    assert_eq!(proven, Vec::<String>::new(), "proven no-op sync");
}

#[test]
fn a_write_by_another_tool_during_an_iptables_apply_is_read_back_not_assumed() {
    // The ip6tables restore is followed, before our read-back, by another tool flushing our
    // IPv4 chain: the generation moved by more than our transactions, so the run reads back
    // and finds the ranges missing instead of trusting what it wrote.
    require_root();
    let netns = Netns::new("counts");
    let (dir, config, source) =
        setup("[[backend]]\nkind = \"iptables\"\nvariant = \"nft\"\nmode = \"rules\"\n");
    let bin = dir.path().join("tamper");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("ip6tables-nft-restore");
    std::fs::write(
        &script,
        "#!/bin/sh\n/usr/sbin/ip6tables-nft-restore \"$@\" || exit $?\n/usr/sbin/iptables-nft -F CF-ALLOWLIST\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let outcome = cf_sync(&config, &source)
        .state(&dir.path().join("state"))
        .in_netns(&netns.name)
        .env(
            "PATH",
            format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()),
        )
        .run();
    outcome.code(1).stderr_has("missing 198.51.100.0/25");
}

#[test]
fn an_nftables_replace_writes_only_the_difference_in_one_transaction_without_nft() {
    // Replacing ranges of sets that exist changes only elements: they go to the kernel in one
    // netlink batch (no `nft -f`, whose interval deletes take minutes in a large set), as one
    // transaction: the ruleset's generation moves by exactly one.
    require_root();
    let netns = Netns::new("counts");
    let (dir, config, source) = setup("[[backend]]\nkind = \"nftables\"\n");
    counted_sync(&netns, dir.path(), &config, &source);
    std::fs::write(
        &source,
        "198.51.100.128/25\n203.0.113.0/24\n2001:db8:cf::/48\n2001:db8:ce::/64\n",
    )
    .unwrap();
    let generation =
        || netns.run_inside(|| cf_allowlist_nftables::netlink::generation().expect("generation"));
    let before = generation();
    let replace = counted_sync(&netns, dir.path(), &config, &source);
    assert_eq!(
        replace,
        Vec::<String>::new(),
        "replace: one listing (observe's, over netlink, which the judgement shares), no nft \
         write"
    );
    assert_eq!(generation(), before.wrapping_add(1), "one transaction");
    let listed = netns.exec("nft", &["list", "ruleset"]);
    for (range, present) in [
        ("198.51.100.128/25", true),
        ("198.51.100.0/25", false),
        ("203.0.113.0/24", true),
        ("2001:db8:ce::/64", true),
        ("2001:db8:cf::/48", true),
    ] {
        assert_eq!(listed.contains(range), present, "{range}:\n{listed}");
    }
}

#[test]
fn an_iptables_sync_that_matches_an_ipset_is_never_proven() {
    // `mode = "auto"`: rules for a short list (proven like rules mode), an ipset above 1,000
    // ranges in a family. No ruleset generation counts an ipset's members, so while a rule
    // matches one every no-op reads.
    require_root();
    let netns = Netns::new("counts");
    let (dir, config, source) =
        setup("[[backend]]\nkind = \"iptables\"\nvariant = \"nft\"\nmode = \"auto\"\n");
    counted_sync(&netns, dir.path(), &config, &source);
    assert_eq!(
        counted_sync(&netns, dir.path(), &config, &source),
        Vec::<String>::new(),
        "auto mode with rules only is proven"
    );
    // The same list and 1,001 more IPv6 ranges (growing: no guard refuses it).
    let mut long = std::fs::read_to_string(&source).unwrap();
    long.extend((0..1001).map(|index| format!("2001:db8:0:{index:x}::/64\n")));
    std::fs::write(&source, long).unwrap();
    let write = counted_sync(&netns, dir.path(), &config, &source);
    assert!(
        write.iter().any(|call| call.starts_with("ipset")),
        "{write:#?}"
    );
    for _ in 0..2 {
        let noop = counted_sync(&netns, dir.path(), &config, &source);
        assert!(
            noop.iter().any(|call| call.starts_with("ipset save")),
            "a no-op over an ipset reads it: {noop:#?}"
        );
    }
}

/// The `NFT_MSG_GETSETELEM` requests in a strace log that name one of our sets (by the bytes
/// of `cf_allowlist_v`, which strace prints as text or as hex escapes).
fn dumps_of_our_sets(log: &Path) -> usize {
    let hex: String = "cf_allowlist_v"
        .bytes()
        .map(|byte| format!("\\x{byte:02x}"))
        .collect();
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        // Decoded where strace can tell the socket's protocol, as the raw type (10 << 8 | 13)
        // where it cannot (it runs outside the namespace).
        .filter(|line| line.contains("NFT_MSG_GETSETELEM") || line.contains("nlmsg_type=0xa0d"))
        .filter(|line| line.contains("cf_allowlist_v") || line.contains(&hex))
        .count()
}

#[test]
fn a_replace_at_the_proven_generation_takes_our_sets_from_the_proof_not_the_kernel() {
    // After a verified sync the proof says what our sets hold at the recorded generation. A
    // changed list asked at that same generation need not dump them from the kernel (at
    // 100,000 elements the dump is most of a replace: the kernel's walk is O(n²)); the write
    // carries the generation, so the kernel refuses it if anything committed in between.
    require_root();
    let netns = Netns::new("counts");
    let (dir, config, source) = setup("[[backend]]\nkind = \"nftables\"\n");
    counted_sync(&netns, dir.path(), &config, &source);
    let log = dir.path().join("strace.log");
    let replace = |list: &str| {
        std::fs::write(&source, list).unwrap();
        cf_sync(&config, &source)
            .state(&dir.path().join("state"))
            .in_netns(&netns.name)
            .traced(&log)
            .run()
            .code(0);
        netns.exec("nft", &["list", "ruleset"])
    };
    let listed = replace("198.51.100.128/25\n203.0.113.0/24\n2001:db8:cf::/48\n");
    assert_eq!(dumps_of_our_sets(&log), 0, "proven: no dump of our sets");
    assert!(listed.contains("198.51.100.128/25") && !listed.contains("198.51.100.0/25"));

    // Another writer's transaction moves the generation: the proof no longer holds, and the
    // next replace reads our sets from the kernel.
    netns.exec("nft", &["add", "table", "inet", "somebody_else"]);
    let listed = replace("198.51.100.0/25\n203.0.113.0/24\n2001:db8:cf::/48\n");
    assert_eq!(dumps_of_our_sets(&log), 2, "not proven: both sets read");
    assert!(listed.contains("198.51.100.0/25") && !listed.contains("198.51.100.128/25"));
}
