//! `loopsy-relay`: the optional public node that Loopsy devices on different networks meet
//! through. A circuit relay v2 server with identify, ping and an AutoNAT server, on TCP and
//! QUIC, with a persistent identity.
//!
//! A device behind NAT reserves a slot here and is then reachable at
//! `<relay addr>/p2p/<relay id>/p2p-circuit/p2p/<device id>`; the devices then punch a
//! direct path (DCUtR) and leave the relay, or keep using it where no punch works. The
//! relay only passes bytes along: connections through it are end-to-end encrypted.
//! Relay v2 serves reservations only once it knows an external address, which
//! `--external-addr` gives.
//!
//! Its limits and rate limits come from `relay.toml` ([`config`]); its operator watches it
//! through Prometheus metrics ([`metrics`], served by [`http`] when asked for). [`load`]
//! holds peers that put load on a relay, for its tests and benchmark.

pub mod config;
pub mod http;
pub mod load;
pub mod metrics;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, SwarmBuilder, allow_block_list, autonat, identify,
    multiaddr::Protocol,
    noise, ping, relay,
    swarm::{NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle},
    tcp,
};
use loopsy_mesh::muxer;

pub use config::Settings;

/// The relay's settings, from its flags and config file.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the identity key lives.
    pub home: PathBuf,
    pub listen: Vec<Multiaddr>,
    /// Public addresses to announce (the relay's own, or a port forwarded to it).
    pub external: Vec<Multiaddr>,
    pub settings: Settings,
    /// Where to serve metrics (the flag, else `[metrics] listen`); off when `None`.
    pub metrics: Option<SocketAddr>,
    /// The certificate of `/tls/ws` listen addresses; they are refused without one.
    pub certificate: Option<loopsy_mesh::web::Certificate>,
}

/// The file that says a directory is a Loopsy home: a node on the same machine lets no peer
/// read or write it through `files`. The same name as `loopsy_daemon::home::MARKER`.
pub const HOME_MARKER: &str = ".loopsy-home";

/// Marks the relay's home (which holds its key) as a Loopsy home, once.
pub fn mark_home(home: &std::path::Path) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let marked = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(home.join(HOME_MARKER))
        .and_then(|mut file| {
            file.write_all(
                b"This directory holds a Loopsy relay's state: its key.\nNo Loopsy node lets \
                  another device read or write it through `loopsy cp`.\n",
            )
        });
    match marked {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    /// A private relay: only these peers may connect.
    allow: Toggle<allow_block_list::Behaviour<allow_block_list::AllowedPeers>>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    relay: relay::Behaviour,
    autonat: autonat::Behaviour,
}

/// Runs the relay until `shutdown` completes, printing each address it can be reached at.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.home)
        .with_context(|| format!("create {}", config.home.display()))?;
    mark_home(&config.home).with_context(|| format!("mark {}", config.home.display()))?;
    let keypair = loopsy_mesh::identity::load_or_create(&config.home.join("identity.key"))?;
    let allowed = config.settings.allowed().map_err(anyhow::Error::msg)?;
    let private = allowed.is_some();
    let relay_config = config.settings.relay_config();
    if config.certificate.is_none()
        && let Some(addr) = config.listen.iter().find(|a| is_tls_websocket(a))
    {
        anyhow::bail!("{addr} needs a certificate: pass --tls-cert FILE --tls-key FILE");
    }
    let certificate = config.certificate.clone();
    let mut registry = libp2p::metrics::Registry::default();
    let mut swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            // Nodes offer TLS first (AES-GCM where the CPU has AES: every relayed byte
            // passes through here); browsers and older nodes speak Noise.
            (loopsy_mesh::tls::Tls::new, noise::Config::new),
            muxer::Config::default,
        )?
        .with_quic()
        // Browsers dial WebSocket (`--listen /ip4/0.0.0.0/tcp/N/ws`, or `/tls/ws` with a
        // certificate); the same port serves the web app to plain HTTP (or HTTPS).
        .with_other_transport(|key| {
            loopsy_mesh::web::transport(key, Some(loopsy_web::SITE), certificate)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })?
        .with_bandwidth_metrics(&mut registry)
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let allow = allowed.map(|peers| {
                let mut list =
                    allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
                for peer in peers {
                    list.allow_peer(peer);
                }
                list
            });
            Behaviour {
                allow: allow.into(),
                identify: identify::Behaviour::new(
                    identify::Config::new(loopsy_wire::protocol::IDENTIFY.into(), key.public())
                        .with_agent_version(format!("loopsy-relay/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::default(),
                relay: relay::Behaviour::new(peer_id, relay_config),
                autonat: autonat::Behaviour::new(
                    peer_id,
                    autonat::Config {
                        // Devices on private networks ask too (a LAN relay, a lab).
                        only_global_ips: false,
                        ..Default::default()
                    },
                ),
            }
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .with_context(|| format!("listen on {addr}"))?;
    }
    let peer_id = *swarm.local_peer_id();
    for addr in &config.external {
        swarm.add_external_address(addr.clone());
        say(&format!(
            "external {}",
            addr.clone().with(Protocol::P2p(peer_id))
        ));
    }
    say(&format!("loopsy-relay {peer_id}"));
    if !private {
        tracing::warn!(
            "an open relay: any device may relay through it (set [access] allow in \
             relay.toml to make it private)"
        );
    }
    if config.external.is_empty() {
        tracing::warn!(
            "no --external-addr: reservations are refused until an external address is confirmed"
        );
    }

    let mut metrics = metrics::Metrics::new(&mut registry, config.settings.limits.clone());
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = match config.metrics {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics: listen on {addr}"))?;
            let bound = listener.local_addr()?;
            if !bound.ip().is_loopback() {
                tracing::warn!(%bound, "metrics are served beyond this machine");
            }
            say(&format!("metrics http://{bound}/metrics"));
            Some(tokio::spawn(http::serve(
                listener,
                Arc::new(registry),
                async move {
                    let _ = metrics_stopped.await;
                },
            )))
        }
        None => None,
    };

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            event = swarm.select_next_some() => on_event(event, &mut metrics, peer_id),
        }
    }
    let _ = stop_metrics.send(());
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    Ok(())
}

