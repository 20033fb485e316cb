//! Checks, on demand, that a connection still carries anything. libp2p's ping notices a
//! dead path only after two failed rounds (its first failure is silent), which with our
//! timings is up to half a minute. When there is reason to doubt a path now (this device
//! lost an address, or a peer connected anew beside an older connection, as a device that
//! moved to another network does), the event loop asks for a check, and a connection that
//! fails it is closed, so that traffic moves to the new path at once. A connection that
//! has shown no sign of life (a ping answered, a check passed) for [`SILENT`] is checked
//! too, without waiting for ping's second failure.
//!
//! A connection bound to an address this device no longer has is dead without a check
//! (its packets cannot leave, and nothing answers them): [`Behaviour::address_gone`]
//! reports it at once. Each connection's local IP is known from the transport where it
//! says (inbound TCP), else from the route the kernel picks toward the remote address.
//!
//! A check opens one stream of `/loopsy/alive/1`, writes a byte and waits for it to come
//! back; the other end echoes it. A connection that does not answer within [`TIMEOUT`]
//! fails. A peer that does not speak the protocol still refuses it, and that answer is as
//! good a proof of life.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, future::BoxFuture};
use libp2p::{
    Multiaddr, PeerId, Stream, StreamProtocol,
    core::{ConnectedPoint, Endpoint, transport::PortUse, upgrade::ReadyUpgrade},
    swarm::{
        ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent,
        ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, StreamUpgradeError,
        SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
        handler::{
            ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
        },
    },
};

const PROTOCOL: StreamProtocol = StreamProtocol::new(loopsy_wire::protocol::ALIVE);
/// How long a connection has to answer a check: many round trips of any real path, and
/// room for a busy peer (a live connection that fails is cut, and has to be made again).
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection may go without a sign of life before it is checked: a ping
/// round and room for a slow answer. With [`SILENT_TICK`] and [`TIMEOUT`], a link that
/// died silently is found in at most 20 s.
pub(crate) const SILENT: Duration = Duration::from_secs(13);
/// How often the connections are looked over for one that went [`SILENT`].
pub(crate) const SILENT_TICK: Duration = Duration::from_secs(2);

/// A connection that failed its check, or lost its local address.
#[derive(Debug)]
pub(crate) struct Dead {
    pub peer: PeerId,
    pub connection: ConnectionId,
    pub why: Why,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    FailedCheck,
    AddressGone,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Why::FailedCheck => "it failed its check",
            Why::AddressGone => "this device no longer has its address",
        })
    }
}

