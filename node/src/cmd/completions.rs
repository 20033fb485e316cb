//! `loopsy completions SHELL`: a completion script for bash, zsh or fish, on stdout.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Print a shell completion script: `loopsy completions bash > ~/.local/share/bash-completion/completions/loopsy`.
#[derive(Debug, Args)]
pub struct Cmd {
    /// bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

impl Cmd {
    pub fn run(&self) -> anyhow::Result<ExitCode> {
        let mut command = crate::Cli::command();
        // Into memory first: clap_complete panics on a write error (a closed pipe).
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut command, "loopsy", &mut script);
        std::io::Write::write_all(&mut std::io::stdout(), &script)?;
        Ok(ExitCode::SUCCESS)
    }
}
