//! `sync`: fetch, validate, compare with the snapshot and with each backend, then preview or
//! apply, read back, and record a new generation only once every backend has succeeded.

use std::collections::BTreeMap;

use cf_allowlist_backend::{Backend, Change, Ranges};

use crate::backends::BackendSpec;
use crate::commands::{Pending, apply_plans, partial, print_warnings};
use crate::error::Error;
use crate::failpoint;
use crate::guards::Force;
use crate::judgement::{self, Request};
use crate::plan::{BackendPlan, Plan, UpstreamChange, shrink_refusals};
use crate::printer::Printer;
use crate::proof::{self, Moment, Proof};
use crate::report::{SyncCommand, SyncOutcome, SyncReport};
use crate::settings::Settings;
use crate::sources::memo::{self, Answered, Listing, Memo};
use crate::sources::{self, CachedSource, SourceError};
use crate::state::{
    Generation, LastSync, StagedFile, StateDir, StateError, Unrecorded, now_rfc3339,
};
use crate::validate::{self, counts};

/// Flags of `sync` that are not settings.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Preview only.
    pub dry_run: bool,
    /// Exit 2 when a preview finds changes.
    pub detailed_exitcode: bool,
    /// The safety guards to override.
    pub force: Force,
}

/// What fetching every source found.
#[derive(Debug)]
pub struct Listed {
    /// The validated ranges.
    pub ranges: Ranges,
    /// What to remember of each source for the next conditional request.
    pub cache: BTreeMap<String, CachedSource>,
    /// What the sources answered and what reading them found (for a memo).
    pub listing: Listing,
    /// The answers' size in bytes.
    pub bytes: usize,
    /// The ranges' digest, where a memo gave them ([`proof::ranges_digest`]).
    pub digest: Option<String>,
}

/// Fetches and validates every source; the first failure fails the whole run. Returns the
/// ranges, what to remember of each source for the next conditional request, and what was
/// answered.
///
/// With the `memo` of a proof (see [`memo`]): where every answer has the digest the memo
/// recorded, read by the same rules, the memo's validated ranges are taken instead of reading
/// the answers again. Answers are then read only once one differs (in order, so that the first
/// bad answer is still the one reported).
pub fn fetch_all(
    settings: &Settings,
    cache: &BTreeMap<String, CachedSource>,
    memo: Option<Memo>,
    printer: &Printer,
) -> Result<Listed, Error> {
    let mut memo = memo.filter(|memo| {
        memo.listing.answers.len() == settings.sources.len()
            && memo.rules == memo::rules(&settings.limits, settings.fetch.jdcloud)
    });
    let mut listed = Listed {
        ranges: Ranges::new(),
        cache: BTreeMap::new(),
        listing: Listing::default(),
        bytes: 0,
        digest: None,
    };
    let mut networks = Vec::new();
    // Answers that matched the memo so far: read only if a later one does not.
    let mut pending = Vec::new();
    for (index, source) in settings.sources.iter().enumerate() {
        let answer = sources::answer(source, &settings.fetch, cache.get(&source.to_string()))?;
        listed.bytes += match &answer.body {
            sources::Body::Bytes(bytes) => bytes.len(),
            sources::Body::NotModified(_) => 0,
        };
        let answered = Answered {
            source: source.to_string(),
            digest: answer.digest(),
            count: 0,
        };
        // A fresh answer to be cached needs its networks for the cache: it is read.
        let matched = memo.as_ref().is_some_and(|memo| {
            let recorded = &memo.listing.answers[index];
            recorded.source == answered.source
                && recorded.digest == answered.digest
                && (answer.cache.is_none() || answer.not_modified())
        });
        listed.listing.answers.push(answered);
        if matched {
            pending.push((index, answer));
            continue;
        }
        memo = None;
        for (index, answer) in pending.drain(..).chain([(index, answer)]) {
            let count = read(answer, settings, &mut listed.cache, &mut networks, printer)?;
            listed.listing.answers[index].count = count;
        }
    }
    let memorised = memo.as_ref().and_then(Memo::ranges);
    match (memo, memorised) {
        (Some(memo), Some((ranges, digest))) => {
            for (index, answer) in pending {
                let count = memo.listing.answers[index].count;
                listed.listing.answers[index].count = count;
                let not_modified = answer.not_modified();
                note_answer(
                    settings,
                    &answer.source,
                    answer.warning.as_deref(),
                    count,
                    not_modified,
                    printer,
                );
                if let Some(cached) = answer.cache {
                    listed.cache.insert(answer.source.to_string(), cached);
                }
            }
            listed.listing.covered = memo.listing.covered;
            listed.ranges = ranges;
            listed.digest = Some(digest);
        }
        _ => {
            for (index, answer) in pending {
                let count = read(answer, settings, &mut listed.cache, &mut networks, printer)?;
                listed.listing.answers[index].count = count;
            }
            let validated = validate::deduplicate(&networks);
            listed.listing.covered = validated.covered;
            listed.ranges = validated.ranges;
        }
    }
    for (covered, cover) in &listed.listing.covered {
        printer.note(&format!(
            "{covered} is inside {cover}: only {cover} is kept"
        ));
    }
    Ok(listed)
}