/// The IP this device's end of a connection is bound to, where it can tell: the local
/// address an inbound TCP connection was accepted on, else the source the kernel routes
/// toward the remote IP now (which is the one a connection made now gets). None for a
/// relayed connection, which lives on the connection to its relay.
fn local_ip(endpoint: &ConnectedPoint) -> Option<IpAddr> {
    if endpoint.is_relayed() {
        return None;
    }
    if let ConnectedPoint::Listener { local_addr, .. } = endpoint
        && let Some(ip) = crate::addr::ip(local_addr).filter(|ip| !ip.is_unspecified())
    {
        return Some(ip);
    }
    let remote = crate::addr::ip(endpoint.get_remote_address())?;
    let any: IpAddr = match remote {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    // Connecting a UDP socket sends nothing: it only looks up the route.
    let socket = UdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
    socket.connect(SocketAddr::new(remote, 9)).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

#[derive(Debug, Default)]
pub(crate) struct Behaviour {
    /// Each connection, and when it last showed a sign of life.
    connections: HashMap<PeerId, HashMap<ConnectionId, Instant>>,
    /// Checks to hand to their connections' handlers.
    asked: VecDeque<(PeerId, ConnectionId)>,
    /// Connections being checked.
    checking: HashSet<ConnectionId>,
    /// The IP each connection is bound to at this end, where known.
    local: HashMap<ConnectionId, IpAddr>,
    dead: VecDeque<Dead>,
}

impl Behaviour {
    fn connect(&mut self, peer: PeerId, id: ConnectionId, local: Option<IpAddr>) {
        self.connections
            .entry(peer)
            .or_default()
            .insert(id, Instant::now());
        if let Some(ip) = local {
            self.local.insert(id, ip);
        }
    }

    /// This device no longer has `ip`: the connections bound to it are reported dead at
    /// once, and the others checked (a route may have gone with it).
    pub(crate) fn address_gone(&mut self, ip: IpAddr) {
        for (peer, ids) in &self.connections {
            for id in ids.keys() {
                if self.local.get(id) == Some(&ip) && !self.dead.iter().any(|d| d.connection == *id)
                {
                    self.dead.push_back(Dead {
                        peer: *peer,
                        connection: *id,
                        why: Why::AddressGone,
                    });
                }
            }
        }
        let gone: HashSet<ConnectionId> = self.dead.iter().map(|d| d.connection).collect();
        self.check_where(|_, id, _| !gone.contains(&id));
    }

    /// Notes a sign of life on a connection (a ping answered).
    pub(crate) fn lives(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(last) = self
            .connections
            .get_mut(&peer)
            .and_then(|ids| ids.get_mut(&id))
        {
            *last = Instant::now();
        }
    }

    /// Checks the connections that showed no sign of life since `now - SILENT`.
    pub(crate) fn check_silent(&mut self, now: Instant) {
        self.check_where(|_, _, last| now.saturating_duration_since(last) >= SILENT);
    }

    /// Checks every connection.
    pub(crate) fn check_all(&mut self) {
        self.check_where(|_, _, _| true);
    }

    /// Checks the peer's connections other than `new`.
    pub(crate) fn check_others(&mut self, peer: PeerId, new: ConnectionId) {
        self.check_where(|p, id, _| *p == peer && id != new);
    }

    /// Asks for a check of each connection `doubt` picks, unless one is under way.
    fn check_where(&mut self, doubt: impl Fn(&PeerId, ConnectionId, Instant) -> bool) {
        let Self {
            connections,
            asked,
            checking,
            ..
        } = self;
        for (peer, ids) in connections.iter() {
            for (&id, &last) in ids {
                if doubt(peer, id, last) && checking.insert(id) {
                    asked.push_back((*peer, id));
                }
            }
        }
    }

    /// Counts a connection as gone: it closed, or is closing for carrying nothing.
    pub(crate) fn forget(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(ids) = self.connections.get_mut(&peer) {
            ids.remove(&id);
            if ids.is_empty() {
                self.connections.remove(&peer);
            }
        }
        self.checking.remove(&id);
        self.local.remove(&id);
        self.asked.retain(|(_, asked)| *asked != id);
    }

    /// Whether one of the peer's connections is being checked.
    pub(crate) fn checking(&self, peer: &PeerId) -> bool {
        self.connections
            .get(peer)
            .is_some_and(|ids| ids.keys().any(|id| self.checking.contains(id)))
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Dead;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::default())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::default())
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(established) => {
                let local = local_ip(established.endpoint);
                self.connect(established.peer_id, established.connection_id, local);
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
        peer: PeerId,
        connection: ConnectionId,
        alive: THandlerOutEvent<Self>,
    ) {
        self.checking.remove(&connection);
        // A connection already counted as gone is not reported again.
        let Some(last) = self
            .connections
            .get_mut(&peer)
            .and_then(|ids| ids.get_mut(&connection))
        else {
            return;
        };
        if alive {
            *last = Instant::now();
        } else {
            self.dead.push_back(Dead {
                peer,
                connection,
                why: Why::FailedCheck,
            });
        }
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some(dead) = self.dead.pop_front() {
            return Poll::Ready(ToSwarm::GenerateEvent(dead));
        }
        match self.asked.pop_front() {
            Some((peer_id, id)) => Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(id),
                event: (),
            }),
            None => Poll::Pending,
        }
    }
}

