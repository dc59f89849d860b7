//! What the registry needs to know about the firewalld backend.

use cf_allowlist_backend::{Backend, BackendOptions, HostPlace, Policy};

use crate::{FirewalldBackend, FirewalldOptions, names};

impl BackendOptions for FirewalldOptions {
    fn build(&self, policy: &Policy, owner: Option<&str>) -> Box<dyn Backend> {
        Box::new(
            FirewalldBackend::new(self.clone(), policy.clone()).owned_by(owner.map(str::to_owned)),
        )
    }

    fn describe(&self) -> String {
        match self.zone() {
            Some(zone) => format!("zone {zone}, ipsets cf-allowlist-v4/v6"),
            None => "default zone, ipsets cf-allowlist-v4/v6".to_owned(),
        }
    }

    fn validate(&self, _policy: &Policy) -> Result<(), String> {
        self.check()
    }

    fn filters_host_input(&self) -> bool {
        true
    }

    fn host_place(&self) -> Option<HostPlace> {
        let zone = self
            .zone()
            .map(str::to_owned)
            .unwrap_or_else(crate::default_zone_from_conf);
        Some(HostPlace::NftChain {
            table: names::TABLE.to_owned(),
            chain: names::allow_chain(&zone),
        })
    }

    fn one_per_host() -> bool {
        true
    }

    fn debian_packages() -> &'static [&'static str] {
        &[names::PACKAGE]
    }
}
