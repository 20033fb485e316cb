//! Port mapping on the home router, so that devices elsewhere dial this one directly even
//! through a NAT that gives every flow a new port (a "symmetric" NAT, which defeats hole
//! punching).
//!
//! libp2p's `upnp` behaviour finds the router by SSDP, asks it (UPnP IGD) to forward the
//! same port of its public address to each private IPv4 listen address, renews the
//! mappings, confirms each mapped address as an external address, and expires it when a
//! renewal fails. This wrapper starts it only when asked ([`Behaviour::enable`]), and also
//! offers each mapped address as a candidate: DCUtR sends a peer only candidates to punch
//! to, so a peer reaches the mapping from the first relayed connection on.
//!
//! NAT-PMP and PCP are not spoken: see docs/networks.md.

use std::{
    collections::VecDeque,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm, dummy,
    },
    upnp,
};

pub use libp2p::upnp::Event;

/// Port mapping through the router, off until [`Behaviour::enable`].
#[derive(Default)]
pub(crate) struct Behaviour {
    upnp: Option<upnp::tokio::Behaviour>,
    /// Mapped addresses still to be offered as candidates.
    candidates: VecDeque<Multiaddr>,
}

impl Behaviour {
    /// Starts looking for the router; listen addresses are mapped as the swarm reports
    /// them, so this comes before the first poll. Needs a tokio runtime.
    pub fn enable(&mut self) {
        if self.upnp.is_none() {
            self.upnp = Some(upnp::tokio::Behaviour::default());
        }
    }
}

impl NetworkBehaviour for Behaviour {
    // libp2p's behaviour has no part in connections either.
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let Some(upnp) = &mut self.upnp {
            upnp.on_swarm_event(event);
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

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        if let Some(addr) = self.candidates.pop_front() {
            return Poll::Ready(ToSwarm::NewExternalAddrCandidate(addr));
        }
        let Some(upnp) = &mut self.upnp else {
            return Poll::Pending;
        };
        match upnp.poll(cx) {
            Poll::Ready(ToSwarm::ExternalAddrConfirmed(addr)) => {
                self.candidates.push_back(addr.clone());
                // The candidate goes out on the next poll.
                cx.waker().wake_by_ref();
                Poll::Ready(ToSwarm::ExternalAddrConfirmed(addr))
            }
            other => other,
        }
    }
}
