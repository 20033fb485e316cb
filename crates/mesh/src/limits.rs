//! Connection limits that spare members.
//!
//! Peer IDs cost nothing to make, and every device must let strangers in (they pair, and
//! relays and AutoNAT servers are strangers too), so without a bound a flood of fresh
//! identities, direct or through a relay's circuits, would hold a connection (a file
//! descriptor, buffers, pings) each until the node ran out. So:
//!
//! - **Handshakes in progress** are capped at [`MAX_PENDING_INBOUND`]: the peer is not yet
//!   known, so the cap holds for everyone; past it an incoming connection is closed at once.
//!   A member is not shut out by it: this node keeps its own connections to members (and
//!   dials them), and outgoing dials are not capped.
//! - **Strangers' connections** (inbound, outbound and relayed circuits alike) are capped at
//!   [`MAX_STRANGERS`] in all. A stranger's connection past the cap is not refused: the
//!   oldest stranger's connection is closed to make room, since refusing newcomers would
//!   let whoever got in first (connections cost nothing to hold) lock out every joiner for
//!   good. Evicted connections still closing count too: past [`MAX_CLOSING`] of them a new
//!   stranger is refused, so descriptors stay bounded even against a peer that never lets
//!   a close finish.
//! - **Per peer**: a stranger holds at most [`MAX_PER_STRANGER`] connections, a member
//!   [`MAX_PER_MEMBER`] (each end's dials, TCP and QUIC, a relayed one, hole punches and
//!   AutoNAT dial-backs fit, with room; the end of a pair that does not pick keeps all of
//!   its best rank open, see `keep`, and a member could otherwise open them without end).
//!
//! Members (as the daemon says, [`Behaviour::set_members`]) and the configured relays are
//! never counted against the strangers' cap nor evicted.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    convert::Infallible,
    fmt,
    task::{Context, Poll, Waker},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    swarm::{
        CloseConnection, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm,
        ListenFailure, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
        behaviour::ConnectionEstablished, dummy,
    },
};

/// Incoming connections still in their handshake, from anyone.
pub(crate) const MAX_PENDING_INBOUND: usize = 64;
/// Connections with strangers, held at once.
pub(crate) const MAX_STRANGERS: usize = 128;
/// Strangers' connections closed to make room and not closed yet.
pub(crate) const MAX_CLOSING: usize = 128;
/// Connections with one stranger.
pub(crate) const MAX_PER_STRANGER: usize = 4;
/// Connections with one member or relay.
pub(crate) const MAX_PER_MEMBER: usize = 8;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Handshakes,
    PerPeer(usize),
    Strangers,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Handshakes => write!(
                f,
                "more than {MAX_PENDING_INBOUND} incoming connections in their handshake"
            ),
            Refused::PerPeer(n) => write!(f, "at most {n} connections per peer"),
            Refused::Strangers => write!(
                f,
                "{MAX_STRANGERS} strangers' connections held and {MAX_CLOSING} still closing"
            ),
        }
    }
}

impl std::error::Error for Refused {}