/// Runs one connection's checks, and answers the other end's.
#[derive(Default)]
pub(crate) struct Handler {
    /// A check was asked for and its stream is still to be opened.
    open: bool,
    /// This end's check: its echo, once the stream is open.
    check: Option<BoxFuture<'static, io::Result<()>>>,
    /// The other end's latest check (a newer one replaces it: a peer gets no more).
    answer: Option<BoxFuture<'static, io::Result<()>>>,
    /// How the check came out, for the behaviour.
    done: Option<bool>,
}

async fn echo(mut stream: Stream) -> io::Result<()> {
    let mut byte = [0];
    stream.read_exact(&mut byte).await?;
    stream.write_all(&byte).await?;
    stream.close().await
}

async fn check(mut stream: Stream) -> io::Result<()> {
    let sent = [1];
    stream.write_all(&sent).await?;
    stream.flush().await?;
    let mut back = [0];
    stream.read_exact(&mut back).await?;
    if back != sent {
        return Err(io::Error::other("a wrong echo"));
    }
    Ok(())
}

impl ConnectionHandler for Handler {
    type FromBehaviour = ();
    /// Whether the connection passed its check.
    type ToBehaviour = bool;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ())
    }

    fn connection_keep_alive(&self) -> bool {
        false
    }

    fn on_behaviour_event(&mut self, (): ()) {
        self.open = true;
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: mut stream,
                ..
            }) => {
                stream.ignore_for_keep_alive();
                let answer = tokio::time::timeout(TIMEOUT, echo(stream));
                self.answer = Some(answer.map(|r| r.unwrap_or(Ok(()))).boxed());
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: mut stream,
                ..
            }) => {
                stream.ignore_for_keep_alive();
                let check = tokio::time::timeout(TIMEOUT, check(stream));
                self.check = Some(
                    check
                        .map(|r| r.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())))
                        .boxed(),
                );
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                // A refusal is an answer; silence, or a connection that broke, is not.
                self.done = Some(matches!(error, StreamUpgradeError::NegotiationFailed));
            }
            _ => {}
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        if let Some(answer) = self.answer.as_mut()
            && answer.poll_unpin(cx).is_ready()
        {
            self.answer = None;
        }
        if let Some(check) = self.check.as_mut()
            && let Poll::Ready(result) = check.poll_unpin(cx)
        {
            self.check = None;
            self.done = Some(result.is_ok());
        }
        if let Some(alive) = self.done.take() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(alive));
        }
        if std::mem::take(&mut self.open) {
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ())
                    .with_timeout(TIMEOUT),
            });
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A behaviour that knows these connections of `peer`, numbered as given.
    fn knowing(peer: PeerId, ids: &[usize]) -> Behaviour {
        let mut alive = Behaviour::default();
        for &n in ids {
            alive.connect(peer, ConnectionId::new_unchecked(n), None);
        }
        alive
    }

    fn asked(alive: &mut Behaviour) -> Vec<ConnectionId> {
        let mut ids: Vec<_> = alive.asked.drain(..).map(|(_, id)| id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_new_connection_has_the_others_checked_once() {
        let (peer, other) = (PeerId::random(), PeerId::random());
        let id = ConnectionId::new_unchecked;
        let mut alive = knowing(peer, &[1, 2]);
        alive.connect(other, id(3), None);
        alive.connect(peer, id(4), None);
        alive.check_others(peer, id(4));
        assert_eq!(asked(&mut alive), [id(1), id(2)]);
        assert!(alive.checking(&peer) && !alive.checking(&other));
        // Asked again while the checks run: nothing more is sent.
        alive.check_all();
        assert_eq!(asked(&mut alive), [id(3), id(4)]);
        alive.check_others(peer, id(4));
        assert!(asked(&mut alive).is_empty());
    }

    #[test]
    fn only_a_failed_check_reports_the_connection_dead() {
        let peer = PeerId::random();
        let id = ConnectionId::new_unchecked;
        let mut alive = knowing(peer, &[1, 2]);
        alive.check_all();
        alive.on_connection_handler_event(peer, id(1), true);
        assert!(alive.checking(&peer), "the other is still being checked");
        alive.on_connection_handler_event(peer, id(2), false);
        assert!(!alive.checking(&peer));
        let dead: Vec<_> = alive.dead.drain(..).map(|d| d.connection).collect();
        assert_eq!(dead, [id(2)]);
    }

    #[test]
    fn a_connection_silent_for_too_long_is_checked() {
        let peer = PeerId::random();
        let id = ConnectionId::new_unchecked;
        let pause = || std::thread::sleep(Duration::from_millis(2));
        let mut alive = knowing(peer, &[1, 2]);
        let first = alive.connections[&peer][&id(1)];
        pause();
        alive.lives(peer, id(2));
        alive.check_silent(first + SILENT - Duration::from_millis(1));
        assert!(
            asked(&mut alive).is_empty(),
            "neither has been silent that long"
        );
        alive.check_silent(first + SILENT);
        assert_eq!(
            asked(&mut alive),
            [id(1)],
            "only the one without a ping since"
        );
        // Passing the check is a sign of life.
        pause();
        alive.on_connection_handler_event(peer, id(1), true);
        alive.check_silent(first + SILENT);
        assert!(asked(&mut alive).is_empty());
    }

    #[test]
    fn a_gone_address_kills_its_connections_and_checks_the_others() {
        let (peer, other) = (PeerId::random(), PeerId::random());
        let id = ConnectionId::new_unchecked;
        let (wifi, cable): (IpAddr, IpAddr) =
            ("192.168.1.2".parse().unwrap(), "10.0.0.5".parse().unwrap());
        let mut alive = Behaviour::default();
        alive.connect(peer, id(1), Some(wifi));
        alive.connect(peer, id(2), Some(cable));
        alive.connect(other, id(3), Some(wifi));
        alive.connect(other, id(4), None);
        alive.address_gone(wifi);
        let mut dead: Vec<_> = alive.dead.iter().map(|d| (d.connection, d.why)).collect();
        dead.sort_by_key(|(id, _)| *id);
        assert_eq!(dead, [(id(1), Why::AddressGone), (id(3), Why::AddressGone)]);
        assert_eq!(asked(&mut alive), [id(2), id(4)], "the others are checked");
        // Told again (its QUIC listener goes too): nothing twice.
        alive.address_gone(wifi);
        assert_eq!(alive.dead.len(), 2);
    }

    #[test]
    fn a_connection_knows_its_local_ip() {
        let inbound = ConnectedPoint::Listener {
            local_addr: "/ip4/192.168.1.2/tcp/4001".parse().unwrap(),
            send_back_addr: "/ip4/192.168.1.9/tcp/5555".parse().unwrap(),
        };
        assert_eq!(local_ip(&inbound), Some("192.168.1.2".parse().unwrap()));
        let to_loopback = ConnectedPoint::Dialer {
            address: "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        };
        assert_eq!(local_ip(&to_loopback), Some("127.0.0.1".parse().unwrap()));
        let relayed = ConnectedPoint::Dialer {
            address: "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit".parse().unwrap(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        };
        assert_eq!(local_ip(&relayed), None);
    }

    #[test]
    fn a_forgotten_connection_is_neither_checked_nor_waited_for() {
        let peer = PeerId::random();
        let id = ConnectionId::new_unchecked;
        let mut alive = knowing(peer, &[1]);
        alive.check_all();
        alive.forget(peer, id(1));
        assert!(alive.asked.is_empty() && !alive.checking(&peer));
        alive.check_all();
        assert!(alive.asked.is_empty());
        // Its check, failed after all, is not news.
        alive.on_connection_handler_event(peer, id(1), false);
        assert!(alive.dead.is_empty());
        assert!(alive.connections.is_empty(), "nothing left of a gone peer");
    }
}
