//! Resolving what the user typed, the config file and the defaults into the settings the
//! commands take. Flags win over the config file, which wins over the defaults. Nothing here
//! touches the network or a firewall.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use cf_allowlist_backend::Policy;

use crate::backends::{BackendEntry, BackendKind, BackendSpec, normalise_ports};
use crate::cli::{Cli, OutputFormat};
use crate::error::Error;
use crate::printer::{Printer, Verbosity};
use crate::sources::{DEFAULT_SOURCES, FetchSettings, JDCLOUD_SOURCE, Source};
use crate::state::DEFAULT_STATE_DIR;
use crate::validate::Limits;

/// The config file read when `--config` is not given; its absence is fine.
pub const DEFAULT_CONFIG: &str = "/etc/cf-allowlist/config.toml";
/// The ports opened when none are configured.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// The config file, as written. Unknown keys are errors, so a typo cannot silently fall back to
/// a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Sources of ranges.
    pub sources: Option<Vec<String>>,
    /// Default TCP ports for every backend.
    pub ports: Option<Vec<u16>>,
    /// Default restrict mode for every backend.
    pub restrict: Option<bool>,
    /// The state directory.
    pub state_dir: Option<PathBuf>,
    /// Seconds to wait for another run's lock.
    pub lock_timeout_secs: Option<u64>,
    /// Refuse ranges broader than these prefix lengths.
    pub broadest_prefix_v4: Option<u8>,
    /// Refuse ranges broader than these prefix lengths.
    pub broadest_prefix_v6: Option<u8>,
    /// Seconds to connect to a source.
    pub connect_timeout_secs: Option<u64>,
    /// Seconds for a whole request to a source.
    pub request_timeout_secs: Option<u64>,
    /// The largest answer accepted from a source, in bytes.
    pub max_body_bytes: Option<u64>,
    /// Days after which the builtin list's age warning shows on every run (default 180).
    pub builtin_max_age_days: Option<u64>,
    /// The backends to keep open.
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendEntry>,
    /// Where sync, rollback and restore write Prometheus metrics (textfile collector); empty:
    /// none.
    pub metrics_file: Option<PathBuf>,
    /// Also allow Cloudflare's China Network ranges (JD Cloud), from the JSON API's
    /// `jdcloud_cidrs` (default false).
    pub jdcloud: Option<bool>,
    /// A program to run after a run that changed a firewall or saw the list change, with
    /// the JSON report on stdin: `["/path/to/program", "arg"]`.
    pub on_change: Option<Vec<String>>,
    /// How long the `on_change` program may run (default 30).
    pub on_change_timeout_secs: Option<u64>,
    /// `doctor`'s defaults.
    #[serde(default)]
    pub doctor: DoctorConfig,
}

/// The `[doctor]` table of the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoctorConfig {
    /// The SNI name to check the origin's certificate against.
    pub server_name: Option<String>,
    /// Managed ports that serve TLS (default `[443]`).
    pub tls_ports: Option<Vec<u16>>,
    /// Warn when the certificate expires within this many days (default 14).
    pub cert_warn_days: Option<u64>,
    /// Warn past this age of the last successful sync, as `2h` or `90m` (default `2h`).
    pub max_age: Option<String>,
    /// Cloudflare's "Full (strict)" mode: an untrusted certificate is a problem.
    pub strict: Option<bool>,
}

/// What `doctor` checks against, resolved from its flags, the `[doctor]` table and the
/// defaults.
#[derive(Debug, Clone)]
pub struct DoctorSettings {
    /// Check against a freshly fetched list instead of the current generation.
    pub fetch: bool,
    /// SNI name; no TLS check without one.
    pub server_name: Option<String>,
    /// Ports that serve TLS.
    pub tls_ports: Vec<u16>,
    /// Whether an untrusted certificate is a problem.
    pub strict: bool,
    /// Warn when the certificate expires within this many days.
    pub cert_warn_days: u64,
    /// Warn when the last successful sync is older.
    pub max_age: Duration,
    /// The metrics file, read for refusals since the last success.
    pub metrics_file: Option<PathBuf>,
}

/// Resolves `doctor`'s settings.
pub fn resolve_doctor(
    cli: &Cli,
    args: &crate::cli::DoctorArgs,
    config: &ConfigFile,
) -> Result<DoctorSettings, Error> {
    let table = &config.doctor;
    let max_age = match (&args.max_age, &table.max_age) {
        (Some(flag), _) => (*flag).into(),
        (None, Some(text)) => humantime::parse_duration(text)
            .map_err(|error| Error::Setting(format!("[doctor] max_age {text:?}: {error}")))?,
        (None, None) => Duration::from_secs(2 * 3600),
    };
    Ok(DoctorSettings {
        fetch: args.fetch,
        server_name: args
            .server_name
            .clone()
            .or_else(|| table.server_name.clone()),
        tls_ports: args
            .tls_ports
            .clone()
            .or_else(|| table.tls_ports.clone())
            .unwrap_or_else(|| vec![443]),
        strict: args.strict || table.strict.unwrap_or(false),
        cert_warn_days: args.cert_warn_days.or(table.cert_warn_days).unwrap_or(14),
        max_age,
        metrics_file: metrics_file(cli, config),
    })
}