/// An established connection.
#[derive(Debug)]
struct Held {
    peer: PeerId,
    /// Order of arrival: the smallest is the oldest.
    order: u64,
    /// Closed to make room for a newer stranger, not closed yet.
    closing: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Behaviour {
    members: HashSet<PeerId>,
    relays: HashSet<PeerId>,
    pending_inbound: HashSet<ConnectionId>,
    held: HashMap<ConnectionId, Held>,
    per_peer: HashMap<PeerId, usize>,
    arrivals: u64,
    /// Connections to close, for the swarm.
    evict: VecDeque<(PeerId, ConnectionId)>,
    waker: Option<Waker>,
}

impl Behaviour {
    /// Limits that never count `relays` (this node's configured relays) as strangers.
    pub(crate) fn new(relays: impl IntoIterator<Item = PeerId>) -> Self {
        Self {
            relays: relays.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Replaces the configured relays (a reloaded config); connections already counted
    /// stay as they were counted.
    pub(crate) fn set_relays(&mut self, relays: impl IntoIterator<Item = PeerId>) {
        self.relays = relays.into_iter().collect();
    }

    /// Replaces the members, who are always let in; strangers past the cap (a member just
    /// removed, say) are closed, oldest first.
    pub(crate) fn set_members(&mut self, members: HashSet<PeerId>) {
        self.members = members;
        while self.strangers().0 > MAX_STRANGERS {
            if !self.evict_oldest() {
                break;
            }
        }
    }

    /// A member or a configured relay.
    pub(crate) fn spared(&self, peer: &PeerId) -> bool {
        self.members.contains(peer) || self.relays.contains(peer)
    }

    /// Strangers' connections held, and of them how many are closing.
    fn strangers(&self) -> (usize, usize) {
        self.held
            .values()
            .filter(|h| !self.spared(&h.peer))
            .fold((0, 0), |(open, closing), h| {
                if h.closing {
                    (open, closing + 1)
                } else {
                    (open + 1, closing)
                }
            })
    }

    /// Whether a new connection with `peer` may be established, making room for it if
    /// needed.
    fn admit(&mut self, peer: PeerId) -> Result<(), Refused> {
        let spared = self.spared(&peer);
        let most = if spared {
            MAX_PER_MEMBER
        } else {
            MAX_PER_STRANGER
        };
        if self.per_peer.get(&peer).copied().unwrap_or(0) >= most {
            return Err(Refused::PerPeer(most));
        }
        if spared {
            return Ok(());
        }
        let (open, closing) = self.strangers();
        if open < MAX_STRANGERS {
            return Ok(());
        }
        if closing >= MAX_CLOSING || !self.evict_oldest() {
            return Err(Refused::Strangers);
        }
        Ok(())
    }

    /// Closes the oldest stranger's connection that is not closing already.
    fn evict_oldest(&mut self) -> bool {
        let oldest = self
            .held
            .iter()
            .filter(|(_, h)| !h.closing && !self.spared(&h.peer))
            .min_by_key(|(_, h)| h.order)
            .map(|(id, _)| *id);
        let Some(id) = oldest else {
            return false;
        };
        let Some(held) = self.held.get_mut(&id) else {
            return false;
        };
        held.closing = true;
        tracing::debug!(peer = %held.peer, %id, "too many strangers: closing the oldest");
        self.evict.push_back((held.peer, id));
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
        true
    }

    fn established(&mut self, peer: PeerId, id: ConnectionId) {
        self.arrivals += 1;
        let held = Held {
            peer,
            order: self.arrivals,
            closing: false,
        };
        if self.held.insert(id, held).is_none() {
            *self.per_peer.entry(peer).or_default() += 1;
        }
    }

    fn closed(&mut self, peer: PeerId, id: ConnectionId) {
        if self.held.remove(&id).is_none() {
            return;
        }
        if let Some(count) = self.per_peer.get_mut(&peer) {
            *count -= 1;
            if *count == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }

    fn pending_inbound(&mut self, id: ConnectionId) -> Result<(), Refused> {
        if self.pending_inbound.len() >= MAX_PENDING_INBOUND {
            return Err(Refused::Handshakes);
        }
        self.pending_inbound.insert(id);
        Ok(())
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.pending_inbound(id).map_err(|refused| {
            tracing::debug!(%remote, %refused, "incoming connection refused");
            ConnectionDenied::new(refused)
        })
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.pending_inbound.remove(&id);
        self.admit(peer).map_err(|refused| {
            tracing::debug!(%peer, %refused, "incoming connection refused");
            ConnectionDenied::new(refused)
        })?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(peer).map_err(|refused| {
            tracing::debug!(%peer, %refused, "outgoing connection refused");
            ConnectionDenied::new(refused)
        })?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            }) => self.established(peer_id, connection_id),
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => self.closed(peer_id, connection_id),
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.pending_inbound.remove(&connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.evict.pop_front() {
            Some((peer_id, id)) => Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(id),
            }),
            None => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connects `peer` as the swarm would: admitted, then established.
    fn connect(limits: &mut Behaviour, peer: PeerId, id: u64) -> Result<(), Refused> {
        limits.admit(peer)?;
        limits.established(peer, ConnectionId::new_unchecked(id as usize));
        Ok(())
    }

    fn evicted(limits: &mut Behaviour) -> Vec<(PeerId, ConnectionId)> {
        limits.evict.drain(..).collect()
    }

    #[test]
    fn past_the_cap_the_oldest_stranger_makes_room() {
        let mut limits = Behaviour::default();
        let strangers: Vec<PeerId> = (0..MAX_STRANGERS).map(|_| PeerId::random()).collect();
        for (i, peer) in strangers.iter().enumerate() {
            connect(&mut limits, *peer, i as u64).expect("room");
        }
        assert!(evicted(&mut limits).is_empty());
        let newcomer = PeerId::random();
        connect(&mut limits, newcomer, 1000).expect("a newcomer is let in");
        assert_eq!(
            evicted(&mut limits),
            [(strangers[0], ConnectionId::new_unchecked(0))],
            "the oldest goes"
        );
        connect(&mut limits, PeerId::random(), 1001).expect("and the next");
        assert_eq!(
            evicted(&mut limits),
            [(strangers[1], ConnectionId::new_unchecked(1))]
        );
        // Once the evicted ones are closed, the count is back at the cap.
        limits.closed(strangers[0], ConnectionId::new_unchecked(0));
        limits.closed(strangers[1], ConnectionId::new_unchecked(1));
        assert_eq!(limits.strangers(), (MAX_STRANGERS, 0));
    }

    #[test]
    fn members_get_in_whatever_the_count_and_are_never_evicted() {
        let member = PeerId::random();
        let relay = PeerId::random();
        let mut limits = Behaviour::new([relay]);
        limits.set_members([member].into());
        connect(&mut limits, member, 0).expect("member");
        connect(&mut limits, relay, 1).expect("relay");
        for i in 0..(MAX_STRANGERS + MAX_CLOSING) as u64 {
            connect(&mut limits, PeerId::random(), 10 + i).expect("a stranger");
        }
        // Every eviction so far hit a stranger; none has closed yet, so strangers are now
        // refused, and members still get in.
        let gone = evicted(&mut limits);
        assert_eq!(gone.len(), MAX_CLOSING);
        assert!(gone.iter().all(|(p, _)| *p != member && *p != relay));
        assert_eq!(
            connect(&mut limits, PeerId::random(), 5000),
            Err(Refused::Strangers)
        );
        connect(&mut limits, member, 5001).expect("a member still gets in");
        connect(&mut limits, relay, 5002).expect("so does the relay");
    }

    #[test]
    fn a_member_that_leaves_becomes_a_stranger_again() {
        let member = PeerId::random();
        let mut limits = Behaviour::default();
        limits.set_members([member].into());
        connect(&mut limits, member, 0).expect("member");
        for i in 0..MAX_STRANGERS as u64 {
            connect(&mut limits, PeerId::random(), 1 + i).expect("a stranger");
        }
        assert!(evicted(&mut limits).is_empty());
        limits.set_members(HashSet::new());
        assert_eq!(
            evicted(&mut limits),
            [(member, ConnectionId::new_unchecked(0))],
            "over the cap by one: the oldest, the former member, goes"
        );
    }

    #[test]
    fn per_peer_caps_strangers_tighter_than_members() {
        let (stranger, member) = (PeerId::random(), PeerId::random());
        let mut limits = Behaviour::default();
        limits.set_members([member].into());
        for i in 0..MAX_PER_STRANGER as u64 {
            connect(&mut limits, stranger, i).expect("room");
        }
        assert_eq!(
            connect(&mut limits, stranger, 99),
            Err(Refused::PerPeer(MAX_PER_STRANGER))
        );
        for i in 0..MAX_PER_MEMBER as u64 {
            connect(&mut limits, member, 100 + i).expect("room");
        }
        assert_eq!(
            connect(&mut limits, member, 199),
            Err(Refused::PerPeer(MAX_PER_MEMBER))
        );
        limits.closed(stranger, ConnectionId::new_unchecked(0));
        connect(&mut limits, stranger, 200).expect("room again once one closed");
    }

    #[test]
    fn handshakes_in_progress_are_capped() {
        let mut limits = Behaviour::default();
        let id = ConnectionId::new_unchecked;
        for i in 0..MAX_PENDING_INBOUND {
            limits.pending_inbound(id(i)).expect("room");
        }
        assert_eq!(limits.pending_inbound(id(999)), Err(Refused::Handshakes));
        // A handshake that ends, either way, frees its place.
        limits.pending_inbound.remove(&id(0));
        limits.pending_inbound(id(1000)).expect("room again");
    }
}
