//! `loopsy man`: the manual page, in roff, on stdout.

use std::process::ExitCode;

use clap::{Args, CommandFactory};

/// Print the manual page: `loopsy man > ~/.local/share/man/man1/loopsy.1`, or
/// `loopsy man | man -l -`.
#[derive(Debug, Args)]
pub struct Cmd {}

impl Cmd {
    pub fn run(&self) -> anyhow::Result<ExitCode> {
        let mut page = Vec::new();
        clap_mangen::Man::new(crate::Cli::command()).render(&mut page)?;
        std::io::Write::write_all(&mut std::io::stdout(), &page)?;
        Ok(ExitCode::SUCCESS)
    }
}