/// Reads one source's answer into `networks`, checking each range; returns how many it listed.
fn read(
    answer: sources::Answer,
    settings: &Settings,
    cache: &mut BTreeMap<String, CachedSource>,
    networks: &mut Vec<ipnet::IpNet>,
    printer: &Printer,
) -> Result<usize, Error> {
    let fetched = answer.parse(settings.fetch.jdcloud)?;
    let source = &fetched.source;
    // Check per source so that the error names the source that sent the bad range; the
    // duplicates and covered ranges are found once, over all sources, in `fetch_all`.
    for network in &fetched.networks {
        validate::check(network, &settings.limits)
            .map_err(|refused| SourceError::refused(source, refused))?;
    }
    note_answer(
        settings,
        source,
        fetched.warning.as_deref(),
        fetched.networks.len(),
        fetched.not_modified,
        printer,
    );
    if let Some(cached) = fetched.cache {
        cache.insert(source.to_string(), cached);
    }
    let count = fetched.networks.len();
    networks.extend(fetched.networks);
    Ok(count)
}

/// Tells what one source answered: its warning, if any, and how many ranges it listed.
fn note_answer(
    settings: &Settings,
    source: &sources::Source,
    warning: Option<&str>,
    count: usize,
    not_modified: bool,
    printer: &Printer,
) {
    if let Some(warning) = warning {
        // The builtin list's age needs a human once it is old; until then, and for a plain
        // http source, the warning would repeat on every run.
        let old_builtin = *source == sources::Source::Builtin
            && sources::builtin_age_days(std::time::SystemTime::now())
                > settings.builtin_max_age_days;
        if old_builtin {
            printer.warn(format!(
                "{warning}: older than builtin_max_age_days ({}); update cf-allowlist or use a live source",
                settings.builtin_max_age_days
            ));
        } else {
            printer.warn_repeating(warning.to_owned());
        }
    }
    printer.note(&format!(
        "{source}: {count} ranges{}",
        if not_modified {
            " (not modified since the last fetch)"
        } else {
            ""
        }
    ));
}

/// The backends a plan changes, described.
fn changed_backends(plan: &Plan) -> Vec<String> {
    plan.backends
        .iter()
        .filter(|backend| !backend.change.is_empty())
        .map(|backend| backend.spec.describe())
        .chain(plan.retired.iter().map(BackendSpec::describe))
        .collect()
}

