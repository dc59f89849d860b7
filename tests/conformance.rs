//! The conformance suite (`cf_allowlist_backend::conformance`) against every backend.

mod memory {
    cf_allowlist_backend::conformance_tests!(cf_allowlist_memory::MemoryHarness::default());
}

/// nftables in a fresh namespace per test, holding a Debian-like ruleset with policy drop.
mod nftables_debian_ruleset {
    use crate::support::{netns::unshare_thread_netns, require_root};
    use cf_allowlist_nftables::harness::NftablesHarness;

    fn harness() -> NftablesHarness {
        require_root();
        unshare_thread_netns();
        NftablesHarness::with_base_ruleset()
    }

    cf_allowlist_backend::conformance_tests!(harness());
}

/// nftables in a fresh namespace with an empty ruleset: the backend creates table and chain.
mod nftables_empty_ruleset {
    use crate::support::{netns::unshare_thread_netns, require_root};
    use cf_allowlist_nftables::harness::NftablesHarness;

    fn harness() -> NftablesHarness {
        require_root();
        unshare_thread_netns();
        NftablesHarness::empty()
    }

    cf_allowlist_backend::conformance_tests!(harness());
}

/// iptables in each variant and mode, in a fresh namespace per test with a policy-DROP ruleset.
mod iptables {
    macro_rules! variant_and_mode {
        ($name:ident, $variant:ident, $mode:ident) => {
            mod $name {
                use crate::support::{netns::unshare_thread_netns, require_root};
                use cf_allowlist_iptables::harness::IptablesHarness;
                use cf_allowlist_iptables::{Concrete, Mode};

                fn harness() -> IptablesHarness {
                    require_root();
                    unshare_thread_netns();
                    IptablesHarness::new(Concrete::$variant, Mode::$mode)
                }

                cf_allowlist_backend::conformance_tests!(harness());
            }
        };
    }
    variant_and_mode!(nft_rules, Nft, Rules);
    variant_and_mode!(nft_ipset, Nft, Ipset);
    variant_and_mode!(legacy_rules, Legacy, Rules);
    variant_and_mode!(legacy_ipset, Legacy, Ipset);
}

/// ufw in a private mount and network namespace per test (see `cf_allowlist_ufw::harness`),
/// starting inactive as Debian installs it; one `ufw` call per rule, and batches.
mod ufw {
    mod calls {
        use crate::support::require_root;
        use cf_allowlist_ufw::harness::UfwHarness;

        fn harness() -> UfwHarness {
            require_root();
            UfwHarness::writing(cf_allowlist_ufw::Write::Calls)
        }

        cf_allowlist_backend::conformance_tests!(harness());
    }

    mod batch {
        use crate::support::require_root;
        use cf_allowlist_ufw::harness::UfwHarness;

        fn harness() -> UfwHarness {
            require_root();
            UfwHarness::writing(cf_allowlist_ufw::Write::Batch)
        }

        cf_allowlist_backend::conformance_tests!(harness());
    }
}
