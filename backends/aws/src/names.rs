//! Every name and tag this backend writes into AWS, in one place.

use cf_allowlist_backend::Family;

pub use cf_allowlist_backend::OWNER_TAG;

/// The description of every inbound rule and prefix-list entry we create. Rules whose
/// description starts with [`OWNER_TAG`] are ours; every other rule is left alone.
pub const RULE_DESCRIPTION: &str = "cf-allowlist";

/// The description of a rule that references one of our prefix lists.
pub const REFERENCE_DESCRIPTION: &str = "cf-allowlist prefix list";

/// The only protocol our rules open.
pub const PROTOCOL: &str = "tcp";

/// The tag key on our prefix lists (its value is the family), so they can be found in the
/// console and by IAM conditions.
pub const TAG_KEY: &str = OWNER_TAG;

/// The name of our customer-managed prefix list for a family.
pub fn prefix_list_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "cf-allowlist-ipv4",
        Family::V6 => "cf-allowlist-ipv6",
    }
}

/// The `AddressFamily` EC2 uses for a prefix list of that family.
pub fn address_family(family: Family) -> &'static str {
    match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// The tag value on our prefix list of a family.
pub fn tag_value(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}
