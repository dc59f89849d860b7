//! Every name this backend writes into nftables, in one place.

use cf_allowlist_backend::Family;

pub use cf_allowlist_backend::OWNER_TAG;

/// The table family; `inet` covers IPv4 and IPv6 in one chain.
pub const FAMILY: &str = "inet";

/// The IPv4 set.
pub const SET_V4: &str = "cf_allowlist_v4";
/// The IPv6 set.
pub const SET_V6: &str = "cf_allowlist_v6";
/// Both sets.
pub const SETS: [&str; 2] = [SET_V4, SET_V6];

/// The comment on the IPv4 accept rule.
pub const ACCEPT_V4_COMMENT: &str = "cf-allowlist ipv4";
/// The comment on the IPv6 accept rule.
pub const ACCEPT_V6_COMMENT: &str = "cf-allowlist ipv6";
/// The comment on the restrict drop rule.
pub const RESTRICT_COMMENT: &str = "cf-allowlist restrict";

/// The set of a family.
pub fn set_name(family: Family) -> &'static str {
    match family {
        Family::V4 => SET_V4,
        Family::V6 => SET_V6,
    }
}

/// The comment on the accept rule of a family.
pub fn accept_comment(family: Family) -> &'static str {
    match family {
        Family::V4 => ACCEPT_V4_COMMENT,
        Family::V6 => ACCEPT_V6_COMMENT,
    }
}

/// nft's element type for a family.
pub fn element_type(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    }
}

/// nft's payload protocol for a family's source address.
pub fn protocol(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

/// From `nft list table` text: whether the table, and the chain named `chain`, carry our
/// comment (so that purge may delete them).
pub fn created_by_us(listing: &str, chain: &str) -> (bool, bool) {
    let ours = |line: &str| {
        line.strip_prefix("comment \"")
            .and_then(|rest| rest.strip_suffix('"'))
            .is_some_and(|comment| {
                comment == OWNER_TAG
                    || comment
                        .starts_with(&format!("{OWNER_TAG}{}", cf_allowlist_backend::OWNER_MARK))
            })
    };
    let lines: Vec<&str> = listing.lines().map(str::trim).collect();
    let comment_after = |header: &str| {
        lines
            .iter()
            .position(|line| *line == header)
            .and_then(|at| lines.get(at + 1))
            .is_some_and(|next| ours(next))
    };
    let table_ours = lines
        .iter()
        .position(|line| line.starts_with("table inet ") && line.ends_with('{'))
        .and_then(|at| lines.get(at + 1))
        .is_some_and(|next| ours(next));
    (table_ours, comment_after(&format!("chain {chain} {{")))
}