/// The `on_change` hook: `--on-change PROGRAM`, else the config's `on_change`.
pub fn on_change(cli: &Cli, config: &ConfigFile) -> Result<Option<crate::hook::Hook>, Error> {
    let argv = match (&cli.on_change, &config.on_change) {
        (Some(program), _) => vec![program.display().to_string()],
        // An empty list means none, as an empty `metrics_file` does.
        (None, Some(argv)) if argv.is_empty() => return Ok(None),
        (None, Some(argv)) => argv.clone(),
        (None, None) => return Ok(None),
    };
    crate::hook::resolve(argv, config.on_change_timeout_secs)
        .map(Some)
        .map_err(Error::Setting)
}

/// The metrics file: `--metrics-file`, else the config's `metrics_file`.
pub fn metrics_file(cli: &Cli, config: &ConfigFile) -> Option<PathBuf> {
    cli.metrics_file
        .clone()
        .or_else(|| config.metrics_file.clone())
}

/// Settings shared by every command.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the state lives.
    pub state_dir: PathBuf,
    /// Where ranges come from.
    pub sources: Vec<Source>,
    /// The backends configured (or chosen with `--backend`), empty if none.
    pub backends: Vec<BackendSpec>,
    /// Range rules.
    pub limits: Limits,
    /// Fetch limits.
    pub fetch: FetchSettings,
    /// How long to wait for another run.
    pub lock_timeout: Duration,
    /// Past this age (in days) the builtin list's warning is shown on every run, not only
    /// when a run has something to say.
    pub builtin_max_age_days: u64,
    /// What the config asks for that does not apply, said with `-v` (the top-level
    /// `restrict = true` for a backend where restrict means nothing).
    pub notes: Vec<String>,
}

/// What the command line overrides for backends.
#[derive(Debug, Default)]
pub struct BackendOverrides<'a> {
    /// `--source`.
    pub sources: &'a [String],
    /// `--backend`.
    pub kinds: &'a [BackendKind],
    /// `--ports`.
    pub ports: Option<&'a [u16]>,
    /// `--restrict` (`Some(true)`) or `--no-restrict` (`Some(false)`).
    pub restrict: Option<bool>,
}

/// The printer the flags ask for.
pub fn printer(cli: &Cli) -> Printer {
    let verbosity = if cli.quiet {
        Verbosity::Quiet
    } else if cli.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    Printer::new(cli.output.unwrap_or(OutputFormat::Text), verbosity)
}

