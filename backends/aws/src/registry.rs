//! What the registry needs to know about the AWS security groups backend.

use cf_allowlist_backend::{Backend, BackendOptions, Policy};

use crate::{AwsBackend, AwsOptions};

impl BackendOptions for AwsOptions {
    fn build(&self, policy: &Policy, _owner: Option<&str>) -> Box<dyn Backend> {
        // Our rules' descriptions say `cf-allowlist`; a group's rules are found by that.
        Box::new(AwsBackend::new(self.clone(), policy.clone()))
    }

    fn describe(&self) -> String {
        let region = self
            .region
            .as_deref()
            .map(|region| format!(" in {region}"))
            .unwrap_or_default();
        format!(
            "{}{region}, {} mode",
            self.security_group_ids.join(", "),
            self.mode
        )
    }

    fn validate(&self, policy: &Policy) -> Result<(), String> {
        self.check(policy)
    }

    fn restrict_does_not_apply() -> Option<&'static str> {
        Some("a security group denies everything it does not allow")
    }
}
