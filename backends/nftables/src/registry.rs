//! What the registry needs to know about the nftables backend.

use cf_allowlist_backend::{Backend, BackendOptions, HostPlace, Policy};

use crate::{NftablesBackend, NftablesOptions};

impl BackendOptions for NftablesOptions {
    fn build(&self, policy: &Policy, owner: Option<&str>) -> Box<dyn Backend> {
        Box::new(
            NftablesBackend::new(self.clone(), policy.clone()).owned_by(owner.map(str::to_owned)),
        )
    }

    fn describe(&self) -> String {
        format!("inet {} {}", self.table, self.chain)
    }

    fn validate(&self, _policy: &Policy) -> Result<(), String> {
        self.check_names()
    }

    fn filters_host_input(&self) -> bool {
        true
    }

    fn host_place(&self) -> Option<HostPlace> {
        Some(HostPlace::NftChain {
            table: self.table.clone(),
            chain: self.chain.clone(),
        })
    }

    fn generation_proves(&self, _target: &cf_allowlist_backend::Ranges) -> bool {
        // Our table, chain, rules and sets are all nf_tables objects.
        true
    }

    fn know_proven(&self, generation: u32, target: &cf_allowlist_backend::Ranges) {
        // Our two sets hold the target's ranges of their family: the reading at this
        // generation need not dump them from the kernel (O(n²) there).
        for family in cf_allowlist_backend::Family::ALL {
            crate::netlink::know_elements(
                generation,
                crate::names::FAMILY,
                &self.table,
                crate::names::set_name(family),
                target
                    .family(family)
                    .map(|net| (net.network(), net.broadcast()))
                    .collect(),
            );
        }
    }

    fn one_per_host() -> bool {
        true
    }

    fn debian_packages() -> &'static [&'static str] {
        &["nftables"]
    }
}
