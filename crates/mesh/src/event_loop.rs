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
use std::{collections::HashMap, time::Duration};

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{
    MeshEvent, NetworkStatus, agent,
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
    Connect {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Disconnect {
        peer: PeerId,
        reply: oneshot::Sender<usize>,
    },
}

/// How often devices seen on the LAN but not connected are dialled again.
const LAN_REDIAL: Duration = Duration::from_secs(10);

/// Most callers waiting on connections to one peer; more are told to retry.
const MAX_WAITERS: usize = 32;

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    shutdown: oneshot::Receiver<()>,
    peers: Peers,
    events: broadcast::Sender<MeshEvent>,
    /// Callers of `connect` waiting for a connection to a peer.
    waiting: HashMap<PeerId, Vec<oneshot::Sender<Result<(), String>>>>,
    /// Callers of `disconnect` waiting for a peer's connections to close, with how many
    /// there were.
    closing: HashMap<PeerId, (usize, Vec<oneshot::Sender<usize>>)>,
}

impl EventLoop {
    pub fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        shutdown: oneshot::Receiver<()>,
        events: broadcast::Sender<MeshEvent>,
    ) -> Self {
        Self {
            swarm,
            commands,
            shutdown,
            peers: Peers::default(),
            events,
            waiting: HashMap::new(),
            closing: HashMap::new(),
        }
    }

    pub async fn run(mut self) {
        let mut lan_redial = tokio::time::interval(LAN_REDIAL);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = lan_redial.tick() => {
                    // mDNS reports an address once: a first dial that failed (the other
                    // node was still starting, say) is not retried by anything else.
                    for (peer, addrs) in self.peers.on_lan_unconnected() {
                        self.dial_discovered(peer, addrs);
                    }
                }
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
            Command::Connect { peer, addrs, reply } => self.connect(peer, addrs, reply),
            Command::Disconnect { peer, reply } => {
                if self.swarm.disconnect_peer_id(peer).is_err() {
                    let _ = reply.send(0);
                    return;
                }
                let open = self.peers.connection_count(&peer);
                let entry = self.closing.entry(peer).or_insert((open, Vec::new()));
                entry.1.push(reply);
            }
        }
    }

    /// Dials `peer` unless connected, answering once a connection is up or the dial failed.
    fn connect(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), String>>,
    ) {
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        let waiters = self.waiting.entry(peer).or_default();
        if waiters.len() >= MAX_WAITERS {
            let _ = reply.send(Err("too many connection attempts at once".into()));
            return;
        }
        waiters.push(reply);
        // The given addresses may be stale or empty: behaviours (mDNS) may know better ones.
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(error) = self.swarm.dial(opts) {
            tracing::debug!(%peer, %error, "connect: not dialling");
            // Already dialling is fine: that dial's outcome answers.
            if !matches!(error, libp2p::swarm::DialError::DialPeerConditionFalse(_)) {
                self.answer_waiters(peer, Err(error.to_string()));
            }
        }
    }

    fn answer_waiters(&mut self, peer: PeerId, result: Result<(), String>) {
        for waiter in self.waiting.remove(&peer).unwrap_or_default() {
            let _ = waiter.send(result.clone());
        }
    }

    fn emit(&self, event: MeshEvent) {
        // No receiver is fine: nobody is interested yet.
        let _ = self.events.send(event);
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
                self.answer_waiters(peer_id, Ok(()));
                self.emit(MeshEvent::Connected { peer: peer_id });
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                tracing::debug!(%peer_id, ?cause, "connection closed");
                self.peers.disconnected(peer_id, connection_id);
                if !self.swarm.is_connected(&peer_id) {
                    if let Some((count, waiters)) = self.closing.remove(&peer_id) {
                        for waiter in waiters {
                            let _ = waiter.send(count);
                        }
                    }
                    self.emit(MeshEvent::Disconnected { peer: peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "dial failed");
                if let Some(peer) = peer_id
                    && !self.swarm.is_connected(&peer)
                {
                    self.answer_waiters(peer, Err(error.to_string()));
                }
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
                    self.dial_discovered(peer, vec![addr]);
                    self.emit(MeshEvent::Discovered { peer });
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
    fn dial_discovered(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(error) = self.swarm.dial(opts) {
            tracing::debug!(%peer, %error, "not dialling discovered peer");
        }
    }
}
