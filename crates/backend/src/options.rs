//! What a backend's options supply to the registry (`src/backends.rs` of the binary).
//!
//! Each backend crate implements [`BackendOptions`] for its own `[[backend]]` options, next to
//! the backend it builds, so that everything the core needs to know about one kind of backend
//! (how to build and describe it, which checks its options need, what restrict and Docker mean
//! for it, which Debian package it drives) lives in that backend's crate. The registry then
//! names each backend in one line.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Backend, Policy};

/// Where a host-firewall backend's accepts sit in this host's netfilter, as its options say;
/// the core turns it into the shadowing analysis' place (deciding `auto` from the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPlace {
    /// At the top of chain `chain` of table `inet table`.
    NftChain {
        /// The inet table.
        table: String,
        /// The chain.
        chain: String,
    },
    /// At the top of the filter table's INPUT chain of iptables and ip6tables.
    IptablesInput {
        /// The legacy variant (`Some(true)`), the nf_tables one (`Some(false)`), or the one
        /// the host's own rules are in (`None`, for `variant = "auto"`).
        legacy: Option<bool>,
        /// For `auto` when neither or both variants hold the host's rules: whether plain
        /// `iptables` runs the legacy variant.
        default_legacy: bool,
    },
    /// At the top of ufw's user input chains.
    UfwUserInput,
}

/// What one kind of backend's options must provide.
pub trait BackendOptions:
    Debug + Clone + Default + PartialEq + Eq + Serialize + DeserializeOwned
{
    /// Builds the backend for `policy`; what it writes is marked as `owner`'s (a state
    /// directory's id) where the backend can carry a mark.
    fn build(&self, policy: &Policy, owner: Option<&str>) -> Box<dyn Backend>;

    /// [`BackendOptions::build`], for a state directory whose record says it wrote to this
    /// kind of backend before (the last argument, "adopt unmarked"): a backend whose first versions wrote parts
    /// without an owner mark may then take those parts of exactly its own shape as this
    /// directory's. Never for parts carrying another mark. By default the same as `build`.
    fn build_adopting(&self, policy: &Policy, owner: Option<&str>, _: bool) -> Box<dyn Backend> {
        self.build(policy, owner)
    }

    /// Where it writes, for plans: `inet filter input`.
    fn describe(&self) -> String;

    /// Checks the options (and the policy they are combined with) at config load, before any
    /// fetch; the message completes "invalid backend options: …".
    fn validate(&self, _policy: &Policy) -> Result<(), String> {
        Ok(())
    }

    /// Whether the backend's accepts filter this host's own input (so that other tables and
    /// chains of the host's netfilter can cancel them: the shadowing analysis applies).
    fn filters_host_input(&self) -> bool {
        false
    }

    /// Whether what it writes is limited to the policy's ports (a firewall's rules are; a web
    /// server's real-IP list is not), for plans.
    fn has_ports(&self) -> bool {
        true
    }

    /// Where its accepts sit in this host's netfilter, for judging the firewall a plan leaves
    /// (`None`: not in this host's netfilter, as for a cloud firewall or a web server).
    fn host_place(&self) -> Option<HostPlace> {
        None
    }

    /// Whether its allow and restrict's drop also apply in Docker's DOCKER-USER chain, which
    /// sees the ports Docker publishes (INPUT never does).
    fn covers_docker(&self) -> bool {
        false
    }

    /// Whether everything it holds for `target` lives in nf_tables, so that the kernel's
    /// ruleset generation id moves whenever it (or anything the shadowing analysis reads of it)
    /// changes: then an unchanged generation proves a no-op sync's reading would find what the
    /// last verified sync left (see the core's `proof` module). Not for legacy iptables or
    /// ipsets (other kernel APIs, no generation), files or cloud APIs.
    fn generation_proves(&self, _target: &crate::Ranges) -> bool {
        false
    }

    /// Told that the nf_tables generation `generation` (the current one) proves this backend
    /// holds exactly `target`, as a verified sync left it (see the core's `proof` module):
    /// a backend whose reading of large sets is expensive may take their elements from
    /// `target` instead of the kernel for readings at that generation. Nothing by default.
    fn know_proven(&self, _generation: u32, _target: &crate::Ranges) {}

    /// Whether at most one backend of this kind may be configured: those whose parts have
    /// fixed names on the host (and whose observe removes our parts found elsewhere, which a
    /// second one would be).
    fn one_per_host() -> bool {
        false
    }

    /// Why restrict mode means nothing for this kind, or `None` where it drops what the list
    /// does not allow. Where it means nothing, the top-level `restrict = true` passes it by
    /// with a note, and `restrict = true` in its own `[[backend]]` table is refused.
    fn restrict_does_not_apply() -> Option<&'static str> {
        None
    }

    /// The Debian packages whose tools it runs (`tests/run` installs them; the package's
    /// description names them).
    fn debian_packages() -> &'static [&'static str] {
        &[]
    }
}
