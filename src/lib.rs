//! cf-allowlist keeps a server's firewall open to Cloudflare's published ranges and to nothing
//! it shouldn't be.
//!
//! The crate is shaped parse → resolve → act: [`cli`] holds what the user typed, [`settings`]
//! resolves it with the config file and defaults, and each command in [`commands`] takes only
//! resolved types. A sync builds a [`plan::Plan`] value that dry-run prints and apply executes.
//! Firewalls are reached only through the [`cf_allowlist_backend::Backend`] trait, networks only
//! through [`sources`].

pub mod cli;
pub mod commands;
pub mod error;
pub mod failpoint;
pub mod plan;
pub mod printer;
pub mod settings;
pub mod sources;
pub mod state;
pub mod validate;

use std::ffi::OsString;

use clap::Parser;

use cli::{Cli, Command};
use error::{Error, ExitStatus};
use printer::Printer;
use settings::BackendOverrides;
use state::StateDir;

/// Runs the command line `args` (program name first) and returns how the process should exit.
/// Errors are printed here, once.
pub fn run<I, T>(args: I) -> ExitStatus
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitStatus::Failure
            } else {
                ExitStatus::Success
            };
        }
    };
    let printer = settings::printer(&cli);
    // Completions and the man page describe the command line only: no config, no state.
    if let Some(status) = commands::completions::run(&cli.command, &printer) {
        return status;
    }
    match execute(&cli, &printer) {
        Ok(status) => status,
        Err(error) => {
            printer.error(&error, error.hint().as_deref());
            error.exit_status()
        }
    }
}

/// Settings for a command that acts on the backends of the last sync unless `--backend` names
/// others: without `--backend` the configured backends are dropped, and the command falls back
/// to those the state recorded.
fn last_sync_settings(
    cli: &Cli,
    config: &settings::ConfigFile,
    args: &cli::BackendArgs,
) -> Result<settings::Settings, Error> {
    let overrides = BackendOverrides {
        kinds: &args.backends,
        ..BackendOverrides::default()
    };
    let mut settings = settings::resolve(cli, config, &overrides)?;
    if args.backends.is_empty() {
        settings.backends.clear();
    }
    Ok(settings)
}

fn execute(cli: &Cli, printer: &Printer) -> Result<ExitStatus, Error> {
    let config = settings::read_config(cli.config.as_deref())?;
    let no_overrides = BackendOverrides::default();
    match &cli.command {
        Command::Sync(args) => {
            let overrides = BackendOverrides {
                sources: &args.sources,
                kinds: &args.backends,
                ports: args.ports.as_deref(),
                restrict: args.restrict,
            };
            let settings = settings::resolve(cli, &config, &overrides)?;
            let options = commands::sync::SyncOptions {
                dry_run: args.dry_run,
                detailed_exitcode: args.detailed_exitcode,
                force: args.force,
            };
            commands::sync::run(&settings, options, printer)
        }
        Command::Status(args) => {
            let overrides = BackendOverrides {
                kinds: &args.backends,
                ..BackendOverrides::default()
            };
            let settings = settings::resolve(cli, &config, &overrides)?;
            let chosen = (!args.backends.is_empty()).then(|| settings.backends.clone());
            commands::status::run(&StateDir::new(&settings.state_dir), chosen, printer)
        }
        Command::History => {
            let settings = settings::resolve(cli, &config, &no_overrides)?;
            commands::history::run(&StateDir::new(&settings.state_dir), printer)
        }
        Command::Restore(args) => {
            commands::rollback::restore(&last_sync_settings(cli, &config, args)?, printer)
        }
        Command::Rollback(args) => {
            let settings = settings::resolve(cli, &config, &no_overrides)?;
            // Rollback acts on the backends of the last sync, not on the config's.
            let settings = settings::Settings {
                backends: Vec::new(),
                ..settings
            };
            commands::rollback::run(&settings, args.to, printer)
        }
        Command::Unpin => {
            let settings = settings::resolve(cli, &config, &no_overrides)?;
            commands::rollback::unpin(&settings, printer)
        }
        Command::Purge(args) => {
            commands::purge::run(&last_sync_settings(cli, &config, args)?, printer)
        }
        Command::Completions(_) | Command::Manpage => {
            unreachable!("answered in `run` before the config is read")
        }
    }
}
