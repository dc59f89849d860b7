//! Every name this backend writes into ufw, and every ufw file it reads, in one place.

use cf_allowlist_backend::Family;

pub use cf_allowlist_backend::OWNER_TAG;

/// The comment on our allow rules (ufw stores it hex-encoded in its rules files).
pub const COMMENT: &str = OWNER_TAG;
/// The comment on the restrict deny rules.
pub const RESTRICT_COMMENT: &str = "cf-allowlist restrict";
/// ufw's folder of rules files, as Debian and Ubuntu install it.
pub const DEFAULT_RULES_DIR: &str = "/etc/ufw";
/// ufw's program, looked up in `PATH` and the sbin folders.
pub const DEFAULT_PROGRAM: &str = "ufw";
/// ufw's defaults file (policies, `IPV6=`), outside the rules folder.
pub const DEFAULTS_FILE: &str = "/etc/default/ufw";
/// ufw's switch file, which says whether ufw is enabled (`ENABLED=yes`).
pub const CONF_FILE: &str = "ufw.conf";
/// The Debian package that provides ufw.
pub const PACKAGE: &str = "ufw";

/// The rules file of a family, in the rules folder.
pub fn rules_file(family: Family) -> &'static str {
    match family {
        Family::V4 => "user.rules",
        Family::V6 => "user6.rules",
    }
}

/// The source that means "every address of the family" in a family-specific ufw rule.
pub fn everywhere(family: Family) -> &'static str {
    match family {
        Family::V4 => "0.0.0.0/0",
        Family::V6 => "::/0",
    }
}
