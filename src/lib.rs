//! cf-allowlist keeps a server's firewall open to Cloudflare's published ranges and to nothing
//! it shouldn't be.
//!
//! The crate is shaped parse → resolve → act: [`cli`] holds what the user typed, [`settings`]
//! resolves it with the config file and defaults, and each command in [`commands`] takes only
//! resolved types. A sync builds a [`plan::Plan`] value that dry-run prints and apply executes.
//! Firewalls are reached only through the [`cf_allowlist_backend::Backend`] trait, networks only
//! through [`sources`].

pub mod backends;
pub mod cli;
pub mod commands;
pub mod error;
pub mod failpoint;
pub mod guards;
pub mod hook;
pub mod judgement;
pub mod metrics;
pub mod parallel;
pub mod plan;
pub mod printer;
pub mod probe;
pub mod proof;
pub mod report;
pub mod settings;
pub mod sources;
pub mod state;
pub mod validate;

#[cfg(test)]
mod core_tests;
#[cfg(test)]
mod test_support;

use std::ffi::OsString;

use clap::Parser;

use cli::{Cli, Command};
use error::{Error, ExitStatus};
use printer::Printer;
use report::{Outcome, Report};
use settings::BackendOverrides;
use state::StateDir;

/// Runs the command line `args` (program name first) and returns how the process should exit.
/// Output is rendered here, once, from the command's outcome.
pub fn run<I, T>(args: I) -> ExitStatus
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let started = std::time::Instant::now();
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(error) => return usage_error(&args, &error),
    };
    let printer = settings::printer(&cli);
    // Completions and the man page describe the command line only: no config, no state.
    if let Some(status) = commands::completions::run(&cli.command, &printer) {
        return status;
    }
    // The config is read once: the command, the metrics file and the hook use it (a run that
    // failed on its config still writes the `--metrics-file` it was given).
    let (config, config_error) = match read_config(&cli) {
        Ok(config) => (config, None),
        Err(error) => (settings::ConfigFile::default(), Some(error)),
    };
    let outcome = execute(&cli, &config, config_error, &printer);
    if let Some(path) = metrics_target(&cli, &config)
        && let Err(error) = metrics::write(&path, &outcome, started)
    {
        printer.warn(format!(
            "could not write the metrics file {}: {error}",
            path.display()
        ));
    }
    run_hook(&cli, &config, &outcome, &printer);
    printer.finish(&outcome);
    outcome.exit_status()
}

/// Runs the `on_change` hook after a run that applied (not a dry run) and changed a firewall
/// or saw the upstream list change. Its failure is a warning: the run already happened.
fn run_hook(cli: &Cli, config: &settings::ConfigFile, outcome: &Outcome, printer: &Printer) {
    let applies = match &cli.command {
        Command::Sync(args) => !args.dry_run,
        Command::Rollback(_) | Command::Restore(_) => true,
        _ => false,
    };
    let news = matches!(&outcome.report, Some(Report::Sync(sync)) if sync.plan.has_news());
    if !applies || !(news || outcome.changed()) {
        return;
    }
    let Ok(Some(hook)) = settings::on_change(cli, config) else {
        return;
    };
    let report = outcome.to_json(&printer.warnings());
    let event = hook::Event {
        command: cli.command.name(),
        exit_code: outcome.exit_status().code(),
        report: &report,
    };
    if let Err(error) = hook.run(&event) {
        printer.warn(format!("the on_change hook {error}"));
    }
}

/// The metrics file to write after this command, if any: only runs that apply (`sync`
/// without `--dry-run`, `rollback`, `restore`) write it.
fn metrics_target(cli: &Cli, config: &settings::ConfigFile) -> Option<std::path::PathBuf> {
    let applies = match &cli.command {
        Command::Sync(args) => !args.dry_run,
        Command::Rollback(_) | Command::Restore(_) => true,
        _ => false,
    };
    if !applies {
        return None;
    }
    settings::metrics_file(cli, config)
}

/// The `--config` file (or the default one), except for `config`, which reads its own.
fn read_config(cli: &Cli) -> Result<settings::ConfigFile, Error> {
    match &cli.command {
        // `config check FILE` reads its own file, which may not be the --config one.
        Command::Config(_) => Ok(settings::ConfigFile::default()),
        _ => settings::read_config(cli.config.as_deref()),
    }
}

