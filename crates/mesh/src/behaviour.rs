//! The libp2p behaviours every Loopsy node runs.

use std::time::Duration;

use libp2p::{
    PeerId, autonat, dcutr, identify,
    identity::Keypair,
    mdns, ping, relay,
    swarm::{ConnectionId, NetworkBehaviour, behaviour::toggle::Toggle},
};

/// How often connected peers are pinged (for `rtt_ms`, and to notice dead links: a
/// connection whose pings time out is closed, so that traffic moves to another path).
/// Pings are most of an idle node's work (each a timer, a stream frame and a trip through
/// every behaviour, both ways on every connection); a dead link is found sooner by
/// [`crate::alive`]'s check of a connection that went [`crate::alive::SILENT`] without one.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Reservations on relays, and connections through them.
    pub relay: relay::client::Behaviour,
    /// Hole punching: a relayed connection is upgraded to a direct one where NATs allow.
    /// Unheld: the relayed connection goes once a direct one is up and its streams end.
    pub dcutr: crate::keep::Unheld<dcutr::Behaviour>,
    /// Whether this node is reachable from outside, as peers that dial back find.
    pub autonat: autonat::Behaviour,
    /// A port mapped on the home router (UPnP), when enabled.
    pub portmap: crate::portmap::Behaviour,
    /// Application protocols: one libp2p stream per operation, on the peer's best
    /// connection.
    pub streams: crate::streams::Behaviour,
    /// Keeps each peer's best connection open and lets the others go.
    pub keep: crate::keep::Behaviour,
    /// Checks on demand that a connection still carries anything.
    pub alive: crate::alive::Behaviour,
    /// Bounds on connections: handshakes in progress, strangers' connections in all, and
    /// per peer; members are always let in. Last, so that a connection it makes room for
    /// is one every other behaviour took.
    pub limits: crate::limits::Behaviour,
}

impl Behaviour {
    /// Counts a connection as gone for the behaviours that choose between connections,
    /// before the swarm reports it closed.
    pub fn forget(&mut self, peer: PeerId, id: ConnectionId) {
        self.keep.forget(peer, id);
        self.streams.forget(peer, id);
        self.alive.forget(peer, id);
    }

    pub fn new(
        key: &Keypair,
        name: &str,
        mdns_enabled: bool,
        relay: relay::client::Behaviour,
        relays: impl IntoIterator<Item = PeerId>,
    ) -> std::io::Result<Self> {
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
        let autonat = autonat::Behaviour::new(
            peer_id,
            autonat::Config {
                boot_delay: Duration::from_secs(5),
                retry_interval: Duration::from_secs(60),
                // Devices and relays on private networks (a home LAN, a company's, a test
                // lab) are as good judges as public ones.
                only_global_ips: false,
                ..Default::default()
            },
        );
        Ok(Self {
            identify,
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(PING_INTERVAL)
                    .with_timeout(PING_TIMEOUT),
            ),
            mdns: mdns.into(),
            relay,
            dcutr: crate::keep::Unheld(dcutr::Behaviour::new(peer_id)),
            autonat,
            portmap: crate::portmap::Behaviour::default(),
            streams: crate::streams::Behaviour::new(),
            keep: crate::keep::Behaviour::new(peer_id),
            alive: crate::alive::Behaviour::default(),
            limits: crate::limits::Behaviour::new(relays),
        })
    }
}
