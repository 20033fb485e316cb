//! The one task that owns the swarm. Everything else reaches it through [`Command`]s on a
//! bounded channel, each with a oneshot for the answer.
//!
//! Across networks: the loop holds a reservation on each configured relay (and takes a new
//! one, with backoff, whenever one is lost). A connection to a peer tries the peer's
//! direct addresses first and its relayed ones shortly after; a relayed connection is
//! upgraded by DCUtR where the NATs allow (on every new relayed connection, so a peer that
//! comes back through the relay is punched again). Once a direct connection is up, new
//! streams go direct and a relayed connection closes when its last stream ends
//! (`keep::Unheld`): a copy or an attach already running through the relay is not cut;
//! past a generous grace it is closed anyway. A connection whose pings time out is
//! closed, so that a dead path (an address that went away) gives way to a new one; where
//! there is reason to doubt a path sooner (a peer connected anew), `alive` checks it at
//! once, and one bound to an address this device lost is closed at once. A connection closed for being dead counts as gone from then on (`condemn`).

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, autonat,
    core::transport::ListenerId,
    dcutr, identify, mdns,
    multiaddr::Protocol,
    ping, relay,
    swarm::{
        ConnectionId, SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use tokio::{
    sync::{broadcast, mpsc, oneshot},
    time::Instant,
};

use crate::{
    MeshEvent, Nat, NetworkStatus,
    addr::{self, is_relayed},
    agent,
    behaviour::{Behaviour, BehaviourEvent},
    netcheck::{Observations, Punch},
    peers::{PeerState, Peers},
    report::Chain,
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
    SetMembers {
        members: HashSet<PeerId>,
        reply: oneshot::Sender<()>,
    },
    Forget {
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
    SetRelays {
        relays: Vec<Multiaddr>,
        reply: oneshot::Sender<()>,
    },
    NetCheck {
        reply: oneshot::Sender<crate::netcheck::NetReport>,
    },
}

/// How often devices seen on the LAN but not connected are dialled again.
const LAN_REDIAL: Duration = Duration::from_secs(10);
/// Most callers waiting on connections to one peer; more are told to retry.
const MAX_WAITERS: usize = 32;
/// How long direct addresses have before the relayed ones are dialled too (a direct dial
/// into a NAT that drops it never fails, it only times out). A relayed connection that
/// wins is upgraded by a punch where it can be, and gives way to a direct one anyway.
const RELAY_AFTER: Duration = Duration::from_millis(500);
/// Longest a relayed connection stays beside a direct one. It closes by itself once its
/// last stream ends (new streams go direct); this bounds what a relay carries for a copy
/// or an attach that began before the punch (an attach picks up again direct, losing
/// nothing).
const RELAYED_GRACE: Duration = Duration::from_secs(600);
/// Waits before taking a lost relay reservation again.
const RESERVE_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));
/// Longest a stopping node waits for its connections to close.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Most per-peer timers pending at once (relay reservations, few and configured, are
/// never refused): past it, a relayed dial waits for the next connect to ask again.
const MAX_TIMERS: usize = 1024;

/// Work the loop does later.
#[derive(Debug, Clone, PartialEq)]
enum Due {
    /// Dial these relayed addresses of a peer if still not connected.
    DialRelayed { peer: PeerId, addrs: Vec<Multiaddr> },
    /// Close the peer's relayed connections if it has a direct one.
    CloseRelayed { peer: PeerId },
    /// Ask this relay for a reservation again.
    Reserve { relay: usize },
}

/// A relay this node keeps a reservation on.
struct Relay {
    /// Ends in `/p2p/<relay id>`.
    addr: Multiaddr,
    listener: Option<ListenerId>,
    reserved: bool,
    backoff: Duration,
    /// The relay's WebSocket addresses (from identify): a browser reaches this node through
    /// a circuit over one of them, as it cannot dial the address reserved on.
    web: Vec<Multiaddr>,
}

impl Relay {
    fn new(addr: Multiaddr) -> Self {
        Self {
            addr,
            listener: None,
            reserved: false,
            backoff: RESERVE_BACKOFF.0,
            web: Vec::new(),
        }
    }

