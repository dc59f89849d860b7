//! `doctor`: can Cloudflare really reach this origin? Each check reports findings (ok,
//! warning, problem) with one line of evidence and a hint; the report's verdict is the worst
//! finding, and the exit code follows the monitoring-plugin convention (see
//! [`crate::report::DoctorReport`]).
//!
//! Read-only, like `status`: no lock, no writes, no firewall tool but the backends' own
//! `observe` and the shadowing analysis (`cf-allowlist-netfilter`, shared with sync and
//! status, not written twice). The host checks read `/proc` ([`crate::probe::sockets`]) and
//! handshake with the origin's own listener ([`crate::probe::tls`]).
//!
//! Findings are built by small functions of what was read, so the core tests judge them
//! without a host; [`run`] only gathers.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cf_allowlist_backend::Ranges;
use ipnet::IpNet;
use iprange::IpRange;

use crate::backends::BackendSpec;
use crate::error::Error;
use crate::metrics;
use crate::plan::BackendPlan;
use crate::printer::Printer;
use crate::probe::{sockets, tls};
use crate::report::{DoctorReport, Finding, Level};
use crate::settings::{DoctorSettings, Settings};
use crate::state::StateDir;
use crate::validate::counts;

/// Past this age the last successful sync is a problem, whatever `max_age` says.
const STALE_PROBLEM: Duration = Duration::from_secs(24 * 3600);
/// Conntrack usage (percent) above which new connections may soon be dropped.
const CONNTRACK_WARNING: f64 = 80.0;
/// Conntrack usage (percent) above which new connections are about to be dropped.
const CONNTRACK_PROBLEM: f64 = 95.0;

/// Runs every check. `chosen` overrides the backends (`--backend`); else the configured
/// ones, else those of the last sync.
pub fn run(
    settings: &Settings,
    doctor: &DoctorSettings,
    chosen: Option<Vec<BackendSpec>>,
    printer: &Printer,
) -> Result<DoctorReport, Error> {
    let state_dir = StateDir::new(&settings.state_dir);
    let loaded = state_dir.load()?;
    for message in &loaded.recovered {
        printer.warn(message.clone());
    }
    let (state, current) = (loaded.state, loaded.current);
    let now = SystemTime::now();
    let mut findings = Vec::new();

    // The state: the last successful sync, the pin, refusals since.
    let last_sync = state
        .last_sync
        .as_ref()
        .map(|last| (last.time.clone(), humantime::parse_rfc3339(&last.time).ok()));
    findings.push(sync_age(last_sync, now, doctor.max_age));
    if let Some(pin) = &state.pinned {
        findings.push(
            Finding::warning(
                "state",
                "pin",
                format!(
                    "pinned to generation {} since {}: upstream changes are not followed",
                    pin.generation, pin.since
                ),
            )
            .hint("`cf-allowlist unpin` once the reason for the rollback is gone"),
        );
    }
    findings.push(refusals(doctor.metrics_file.as_deref()));

    // The list to check against.
    let target = if doctor.fetch {
        let listed = crate::commands::sync::fetch_all(
            settings,
            &state_dir.read_source_cache(),
            None,
            printer,
        )?;
        Some(listed.ranges)
    } else {
        current.as_ref().map(|generation| generation.ranges.clone())
    };
    let backends = chosen
        .filter(|chosen| !chosen.is_empty())
        .or_else(|| (!settings.backends.is_empty()).then(|| settings.backends.clone()))
        .or_else(|| state.last_sync.as_ref().map(|last| last.backends.clone()))
        .unwrap_or_default();

    // The proof of the last verified sync, if the generation has not moved since: doctor
    // still reads and judges the whole firewall itself, but our own sets' elements are
    // proven to be the current generation's, and need not be dumped from the kernel again
    // (O(n²) there: seconds at 100,000).
    crate::proof::vouch(&state_dir, &state, current.as_ref(), &backends);

    // Coverage: what each backend holds covers the list.
    if backends.is_empty() {
        findings.push(
            Finding::problem(
                "coverage",
                "backends",
                "no backend is configured and none was synced",
            )
            .hint(
                "add a [[backend]] to the config file, or run `cf-allowlist sync --backend KIND`",
            ),
        );
    }
    match &target {
        None => findings.push(
            Finding::warning("coverage", "list", "no current generation to check against").hint(
                "run `cf-allowlist sync`, or `doctor --fetch` to check against the live list",
            ),
        ),
        // Coverage and shadowing: the judgement every command uses, one statement each.
        Some(target) => findings.extend(judged_findings(
            &backends,
            target,
            state.owner.as_deref(),
            &state.written,
        )),
    }

    // Something listens on every managed port, and TLS ports present a usable certificate.
    let ports: BTreeSet<u16> = backends
        .iter()
        .flat_map(|spec| spec.policy().ports.iter().copied())
        .collect();
    if !ports.is_empty() {
        match sockets::read_listeners() {
            Ok(listening) => {
                // Read only when a port has no listener: a DNAT (Docker's `-p`) sends it on.
                let mut published = None;
                for port in &ports {
                    let here: Vec<SocketAddr> = listening
                        .iter()
                        .filter(|address| address.port() == *port)
                        .copied()
                        .collect();
                    let mut finding = listener(*port, &here);
                    if here.is_empty() {
                        finding = published_port(*port, published.get_or_insert_with(dnat_ports))
                            .unwrap_or(finding);
                    }
                    let listens = finding.level == Level::Ok;
                    findings.push(finding);
                    if listens && doctor.tls_ports.contains(port) {
                        findings.extend(tls_check(*port, &here, doctor, now));
                    }
                }
            }
            Err(error) => findings.push(cannot_read(
                "listener",
                "socket tables",
                "/proc/thread-self/net/tcp",
                error,
            )),
        }
    }

    // Headroom: the listen queues and the conntrack table.
    findings.push(match sockets::read_listen_queue() {
        Ok(queue) => listen_queue(queue),
        Err(error) => cannot_read(
            "headroom",
            "listen queues",
            "/proc/thread-self/net/netstat",
            error,
        ),
    });
    findings.push(match sockets::read_conntrack() {
        Ok(table) => conntrack(table),
        Err(error) => cannot_read("headroom", "conntrack", "/proc/sys/net/netfilter", error),
    });
    Ok(DoctorReport::of(findings))
}

