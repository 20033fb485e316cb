//! `loopsy status`: how this node sits on the network.

use std::process::ExitCode;

use clap::Args;
use loopsy_daemon::Home;
use loopsy_wire::control::NatStatus;

use crate::output;

/// Show this node's peer ID, version, uptime, home, addresses, NAT status and relays.
#[derive(Debug, Args)]
pub struct Cmd {
    /// One JSON document with stable field names.
    #[arg(long)]
    json: bool,
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        let status = crate::client(&home).status().await?;
        if self.json {
            output::json(&status)?;
            return Ok(ExitCode::SUCCESS);
        }
        let nat = match status.nat {
            NatStatus::Unknown => "unknown",
            NatStatus::Public => "public",
            NatStatus::Private => "private (behind NAT)",
        };
        output::field("peer id", &[status.peer_id]);
        output::field("name", &[status.name]);
        output::field("version", &[status.version]);
        output::field("uptime", &[uptime(status.uptime_secs)]);
        output::field("home", &[status.home]);
        output::field("config", &[status.config]);
        output::field("nat", &[nat.to_owned()]);
        output::field("listening", &status.listen_addrs);
        output::field("external", &status.external_addrs);
        output::field("relayed", &status.relayed_addrs);
        output::field("relays", &status.relay_reservations);
        Ok(ExitCode::SUCCESS)
    }
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}
