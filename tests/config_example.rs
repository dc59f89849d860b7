//! packaging/config.example.toml documents every key the config file takes, and nothing else:
//! `config check` accepts it with every commented example uncommented (so no key in it is
//! unknown), and every key `config check` knows (listed by its own unknown-key error, per
//! table and per backend kind of this build) appears in it.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::cmd::cf;

const EXAMPLE: &str = include_str!("../packaging/config.example.toml");

/// The example with every commented table and key uncommented (less the aws table in a build
/// without the aws backend, which would refuse it as an unknown kind).
fn uncommented() -> String {
    let text = EXAMPLE
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_key(rest) || rest.starts_with("[[backend]]") => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    text.split("[[backend]]")
        .filter(|table| cfg!(feature = "aws") || !table.contains("kind = \"aws\""))
        .collect::<Vec<_>>()
        .join("[[backend]]")
}

fn is_key(line: &str) -> bool {
    line.split_once(" =").is_some_and(|(key, _)| {
        !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    })
}

/// The keys the example sets or shows, per table: "top", "doctor", and each backend's kind.
fn documented(config: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut table = "top".to_owned();
    for line in config.lines() {
        if line == "[doctor]" {
            table = "doctor".to_owned();
            keys.entry("top".to_owned())
                .or_default()
                .insert("doctor".to_owned());
        } else if line == "[[backend]]" {
            table = "backend".to_owned();
            keys.entry("top".to_owned())
                .or_default()
                .insert("backend".to_owned());
        } else if let Some(kind) = line.strip_prefix("kind = ") {
            table = kind.split('"').nth(1).unwrap().to_owned();
            keys.entry(table.clone())
                .or_default()
                .insert("kind".to_owned());
        } else if is_key(line) {
            let key = line.split_once(" =").unwrap().0.to_owned();
            keys.entry(table.clone()).or_default().insert(key);
        }
    }
    keys
}

/// The keys `config check` knows in the table that `prefix` opens, from its error for an
/// unknown one.
fn known(prefix: &str) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, format!("{prefix}zz_not_a_key = 1\n")).unwrap();
    let outcome = cf(&["config", "check", path.to_str().unwrap()]).run();
    outcome.code(1);
    // serde lists them as "expected `a`", "expected `a` or `b`" or "expected one of `a`, `b`".
    let line = outcome
        .stderr
        .lines()
        .find(|line| line.starts_with("unknown field `zz_not_a_key`, expected"))
        .unwrap_or_else(|| panic!("no list of known keys in:\n{}", outcome.stderr));
    let listed = line.split_once(", expected").unwrap().1;
    listed
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_example_config_documents_every_key_and_only_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("all-kinds.toml");
    let text = uncommented();
    std::fs::write(&all, &text).unwrap();
    cf(&["config", "check", all.to_str().unwrap()])
        .run()
        .code(0)
        .stdout_has("valid");

    let documented = documented(&text);
    let mut tables = vec![
        ("top".to_owned(), String::new()),
        ("doctor".to_owned(), "[doctor]\n".to_owned()),
    ];
    let mut kinds = vec!["nftables", "iptables", "ufw", "nginx-realip"];
    if cfg!(feature = "aws") {
        kinds.push("aws");
    }
    for kind in kinds {
        tables.push((kind.to_owned(), format!("[[backend]]\nkind = \"{kind}\"\n")));
    }
    // Every backend table takes the shared policy keys: shown in one of them.
    let shared: BTreeSet<String> = documented
        .iter()
        .filter(|(table, _)| !["top", "doctor"].contains(&table.as_str()))
        .flat_map(|(_, keys)| keys.iter().cloned())
        .collect();
    for key in ["ports", "restrict"] {
        assert!(shared.contains(key), "no [[backend]] table shows `{key}`");
    }
    for (table, prefix) in tables {
        let mut expected = known(&prefix);
        if prefix.starts_with("[[backend]]") {
            expected.insert("kind".to_owned());
        }
        let shown = documented.get(&table).cloned().unwrap_or_default();
        let missing: Vec<_> = expected.difference(&shown).collect();
        assert!(
            missing.is_empty(),
            "packaging/config.example.toml does not show {missing:?} ({table})"
        );
    }
}

/// Issue 18 item 7: the top-level `restrict = true` is "the default for every backend", so a
/// config with a backend where restrict means nothing loads, and `-v` says where it does not
/// apply; in that backend's own table it is still refused.
#[test]
fn the_top_level_restrict_passes_a_real_ip_list_by_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let include = dir.path().join("realip.conf");
    let config = dir.path().join("config.toml");
    let table = format!(
        "[[backend]]\nkind = \"nginx-realip\"\npath = \"{}\"\n",
        include.display()
    );
    std::fs::write(&config, format!("restrict = true\n{table}")).unwrap();
    let config = config.to_str().unwrap();
    cf(&["config", "check", config]).run().code(0);
    cf(&[
        "-v",
        "--config",
        config,
        "sync",
        "--dry-run",
        "--source",
        "builtin",
    ])
    .state(&dir.path().join("state"))
    .run()
    .code(0)
    .stderr_has("backend nginx-realip: the top-level `restrict = true` does not apply here");
    let own_table = dir.path().join("own.toml");
    std::fs::write(&own_table, format!("{table}restrict = true\n")).unwrap();
    cf(&["config", "check", own_table.to_str().unwrap()])
        .run()
        .code(1)
        .stderr_has("`restrict` does not apply to a real-IP list");
}

/// The AWS backend is opt-in: a build without it says how to get it.
#[cfg(not(feature = "aws"))]
#[test]
fn an_aws_table_in_a_build_without_aws_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[[backend]]\nkind = \"aws\"\n").unwrap();
    cf(&["config", "check", config.to_str().unwrap()])
        .run()
        .code(1)
        .stderr_has("unknown variant `aws`")
        .stderr_has("hint: this build has no AWS backend (it is opt-in): build with `cargo build --release --features aws`");
}