    /// The circuit addresses through the relay's WebSocket listeners, while reserved.
    fn web_circuits(&self) -> impl Iterator<Item = Multiaddr> + '_ {
        let id = self.peer_id().filter(|_| self.reserved);
        self.web.iter().filter_map(move |web| {
            Some(
                web.clone()
                    .with(Protocol::P2p(id?))
                    .with(Protocol::P2pCircuit),
            )
        })
    }

    fn peer_id(&self) -> Option<PeerId> {
        addr::peer_id(&self.addr)
    }
}

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
    relays: Vec<Relay>,
    nat: Nat,
    timers: Vec<(Instant, Due)>,
    /// Dials `connect` started, per peer: its callers are told of a failure only once
    /// none is left (and no relayed dial is still to come).
    dials: HashMap<PeerId, HashSet<ConnectionId>>,
    /// When each peer's relayed connection came up, for the time to a direct one.
    relayed_since: HashMap<PeerId, Instant>,
    /// Connections closed for carrying nothing (see `condemn`), not yet reported closed.
    condemned: HashSet<ConnectionId>,
    /// What `netcheck` reports: where relays see this node, the port mapping, punches.
    observations: Observations,
}

impl EventLoop {
    pub fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        shutdown: oneshot::Receiver<()>,
        events: broadcast::Sender<MeshEvent>,
        relays: Vec<Multiaddr>,
        port_mapping: crate::netcheck::Asking,
    ) -> Self {
        Self {
            swarm,
            commands,
            shutdown,
            peers: Peers::default(),
            events,
            waiting: HashMap::new(),
            closing: HashMap::new(),
            relays: relays.into_iter().map(Relay::new).collect(),
            nat: Nat::Unknown,
            timers: Vec::new(),
            dials: HashMap::new(),
            relayed_since: HashMap::new(),
            condemned: HashSet::new(),
            observations: Observations::new(port_mapping),
        }
    }

    pub async fn run(mut self) {
        for relay in 0..self.relays.len() {
            self.reserve(relay);
        }
        let mut lan_redial = tokio::time::interval(LAN_REDIAL);
        let mut silent = tokio::time::interval(crate::alive::SILENT_TICK);
        loop {
            let next_timer = self.timers.iter().map(|(at, _)| *at).min();
            let timer = async {
                match next_timer {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = lan_redial.tick() => {
                    // mDNS reports an address once: a first dial that failed (the other
                    // node was still starting, say) is not retried by anything else.
                    for (peer, addrs) in self.peers.on_lan_unconnected() {
                        self.dial_discovered(peer, addrs);
                    }
                    let limits = &self.swarm.behaviour().limits;
                    let now = std::time::Instant::now();
                    for peer in self.peers.forget_stale(now, |p| limits.spared(p)) {
                        tracing::debug!(%peer, "not heard of for a while: forgotten");
                    }
                }
                _ = silent.tick() => {
                    let now = std::time::Instant::now();
                    self.swarm.behaviour_mut().alive.check_silent(now);
                }
                _ = timer => self.run_due_timers(),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                _ = &mut self.shutdown => {
                    self.close_all().await;
                    break;
                }
            }
        }
        tracing::debug!("mesh event loop stopped");
    }

    /// Closes every connection and lets the closes go out, for [`CLOSE_GRACE`] at most: a
    /// QUIC connection merely dropped says nothing, and its peer would list this device
    /// online until its checks time out, a quarter of a minute later.
    async fn close_all(&mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        // The router's mappings are deleted meanwhile (one try, within the same grace).
        let release = self.swarm.behaviour_mut().portmap.release();
        let grace = tokio::time::sleep(CLOSE_GRACE);
        tokio::pin!(grace);
        while self.swarm.connected_peers().next().is_some() {
            tokio::select! {
                _ = self.swarm.select_next_some() => {}
                _ = &mut grace => break,
            }
        }
        if let Some(release) = release {
            let _ = tokio::time::timeout_at(grace.deadline(), release).await;
        }
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
            Command::SetMembers { members, reply } => {
                self.swarm.behaviour_mut().limits.set_members(members);
                let _ = reply.send(());
            }
            Command::Forget { peer, reply } => {
                // Gone from the table at once; its connections follow (a stranger that
                // connects again shows again).
                let _ = self.swarm.disconnect_peer_id(peer);
                self.observations.forget(&peer);
                let _ = reply.send(self.peers.forget(&peer));
            }
            Command::SetRelays { relays, reply } => {
                self.set_relays(relays);
                let _ = reply.send(());
            }
            Command::NetCheck { reply } => {
                let _ = reply.send(self.net_report());
            }
            Command::Disconnect { peer, reply } => {
                let open = self.peers.connection_count(&peer);
                // Condemned connections close too, but nothing waits for them.
                if self.swarm.disconnect_peer_id(peer).is_err() || open == 0 {
                    let _ = reply.send(0);
                    return;
                }
                let entry = self.closing.entry(peer).or_insert((open, Vec::new()));
                entry.1.push(reply);
            }
        }
    }

    /// Dials `peer` unless connected, answering once a connection is up or every dial
    /// failed: direct addresses first, relayed ones [`RELAY_AFTER`] later (at once when
    /// the direct ones fail sooner, or there are none).
    fn connect(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), String>>,
    ) {
        if self.connected(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        let waiters = self.waiting.entry(peer).or_default();
        if waiters.len() >= MAX_WAITERS {
            let _ = reply.send(Err("too many connection attempts at once".into()));
            return;
        }
        waiters.push(reply);
        let (relayed, direct): (Vec<_>, Vec<_>) = addrs.into_iter().partition(is_relayed);
        if direct.is_empty() && !relayed.is_empty() {
            self.dial_relayed(peer, relayed);
            return;
        }
        // The given addresses may be stale or empty: behaviours (mDNS) may know better ones.
        let opts = DialOpts::peer_id(peer)
            .addresses(direct)
            .extend_addresses_through_behaviour()
            // Not "disconnected": the swarm counts condemned connections until they close.
            .condition(PeerCondition::NotDialing)
            .build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.entry(peer).or_default().insert(id);
                self.relay_later(peer, relayed);
            }
            // Another dial is under way (mDNS's, say): its outcome answers, and the relay
            // still gets its turn.
            Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {
                self.relay_later(peer, relayed);
            }
            Err(error) if !relayed.is_empty() => {
                tracing::debug!(%peer, %error, "no direct dial; through the relay");
                self.dial_relayed(peer, relayed);
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "connect: not dialling");
                self.answer_waiters(peer, Err(error.to_string()));
            }
        }
    }

    fn relay_later(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if !addrs.is_empty() {
            self.schedule(RELAY_AFTER, Due::DialRelayed { peer, addrs });
        }
    }

    /// Whether the peer has a connection that is not condemned.
    fn connected(&self, peer: &PeerId) -> bool {
        self.peers.connection_count(peer) > 0
    }

    /// Closes a connection that stopped carrying anything, and counts it as gone at once:
    /// libp2p closes gracefully, and a dead TCP path with unsent data can take minutes to
    /// give up, while the peer table, `keep` and `streams` would go on choosing it.
    fn condemn(&mut self, peer: PeerId, connection: ConnectionId) {
        if !self.condemned.insert(connection) {
            return;
        }
        self.swarm.close_connection(connection);
        self.swarm.behaviour_mut().forget(peer, connection);
        self.peers.disconnected(peer, connection);
        if !self.connected(&peer) {
            self.relayed_since.remove(&peer);
            self.emit(MeshEvent::Disconnected { peer });
        }
    }

    /// Dials relayed addresses, beside a direct dial still under way; a dial that cannot
    /// even start answers the waiters when nothing else is left to try.
    fn dial_relayed(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::Always)
            .build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.entry(peer).or_default().insert(id);
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "not dialling through the relay");
                if self.dials.get(&peer).is_none_or(HashSet::is_empty) {
                    self.answer_waiters(peer, Err(error.to_string()));
                }
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
        let (mut relayed, listen): (Vec<_>, Vec<_>) =
            self.swarm.listeners().cloned().partition(is_relayed);
        for circuit in self.relays.iter().flat_map(Relay::web_circuits) {
            if !relayed.contains(&circuit) {
                relayed.push(circuit);
            }
        }
        NetworkStatus {
            peer_id: *self.swarm.local_peer_id(),
            listen_addrs: listen,
            external_addrs: self.swarm.external_addresses().cloned().collect(),
            relayed_addrs: relayed,
            nat: self.nat,
            reservations: self
                .relays
                .iter()
                .filter(|r| r.reserved)
                .map(|r| r.addr.clone())
                .collect(),
        }
    }

    /// Takes `addrs` as the relays: a relay kept keeps its reservation, a new one is asked
    /// for one, and the listener through a relay no longer listed is closed.
    fn set_relays(&mut self, mut addrs: Vec<Multiaddr>) {
        let mut seen = HashSet::new();
        addrs.retain(|a| seen.insert(a.clone()));
        let mut old = std::mem::take(&mut self.relays);
        for relay in old.iter().filter(|r| !addrs.contains(&r.addr)) {
            tracing::info!(relay = %relay.addr, "relay no longer configured; letting it go");
            if let Some(id) = relay.peer_id() {
                self.observations.relay_dropped(&id);
            }
            if let Some(listener) = relay.listener {
                self.swarm.remove_listener(listener);
            }
        }
        self.relays = addrs
            .into_iter()
            .map(|addr| match old.iter().position(|r| r.addr == addr) {
                Some(index) => old.swap_remove(index),
                None => Relay::new(addr),
            })
            .collect();
        // Pending retries name relays by position, which may have changed: every relay
        // without a listener is asked again now.
        self.timers
            .retain(|(_, due)| !matches!(due, Due::Reserve { .. }));
        let ids: Vec<PeerId> = self.relays.iter().filter_map(Relay::peer_id).collect();
        self.swarm.behaviour_mut().limits.set_relays(ids);
        for index in 0..self.relays.len() {
            if self.relays[index].listener.is_none() {
                self.reserve(index);
            }
        }
    }

    /// Asks relay number `index` for a reservation, by listening through it.
    fn reserve(&mut self, index: usize) {
        let Some(relay) = self.relays.get_mut(index) else {
            return;
        };
        let circuit = relay.addr.clone().with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit) {
            Ok(id) => relay.listener = Some(id),
            Err(error) => {
                let error = Chain(&error);
                tracing::warn!(relay = %relay.addr, %error, "cannot use the relay");
                let wait = relay.backoff;
                relay.backoff = (wait * 2).min(RESERVE_BACKOFF.1);
                self.schedule(wait, Due::Reserve { relay: index });
            }
        }
    }

    fn schedule(&mut self, after: Duration, due: Due) {
        let per_peer = !matches!(due, Due::Reserve { .. });
        if (per_peer && self.timers.len() >= MAX_TIMERS)
            || self.timers.iter().any(|(_, d)| *d == due)
        {
            return;
        }
        self.timers.push((Instant::now() + after, due));
    }

    fn run_due_timers(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.timers)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.timers = later;
        for (_, due) in due {
            match due {
                Due::DialRelayed { peer, addrs } => {
                    if !self.connected(&peer) {
                        self.dial_relayed(peer, addrs);
                    }
                }
                Due::CloseRelayed { peer } => {
                    // A direct connection under doubt may be a dead one: the relayed one
                    // waits for its check.
                    if self.swarm.behaviour().alive.checking(&peer) {
                        self.schedule(crate::alive::TIMEOUT, Due::CloseRelayed { peer });
                        continue;
                    }
                    let (relayed, direct) = self.peers.relayed_connections(&peer);
                    if direct {
                        for id in relayed {
                            tracing::debug!(%peer, "direct now: closing a relayed connection");
                            self.swarm.close_connection(id);
                        }
                    }
                }
                Due::Reserve { relay } => self.reserve(relay),
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                tracing::info!(%address, "no longer listening");
                // An address of this device went away (it moved to another network, say):
                // connections bound to it are dead, and nothing would tell for half a
                // minute; others may have lost their route, and are checked. (Each
                // listener reports the address: it is gone once none has it.)
                let gone = addr::ip(&address).filter(|ip| {
                    !ip.is_loopback()
                        && !is_relayed(&address)
                        && !self.swarm.listeners().any(|l| addr::ip(l) == Some(*ip))
                });
                if let Some(ip) = gone {
                    self.swarm.behaviour_mut().alive.address_gone(ip);
                } else if !addr::is_loopback(&address) {
                    self.swarm.behaviour_mut().alive.check_all();
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => self.on_listener_closed(listener_id, reason.err().map(|e| Chain(&e).to_string())),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let relayed = endpoint.is_relayed();
                let addr = addr::of_connection(&endpoint).clone();
                tracing::debug!(%peer_id, %addr, %connection_id, "connected");
                self.peers.connected(peer_id, connection_id, addr);
                // A peer that connects anew may have moved, leaving the older paths dead.
                self.swarm
                    .behaviour_mut()
                    .alive
                    .check_others(peer_id, connection_id);
                if let Some(dials) = self.dials.get_mut(&peer_id) {
                    dials.remove(&connection_id);
                    if dials.is_empty() {
                        self.dials.remove(&peer_id);
                    }
                }
                if relayed {
                    self.relayed_since
                        .entry(peer_id)
                        .or_insert_with(Instant::now);
                }
                let (relayed_ids, direct) = self.peers.relayed_connections(&peer_id);
                if direct && !relayed_ids.is_empty() {
                    self.schedule(RELAYED_GRACE, Due::CloseRelayed { peer: peer_id });
                }
                self.answer_waiters(peer_id, Ok(()));
                self.emit(MeshEvent::Connected { peer: peer_id });
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                endpoint,
                cause,
                ..
            } => {
                let addr = endpoint.get_remote_address();
                let cause = cause.as_ref().map(|c| Chain(c).to_string());
                let cause = cause.as_deref().unwrap_or("closed by either end");
                tracing::debug!(%peer_id, %addr, %connection_id, cause, "connection closed");
                self.peers.disconnected(peer_id, connection_id);
                // A condemned connection was counted as gone already.
                if !self.condemned.remove(&connection_id) && !self.connected(&peer_id) {
                    self.relayed_since.remove(&peer_id);
                    if let Some((count, waiters)) = self.closing.remove(&peer_id) {
                        for waiter in waiters {
                            let _ = waiter.send(count);
                        }
                    }
                    self.emit(MeshEvent::Disconnected { peer: peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id,
                connection_id,
                error,
            } => {
                let peer = peer_id.map(|p| p.to_string());
                let shown = Chain(&error);
                tracing::debug!(peer = peer.as_deref(), error = %shown, "dial failed");
                let Some(peer) = peer_id else {
                    return;
                };
                // Reached through a relay only: this was a hole punch (DCUtR tells only the
                // side that dialled the relay when punches fail).
                if let (relayed, false) = self.peers.relayed_connections(&peer)
                    && !relayed.is_empty()
                {
                    let punch = Punch::Failed(shown.to_string());
                    self.observations.punched(peer, punch);
                }
                let left = self.dials.get_mut(&peer).map_or(0, |dials| {
                    dials.remove(&connection_id);
                    dials.len()
                });
                if left == 0 {
                    self.dials.remove(&peer);
                }
                if self.connected(&peer) {
                    return;
                }
                // The direct addresses failed before their time was up: the relay now.
                let early = self.timers.iter().position(
                    |(_, due)| matches!(due, Due::DialRelayed { peer: p, .. } if *p == peer),
                );
                if let Some(Due::DialRelayed { peer, addrs }) =
                    early.map(|i| self.timers.swap_remove(i).1)
                {
                    self.dial_relayed(peer, addrs);
                } else if left == 0 {
                    self.answer_waiters(peer, Err(error.to_string()));
                }
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_listener_closed(&mut self, listener: ListenerId, error: Option<String>) {
        let Some(index) = self
            .relays
            .iter()
            .position(|r| r.listener == Some(listener))
        else {
            return;
        };
        let relay = &mut self.relays[index];
        let wait = relay.backoff;
        let error = error.as_deref();
        let retry = format!("{wait:.0?}");
        if relay.reserved {
            tracing::info!(relay = %relay.addr, error, %retry, "relay reservation lost; taking another");
        } else {
            tracing::info!(relay = %relay.addr, error, %retry, "no reservation on the relay (unreachable, or it refused)");
        }
        relay.listener = None;
        relay.reserved = false;
        relay.backoff = (wait * 2).min(RESERVE_BACKOFF.1);
        self.schedule(wait, Due::Reserve { relay: index });
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
                let mut a_relay = false;
                for relay in self
                    .relays
                    .iter_mut()
                    .filter(|r| r.peer_id() == Some(peer_id))
                {
                    a_relay = true;
                    let loopback = crate::addr::is_loopback(&relay.addr);
                    relay.web = crate::addr::relay_web_addrs(&info.listen_addrs, loopback);
                }
                if a_relay {
                    self.observations
                        .seen_by_relay(peer_id, info.observed_addr.clone());
                }
                let name = agent::name_from_agent(&info.agent_version);
                self.peers.identified(peer_id, name, info.listen_addrs);
                let tcp = self.peers.tcp_beside_quic(&peer_id);
                if !tcp.is_empty() {
                    tracing::debug!(%peer_id, "reached over QUIC only: dialling TCP too");
                    self.dial_beside(peer_id, tcp, PeerCondition::NotDialing);
                }
            }
            BehaviourEvent::Alive(crate::alive::Dead {
                peer,
                connection,
                why,
            }) => {
                tracing::info!(%peer, %connection, %why, "a dead connection; closing it");
                self.condemn(peer, connection);
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Ok(rtt),
            }) => {
                self.peers.pinged(peer, rtt);
                self.swarm.behaviour_mut().alive.lives(peer, connection);
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(error),
            }) if !matches!(error, ping::Failure::Unsupported) => {
                // A path that stopped carrying anything (its address went away, a NAT
                // forgot it): closed, so that the peer is reached another way.
                let error = Chain(&error);
                tracing::info!(%peer, %error, "pings fail; closing the connection");
                self.condemn(peer, connection);
            }
            BehaviourEvent::Relay(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                ..
            }) => {
                for relay in &mut self.relays {
                    if relay.peer_id() == Some(relay_peer_id) {
                        if !relay.reserved {
                            tracing::info!(relay = %relay.addr, "relay reservation accepted");
                        }
                        relay.reserved = true;
                        relay.backoff = RESERVE_BACKOFF.0;
                    }
                }
            }
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => self.on_punch(remote_peer_id, result),
            BehaviourEvent::Portmap(event) => self.on_port_mapping(event),
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. }) => {
                self.nat = match new {
                    autonat::NatStatus::Public(_) => Nat::Public,
                    autonat::NatStatus::Private => Nat::Private,
                    autonat::NatStatus::Unknown => Nat::Unknown,
                };
                let nat = match self.nat {
                    Nat::Public => "public: other devices can dial this one",
                    Nat::Private => {
                        "private: behind a NAT, reached through relays or hole punching"
                    }
                    Nat::Unknown => "unknown",
                };
                tracing::info!(%nat, "reachability");
            }
            _ => {}
        }
    }

    fn on_punch(&mut self, peer: PeerId, result: Result<ConnectionId, dcutr::Error>) {
        let punch = match &result {
            Ok(_) => Punch::Succeeded,
            Err(error) => Punch::Failed(Chain(error).to_string()),
        };
        self.observations.punched(peer, punch);
        match result {
            Ok(_) => {
                let took = match self.relayed_since.remove(&peer) {
                    Some(since) => format!("{:.1?}", since.elapsed()),
                    None => "?".into(),
                };
                tracing::info!(%peer, %took, "hole punched: direct connection");
            }
            // Tried again on the next relayed connection to the peer.
            Err(error) => {
                let error = Chain(&error);
                tracing::info!(%peer, %error, "hole punching failed; staying relayed");
            }
        }
    }

    /// Connects to a device mDNS announced, unless already connected or dialling.
    fn dial_discovered(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        self.dial_beside(peer, addrs, PeerCondition::DisconnectedAndNotDialing);
    }

    /// A dial nobody waits for: a failure is only logged.
    fn dial_beside(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, condition: PeerCondition) {
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(condition)
            .build();
        if let Err(error) = self.swarm.dial(opts) {
            tracing::debug!(%peer, %error, "not dialling");
        }
    }
}