/// The age of the last successful sync: a warning past `max_age` (or with none yet), a
/// problem past a day.
pub fn sync_age(
    last: Option<(String, Option<SystemTime>)>,
    now: SystemTime,
    max_age: Duration,
) -> Finding {
    let Some((text, time)) = last else {
        return Finding::warning("state", "last sync", "no successful sync yet")
            .hint("run `cf-allowlist sync` and enable cf-allowlist-sync.timer");
    };
    let Some(time) = time else {
        return Finding::warning(
            "state",
            "last sync",
            format!("its time {text:?} cannot be read"),
        );
    };
    let age = now.duration_since(time).unwrap_or_default();
    let shown = humantime::format_duration(Duration::from_secs(age.as_secs()));
    let evidence = format!("{shown} ago ({text})");
    let hint =
        "check `systemctl status cf-allowlist-sync.timer` and `journalctl -u cf-allowlist-sync`";
    if age > STALE_PROBLEM {
        Finding::problem("state", "last sync", evidence).hint(hint)
    } else if age > max_age {
        Finding::warning(
            "state",
            "last sync",
            format!(
                "{evidence}, older than {}",
                humantime::format_duration(max_age)
            ),
        )
        .hint(hint)
    } else {
        Finding::ok("state", "last sync", evidence)
    }
}

/// Refusals by a safety guard since the last success, from the metrics file (a refused run
/// leaves the state directory untouched, so the metrics file is where they are counted).
fn refusals(metrics_file: Option<&std::path::Path>) -> Finding {
    let Some(path) = metrics_file else {
        return Finding::ok(
            "state",
            "refusals",
            "not counted: no metrics_file is configured",
        );
    };
    let previous = metrics::read_values(path);
    match previous.get(metrics::REFUSALS_SINCE_SUCCESS) {
        Some(count) if *count > 0.0 => Finding::warning(
            "state",
            "refusals",
            format!(
                "{count} run(s) refused by a safety guard since the last successful sync ({})",
                path.display()
            ),
        )
        .hint("run `cf-allowlist sync --dry-run` to see which guard refused and why; `--force=NAME` overrides that guard only"),
        Some(_) => Finding::ok(
            "state",
            "refusals",
            "none since the last successful sync",
        ),
        None => Finding::ok(
            "state",
            "refusals",
            format!("none recorded ({} holds no count yet)", path.display()),
        ),
    }
}

