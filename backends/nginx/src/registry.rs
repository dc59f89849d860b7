//! What the registry needs to know about the nginx real-IP backend.

use cf_allowlist_backend::{Backend, BackendOptions, Policy};

use crate::{ApacheOptions, NginxBackend, NginxOptions};

impl BackendOptions for NginxOptions {
    fn build(&self, _policy: &Policy, _owner: Option<&str>) -> Box<dyn Backend> {
        // The include file's header names cf-allowlist; one file has one writer.
        Box::new(NginxBackend::new(self.clone()))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn validate(&self, policy: &Policy) -> Result<(), String> {
        if policy.restrict {
            return Err(
                "`restrict` does not apply to a real-IP list (it drops no traffic); set \
                 `restrict = false` in this [[backend]] table or leave `--restrict` off"
                    .to_owned(),
            );
        }
        self.check()
    }

    fn has_ports(&self) -> bool {
        false
    }

    fn restrict_does_not_apply() -> Option<&'static str> {
        Some("a real-IP list drops no traffic")
    }

    fn debian_packages() -> &'static [&'static str] {
        &["nginx-light"]
    }
}

impl BackendOptions for ApacheOptions {
    fn build(&self, _policy: &Policy, _owner: Option<&str>) -> Box<dyn Backend> {
        // The include file's header names cf-allowlist; one file has one writer.
        Box::new(NginxBackend::apache(self.clone()))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn validate(&self, policy: &Policy) -> Result<(), String> {
        if policy.restrict {
            return Err(
                "`restrict` does not apply to a real-IP list (it drops no traffic); set \
                 `restrict = false` in this [[backend]] table or leave `--restrict` off"
                    .to_owned(),
            );
        }
        self.check()
    }

    fn has_ports(&self) -> bool {
        false
    }

    fn restrict_does_not_apply() -> Option<&'static str> {
        Some("a real-IP list drops no traffic")
    }

    fn debian_packages() -> &'static [&'static str] {
        &["apache2"]
    }
}
