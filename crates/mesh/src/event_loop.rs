//! The one task that owns the swarm. Everything else reaches it through [`Command`]s on a
//! bounded channel, each with a oneshot for the answer.

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, identify, mdns, ping,
    swarm::{
        SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    NetworkStatus, agent,
    behaviour::{Behaviour, BehaviourEvent},
    peers::{PeerState, Peers, is_relayed},
};

/// A request to the event loop.
#[derive(Debug)]
pub(crate) enum Command {
    Status {
        reply: oneshot::Sender<NetworkStatus>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerState>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    shutdown: oneshot::Receiver<()>,
    peers: Peers,
}

impl EventLoop {
    pub fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        shutdown: oneshot::Receiver<()>,
    ) -> Self {
        Self {
            swarm,
            commands,
            shutdown,
            peers: Peers::default(),
        }
    }

    pub async fn run(mut self) {
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                _ = &mut self.shutdown => break,
            }
        }
        tracing::debug!("mesh event loop stopped");
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peers.snapshot());
            }
            Command::Dial { addr, reply } => {
                let _ = reply.send(self.swarm.dial(addr).map_err(|e| e.to_string()));
            }
        }
    }

    fn status(&self) -> NetworkStatus {
        let (relayed, listen): (Vec<_>, Vec<_>) =
            self.swarm.listeners().cloned().partition(is_relayed);
        NetworkStatus {
            peer_id: *self.swarm.local_peer_id(),
            listen_addrs: listen,
            external_addrs: self.swarm.external_addresses().cloned().collect(),
            relayed_addrs: relayed,
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                tracing::debug!(%peer_id, %addr, "connected");
                self.peers.connected(peer_id, connection_id, addr);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                tracing::debug!(%peer_id, ?cause, "connection closed");
                self.peers.disconnected(peer_id, connection_id);
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "dial failed");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    tracing::debug!(%peer, %addr, "found on the LAN");
                    self.peers.discovered(peer, addr.clone());
                    self.dial_discovered(peer, addr);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Expired(gone)) => {
                for (peer, addr) in gone {
                    self.peers.expired(peer, &addr);
                }
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let name = agent::name_from_agent(&info.agent_version);
                self.peers.identified(peer_id, name, info.listen_addrs);
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => self.peers.pinged(peer, rtt),
            _ => {}
        }
    }

    /// Connects to a device mDNS announced, unless already connected or dialling.
    fn dial_discovered(&mut self, peer: PeerId, addr: Multiaddr) {
        let opts = DialOpts::peer_id(peer)
            .addresses(vec![addr])
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(error) = self.swarm.dial(opts) {
            tracing::debug!(%peer, %error, "not dialling discovered peer");
        }
    }
}
