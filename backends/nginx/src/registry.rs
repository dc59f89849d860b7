//! What the registry needs to know about the real-IP backends (nginx's, Apache's and Caddy's): the two
//! kinds differ only in how the backend is built and which package provides the server.

use cf_allowlist_backend::{Backend, BackendOptions, Policy};

use crate::{ApacheOptions, CaddyOptions, NginxBackend, NginxOptions};

/// One `BackendOptions` impl per real-IP kind: `$build` turns the options into the backend.
macro_rules! real_ip_options {
    ($options:ty, $build:path, $package:literal) => {
        impl BackendOptions for $options {
            fn build(&self, _policy: &Policy, _owner: Option<&str>) -> Box<dyn Backend> {
                // The include file's header names cf-allowlist; one file has one writer.
                Box::new($build(self.clone()))
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
                &[$package]
            }
        }
    };
}

real_ip_options!(NginxOptions, NginxBackend::new, "nginx-light");
real_ip_options!(ApacheOptions, NginxBackend::apache, "apache2");
real_ip_options!(CaddyOptions, NginxBackend::caddy, "caddy");
