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

/// nginx's real-IP include file in a private configuration folder per test, validated by the
/// real `nginx -t` (Debian's nginx); reloads are recorded (tests/e2e_nginx.rs reloads a real
/// nginx). A real-IP list has no ports, restrict mode or verdicts: the two behaviours about
/// those are skipped by name, with the reason.
mod nginx_realip {
    use cf_allowlist_nginx::harness::NginxHarness;

    cf_allowlist_backend::conformance_tests!(NginxHarness::new(); skip {
        the_restrict_drop_comes_after_the_accepts:
            "a real-IP list drops nothing: restrict is refused for nginx-realip at config load",
        changing_the_policy_rewrites_the_rules:
            "ports and restrict do not reach a real-IP list: nginx trusts the header per source address",
    });
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

        cf_allowlist_backend::conformance_tests!(harness(); skip {
            no_listed_range_is_missing_during_an_apply: "a batch writes ufw's files once and \
                loads each family's user chains with one iptables-restore -n transaction: there \
                is no intermediate state to record (tests/e2e_ufw.rs reads the live table during \
                applies)",
        });
    }
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