/// Runs one sync and reports what it planned and did.
pub fn run(
    settings: &Settings,
    options: SyncOptions,
    printer: &Printer,
) -> Result<SyncReport, Error> {
    let state_dir = StateDir::new(&settings.state_dir);
    // A preview takes no lock and writes nothing, so it works without a state directory.
    // A new owner id's fsyncs run while the run reads and plans; it is settled (durable)
    // before the first firewall write.
    let mut lock = if options.dry_run {
        None
    } else {
        if settings.backends.is_empty() {
            return Err(Error::NoBackend);
        }
        Some(state_dir.lock_settling_later(settings.lock_timeout)?)
    };
    let waited = lock
        .as_ref()
        .filter(|lock| lock.contended)
        .map(|lock| lock.waited);
    let mut prefetched = None;
    match proven(settings, &state_dir, options.dry_run, printer)? {
        Proven::Holds { plan, generation } => {
            if let Some(waited) = waited.filter(|_| !plan.has_news()) {
                printer.warn(format!(
                    "waited {:.2}s for another run to finish; nothing left to change",
                    waited.as_secs_f64()
                ));
            }
            let outcome = if options.dry_run {
                SyncOutcome::Previewed {
                    detailed_exitcode: options.detailed_exitcode,
                }
            } else {
                SyncOutcome::Applied { generation }
            };
            return Ok(SyncReport {
                command: SyncCommand::Sync,
                plan: *plan,
                outcome,
                waited,
            });
        }
        Proven::Fetched(listed) => prefetched = Some(*listed),
        Proven::Unknown => {}
    }
    let loaded = state_dir.load()?;
    for message in &loaded.recovered {
        printer.warn(message.clone());
    }
    let (mut state, current, on_disk) = (loaded.state, loaded.current, loaded.on_disk);
    // Asked something else than the proof records (a changed list, say), but at the proven
    // generation: our sets hold the current generation's ranges, so the reading need not dump
    // them from the kernel (a write then carries that generation, and the kernel refuses it if
    // anything committed since).
    crate::proof::vouch(&state_dir, &state, current.as_ref(), &settings.backends);

    let mut refusals = Vec::new();
    let mut source_cache = None;
    // What a memo recorded with a proof would hold (see `memo`).
    let mut list_memo = None;
    let old_source_cache = if state.pinned.is_none() {
        state_dir.read_source_cache()
    } else {
        BTreeMap::new()
    };
    let (target, sources, upstream) = match &state.pinned {
        Some(pin) => {
            printer.warn_repeating(format!(
                "pinned to generation {} since {}: upstream is not consulted (`cf-allowlist unpin` to follow it again)",
                pin.generation, pin.since
            ));
            let generation = state_dir.read_generation(pin.generation)?;
            (generation.ranges, generation.sources, None)
        }
        None => {
            let listed = match prefetched {
                Some(listed) => listed,
                None => fetch_all(settings, &old_source_cache, None, printer)?,
            };
            // A list too short to be worth a memo gets none.
            list_memo = (listed.bytes >= memo::WORTH_BYTES).then_some(listed.listing);
            let (target, cache) = (listed.ranges, listed.cache);
            source_cache = Some(cache);
            let upstream = UpstreamChange::between(
                current
                    .as_ref()
                    .map(|generation| (generation.generation, &generation.ranges)),
                &target,
            );
            if let Some(current) = &current {
                let names: Vec<String> = settings.sources.iter().map(ToString::to_string).collect();
                refusals.extend(shrink_refusals(
                    &format!(
                        "the list from {} (against generation {})",
                        names.join(", "),
                        current.generation
                    ),
                    &current.ranges,
                    &target,
                ));
            }
            let sources = settings.sources.iter().map(ToString::to_string).collect();
            (target, sources, Some(upstream))
        }
    };
    printer.note(&format!("{} ranges ({})", target.len(), counts(&target)));
    // The generation this run brings the backends to (a preview brings them nowhere). A new
    // one's file is written and fsynced beside its place from now on, on another core, while
    // the run reads, judges and writes the firewall; unless the run is already refused (then
    // only if `--force` overrides that, before the write). A long list's is started at the
    // write instead: its serialised file (megabytes) would sit beside the judgement's peak.
    // (A failure to find the number is reported only after the refusals, as a dry run would
    // report them.)
    let next = if options.dry_run {
        None
    } else {
        let next = next_generation(&state, current.as_ref(), &target, &state_dir);
        let staging = match &next {
            Ok((generation, true))
                if refusals.is_empty() && target.len() < Staging::EARLY_BELOW =>
            {
                Some(Staging::start(&state_dir, *generation, &sources, &target))
            }
            _ => None,
        };
        Some((next, staging))
    };

    let owner = state.owner.clone();
    // Backends written before and no longer configured (another kind now): their parts go once
    // the configured ones hold the target. (A changed table, chain or variant of a configured
    // kind is that backend's own repair.)
    let retired: Vec<BackendSpec> = state
        .written
        .iter()
        .filter(|old| settings.backends.iter().all(|new| new.kind() != old.kind()))
        .cloned()
        .collect();
    // Where the generation can vouch for every backend, the moment before the judgement: if
    // it is the same after, everything was read at one generation, and the run may record its
    // proof (below).
    let read_at = (!options.dry_run && state.pinned.is_none())
        .then(|| proof::provable(&settings.backends, &target))
        .filter(|provable| *provable)
        .and_then(|_| Moment::now());
    let judged = judgement::judge(&Request {
        specs: &settings.backends,
        targets: vec![&target; settings.backends.len()],
        retired: &retired,
        owner: owner.as_deref(),
        written: &state.written,
        shrink: true,
        writes: true,
        ssh: true,
    })?;
    refusals.extend(judged.refusals);
    let read_at = read_at.filter(|moment| {
        judged.read_in_nf_tables && refusals.is_empty() && Moment::now().as_ref() == Some(moment)
    });
    let mut warnings = judged.warnings;
    let (forced, refusals): (Vec<_>, Vec<_>) = refusals
        .into_iter()
        .partition(|refusal| options.force.overrides(refusal.guard));
    for refusal in forced {
        warnings.push(format!(
            "--force={} overrides: {}",
            refusal.guard, refusal.reason
        ));
    }
    let instances = judged.instances;
    let mut plan = Plan {
        dry_run: options.dry_run,
        sources,
        target,
        upstream,
        pinned: state.pinned.clone(),
        backends: judged.backends,
        refusals,
        warnings,
        retired: judged.retired,
    };
    print_warnings(&plan, printer);
    let report = |plan: Plan, outcome: SyncOutcome| SyncReport {
        command: SyncCommand::Sync,
        plan,
        outcome,
        waited,
    };

    if !plan.refusals.is_empty() {
        // A dry run says so too: the same command without it would be refused.
        return Ok(report(plan, SyncOutcome::Refused));
    }
    if options.dry_run {
        return Ok(report(
            plan,
            SyncOutcome::Previewed {
                detailed_exitcode: options.detailed_exitcode,
            },
        ));
    }

    let (next, staging) = next.expect("a run that is not a preview has its generation");
    let (generation, is_new) = next?;
    let staging = staging.or_else(|| {
        is_new.then(|| Staging::start(&state_dir, generation, &plan.sources, &plan.target))
    });
    let pending = Pending {
        generation,
        ranges: counts(&plan.target),
    };
    if let Some(lock) = lock.as_mut() {
        lock.settle()?;
    }
    failpoint::pause_point("before-apply");
    let applied = apply_plans(&mut plan.backends, &instances.configured, &pending, printer);
    // The new generation's file is put in place only once every backend holds the target
    // (dropped, and so deleted, if they do not).
    let prepared = staging.map(Staging::finish);
    if let Err(error) = applied {
        if let Error::Partial { applied, .. } = &error {
            // Best effort: if even this cannot be written, the error still says it all.
            let _ = state_dir.write_unrecorded(Some(&Unrecorded {
                time: now_rfc3339(),
                backends: applied.clone(),
                ranges: plan.target.clone(),
            }));
        }
        return Err(error);
    }
    for (spec, backend) in plan.retired.iter().zip(&instances.retired) {
        let removed = backend
            .purge()
            .map_err(|error| partial(&changed_backends(&plan), &pending, error.into()))?;
        for part in removed {
            printer.note(&format!("{}: removed {part}", spec.describe()));
        }
    }
    failpoint::pause_point("after-apply");
    // Every backend holds the target: now, and only now, record it. A failure here leaves the
    // firewall changed and unrecorded, and the error says so.
    let changed = changed_backends(&plan);
    let recorded = {
        let mut state = state.clone();
        state.current_generation = Some(generation);
        state.purged = None;
        state.written = settings.backends.clone();
        state.last_sync = Some(LastSync {
            time: now_rfc3339(),
            backends: settings.backends.clone(),
        });
        state
    };
    let record = || -> Result<(), Error> {
        let state = recorded.clone();
        let now = state
            .last_sync
            .as_ref()
            .map(|last| last.time.clone())
            .unwrap_or_default();
        // Nothing changed (the cron case): leave state.json and sources.json as they are and
        // record only the time, in one small unsynced file.
        let cache_unchanged = source_cache
            .as_ref()
            .is_none_or(|cache| *cache == old_source_cache);
        let state_unchanged = on_disk.as_ref().is_some_and(|on_disk| {
            let mut same_time = state.clone();
            same_time.owner = None;
            if let (Some(last), Some(old)) = (same_time.last_sync.as_mut(), &on_disk.last_sync) {
                last.time = old.time.clone();
            }
            same_time == *on_disk
        });
        if !is_new && cache_unchanged && state_unchanged {
            state_dir.write_last_run(&now)?;
            return Ok(());
        }
        // The new generation is put in place (renamed, its directory fsynced) while the new
        // state.json is staged (written, fsynced): the fsyncs overlap, and state.json is
        // renamed only once the generation it names is durable.
        let staged_state = std::thread::scope(|scope| -> Result<_, Error> {
            let state_dir = &state_dir;
            let committed =
                prepared.map(|staged| scope.spawn(move || state_dir.commit_generation(staged?)));
            let staged_state = state_dir.stage_state(&state);
            if let Some(committed) = committed {
                committed.join().expect("writing the generation")?;
                failpoint::pause_point("after-generation-write");
            }
            Ok(staged_state?)
        })?;
        if let Some(cache) = source_cache.as_ref().filter(|_| is_new || !cache_unchanged) {
            state_dir.write_source_cache(cache)?;
        }
        staged_state.commit()?;
        state_dir.write_unrecorded(None)?;
        Ok(())
    };
    record().map_err(|error| partial(&changed, &pending, error))?;
    state.current_generation = Some(generation);
    if let Some(read_at) = read_at {
        record_proof(
            &state_dir,
            &plan,
            &instances.configured,
            &recorded,
            settings,
            read_at,
            list_memo.as_ref(),
        );
    }

    if let Some(waited) = waited.filter(|_| !plan.has_news()) {
        printer.warn(format!(
            "waited {:.2}s for another run to finish; nothing left to change",
            waited.as_secs_f64()
        ));
    }
    Ok(report(plan, SyncOutcome::Applied { generation }))
}

