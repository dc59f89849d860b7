//! Regression checks on counts, never times: how many firewall processes a sync starts and
//! which state files it writes. A cron job runs a no-op sync every few minutes on thousands of
//! hosts (issue 14), so a no-op must list once and write nothing but its last-run time.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::support::cmd::cf;
use crate::support::netns::Netns;
use crate::support::require_root;

/// Wrappers named like the firewall tools that log each run, then run the real tool.
fn counting_path(dir: &Path) -> (String, std::path::PathBuf) {
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
    cf(&[
        "--config",
        config.to_str().unwrap(),
        "sync",
        "--source",
        source.to_str().unwrap(),
    ])
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
fn a_noop_nftables_sync_lists_once_and_writes_only_its_last_run_time() {
    require_root();
    let netns = Netns::new("counts");
    let (dir, config, source) = setup("[[backend]]\nkind = \"nftables\"\n");

    let first = counted_sync(&netns, dir.path(), &config, &source);
    // Observe (one terse listing; the elements come over netlink) and the batch. The apply
    // re-reads only when the core hands it another backend instance than the one that
    // observed (a reading is kept per instance, exact while the ruleset generation stays).
    // No read-back: the generation moved by exactly our one transaction, which proves the
    // ruleset is what was read plus what was written. Then the shadowing analysis reads the
    // whole firewall once, because the run wrote.
    let write = first
        .iter()
        .position(|call| call == "nft -f -")
        .unwrap_or_else(|| panic!("one batch: {first:#?}"));
    assert_eq!(
        first.iter().filter(|call| *call == "nft -f -").count(),
        1,
        "{first:#?}"
    );
    assert!(
        (1..=2).contains(&write)
            && first[..write]
                .iter()
                .all(|call| call == "nft -t -j list ruleset"),
        "at most one listing per backend instance before the write: {first:#?}"
    );
    assert_eq!(
        &first[write + 1..],
        &["nft -t -j list ruleset"],
        "no read-back after the write, only the analysis (structure only; the elements of \
         address sets come from the kernel): {first:#?}"
    );

    let before = state_files(&dir.path().join("state"));
    let noop = counted_sync(&netns, dir.path(), &config, &source);
    assert_eq!(noop, vec!["nft -t -j list ruleset"], "no-op sync");
    let mut after = state_files(&dir.path().join("state"));
    let last_run = after
        .keys()
        .find(|path| path.ends_with("/last-run"))
        .cloned()
        .expect("the no-op recorded its time");
    after.remove(&last_run);
    assert_eq!(after, before, "a no-op sync rewrote state files");
}

#[test]
fn a_noop_iptables_sync_reads_each_family_once_and_writes_nothing() {
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
    // Observe, the stale-plan re-check and the read-back each read both families and the sets
    // (9), two restores, then the shadowing analysis: the terse nft listing and, for the
    // iptables-nft tables whose matches nft prints opaquely, their saves (3).
    assert_eq!(first.len(), 14, "{first:#?}");
    assert_eq!(
        &first[11..],
        &[
            "nft -t -j list ruleset",
            "iptables-nft-save -t filter",
            "ip6tables-nft-save -t filter"
        ],
        "{first:#?}"
    );

    let before = state_files(&dir.path().join("state"));
    let noop = counted_sync(&netns, dir.path(), &config, &source);
    assert_eq!(
        noop,
        vec![
            "iptables-nft-save -t filter",
            "ip6tables-nft-save -t filter",
            "ipset save"
        ],
        "no-op sync"
    );
    let mut after = state_files(&dir.path().join("state"));
    after.retain(|path, _| !path.ends_with("/last-run"));
    assert_eq!(after, before, "a no-op sync rewrote state files");
}
