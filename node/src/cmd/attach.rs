//! `loopsy attach SESSION`: this terminal on a session hosted anywhere in the mesh.

use std::{process::ExitCode, time::Duration};

use clap::Args;
use loopsy_daemon::{Home, clock};

/// Attach to a session: its screen at once, then live. Ctrl-\ detaches and leaves it
/// running; a dropped connection is picked up again by itself, losing no output.
#[derive(Debug, Args)]
pub struct Cmd {
    /// The session: its ID, its name, or a unique prefix of either.
    session: String,
    /// The device that hosts it (default: found by asking the connected devices).
    #[arg(long, value_name = "PEER")]
    on: Option<String>,
    /// After a dropped connection, how long to keep trying to attach again (90s, 10m).
    #[arg(long, value_name = "DURATION", value_parser = clock::parse_duration, default_value = "2m")]
    reattach_for: Duration,
    /// Watch only: nothing typed reaches the session (Ctrl-\ still detaches), the terminal
    /// keeps its size, and a waiting session goes on waiting.
    #[arg(long)]
    read_only: bool,
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        Ok(crate::attach::run(
            &home,
            self.on,
            self.session,
            self.reattach_for,
            self.read_only,
        )
        .await)
    }
}