/// A `/tls/ws` or `/wss` address: browsers' secure WebSocket.
fn is_tls_websocket(addr: &Multiaddr) -> bool {
    let parts: Vec<_> = addr.iter().collect();
    parts.iter().any(|p| matches!(p, Protocol::Wss(_)))
        || parts
            .windows(2)
            .any(|w| matches!(w, [Protocol::Tls, Protocol::Ws(_)]))
}

/// Counts an event, and logs or prints what the operator should see.
fn on_event(event: SwarmEvent<BehaviourEvent>, metrics: &mut metrics::Metrics, local: PeerId) {
    metrics.record(&event);
    match event {
        SwarmEvent::NewListenAddr { address, .. } => {
            say(&format!("listening {}", address.with(Protocol::P2p(local))));
        }
        SwarmEvent::ConnectionEstablished {
            peer_id, endpoint, ..
        } => {
            tracing::debug!(%peer_id, addr = %endpoint.get_remote_address(), "connected");
        }
        SwarmEvent::ExternalAddrConfirmed { address } => {
            tracing::info!(%address, "external address confirmed");
        }
        SwarmEvent::Behaviour(BehaviourEvent::Relay(event)) => {
            metrics.record_relay(&event);
            log_relay(event);
        }
        SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => metrics.record_identify(&event),
        SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => metrics.record_ping(&event),
        _ => {}
    }
}

/// A line on stdout for whoever started the relay; one who stopped reading (a closed
/// pipe) must not stop the relay.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn log_relay(event: relay::Event) {
    use relay::Event::*;
    match event {
        ReservationReqAccepted { src_peer_id, .. } => {
            tracing::info!(peer = %src_peer_id, "reservation accepted");
        }
        ReservationReqDenied { src_peer_id, .. } => {
            tracing::info!(peer = %src_peer_id, "reservation denied (limits)");
        }
        ReservationTimedOut { src_peer_id } => {
            tracing::info!(peer = %src_peer_id, "reservation expired");
        }
        CircuitReqAccepted {
            src_peer_id,
            dst_peer_id,
        } => tracing::info!(src = %src_peer_id, dst = %dst_peer_id, "circuit opened"),
        CircuitReqDenied {
            src_peer_id,
            dst_peer_id,
            ..
        } => tracing::info!(src = %src_peer_id, dst = %dst_peer_id, "circuit denied"),
        CircuitClosed {
            src_peer_id,
            dst_peer_id,
            error,
        } => tracing::info!(src = %src_peer_id, dst = %dst_peer_id, ?error, "circuit closed"),
        other => tracing::debug!(?other, "relay"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_home_is_marked_once() {
        let home = std::env::temp_dir().join(format!("loopsy-relay-home-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        super::mark_home(&home).unwrap();
        let marker = home.join(super::HOME_MARKER);
        let text = std::fs::read(&marker).unwrap();
        assert!(!text.is_empty());
        super::mark_home(&home).unwrap();
        assert_eq!(std::fs::read(&marker).unwrap(), text);
        std::fs::remove_dir_all(home).ok();
    }
}
