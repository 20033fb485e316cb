//! `loopsy shell PEER [CMD..]`: an interactive login shell on another device, or CMD on a
//! terminal there (as `ssh -t` does).

use std::process::ExitCode;

use clap::Args;
use loopsy_daemon::Home;
use loopsy_wire::exec::{Pty, Start};

use crate::{remote, term};

/// Open an interactive shell on a peer (its user's login shell, on a terminal), or run a
/// command there on a terminal.
#[derive(Debug, Args)]
pub struct Cmd {
    /// The device: a name, a peer ID, or a unique prefix of either.
    peer: String,
    /// A program and its arguments to run on a terminal there instead of the login shell
    /// (needs the `exec` capability there, as `loopsy exec -t` does).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<String>,
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        use std::io::IsTerminal;
        anyhow::ensure!(
            std::io::stdin().is_terminal(),
            "`loopsy shell` needs a terminal, and stdin is not one; to run a command with \
             piped input, use `loopsy exec {} -- CMD`",
            self.peer
        );
        let (rows, cols) = term::size();
        let start = Start {
            argv: self.command,
            cwd: None,
            env: Vec::new(),
            timeout_secs: None,
            pty: Some(Pty {
                term: term::term(),
                rows,
                cols,
            }),
        };
        Ok(remote::run(&home, self.peer, start, true).await)
    }
}