/// Reads the config file: the one named (which must exist), else the default if present.
pub fn read_config(named: Option<&Path>) -> Result<ConfigFile, Error> {
    let (path, must_exist) = match named {
        Some(path) => (path.to_owned(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && !must_exist => {
            return Ok(ConfigFile::default());
        }
        Err(source) => {
            return Err(Error::ConfigRead { path, source });
        }
    };
    toml::from_str(&text).map_err(|source| Error::ConfigParse {
        path,
        source: Box::new(source),
    })
}

/// Resolves the settings from the flags, the config file and the defaults.
pub fn resolve(
    cli: &Cli,
    config: &ConfigFile,
    overrides: &BackendOverrides<'_>,
) -> Result<Settings, Error> {
    on_change(cli, config)?;
    let jdcloud = cli.jdcloud || config.jdcloud.unwrap_or(false);
    let source_texts: Vec<String> = if !overrides.sources.is_empty() {
        overrides.sources.to_vec()
    } else if let Some(sources) = &config.sources {
        sources.clone()
    } else if jdcloud {
        // The text lists cannot carry JD Cloud's ranges; the JSON API asked for them can.
        vec![JDCLOUD_SOURCE.to_owned()]
    } else {
        DEFAULT_SOURCES.iter().map(|s| (*s).to_owned()).collect()
    };
    if source_texts.is_empty() {
        return Err(Error::Setting(
            "`sources` is empty: name at least one source".into(),
        ));
    }
    let sources = source_texts
        .iter()
        .map(|text| Source::parse(text))
        .collect::<Result<Vec<_>, _>>()?;
    if jdcloud && sources.iter().all(|source| *source == Source::Builtin) {
        return Err(Error::Setting(format!(
            "jdcloud is on but the only source is the builtin list, which has no JD Cloud ranges: use {JDCLOUD_SOURCE} (or a file holding its answer)"
        )));
    }

    let default_policy = Policy {
        ports: normalise_ports(
            overrides
                .ports
                .map(<[u16]>::to_vec)
                .or_else(|| config.ports.clone())
                .unwrap_or_else(|| DEFAULT_PORTS.to_vec()),
        )
        .map_err(Error::Setting)?,
        restrict: overrides
            .restrict
            .unwrap_or(config.restrict.unwrap_or(false)),
    };
    let entries: Vec<BackendEntry> = if overrides.kinds.is_empty() {
        config.backends.clone()
    } else {
        overrides
            .kinds
            .iter()
            .map(|kind| {
                config
                    .backends
                    .iter()
                    .find(|entry| entry.kind() == *kind)
                    .cloned()
                    .unwrap_or_else(|| BackendEntry::for_kind(*kind))
            })
            .collect()
    };
    let mut backends = Vec::new();
    let mut notes = Vec::new();
    for entry in entries {
        let spec = entry
            .resolve(
                &default_policy,
                overrides.ports,
                overrides.restrict,
                &mut notes,
            )
            .map_err(Error::Setting)?;
        if spec.kind().one_per_host()
            && backends
                .iter()
                .any(|other: &BackendSpec| other.kind() == spec.kind())
        {
            return Err(Error::Setting(format!(
                "only one {} backend can be configured: its parts have fixed names on the host",
                spec.kind().name()
            )));
        }
        if backends.contains(&spec) {
            return Err(Error::Setting(format!(
                "backend {} is configured twice",
                spec.describe()
            )));
        }
        backends.push(spec);
    }

    let defaults = Limits::default();
    let limits = Limits {
        broadest_v4: config.broadest_prefix_v4.unwrap_or(defaults.broadest_v4),
        broadest_v6: config.broadest_prefix_v6.unwrap_or(defaults.broadest_v6),
    };
    if limits.broadest_v4 > 32 || limits.broadest_v6 > 128 {
        return Err(Error::Setting(
            "broadest_prefix_v4 must be at most 32 and broadest_prefix_v6 at most 128".into(),
        ));
    }
    for (key, value) in [
        ("lock_timeout_secs", config.lock_timeout_secs),
        ("connect_timeout_secs", config.connect_timeout_secs),
        ("request_timeout_secs", config.request_timeout_secs),
        ("max_body_bytes", config.max_body_bytes),
    ] {
        if value == Some(0) {
            return Err(Error::Setting(format!("`{key}` must be greater than 0")));
        }
    }
    let fetch_defaults = FetchSettings::default();
    let seconds =
        |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_secs);
    Ok(Settings {
        state_dir: cli
            .state_dir
            .clone()
            .or_else(|| config.state_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        sources,
        backends,
        limits,
        fetch: FetchSettings {
            connect_timeout: seconds(config.connect_timeout_secs, fetch_defaults.connect_timeout),
            total_timeout: seconds(config.request_timeout_secs, fetch_defaults.total_timeout),
            max_body_bytes: config
                .max_body_bytes
                .unwrap_or(fetch_defaults.max_body_bytes),
            jdcloud,
        },
        lock_timeout: seconds(config.lock_timeout_secs, Duration::from_secs(60)),
        builtin_max_age_days: config.builtin_max_age_days.unwrap_or(180),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        Cli::parse_from(std::iter::once("cf-allowlist").chain(args.iter().copied()))
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let config: ConfigFile = toml::from_str(
            r#"
            sources = ["builtin"]
            ports = [8443]
            [[backend]]
            kind = "nftables"
            table = "fw"
            restrict = true
            "#,
        )
        .unwrap();
        let settings = resolve(&cli(&["sync"]), &config, &BackendOverrides::default()).unwrap();
        assert_eq!(settings.sources, vec![Source::Builtin]);
        assert_eq!(settings.backends.len(), 1);
        assert_eq!(
            settings.backends[0].describe(),
            "nftables (inet fw input, tcp 8443, restrict)"
        );

        let ports = [443, 80, 443];
        let overrides = BackendOverrides {
            sources: &["file:///tmp/list".to_owned()],
            kinds: &[BackendKind::Nftables],
            ports: Some(&ports),
            restrict: None,
        };
        let settings = resolve(&cli(&["sync"]), &config, &overrides).unwrap();
        assert_eq!(settings.sources, vec![Source::File("/tmp/list".into())]);
        assert_eq!(
            settings.backends[0].describe(),
            "nftables (inet fw input, tcp 80,443, restrict)"
        );
    }

    #[test]
    fn defaults_apply_without_a_config() {
        let settings = resolve(
            &cli(&["sync"]),
            &ConfigFile::default(),
            &BackendOverrides::default(),
        )
        .unwrap();
        assert_eq!(settings.sources.len(), 2);
        assert!(settings.backends.is_empty());
        assert_eq!(settings.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    }

    #[test]
    fn typos_in_the_config_are_errors() {
        assert!(toml::from_str::<ConfigFile>("port = [80]").is_err());
        assert!(toml::from_str::<ConfigFile>("[[backend]]\nkind = \"pf\"").is_err());
    }

    #[test]
    fn port_zero_is_refused() {
        let ports = [0];
        let overrides = BackendOverrides {
            ports: Some(&ports),
            ..BackendOverrides::default()
        };
        assert!(resolve(&cli(&["sync"]), &ConfigFile::default(), &overrides).is_err());
    }
}
