//! `loopsy node`: run this device's daemon in the foreground until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Args;
use loopsy_daemon::Multiaddr;
use loopsy_daemon::{Home, node};

/// Run this device's node in the foreground.
#[derive(Debug, Args)]
pub struct Cmd {
    /// Listen on this libp2p address instead of the config's (repeatable),
    /// e.g. /ip4/0.0.0.0/tcp/0 or /ip4/0.0.0.0/udp/0/quic-v1.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<Multiaddr>,
    /// A relay to be reachable through from other networks, as `loopsy-relay` prints it
    /// (repeatable; replaces the config's `relays`).
    #[arg(long, value_name = "ADDR")]
    relay: Vec<Multiaddr>,
    /// This device's name, as other devices see it.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Do not find or announce devices on the local network.
    #[arg(long)]
    no_mdns: bool,
    /// Append the log to this file instead of writing it to stderr (the level comes from
    /// RUST_LOG, default `info`).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<std::path::PathBuf>,
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        let overrides = node::Overrides {
            name: self.name,
            listen: self.listen,
            relays: self.relay,
            no_mdns: self.no_mdns,
        };
        let home_dir = home.dir().to_owned();
        node::run(
            home,
            overrides,
            |started| {
                println!(
                    "loopsy node {} ({})",
                    started.identity.peer_id, started.identity.name
                );
                println!("home       {}", home_dir.display());
                println!("control    {}", started.socket.display());
            },
            shutdown_signal(),
        )
        .await?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; Ctrl-C still stops the node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
