//! Port mapping on the home router, so that devices elsewhere dial this one directly even
//! through a NAT that gives every flow a new port (a "symmetric" NAT, which defeats hole
//! punching).
//!
//! Two clients run side by side, and whichever the router answers maps the ports:
//! - libp2p's `upnp` behaviour finds the router by SSDP, asks it (UPnP IGD) to forward
//!   the same port of its public address to each private IPv4 listen address, renews the
//!   mappings, and expires an address when a renewal fails;
//! - [`pmp`] asks the default gateway by PCP, or NAT-PMP where it speaks only that.
//!
//! Each mapped address is confirmed as an external address once (two protocols mapping
//! the same address confirm it once, and it expires when the last lets go), and offered
//! as a candidate: DCUtR sends a peer only candidates to punch to, so a peer reaches the
//! mapping from the first relayed connection on.

mod gateway;
pub mod natpmp;
pub mod pcp;
pub mod pmp;

use std::{
    collections::{HashMap, VecDeque},
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

/// A mapped port's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

/// A message from a gateway that is not what it should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("too short")]
    TooShort,
    #[error("a length of {0} bytes")]
    BadLength(usize),
    #[error("version {0}")]
    Version(u8),
    #[error("a request, not a response")]
    NotAResponse,
    #[error("opcode {0}")]
    Opcode(u8),
}

/// What the port mapping clients report.
#[derive(Debug)]
pub enum Event {
    Upnp(upnp::Event),
    Pmp(pmp::Event),
}

/// Which client mapped an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    Upnp,
    Pmp(pmp::Protocol),
}

/// Port mapping through the router, off until enabled.
#[derive(Default)]
pub(crate) struct Behaviour {
    upnp: Option<upnp::tokio::Behaviour>,
    pmp: Option<pmp::Client>,
    /// The private IPv4 listen addresses, for the PCP / NAT-PMP client.
    listen: Vec<Multiaddr>,
    /// External addresses confirmed, and which clients mapped each.
    confirmed: HashMap<Multiaddr, Vec<Source>>,
    /// What goes to the swarm next.
    pending: VecDeque<ToSwarm<Event, std::convert::Infallible>>,
}

impl Behaviour {
    /// Starts looking for a UPnP router; listen addresses are mapped as the swarm reports
    /// them, so this comes before the first poll. Needs a tokio runtime.
    pub fn enable_upnp(&mut self) {
        if self.upnp.is_none() {
            self.upnp = Some(upnp::tokio::Behaviour::default());
        }
    }

    /// Starts the PCP / NAT-PMP client. Needs a tokio runtime.
    pub fn enable_pmp(&mut self) {
        if self.pmp.is_none() {
            let client = pmp::Client::start();
            client.set_listen(self.listen.clone());
            self.pmp = Some(client);
        }
    }

    /// Deletes the PCP / NAT-PMP mappings; the returned task ends when done.
    pub fn release(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        self.pmp.as_mut().and_then(pmp::Client::release)
    }

    /// An external address `source` mapped: confirmed (and offered to DCUtR) the first time.
    fn mapped(&mut self, source: Source, addr: Multiaddr) {
        let sources = self.confirmed.entry(addr.clone()).or_default();
        if sources.contains(&source) {
            return;
        }
        sources.push(source);
        if sources.len() == 1 {
            self.pending
                .push_back(ToSwarm::ExternalAddrConfirmed(addr.clone()));
            self.pending
                .push_back(ToSwarm::NewExternalAddrCandidate(addr));
        }
    }

    /// `source` let an address go: expired once no client maps it.
    fn expired(&mut self, source: Source, addr: &Multiaddr) {
        let Some(sources) = self.confirmed.get_mut(addr) else {
            return;
        };
        sources.retain(|s| *s != source);
        if sources.is_empty() {
            self.confirmed.remove(addr);
            self.pending
                .push_back(ToSwarm::ExternalAddrExpired(addr.clone()));
        }
    }

    fn on_pmp_event(&mut self, event: &pmp::Event) {
        match event {
            pmp::Event::Mapped {
                protocol, external, ..
            } => self.mapped(Source::Pmp(*protocol), external.clone()),
            pmp::Event::Expired {
                protocol, external, ..
            } => self.expired(Source::Pmp(*protocol), external),
            pmp::Event::NoGateway | pmp::Event::Asked { .. } => {}
        }
    }
}

impl NetworkBehaviour for Behaviour {
    // Neither client has a part in connections.
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
        let listen_changed = match &event {
            FromSwarm::NewListenAddr(new) => {
                let addr = new.addr.clone();
                let is_ip4 = matches!(
                    addr.iter().next(),
                    Some(libp2p::multiaddr::Protocol::Ip4(_))
                );
                let fresh =
                    is_ip4 && !crate::addr::is_relayed(&addr) && !self.listen.contains(&addr);
                if fresh {
                    self.listen.push(addr);
                }
                fresh
            }
            FromSwarm::ExpiredListenAddr(gone) => {
                let before = self.listen.len();
                self.listen.retain(|a| a != gone.addr);
                self.listen.len() != before
            }
            _ => false,
        };
        if listen_changed && let Some(pmp) = &self.pmp {
            pmp.set_listen(self.listen.clone());
        }
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
        loop {
            if let Some(next) = self.pending.pop_front() {
                return Poll::Ready(next.map_in(|never| match never {}));
            }
            if let Some(pmp) = &mut self.pmp
                && let Poll::Ready(Some(event)) = pmp.poll_event(cx)
            {
                self.on_pmp_event(&event);
                self.pending
                    .push_back(ToSwarm::GenerateEvent(Event::Pmp(event)));
                continue;
            }
            let Some(upnp) = &mut self.upnp else {
                return Poll::Pending;
            };
            return match upnp.poll(cx) {
                Poll::Ready(ToSwarm::ExternalAddrConfirmed(addr)) => {
                    self.mapped(Source::Upnp, addr);
                    continue;
                }
                Poll::Ready(ToSwarm::ExternalAddrExpired(addr)) => {
                    self.expired(Source::Upnp, &addr);
                    continue;
                }
                Poll::Ready(other) => Poll::Ready(other.map_out(Event::Upnp)),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("address")
    }

    #[test]
    fn an_address_two_protocols_map_is_confirmed_once_and_expired_with_the_last() {
        let mut behaviour = Behaviour::default();
        let external = addr("/ip4/11.99.0.2/tcp/7717");
        let pcp = Source::Pmp(pmp::Protocol::Pcp);
        behaviour.mapped(Source::Upnp, external.clone());
        behaviour.mapped(pcp, external.clone());
        behaviour.mapped(pcp, external.clone());
        let confirmed = behaviour
            .pending
            .drain(..)
            .filter(|e| matches!(e, ToSwarm::ExternalAddrConfirmed(_)))
            .count();
        assert_eq!(confirmed, 1);
        behaviour.expired(Source::Upnp, &external);
        assert!(behaviour.pending.is_empty(), "still mapped by PCP");
        behaviour.expired(pcp, &external);
        assert!(matches!(
            behaviour.pending.pop_front(),
            Some(ToSwarm::ExternalAddrExpired(a)) if a == external
        ));
        behaviour.expired(pcp, &external);
        assert!(behaviour.pending.is_empty());
    }
}
