//! Work split over the cores: one scoped thread per part, results in the parts' order. Used
//! where a 100,000-range run spends its time in one pure pass (parsing the list, judging the
//! planned firewall).

/// `work` applied to each of `parts` on its own thread; the results in the same order. A
/// panic in a part is re-raised here.
pub fn map<T: Sync, R: Send>(parts: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let work = &work;
    std::thread::scope(|scope| {
        let workers: Vec<_> = parts
            .iter()
            .map(|part| scope.spawn(move || work(part)))
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// How many parts to cut a pass into: the cores this process may use, at most `most`.
pub fn cores(most: usize) -> usize {
    // std reads the cgroup's CPU quota files on every call: once a process is enough.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from));
    cores.clamp(1, most.max(1))
}
