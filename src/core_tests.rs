//! The core, tested in-process without root: every command against the in-memory backend
//! (a test-only kind of the registry), with faults injected into it, and every JSON object
//! checked against the published schema.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use clap::Parser;
use serde_json::Value;

use cf_allowlist_backend::{ErrorKind, Ranges};
use cf_allowlist_memory::SharedFirewall;

use crate::cli::{Cli, OutputFormat};
use crate::printer::{Printer, Verbosity};
use crate::report::Outcome;
use crate::test_support::ranges;

static HOSTS: AtomicU32 = AtomicU32::new(0);

/// A pretend host: a temporary config and state directory, a source file, and named in-memory
/// firewalls that only this test uses.
struct Host {
    dir: tempfile::TempDir,
    firewalls: Vec<String>,
}

/// What one command did: the JSON object it would print.
struct Ran {
    json: Value,
}

impl Host {
    fn new(firewalls: &[&str]) -> Host {
        let host = HOSTS.fetch_add(1, Ordering::SeqCst);
        let firewalls: Vec<String> = firewalls
            .iter()
            .map(|name| format!("core-{host}-{name}"))
            .collect();
        Host::on(firewalls)
    }

    /// A host with one firewall after its first successful sync (generation 1, three ranges).
    fn synced() -> Host {
        let host = Host::new(&["a"]);
        assert_eq!(host.run(&["sync"]).code(), 0);
        host
    }

    /// A second state directory on this host's firewalls.
    fn second_state_directory(&self) -> Host {
        Host::on(self.firewalls.clone())
    }

    fn on(firewalls: Vec<String>) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let mut config = format!(
            "sources = [{:?}]\n",
            dir.path().join("list").display().to_string()
        );
        for name in &firewalls {
            config.push_str(&format!(
                "[[backend]]\nkind = \"memory\"\nfirewall = {name:?}\n"
            ));
        }
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let host = Host { dir, firewalls };
        host.serve(&FIRST_LIST);
        host
    }

    fn serve(&self, ranges: &[&str]) {
        std::fs::write(self.dir.path().join("list"), ranges.join("\n")).unwrap();
    }

    fn firewall(&self, index: usize) -> SharedFirewall {
        SharedFirewall::named(&self.firewalls[index])
    }

    /// What a firewall reload does to our parts in firewall `index`: removes them.
    fn wipe(&self, index: usize) {
        let shared = self.firewall(index);
        let mut firewall = shared.lock();
        firewall.set = None;
        firewall.rules.clear();
    }

    fn held(&self, index: usize) -> Ranges {
        self.firewall(index).lock().set.clone().unwrap_or_default()
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `cf-allowlist [GLOBAL…] --config … --state-dir … ARGS…` for this host.
    fn argv(&self, global: &[&str], args: &[&str]) -> Vec<String> {
        let config = self.dir.path().join("config.toml");
        let state = self.state_dir();
        let mut argv = vec!["cf-allowlist".to_owned()];
        argv.extend(global.iter().map(|arg| (*arg).to_owned()));
        argv.extend([
            "--config".to_owned(),
            config.display().to_string(),
            "--state-dir".to_owned(),
            state.display().to_string(),
        ]);
        argv.extend(args.iter().map(|arg| (*arg).to_owned()));
        argv
    }

    fn run(&self, args: &[&str]) -> Ran {
        let cli = Cli::try_parse_from(self.argv(&[], args)).unwrap();
        let printer = Printer::new(OutputFormat::Json, Verbosity::Quiet);
        let config = super::read_config(&cli).unwrap();
        let outcome: Outcome = super::execute(&cli, &config, None, &printer);
        let json = outcome.to_json(&printer.warnings());
        assert_valid(&json);
        Ran { json }
    }
}

/// What [`Host::new`] serves.
const FIRST_LIST: [&str; 3] = ["192.0.2.0/24", "198.51.100.0/24", "2001:db8:a::/48"];

/// What [`Host::new`] serves, plus one range: an upstream change that grows the list.
const WITH_A_FOURTH_RANGE: [&str; 4] = [
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "2001:db8:a::/48",
];

