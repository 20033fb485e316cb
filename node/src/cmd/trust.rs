//! `loopsy trust`: the trust store, by hand: list, add by peer ID, change, revoke.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use loopsy_daemon::{Home, Multiaddr};
use loopsy_wire::control::Request;

use crate::output;

/// List, add or revoke trusted devices.
#[derive(Debug, Args)]
pub struct Cmd {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List trusted devices and what each may do here.
    Ls {
        /// One JSON array: peer_id, name, addrs, allow, they_allow, via, kind.
        #[arg(long)]
        json: bool,
    },
    /// Trust a device by its peer ID (for headless hosts). The other device must trust this
    /// one too: run `loopsy trust add` there with this device's `loopsy id`.
    Add {
        /// Its peer ID, as `loopsy id` prints it there.
        peer_id: String,
        /// The name it goes by here.
        #[arg(long)]
        name: String,
        /// An address to reach it where mDNS cannot see it (repeatable).
        #[arg(long, value_name = "ADDR")]
        addr: Vec<Multiaddr>,
        /// What it may do here; the config's defaults when omitted.
        #[arg(long, value_name = "CAPS")]
        allow: Vec<String>,
    },
    /// Change a member (name, peer ID or unique prefix): the name it goes by here, more
    /// addresses to reach it (dialled at once, and spread to the mesh), what it may do here.
    Set {
        /// The member: a name, a peer ID, or a unique prefix of either.
        peer: String,
        /// The name it goes by on this device.
        #[arg(long)]
        name: Option<String>,
        /// An address to reach it at (repeatable), e.g. after it restarted on new ports.
        #[arg(long, value_name = "ADDR")]
        addr: Vec<Multiaddr>,
        /// What it may do here (exec, shell, files, sessions, ctx, msg, admit, all, none).
        #[arg(long, value_name = "CAPS")]
        allow: Vec<String>,
    },
    /// Revoke a device (name, peer ID or unique prefix) on every device of the mesh.
    Rm {
        /// The device: a name, a peer ID, or a unique prefix of either.
        peer: String,
    },
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        match self.action {
            Action::Ls { json } => list(&home, json).await,
            Action::Add {
                peer_id,
                name,
                addr,
                allow,
            } => {
                let request = Request::TrustAdd {
                    peer_id,
                    name,
                    addrs: addr.iter().map(ToString::to_string).collect(),
                    allow: (!allow.is_empty()).then_some(allow),
                };
                done(&home, request).await
            }
            Action::Set {
                peer,
                name,
                addr,
                allow,
            } => {
                let request = Request::TrustSet {
                    peer,
                    name,
                    addrs: addr.iter().map(ToString::to_string).collect(),
                    allow: (!allow.is_empty()).then_some(allow),
                };
                done(&home, request).await
            }
            Action::Rm { peer } => done(&home, Request::TrustRemove { peer }).await,
        }
    }
}

pub(crate) async fn done(home: &Home, request: Request) -> anyhow::Result<ExitCode> {
    println!("{}", crate::client(home).done(request).await?);
    Ok(ExitCode::SUCCESS)
}

async fn list(home: &Home, json: bool) -> anyhow::Result<ExitCode> {
    let peers = crate::client(home).trust_list().await?;
    if json {
        output::json(&peers)?;
        return Ok(ExitCode::SUCCESS);
    }
    if peers.is_empty() {
        println!("no trusted devices yet: pair one with `loopsy pair`");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![
        ["NAME", "KIND", "PEER ID", "ALLOWED HERE", "HOW"]
            .map(String::from)
            .to_vec(),
    ];
    for p in peers {
        let allow = if p.allow.is_empty() {
            "-".into()
        } else {
            p.allow.join(",")
        };
        rows.push(vec![p.name, p.kind, p.peer_id, allow, p.via]);
    }
    output::table(&rows);
    Ok(ExitCode::SUCCESS)
}
