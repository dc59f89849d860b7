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

/// AWS security groups in a moto EC2 server started for each test, in both modes.
mod aws {
    macro_rules! mode {
        ($name:ident, $mode:ident) => {
            mod $name {
                use cf_allowlist_aws::Mode;
                use cf_allowlist_aws::harness::AwsHarness;

                cf_allowlist_backend::conformance_tests!(AwsHarness::new(Mode::$mode); skip {
                    the_restrict_drop_comes_after_the_accepts: "a security group denies everything it does not allow, so AWS has no restrict and no drop of ours (restrict is refused at config load)",
                });
            }
        };
    }
    mode!(rules, Rules);
    mode!(prefix_list, PrefixList);
}
