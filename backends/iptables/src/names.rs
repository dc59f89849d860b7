//! Every name this backend writes into iptables and ipset, in one place.

use cf_allowlist_backend::Family;

pub use cf_allowlist_backend::OWNER_TAG;

/// Our chain, in the filter table of iptables and of ip6tables.
pub const CHAIN: &str = "CF-ALLOWLIST";
/// The built-in chain that jumps to ours.
pub const INPUT: &str = "INPUT";
/// The comment on our accept rules and on the jump.
pub const COMMENT: &str = OWNER_TAG;
/// The comment on the restrict drop rule.
pub const RESTRICT_COMMENT: &str = "cf-allowlist restrict";
/// The IPv4 ipset.
pub const SET_V4: &str = "cf-allowlist-v4";
/// The IPv6 ipset.
pub const SET_V6: &str = "cf-allowlist-v6";
/// Appended to a set's name for the copy that is filled and swapped in.
pub const NEW_SUFFIX: &str = "-new";

/// The comment on the RETURN rules that let an admin's own allows of a managed port through
/// restrict's drop.
pub const KEEP_COMMENT: &str = "cf-allowlist keep";

/// The ipset of a family.
pub fn set_name(family: Family) -> &'static str {
    match family {
        Family::V4 => SET_V4,
        Family::V6 => SET_V6,
    }
}

/// ipset's family keyword.
pub fn ipset_family(family: Family) -> &'static str {
    match family {
        Family::V4 => "inet",
        Family::V6 => "inet6",
    }
}

/// The jump from INPUT to our chain with `comment`, as iptables-save prints it (after
/// `-A INPUT `).
pub fn jump_spec(comment: &str) -> String {
    if comment.contains(' ') {
        format!("-m comment --comment \"{comment}\" -j {CHAIN}")
    } else {
        format!("-m comment --comment {comment} -j {CHAIN}")
    }
}

/// Our chain for forwarded traffic to ports Docker publishes (option `docker_user`).
pub const DOCKER_CHAIN: &str = "CF-ALLOWLIST-DOCKER";
/// Docker's chain for its users' rules, evaluated first on the FORWARD path.
pub const DOCKER_USER: &str = "DOCKER-USER";

/// The jump from DOCKER-USER to our Docker chain with `comment`, as iptables-save prints it.
pub fn docker_jump_spec(comment: &str) -> String {
    jump_spec(comment).replace(&format!("-j {CHAIN}"), &format!("-j {DOCKER_CHAIN}"))
}