/// Coverage and shadowing from the one judgement ([`crate::judgement::judge`]): per backend,
/// one coverage statement (what it holds against the list, its structure) and its verdict on
/// the firewall it leaves; the judgement's warnings (doubts, Docker) as warnings.
fn judged_findings(
    backends: &[BackendSpec],
    target: &Ranges,
    owner: Option<&str>,
    written: &[BackendSpec],
) -> Vec<Finding> {
    let judged = match crate::judgement::judge(&crate::judgement::Request::looking(
        backends,
        vec![target; backends.len()],
        owner,
        written,
    )) {
        Ok(judged) => judged,
        Err(error) => {
            return vec![
                Finding::problem("coverage", "backends", format!("cannot read them: {error}"))
                    .hint(error.hint().unwrap_or_default()),
            ];
        }
    };
    let mut findings = Vec::new();
    for plan in &judged.backends {
        findings.extend(coverage(plan));
        findings.extend(shadowing(plan));
    }
    findings.extend(
        judged
            .warnings
            .iter()
            .map(|warning| Finding::warning("shadowing", "firewall", warning.clone())),
    );
    findings
}

/// What a backend holds against the list, in one statement: every range must be inside the
/// union of what it allows, and its structure intact.
pub fn coverage(plan: &BackendPlan) -> Vec<Finding> {
    let subject = plan.spec.describe();
    let target = &plan.change.target;
    let held: Ranges = plan
        .change
        .unchanged
        .iter()
        .chain(plan.change.remove.iter())
        .copied()
        .collect();
    let uncovered = uncovered(target, &held);
    let mut findings = Vec::new();
    let refused: Vec<&str> = plan
        .change
        .repairs
        .iter()
        .filter(|repair| crate::report::refused_repair(repair))
        .map(|repair| repair.split(" (").next().unwrap_or(repair))
        .collect();
    let restore = if refused.is_empty() {
        "`cf-allowlist restore` re-applies the current generation (so does the next sync)"
            .to_owned()
    } else {
        format!(
            "neither `restore` nor a sync will {} with these options: change the backend's options (or do it by hand)",
            refused.join(", ")
        )
    };
    let finding = match (uncovered.is_empty(), plan.change.repairs.is_empty()) {
        (true, true) => Finding::ok(
            "coverage",
            subject.clone(),
            format!("allows every listed range ({})", counts(target)),
        ),
        (true, false) => Finding::problem(
            "coverage",
            subject.clone(),
            format!(
                "holds every listed range, but its rules are damaged: {}",
                plan.change.repairs.join("; ")
            ),
        )
        .hint(restore.clone()),
        (false, _) => {
            let shown: Vec<String> = uncovered.iter().map(ToString::to_string).collect();
            let mut evidence = format!(
                "does not allow {} of {} listed ranges: {}",
                uncovered.len(),
                target.len(),
                shown.join(", ")
            );
            if !plan.change.repairs.is_empty() {
                evidence.push_str(&format!(
                    "; its rules are damaged: {}",
                    plan.change.repairs.join("; ")
                ));
            }
            Finding::problem("coverage", subject.clone(), evidence).hint(restore)
        }
    };
    // One statement per backend: what the backend itself warns about (ufw switched off, rules
    // in both iptables variants) is part of it, never a second, contradicting line.
    let finding = match (finding.level, plan.warnings.is_empty()) {
        (_, true) => finding,
        (Level::Ok, false) => Finding::warning(
            "coverage",
            subject.clone(),
            format!(
                "holds every listed range ({}), but {}",
                counts(target),
                plan.warnings.join("; ")
            ),
        ),
        (_, false) => Finding {
            evidence: format!("{}; {}", finding.evidence, plan.warnings.join("; ")),
            ..finding
        },
    };
    findings.push(finding);
    findings
}