/// The generation a sync that is not a preview brings the backends to, and whether it is a
/// new one: the current one when the list has not changed (or the pinned one while pinned),
/// else the next number.
fn next_generation(
    state: &crate::state::State,
    current: Option<&Generation>,
    target: &Ranges,
    state_dir: &StateDir,
) -> Result<(u64, bool), Error> {
    Ok(match (&state.pinned, current) {
        (Some(pin), _) => (pin.generation, false),
        // (The current generation's ranges were checked against its digest when loaded.)
        (None, Some(current)) if current.ranges == *target => (current.generation, false),
        (None, _) => (
            state_dir.generations()?.last().copied().unwrap_or(0) + 1,
            true,
        ),
    })
}

/// A new generation's file being serialised (a digest and JSON of every range: tens of
/// milliseconds at 100,000), written and fsynced beside its place on another thread. Dropped
/// unfinished (a refusal, an error), it waits for the thread and deletes the file, so that no
/// run leaves one behind.
struct Staging(Option<std::thread::JoinHandle<Result<StagedFile, StateError>>>);

impl Staging {
    /// Lists this long or longer are staged at the firewall write (measured at 100,000 IPv6
    /// ranges: a peak of 59 MiB when staged during the judgement).
    const EARLY_BELOW: usize = 10_000;

