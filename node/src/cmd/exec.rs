//! `loopsy exec PEER -- CMD [ARG]..`: run a program on another device as if here.

use std::{process::ExitCode, time::Duration};

use clap::Args;
use loopsy_daemon::{Home, clock};
use loopsy_wire::exec::{Pty, Start};

use crate::{remote, term};

/// Run a command on a peer: stdout, stderr, stdin, signals and the exit code behave as if
/// it ran here. Exit codes of its own: 124 timed out, 126 refused, 127 not found, 255
/// Loopsy failed.
#[derive(Debug, Args)]
pub struct Cmd {
    /// The device: a name, a peer ID, or a unique prefix of either.
    peer: String,
    /// Working directory there (relative ones from its home).
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// Set an environment variable for the command (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Kill the command after this long (90, 90s, 10m).
    #[arg(long, value_parser = clock::parse_duration)]
    timeout: Option<Duration>,
    /// Give the command a terminal (for programs that need one).
    #[arg(short = 't', long = "tty")]
    tty: bool,
    /// The program and its arguments, run directly: use `sh -c '...'` for a shell line.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "CMD"
    )]
    command: Vec<String>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not K=V"))
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        let pty = self.tty.then(|| {
            let (rows, cols) = term::size();
            Pty {
                term: term::term(),
                rows,
                cols,
            }
        });
        let start = Start {
            argv: self.command,
            cwd: self.cwd,
            env: self.env,
            timeout_secs: self.timeout.map(|t| t.as_secs().max(1)),
            pty,
        };
        Ok(remote::run(&home, self.peer, start, self.tty).await)
    }
}