/// Checks a JSON object against `schema/output.schema.json`.
pub fn assert_valid(json: &Value) {
    let schema: Value = serde_json::from_str(include_str!("../schema/output.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(json)
        .map(|error| format!("{error} at {}", error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "output does not match the schema: {errors:#?}\n{json:#}"
    );
}

impl Ran {
    fn code(&self) -> i32 {
        self.json["exit_code"].as_i64().unwrap() as i32
    }

    fn message(&self) -> String {
        self.json["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Asserts the error message contains `text`.
    #[track_caller]
    fn message_says(&self, text: &str) {
        let message = self.message();
        assert!(message.contains(text), "{message}");
    }

    /// The string at `pointer` (a JSON pointer such as `/warnings/0`).
    #[track_caller]
    fn text(&self, pointer: &str) -> &str {
        self.json
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no string at {pointer}: {:#}", self.json))
    }

    /// Asserts the string at `pointer` contains `text`.
    #[track_caller]
    fn says(&self, pointer: &str, text: &str) {
        assert!(self.text(pointer).contains(text), "{:#}", self.json);
    }

    /// Asserts one of the warnings starts with `text`.
    #[track_caller]
    fn warns(&self, text: &str) {
        let warnings = self.json["warnings"].as_array();
        let found = warnings.into_iter().flatten().filter_map(Value::as_str);
        assert!(
            found.into_iter().any(|warning| warning.starts_with(text)),
            "{:#}",
            self.json
        );
    }

    /// Asserts the string at `pointer` starts with `text`.
    #[track_caller]
    fn begins_with(&self, pointer: &str, text: &str) {
        assert!(self.text(pointer).starts_with(text), "{:#}", self.json);
    }
}

#[test]
fn sync_applies_and_a_second_sync_writes_nothing() {
    let host = Host::new(&["a"]);
    let first = host.run(&["sync"]);
    assert_eq!(first.code(), 0, "{:#}", first.json);
    assert_eq!(first.json["changed"], true);
    assert_eq!(first.json["generation"], 1);
    assert_eq!(
        host.held(0),
        ranges(&["192.0.2.0/24", "198.51.100.0/24", "2001:db8:a::/48"])
    );
    let writes = host.firewall(0).lock().writes;
    let second = host.run(&["sync"]);
    assert_eq!(second.code(), 0);
    assert_eq!(second.json["changed"], false);
    assert_eq!(second.json["generation"], 1);
    assert_eq!(host.firewall(0).lock().writes, writes, "a no-op sync wrote");
}

#[test]
fn a_dry_run_changes_nothing_and_reports_the_pending_change() {
    let host = Host::new(&["a"]);
    let preview = host.run(&["sync", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(preview.code(), 2);
    assert_eq!(preview.json["changed"], true);
    assert_eq!(preview.json["dry_run"], true);
    assert_eq!(
        preview.json["backends"][0]["added"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(host.firewall(0).lock().set.is_none());
    assert!(!host.state_dir().exists());
}

#[test]
fn a_read_back_that_differs_from_the_plan_fails_and_records_nothing() {
    let host = Host::new(&["a"]);
    host.firewall(0).lock().faults.extra_after_apply = Some("203.0.113.0/24".parse().unwrap());
    let run = host.run(&["sync"]);
    assert_eq!(run.code(), 1);
    run.message_says("does not hold the planned ranges after apply: unexpected 203.0.113.0/24");
    let status = host.run(&["status"]);
    assert_eq!(status.json["generation"], Value::Null, "{:#}", status.json);
    // The next sync removes what the plan did not list.
    assert_eq!(host.run(&["sync"]).code(), 0);
    assert!(!host.held(0).contains(&"203.0.113.0/24".parse().unwrap()));
}

#[test]
fn a_backend_failure_records_nothing_and_the_next_sync_converges() {
    let host = Host::new(&["a"]);
    host.firewall(0).lock().faults.fail_next_apply = Some(ErrorKind::Permission);
    let run = host.run(&["sync"]);
    assert_eq!(run.code(), 1);
    assert_eq!(run.json["changed"], false);
    run.says("/error/hint", "run as root");
    assert!(host.firewall(0).lock().set.is_none());
    assert!(!host.state_dir().join("generations/00000001.json").exists());
    assert_eq!(host.run(&["sync"]).code(), 0);
    assert_eq!(host.held(0).len(), 3);
}

#[test]
fn when_the_second_backend_fails_the_error_names_the_first_as_changed() {
    let host = Host::new(&["a", "b"]);
    host.firewall(1).lock().faults.fail_next_apply = Some(ErrorKind::Rejected);
    let run = host.run(&["sync"]);
    assert_eq!(run.code(), 1);
    assert_eq!(run.json["changed"], true, "the first backend was changed");
    let message = run.message();
    assert!(
        message.contains(&format!("memory (firewall {}", host.firewalls[0]))
            && message.contains("already hold generation 1 (2 IPv4, 1 IPv6)")
            && message.contains("which the state does not record"),
        "{message}"
    );
    run.says(
        "/error/causes/0",
        &format!("memory {} backend could not apply", host.firewalls[1]),
    );
    assert_eq!(host.held(0).len(), 3);
    assert!(host.firewall(1).lock().set.is_none());
    // status tells the truth: the first backend holds what no generation records yet (not
    // "unexpected" ranges).
    let status = host.run(&["status", "--backend", "memory"]);
    assert_eq!(status.code(), 0);
    assert_eq!(
        status.json["backends"][0]["in_sync"], true,
        "{:#}",
        status.json
    );
    status.says("/warnings/0", "holds the ranges of a sync that failed");
    // The next sync converges both and records generation 1.
    let next = host.run(&["sync"]);
    assert_eq!(next.code(), 0);
    assert_eq!(next.json["generation"], 1);
    assert_eq!(host.held(1).len(), 3);
}

#[test]
fn a_stale_plan_is_planned_again_once() {
    let host = Host::synced();
    host.serve(&WITH_A_FOURTH_RANGE);
    // Between our observation and our apply, somebody adds a range to our set.
    host.firewall(0).lock().faults.disturb_before_apply = Some("2001:db8:ff::/48".parse().unwrap());
    let run = host.run(&["sync"]);
    assert_eq!(run.code(), 0, "{:#}", run.json);
    run.says("/warnings/0", "changed since it was observed");
    // The plan reported is the one applied: it removes what the disturbance added.
    assert_eq!(run.json["backends"][0]["removed"][0], "2001:db8:ff::/48");
    assert_eq!(host.held(0).len(), 4);
}

#[test]
fn a_state_that_cannot_be_written_after_apply_is_reported_as_a_partial_change() {
    let host = Host::new(&["a"]);
    // A directory where the source cache goes makes the state write fail after the apply,
    // as a full disk would.
    std::fs::create_dir_all(host.state_dir().join("sources.json")).unwrap();
    let run = host.run(&["sync"]);
    assert_eq!(run.code(), 1);
    assert_eq!(run.json["changed"], true);
    run.message_says("already hold generation 1");
    assert_eq!(host.held(0).len(), 3);
}

#[test]
fn the_shrink_guard_refuses_with_exit_3_and_nothing_changes() {
    let host = Host::synced();
    host.serve(&["192.0.2.0/24"]);
    let run = host.run(&["sync"]);
    assert_eq!(run.code(), 3);
    assert_eq!(run.json["changed"], false);
    assert!(!run.json["refused"].as_array().unwrap().is_empty());
    assert!(
        run.message().starts_with("refused to apply"),
        "{}",
        run.message()
    );
    assert_eq!(host.held(0).len(), 3);
    let forced = host.run(&["sync", "--force"]);
    assert_eq!(forced.code(), 0);
    assert_eq!(host.held(0), ranges(&["192.0.2.0/24"]));
}

#[test]
fn rollback_pins_an_earlier_generation_and_restore_reapplies_it_after_a_wipe() {
    let host = Host::synced();
    host.serve(&WITH_A_FOURTH_RANGE);
    assert_eq!(host.run(&["sync"]).json["generation"], 2);
    let rollback = host.run(&["rollback"]);
    assert_eq!(rollback.code(), 0, "{:#}", rollback.json);
    assert_eq!(rollback.json["generation"], 1);
    assert_eq!(rollback.json["pinned"]["generation"], 1);
    assert_eq!(host.held(0).len(), 3);
    // A firewall reload wipes our parts; restore puts the pinned generation back.
    host.wipe(0);
    let restore = host.run(&["restore"]);
    assert_eq!(restore.code(), 0);
    assert_eq!(restore.json["changed"], true);
    assert_eq!(host.held(0).len(), 3);
    // While pinned, sync keeps generation 1.
    let sync = host.run(&["sync"]);
    assert_eq!(sync.json["generation"], 1);
    sync.warns("pinned to generation 1");
    assert_eq!(host.run(&["unpin"]).json["unpinned"], 1);
    // Unpinned, sync follows upstream again and records it as a new generation.
    let sync = host.run(&["sync"]);
    assert_eq!(sync.json["generation"], 3);
    assert_eq!(host.held(0).len(), 4);
}

#[test]
fn purge_removes_everything_and_reports_it() {
    let host = Host::synced();
    host.firewall(0)
        .lock()
        .foreign_rules
        .push("admin ssh".to_owned());
    let purge = host.run(&["purge"]);
    assert_eq!(purge.code(), 0, "{:#}", purge.json);
    assert_eq!(purge.json["changed"], true);
    assert_eq!(
        purge.json["removed"],
        serde_json::json!([
            format!("memory: the set"),
            format!("memory: 1 accept rule(s)")
        ])
    );
    let firewall = host.firewall(0).lock().clone();
    assert!(firewall.set.is_none() && firewall.rules.is_empty());
    assert_eq!(firewall.foreign_rules, vec!["admin ssh".to_owned()]);
}

#[test]
fn status_reports_drift_and_history_lists_generations() {
    let host = Host::synced();
    host.firewall(0)
        .lock()
        .set
        .as_mut()
        .unwrap()
        .insert("203.0.113.0/24".parse().unwrap());
    let status = host.run(&["status"]);
    assert_eq!(status.code(), 0);
    assert_eq!(status.json["backends"][0]["in_sync"], false);
    assert_eq!(
        status.json["backends"][0]["unexpected"][0],
        "203.0.113.0/24"
    );
    let history = host.run(&["history"]);
    assert_eq!(history.json["generations"][0]["generation"], 1);
    assert_eq!(history.json["generations"][0]["current"], true);
}

#[test]
fn errors_are_one_json_object_with_message_causes_and_hint() {
    let host = Host::new(&["a"]);
    host.serve(&["10.0.0.0/8"]);
    let run = host.run(&["sync"]);
    assert_eq!(run.code(), 1);
    assert_eq!(run.json["command"], "sync");
    assert_eq!(run.json["changed"], false);
    run.message_says("10.0.0.0/8");
}

#[test]
fn after_a_purge_restore_does_nothing_rollback_refuses_and_status_says_so() {
    let host = Host::synced();
    assert_eq!(host.run(&["purge"]).code(), 0);
    let restore = host.run(&["restore", "--backend", "memory"]);
    assert_eq!(restore.code(), 0, "{:#}", restore.json);
    assert_eq!(restore.json["changed"], false);
    restore.says("/skipped", "purged at");
    assert!(
        host.firewall(0).lock().set.is_none(),
        "restore brought back purged rules"
    );
    let rollback = host.run(&["rollback"]);
    assert_eq!(rollback.code(), 1);
    rollback.message_says("purged at");
    let status = host.run(&["status"]);
    assert!(status.json["purged_at"].is_string(), "{:#}", status.json);
    // The next sync brings the rules back and clears the mark.
    assert_eq!(host.run(&["sync"]).code(), 0);
    assert_eq!(host.held(0).len(), 3);
    assert!(host.run(&["status"]).json["purged_at"].is_null());
}

#[test]
fn a_tampered_generation_is_never_applied() {
    use sha2::Digest as _;
    let host = Host::synced();
    // Another user rewrites the generation, digest and all, to open the world.
    let path = host.state_dir().join("generations/00000001.json");
    let mut generation: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let evil = ["0.0.0.0/1", "128.0.0.0/1", "2000::/3"];
    generation["ranges"] = serde_json::json!(evil);
    let lines: String = evil.iter().map(|range| format!("{range}\n")).collect();
    let digest = sha2::Sha256::digest(lines.as_bytes());
    generation["sha256"] = serde_json::json!(
        digest
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    );
    std::fs::write(&path, serde_json::to_vec(&generation).unwrap()).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&path).unwrap().permissions(),
        0o600,
    );
    // A reload wiped the firewall; the boot-time restore must refuse, not open the world.
    host.wipe(0);
    let before = host.firewall(0).lock().clone();
    let restore = host.run(&["restore"]);
    assert_eq!(restore.code(), 1, "{:#}", restore.json);
    restore.message_says("refusing to apply generation 1");
    assert_eq!(*host.firewall(0).lock(), before, "a refused restore wrote");
    // A digest that no longer matches is refused too.
    generation["sha256"] = serde_json::json!("0".repeat(64));
    std::fs::write(&path, serde_json::to_vec(&generation).unwrap()).unwrap();
    let restore = host.run(&["restore"]);
    assert_eq!(restore.code(), 1, "{:#}", restore.json);
    restore.message_says("do not match its sha256");
    assert_eq!(*host.firewall(0).lock(), before, "a refused restore wrote");
}

#[test]
fn a_state_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let host = Host::synced();
    let generations = host.state_dir().join("generations");
    std::fs::set_permissions(&generations, std::fs::Permissions::from_mode(0o777)).unwrap();
    for command in [&["restore"][..], &["sync"], &["status"]] {
        let run = host.run(command);
        assert_eq!(run.code(), 1, "{command:?}: {:#}", run.json);
        run.message_says("writable by everyone");
        run.says("/error/hint", "chmod -R go-w");
    }
    std::fs::set_permissions(&generations, std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = host.state_dir().join("state.json");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o620)).unwrap();
    let run = host.run(&["restore"]);
    assert_eq!(run.code(), 1);
    run.message_says("writable by its group");
}

#[test]
fn a_pin_survives_the_recovery_of_a_corrupt_state_file() {
    let host = Host::synced();
    host.serve(&WITH_A_FOURTH_RANGE);
    assert_eq!(host.run(&["sync"]).code(), 0);
    assert_eq!(host.run(&["rollback"]).code(), 0);
    std::fs::write(
        host.state_dir().join("state.json"),
        b"{\"version\": 1, \"curr",
    )
    .unwrap();
    let sync = host.run(&["sync", "--backend", "memory"]);
    assert_eq!(sync.code(), 0, "{:#}", sync.json);
    assert_eq!(
        sync.json["generation"], 1,
        "the pin was lost: {:#}",
        sync.json
    );
    assert_eq!(sync.json["pinned"]["generation"], 1);
    sync.says("/warnings/0", "keeping the pin on generation 1");
    // history and unpin work on the damaged state too.
    assert_eq!(host.run(&["history"]).code(), 0);
    assert_eq!(host.run(&["unpin"]).json["unpinned"], 1);
}

#[test]
fn a_second_state_directory_does_not_adopt_parts_it_does_not_own() {
    let first = Host::synced();
    let owner = first.firewall(0).lock().owner.clone().unwrap();
    let second = first.second_state_directory();
    second.serve(&["203.0.113.0/24", "198.51.100.0/24", "2001:db8:a::/48"]);
    let before = first.firewall(0).lock().clone();
    let run = second.run(&["sync"]);
    assert_eq!(run.code(), 3, "{:#}", run.json);
    run.message_says(&format!(
        "another cf-allowlist state directory (owner {owner})"
    ));
    assert_eq!(
        *first.firewall(0).lock(),
        before,
        "a refused adoption wrote"
    );
    // status in the second directory warns; --force adopts.
    let status = second.run(&["status", "--backend", "memory"]);
    status.says("/warnings/0", "another cf-allowlist state directory");
    let refused = second.run(&["sync"]);
    assert_eq!(refused.json["refused_by"], serde_json::json!(["owner"]));
    refused.message_says("--force=owner");
    assert_eq!(second.run(&["sync", "--force=shrink"]).code(), 3);
    assert_eq!(second.run(&["sync", "--force"]).code(), 0);
    assert_ne!(
        first.firewall(0).lock().owner.as_deref(),
        Some(owner.as_str())
    );
    // Now the first directory is the stranger, and purge there still removes them, saying so.
    assert_eq!(first.run(&["sync"]).code(), 3);
    let purge = first.run(&["purge"]);
    assert_eq!(purge.code(), 0);
    purge.says(
        "/warnings/0",
        "belonged to another cf-allowlist state directory",
    );
    assert!(first.firewall(0).lock().set.is_none());
}

#[test]
fn restricting_the_ssh_port_is_refused_unless_the_ssh_guard_is_named() {
    let host = Host::new(&["a"]);
    let run = host.run(&["sync", "--restrict", "--ports", "22,80"]);
    assert_eq!(run.code(), 3, "{:#}", run.json);
    assert!(
        run.message()
            .contains("drop SSH on port 22 (the standard SSH port)")
            && run.message().contains("lock yourself out"),
        "{}",
        run.message()
    );
    assert!(host.firewall(0).lock().set.is_none());
    // A dry run says the same.
    assert_eq!(
        host.run(&["sync", "--dry-run", "--restrict", "--ports", "22"])
            .code(),
        3
    );
    assert_eq!(run.json["refused_by"], serde_json::json!(["ssh"]));
    assert!(run.message().contains("[ssh]") && run.message().contains("--force=ssh"));
    run.says("/error/hint", "a bare --force does not override this guard");
    // A bare --force, or another guard's name, does not switch the SSH guard off.
    for force in ["--force", "--force=shrink,owner,reach"] {
        let run = host.run(&["sync", "--restrict", "--ports", "22,80", force]);
        assert_eq!(run.code(), 3, "{force}: {:#}", run.json);
        assert!(host.firewall(0).lock().set.is_none());
    }
    let unknown = host.run(&["sync", "--restrict", "--ports", "22,80", "--force=sssh"]);
    assert_eq!(unknown.code(), 1, "{:#}", unknown.json);
    assert!(unknown.message().contains("unknown guard `sssh`"));
    let named = host.run(&["sync", "--restrict", "--ports", "22,80", "--force=ssh"]);
    assert_eq!(named.code(), 0, "{:#}", named.json);
    // Re-applying what was applied with the override (at boot) is not refused again.
    host.firewall(0).lock().set = None;
    let restore = host.run(&["restore"]);
    assert_eq!(restore.code(), 0, "{:#}", restore.json);
    assert!(host.firewall(0).lock().set.is_some());
    // Not restricting port 22 is fine.
    assert_eq!(host.run(&["sync", "--ports", "22,80"]).code(), 0);
}

#[test]
fn no_restrict_turns_off_what_restrict_turned_on() {
    let host = Host::new(&["a"]);
    assert_eq!(host.run(&["sync", "--restrict"]).code(), 0);
    assert!(host.firewall(0).lock().rules[0].restrict);
    assert_eq!(host.run(&["sync", "--restrict", "--no-restrict"]).code(), 0);
    assert!(!host.firewall(0).lock().rules[0].restrict);
}

/// The findings of one doctor check in a doctor run's JSON.
fn doctor_findings(run: &Ran, check: &str) -> Vec<Value> {
    run.json["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks: {:#}", run.json))
        .iter()
        .filter(|finding| finding["check"] == check)
        .cloned()
        .collect()
}

/// The findings of one doctor check about one subject.
fn doctor_findings_about(run: &Ran, check: &str, subject: &str) -> Vec<Value> {
    let mut findings = doctor_findings(run, check);
    findings.retain(|finding| finding["subject"] == subject);
    findings
}

/// Asserts `value[key]` is a string that contains `text`.
#[track_caller]
fn field_says(value: &Value, key: &str, text: &str) {
    let field = value[key].as_str().unwrap_or_default();
    assert!(field.contains(text), "{value:#}");
}

/// Asserts `value[key]` is a string that starts with `text`.
#[track_caller]
fn field_begins_with(value: &Value, key: &str, text: &str) {
    let field = value[key].as_str().unwrap_or_default();
    assert!(field.starts_with(text), "{value:#}");
}

#[test]
fn doctor_names_a_range_a_backend_no_longer_allows() {
    let host = Host::synced();
    let healthy = host.run(&["doctor"]);
    let coverage = doctor_findings(&healthy, "coverage");
    assert_eq!(coverage.len(), 1, "{:#}", healthy.json);
    assert_eq!(coverage[0]["level"], "ok");
    field_says(
        &coverage[0],
        "evidence",
        "allows every listed range (2 IPv4, 1 IPv6)",
    );
    let state = doctor_findings(&healthy, "state");
    assert!(
        state.iter().all(|finding| finding["level"] == "ok"),
        "{state:#?}"
    );

    // Somebody replaced the set by hand: one listed range is gone, another is split in two
    // halves, which still covers it.
    host.firewall(0).lock().set = Some(ranges(&[
        "192.0.2.0/25",
        "192.0.2.128/25",
        "2001:db8:a::/48",
    ]));
    let broken = host.run(&["doctor"]);
    assert_eq!(broken.code(), 2, "{:#}", broken.json);
    assert_eq!(broken.json["status"], "critical");
    let coverage = doctor_findings(&broken, "coverage");
    assert_eq!(coverage.len(), 1, "{coverage:#?}");
    assert_eq!(coverage[0]["level"], "problem");
    assert_eq!(
        coverage[0]["evidence"],
        "does not allow 1 of 3 listed ranges: 198.51.100.0/24"
    );
    field_says(&coverage[0], "hint", "cf-allowlist restore");
    // Read-only: the firewall is as it was left.
    assert_eq!(host.held(0).len(), 3);
}

#[test]
fn doctor_warns_about_a_pin_and_a_missing_sync() {
    let host = Host::new(&["a"]);
    let never = host.run(&["doctor"]);
    let state = doctor_findings(&never, "state");
    assert!(
        state.iter().any(|finding| finding["level"] == "warning"
            && finding["evidence"] == "no successful sync yet"),
        "{state:#?}"
    );
    assert_eq!(doctor_findings(&never, "coverage")[0]["subject"], "list");

    assert_eq!(host.run(&["sync"]).code(), 0);
    host.serve(&WITH_A_FOURTH_RANGE);
    assert_eq!(host.run(&["sync"]).code(), 0);
    assert_eq!(host.run(&["rollback"]).code(), 0);
    let pinned = host.run(&["doctor"]);
    let pin = doctor_findings_about(&pinned, "state", "pin");
    assert_eq!(pin.len(), 1, "{:#}", pinned.json);
    assert_eq!(pin[0]["level"], "warning");
    field_begins_with(&pin[0], "evidence", "pinned to generation 1");
}

#[test]
fn doctor_is_unknown_when_it_cannot_run() {
    use std::os::unix::fs::PermissionsExt;
    let host = Host::synced();
    let generations = host.state_dir().join("generations");
    std::fs::set_permissions(&generations, std::fs::Permissions::from_mode(0o777)).unwrap();
    let run = host.run(&["doctor"]);
    assert_eq!(run.code(), 3, "{:#}", run.json);
    assert_eq!(run.json["status"], "unknown");
    run.begins_with("/summary", "doctor could not run: ");
    assert!(run.message().contains("writable by everyone"));
}

/// Runs the whole command line, as the binary does (metrics are written by `run`).
fn run_whole(host: &Host, args: &[&str]) -> i32 {
    crate::run(host.argv(&["--quiet"], args)).code()
}

/// Asserts each metric in `expected` has its value in `values`.
#[track_caller]
fn assert_metrics(values: &std::collections::BTreeMap<String, f64>, expected: &[(&str, f64)]) {
    for (name, value) in expected {
        assert_eq!(values.get(*name), Some(value), "{name} in {values:#?}");
    }
}

#[test]
fn metrics_keep_the_last_success_through_a_refusal_and_a_failure() {
    let host = Host::new(&["a"]);
    let metrics = host.dir.path().join("cf-allowlist.prom");
    let flag = metrics.display().to_string();
    // Serves `list`, syncs with the metrics file, expects `code`; returns the metrics.
    let sync = |list: &[&str], code: i32| {
        host.serve(list);
        assert_eq!(run_whole(&host, &["sync", "--metrics-file", &flag]), code);
        crate::metrics::read_values(&metrics)
    };
    let first = sync(&FIRST_LIST, 0);
    let success = first["cf_allowlist_last_success_timestamp_seconds"];
    assert!(success > 0.0);
    let after_success = [
        ("cf_allowlist_last_run_success", 1.0),
        ("cf_allowlist_generation", 1.0),
        ("cf_allowlist_refusals_total", 0.0),
    ];
    assert_metrics(&first, &after_success);

    // The shrink guard refuses: counted, and the last success stays.
    let refused = sync(&["192.0.2.0/24"], 3);
    let after_refusal = [
        ("cf_allowlist_last_success_timestamp_seconds", success),
        ("cf_allowlist_last_run_exit_code", 3.0),
        ("cf_allowlist_refusals_total", 1.0),
        (crate::metrics::REFUSALS_SINCE_SUCCESS, 1.0),
        ("cf_allowlist_generation", 1.0),
    ];
    assert_metrics(&refused, &after_refusal);
    // doctor reads the count from the file.
    let doctor = host.run(&["doctor", "--metrics-file", &flag]);
    let refusals = doctor_findings_about(&doctor, "state", "refusals");
    assert_eq!(refusals[0]["level"], "warning", "{refusals:#?}");

    // A source that fails validation: an error, and still the same last success.
    let failed = sync(&["10.0.0.0/8"], 1);
    let after_failure = [
        ("cf_allowlist_last_success_timestamp_seconds", success),
        ("cf_allowlist_last_run_success", 0.0),
        ("cf_allowlist_refusals_total", 1.0),
    ];
    assert_metrics(&failed, &after_failure);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("cf_allowlist_backend_in_sync{backend=\"memory ("),
        "{text}"
    );

    // A dry run writes nothing; the next success resets the refusals since success.
    let before = std::fs::read(&metrics).unwrap();
    assert_eq!(
        run_whole(&host, &["sync", "--dry-run", "--metrics-file", &flag]),
        1
    );
    assert_eq!(std::fs::read(&metrics).unwrap(), before);
    let again = sync(&FIRST_LIST, 0);
    assert!(again["cf_allowlist_last_success_timestamp_seconds"] >= success);
    assert_metrics(
        &again,
        &[
            (crate::metrics::REFUSALS_SINCE_SUCCESS, 0.0),
            ("cf_allowlist_refusals_total", 1.0),
        ],
    );
}

#[test]
fn a_sync_whose_config_does_not_parse_still_writes_its_metrics_file() {
    // The config is read once per run; a failed read still reaches the metrics file given
    // on the command line.
    let host = Host::new(&["a"]);
    let metrics = host.dir.path().join("cf-allowlist.prom");
    let flag = metrics.display().to_string();
    assert_eq!(run_whole(&host, &["sync", "--metrics-file", &flag]), 0);
    std::fs::write(host.dir.path().join("config.toml"), "[[backend]\n").unwrap();
    assert_ne!(run_whole(&host, &["sync", "--metrics-file", &flag]), 0);
    assert_metrics(
        &crate::metrics::read_values(&metrics),
        &[("cf_allowlist_last_run_success", 0.0)],
    );
}

#[test]
fn doctor_with_fetch_checks_against_the_live_list() {
    let host = Host::synced();
    host.serve(&WITH_A_FOURTH_RANGE);
    let snapshot = host.run(&["doctor"]);
    assert_eq!(doctor_findings(&snapshot, "coverage")[0]["level"], "ok");
    let fetched = host.run(&["doctor", "--fetch"]);
    let coverage = doctor_findings(&fetched, "coverage");
    assert_eq!(coverage[0]["level"], "problem", "{coverage:#?}");
    assert_eq!(
        coverage[0]["evidence"],
        "does not allow 1 of 4 listed ranges: 203.0.113.0/24"
    );
}

#[test]
fn ten_concurrent_first_runs_leave_one_owner_that_the_rules_carry() {
    // Cron plus an admin, or a fleet rollout with a retry: several first runs at once on a
    // fresh state directory. Every round must end with the `owner` file naming the id in the
    // rules, so that later syncs adopt their own parts.
    for round in 0..12 {
        let host = Host::new(&["a"]);
        std::thread::scope(|scope| {
            for _ in 0..10 {
                scope.spawn(|| host.run(&["sync"]));
            }
        });
        let owner_file: String =
            serde_json::from_str(&std::fs::read_to_string(host.state_dir().join("owner")).unwrap())
                .unwrap();
        let in_rules = host.firewall(0).lock().owner.clone();
        assert_eq!(
            in_rules.as_deref(),
            Some(owner_file.as_str()),
            "round {round}: the owner file differs from the rules' owner"
        );
        let later = host.run(&["sync"]);
        assert_eq!(later.code(), 0, "round {round}: {:#}", later.json);
    }
}

/// Issue 17, scenario 6: a run refused by two guards names both; a bare `--force` (adopting
/// the parts) leaves the SSH guard standing; naming both lets it through.
#[test]
fn adopting_parts_with_a_bare_force_does_not_switch_off_the_ssh_guard() {
    let first = Host::synced();
    let second = first.second_state_directory();
    let restrict_ssh = ["sync", "--restrict", "--ports", "22,80"];
    let run = second.run(&restrict_ssh);
    assert_eq!(run.code(), 3, "{:#}", run.json);
    assert_eq!(run.json["refused_by"], serde_json::json!(["owner", "ssh"]));
    let hint = run.json["error"]["hint"].as_str().unwrap();
    assert!(
        hint.contains("owner: ") && hint.contains("ssh: ") && hint.contains("--force=ssh"),
        "{hint}"
    );
    let bare = second.run(&[&restrict_ssh[..], &["--force"]].concat());
    assert_eq!(bare.code(), 3, "{:#}", bare.json);
    assert_eq!(bare.json["refused_by"], serde_json::json!(["ssh"]));
    let only_owner = second.run(&[&restrict_ssh[..], &["--force=owner"]].concat());
    assert_eq!(only_owner.json["refused_by"], serde_json::json!(["ssh"]));
    let both = second.run(&[&restrict_ssh[..], &["--force=owner,ssh"]].concat());
    assert_eq!(both.code(), 0, "{:#}", both.json);
    both.warns("--force=ssh overrides");
}
