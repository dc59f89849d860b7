//! One judgement: survey every configured backend (and the retired ones the run removes), plan
//! each one's change, and judge the effect on the firewall the plan leaves. `sync`,
//! `sync --dry-run`, `rollback`, `restore`, `status` and `doctor` all call [`judge`] and differ
//! only in what they do with the [`Judged`] it returns: apply it, print it, or report on it.
//!
//! Decisions are data: refusals (with their guard), per-backend verdicts and blockers, and
//! warnings live in the result; nothing here takes the printer. Each backend is built once per
//! run and the same instance is applied ([`Instances`]), so a backend that holds a client (AWS)
//! holds one.
//!
//! The effect is judged on [`Host::planned`]: this host's netfilter, read once, with our parts
//! taken out and what each configured backend will hold put in. So a dry run returns what the
//! run returns, and the `reach` guard compares the planned firewall with today's: a plan that
//! lets fewer listed sources reach a managed port is refused before anything is written.
//! Hints are simulated the same way: a config is proposed only if the analysis finds it
//! effective and no worse.

use std::collections::BTreeSet;

use cf_allowlist_backend::{Backend, Change, Ranges};
use cf_allowlist_netfilter::{Blocker, Fate, Finding, Host, Place, Placement, Summary};
use ipnet::IpNet;

use crate::backends::BackendSpec;
use crate::error::Error;
use crate::guards::{self, Guard, Refusal};
use crate::plan::{BackendPlan, shrink_refusals};

/// The backends of one run, each built once: the configured ones in plan order, then the
/// retired ones.
pub struct Instances {
    /// One per configured backend, in the order of [`Judged::backends`].
    pub configured: Vec<Box<dyn Backend>>,
    /// One per retired backend, in the order of [`Judged::retired`].
    pub retired: Vec<Box<dyn Backend>>,
}

/// What a run would do and what it would achieve.
pub struct Judged {
    /// Per configured backend: its change, its warnings, and its verdict.
    pub backends: Vec<BackendPlan>,
    /// Backends written before and no longer configured, to be purged.
    pub retired: Vec<BackendSpec>,
    /// What the guards say against the plan (before `--force`).
    pub refusals: Vec<Refusal>,
    /// What the judgement wants the user to know about the plan as a whole.
    pub warnings: Vec<String>,
    /// The built backends.
    pub instances: Instances,
    /// Whether the effect was judged from nf_tables alone (no legacy iptables table, no ipset
    /// an iptables rule matches on, nothing unread): only then can the ruleset generation
    /// prove the judgement still holds later ([`crate::proof`]).
    pub read_in_nf_tables: bool,
}

/// What to judge.
pub struct Request<'a> {
    /// The configured backends.
    pub specs: &'a [BackendSpec],
    /// What each configured backend is to hold (parallel to `specs`).
    pub targets: Vec<&'a Ranges>,
    /// The retired backends.
    pub retired: &'a [BackendSpec],
    /// This state directory's id, marking our parts.
    pub owner: Option<&'a str>,
    /// The backends this state directory recorded writing to (its unmarked parts from before
    /// owners were marked are adopted only for those kinds).
    pub written: &'a [BackendSpec],
    /// Whether the shrink guard compares each backend's holdings with its target.
    pub shrink: bool,
    /// Whether the ssh guard looks at restricting backends (not when re-applying a generation
    /// that was applied with the same backends before: a boot-time restore must not be
    /// refused for what a sync was allowed with `--force=ssh`).
    pub ssh: bool,
    /// Whether the run will write (sync, its dry run, rollback, restore): then each backend's
    /// own checks before writing (an AWS group's quota) run too, so a dry run refuses what the
    /// run refuses.
    pub writes: bool,
}

impl<'a> Request<'a> {
    /// A request that only looks (status, doctor, purge): the configured backends against
    /// their targets, no retired ones, and no guard but ownership.
    pub fn looking(
        specs: &'a [BackendSpec],
        targets: Vec<&'a Ranges>,
        owner: Option<&'a str>,
        written: &'a [BackendSpec],
    ) -> Request<'a> {
        Request {
            specs,
            targets,
            retired: &[],
            owner,
            written,
            shrink: false,
            writes: false,
            ssh: false,
        }
    }

    /// Whether this state directory recorded writing to a backend of `spec`'s kind.
    fn wrote(&self, spec: &BackendSpec) -> bool {
        self.written
            .iter()
            .any(|written| written.kind() == spec.kind())
    }
}

