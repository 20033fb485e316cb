//! `loopsy peers`: paired and discovered devices.

use std::process::ExitCode;

use clap::Args;
use loopsy_daemon::{Home, control};
use loopsy_wire::control::{Connection, Request, Response};

use crate::output;

/// List paired and discovered peers.
#[derive(Debug, Args)]
pub struct Cmd {
    /// One JSON array of peers: name, peer_id, paired, online, connection, addrs, rtt_ms.
    #[arg(long)]
    json: bool,
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        let Response::Peers { peers } = control::request(&home, Request::Peers).await? else {
            anyhow::bail!("the node answered with something other than its peers");
        };
        if self.json {
            output::json(&peers)?;
            return Ok(ExitCode::SUCCESS);
        }
        if peers.is_empty() {
            println!("no peers yet: devices on this network running `loopsy node` show up here");
            return Ok(ExitCode::SUCCESS);
        }
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
        let mut rows = vec![
            [
                "NAME",
                "PEER ID",
                "PAIRED",
                "ONLINE",
                "CONNECTION",
                "RTT",
                "ADDRESS",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for peer in peers {
            rows.push(vec![
                peer.name.unwrap_or_else(|| "?".into()),
                peer.peer_id,
                yes_no(peer.paired),
                yes_no(peer.online),
                match peer.connection {
                    Connection::Direct => "direct",
                    Connection::Relayed => "relayed",
                    Connection::None => "-",
                }
                .into(),
                peer.rtt_ms.map_or("-".into(), |ms| format!("{ms:.1}ms")),
                peer.addrs.first().cloned().unwrap_or_else(|| "-".into()),
            ]);
        }
        output::table(&rows);
        Ok(ExitCode::SUCCESS)
    }
}