    fn start(
        state_dir: &StateDir,
        generation: u64,
        sources: &[String],
        target: &Ranges,
    ) -> Staging {
        let (state_dir, sources, target) = (state_dir.clone(), sources.to_vec(), target.clone());
        Staging(Some(std::thread::spawn(move || {
            state_dir.stage_generation(&Generation::new(generation, sources, target).prepare())
        })))
    }

    /// The staged file, once it is written and fsynced.
    fn finish(mut self) -> Result<StagedFile, StateError> {
        let thread = self.0.take().expect("a staging is finished once");
        thread.join().expect("staging the generation")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            // The staged file, if any, is deleted when its result is dropped.
            let _ = thread.join();
        }
    }
}

/// What the proof path found before the full one.
enum Proven {
    /// The stored proof holds: the no-op's plan (with the recorded verdict) and generation.
    Holds {
        /// The plan, as the recorded run would plan it now.
        plan: Box<Plan>,
        /// The generation the backends hold.
        generation: u64,
    },
    /// It does not hold, but the list was fetched to find out: the full path uses it.
    Fetched(Box<Listed>),
    /// There is no proof, or it cannot hold here; nothing was fetched.
    Unknown,
}

/// The no-op a stored proof makes: if the last verified sync recorded a proof and the
/// request, the boot, the namespace and the ruleset generation are all as it recorded them,
/// the firewall is exactly what that run read and judged. Then nothing is listed, the
/// snapshot is not loaded, and the recorded verdict is the plan's; only the time of the run
/// (and a changed source cache) is written, and by a dry run nothing.
fn proven(
    settings: &Settings,
    state_dir: &StateDir,
    dry_run: bool,
    printer: &Printer,
) -> Result<Proven, Error> {
    let Some(stored) = state_dir.read_proof() else {
        return Ok(Proven::Unknown);
    };
    let Ok(mut state) = state_dir.read_state() else {
        return Ok(Proven::Unknown);
    };
    let Some(generation) = state.current_generation.filter(|_| state.pinned.is_none()) else {
        return Ok(Proven::Unknown);
    };
    if Moment::now().as_ref() != Some(&stored.moment) {
        return Ok(Proven::Unknown);
    }
    state.owner = state_dir.read_owner().ok().flatten();
    let old_cache = state_dir.read_source_cache();
    let listed = fetch_all(settings, &old_cache, state_dir.read_list_memo(), printer)?;
    let sources: Vec<String> = settings.sources.iter().map(ToString::to_string).collect();
    let snapshot = state_dir.snapshot_fingerprint(generation);
    let digest = (listed.digest.clone()).unwrap_or_else(|| proof::ranges_digest(&listed.ranges));
    let asked = proof::asked(&digest, &sources, &settings.backends, &state, snapshot);
    let holds = proof::provable(&settings.backends, &listed.ranges)
        && Moment::now().is_some_and(|now| stored.holds(&now, &asked, settings.backends.len()));
    if !holds {
        return Ok(Proven::Fetched(Box::new(listed)));
    }
    // A list worth a memo that was read in full (its memo damaged, gone or stale) gets one
    // again, so that the next no-op does not read it once more; best effort, as in a sync.
    if !dry_run && listed.digest.is_none() && listed.bytes >= memo::WORTH_BYTES {
        let rules = memo::rules(&settings.limits, settings.fetch.jdcloud);
        let _ = state_dir.mend_list_memo(&memo::write(
            rules,
            &listed.listing,
            &listed.ranges,
            &digest,
        ));
    }
    let (target, cache) = (listed.ranges, listed.cache);
    printer.note(&format!("{} ranges ({})", target.len(), counts(&target)));
    let unchanged = Change {
        target: target.clone(),
        unchanged: target.clone(),
        ..Change::default()
    };
    let plan = Plan {
        dry_run,
        sources,
        upstream: Some(UpstreamChange {
            previous_generation: Some(generation),
            added: Ranges::new(),
            removed: Ranges::new(),
        }),
        pinned: None,
        backends: settings
            .backends
            .iter()
            .zip(stored.backends)
            .map(|(spec, verdict)| BackendPlan {
                spec: spec.clone(),
                change: unchanged.clone(),
                warnings: verdict.warnings,
                effective: verdict.effective,
                blockers: verdict.blockers,
            })
            .collect(),
        target,
        refusals: Vec::new(),
        warnings: stored.warnings,
        retired: Vec::new(),
    };
    print_warnings(&plan, printer);
    if !dry_run {
        if cache != old_cache {
            state_dir.write_source_cache(&cache)?;
        }
        state_dir.write_last_run(&now_rfc3339())?;
    }
    Ok(Proven::Holds {
        plan: Box::new(plan),
        generation,
    })
}