/// Port mapping and `netcheck`.
impl EventLoop {
    fn on_port_mapping(&mut self, event: crate::portmap::Event) {
        use crate::portmap::{Event, pmp};
        use libp2p::upnp::Event as Upnp;
        match &event {
            Event::Upnp(Upnp::NewExternalAddr { external_addr, .. }) => {
                tracing::info!(address = %external_addr, "the router mapped a port (UPnP)");
            }
            Event::Upnp(Upnp::ExpiredExternalAddr { external_addr, .. }) => {
                tracing::info!(address = %external_addr, "the router's port mapping lapsed (UPnP)");
                self.forget_confirmed(external_addr);
            }
            Event::Upnp(Upnp::GatewayNotFound) => tracing::debug!("no UPnP router answered"),
            Event::Upnp(Upnp::NonRoutableGateway) => {
                tracing::info!("the UPnP router's own address is private: no port mapped")
            }
            Event::Pmp(pmp::Event::Expired {
                protocol, external, ..
            }) => {
                tracing::info!(address = %external, %protocol, "the router's port mapping lapsed");
                self.forget_confirmed(external);
            }
            Event::Pmp(pmp::Event::Asked { protocol, outcome }) => {
                tracing::debug!(%protocol, ?outcome, "asked the gateway for a port mapping");
            }
            Event::Pmp(pmp::Event::NoGateway) => {
                tracing::debug!("no default gateway to ask for a port mapping (PCP, NAT-PMP)")
            }
            Event::Pmp(pmp::Event::Mapped { .. }) => {}
        }
        self.observations.on_port_mapping(&event);
    }