/// Surveys, plans and judges. Only reading: nothing is written anywhere.
pub fn judge(request: &Request) -> Result<Judged, Error> {
    let mut backends = Vec::new();
    let mut configured = Vec::new();
    let mut refusals = Vec::new();
    for (spec, target) in request.specs.iter().zip(&request.targets) {
        let backend = spec.build_adopting(request.owner, request.wrote(spec));
        let observed = backend.observe()?;
        if let Some(reason) = foreign_owner(spec, &observed, request.owner) {
            refusals.push(Refusal::new(Guard::Owner, reason));
        }
        if request.shrink {
            refusals.extend(shrink_refusals(&spec.describe(), &observed.ranges, target));
        }
        if request.ssh && spec.policy().restrict {
            refusals.extend(guards::restrict_refusals(
                &spec.describe(),
                &spec.policy().ports,
            ));
        }
        let change = Change::between(&observed, target);
        if request.writes {
            backend.check(&change)?;
        }
        backends.push(BackendPlan {
            spec: spec.clone(),
            change,
            warnings: observed.warnings,
            effective: None,
            blockers: Vec::new(),
        });
        configured.push(backend);
    }
    let retired = request
        .retired
        .iter()
        .map(|spec| spec.build_adopting(request.owner, request.wrote(spec)))
        .collect();
    let mut judged = Judged {
        backends,
        retired: request.retired.to_vec(),
        refusals,
        warnings: Vec::new(),
        instances: Instances {
            configured,
            retired,
        },
        read_in_nf_tables: true,
    };
    judge_effect(&mut judged, request.writes);
    Ok(judged)
}

/// Why a backend's parts may not be adopted: they carry another state directory's mark.
pub fn foreign_owner(
    spec: &BackendSpec,
    observed: &cf_allowlist_backend::Observed,
    owner: Option<&str>,
) -> Option<String> {
    let others = other_owners(observed, owner);
    (!others.is_empty()).then(|| {
        format!(
            "{}: its parts belong to another cf-allowlist state directory (owner {}), and two state directories managing one firewall undo each other's changes",
            spec.describe(),
            others.join(", ")
        )
    })
}

/// The owners other than `owner` named on a backend's parts.
pub fn other_owners<'a>(
    observed: &'a cf_allowlist_backend::Observed,
    owner: Option<&str>,
) -> Vec<&'a str> {
    observed
        .owners
        .iter()
        .map(String::as_str)
        .filter(|found| Some(*found) != owner)
        .collect()
}

/// The placements of the configured backends on `host`, each with its plan's index.
fn placements(plans: &[BackendPlan], host: &Host) -> Vec<(usize, Placement)> {
    plans
        .iter()
        .enumerate()
        .filter(|(_, plan)| plan.spec.filters_host_input())
        .filter_map(|(index, plan)| {
            let place = plan.spec.place(host)?;
            Some((
                index,
                Placement {
                    place: place.clone(),
                    ranges: plan.change.target.iter().copied().collect(),
                    ports: plan.spec.policy().ports.clone(),
                    restrict: plan.spec.policy().restrict,
                    // ufw writes a rule per range, appended where ufw puts it: only a plan
                    // that adds none leaves ufw's rules exactly as they are.
                    in_place: plan.change.repairs.is_empty()
                        && (place != Place::UfwUserInput || plan.change.add.is_empty()),
                },
            ))
        })
        .collect()
}

/// Every (range, port) pair the reach guard watches: the listed ranges on every managed port
/// of a backend that filters this host's input, retired ones included.
fn watched(judged: &Judged) -> (Vec<IpNet>, Vec<u16>) {
    let mut ranges = Vec::new();
    let mut ports = BTreeSet::new();
    for plan in judged
        .backends
        .iter()
        .filter(|plan| plan.spec.filters_host_input())
    {
        ranges.extend(plan.change.target.iter().copied());
        ports.extend(plan.spec.policy().ports.iter().copied());
    }
    // Each target is in order already: with one backend the sort only checks it.
    ranges.sort_unstable();
    ranges.dedup();
    for spec in judged
        .retired
        .iter()
        .filter(|spec| spec.filters_host_input())
    {
        ports.extend(spec.policy().ports.iter().copied());
    }
    (ranges, ports.into_iter().collect())
}

/// A listed range and port that reach the host now and are blocked afterwards, with what
/// blocks them.
type Cut = (IpNet, u16, Blocker);