/// A backend's verdict on the firewall it leaves: each blocker a problem, else ok when the
/// analysis is sure (its doubts are the judgement's warnings).
fn shadowing(plan: &BackendPlan) -> Vec<Finding> {
    if !plan.spec.filters_host_input() {
        return Vec::new();
    }
    let subject = plan.spec.describe();
    let mut findings: Vec<Finding> = plan
        .blockers
        .iter()
        .map(|blocker| {
            let (evidence, hint) = blocker
                .split_once(": ")
                .map_or((blocker.as_str(), ""), |(evidence, hint)| (evidence, hint));
            Finding::problem("shadowing", subject.clone(), evidence).hint(hint)
        })
        .collect();
    if findings.is_empty() && plan.effective == Some(true) {
        findings.push(Finding::ok(
            "shadowing",
            subject,
            "no other table, chain or rule drops the listed ranges on its ports",
        ));
    }
    findings
}

/// The ranges of `target` that no union of `held` networks covers (`iprange` merges the held
/// networks, so a listed /24 held as two /25s counts as covered).
pub fn uncovered(target: &Ranges, held: &Ranges) -> Vec<IpNet> {
    let mut v4: IpRange<ipnet::Ipv4Net> = IpRange::new();
    let mut v6: IpRange<ipnet::Ipv6Net> = IpRange::new();
    for network in held.iter() {
        match network {
            IpNet::V4(net) => {
                v4.add(*net);
            }
            IpNet::V6(net) => {
                v6.add(*net);
            }
        }
    }
    v4.simplify();
    v6.simplify();
    target
        .iter()
        .filter(|network| match network {
            IpNet::V4(net) => !v4.contains(net),
            IpNet::V6(net) => !v6.contains(net),
        })
        .copied()
        .collect()
}

/// Whether something outside loopback listens on `port`, given the listeners on that port.
pub fn listener(port: u16, here: &[SocketAddr]) -> Finding {
    let subject = format!("tcp {port}");
    let reachable: Vec<String> = here
        .iter()
        .filter(|address| sockets::reachable_from_outside(address.ip()))
        .map(ToString::to_string)
        .collect();
    if !reachable.is_empty() {
        return Finding::ok(
            "listener",
            subject,
            format!("listening on {}", reachable.join(", ")),
        );
    }
    let evidence = if here.is_empty() {
        format!("nothing listens on port {port} (IPv4 or IPv6)")
    } else {
        let shown: Vec<String> = here.iter().map(ToString::to_string).collect();
        format!(
            "only loopback listens on port {port} ({}): Cloudflare cannot connect",
            shown.join(", ")
        )
    };
    Finding::problem("listener", subject, evidence).hint(
        "start the web server, or bind it to 0.0.0.0/:: (or the public address); \
         or remove the port from the managed ports",
    )
}

/// The ports a DNAT sends elsewhere (none when they cannot be read: the finding stays
/// "nothing listens").
fn dnat_ports() -> Vec<std::ops::RangeInclusive<u16>> {
    #[cfg(feature = "iptables")]
    return cf_allowlist_iptables::published_ports().unwrap_or_default();
    #[cfg(not(feature = "iptables"))]
    Vec::new()
}

/// The listener finding for a port nothing listens on that a DNAT publishes (the listener is
/// where the DNAT leads, a container for Docker's `-p`), or `None` if no DNAT names it.
fn published_port(port: u16, published: &[std::ops::RangeInclusive<u16>]) -> Option<Finding> {
    published
        .iter()
        .any(|range| range.contains(&port))
        .then(|| {
            Finding::ok(
                "listener",
                format!("tcp {port}"),
                format!(
                    "published: a DNAT in the nat table forwards port {port} (Docker's `-p`, for instance), so its listener is where the DNAT leads, not on this host"
                ),
            )
        })
}

/// Where to reach the origin's own listener on this host: a wildcard listener through
/// loopback, a specific one at its address.
fn probe_addresses(here: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut addresses = Vec::new();
    for listening in here {
        let ip = match listening.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            // A `::` socket usually takes IPv4 too; loopback over IPv4 first, then IPv6.
            IpAddr::V6(v6) if v6.is_unspecified() => {
                addresses.push(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    listening.port(),
                ));
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            }
            other => other,
        };
        addresses.push(SocketAddr::new(ip, listening.port()));
    }
    let mut seen = BTreeSet::new();
    addresses.retain(|address| seen.insert(*address));
    addresses
}

