//! Every name this backend writes into firewalld, in one place.

use cf_allowlist_backend::Family;

pub use cf_allowlist_backend::OWNER_TAG;

/// The short name of our ipsets (firewalld's `<short>`).
pub const SHORT: &str = OWNER_TAG;
/// The priority of restrict's drop rich rules: above 0, so firewalld puts them in the zone's
/// `_post` chain, after every accept of priority 0 (ours, the zone's services and ports, the
/// admin's own rich rules).
pub const RESTRICT_PRIORITY: i32 = 32767;
/// firewalld's command-line client, whose interpreter runs our client (see `client.py`).
pub const DEFAULT_FIREWALL_CMD: &str = "firewall-cmd";
/// The Debian package that provides firewalld.
pub const PACKAGE: &str = "firewalld";
/// firewalld's configuration file, which names the default zone.
pub const CONF_FILE: &str = "/etc/firewalld/firewalld.conf";
/// firewalld's nftables table.
pub const TABLE: &str = "firewalld";

/// The ipset of a family.
pub fn ipset(family: Family) -> &'static str {
    match family {
        Family::V4 => "cf-allowlist-v4",
        Family::V6 => "cf-allowlist-v6",
    }
}

/// The family as a rich rule names it.
pub fn rich_family(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

/// The family as an ipset's `family` option names it.
pub fn ipset_family(family: Family) -> &'static str {
    match family {
        Family::V4 => "inet",
        Family::V6 => "inet6",
    }
}

/// The zone's input chain in `table inet firewalld` whose rules of priority 0 accept (where our
/// accepts are).
pub fn allow_chain(zone: &str) -> String {
    format!("filter_IN_{zone}_allow")
}
