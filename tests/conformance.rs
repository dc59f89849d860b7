//! The conformance suite (`cf_allowlist_backend::conformance`) against every backend.

mod memory {
    cf_allowlist_backend::conformance_tests!(cf_allowlist_memory::MemoryHarness::default());
}

/// nftables in a fresh namespace per test: holding a Debian-like ruleset with policy drop, or
/// empty (the backend creates table and chain).
#[cfg(feature = "e2e")]
mod nftables {
    macro_rules! ruleset {
        ($name:ident, $constructor:ident) => {
            mod $name {
                use crate::support::{netns::unshare_thread_netns, require_root};
                use cf_allowlist_nftables::harness::NftablesHarness;

                fn harness() -> NftablesHarness {
                    require_root();
                    unshare_thread_netns();
                    NftablesHarness::$constructor()
                }

                cf_allowlist_backend::conformance_tests!(harness(); skip {
                    no_listed_range_is_missing_during_an_apply:
                        "one apply is one nft transaction: there is no intermediate state to look at (tests/e2e_safety.rs kills runs mid-apply instead)",
                });
            }
        };
    }
    ruleset!(debian_ruleset, with_base_ruleset);
    ruleset!(empty_ruleset, empty);
}

#[cfg(feature = "e2e")]
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

                cf_allowlist_backend::conformance_tests!(harness(); skip {
                    no_listed_range_is_missing_during_an_apply:
                        "one apply is one iptables-restore transaction per family (and an ipset swap): the harness cannot look between them (tests/e2e_safety.rs kills runs mid-apply instead)",
                });
            }
        };
    }
    variant_and_mode!(nft_rules, Nft, Rules);
    variant_and_mode!(nft_ipset, Nft, Ipset);
    variant_and_mode!(legacy_rules, Legacy, Rules);
    variant_and_mode!(legacy_ipset, Legacy, Ipset);
}

#[cfg(feature = "e2e")]
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
        no_listed_range_is_missing_during_an_apply:
            "the include file is replaced by one rename: there is no intermediate file to look at",
    });
}

#[cfg(feature = "e2e")]
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

#[cfg(feature = "e2e")]
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

#[cfg(feature = "e2e")]
/// A real firewalld in a private mount and network namespace with its own D-Bus system bus,
/// started for each test (see `cf_allowlist_firewalld::harness`).
mod firewalld {
    use crate::support::require_root;
    use cf_allowlist_firewalld::harness::FirewalldHarness;

    fn harness() -> FirewalldHarness {
        require_root();
        FirewalldHarness::new()
    }

    cf_allowlist_backend::conformance_tests!(harness(); skip {
        no_listed_range_is_missing_during_an_apply: "an apply is one client process whose D-Bus \
            calls the harness cannot look between; runtime entries are added before any is \
            removed, one firewalld transaction each, and a kept entry is never flushed \
            (tests/e2e_firewalld.rs reads the live set during applies)",
    });
}
