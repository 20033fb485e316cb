//! `loopsy shell PEER`: an interactive login shell on another device.

use std::process::ExitCode;

use clap::Args;
use loopsy_daemon::Home;
use loopsy_wire::exec::{Pty, Start};

use crate::{remote, term};

/// Open an interactive shell on a peer (its user's login shell, on a terminal).
#[derive(Debug, Args)]
pub struct Cmd {
    /// The device: a name, a peer ID, or a unique prefix of either.
    peer: String,
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        let (rows, cols) = term::size();
        let start = Start {
            argv: Vec::new(),
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
