//! The integration tests, in one binary: the conformance suite against every backend, the CLI
//! contract, and end-to-end runs with real packets through real netfilter in namespaces.
//!
//! Plain `cargo test` runs what needs nothing outside the process (any user, no packages).
//! What needs root, network namespaces, moto or nginx is behind the `e2e` feature, which
//! `tests/run` turns on: whole modules here, single tests (ignored with a reason without the
//! feature) in the files that mix both. With the feature on, such a test fails, never skips,
//! when what it needs is missing.

mod cli;
mod config_example;
mod conformance;
#[cfg(feature = "e2e")]
mod counts;
#[cfg(feature = "e2e")]
mod e2e_apache;
mod e2e_aws;
#[cfg(feature = "e2e")]
mod e2e_caddy;
mod e2e_doctor;
#[cfg(feature = "e2e")]
mod e2e_firewalld;
#[cfg(feature = "e2e")]
mod e2e_iptables;
#[cfg(feature = "e2e")]
mod e2e_judgement;
#[cfg(feature = "e2e")]
mod e2e_netlink_listing;
#[cfg(feature = "e2e")]
mod e2e_nftables;
mod e2e_nginx;
#[cfg(feature = "e2e")]
mod e2e_nlcreate;
#[cfg(feature = "e2e")]
mod e2e_ownership;
#[cfg(feature = "e2e")]
mod e2e_proof;
#[cfg(feature = "e2e")]
mod e2e_restrict;
#[cfg(feature = "e2e")]
mod e2e_safety;
#[cfg(feature = "e2e")]
mod e2e_shadowing;
#[cfg(feature = "e2e")]
mod e2e_ufw;
mod hooks;
#[cfg(feature = "e2e")]
mod large_lists;
mod support;
