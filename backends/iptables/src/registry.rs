//! What the registry needs to know about the iptables backend.

use cf_allowlist_backend::{Backend, BackendOptions, HostPlace, Policy};

use crate::{IptablesBackend, IptablesOptions};

impl BackendOptions for IptablesOptions {
    fn build(&self, policy: &Policy, owner: Option<&str>) -> Box<dyn Backend> {
        Box::new(
            IptablesBackend::new(self.clone(), policy.clone()).owned_by(owner.map(str::to_owned)),
        )
    }

    fn describe(&self) -> String {
        let docker = if self.docker_user {
            ", DOCKER-USER too"
        } else {
            ""
        };
        format!("{} variant, {} mode{docker}", self.variant, self.mode)
    }

    fn validate(&self, policy: &Policy) -> Result<(), String> {
        self.check(policy.restrict)
    }

    fn generation_proves(&self, _target: &cf_allowlist_backend::Ranges) -> bool {
        // iptables-nft's rules are nf_tables rules; legacy iptables and ipsets are other
        // kernel APIs that no generation counts. `mode = "auto"` writes rules up to
        // AUTO_IPSET_ABOVE ranges a family, but may keep an ipset from an earlier, longer
        // list: the judgement's reading sees a rule matching a set (ours too) and then records
        // no proof, and an apply that writes a set counts nothing (`committed`).
        self.variant != crate::Variant::Legacy && self.mode != crate::Mode::Ipset
    }

    fn filters_host_input(&self) -> bool {
        true
    }

    fn host_place(&self) -> Option<HostPlace> {
        let legacy = match self.variant {
            crate::Variant::Legacy => Some(true),
            crate::Variant::Nft => Some(false),
            crate::Variant::Auto => None,
        };
        Some(HostPlace::IptablesInput {
            legacy,
            default_legacy: crate::default_variant_is_legacy(),
        })
    }

    fn covers_docker(&self) -> bool {
        self.docker_user
    }

    fn one_per_host() -> bool {
        true
    }

    fn debian_packages() -> &'static [&'static str] {
        &["iptables", "ipset"]
    }
}
