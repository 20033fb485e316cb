//! Which connections to a peer stay open. Two devices often end up with several: each
//! dials the other, TCP and QUIC race, a relayed connection is upgraded by a hole punch.
//! libp2p-stream opens each new stream on one of them at random, so a slow one left open
//! slows half the operations: through a relay by the relay's limits, over QUIC by its
//! small packets and ChaCha20 (a 1 GiB copy over loopback: about 340 MB/s on QUIC, 700 on
//! TCP with TLS).
//!
//! So each peer keeps one connection alive, the best: TCP before QUIC before relayed; among
//! equals the one dialled by the peer with the smaller ID (both ends agree on that even
//! when they dialled each other at once), then the oldest. (Keeping every equal one would
//! keep, for good, each connection an AutoNAT probe dials back.) The others are left to the
//! swarm's idle timeout, which closes a connection only once no stream is open on it.
//! QUIC often wins the race to connect (fewer round trips), so a peer reached over QUIC
//! alone is dialled over TCP as well where it listens at the same IP (`Peers::
//! tcp_beside_quic`), and the QUIC connection then gives way. An operation running on a worse
//! connection finishes there; nothing is cut. (Relayed connections are the exception:
//! DCUtR holds the one it punched from open for good, so the event loop closes those
//! itself once a direct connection is up.)

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse, upgrade::DeniedUpgrade},
    multiaddr::Protocol,
    swarm::{
        ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent,
        ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, SubstreamProtocol, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm, handler::ConnectionEvent,
    },
};

/// How good a connection is; lower is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rank {
    Tcp,
    Quic,
    Relayed,
}

impl Rank {
    pub(crate) fn of(addr: &Multiaddr) -> Self {
        if crate::peers::is_relayed(addr) {
            Rank::Relayed
        } else if addr.iter().any(|p| matches!(p, Protocol::QuicV1)) {
            Rank::Quic
        } else {
            Rank::Tcp
        }
    }
}

/// What makes one connection better than another; the smallest wins.
type Preference = (Rank, bool, ConnectionId);

#[derive(Debug)]
pub(crate) struct Behaviour {
    local: PeerId,
    /// Each connection's preference, and whether it is kept.
    connections: HashMap<PeerId, HashMap<ConnectionId, (Preference, bool)>>,
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

    fn connect(&mut self, peer: PeerId, id: ConnectionId, addr: &Multiaddr, dialled: bool) {
        let dialler = if dialled { self.local } else { peer };
        let by_smaller = dialler == self.local.min(peer);
        // A new handler starts kept; `settle` says otherwise if it is not.
        let preference = (Rank::of(addr), !by_smaller, id);
        let of_peer = self.connections.entry(peer).or_default();
        of_peer.insert(id, (preference, true));
        self.settle(peer);
    }

    /// Keeps the peer's best connection, and only that one.
    fn settle(&mut self, peer: PeerId) {
        let Some(of_peer) = self.connections.get_mut(&peer) else {
            return;
        };
        let Some(best) = of_peer.values().map(|(preference, _)| *preference).min() else {
            self.connections.remove(&peer);
            return;
        };
        for (id, (preference, kept)) in of_peer.iter_mut() {
            let keep = *preference == best;
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
                // An inbound circuit names only the peer; ours names the relay, and both
                // carry `/p2p-circuit`, which is all the rank looks at.
                let addr = match established.endpoint {
                    libp2p::core::ConnectedPoint::Listener { local_addr, .. }
                        if established.endpoint.is_relayed() =>
                    {
                        local_addr
                    }
                    other => other.get_remote_address(),
                };
                self.connect(
                    established.peer_id,
                    established.connection_id,
                    addr,
                    established.endpoint.is_dialer(),
                );
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                if let Some(of_peer) = self.connections.get_mut(&peer_id) {
                    of_peer.remove(&connection_id);
                }
                self.settle(peer_id);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("address")
    }

    #[test]
    fn ranks_tcp_over_quic_over_relayed() {
        assert_eq!(Rank::of(&addr("/ip4/10.0.0.2/tcp/4001")), Rank::Tcp);
        assert_eq!(
            Rank::of(&addr("/ip4/10.0.0.2/udp/4001/quic-v1")),
            Rank::Quic
        );
        assert_eq!(
            Rank::of(&addr(
                "/ip4/10.0.0.1/udp/4001/quic-v1/p2p/12D3KooWPGwyNicktAhymDYfnPBWSUiyeou7BGjHcjvWiwATU6jW/p2p-circuit"
            )),
            Rank::Relayed
        );
    }

    #[test]
    fn only_the_best_connection_is_kept() {
        let local = PeerId::random();
        let mut keep = Behaviour::new(local);
        let peer = PeerId::random();
        let id = ConnectionId::new_unchecked;
        let (quic, tcp, tcp_again) = (id(1), id(2), id(3));
        keep.connect(peer, quic, &addr("/ip4/10.0.0.2/udp/1/quic-v1"), true);
        assert!(keep.pending.is_empty(), "the only connection is kept");
        keep.connect(peer, tcp, &addr("/ip4/10.0.0.2/tcp/1"), true);
        assert_eq!(
            keep.pending.drain(..).collect::<Vec<_>>(),
            [(peer, quic, false)]
        );
        // A second TCP connection dialled the same way (an AutoNAT dial-back, say) is not
        // kept beside the first.
        keep.connect(peer, tcp_again, &addr("/ip4/10.0.0.2/tcp/2"), true);
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
    fn both_ends_keep_the_same_one_of_two_crossed_dials() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let (mut at_a, mut at_b) = (Behaviour::new(a), Behaviour::new(b));
        let id = ConnectionId::new_unchecked;
        let tcp = addr("/ip4/10.0.0.2/tcp/1");
        // Each end numbers its own connections, and sees its own dial first.
        at_a.connect(b, id(1), &tcp, true);
        at_a.connect(b, id(2), &tcp, false);
        at_b.connect(a, id(1), &tcp, true);
        at_b.connect(a, id(2), &tcp, false);
        let kept = |keep: &Behaviour, peer| {
            keep.connections[&peer]
                .iter()
                .filter(|(_, (_, kept))| *kept)
                .map(|(_, ((_, by_larger, _), _))| !*by_larger)
                .collect::<Vec<_>>()
        };
        // One kept at each end: the one the smaller ID dialled, which is the same one.
        assert_eq!(kept(&at_a, b), [true]);
        assert_eq!(kept(&at_b, a), [true]);
        let a_dialled_kept = at_a.connections[&b][&id(1)].1;
        let b_dialled_kept = at_b.connections[&a][&id(1)].1;
        assert_ne!(a_dialled_kept, b_dialled_kept);
        assert_eq!(a_dialled_kept, a < b);
    }
}