    /// A lapsed mapping's address goes in every form: AutoNAT confirms what it dialled back
    /// with this node's `/p2p` on the end, and would otherwise keep it until its next probe.
    fn forget_confirmed(&mut self, lapsed: &Multiaddr) {
        let transport = |addr: &Multiaddr| {
            let mut addr = addr.clone();
            if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
                addr.pop();
            }
            addr
        };
        let lapsed = transport(lapsed);
        let forms: Vec<Multiaddr> = self
            .swarm
            .external_addresses()
            .filter(|a| transport(a) == lapsed)
            .cloned()
            .collect();
        for addr in forms {
            self.swarm.remove_external_address(&addr);
        }
    }

    fn net_report(&self) -> crate::netcheck::NetReport {
        use crate::netcheck::{self, NetReport, PeerPath, RelayState};
        let peers = self.peers.snapshot();
        let listen: Vec<Multiaddr> = self
            .swarm
            .listeners()
            .filter(|a| !is_relayed(a))
            .cloned()
            .collect();
        let relays: Vec<RelayState> = self
            .relays
            .iter()
            .map(|relay| {
                let id = relay.peer_id();
                let state = peers.iter().find(|p| Some(p.peer_id) == id);
                RelayState {
                    addr: relay.addr.clone(),
                    connected: state.is_some_and(|p| p.is_connected()),
                    reserved: relay.reserved,
                    rtt: state.and_then(|p| p.rtt),
                    observed: id.map_or_else(Vec::new, |id| self.observations.seen(&id).to_vec()),
                }
            })
            .collect();
        let seen: Vec<(PeerId, Vec<Multiaddr>)> = self
            .relays
            .iter()
            .filter_map(Relay::peer_id)
            .map(|id| (id, self.observations.seen(&id).to_vec()))
            .collect();
        let relay_ids: Vec<PeerId> = seen.iter().map(|(id, _)| *id).collect();
        NetReport {
            mapping: netcheck::mapping(&seen, &listen),
            port_mapping: self.observations.port_mapping().clone(),
            ipv6: listen
                .iter()
                .filter(|a| netcheck::is_global_ipv6(a))
                .cloned()
                .collect(),
            relays,
            mdns: self.swarm.behaviour().mdns.is_enabled(),
            lan_devices: peers.iter().filter(|p| p.on_lan).count(),
            peers: peers
                .iter()
                .filter(|p| !relay_ids.contains(&p.peer_id))
                .map(|p| PeerPath {
                    peer_id: p.peer_id,
                    link: p.link,
                    punch: self.observations.punch(&p.peer_id),
                })
                .collect(),
        }
    }
}
