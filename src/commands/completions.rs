//! `completions SHELL` and the hidden `manpage`: both describe only the command line, generated
//! from the clap definitions in [`crate::cli`], so they can never drift from it. They read no
//! config file and no state: the Debian package runs them at build time, on a machine whose
//! `/etc/cf-allowlist` is none of our business. They write to stdout directly rather than
//! through the printer, because a script or a man page is neither text output nor JSON.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::{Cli, Command, Shell};
use crate::error::ExitStatus;
use crate::printer::Printer;

/// Answers `completions` and `manpage`; `None` for every other command.
pub fn run(command: &Command, printer: &Printer) -> Option<ExitStatus> {
    let bytes = match command {
        Command::Completions(args) => completions(args.shell),
        Command::Manpage => manpage(),
        _ => return None,
    };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Some(ExitStatus::Success),
        Err(error) => {
            printer.fail(&format!("could not write to stdout: {error}"));
            Some(ExitStatus::Failure)
        }
    }
}

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    script
}

/// The man page, in roff: `cf-allowlist manpage > cf-allowlist.1`.
pub fn manpage() -> Vec<u8> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .expect("rendering into memory cannot fail");
    page
}