/// A handshake with the listener on a TLS port, judged for Cloudflare's "Full" and "Full
/// (strict)" modes.
fn tls_check(
    port: u16,
    here: &[SocketAddr],
    doctor: &DoctorSettings,
    now: SystemTime,
) -> Vec<Finding> {
    let subject = format!("tcp {port}");
    let Some(name) = &doctor.server_name else {
        return vec![Finding::ok(
            "tls",
            subject,
            "not checked: no --server-name (or [doctor] server_name) to ask for",
        )];
    };
    let mut last_error = None;
    for address in probe_addresses(here) {
        match tls::probe(address, name) {
            Ok(certificate) => {
                return certificate_findings(&subject, name, &certificate, doctor, now);
            }
            Err(error @ tls::ProbeError::Connect { .. }) => last_error = Some(error),
            Err(error) => {
                last_error = Some(error);
                break;
            }
        }
    }
    let error = last_error.map_or("no address to connect to".to_owned(), |error| {
        crate::printer::chain(&error)
    });
    vec![
        Finding::problem("tls", subject, error).hint(
            "Cloudflare's Full and Full (strict) modes need a working TLS server on this port",
        ),
    ]
}

/// What a certificate means for Cloudflare.
pub fn certificate_findings(
    subject: &str,
    name: &str,
    certificate: &tls::Certificate,
    doctor: &DoctorSettings,
    now: SystemTime,
) -> Vec<Finding> {
    let now_seconds = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64);
    let until = humantime::format_rfc3339_seconds(
        UNIX_EPOCH + Duration::from_secs(certificate.not_after.max(0) as u64),
    );
    let subject = format!("{subject} ({name})");
    let mut findings = Vec::new();
    let days_left = (certificate.not_after - now_seconds).div_euclid(86_400);
    if certificate.not_after < now_seconds {
        findings.push(
            Finding::problem(
                "tls",
                subject.clone(),
                format!("the certificate expired on {until}"),
            )
            .hint("renew it: Cloudflare refuses an expired origin certificate in Full and Full (strict) mode"),
        );
    } else if certificate.not_before > now_seconds {
        findings.push(Finding::problem(
            "tls",
            subject.clone(),
            format!(
                "the certificate is not valid yet (from {})",
                humantime::format_rfc3339_seconds(
                    UNIX_EPOCH + Duration::from_secs(certificate.not_before.max(0) as u64)
                )
            ),
        ));
    } else if days_left < doctor.cert_warn_days as i64 {
        findings.push(
            Finding::warning(
                "tls",
                subject.clone(),
                format!("the certificate expires in {days_left} days ({until})"),
            )
            .hint("renew it before it expires"),
        );
    }
    if let Some(error) = &certificate.name_error {
        findings.push(
            Finding::problem(
                "tls",
                subject.clone(),
                format!(
                    "the certificate is not valid for {name} (it names {}): {error}",
                    certificate.names.join(", ")
                ),
            )
            .hint("serve a certificate for this name (check the server's SNI configuration)"),
        );
    }
    if let Some(error) = &certificate.trust_error {
        let what = if certificate.self_signed {
            "the certificate is self-signed".to_owned()
        } else {
            format!(
                "no public root trusts the certificate (issuer {}; {error})",
                certificate.issuer
            )
        };
        let level = if doctor.strict {
            Level::Problem
        } else {
            Level::Warning
        };
        findings.push(
            Finding::new(
                "tls",
                level,
                subject.clone(),
                format!("{what}: fine for Cloudflare's Full mode, fatal for Full (strict)"),
            )
            .hint(
                "for Full (strict) use a publicly trusted certificate or a Cloudflare Origin CA \
                 certificate (which Cloudflare trusts though public roots do not)",
            ),
        );
    }
    if findings.is_empty() {
        findings.push(Finding::ok(
            "tls",
            subject,
            format!(
                "certificate for {} from {}, valid until {until} ({days_left} days), trusted by public roots",
                certificate.names.join(", "),
                certificate.issuer
            ),
        ));
    }
    findings
}

