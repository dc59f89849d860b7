//! The integration tests, in one binary: the conformance suite against every backend, the CLI
//! contract, and end-to-end runs with real packets through real netfilter in namespaces.

mod cli;
mod conformance;
mod counts;
#[cfg(feature = "aws")]
mod e2e_aws;
mod e2e_doctor;
mod e2e_iptables;
mod e2e_nftables;
mod e2e_nginx;
mod e2e_ownership;
mod e2e_restrict;
mod e2e_safety;
mod e2e_shadowing;
mod e2e_ufw;
mod large_lists;
mod support;
