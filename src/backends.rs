//! The backend registry: the one place that names concrete backends.
//!
//! For each backend it says which kind it is (`--backend KIND`, `kind = "…"`), which options its
//! `[[backend]]` table takes, how the resolved spec that the state records is built into a
//! [`Backend`], and how it is described in plans. Everything else in the crate handles
//! backends through [`BackendSpec`] and the [`Backend`] trait.
//!
//! Adding a backend: a crate under `backends/`, a cargo feature for it, and here one variant in
//! [`BackendKind`], [`BackendEntry`] and [`BackendSpec`], one arm in `with_options!`, and one
//! [`BackendOptions`] impl. The config table and the saved spec are internally tagged enums, so
//! an option of one backend in another's table cannot be written down (each options struct
//! rejects unknown keys), and the state does not depend on clap.

use std::fmt::Debug;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};

use cf_allowlist_backend::{Backend, Policy};

/// What one kind of backend's options must provide.
pub trait BackendOptions:
    Debug + Clone + Default + PartialEq + Eq + Serialize + DeserializeOwned
{
    /// Builds the backend for `policy`; what it writes is marked as `owner`'s (a state
    /// directory's id) where the backend can carry a mark.
    fn build(&self, policy: &Policy, owner: Option<&str>) -> Box<dyn Backend>;
    /// Where it writes, for plans: `inet filter input`.
    fn describe(&self) -> String;
    /// Whether the backend's accepts filter this host's own input (so that other tables and
    /// chains of the host's netfilter can cancel them: the shadowing analysis applies).
    fn filters_host_input(&self) -> bool {
        false
    }
    /// Checks the options (and the policy they are combined with) at config load, before any
    /// fetch; the message completes "invalid backend options: …".
    fn validate(&self, _policy: &Policy) -> Result<(), String> {
        Ok(())
    }
    /// Whether what it writes is limited to the policy's ports (a firewall's rules are; a web
    /// server's real-IP list is not), for plans.
    fn has_ports(&self) -> bool {
        true
    }
}

/// The kinds of backend compiled into this build, as `--backend` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// nftables, through `nft`.
    #[cfg(feature = "nftables")]
    Nftables,
    /// iptables and ip6tables (nf_tables or legacy), optionally with ipset.
    #[cfg(feature = "iptables")]
    Iptables,
    /// nginx's real-IP include file (`set_real_ip_from`), not a firewall.
    #[cfg(feature = "nginx")]
    #[serde(rename = "nginx-realip")]
    #[value(name = "nginx-realip")]
    NginxRealip,
    /// ufw's own rules, through `ufw`.
    #[cfg(feature = "ufw")]
    Ufw,
    /// AWS security groups, through the EC2 API.
    #[cfg(feature = "aws")]
    Aws,
    /// The in-memory firewall of the core's tests; never in a shipped binary.
    #[cfg(test)]
    Memory,
}

/// One `[[backend]]` table of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BackendEntry {
    /// `kind = "nftables"`.
    #[cfg(feature = "nftables")]
    Nftables(Entry<cf_allowlist_nftables::NftablesOptions>),
    /// `kind = "iptables"`.
    #[cfg(feature = "iptables")]
    Iptables(Entry<cf_allowlist_iptables::IptablesOptions>),
    /// `kind = "nginx-realip"`.
    #[cfg(feature = "nginx")]
    #[serde(rename = "nginx-realip")]
    NginxRealip(Entry<cf_allowlist_nginx::NginxOptions>),
    /// `kind = "ufw"`.
    #[cfg(feature = "ufw")]
    Ufw(Entry<cf_allowlist_ufw::UfwOptions>),
    /// `kind = "aws"`.
    #[cfg(feature = "aws")]
    Aws(Entry<cf_allowlist_aws::AwsOptions>),
    /// `kind = "memory"` (tests only).
    #[cfg(test)]
    Memory(Entry<MemoryOptions>),
}