/// The pairs that reach the host on `now` and are certainly blocked on `planned`, with what
/// blocks them. Judged a thousand ranges at a time, so that the findings of a 100,000-range
/// list are never all held at once (only the cuts are kept). Today's fate is looked up only
/// for what the plan blocks: a pair accepted afterwards is no cut whatever it is now.
fn cuts(now: &Host, planned: &Host, ranges: &[IpNet], ports: &[u16]) -> Vec<Cut> {
    let mut cut = Vec::new();
    for chunk in ranges.chunks(1000) {
        cut.extend(cuts_of(now, &planned.check(chunk, ports)));
    }
    cut
}

/// Of `planned`'s findings, the cuts (see [`cuts`]): the blocked ones that `now` accepts.
fn cuts_of(now: &Host, planned: &[Finding]) -> Vec<Cut> {
    planned
        .iter()
        .filter_map(|after| match &after.fate {
            Fate::Blocked { by } => {
                let before = now.check(&[after.range], &[after.port]);
                matches!(
                    before.first().map(|finding| &finding.fate),
                    Some(Fate::Accepted)
                )
                .then(|| (after.range, after.port, (**by).clone()))
            }
            _ => None,
        })
        .collect()
}

/// The summary of `ranges` on `ports` on `planned` and the cuts (see [`cuts`]) from one walk
/// of the planned firewall: a single backend's placement watches exactly the ranges and ports
/// the reach guard watches, so one judgement of each pair serves both. A long list is split
/// over the machine's cores (each part judged a thousand ranges at a time, as [`cuts`] does),
/// the parts' summaries absorbed in list order.
fn summary_and_cuts(
    now: &Host,
    planned: &Host,
    ranges: &[IpNet],
    ports: &[u16],
) -> (Summary, Vec<Cut>) {
    let judge_part = |part: &[IpNet]| {
        let mut summary = Summary::empty();
        let mut cut = Vec::new();
        for chunk in part.chunks(1000) {
            let findings = planned.check(chunk, ports);
            for finding in &findings {
                summary.add(&finding.fate);
            }
            cut.extend(cuts_of(now, &findings));
        }
        (summary, cut)
    };
    // (The core count is read only for a long list: std reads cgroup files to find it.)
    let threads = if ranges.len() < 10_000 {
        1
    } else {
        crate::parallel::cores(4)
    };
    let parts: Vec<(Summary, Vec<Cut>)> = if threads < 2 {
        vec![judge_part(ranges)]
    } else {
        let parts: Vec<&[IpNet]> = ranges.chunks(ranges.len().div_ceil(threads)).collect();
        crate::parallel::map(&parts, |part| judge_part(part))
    };
    let mut summary = Summary::empty();
    let mut cut = Vec::new();
    for (part_summary, part_cut) in parts {
        summary.absorb(part_summary);
        cut.extend(part_cut);
    }
    summary.settle();
    (summary, cut)
}

