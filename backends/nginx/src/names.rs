//! Every name and fixed text this backend writes, in one place.

use std::path::{Path, PathBuf};

pub use cf_allowlist_backend::OWNER_TAG;

/// Where the include file goes unless `path` says otherwise: Debian's nginx includes
/// `/etc/nginx/conf.d/*.conf` in its `http` block.
pub const DEFAULT_PATH: &str = "/etc/nginx/conf.d/cf-allowlist-realip.conf";

/// The first line of the file: the mark that tells our file from anybody else's. A file at
/// `path` whose first line differs is never rewritten or deleted.
pub const HEADER_FIRST_LINE: &str = "# cf-allowlist: generated file, do not edit.";

/// The rest of the header.
pub const HEADER_REST: [&str; 2] = [
    "# nginx trusts CF-Connecting-IP only from these ranges; `cf-allowlist sync` rewrites this",
    "# file from Cloudflare's list and `cf-allowlist purge` deletes it.",
];

/// The rest of the header of Apache's file.
pub const APACHE_HEADER_REST: [&str; 2] = [
    "# Apache (mod_remoteip) trusts CF-Connecting-IP only from these ranges; `cf-allowlist sync`",
    "# rewrites this file from Cloudflare's list and `cf-allowlist purge` deletes it.",
];

/// Where Apache's file goes unless `path` says otherwise: Debian's `conf-available`, enabled
/// once with `a2enmod remoteip && a2enconf cf-allowlist-remoteip`.
pub const APACHE_DEFAULT_PATH: &str = "/etc/apache2/conf-available/cf-allowlist-remoteip.conf";

/// The default command that checks Apache's whole configuration.
pub const APACHE_DEFAULT_TEST_COMMAND: [&str; 2] = ["apache2ctl", "configtest"];

/// The default command that makes Apache load the new file without dropping connections.
pub const APACHE_DEFAULT_RELOAD_COMMAND: [&str; 2] = ["apache2ctl", "graceful"];

/// mod_remoteip's directive naming a trusted (public) proxy range.
pub const REMOTE_IP_TRUSTED_PROXY: &str = "RemoteIPTrustedProxy";

/// mod_remoteip's directive naming the header that carries the client's address.
pub const REMOTE_IP_HEADER: &str = "RemoteIPHeader";

/// The directive naming a trusted range.
pub const SET_REAL_IP_FROM: &str = "set_real_ip_from";

/// The directive naming the header that carries the client's address.
pub const REAL_IP_HEADER: &str = "real_ip_header";

/// The header Cloudflare puts the visitor's address in.
pub const CF_CONNECTING_IP: &str = "CF-Connecting-IP";

/// The default command that checks nginx's whole configuration, the new file included.
pub const DEFAULT_TEST_COMMAND: [&str; 2] = ["nginx", "-t"];

/// The default command that makes nginx load the new file.
pub const DEFAULT_RELOAD_COMMAND: [&str; 3] = ["nginx", "-s", "reload"];

/// The prefix and suffix of the temporary file a new version is written to, beside the include
/// file. A leading dot and no `.conf` ending: nginx's `include …/*.conf` never picks it up.
pub const TEMP_PREFIX: &str = ".cf-allowlist-";
/// See [`TEMP_PREFIX`].
pub const TEMP_SUFFIX: &str = ".tmp";

/// The marker beside the include file that says a reload is owed: written before the file is
/// installed, removed once nginx reloaded, so that a failed or interrupted reload is retried by
/// the next sync even though the file already holds the target. Hidden and not `*.conf`.
pub fn reload_pending_marker(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.reload-pending"))
}

/// The rest of the header of Caddy's snippet.
pub const CADDY_HEADER_REST: [&str; 3] = [
    "# Caddy trusts CF-Connecting-IP only from these ranges: import this file inside `servers { }`",
    "# in the Caddyfile's global options. `cf-allowlist sync` rewrites it from Cloudflare's list",
    "# and `cf-allowlist purge` deletes it. Needs Caddy 2.7 or newer.",
];

/// Where Caddy's snippet goes unless `path` says otherwise. Not `*.caddy` under a folder a
/// Caddyfile imports by wildcard: it belongs inside the global `servers` block only.
pub const CADDY_DEFAULT_PATH: &str = "/etc/caddy/cf-allowlist-trusted-proxies.caddyfile";

/// The default command that checks Caddy's whole configuration, the snippet included.
pub const CADDY_DEFAULT_TEST_COMMAND: [&str; 6] = [
    "caddy",
    "validate",
    "--config",
    "/etc/caddy/Caddyfile",
    "--adapter",
    "caddyfile",
];

/// The default command that makes the running Caddy load the new snippet (through its admin
/// endpoint, as Debian's `caddy.service` reloads; `--force` so a retried reload is not skipped).
pub const CADDY_DEFAULT_RELOAD_COMMAND: [&str; 7] = [
    "caddy",
    "reload",
    "--config",
    "/etc/caddy/Caddyfile",
    "--adapter",
    "caddyfile",
    "--force",
];

/// Caddy's `servers` option listing the trusted proxies, continued over one line per range.
pub const CADDY_TRUSTED_PROXIES: &str = "trusted_proxies static";

/// The comment line that ends the continued `trusted_proxies` directive (a continued line must
/// be followed by one more; a comment keeps the list's lines uniform and an empty list valid).
pub const CADDY_END_OF_RANGES: &str = "\t# end of the trusted ranges";

/// Caddy's `servers` option naming the header that carries the client's address.
pub const CADDY_CLIENT_IP_HEADERS: &str = "client_ip_headers";

/// Added to a refused `caddy validate`: the two `servers` options need Caddy 2.7 or newer;
/// Debian 12's caddy 2.6.2 refuses them ("unrecognized servers option 'trusted_proxies'").
pub const CADDY_VERSION_HINT: &str = " (the snippet needs Caddy 2.7 or newer for `trusted_proxies` and `client_ip_headers` in `servers`; Debian 12's caddy is 2.6.2: install Caddy's own package, and check that the snippet is imported inside the global `servers { }` block)";