/// A fully resolved backend: the policy and options it writes with. The state records these,
/// so that later commands act on the same firewall parts. The saved form is
/// `{"kind": "nftables", "policy": {…}, "nftables": {…}}`, as it has been since the first release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BackendSpec {
    /// nftables.
    #[cfg(feature = "nftables")]
    Nftables {
        /// Ports and restrict mode.
        policy: Policy,
        /// Table and chain.
        nftables: cf_allowlist_nftables::NftablesOptions,
    },
    /// iptables.
    #[cfg(feature = "iptables")]
    Iptables {
        /// Ports and restrict mode.
        policy: Policy,
        /// Variant and mode.
        iptables: cf_allowlist_iptables::IptablesOptions,
    },
    /// nginx's real-IP include file.
    #[cfg(feature = "nginx")]
    #[serde(rename = "nginx-realip")]
    NginxRealip {
        /// Ports and restrict mode (neither reaches the file; restrict is refused).
        policy: Policy,
        /// The file and the test and reload commands.
        nginx: cf_allowlist_nginx::NginxOptions,
    },
    /// ufw.
    #[cfg(feature = "ufw")]
    Ufw {
        /// Ports and restrict mode.
        policy: Policy,
        /// Rules folder, program, and whether ufw may be enabled.
        ufw: cf_allowlist_ufw::UfwOptions,
    },
    /// AWS security groups.
    #[cfg(feature = "aws")]
    Aws {
        /// Ports (restrict is always false: refused at load).
        policy: Policy,
        /// Groups, region, mode and quota.
        aws: cf_allowlist_aws::AwsOptions,
    },
    /// The in-memory firewall (tests only).
    #[cfg(test)]
    Memory {
        /// Ports and restrict mode.
        policy: Policy,
        /// Which named firewall.
        memory: MemoryOptions,
    },
}

/// Runs `$body` with the spec's policy and options bound, whatever its kind.
macro_rules! with_options {
    ($spec:expr, |$policy:ident, $options:ident| $body:expr) => {
        match $spec {
            #[cfg(feature = "nftables")]
            BackendSpec::Nftables {
                policy: $policy,
                nftables: $options,
            } => $body,
            #[cfg(feature = "iptables")]
            BackendSpec::Iptables {
                policy: $policy,
                iptables: $options,
            } => $body,
            #[cfg(feature = "nginx")]
            BackendSpec::NginxRealip {
                policy: $policy,
                nginx: $options,
            } => $body,
            #[cfg(feature = "ufw")]
            BackendSpec::Ufw {
                policy: $policy,
                ufw: $options,
            } => $body,
            #[cfg(feature = "aws")]
            BackendSpec::Aws {
                policy: $policy,
                aws: $options,
            } => $body,
            #[cfg(test)]
            BackendSpec::Memory {
                policy: $policy,
                memory: $options,
            } => $body,
        }
    };
}

impl BackendKind {
    /// Whether at most one backend of this kind may be configured: those whose parts have
    /// fixed names on the host (and whose observe removes our parts found elsewhere, which a
    /// second one would be).
    pub fn one_per_host(self) -> bool {
        match self {
            #[cfg(feature = "nftables")]
            BackendKind::Nftables => true,
            #[cfg(feature = "iptables")]
            BackendKind::Iptables => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The kind's name, as in the config file.
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "nftables")]
            BackendKind::Nftables => "nftables",
            #[cfg(feature = "iptables")]
            BackendKind::Iptables => "iptables",
            #[cfg(feature = "nginx")]
            BackendKind::NginxRealip => "nginx-realip",
            #[cfg(feature = "ufw")]
            BackendKind::Ufw => "ufw",
            #[cfg(feature = "aws")]
            BackendKind::Aws => "aws",
            #[cfg(test)]
            BackendKind::Memory => "memory",
        }
    }
}

