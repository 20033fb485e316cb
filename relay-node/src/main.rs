//! `loopsy-relay`: parses flags and runs the relay library until SIGINT or SIGTERM.

use std::path::PathBuf;

use clap::Parser;
use libp2p::Multiaddr;

/// The optional public relay node for Loopsy devices on different networks.
#[derive(Debug, Parser)]
#[command(name = "loopsy-relay", version)]
struct Cli {
    /// State directory (the relay's identity key).
    #[arg(long, env = "LOOPSY_RELAY_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// Address to listen on (repeatable).
    #[arg(long, value_name = "ADDR", default_values = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"])]
    listen: Vec<Multiaddr>,
    /// A public address to announce (repeatable). The relay serves reservations only once
    /// it has one.
    #[arg(long, value_name = "ADDR")]
    external_addr: Vec<Multiaddr>,
    /// Limits and access (TOML; see the crate docs). Default: `relay.toml` in the home,
    /// when there is one.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (for example 127.0.0.1:9464).
    /// Default: `[metrics] listen` in the config; off when neither is given.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// The PEM certificate chain for `/tls/ws` listen addresses (HTTPS and secure
    /// WebSockets for browsers), for example Let's Encrypt's `fullchain.pem`.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert` (`privkey.pem`).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// mimalloc rather than glibc's malloc, as the node has (see node/src/bin/loopsy-node.rs):
/// every circuit's frames are allocated and freed at the rate its bytes go through.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // Before the runtime's threads: it may start this program again.
    loopsy_mesh::copies::restart_tuned();
    run()
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let home = match cli.home {
        Some(home) => home,
        None => directories::ProjectDirs::from("", "", "loopsy-relay")
            .map(|d| d.data_dir().to_owned())
            .ok_or_else(|| anyhow::anyhow!("no home directory; pass --home DIR"))?,
    };
    let in_home = home.join("relay.toml");
    let settings = match cli.config {
        Some(path) => loopsy_relay::Settings::load(&path)?,
        None if in_home.exists() => loopsy_relay::Settings::load(&in_home)?,
        None => loopsy_relay::Settings::default(),
    };
    let certificate = match (&cli.tls_cert, &cli.tls_key) {
        (Some(chain), Some(key)) => {
            Some(loopsy_mesh::web::Certificate::from_pem_files(chain, key)?)
        }
        _ => None,
    };
    let config = loopsy_relay::Config {
        certificate,
        metrics: cli.metrics.or(settings.metrics.listen),
        home,
        listen: cli.listen,
        external: cli.external_addr,
        settings,
    };
    loopsy_relay::run(config, shutdown_signal()).await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
