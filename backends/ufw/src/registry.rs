//! What the registry needs to know about the ufw backend.

use cf_allowlist_backend::{Backend, BackendOptions, HostPlace, Policy};

use crate::{UfwBackend, UfwOptions};

impl BackendOptions for UfwOptions {
    fn build(&self, policy: &Policy, _owner: Option<&str>) -> Box<dyn Backend> {
        // ufw's rules carry the plain `cf-allowlist` comment: ufw matches rules by spec, and
        // an owner mark would make two state directories' rules look different to us but the
        // same to ufw.
        Box::new(UfwBackend::new(self.clone(), policy.clone()))
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
