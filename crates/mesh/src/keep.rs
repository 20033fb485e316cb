//! Which connections to a peer stay open. Two devices often end up with several: each
//! dials the other, TCP and QUIC race, a relayed connection is upgraded by a hole punch.
//! They are not equal: a relayed one is held to the relay's limits, and QUIC, with its
//! small packets and ChaCha20, copies a file over loopback at half the speed of TCP with
//! TLS. (`streams` opens new streams on the best ones only.)
//!
//! So each pair of peers keeps one connection alive, the best: TCP before QUIC before
//! relayed. What is not kept is left to the swarm's idle timeout, which closes a connection
//! only once no stream is open on it: an operation running on a worse connection finishes
//! there, and nothing is cut.
//!
//! Both ends see the same transports, but not the same order of connections (each numbers
//! its own), so the end with the smaller peer ID picks the one among equals (its oldest),
//! and the other end keeps every connection of the best rank, the pick included: one end
//! closing a connection closes it for both, so the pick survives and the others go.
//! (Keeping every equal one at both ends would keep, for good, each connection an AutoNAT
//! probe dials back.)
//!
//! QUIC often wins the race to connect (fewer round trips), so a peer reached over QUIC
//! alone is dialled over TCP as well where it listens at the same IP
//! (`Peers::tcp_beside_quic`), and the QUIC connection then gives way. The same goes for
//! a relayed connection once a punch made a direct one: a copy or an attach running on it
//! finishes there (new streams go direct), and it closes when its last stream ends. DCUtR
//! would hold the relayed connection it punched from open for good, so it runs [`Unheld`]:
//! the relayed connection stays while it is the best, `keep` holds it then.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse, upgrade::DeniedUpgrade},
    swarm::{
        ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent,
        ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, SubstreamProtocol, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm, handler::ConnectionEvent,
    },
};

use crate::addr::Rank;

#[derive(Debug)]
pub(crate) struct Behaviour {
    local: PeerId,
    /// Each connection's rank, and whether it is kept.
    connections: HashMap<PeerId, HashMap<ConnectionId, (Rank, bool)>>,
    /// Handlers to tell whether they are kept.
    pending: VecDeque<(PeerId, ConnectionId, bool)>,
}

impl Behaviour {
    pub(crate) fn new(local: PeerId) -> Self {
        Self {
            local,
            connections: HashMap::new(),
            pending: VecDeque::new(),
        }
    }

    fn connect(&mut self, peer: PeerId, id: ConnectionId, rank: Rank) {
        // A new handler starts kept; `settle` says otherwise if it is not.
        let of_peer = self.connections.entry(peer).or_default();
        of_peer.insert(id, (rank, true));
        self.settle(peer);
    }

    /// Counts a connection as gone: it closed, or is closing for carrying nothing.
    pub(crate) fn forget(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(of_peer) = self.connections.get_mut(&peer) {
            of_peer.remove(&id);
        }
        self.settle(peer);
    }

    /// Keeps the peer's best connection (or, at the end that does not pick, its best rank).
    fn settle(&mut self, peer: PeerId) {
        let picks = self.local < peer;
        let Some(of_peer) = self.connections.get_mut(&peer) else {
            return;
        };
        let Some(best) = of_peer.iter().map(|(id, (rank, _))| (*rank, *id)).min() else {
            self.connections.remove(&peer);
            return;
        };
        for (id, (rank, kept)) in of_peer.iter_mut() {
            let keep = if picks {
                (*rank, *id) == best
            } else {
                *rank == best.0
            };
            if *kept != keep {
                *kept = keep;
                self.pending.push_back((peer, *id, keep));
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler { keep: true })
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler { keep: true })
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(established) => {
                let rank = Rank::of_connection(established.endpoint);
                self.connect(established.peer_id, established.connection_id, rank);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => self.forget(peer_id, connection_id),
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

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.pending.pop_front() {
            Some((peer_id, id, keep)) => Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(id),
                event: keep,
            }),
            None => Poll::Pending,
        }
    }
}

/// Holds its connection open while it is among the peer's best; speaks no protocol.
#[derive(Debug)]
pub(crate) struct Handler {
    keep: bool,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = bool;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep
    }

    fn on_behaviour_event(&mut self, keep: bool) {
        self.keep = keep;
    }

    fn on_connection_event(
        &mut self,
        _: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        Poll::Pending
    }
}

/// A behaviour as it is, but for its hold on connections: its handlers never keep a
/// connection open by themselves (open streams still do). For DCUtR, whose handler holds
/// a relayed connection open for good once it punched, so that the connection would
/// outlive its last stream, or be cut under what runs on it.
pub(crate) struct Unheld<B>(pub B);

