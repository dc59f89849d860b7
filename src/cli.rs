//! What the user typed: clap's types and nothing more. [`crate::settings`] turns these, the
//! config file and the defaults into the resolved settings every command takes.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::backends::BackendKind;

/// Keep a server's firewall open to Cloudflare's published ranges, and to nothing it shouldn't
/// be.
#[derive(Debug, Parser)]
#[command(name = "cf-allowlist", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 success, 1 error, 2 changes pending (sync --dry-run \
--detailed-exitcode), 3 refused by a safety guard (see --force), 4 another run holds the lock, \
5 applied but not effective (another rule still blocks the listed ranges). \
doctor: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN"
)]
pub struct Cli {
    /// Config file (TOML); a missing file at the default path is fine.
    #[arg(long, global = true, value_name = "FILE", env = "CF_ALLOWLIST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where snapshots, generations and the lock live.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "CF_ALLOWLIST_STATE_DIR"
    )]
    pub state_dir: Option<PathBuf>,
    /// Output format on stdout.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
    /// Print only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also say what was checked when nothing changed.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Write a Prometheus textfile-collector file here at the end of every sync, rollback and
    /// restore, success or failure (overrides `metrics_file` in the config).
    #[arg(long, global = true, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Run this program after a sync, rollback or restore that changed a firewall or saw the
    /// upstream list change, with the JSON report on stdin (overrides `on_change` in the
    /// config).
    #[arg(long, global = true, value_name = "PROGRAM")]
    pub on_change: Option<PathBuf>,
    /// Also allow Cloudflare's China Network ranges (JD Cloud), from the JSON API's
    /// `jdcloud_cidrs` (with no source configured, the API asked with `?networks=jdcloud`).
    #[arg(long, global = true)]
    pub jdcloud: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How stdout is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Readable lines.
    Text,
    /// One JSON object per command.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch the ranges, and bring every backend to them.
    Sync(SyncArgs),
    /// Last sync, generation, counts per family, and drift per backend.
    Status(BackendArgs),
    /// The saved generations.
    History,
    /// Apply an earlier generation (default: the one before the current) and pin it.
    Rollback(RollbackArgs),
    /// Re-apply the current generation without touching the network (at boot, or after a
    /// firewall reload wiped runtime rules).
    Restore(BackendArgs),
    /// Stop pinning: the next sync follows upstream again.
    Unpin,
    /// Remove everything the tool created in the firewall, and nothing else.
    Purge(BackendArgs),
    /// Check that Cloudflare can really reach this origin; a monitoring plugin (exit 0 OK,
    /// 1 WARNING, 2 CRITICAL, 3 UNKNOWN). Read-only.
    Doctor(DoctorArgs),
    /// Work with the config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    Completions(CompletionsArgs),
    /// Print the man page (roff), for packaging.
    #[command(hide = true)]
    Manpage,
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file (default: --config, else /etc/cf-allowlist/config.toml) and
    /// print the settings it resolves to; fetches nothing and touches no firewall.
    Check(ConfigCheckArgs),
}

/// Options of `config check`.
#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// The file to check (overrides --config).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// Options of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells `completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash (bash-completion).
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

impl Command {
    /// The command's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Sync(_) => "sync",
            Command::Status(_) => "status",
            Command::History => "history",
            Command::Rollback(_) => "rollback",
            Command::Restore(_) => "restore",
            Command::Unpin => "unpin",
            Command::Purge(_) => "purge",
            Command::Doctor(_) => "doctor",
            Command::Config(_) => "config",
            Command::Completions(_) => "completions",
            Command::Manpage => "manpage",
        }
    }
}

/// Options of `sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: exit 2 when changes are pending.
    #[arg(long, requires = "dry_run")]
    pub detailed_exitcode: bool,
    /// Override safety guards: bare, every guard but `ssh`; `--force=NAME[,NAME…]`, only those
    /// (shrink, owner, ssh, reach).
    #[arg(long, value_name = "GUARDS", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "")]
    pub force: Option<Vec<String>>,
    /// A source of ranges: an https:// or http:// URL (text list or Cloudflare's JSON API), a
    /// file path, a file:// URL, or `builtin`. Repeatable; replaces the configured sources.
    #[arg(long = "source", value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// Backends to keep open. Repeatable; replaces the configured backends.
    #[arg(long = "backend", value_enum, value_name = "KIND")]
    pub backends: Vec<BackendKind>,
    /// TCP ports to open, comma separated (default 80,443).
    #[arg(long, value_delimiter = ',', value_name = "PORTS", value_parser = tcp_port())]
    pub ports: Option<Vec<u16>>,
    /// Also drop every other source on the managed ports.
    #[arg(long, overrides_with = "no_restrict")]
    pub restrict: bool,
    /// Do not restrict, whatever the config file says.
    #[arg(long, overrides_with = "restrict")]
    pub no_restrict: bool,
}

impl SyncArgs {
    /// `--restrict` / `--no-restrict`, the last one given winning; `None` when neither was.
    pub fn restrict_override(&self) -> Option<bool> {
        if self.restrict {
            Some(true)
        } else if self.no_restrict {
            Some(false)
        } else {
            None
        }
    }
}

/// `--backend` for the commands that act on backends of the last sync by default.
#[derive(Debug, Args)]
pub struct BackendArgs {
    /// Backends to act on (default: those of the last sync).
    #[arg(long = "backend", value_enum, value_name = "KIND")]
    pub backends: Vec<BackendKind>,
}

/// Options of `rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The generation to go back to (default: the one before the current).
    #[arg(long, value_name = "GENERATION")]
    pub to: Option<u64>,
    /// Override safety guards (the `reach` and `owner` guards judge a rollback as a sync):
    /// bare, every guard but `ssh`; `--force=NAME[,NAME…]`, only those.
    #[arg(long, value_name = "GUARDS", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "")]
    pub force: Option<Vec<String>>,
}

/// Options of `doctor`; each overrides the config file's `[doctor]` table.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Backends to check (default: the configured ones, else those of the last sync).
    #[arg(long = "backend", value_enum, value_name = "KIND")]
    pub backends: Vec<BackendKind>,
    /// Check against the list fetched now from the sources instead of the current generation.
    #[arg(long)]
    pub fetch: bool,
    /// The name to send as SNI and to check the origin's certificate against; without it the
    /// TLS check is skipped.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Managed ports that serve TLS, comma separated (default 443).
    #[arg(long, value_delimiter = ',', value_name = "PORTS", value_parser = tcp_port())]
    pub tls_ports: Option<Vec<u16>>,
    /// Treat a certificate public roots do not trust as a problem (Cloudflare's "Full
    /// (strict)" mode) instead of a warning ("Full").
    #[arg(long)]
    pub strict: bool,
    /// Warn when the certificate expires within this many days (default 14).
    #[arg(long, value_name = "DAYS")]
    pub cert_warn_days: Option<u64>,
    /// Warn when the last successful sync is older than this (default 2h; always a problem
    /// past 24h).
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<humantime::Duration>,
}

/// A TCP port, 1 to 65535 (port 0 cannot be connected to).
fn tcp_port() -> clap::builder::RangedI64ValueParser<u16> {
    clap::value_parser!(u16).range(1..)
}