impl BackendEntry {
    /// The entry `--backend KIND` stands for when the config has none of that kind.
    pub fn for_kind(kind: BackendKind) -> BackendEntry {
        match kind {
            #[cfg(feature = "nftables")]
            BackendKind::Nftables => BackendEntry::Nftables(Entry::default()),
            #[cfg(feature = "iptables")]
            BackendKind::Iptables => BackendEntry::Iptables(Entry::default()),
            #[cfg(feature = "nginx")]
            BackendKind::NginxRealip => BackendEntry::NginxRealip(Entry::default()),
            #[cfg(feature = "ufw")]
            BackendKind::Ufw => BackendEntry::Ufw(Entry::default()),
            #[cfg(feature = "aws")]
            BackendKind::Aws => BackendEntry::Aws(Entry::default()),
            #[cfg(test)]
            BackendKind::Memory => BackendEntry::Memory(Entry::default()),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> BackendKind {
        match self {
            #[cfg(feature = "nftables")]
            BackendEntry::Nftables(_) => BackendKind::Nftables,
            #[cfg(feature = "iptables")]
            BackendEntry::Iptables(_) => BackendKind::Iptables,
            #[cfg(feature = "nginx")]
            BackendEntry::NginxRealip(_) => BackendKind::NginxRealip,
            #[cfg(feature = "ufw")]
            BackendEntry::Ufw(_) => BackendKind::Ufw,
            #[cfg(feature = "aws")]
            BackendEntry::Aws(_) => BackendKind::Aws,
            #[cfg(test)]
            BackendEntry::Memory(_) => BackendKind::Memory,
        }
    }

    /// Resolves the entry with the shared policy `defaults` and the command line's
    /// `ports`/`restrict` (which win over both), and validates the result.
    pub fn resolve(
        &self,
        defaults: &Policy,
        ports: Option<&[u16]>,
        restrict: Option<bool>,
    ) -> Result<BackendSpec, String> {
        fn policy<O>(
            entry: &Entry<O>,
            defaults: &Policy,
            ports: Option<&[u16]>,
            restrict: Option<bool>,
        ) -> Result<Policy, String> {
            let ports = match (ports, &entry.ports) {
                (Some(ports), _) => normalise_ports(ports.to_vec())?,
                (None, Some(ports)) => normalise_ports(ports.clone())?,
                (None, None) => defaults.ports.clone(),
            };
            let restrict = restrict.or(entry.restrict).unwrap_or(defaults.restrict);
            Ok(Policy { ports, restrict })
        }
        let spec = match self {
            #[cfg(feature = "nftables")]
            BackendEntry::Nftables(entry) => BackendSpec::Nftables {
                policy: policy(entry, defaults, ports, restrict)?,
                nftables: entry.options.clone(),
            },
            #[cfg(feature = "iptables")]
            BackendEntry::Iptables(entry) => BackendSpec::Iptables {
                policy: policy(entry, defaults, ports, restrict)?,
                iptables: entry.options.clone(),
            },
            #[cfg(feature = "nginx")]
            BackendEntry::NginxRealip(entry) => BackendSpec::NginxRealip {
                policy: policy(entry, defaults, ports, restrict)?,
                nginx: entry.options.clone(),
            },
            #[cfg(feature = "ufw")]
            BackendEntry::Ufw(entry) => BackendSpec::Ufw {
                policy: policy(entry, defaults, ports, restrict)?,
                ufw: entry.options.clone(),
            },
            #[cfg(feature = "aws")]
            BackendEntry::Aws(entry) => BackendSpec::Aws {
                policy: policy(entry, defaults, ports, restrict)?,
                aws: entry.options.clone(),
            },
            #[cfg(test)]
            BackendEntry::Memory(entry) => BackendSpec::Memory {
                policy: policy(entry, defaults, ports, restrict)?,
                memory: entry.options.clone(),
            },
        };
        with_options!(&spec, |policy, options| options.validate(policy))
            .map_err(|message| format!("backend {}: {message}", spec.kind().name()))?;
        Ok(spec)
    }
}

impl BackendSpec {
    /// Its kind.
    pub fn kind(&self) -> BackendKind {
        match self {
            #[cfg(feature = "nftables")]
            BackendSpec::Nftables { .. } => BackendKind::Nftables,
            #[cfg(feature = "iptables")]
            BackendSpec::Iptables { .. } => BackendKind::Iptables,
            #[cfg(feature = "nginx")]
            BackendSpec::NginxRealip { .. } => BackendKind::NginxRealip,
            #[cfg(feature = "ufw")]
            BackendSpec::Ufw { .. } => BackendKind::Ufw,
            #[cfg(feature = "aws")]
            BackendSpec::Aws { .. } => BackendKind::Aws,
            #[cfg(test)]
            BackendSpec::Memory { .. } => BackendKind::Memory,
        }
    }

    /// Whether its accepts filter this host's own input (see [`BackendOptions`]).
    pub fn filters_host_input(&self) -> bool {
        with_options!(self, |_policy, options| options.filters_host_input())
    }

    /// Ports and restrict mode.
    pub fn policy(&self) -> &Policy {
        with_options!(self, |policy, _options| policy)
    }

    /// Builds the backend, marking what it writes as `owner`'s.
    pub fn build(&self, owner: Option<&str>) -> Box<dyn Backend> {
        with_options!(self, |policy, options| options.build(policy, owner))
    }

    /// A short description for plans: `nftables (inet filter input, tcp 80,443)`; a backend
    /// whose rules have no ports is described by its place alone.
    pub fn describe(&self) -> String {
        let policy = self.policy();
        let ports: Vec<String> = policy.ports.iter().map(u16::to_string).collect();
        let restrict = if policy.restrict { ", restrict" } else { "" };
        let place = with_options!(self, |_policy, options| options.describe());
        if !with_options!(self, |_policy, options| options.has_ports()) {
            return format!("{} ({place})", self.kind().name());
        }
        format!(
            "{} ({place}, tcp {}{restrict})",
            self.kind().name(),
            ports.join(",")
        )
    }
}

/// A `[[backend]]` table: the shared policy keys, and the backend's own options, which reject
/// every key they do not know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry<O> {
    /// TCP ports for this backend (default: the top-level `ports`).
    pub ports: Option<Vec<u16>>,
    /// Restrict mode for this backend (default: the top-level `restrict`).
    pub restrict: Option<bool>,
    /// The backend's own options.
    pub options: O,
}

impl<'de, O: DeserializeOwned> Deserialize<'de> for Entry<O> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Entry<O>, D::Error> {
        // serde's `flatten` would let unknown keys through, so the shared keys are taken out by
        // hand and the rest goes to the options struct, which denies unknown fields.
        let mut table = toml::Table::deserialize(deserializer)?;
        let ports = table
            .remove("ports")
            .map(|value| value.try_into::<Vec<u16>>())
            .transpose()
            .map_err(|error| D::Error::custom(format!("`ports`: {}", error.message())))?;
        let restrict = table
            .remove("restrict")
            .map(|value| value.try_into::<bool>())
            .transpose()
            .map_err(|error| D::Error::custom(format!("`restrict`: {}", error.message())))?;
        let options = toml::Value::Table(table)
            .try_into::<O>()
            .map_err(|error| D::Error::custom(error.message()))?;
        Ok(Entry {
            ports,
            restrict,
            options,
        })
    }
}

