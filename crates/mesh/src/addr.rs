//! What an address says about a connection over it: whether it goes through a relay or
//! stays on this machine, and how good a connection it makes ([`Rank`]). Pure, so that
//! the peer table, `keep` and `streams` share one reading of addresses.

use std::net::IpAddr;

use libp2p::{Multiaddr, PeerId, core::ConnectedPoint, multiaddr::Protocol};

/// The IP an address starts with, if it starts with one.
pub(crate) fn ip(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    }
}

/// The peer an address ends by naming (`.../p2p/ID`), if it does.
pub(crate) fn peer_id(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last()? {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    }
}

/// Whether an address goes through a relay circuit.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// Whether an address is this machine's own loopback.
pub fn is_loopback(addr: &Multiaddr) -> bool {
    ip(addr).is_some_and(|ip| ip.is_loopback())
}

/// The most WebSocket addresses of a relay kept as ways for browsers to reach this node.
const MAX_RELAY_WEB_ADDRS: usize = 3;

/// The addresses among a relay's (as it announces them) that a browser can dial, secure and
/// named ones first (a page served over HTTPS may open only secure WebSockets, to a name its
/// certificate covers). Loopback ones only when `loopback` (a relay on this machine).
pub(crate) fn relay_web_addrs(announced: &[Multiaddr], loopback: bool) -> Vec<Multiaddr> {
    let mut web: Vec<Multiaddr> = announced
        .iter()
        .filter(|a| {
            a.iter()
                .any(|p| matches!(p, Protocol::Ws(_) | Protocol::Wss(_)))
        })
        .filter(|a| !is_relayed(a) && (loopback || !is_loopback(a)))
        .filter(|a| ip(a).is_none_or(|ip| !ip.is_unspecified()))
        .map(|a| match a.iter().last() {
            Some(Protocol::P2p(_)) => a.iter().take(a.iter().count() - 1).collect(),
            _ => a.clone(),
        })
        .collect();
    web.sort_by_key(|a| {
        let tls = a
            .iter()
            .any(|p| matches!(p, Protocol::Tls | Protocol::Wss(_)));
        (!tls, ip(a).is_some(), a.to_string())
    });
    web.dedup();
    web.truncate(MAX_RELAY_WEB_ADDRS);
    web
}

/// The address that says how a connection goes: its remote address, but for an inbound
/// circuit, which names only the peer, this node's own circuit address, which names the
/// relay it came through.
pub(crate) fn of_connection(endpoint: &ConnectedPoint) -> &Multiaddr {
    match endpoint {
        ConnectedPoint::Listener { local_addr, .. } if endpoint.is_relayed() => local_addr,
        other => other.get_remote_address(),
    }
}

/// How good a connection is; lower is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rank {
    Tcp,
    Quic,
    Relayed,
}

impl Rank {
    pub(crate) fn of(addr: &Multiaddr) -> Self {
        let tcp = addr.iter().any(|p| matches!(p, Protocol::Tcp(_)));
        let websocket = addr
            .iter()
            .any(|p| matches!(p, Protocol::Ws(_) | Protocol::Wss(_)));
        if is_relayed(addr) {
            Rank::Relayed
        } else if tcp && !websocket {
            Rank::Tcp
        } else {
            // QUIC, and any other transport a peer may announce: not preferred.
            Rank::Quic
        }
    }

    pub(crate) fn of_connection(endpoint: &ConnectedPoint) -> Self {
        Self::of(of_connection(endpoint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relays_browser_addresses_are_its_websocket_ones_secure_and_named_first() {
        let announced = [
            addr("/ip4/203.0.113.5/tcp/4001"),
            addr("/ip4/203.0.113.5/tcp/80/ws"),
            addr("/ip4/127.0.0.1/tcp/443/tls/ws"),
            addr("/ip4/203.0.113.5/tcp/443/tls/ws"),
            addr("/ip4/0.0.0.0/tcp/443/tls/ws"),
            addr("/dns4/relay.example.net/tcp/443/tls/ws"),
            addr("/ip4/203.0.113.5/udp/4001/quic-v1"),
        ];
        assert_eq!(
            relay_web_addrs(&announced, false),
            [
                addr("/dns4/relay.example.net/tcp/443/tls/ws"),
                addr("/ip4/203.0.113.5/tcp/443/tls/ws"),
                addr("/ip4/203.0.113.5/tcp/80/ws"),
            ]
        );
        assert_eq!(
            relay_web_addrs(&announced[..3], true),
            [
                addr("/ip4/127.0.0.1/tcp/443/tls/ws"),
                addr("/ip4/203.0.113.5/tcp/80/ws")
            ]
        );
    }

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
    fn only_real_tcp_ranks_as_tcp() {
        assert_eq!(Rank::of(&addr("/ip4/10.0.0.2/tcp/1/ws")), Rank::Quic);
        assert_eq!(Rank::of(&addr("/dns4/example.com/tcp/1")), Rank::Tcp);
    }

    #[test]
    fn relayed_and_loopback_addresses_are_told_apart() {
        let circuit = addr(
            "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
        );
        assert!(is_relayed(&circuit) && !is_loopback(&circuit));
        assert!(is_loopback(&addr("/ip6/::1/udp/1/quic-v1")));
        assert!(!is_relayed(&addr("/ip4/127.0.0.1/tcp/1")));
        assert_eq!(ip(&addr("/dns4/example.com/tcp/1")), None);
        let relay: PeerId = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
            .parse()
            .expect("peer ID");
        assert_eq!(peer_id(&circuit), None, "a circuit ends with /p2p-circuit");
        assert_eq!(
            peer_id(&addr(&format!("/dns4/relay.example.net/tcp/1/p2p/{relay}"))),
            Some(relay)
        );
    }
}
