//! The backend registry: the one place that names concrete backends.
//!
//! `registry!` takes one line per backend (its cargo feature, its kind as the config file
//! and `--backend` spell it, the field its options are saved under, and its options type) and
//! generates [`BackendKind`], [`BackendEntry`], [`BackendSpec`] and every match over them.
//! Everything a kind needs beyond that line (how it is built and described, its checks, what
//! restrict and Docker mean for it, its Debian packages) comes from its options'
//! [`BackendOptions`] impl, in the backend's own crate. The config table and the saved spec
//! are internally tagged enums, so an option of one backend in another's table cannot be
//! written down (each options struct rejects unknown keys), and the state does not depend on
//! clap.
//!
//! Adding a backend: a crate under `backends/` implementing [`Backend`] and
//! [`BackendOptions`], a cargo feature for it, and one line in the `registry!` call below
//! (ARCHITECTURE.md, "Adding a backend"; `tests/sixth_backend.sh` checks it).

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};

pub use cf_allowlist_backend::BackendOptions;
use cf_allowlist_backend::{Backend, Policy};

/// Generates the kind, config-entry and saved-spec enums and their matches from one line per
/// backend: `#[cfg(feature = "…")] Variant = "kind", options_field: OptionsType, "doc";`.
macro_rules! registry {
    ($( $(#[$cfg:meta])* $variant:ident = $name:literal, $field:ident: $options:ty, $doc:literal; )*) => {
        /// The kinds of backend compiled into this build, as `--backend` names them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
        pub enum BackendKind {
            $(
                #[doc = $doc]
                $(#[$cfg])*
                #[serde(rename = $name)]
                #[value(name = $name)]
                $variant,
            )*
        }

        /// One `[[backend]]` table of the config file.
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
        #[serde(tag = "kind")]
        pub enum BackendEntry {
            $(
                #[doc = $doc]
                $(#[$cfg])*
                #[serde(rename = $name)]
                $variant(Entry<$options>),
            )*
        }

        /// A fully resolved backend: the policy and options it writes with. The state records
        /// these, so that later commands act on the same firewall parts. The saved form is
        /// `{"kind": "nftables", "policy": {…}, "nftables": {…}}`, as it has been since the
        /// first release.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "kind")]
        pub enum BackendSpec {
            $(
                #[doc = $doc]
                $(#[$cfg])*
                #[serde(rename = $name)]
                $variant {
                    /// Ports and restrict mode.
                    policy: Policy,
                    /// The backend's own options.
                    $field: $options,
                },
            )*
        }

        impl BackendKind {
            /// The kind's name, as in the config file.
            pub fn name(self) -> &'static str {
                match self {
                    $( $(#[$cfg])* BackendKind::$variant => $name, )*
                }
            }

            /// Whether at most one backend of this kind may be configured (see
            /// [`BackendOptions::one_per_host`]).
            pub fn one_per_host(self) -> bool {
                match self {
                    $( $(#[$cfg])* BackendKind::$variant => <$options>::one_per_host(), )*
                }
            }

            /// Why restrict means nothing for this kind, if it does not (see
            /// [`BackendOptions::restrict_does_not_apply`]).
            pub fn restrict_does_not_apply(self) -> Option<&'static str> {
                match self {
                    $( $(#[$cfg])* BackendKind::$variant => <$options>::restrict_does_not_apply(), )*
                }
            }

            /// The Debian packages whose tools it runs.
            pub fn debian_packages(self) -> &'static [&'static str] {
                match self {
                    $( $(#[$cfg])* BackendKind::$variant => <$options>::debian_packages(), )*
                }
            }
        }

        impl BackendEntry {
            /// The entry `--backend KIND` stands for when the config has none of that kind.
            pub fn for_kind(kind: BackendKind) -> BackendEntry {
                match kind {
                    $( $(#[$cfg])* BackendKind::$variant => BackendEntry::$variant(Entry::default()), )*
                }
            }

            /// Its kind.
            pub fn kind(&self) -> BackendKind {
                match self {
                    $( $(#[$cfg])* BackendEntry::$variant(_) => BackendKind::$variant, )*
                }
            }

            /// Resolves the entry with the shared policy `defaults` and the command line's
            /// `ports`/`restrict` (which win over both), and validates the result. Where restrict
            /// means nothing for the kind, the top-level `restrict = true` is passed by with a
            /// note in `notes`; asked for in the entry or on the command line, it is refused.
            pub fn resolve(
                &self,
                defaults: &Policy,
                ports: Option<&[u16]>,
                restrict: Option<bool>,
                notes: &mut Vec<String>,
            ) -> Result<BackendSpec, String> {
                let spec = match self {
                    $(
                        $(#[$cfg])*
                        BackendEntry::$variant(entry) => BackendSpec::$variant {
                            policy: entry.policy($name, defaults, ports, restrict, notes)?,
                            $field: entry.options.clone(),
                        },
                    )*
                };
                spec.validate()
                    .map_err(|message| format!("backend {}: {message}", spec.kind().name()))?;
                Ok(spec)
            }
        }

        impl BackendSpec {
            /// Its kind.
            pub fn kind(&self) -> BackendKind {
                match self {
                    $( $(#[$cfg])* BackendSpec::$variant { .. } => BackendKind::$variant, )*
                }
            }

            /// Ports and restrict mode.
            pub fn policy(&self) -> &Policy {
                match self {
                    $( $(#[$cfg])* BackendSpec::$variant { policy, .. } => policy, )*
                }
            }

            fn validate(&self) -> Result<(), String> {
                match self {
                    $( $(#[$cfg])* BackendSpec::$variant { policy, $field } => $field.validate(policy), )*
                }
            }

            /// Builds the backend, marking what it writes as `owner`'s.
            pub fn build(&self, owner: Option<&str>) -> Box<dyn Backend> {
                match self {
                    $( $(#[$cfg])* BackendSpec::$variant { policy, $field } => $field.build(policy, owner), )*
                }
            }

            /// Builds the backend for a state directory that recorded writing to this kind
            /// before (`adopt_unmarked`; see [`BackendOptions::build_adopting`]).
            pub fn build_adopting(&self, owner: Option<&str>, adopt_unmarked: bool) -> Box<dyn Backend> {
                match self {
                    $( $(#[$cfg])* BackendSpec::$variant { policy, $field } => $field.build_adopting(policy, owner, adopt_unmarked), )*
                }
            }

            /// Whether its accepts filter this host's own input (see [`BackendOptions`]).
            pub fn filters_host_input(&self) -> bool {
                match self {
                    $( $(#[$cfg])* BackendSpec::$variant { $field, .. } => $field.filters_host_input(), )*
                }
            }

            /// Whether the nf_tables generation vouches for what it holds of `target` (see
            /// [`BackendOptions::generation_proves`]).
            pub fn generation_proves(&self, target: &cf_allowlist_backend::Ranges) -> bool {
                match self {
                    $( $(#[$cfg])* BackendSpec::$variant { $field, .. } => $field.generation_proves(target), )*
                }
            }

            /// Tells it that `generation` proves it holds `target` (see
            /// [`BackendOptions::know_proven`]).
            pub fn know_proven(&self, generation: u32, target: &cf_allowlist_backend::Ranges) {
                match self {
                    $( $(#[$cfg])* BackendSpec::$variant { $field, .. } => $field.know_proven(generation, target), )*
                }
            }

            /// Whether it also filters Docker's DOCKER-USER chain (see [`BackendOptions`]).
            pub fn covers_docker(&self) -> bool {
                match self {
                    $( $(#[$cfg])* BackendSpec::$variant { $field, .. } => $field.covers_docker(), )*
                }
            }

            /// Where its accepts sit in this host's netfilter, as its options say.
            fn host_place(&self) -> Option<cf_allowlist_backend::HostPlace> {
                match self {
                    $( $(#[$cfg])* BackendSpec::$variant { $field, .. } => $field.host_place(), )*
                }
            }

            /// Where it writes, and whether its rules have ports.
            fn where_written(&self) -> (String, bool) {
                match self {
                    $( $(#[$cfg])* BackendSpec::$variant { $field, .. } => ($field.describe(), $field.has_ports()), )*
                }
            }
        }
    };
}

registry! {
    #[cfg(feature = "nftables")] Nftables = "nftables", nftables: cf_allowlist_nftables::NftablesOptions, "nftables, through `nft`.";
    #[cfg(feature = "iptables")] Iptables = "iptables", iptables: cf_allowlist_iptables::IptablesOptions, "iptables and ip6tables (nf_tables or legacy), optionally with ipset.";
    #[cfg(feature = "nginx")] NginxRealip = "nginx-realip", nginx: cf_allowlist_nginx::NginxOptions, "nginx's real-IP include file (`set_real_ip_from`), not a firewall.";
    #[cfg(feature = "nginx")] ApacheRealip = "apache-realip", apache: cf_allowlist_nginx::ApacheOptions, "Apache's mod_remoteip include file (`RemoteIPTrustedProxy`), not a firewall.";
    #[cfg(feature = "nginx")] CaddyRealip = "caddy-realip", caddy: cf_allowlist_nginx::CaddyOptions, "Caddy's `servers` snippet (`trusted_proxies static`, `client_ip_headers`), not a firewall.";
    #[cfg(feature = "ufw")] Ufw = "ufw", ufw: cf_allowlist_ufw::UfwOptions, "ufw's own rules, through `ufw`.";
    #[cfg(feature = "firewalld")] Firewalld = "firewalld", firewalld: cf_allowlist_firewalld::FirewalldOptions, "firewalld's ipsets and rich rules, over D-Bus.";
    #[cfg(feature = "aws")] Aws = "aws", aws: cf_allowlist_aws::AwsOptions, "AWS security groups, through the EC2 API.";
    #[cfg(test)] Memory = "memory", memory: MemoryOptions, "The in-memory firewall of the core's tests; never in a shipped binary.";
}

impl BackendSpec {
    /// Where its accepts sit in `host`'s netfilter (see [`BackendOptions::host_place`]); an
    /// iptables backend with `variant = "auto"` is placed as it writes: in the variant that
    /// holds the host's own rules (where both do, the one holding our chain), else in the one
    /// plain `iptables` runs.
    pub fn place(
        &self,
        host: &cf_allowlist_netfilter::Host,
    ) -> Option<cf_allowlist_netfilter::Place> {
        use cf_allowlist_backend::HostPlace;
        use cf_allowlist_netfilter::Place;
        Some(match self.host_place()? {
            HostPlace::NftChain { table, chain } => Place::NftChain { table, chain },
            HostPlace::IptablesInput {
                legacy,
                default_legacy,
            } => Place::IptablesInput {
                legacy: legacy.unwrap_or_else(|| {
                    let (nft, legacy) = (
                        host.iptables_variant_in_use(false),
                        host.iptables_variant_in_use(true),
                    );
                    let ours_in_legacy = host.iptables_chain_in(true);
                    if nft != legacy {
                        legacy
                    } else if nft && ours_in_legacy != host.iptables_chain_in(false) {
                        // Both hold rules: where our chain is, if in one of them (as the
                        // backend does).
                        ours_in_legacy
                    } else {
                        default_legacy
                    }
                }),
            },
            HostPlace::UfwUserInput => Place::UfwUserInput,
        })
    }
}

impl BackendSpec {
    /// A short description for plans: `nftables (inet filter input, tcp 80,443)`; a backend
    /// whose rules have no ports is described by its place alone.
    pub fn describe(&self) -> String {
        let policy = self.policy();
        let ports: Vec<String> = policy.ports.iter().map(u16::to_string).collect();
        let restrict = if policy.restrict { ", restrict" } else { "" };
        let (place, has_ports) = self.where_written();
        if !has_ports {
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

impl<O: BackendOptions> Entry<O> {
    /// The entry's policy: the command line's `ports`/`restrict` win over the entry's, which
    /// win over the top-level `defaults`. The top-level `restrict = true` is not applied where
    /// restrict means nothing for the kind: `notes` says so instead.
    fn policy(
        &self,
        kind: &str,
        defaults: &Policy,
        ports: Option<&[u16]>,
        restrict: Option<bool>,
        notes: &mut Vec<String>,
    ) -> Result<Policy, String> {
        let ports = match (ports, &self.ports) {
            (Some(ports), _) => normalise_ports(ports.to_vec())?,
            (None, Some(ports)) => normalise_ports(ports.clone())?,
            (None, None) => defaults.ports.clone(),
        };
        let restrict = match (restrict.or(self.restrict), O::restrict_does_not_apply()) {
            // Asked for explicitly: the options' check refuses it where it means nothing.
            (Some(restrict), _) => restrict,
            (None, None) => defaults.restrict,
            (None, Some(reason)) => {
                if defaults.restrict {
                    notes.push(format!(
                        "backend {kind}: the top-level `restrict = true` does not apply here ({reason})"
                    ));
                }
                false
            }
        };
        Ok(Policy { ports, restrict })
    }
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

    /// Ports 80 and 443, restrict as given.
    fn web_ports(restrict: bool) -> Policy {
        Policy {
            ports: vec![80, 443],
            restrict,
        }
    }

    /// The entry resolved with `defaults` and no command-line overrides.
    fn resolved(entry: &BackendEntry, defaults: &Policy) -> Result<BackendSpec, String> {
        entry.resolve(defaults, None, None, &mut Vec::new())
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
        let defaults = web_ports(true);
        let spec = resolved(&entries[0], &defaults).unwrap();
        assert_eq!(spec.policy().ports, vec![443, 8443]);
        assert!(spec.policy().restrict);
        assert_eq!(
            spec.describe(),
            "nftables (inet fw input, tcp 443,8443, restrict)"
        );
        let spec = entries[0]
            .resolve(&defaults, Some(&[80]), Some(false), &mut Vec::new())
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
        let error = resolved(&entries[0], &defaults).unwrap_err();
        assert!(error.contains("chain name"), "{error}");
    }

    #[cfg(feature = "nginx")]
    #[test]
    fn an_nginx_realip_entry_resolves_and_refuses_restrict_and_relative_paths() {
        let defaults = web_ports(false);
        let entries = parse(
            "[[backend]]\nkind = \"nginx-realip\"\npath = \"/srv/nginx/realip.conf\"\n\
             test_command = [\"/usr/sbin/nginx\", \"-t\", \"-q\"]",
        )
        .unwrap();
        let spec = resolved(&entries[0], &defaults).unwrap();
        assert_eq!(spec.describe(), "nginx-realip (/srv/nginx/realip.conf)");
        // The saved spec reads back, and the kind is spelled with its hyphen.
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["kind"], "nginx-realip");
        assert_eq!(serde_json::from_value::<BackendSpec>(json).unwrap(), spec);
        let error = entries[0]
            .resolve(&defaults, None, Some(true), &mut Vec::new())
            .unwrap_err();
        assert!(
            error.contains("backend nginx-realip: `restrict` does not apply"),
            "{error}"
        );
        let entries =
            parse("[[backend]]\nkind = \"nginx-realip\"\npath = \"realip.conf\"").unwrap();
        let error = resolved(&entries[0], &defaults).unwrap_err();
        assert!(error.contains("`path` must be absolute"), "{error}");
        let error = parse("[[backend]]\nkind = \"nginx-realip\"\ntable = \"filter\"").unwrap_err();
        assert!(error.contains("unknown field `table`"), "{error}");
        let defaults_only =
            resolved(&BackendEntry::for_kind(BackendKind::NginxRealip), &defaults).unwrap();
        assert_eq!(
            defaults_only.describe(),
            "nginx-realip (/etc/nginx/conf.d/cf-allowlist-realip.conf)"
        );
    }

    /// Issue 18 item 7: README calls the top-level `restrict` the default for every backend.
    #[cfg(feature = "nginx")]
    #[test]
    fn the_top_level_restrict_passes_a_real_ip_list_by_with_a_note() {
        let defaults = web_ports(true);
        let mut notes = Vec::new();
        let spec = BackendEntry::for_kind(BackendKind::NginxRealip)
            .resolve(&defaults, None, None, &mut notes)
            .unwrap();
        assert!(!spec.policy().restrict);
        assert_eq!(
            notes,
            [
                "backend nginx-realip: the top-level `restrict = true` does not apply here (a real-IP list drops no traffic)"
            ]
        );
        // In its own table it is still a mistake.
        let entries = parse("[[backend]]\nkind = \"nginx-realip\"\nrestrict = true").unwrap();
        let error = resolved(&entries[0], &defaults).unwrap_err();
        assert!(error.contains("`restrict` does not apply"), "{error}");
        // Where it means something, it applies, without a note.
        let mut notes = Vec::new();
        let spec = BackendEntry::for_kind(BackendKind::Memory)
            .resolve(&defaults, None, None, &mut notes)
            .unwrap();
        assert!(spec.policy().restrict && notes.is_empty());
    }

    /// The registry says which Debian packages each backend drives; tests/run installs them
    /// and the Debian package recommends or suggests them.
    #[test]
    fn tests_run_and_the_debian_package_name_every_backends_packages() {
        let run = include_str!("../tests/run");
        let manifest: toml::Table = toml::from_str(include_str!("../Cargo.toml")).unwrap();
        let deb = &manifest["package"]["metadata"]["deb"];
        let relations = format!("{} {}", deb["recommends"], deb["suggests"]);
        for kind in <BackendKind as clap::ValueEnum>::value_variants() {
            for package in kind.debian_packages() {
                assert!(
                    run.contains(&format!(":{package} ")) || run.contains(&format!(":{package};")),
                    "tests/run does not install {package} (backend {})",
                    kind.name()
                );
                assert!(
                    relations.contains(package),
                    "the Debian package neither recommends nor suggests {package} (backend {})",
                    kind.name()
                );
            }
        }
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
        let defaults = web_ports(false);
        let entries = parse(
            "[[backend]]\nkind = \"aws\"\nrestrict = true\nsecurity_group_ids = [\"sg-0abc\"]",
        )
        .unwrap();
        let error = resolved(&entries[0], &defaults).unwrap_err();
        assert!(
            error.contains("restrict has no meaning for a security group"),
            "{error}"
        );
        let error = resolved(&BackendEntry::for_kind(BackendKind::Aws), &defaults).unwrap_err();
        assert!(
            error.contains("security_group_ids must name at least one"),
            "{error}"
        );
        let entries = parse(
            "[[backend]]\nkind = \"aws\"\nsecurity_group_ids = [\"sg-0abc\", \"sg-0def\"]\nregion = \"eu-west-1\"\nmode = \"prefix-list\"\nmax_rules = 120",
        )
        .unwrap();
        let spec = resolved(&entries[0], &defaults).unwrap();
        assert_eq!(
            spec.describe(),
            "aws (sg-0abc, sg-0def in eu-west-1, prefix-list mode, tcp 80,443)"
        );
        let error = parse("[[backend]]\nkind = \"aws\"\ntable = \"filter\"").unwrap_err();
        assert!(error.contains("unknown field `table`"), "{error}");
    }
}
