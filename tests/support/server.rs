//! A web server of the real-IP tests (Apache, Caddy): its process inside a network namespace
//! the test made, a work folder for its configuration and logs, and the CLI run beside it.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::support::cmd::{Outcome, cf};
use crate::support::netns::Netns;

/// A server process (started through `ip netns exec`, which execs it: the PID is the server's)
/// in its namespace with its work folder; stopped by that PID on drop.
pub struct Served {
    /// The server's process.
    pub process: Child,
    /// Its namespace, deleted after the process ended.
    pub netns: Netns,
    /// Its configuration, logs, the CLI's config and state.
    pub work: tempfile::TempDir,
    /// The file in `work` whose text explains a failure to wait (the server's error log).
    pub log: &'static str,
}

impl Served {
    /// `name` in the work folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// Waits up to 15 s for `condition`, failing with the server's log.
    pub fn wait_until(&self, condition: impl Fn() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !condition() {
            assert!(
                Instant::now() < deadline,
                "gave up waiting for {what}; {}:\n{}",
                self.log,
                std::fs::read_to_string(self.path(self.log)).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `cf-allowlist --config CONFIG COMMAND` inside the namespace, with its state in `work`.
    pub fn cf(&self, config: &Path, command: &str) -> Outcome {
        cf(&["--config", &config.display().to_string(), command])
            .state(&self.path("state"))
            .in_netns(&self.netns.name)
            .run()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.process.id().to_string()])
            .status();
        let _ = self.process.wait();
    }
}
