//! `loopsy id`: this device's peer ID and name.

use std::process::ExitCode;

use clap::Args;
use loopsy_client::Error;
use loopsy_daemon::{Home, config::Config};
use loopsy_wire::control::Identity;

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
        let id = match crate::client(&home).id().await {
            Ok(id) => id,
            // No node running: the identity is in the home all the same (made now if this
            // is the first use, as `loopsy node` would).
            Err(Error::NoNode { .. }) => offline(&home)?,
            Err(e) => return Err(e.into()),
        };
        if self.json {
            output::json(&id)?;
        } else {
            println!("{} {}", id.peer_id, id.name);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The identity and name kept in `home`, read without a node.
fn offline(home: &Home) -> anyhow::Result<Identity> {
    home.create()?;
    let keypair = loopsy_mesh::identity::load_or_create(&home.identity_key())?;
    let config = Config::load_or_create(home)?;
    Ok(Identity {
        peer_id: keypair.public().to_peer_id().to_base58(),
        name: loopsy_mesh::sanitize_name(&config.name),
    })
}
