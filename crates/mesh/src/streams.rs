//! Application streams: libp2p-stream, made to open each new stream on one of the peer's
//! best connections.
//!
//! libp2p-stream picks a connection to the peer at random. A worse one can linger for a
//! while after a better one comes (`keep` lets it go only once its streams end, and an
//! AutoNAT dial-back or the connection a pairing came over may carry one for seconds), and
//! a copy that lands on QUIC runs at half the speed it would over TCP. So libp2p-stream is
//! told only of the connections of the peer's best rank: one appears to it when it becomes
//! the best, and goes when a better one comes. Inbound streams are accepted on every
//! connection, since the handlers are libp2p-stream's own.

use std::{
    collections::HashMap,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{ConnectedPoint, Endpoint, transport::PortUse},
    swarm::{
        AddressChange, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm,
        NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
        behaviour::ConnectionEstablished,
    },
};

use crate::addr::Rank;

type Inner = libp2p_stream::Behaviour;

pub(crate) struct Behaviour {
    inner: Inner,
    connections: HashMap<PeerId, HashMap<ConnectionId, Known>>,
}

/// A connection, and whether libp2p-stream may open streams on it.
struct Known {
    rank: Rank,
    endpoint: ConnectedPoint,
    shown: bool,
}

impl Behaviour {
    pub(crate) fn new() -> Self {
        Self {
            inner: Inner::new(),
            connections: HashMap::new(),
        }
    }

    pub(crate) fn new_control(&self) -> libp2p_stream::Control {
        self.inner.new_control()
    }

    /// Shows libp2p-stream the peer's connections of the best rank, and only those.
    fn show_best(&mut self, peer_id: PeerId) {
        let Self { inner, connections } = self;
        let Some(of_peer) = connections.get_mut(&peer_id) else {
            return;
        };
        let Some(best) = of_peer.values().map(|known| known.rank).min() else {
            connections.remove(&peer_id);
            return;
        };
        for (&connection_id, known) in of_peer.iter_mut() {
            let show = known.rank == best;
            if show == known.shown {
                continue;
            }
            known.shown = show;
            let endpoint = &known.endpoint;
            inner.on_swarm_event(if show {
                FromSwarm::ConnectionEstablished(ConnectionEstablished {
                    peer_id,
                    connection_id,
                    endpoint,
                    failed_addresses: &[],
                    other_established: 0,
                })
            } else {
                FromSwarm::ConnectionClosed(ConnectionClosed {
                    peer_id,
                    connection_id,
                    endpoint,
                    cause: None,
                    remaining_established: 0,
                })
            });
        }
    }

    /// Counts a connection as gone: it closed, or is closing for carrying nothing.
    pub(crate) fn forget(&mut self, peer_id: PeerId, connection_id: ConnectionId) {
        let known = self
            .connections
            .get_mut(&peer_id)
            .and_then(|of_peer| of_peer.remove(&connection_id));
        if let Some(known) = known.filter(|known| known.shown) {
            self.inner
                .on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
                    peer_id,
                    connection_id,
                    endpoint: &known.endpoint,
                    cause: None,
                    remaining_established: 0,
                }));
        }
        self.show_best(peer_id);
    }

    /// Whether libp2p-stream may open streams on this connection.
    #[cfg(test)]
    fn shown(&self, peer: &PeerId, id: ConnectionId) -> bool {
        self.connections
            .get(peer)
            .and_then(|of_peer| of_peer.get(&id))
            .is_some_and(|known| known.shown)
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = THandler<Inner>;
    type ToSwarm = <Inner as NetworkBehaviour>::ToSwarm;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_inbound_connection(id, peer, local, remote)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_outbound_connection(id, peer, addr, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(established) => {
                let known = Known {
                    rank: Rank::of_connection(established.endpoint),
                    endpoint: established.endpoint.clone(),
                    shown: false,
                };
                self.connections
                    .entry(established.peer_id)
                    .or_default()
                    .insert(established.connection_id, known);
                self.show_best(established.peer_id);
            }
            FromSwarm::ConnectionClosed(closed) => {
                self.forget(closed.peer_id, closed.connection_id);
            }
            FromSwarm::AddressChange(AddressChange {
                peer_id,
                connection_id,
                new,
                ..
            }) => {
                if let Some(known) = self
                    .connections
                    .get_mut(&peer_id)
                    .and_then(|of_peer| of_peer.get_mut(&connection_id))
                {
                    known.rank = Rank::of_connection(new);
                    known.endpoint = new.clone();
                }
                self.inner.on_swarm_event(event);
                self.show_best(peer_id);
            }
            other => self.inner.on_swarm_event(other),
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner.on_connection_handler_event(peer, id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(addr: &str) -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: addr.parse().expect("address"),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        }
    }

    fn connect(streams: &mut Behaviour, peer: PeerId, id: ConnectionId, addr: &str) {
        streams.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: peer,
            connection_id: id,
            endpoint: &endpoint(addr),
            failed_addresses: &[],
            other_established: 0,
        }));
    }

    fn close(streams: &mut Behaviour, peer: PeerId, id: ConnectionId, addr: &str) {
        streams.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: peer,
            connection_id: id,
            endpoint: &endpoint(addr),
            cause: None,
            remaining_established: 0,
        }));
    }

    #[test]
    fn streams_open_only_on_the_best_connections() {
        let mut streams = Behaviour::new();
        let peer = PeerId::random();
        let id = ConnectionId::new_unchecked;
        let (quic, tcp, tcp_again) = (id(1), id(2), id(3));
        let (quic_addr, tcp_addr) = ("/ip4/10.0.0.2/udp/1/quic-v1", "/ip4/10.0.0.2/tcp/1");
        connect(&mut streams, peer, quic, quic_addr);
        assert!(
            streams.shown(&peer, quic),
            "the only connection carries streams"
        );
        connect(&mut streams, peer, tcp, tcp_addr);
        assert!(streams.shown(&peer, tcp));
        assert!(!streams.shown(&peer, quic), "QUIC gives way to TCP");
        connect(&mut streams, peer, tcp_again, tcp_addr);
        assert!(streams.shown(&peer, tcp) && streams.shown(&peer, tcp_again));
        close(&mut streams, peer, tcp, tcp_addr);
        close(&mut streams, peer, tcp_again, tcp_addr);
        assert!(streams.shown(&peer, quic), "QUIC again once TCP is gone");
        close(&mut streams, peer, quic, quic_addr);
        assert!(
            streams.connections.is_empty(),
            "nothing left of a gone peer"
        );
    }
}