/// Prints clap's message (help, version or a usage error); with `--output json`, a usage
/// error is also one JSON object on stdout.
fn usage_error(args: &[OsString], error: &clap::Error) -> ExitStatus {
    let _ = error.print();
    if !error.use_stderr() {
        return ExitStatus::Success;
    }
    // The command typed: the first word that names one (global flags may come first).
    let commands = <Cli as clap::CommandFactory>::command();
    let command = args
        .iter()
        .skip(1)
        .filter_map(|arg| arg.to_str())
        .find(|arg| commands.get_subcommands().any(|sub| sub.get_name() == *arg))
        .unwrap_or("");
    // doctor is a monitoring plugin: a command line it cannot read is UNKNOWN.
    let status = if command == "doctor" {
        ExitStatus::Unknown
    } else {
        ExitStatus::Failure
    };
    let wants_json = args
        .windows(2)
        .any(|pair| pair[0] == "--output" && pair[1] == "json")
        || args.iter().any(|arg| arg == "--output=json");
    if wants_json {
        let message = error
            .render()
            .to_string()
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("error: ")
            .to_owned();
        let object = serde_json::json!({
            "command": command,
            "exit_code": status.code(),
            "changed": false,
            "warnings": [],
            "error": {"message": message, "causes": [], "hint": "see --help"},
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&object).expect("JSON serialises")
        );
    }
    status
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

fn execute(
    cli: &Cli,
    config: &settings::ConfigFile,
    config_error: Option<Error>,
    printer: &Printer,
) -> Outcome {
    let command = cli.command.name();
    let ran = match config_error {
        Some(error) => Err(error),
        None => run_command(cli, config, printer),
    };
    let (report, error) = match ran {
        Ok(report) => {
            // A refused sync has a plan to show and an error to report.
            let error = match &report {
                Report::Sync(sync) if sync.outcome == report::SyncOutcome::Refused => {
                    Some(Error::Refused(sync.plan.refusals.clone()))
                }
                Report::Sync(sync) if !sync.blockers().is_empty() => Some(Error::NotEffective {
                    blockers: sync.blockers(),
                }),
                _ => None,
            };
            (Some(report), error)
        }
        // doctor reports UNKNOWN, first line included, when it could not run.
        Err(error) if matches!(cli.command, Command::Doctor(_)) => (
            Some(Report::Doctor(report::DoctorReport::unknown(&error))),
            Some(error),
        ),
        Err(error) => (None, Some(error)),
    };
    Outcome {
        command,
        report,
        error,
    }
}

/// `--force` / `--force=NAME,…` as the guards it overrides.
fn force(names: Option<&[String]>) -> Result<guards::Force, Error> {
    guards::Force::parse(names).map_err(|message| Error::Setting(format!("--force: {message}")))
}

fn run_command(
    cli: &Cli,
    config: &settings::ConfigFile,
    printer: &Printer,
) -> Result<Report, Error> {
    let no_overrides = BackendOverrides::default();
    Ok(match &cli.command {
        Command::Sync(args) => {
            let overrides = BackendOverrides {
                sources: &args.sources,
                kinds: &args.backends,
                ports: args.ports.as_deref(),
                restrict: args.restrict_override(),
            };
            let settings = settings::resolve(cli, config, &overrides)?;
            settings.notes.iter().for_each(|note| printer.note(note));
            let options = commands::sync::SyncOptions {
                dry_run: args.dry_run,
                detailed_exitcode: args.detailed_exitcode,
                force: force(args.force.as_deref())?,
            };
            Report::Sync(commands::sync::run(&settings, options, printer)?)
        }
        Command::Status(args) => {
            let overrides = BackendOverrides {
                kinds: &args.backends,
                ..BackendOverrides::default()
            };
            let settings = settings::resolve(cli, config, &overrides)?;
            let chosen = (!args.backends.is_empty()).then(|| settings.backends.clone());
            Report::Status(commands::status::run(
                &StateDir::new(&settings.state_dir),
                chosen,
                printer,
            )?)
        }
        Command::History => {
            let settings = settings::resolve(cli, config, &no_overrides)?;
            Report::History(commands::history::run(
                &StateDir::new(&settings.state_dir),
                printer,
            )?)
        }
        Command::Restore(args) => Report::Sync(commands::rollback::restore(
            &last_sync_settings(cli, config, args)?,
            printer,
        )?),
        Command::Rollback(args) => {
            let settings = settings::resolve(cli, config, &no_overrides)?;
            // Rollback acts on the backends of the last sync, not on the config's.
            let settings = settings::Settings {
                backends: Vec::new(),
                ..settings
            };
            Report::Sync(commands::rollback::run(
                &settings,
                args.to,
                &force(args.force.as_deref())?,
                printer,
            )?)
        }
        Command::Unpin => {
            let settings = settings::resolve(cli, config, &no_overrides)?;
            Report::Unpin(commands::rollback::unpin(&settings, printer)?)
        }
        Command::Purge(args) => Report::Purge(commands::purge::run(
            &last_sync_settings(cli, config, args)?,
            printer,
        )?),
        Command::Doctor(args) => {
            let overrides = BackendOverrides {
                kinds: &args.backends,
                ..BackendOverrides::default()
            };
            let settings = settings::resolve(cli, config, &overrides)?;
            let doctor = settings::resolve_doctor(cli, args, config)?;
            let chosen = (!args.backends.is_empty()).then(|| settings.backends.clone());
            Report::Doctor(commands::doctor::run(&settings, &doctor, chosen, printer)?)
        }
        Command::Config(cli::ConfigCommand::Check(args)) => {
            let path = args.file.as_deref().or(cli.config.as_deref());
            let config = settings::read_config(path)?;
            let settings = settings::resolve(cli, &config, &no_overrides)?;
            Report::Config(commands::config::check(path, &settings))
        }
        Command::Completions(_) | Command::Manpage => {
            unreachable!("answered in `run` before the config is read")
        }
    })
}
