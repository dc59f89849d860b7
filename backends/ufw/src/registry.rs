//! What the registry needs to know about the ufw backend.

use cf_allowlist_backend::{Backend, BackendOptions, HostPlace, Policy};

use crate::{UfwBackend, UfwOptions};

impl BackendOptions for UfwOptions {
    fn build(&self, policy: &Policy, owner: Option<&str>) -> Box<dyn Backend> {
        self.build_adopting(policy, owner, false)
    }

    fn build_adopting(
        &self,
        policy: &Policy,
        owner: Option<&str>,
        adopt_unmarked: bool,
    ) -> Box<dyn Backend> {
        // Our rules carry `cf-allowlist owner=ID`; rules written before owners were marked
        // carry the plain tag and are adopted only where this state directory recorded
        // writing to ufw.
        Box::new(
            UfwBackend::new(self.clone(), policy.clone())
                .owned_by(owner.map(str::to_owned))
                .adopting_unmarked(adopt_unmarked),
        )
    }

    fn describe(&self) -> String {
        let enable = if self.enable { ", may enable" } else { "" };
        format!(
            "rules in {}, {}{enable}",
            self.rules_dir.display(),
            self.write
        )
    }

    fn validate(&self, policy: &Policy) -> Result<(), String> {
        self.check(policy)
    }

    fn filters_host_input(&self) -> bool {
        true
    }

    fn host_place(&self) -> Option<HostPlace> {
        Some(HostPlace::UfwUserInput)
    }

    fn debian_packages() -> &'static [&'static str] {
        &["ufw"]
    }
}
