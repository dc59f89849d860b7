//! Named points where a run can be made to pause, so that tests can kill it there with
//! SIGKILL and prove that no moment of a run leaves a listed range closed or the state
//! unreadable. Set `CF_ALLOWLIST_PAUSE_AT` to a point's name: the run prints
//! `cf-allowlist: paused at NAME` on stderr and sleeps for ten minutes. Unset (always, in
//! production) it costs one environment lookup per point.

use std::io::Write;
use std::time::Duration;

/// The environment variable naming the point to pause at.
pub const PAUSE_VARIABLE: &str = "CF_ALLOWLIST_PAUSE_AT";

/// Pauses here if `CF_ALLOWLIST_PAUSE_AT` names this point.
pub fn pause_point(name: &str) {
    if std::env::var(PAUSE_VARIABLE).is_ok_and(|wanted| wanted == name) {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "cf-allowlist: paused at {name}");
        let _ = stderr.flush();
        std::thread::sleep(Duration::from_secs(600));
    }
}