/// Sorts and deduplicates ports; refuses an empty list and port 0.
pub fn normalise_ports(mut ports: Vec<u16>) -> Result<Vec<u16>, String> {
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() || ports.contains(&0) {
        return Err("ports must be a non-empty list of TCP ports from 1 to 65535".into());
    }
    Ok(ports)
}

#[cfg(feature = "nftables")]
impl BackendOptions for cf_allowlist_nftables::NftablesOptions {
    fn build(&self, policy: &Policy, owner: Option<&str>) -> Box<dyn Backend> {
        Box::new(
            cf_allowlist_nftables::NftablesBackend::new(self.clone(), policy.clone())
                .owned_by(owner.map(str::to_owned)),
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
}

#[cfg(feature = "iptables")]
impl BackendOptions for cf_allowlist_iptables::IptablesOptions {
    fn build(&self, policy: &Policy, owner: Option<&str>) -> Box<dyn Backend> {
        Box::new(
            cf_allowlist_iptables::IptablesBackend::new(self.clone(), policy.clone())
                .owned_by(owner.map(str::to_owned)),
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

    fn filters_host_input(&self) -> bool {
        true
    }
}

#[cfg(feature = "nginx")]
impl BackendOptions for cf_allowlist_nginx::NginxOptions {
    fn build(&self, _policy: &Policy, _owner: Option<&str>) -> Box<dyn Backend> {
        // The include file's header names cf-allowlist; one file has one writer.
        Box::new(cf_allowlist_nginx::NginxBackend::new(self.clone()))
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
}

#[cfg(feature = "ufw")]
impl BackendOptions for cf_allowlist_ufw::UfwOptions {
    fn build(&self, policy: &Policy, owner: Option<&str>) -> Box<dyn Backend> {
        // Unmarked rules of our exact shapes are adopted (the first release wrote no mark);
        // the core should pass whether the state's `written` records this backend instead.
        Box::new(
            cf_allowlist_ufw::UfwBackend::new(self.clone(), policy.clone())
                .owned_by(owner.map(str::to_owned))
                .adopting_unmarked(true),
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
}

#[cfg(feature = "aws")]
impl BackendOptions for cf_allowlist_aws::AwsOptions {
    fn build(&self, policy: &Policy, _owner: Option<&str>) -> Box<dyn Backend> {
        // Our rules' descriptions say `cf-allowlist`; a group's rules are found by that.
        Box::new(cf_allowlist_aws::AwsBackend::new(
            self.clone(),
            policy.clone(),
        ))
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
}

/// Options of the in-memory backend of the core's tests.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryOptions {
    /// The name of the process-wide firewall it writes to.
    #[serde(default = "default_memory_firewall")]
    pub firewall: String,
}

#[cfg(test)]
fn default_memory_firewall() -> String {
    "default".to_owned()
}

#[cfg(test)]
impl Default for MemoryOptions {
    fn default() -> MemoryOptions {
        MemoryOptions {
            firewall: default_memory_firewall(),
        }
    }
}

#[cfg(test)]
impl BackendOptions for MemoryOptions {
    fn build(&self, policy: &Policy, owner: Option<&str>) -> Box<dyn Backend> {
        Box::new(
            cf_allowlist_memory::MemoryBackend::new(
                cf_allowlist_memory::SharedFirewall::named(&self.firewall),
                policy.clone(),
            )
            .labelled(format!("memory {}", self.firewall))
            .owned_by(owner.map(str::to_owned)),
        )
    }

    fn describe(&self) -> String {
        format!("firewall {}", self.firewall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Config {
        backend: Vec<BackendEntry>,
    }

    fn parse(text: &str) -> Result<Vec<BackendEntry>, String> {
        toml::from_str::<Config>(text)
            .map(|config| config.backend)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn an_option_of_another_backend_cannot_be_written_down() {
        let error = parse("[[backend]]\nkind = \"nftables\"\nvariant = \"legacy\"").unwrap_err();
        assert!(error.contains("unknown field `variant`"), "{error}");
        let error = parse("[[backend]]\nkind = \"iptables\"\ntable = \"filter\"").unwrap_err();
        assert!(error.contains("unknown field `table`"), "{error}");
        let error = parse("[[backend]]\nkind = \"pf\"").unwrap_err();
        assert!(error.contains("unknown variant `pf`"), "{error}");
        let error = parse("[[backend]]\nkind = \"nftables\"\nports = \"80\"").unwrap_err();
        assert!(error.contains("`ports`"), "{error}");
    }

    #[test]
    fn entries_resolve_with_defaults_and_overrides() {
        let entries =
            parse("[[backend]]\nkind = \"nftables\"\ntable = \"fw\"\nports = [8443, 443]").unwrap();
        let defaults = Policy {
            ports: vec![80, 443],
            restrict: true,
        };
        let spec = entries[0].resolve(&defaults, None, None).unwrap();
        assert_eq!(spec.policy().ports, vec![443, 8443]);
        assert!(spec.policy().restrict);
        assert_eq!(
            spec.describe(),
            "nftables (inet fw input, tcp 443,8443, restrict)"
        );
        let spec = entries[0]
            .resolve(&defaults, Some(&[80]), Some(false))
            .unwrap();
        assert_eq!(spec.describe(), "nftables (inet fw input, tcp 80)");
    }

    #[test]
    fn bad_names_fail_at_load() {
        let entries = parse("[[backend]]\nkind = \"nftables\"\nchain = \"in put\"").unwrap();
        let defaults = Policy {
            ports: vec![80],
            restrict: false,
        };
        let error = entries[0].resolve(&defaults, None, None).unwrap_err();
        assert!(error.contains("chain name"), "{error}");
    }

    #[cfg(feature = "nginx")]
    #[test]
    fn an_nginx_realip_entry_resolves_and_refuses_restrict_and_relative_paths() {
        let defaults = Policy {
            ports: vec![80, 443],
            restrict: false,
        };
        let entries = parse(
            "[[backend]]\nkind = \"nginx-realip\"\npath = \"/srv/nginx/realip.conf\"\n\
             test_command = [\"/usr/sbin/nginx\", \"-t\", \"-q\"]",
        )
        .unwrap();
        let spec = entries[0].resolve(&defaults, None, None).unwrap();
        assert_eq!(spec.describe(), "nginx-realip (/srv/nginx/realip.conf)");
        // The saved spec reads back, and the kind is spelled with its hyphen.
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["kind"], "nginx-realip");
        assert_eq!(serde_json::from_value::<BackendSpec>(json).unwrap(), spec);
        let error = entries[0].resolve(&defaults, None, Some(true)).unwrap_err();
        assert!(
            error.contains("backend nginx-realip: `restrict` does not apply"),
            "{error}"
        );
        let entries =
            parse("[[backend]]\nkind = \"nginx-realip\"\npath = \"realip.conf\"").unwrap();
        let error = entries[0].resolve(&defaults, None, None).unwrap_err();
        assert!(error.contains("`path` must be absolute"), "{error}");
        let error = parse("[[backend]]\nkind = \"nginx-realip\"\ntable = \"filter\"").unwrap_err();
        assert!(error.contains("unknown field `table`"), "{error}");
        let defaults_only = BackendEntry::for_kind(BackendKind::NginxRealip)
            .resolve(&defaults, None, None)
            .unwrap();
        assert_eq!(
            defaults_only.describe(),
            "nginx-realip (/etc/nginx/conf.d/cf-allowlist-realip.conf)"
        );
    }

    #[test]
    fn a_state_written_by_the_first_release_still_loads() {
        let state: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/state-0.1.0/state.json")).unwrap();
        let specs: Vec<BackendSpec> =
            serde_json::from_value(state["last_sync"]["backends"].clone()).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            specs[0].describe(),
            "nftables (inet filter input, tcp 80,443)"
        );
        assert_eq!(
            specs[1].describe(),
            "iptables (auto variant, auto mode, tcp 80,443)"
        );
        // And it is written back in the same form.
        let again: Vec<BackendSpec> =
            serde_json::from_str(&serde_json::to_string(&specs).unwrap()).unwrap();
        assert_eq!(again, specs);
    }

    #[cfg(feature = "aws")]
    #[test]
    fn aws_refuses_restrict_and_needs_a_group_at_load() {
        let defaults = Policy {
            ports: vec![80, 443],
            restrict: false,
        };
        let entries = parse(
            "[[backend]]\nkind = \"aws\"\nrestrict = true\nsecurity_group_ids = [\"sg-0abc\"]",
        )
        .unwrap();
        let error = entries[0].resolve(&defaults, None, None).unwrap_err();
        assert!(
            error.contains("restrict has no meaning for a security group"),
            "{error}"
        );
        let error = BackendEntry::for_kind(BackendKind::Aws)
            .resolve(&defaults, None, None)
            .unwrap_err();
        assert!(
            error.contains("security_group_ids must name at least one"),
            "{error}"
        );
        let entries = parse(
            "[[backend]]\nkind = \"aws\"\nsecurity_group_ids = [\"sg-0abc\", \"sg-0def\"]\nregion = \"eu-west-1\"\nmode = \"prefix-list\"\nmax_rules = 120",
        )
        .unwrap();
        let spec = entries[0].resolve(&defaults, None, None).unwrap();
        assert_eq!(
            spec.describe(),
            "aws (sg-0abc, sg-0def in eu-west-1, prefix-list mode, tcp 80,443)"
        );
        let error = parse("[[backend]]\nkind = \"aws\"\ntable = \"filter\"").unwrap_err();
        assert!(error.contains("unknown field `table`"), "{error}");
    }
}