/// The effect of the plan on the host; with `writes`, also the reach guard (a command that
/// only looks is refused nothing, so it does not judge today's firewall a second time).
fn judge_effect(judged: &mut Judged, writes: bool) {
    let (ranges, ports) = watched(judged);
    if ranges.is_empty() || ports.is_empty() {
        return;
    }
    let host = match cf_allowlist_netfilter::read_host() {
        Ok(host) => host,
        Err(error) => {
            judged.read_in_nf_tables = false;
            judged.warnings.push(format!(
                "could not check whether other firewall rules block the listed ranges: {error}"
            ));
            return;
        }
    };
    judged.read_in_nf_tables = !host.read_outside_nf_tables() && host.unread().is_empty();
    let placed = placements(&judged.backends, &host);
    let planned = host.planned(&placed.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>());

    if host.docker_chains_present() {
        judged.warnings.extend(docker_warnings(&judged.backends));
    }

    // One backend whose placement watches what the reach guard watches: one walk serves both.
    let single = writes
        && matches!(placed.as_slice(), [(_, placement)]
            if placement.ranges == ranges && placement.ports == ports);
    let mut early_cut = None;
    for (index, placement) in &placed {
        let plan = &judged.backends[*index];
        let summary = if single {
            let (summary, cut) = summary_and_cuts(&host, &planned, &ranges, &ports);
            early_cut = Some(cut);
            summary
        } else {
            planned.summary(&placement.ranges, &placement.ports)
        };
        let blockers: Vec<String> = summary
            .blockers
            .iter()
            .map(|blocker| {
                let mut blocker = blocker.clone();
                if let Some(hint) = simulated_hint(&host, &placed, *index, &blocker) {
                    blocker.hint = hint;
                }
                blocker.to_string()
            })
            .collect();
        for doubt in &summary.doubts {
            judged.warnings.push(format!(
                "{}: cannot tell whether the listed ranges get through: {doubt}",
                plan.spec.describe()
            ));
        }
        let plan = &mut judged.backends[*index];
        plan.effective = summary.effective;
        plan.blockers = blockers;
    }

    // The reach guard: nothing that reaches a managed port now may be cut by the plan.
    if !writes {
        return;
    }
    let cut = early_cut.unwrap_or_else(|| cuts(&host, &planned, &ranges, &ports));
    if !cut.is_empty() {
        let removing: Vec<String> = judged
            .retired
            .iter()
            .filter(|spec| spec.filters_host_input())
            .map(|spec| format!("removing {}", spec.describe()))
            .chain(
                judged
                    .backends
                    .iter()
                    .filter(|plan| {
                        plan.spec.filters_host_input()
                            && (!plan.change.remove.is_empty() || !plan.change.repairs.is_empty())
                    })
                    .map(|plan| format!("changing {}", plan.spec.describe())),
            )
            .collect();
        let mut blockers: Vec<String> = Vec::new();
        for (_, _, by) in &cut {
            let mut by = by.clone();
            by.hint.clear();
            let text = by.to_string();
            let text = text.trim_end_matches(": ").to_owned();
            if !blockers.contains(&text) {
                blockers.push(text);
            }
        }
        let pairs: Vec<String> = cut
            .iter()
            .take(4)
            .map(|(range, port, _)| format!("{range} port {port}"))
            .collect();
        let more = cut.len().saturating_sub(pairs.len());
        judged.refusals.push(Refusal::new(
            Guard::Reach,
            format!(
                "{} would cut listed sources that reach a managed port now ({}{}): afterwards they are {}",
                if removing.is_empty() {
                    "this plan".to_owned()
                } else {
                    removing.join(" and ")
                },
                pairs.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                },
                blockers.join("; ")
            ),
        ));
    }
}

/// Docker's chains exist: ports Docker publishes are forwarded to containers, not delivered to
/// INPUT, so a restrict that does not also fill DOCKER-USER does not cover them. The one rule,
/// for sync and doctor alike.
fn docker_warnings(plans: &[BackendPlan]) -> Vec<String> {
    plans
        .iter()
        .filter(|plan| {
            plan.spec.filters_host_input()
                && plan.spec.policy().restrict
                && !plan.spec.covers_docker()
        })
        .map(|plan| format!(
            "{}: Docker's chains exist: ports Docker publishes are forwarded to containers, not delivered to INPUT, so restrict does not cover them (filter them in Docker's DOCKER-USER chain: iptables with docker_user = true, or publish them on 127.0.0.1 behind a local proxy)",
            plan.spec.describe()
        ))
        .collect()
}

/// A config to propose for `blocker`, found by judging it: where our accepts would have to be
/// to beat it, if one of our backends can put them there, the analysis finds that effective,
/// and it cuts nothing that reaches the host now. Never the config being run.
fn simulated_hint(
    host: &Host,
    placed: &[(usize, Placement)],
    index: usize,
    blocker: &Blocker,
) -> Option<String> {
    let current = placed.iter().find(|(i, _)| *i == index)?.1.clone();
    let mut candidates = Vec::new();
    match blocker.origin.as_str() {
        // firewalld's zone reject: our accepts belong in the zone, written through firewalld
        // (rules written into its table with nft vanish at its next reload).
        "nftables" if blocker.owner.as_deref() == Some("firewalld") && blocker.hook == "input" => {
            candidates.push(Place::NftChain {
                table: blocker.table.clone(),
                chain: firewalld_allow_chain(&blocker.chain),
            });
        }
        "nftables" if blocker.family == "inet" && blocker.hook == "input" => {
            candidates.push(Place::NftChain {
                table: blocker.table.clone(),
                chain: blocker.base_chain.clone(),
            });
        }
        "iptables-nft" | "iptables-legacy" if blocker.base_chain == "INPUT" => {
            if blocker.owner.as_deref() == Some("ufw") {
                candidates.push(Place::UfwUserInput);
            }
            candidates.push(Place::IptablesInput {
                legacy: blocker.origin == "iptables-legacy",
            });
        }
        _ => {}
    }
    let (ranges, ports): (Vec<IpNet>, Vec<u16>) = {
        let mut ranges = BTreeSet::new();
        let mut ports = BTreeSet::new();
        for (_, placement) in placed {
            ranges.extend(placement.ranges.iter().copied());
            ports.extend(placement.ports.iter().copied());
        }
        (ranges.into_iter().collect(), ports.into_iter().collect())
    };
    let works = |placements: Vec<Placement>| {
        let planned = host.planned(&placements);
        planned.summary(&ranges, &ports).effective == Some(true)
            && cuts(host, &planned, &ranges, &ports).is_empty()
    };
    let all: Vec<Placement> = placed
        .iter()
        .map(|(_, placement)| placement.clone())
        .collect();
    for place in candidates
        .into_iter()
        .filter(|place| *place != current.place)
    {
        if placed.iter().any(|(_, placement)| placement.place == place) {
            continue;
        }
        let written_there = Placement {
            place: place.clone(),
            in_place: false,
            ..current.clone()
        };
        // Instead of this backend, or else alongside it.
        let instead: Vec<Placement> = placed
            .iter()
            .map(|(i, placement)| {
                if *i == index {
                    written_there.clone()
                } else {
                    placement.clone()
                }
            })
            .collect();
        if works(instead) {
            return Some(proposal(&place, false));
        }
        // One nftables and one iptables backend per host: alongside only in another kind.
        let same_kind = placed.iter().any(|(_, placement)| {
            std::mem::discriminant(&placement.place) == std::mem::discriminant(&place)
        });
        let mut alongside = all.clone();
        alongside.push(written_there);
        if !same_kind && works(alongside) {
            return Some(proposal(&place, true));
        }
    }
    None
}