/// Records the proof of a verified sync read and judged at `read_at`, if the generation now
/// is `read_at` plus exactly our own transactions: one `nft -f` per nftables backend that
/// changed, and what each other changed backend counts ([`Backend::committed`]: one
/// iptables-nft restore per family it wrote). Any other writer in between, or a backend that
/// cannot count, leaves no proof. Best effort: without a proof the next run takes the full
/// path (and records one).
fn record_proof(
    state_dir: &StateDir,
    plan: &Plan,
    backends: &[Box<dyn Backend>],
    recorded: &crate::state::State,
    settings: &Settings,
    read_at: Moment,
    list_memo: Option<&Listing>,
) {
    let mut transactions = 0;
    for (backend_plan, backend) in plan.backends.iter().zip(backends) {
        if backend_plan.change.is_empty() {
            continue;
        }
        // The nftables backend writes each change as one `nft -f` batch.
        let committed = match backend.committed() {
            Some(count) => count,
            None if backend_plan.spec.kind().name() == "nftables" => 1,
            None => return,
        };
        transactions += committed;
    }
    let proven_at = read_at.after(transactions);
    if !plan.retired.is_empty() || Moment::now().as_ref() != Some(&proven_at) {
        return;
    }
    let snapshot = recorded
        .current_generation
        .and_then(|generation| state_dir.snapshot_fingerprint(generation));
    let digest = proof::ranges_digest(&plan.target);
    let asked = proof::asked(
        &digest,
        &plan.sources,
        &settings.backends,
        recorded,
        snapshot.clone(),
    );
    let held = proof::held(&digest, &settings.backends, recorded, snapshot);
    // The memo is written (or an older one removed) before the proof it serves.
    let list_memo = list_memo.map(|listing| {
        let rules = memo::rules(&settings.limits, settings.fetch.jdcloud);
        memo::write(rules, listing, &plan.target, &digest)
    });
    if state_dir.write_list_memo(list_memo.as_deref()).is_err() {
        return;
    }
    let _ = state_dir.write_proof(&Proof::new(
        proven_at,
        (asked, held),
        &plan.backends,
        &plan.warnings,
    ));
}
