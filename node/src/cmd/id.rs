//! `loopsy id`: this device's peer ID and name.

use std::process::ExitCode;

use clap::Args;
use loopsy_daemon::{Home, control};
use loopsy_wire::control::{Request, Response};

use crate::output;

/// Print this device's peer ID and name.
#[derive(Debug, Args)]
pub struct Cmd {
    /// One JSON document: {"peer_id": ..., "name": ...}.
    #[arg(long)]
    json: bool,
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        let Response::Id(id) = control::request(&home, Request::Id).await? else {
            anyhow::bail!("the node answered with something other than its identity");
        };
        if self.json {
            output::json(&id)?;
        } else {
            println!("{} {}", id.peer_id, id.name);
        }
        Ok(ExitCode::SUCCESS)
    }
}