/// The `allow` chain of the firewalld zone whose chain (`filter_IN_ZONE`, or one of its
/// parts) holds `chain`; the default zone's for firewalld's own chains (`filter_INPUT`).
fn firewalld_allow_chain(chain: &str) -> String {
    let zone = chain
        .strip_prefix("filter_IN_")
        .filter(|rest| !rest.starts_with("policy_"))
        .map(|rest| {
            ["_allow", "_deny", "_pre", "_post", "_log"]
                .iter()
                .find_map(|part| rest.strip_suffix(part))
                .unwrap_or(rest)
                .to_owned()
        });
    #[cfg(feature = "firewalld")]
    let zone = zone.unwrap_or_else(cf_allowlist_firewalld::default_zone_from_conf);
    #[cfg(not(feature = "firewalld"))]
    let zone = zone.unwrap_or_else(|| "public".to_owned());
    format!("filter_IN_{zone}_allow")
}

/// A place as the config that writes there, instead of the backend judged or `alongside` it.
fn proposal(place: &Place, alongside: bool) -> String {
    let config = match place {
        Place::NftChain { table, chain } if table == "firewalld" => {
            let zone = chain
                .strip_prefix("filter_IN_")
                .and_then(|rest| rest.strip_suffix("_allow"))
                .unwrap_or(chain);
            format!("`--backend firewalld` (zone = \"{zone}\")")
        }
        Place::NftChain { table, chain } => {
            format!("`--backend nftables` with table = \"{table}\" and chain = \"{chain}\"")
        }
        Place::IptablesInput { legacy } => format!(
            "`--backend iptables` with variant = \"{}\"",
            if *legacy { "legacy" } else { "nft" }
        ),
        Place::UfwUserInput => "`--backend ufw`".to_owned(),
    };
    if alongside {
        format!(
            "add {config} alongside this backend (judged on this host: the listed ranges then get through)"
        )
    } else {
        format!("use {config} (judged on this host: the listed ranges then get through)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans(config: &str) -> Vec<BackendPlan> {
        use clap::Parser;
        let cli = crate::cli::Cli::parse_from(["cf-allowlist", "sync"]);
        let config: crate::settings::ConfigFile = toml::from_str(config).unwrap();
        crate::settings::resolve(&cli, &config, &Default::default())
            .unwrap()
            .backends
            .into_iter()
            .map(|spec| BackendPlan {
                spec,
                change: Change::default(),
                warnings: Vec::new(),
                effective: None,
                blockers: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn docker_is_warned_about_only_for_a_restrict_that_does_not_reach_docker_user() {
        let warned = docker_warnings(&plans(
            "restrict = true\n[[backend]]\nkind = \"nftables\"\n",
        ));
        assert_eq!(warned.len(), 1);
        assert!(warned[0].starts_with("nftables ("), "{warned:?}");
        assert!(
            docker_warnings(&plans(
                "restrict = true\n[[backend]]\nkind = \"iptables\"\ndocker_user = true\n"
            ))
            .is_empty()
        );
        assert!(docker_warnings(&plans("[[backend]]\nkind = \"nftables\"\n")).is_empty());
    }
}
