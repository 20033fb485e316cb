//! `loopsy-relay`: the optional public node that Loopsy devices on different networks meet
//! through. For now it is a plain libp2p node (identify and ping, on TCP and QUIC, with a
//! persistent identity) that prints the addresses to paste into a node's config; the
//! circuit relay service comes with the cross-network work.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use futures::StreamExt;
use libp2p::{
    Multiaddr, SwarmBuilder, identify, multiaddr::Protocol, noise, ping, swarm::NetworkBehaviour,
    swarm::SwarmEvent, tcp, yamux,
};

/// The relay's settings, from its flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the identity key lives.
    pub home: PathBuf,
    pub listen: Vec<Multiaddr>,
    /// Public addresses to announce, for a relay behind port forwarding.
    pub external: Vec<Multiaddr>,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// Runs the relay until `shutdown` completes, printing each address it can be reached at.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.home)
        .with_context(|| format!("create {}", config.home.display()))?;
    let keypair = loopsy_mesh::identity::load_or_create(&config.home.join("identity.key"))?;
    let mut swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_quic()
        .with_behaviour(|key| Behaviour {
            identify: identify::Behaviour::new(
                identify::Config::new("/loopsy/id/1".into(), key.public())
                    .with_agent_version(format!("loopsy-relay/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::default(),
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
        println!("external {}", addr.clone().with(Protocol::P2p(peer_id)));
    }
    println!("loopsy-relay {peer_id}");

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    println!("listening {}", address.with(Protocol::P2p(peer_id)));
                }
                SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                    tracing::debug!(%peer_id, addr = %endpoint.get_remote_address(), "connected");
                }
                _ => {}
            },
        }
    }
    Ok(())
}
