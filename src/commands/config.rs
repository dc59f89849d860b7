//! `config check`: the settings a config file resolves to, validated as every command validates
//! them at load (names nft would misread, zero timeouts, options of another backend, ports),
//! without fetching anything or touching a firewall.

use std::path::Path;

use crate::report::{ConfigReport, ResolvedBackend, ResolvedSettings};
use crate::settings::Settings;

/// Reports the resolved `settings` of the config file at `path`.
pub fn check(path: Option<&Path>, settings: &Settings) -> ConfigReport {
    let exists = path.is_some_and(Path::exists)
        || (path.is_none() && Path::new(crate::settings::DEFAULT_CONFIG).exists());
    let shown = path.map_or_else(
        || crate::settings::DEFAULT_CONFIG.to_owned(),
        |path| path.display().to_string(),
    );
    ConfigReport {
        config_file: exists.then_some(shown),
        settings: ResolvedSettings {
            state_dir: settings.state_dir.display().to_string(),
            sources: settings.sources.iter().map(ToString::to_string).collect(),
            backends: settings
                .backends
                .iter()
                .map(|spec| ResolvedBackend {
                    kind: spec.kind().name(),
                    description: spec.describe(),
                    spec: serde_json::to_value(spec).expect("specs serialise"),
                })
                .collect(),
            broadest_prefix_v4: settings.limits.broadest_v4,
            broadest_prefix_v6: settings.limits.broadest_v6,
            connect_timeout_secs: settings.fetch.connect_timeout.as_secs(),
            request_timeout_secs: settings.fetch.total_timeout.as_secs(),
            max_body_bytes: settings.fetch.max_body_bytes,
            lock_timeout_secs: settings.lock_timeout.as_secs(),
            builtin_max_age_days: settings.builtin_max_age_days,
        },
    }
}
