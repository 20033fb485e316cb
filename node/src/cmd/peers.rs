//! `loopsy peers`: paired and discovered devices.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use loopsy_daemon::{Home, Multiaddr};
use loopsy_wire::control::{Connection, Request};

use crate::output;

/// List paired and discovered peers.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cmd {
    #[command(subcommand)]
    action: Option<Action>,
    /// One JSON array of peers: name, peer_id, paired, online (connected now),
    /// connection, addrs, rtt_ms, last_seen (RFC 3339).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Reach a member at an address now (it restarted on new ports, or mDNS cannot see
    /// it); the address is kept and spread, as `trust set --addr` does.
    Connect {
        /// The member: a name, a peer ID, or a unique prefix of either.
        peer: String,
        /// Its address, e.g. /ip4/192.0.2.7/tcp/7717 (repeatable).
        #[arg(required = true, value_name = "ADDR")]
        addr: Vec<Multiaddr>,
    },
    /// Drop a device that is not a member from the list, and close its connections: a
    /// stranger, or a device revoked with `trust rm`. It shows again if it connects or is
    /// seen on the LAN. (Devices not heard of for 10 minutes drop out by themselves.)
    Forget {
        /// The device: a name, a peer ID, or a unique prefix of either.
        peer: String,
    },
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        match self.action {
            Some(Action::Connect { peer, addr }) => {
                let request = Request::TrustSet {
                    peer,
                    name: None,
                    addrs: addr.iter().map(ToString::to_string).collect(),
                    allow: None,
                };
                return crate::cmd::trust::done(&home, request).await;
            }
            Some(Action::Forget { peer }) => {
                return crate::cmd::trust::done(&home, Request::PeersForget { peer }).await;
            }
            None => {}
        }
        let peers = crate::client(&home).peers().await?;
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
                "SEEN",
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
                seen(peer.connection, peer.last_seen.as_deref()),
                peer.addrs.first().cloned().unwrap_or_else(|| "-".into()),
            ]);
        }
        output::table(&rows);
        Ok(ExitCode::SUCCESS)
    }
}

/// When a peer was last seen, short: `now` while connected, the time (UTC) for today,
/// else the date; `-` when this node has not seen it since it started.
fn seen(connection: Connection, last_seen: Option<&str>) -> String {
    if connection != Connection::None {
        return "now".into();
    }
    let Some(at) = last_seen.filter(|at| at.len() >= 19 && at.is_char_boundary(19)) else {
        return "-".into();
    };
    let today = loopsy_daemon::clock::rfc3339(loopsy_daemon::clock::now_secs());
    match (at.get(..10), at.get(11..19)) {
        (Some(date), Some(time)) if today.starts_with(date) => format!("{time}Z"),
        (Some(date), _) => date.into(),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_seen_is_now_a_time_today_or_a_date() {
        let today = loopsy_daemon::clock::rfc3339_ms(loopsy_daemon::clock::now_ms());
        assert_eq!(seen(Connection::Direct, None), "now");
        assert_eq!(seen(Connection::None, None), "-");
        assert_eq!(
            seen(Connection::None, Some(&today)),
            format!("{}Z", &today[11..19])
        );
        assert_eq!(
            seen(Connection::None, Some("2001-02-03T04:05:06.007Z")),
            "2001-02-03"
        );
        assert_eq!(seen(Connection::None, Some("garbage")), "-");
        assert_eq!(seen(Connection::None, Some("2001-02-03T04:05:0é")), "-");
    }
}
