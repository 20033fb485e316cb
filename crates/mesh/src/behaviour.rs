//! The libp2p behaviours every Loopsy node runs.

use std::time::Duration;

use libp2p::{
    identify, identity::Keypair, mdns, ping, swarm::NetworkBehaviour,
    swarm::behaviour::toggle::Toggle,
};

/// How often connected peers are pinged (for `rtt_ms` and to notice dead links).
const PING_INTERVAL: Duration = Duration::from_secs(10);

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Application protocols: one libp2p stream per operation.
    pub streams: libp2p_stream::Behaviour,
}

impl Behaviour {
    pub fn new(key: &Keypair, name: &str, mdns_enabled: bool) -> std::io::Result<Self> {
        let peer_id = key.public().to_peer_id();
        let mdns = if mdns_enabled {
            let config = mdns::Config {
                // Short enough that a device that left drops out of listings soon.
                ttl: Duration::from_secs(60),
                query_interval: Duration::from_secs(20),
                ..Default::default()
            };
            Some(mdns::tokio::Behaviour::new(config, peer_id)?)
        } else {
            None
        };
        let identify = identify::Behaviour::new(
            identify::Config::new(loopsy_wire::protocol::IDENTIFY.into(), key.public())
                .with_agent_version(crate::agent::agent_version(name)),
        );
        Ok(Self {
            identify,
            ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL)),
            mdns: mdns.into(),
            streams: libp2p_stream::Behaviour::new(),
        })
    }
}