impl<B: NetworkBehaviour> NetworkBehaviour for Unheld<B> {
    type ConnectionHandler = UnheldHandler<THandler<B>>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.0.handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.0
            .handle_established_inbound_connection(id, peer, local, remote)
            .map(UnheldHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addrs: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.0
            .handle_pending_outbound_connection(id, peer, addrs, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.0
            .handle_established_outbound_connection(id, peer, addr, role, port_use)
            .map(UnheldHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.0.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.0.on_connection_handler_event(peer, id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.0.poll(cx)
    }
}

/// A handler as it is, but never holding its connection open.
pub(crate) struct UnheldHandler<H>(H);

impl<H: ConnectionHandler> ConnectionHandler for UnheldHandler<H> {
    type FromBehaviour = H::FromBehaviour;
    type ToBehaviour = H::ToBehaviour;
    type InboundProtocol = H::InboundProtocol;
    type OutboundProtocol = H::OutboundProtocol;
    type InboundOpenInfo = H::InboundOpenInfo;
    type OutboundOpenInfo = H::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        self.0.listen_protocol()
    }

    fn connection_keep_alive(&self) -> bool {
        false
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        self.0.poll(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        self.0.poll_close(cx)
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        self.0.on_behaviour_event(event);
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        self.0.on_connection_event(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("address")
    }

    /// Two peer IDs, the smaller first.
    fn ordered() -> (PeerId, PeerId) {
        let (a, b) = (PeerId::random(), PeerId::random());
        (a.min(b), a.max(b))
    }

    #[test]
    fn the_picking_end_keeps_only_the_best_connection() {
        let (local, peer) = ordered();
        let mut keep = Behaviour::new(local);
        let id = ConnectionId::new_unchecked;
        let (quic, tcp, tcp_again) = (id(1), id(2), id(3));
        keep.connect(peer, quic, Rank::of(&addr("/ip4/10.0.0.2/udp/1/quic-v1")));
        assert!(keep.pending.is_empty(), "the only connection is kept");
        keep.connect(peer, tcp, Rank::of(&addr("/ip4/10.0.0.2/tcp/1")));
        assert_eq!(
            keep.pending.drain(..).collect::<Vec<_>>(),
            [(peer, quic, false)]
        );
        // A second TCP connection (an AutoNAT dial-back, say) is not kept beside the first.
        keep.connect(peer, tcp_again, Rank::of(&addr("/ip4/10.0.0.2/tcp/2")));
        assert_eq!(
            keep.pending.drain(..).collect::<Vec<_>>(),
            [(peer, tcp_again, false)]
        );
        // The kept one goes: the next best is kept again.
        keep.connections.get_mut(&peer).expect("peer").remove(&tcp);
        keep.settle(peer);
        assert_eq!(
            keep.pending.drain(..).collect::<Vec<_>>(),
            [(peer, tcp_again, true)]
        );
        for gone in [tcp_again, quic] {
            keep.connections.get_mut(&peer).expect("peer").remove(&gone);
            keep.settle(peer);
        }
        assert!(keep.connections.is_empty(), "nothing left of a gone peer");
    }

    #[test]
    fn the_other_end_keeps_the_pick_whatever_it_numbered_it() {
        let (small, large) = ordered();
        let (mut at_small, mut at_large) = (Behaviour::new(small), Behaviour::new(large));
        let id = ConnectionId::new_unchecked;
        let (tcp, quic) = (
            addr("/ip4/10.0.0.2/tcp/1"),
            addr("/ip4/10.0.0.2/udp/1/quic-v1"),
        );
        // Connections X and Y over TCP, and Z over QUIC: X is 1 at the small end and 2 at
        // the large one, Y the other way round.
        at_small.connect(large, id(1), Rank::of(&tcp));
        at_small.connect(large, id(2), Rank::of(&tcp));
        at_small.connect(large, id(3), Rank::of(&quic));
        at_large.connect(small, id(2), Rank::of(&tcp));
        at_large.connect(small, id(1), Rank::of(&tcp));
        at_large.connect(small, id(3), Rank::of(&quic));
        let kept = |keep: &Behaviour, peer| {
            let mut ids: Vec<_> = keep.connections[&peer]
                .iter()
                .filter(|(_, (_, kept))| *kept)
                .map(|(id, _)| *id)
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(kept(&at_small, large), [id(1)], "X alone");
        assert_eq!(kept(&at_large, small), [id(1), id(2)], "X and Y, not Z");
    }
}