/// A warning that `check` could not read `path` for `subject`.
fn cannot_read(
    check: &'static str,
    subject: &str,
    path: &str,
    error: impl std::fmt::Display,
) -> Finding {
    let evidence = format!("cannot read {path}: {error}");
    Finding::warning(check, subject, evidence)
}

/// Listen-queue overflows: connections the kernel dropped because an accept queue was full.
pub fn listen_queue(queue: sockets::ListenQueue) -> Finding {
    let evidence = format!(
        "ListenOverflows {}, ListenDrops {} since boot",
        queue.overflows, queue.drops
    );
    if queue.overflows > 0 || queue.drops > 0 {
        Finding::warning("headroom", "listen queues", evidence).hint(
            "a listener's accept queue overflowed: raise the server's backlog and \
             net.core.somaxconn, or add workers",
        )
    } else {
        Finding::ok("headroom", "listen queues", evidence)
    }
}

/// Conntrack usage: new connections are dropped once the table is full.
pub fn conntrack(table: Option<sockets::Conntrack>) -> Finding {
    let Some(table) = table else {
        return Finding::ok(
            "headroom",
            "conntrack",
            "connection tracking is not loaded in this network namespace",
        );
    };
    let percent = table.percent();
    let evidence = format!(
        "{} of {} entries in use ({percent:.0}%)",
        table.count, table.max
    );
    let level = if percent > CONNTRACK_PROBLEM {
        Level::Problem
    } else if percent > CONNTRACK_WARNING {
        Level::Warning
    } else {
        Level::Ok
    };
    let finding = Finding::new("headroom", level, "conntrack", evidence);
    if level == Level::Ok {
        finding
    } else {
        finding.hint(
            "new connections are dropped when the table is full: raise net.netfilter.nf_conntrack_max",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ranges;

    fn settings(strict: bool) -> DoctorSettings {
        DoctorSettings {
            fetch: false,
            server_name: Some("origin.example".into()),
            tls_ports: vec![443],
            strict,
            cert_warn_days: 14,
            max_age: Duration::from_secs(2 * 3600),
            metrics_file: None,
        }
    }

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;

    fn certificate() -> tls::Certificate {
        tls::Certificate {
            subject: "CN=origin.example".into(),
            issuer: "CN=Example CA".into(),
            names: vec!["origin.example".into()],
            not_before: NOW - 30 * DAY,
            not_after: NOW + 60 * DAY,
            self_signed: false,
            name_error: None,
            trust_error: None,
        }
    }

    fn judge(certificate: &tls::Certificate, strict: bool) -> Vec<(Level, String)> {
        certificate_findings(
            "tcp 443",
            "origin.example",
            certificate,
            &settings(strict),
            UNIX_EPOCH + Duration::from_secs(NOW as u64),
        )
        .into_iter()
        .map(|finding| (finding.level, finding.evidence))
        .collect()
    }

    #[test]
    fn a_union_of_held_networks_covers_a_listed_range() {
        let held = ranges(&["192.0.2.0/25", "192.0.2.128/25", "2001:db8::/32"]);
        let target = ranges(&["192.0.2.0/24", "198.51.100.0/24", "2001:db8:a::/48"]);
        assert_eq!(
            uncovered(&target, &held),
            vec!["198.51.100.0/24".parse::<IpNet>().unwrap()]
        );
        assert!(uncovered(&target, &target).is_empty());
        assert_eq!(uncovered(&target, &Ranges::new()).len(), 3);
    }

    #[test]
    fn the_last_sync_is_ok_then_a_warning_then_a_problem() {
        let now = UNIX_EPOCH + Duration::from_secs(NOW as u64);
        let ago = |hours: u64| {
            Some((
                "then".to_owned(),
                Some(now - Duration::from_secs(hours * 3600)),
            ))
        };
        let max = Duration::from_secs(2 * 3600);
        assert_eq!(sync_age(ago(1), now, max).level, Level::Ok);
        assert_eq!(sync_age(ago(3), now, max).level, Level::Warning);
        assert!(
            sync_age(ago(3), now, max)
                .evidence
                .contains("older than 2h")
        );
        assert_eq!(sync_age(ago(25), now, max).level, Level::Problem);
        assert_eq!(sync_age(None, now, max).level, Level::Warning);
    }

    #[test]
    fn a_good_certificate_is_one_ok_finding() {
        let found = judge(&certificate(), true);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, Level::Ok);
        assert!(found[0].1.contains("(60 days)"), "{found:?}");
    }

    #[test]
    fn expiry_warns_within_the_warning_days_and_is_a_problem_once_past() {
        let mut soon = certificate();
        soon.not_after = NOW + 3 * DAY + 10;
        assert_eq!(judge(&soon, false)[0].0, Level::Warning);
        assert!(judge(&soon, false)[0].1.contains("expires in 3 days"));
        let mut expired = certificate();
        expired.not_after = NOW - DAY;
        assert_eq!(judge(&expired, false)[0].0, Level::Problem);
        assert!(judge(&expired, false)[0].1.contains("expired on"));
    }

    #[test]
    fn a_self_signed_certificate_is_fine_for_full_and_fatal_for_full_strict() {
        let mut own = certificate();
        own.self_signed = true;
        own.trust_error = Some("invalid peer certificate: UnknownIssuer".into());
        let full = judge(&own, false);
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].0, Level::Warning);
        assert!(
            full[0]
                .1
                .contains("self-signed: fine for Cloudflare's Full mode, fatal for Full (strict)")
        );
        assert_eq!(judge(&own, true)[0].0, Level::Problem);
    }

    #[test]
    fn a_name_mismatch_is_a_problem_whatever_the_mode() {
        let mut other = certificate();
        other.names = vec!["other.example".into()];
        other.name_error = Some("certificate not valid for name".into());
        let found = judge(&other, false);
        assert_eq!(found[0].0, Level::Problem);
        assert!(
            found[0]
                .1
                .contains("not valid for origin.example (it names other.example)")
        );
    }

    #[test]
    fn only_a_listener_outside_loopback_counts() {
        let addresses = |list: &[&str]| -> Vec<SocketAddr> {
            list.iter().map(|text| text.parse().unwrap()).collect()
        };
        assert_eq!(listener(443, &addresses(&["[::]:443"])).level, Level::Ok);
        assert_eq!(
            listener(443, &addresses(&["192.0.2.1:443"])).level,
            Level::Ok
        );
        let loopback = listener(443, &addresses(&["127.0.0.1:443", "[::1]:443"]));
        assert_eq!(loopback.level, Level::Problem);
        assert!(loopback.evidence.starts_with("only loopback listens"));
        assert_eq!(listener(443, &[]).level, Level::Problem);
        assert_eq!(
            probe_addresses(&addresses(&["[::]:443", "0.0.0.0:443"])),
            addresses(&["127.0.0.1:443", "[::1]:443"])
        );
    }

    #[test]
    fn conntrack_warns_above_80_and_is_a_problem_above_95_percent() {
        let at = |count| conntrack(Some(sockets::Conntrack { count, max: 100 })).level;
        assert_eq!(at(80), Level::Ok);
        assert_eq!(at(81), Level::Warning);
        assert_eq!(at(95), Level::Warning);
        assert_eq!(at(96), Level::Problem);
        assert_eq!(conntrack(None).level, Level::Ok);
    }

    #[test]
    fn the_verdict_is_the_worst_finding_and_the_summary_names_it() {
        let report = DoctorReport::of(vec![
            Finding::ok("state", "last sync", "1m ago"),
            Finding::warning("headroom", "conntrack", "85%"),
            Finding::problem("listener", "tcp 443", "nothing listens"),
        ]);
        assert_eq!(report.exit_status().code(), 2);
        assert_eq!(
            report.summary,
            "1 problem, 1 warning: listener tcp 443: nothing listens"
        );
        assert_eq!(report.checks[0].check, "listener");
        let fine = DoctorReport::of(vec![Finding::ok("state", "x", "y")]);
        assert_eq!(fine.exit_status().code(), 0);
        assert_eq!(fine.summary, "1 check passed");
    }
}
