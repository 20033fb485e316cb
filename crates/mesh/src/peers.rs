//! What this node knows of other peers: names, addresses, live connections and round trips.
//! Owned by the event loop; bounded, since any device on the LAN can make itself known.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol, swarm::ConnectionId};

use crate::addr::{Rank, ip, is_relayed, peer_id};

/// Most peers remembered; past it, the longest-unseen unconnected peer is forgotten.
pub const MAX_PEERS: usize = 512;
/// Most addresses remembered per peer.
pub const MAX_ADDRS: usize = 16;
/// How long a device that is not a member stays listed once nothing is heard of it: no
/// connection, no mDNS announcement (which lapses a minute after the device stops).
pub const FORGET_AFTER: Duration = Duration::from_secs(10 * 60);

/// How a peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Direct,
    Relayed,
    None,
}

/// A snapshot of one peer, as the event loop hands it out.
#[derive(Debug, Clone)]
pub struct PeerState {
    pub peer_id: PeerId,
    /// The name the peer announces through identify.
    pub name: Option<String>,
    /// Known addresses; the one of the connection in use first.
    pub addrs: Vec<Multiaddr>,
    /// How it is reached now; `Link::None` when it is not: online means connected.
    pub link: Link,
    /// Open connections, and how many of them go through a relay.
    pub connections: usize,
    pub relayed_connections: usize,
    pub rtt: Option<Duration>,
    /// Currently announced by mDNS (which goes on for a minute after a device stops).
    pub on_lan: bool,
    /// How long ago this node last had news of it (a connection, a disconnection, an
    /// mDNS announcement); zero while connected.
    pub seen_ago: Duration,
}

impl PeerState {
    /// Connected now: online, as `loopsy peers` says it.
    pub fn is_connected(&self) -> bool {
        self.link != Link::None
    }
}

/// The peers a person means by `query`: the one with that exact peer ID or name, else
/// every one whose peer ID or name starts with it.
pub fn matching<'a>(query: &str, peers: &'a [PeerState]) -> Vec<&'a PeerState> {
    let named = |p: &PeerState, test: &dyn Fn(&str) -> bool| {
        test(&p.peer_id.to_base58()) || p.name.as_deref().is_some_and(test)
    };
    let exact: Vec<_> = peers
        .iter()
        .filter(|p| named(p, &|text| text == query))
        .collect();
    if !exact.is_empty() || query.is_empty() {
        return exact;
    }
    peers
        .iter()
        .filter(|p| named(p, &|text| text.starts_with(query)))
        .collect()
}

#[derive(Debug)]
struct Entry {
    name: Option<String>,
    addrs: Vec<Multiaddr>,
    mdns_addrs: HashSet<Multiaddr>,
    connections: HashMap<ConnectionId, Multiaddr>,
    rtt: Option<Duration>,
    last_seen: Instant,
}

impl Entry {
    fn new() -> Self {
        Self {
            name: None,
            addrs: Vec::new(),
            mdns_addrs: HashSet::new(),
            connections: HashMap::new(),
            rtt: None,
            last_seen: Instant::now(),
        }
    }

    fn add_addr(&mut self, mut addr: Multiaddr) {
        // The same address arrives with and without the peer's ID on the end.
        if peer_id(&addr).is_some() {
            addr.pop();
        }
        if !self.addrs.contains(&addr) {
            if self.addrs.len() == MAX_ADDRS {
                self.addrs.remove(0);
            }
            self.addrs.push(addr);
        }
    }

    fn snapshot(&self, peer_id: PeerId) -> PeerState {
        // Prefer a direct connection's address over a relayed one.
        let mut in_use: Vec<&Multiaddr> = self.connections.values().collect();
        in_use.sort_by_key(|a| is_relayed(a));
        let link = match in_use.first() {
            None => Link::None,
            Some(a) if is_relayed(a) => Link::Relayed,
            Some(_) => Link::Direct,
        };
        let current = in_use.first().map(|a| (*a).clone());
        let addrs = current
            .iter()
            .chain(self.addrs.iter().filter(|a| Some(*a) != current.as_ref()))
            .cloned()
            .collect();
        PeerState {
            peer_id,
            name: self.name.clone(),
            addrs,
            link,
            connections: self.connections.len(),
            relayed_connections: self.connections.values().filter(|a| is_relayed(a)).count(),
            rtt: self.rtt.filter(|_| link != Link::None),
            on_lan: !self.mdns_addrs.is_empty(),
            seen_ago: if link == Link::None {
                self.last_seen.elapsed()
            } else {
                Duration::ZERO
            },
        }
    }
}

/// The peer table.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    entries: HashMap<PeerId, Entry>,
}

impl Peers {
    fn entry(&mut self, peer: PeerId) -> &mut Entry {
        if !self.entries.contains_key(&peer) && self.entries.len() >= MAX_PEERS {
            self.evict_one();
        }
        let entry = self.entries.entry(peer).or_insert_with(Entry::new);
        entry.last_seen = Instant::now();
        entry
    }

    fn evict_one(&mut self) {
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| e.connections.is_empty())
            .min_by_key(|(_, e)| e.last_seen)
            .map(|(p, _)| *p);
        if let Some(peer) = victim {
            self.entries.remove(&peer);
        }
    }

    pub fn discovered(&mut self, peer: PeerId, addr: Multiaddr) {
        let entry = self.entry(peer);
        entry.mdns_addrs.insert(addr.clone());
        entry.add_addr(addr);
    }

    pub fn expired(&mut self, peer: PeerId, addr: &Multiaddr) {
        if let Some(entry) = self.entries.get_mut(&peer) {
            entry.mdns_addrs.remove(addr);
            entry.last_seen = Instant::now();
        }
    }

    /// Drops a peer; whether it was known. Its connections are the caller's to close.
    pub fn forget(&mut self, peer: &PeerId) -> bool {
        self.entries.remove(peer).is_some()
    }

    /// Drops the peers not heard of for [`FORGET_AFTER`] (unconnected, not announced on
    /// the LAN) but those `spared` (members, whom the daemon lists whatever this says).
    pub fn forget_stale(&mut self, now: Instant, spared: impl Fn(&PeerId) -> bool) -> Vec<PeerId> {
        let stale: Vec<PeerId> = self
            .entries
            .iter()
            .filter(|(peer, e)| {
                e.connections.is_empty()
                    && e.mdns_addrs.is_empty()
                    && now.saturating_duration_since(e.last_seen) >= FORGET_AFTER
                    && !spared(peer)
            })
            .map(|(peer, _)| *peer)
            .collect();
        for peer in &stale {
            self.entries.remove(peer);
        }
        stale
    }

    pub fn connected(&mut self, peer: PeerId, id: ConnectionId, addr: Multiaddr) {
        let entry = self.entry(peer);
        entry.connections.insert(id, addr);
    }

    pub fn disconnected(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(entry) = self.entries.get_mut(&peer) {
            entry.connections.remove(&id);
            entry.last_seen = Instant::now();
        }
    }

    /// Devices announced on the LAN with no connection, and their announced addresses.
    pub fn on_lan_unconnected(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.connections.is_empty() && !e.mdns_addrs.is_empty())
            .map(|(p, e)| (*p, e.mdns_addrs.iter().cloned().collect()))
            .collect()
    }

    /// The peer's relayed connections and whether it also has a direct one; relayed ones
    /// oldest first.
    pub fn relayed_connections(&self, peer: &PeerId) -> (Vec<ConnectionId>, bool) {
        let Some(entry) = self.entries.get(peer) else {
            return (Vec::new(), false);
        };
        let mut relayed: Vec<ConnectionId> = entry
            .connections
            .iter()
            .filter(|(_, addr)| is_relayed(addr))
            .map(|(id, _)| *id)
            .collect();
        relayed.sort();
        let direct = relayed.len() < entry.connections.len();
        (relayed, direct)
    }

    /// The TCP addresses a peer announced at the IP it is reached at over QUIC, if QUIC is
    /// all it is reached by: a faster connection to make beside it (see `keep`). Nothing
    /// for a peer behind a NAT, whose announced addresses are not the one it is reached at.
    pub fn tcp_beside_quic(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let Some(entry) = self.entries.get(peer) else {
            return Vec::new();
        };
        let ranks = || entry.connections.values().map(|a| (Rank::of(a), a));
        if ranks().any(|(rank, _)| rank == Rank::Tcp) {
            return Vec::new();
        }
        let quic_ips: Vec<IpAddr> = ranks()
            .filter(|(rank, _)| *rank == Rank::Quic)
            .filter_map(|(_, a)| ip(a))
            .collect();
        entry
            .addrs
            .iter()
            .filter(|a| Rank::of(a) == Rank::Tcp && ip(a).is_some_and(|i| quic_ips.contains(&i)))
            .cloned()
            .collect()
    }

    pub fn connection_count(&self, peer: &PeerId) -> usize {
        self.entries.get(peer).map_or(0, |e| e.connections.len())
    }

    pub fn identified(&mut self, peer: PeerId, name: Option<String>, addrs: Vec<Multiaddr>) {
        let entry = self.entry(peer);
        entry.name = name;
        for addr in addrs.into_iter().filter(is_dialable).take(MAX_ADDRS) {
            entry.add_addr(addr);
        }
    }

    pub fn pinged(&mut self, peer: PeerId, rtt: Duration) {
        if let Some(entry) = self.entries.get_mut(&peer) {
            entry.rtt = Some(rtt);
        }
    }

    pub fn snapshot(&self) -> Vec<PeerState> {
        let mut all: Vec<_> = self.entries.iter().map(|(p, e)| e.snapshot(*p)).collect();
        all.sort_by_key(|p| p.peer_id.to_base58());
        all
    }
}

/// Addresses worth remembering from what a peer tells us about itself: not loopback or
/// unspecified ones, which would only point back at us.
fn is_dialable(addr: &Multiaddr) -> bool {
    addr.iter().all(|p| match p {
        Protocol::Ip4(ip) => !ip.is_unspecified(),
        Protocol::Ip6(ip) => !ip.is_unspecified(),
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    #[test]
    fn direct_connection_wins_over_relayed() {
        let mut peers = Peers::default();
        let peer = PeerId::random();
        let relayed = addr(
            "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
        );
        peers.connected(peer, ConnectionId::new_unchecked(1), relayed);
        assert_eq!(peers.snapshot()[0].link, Link::Relayed);
        peers.connected(
            peer,
            ConnectionId::new_unchecked(2),
            addr("/ip4/10.0.0.2/tcp/7"),
        );
        let state = &peers.snapshot()[0];
        assert_eq!(state.link, Link::Direct);
        assert_eq!(state.addrs[0], addr("/ip4/10.0.0.2/tcp/7"));
        assert_eq!(
            peers.relayed_connections(&peer),
            (vec![ConnectionId::new_unchecked(1)], true)
        );
        peers.disconnected(peer, ConnectionId::new_unchecked(2));
        assert_eq!(
            peers.relayed_connections(&peer),
            (vec![ConnectionId::new_unchecked(1)], false)
        );
        peers.disconnected(peer, ConnectionId::new_unchecked(1));
        assert_eq!(peers.snapshot()[0].link, Link::None);
    }

    #[test]
    fn a_peer_on_quic_alone_gets_a_tcp_dial_at_the_same_ip() {
        let mut peers = Peers::default();
        let peer = PeerId::random();
        let announced = [
            addr("/ip4/10.0.0.2/tcp/7"),
            addr("/ip4/192.168.9.9/tcp/7"),
            addr("/ip4/10.0.0.2/udp/7/quic-v1"),
        ];
        peers.identified(peer, None, announced.to_vec());
        assert!(peers.tcp_beside_quic(&peer).is_empty(), "not connected");
        let quic = ConnectionId::new_unchecked(1);
        peers.connected(peer, quic, addr("/ip4/10.0.0.2/udp/5555/quic-v1"));
        assert_eq!(peers.tcp_beside_quic(&peer), [announced[0].clone()]);
        peers.connected(peer, ConnectionId::new_unchecked(2), announced[0].clone());
        assert!(peers.tcp_beside_quic(&peer).is_empty(), "TCP is up");

        // Behind a NAT: reached at the router's address, which it never announced.
        let natted = PeerId::random();
        peers.identified(natted, None, announced.to_vec());
        peers.connected(natted, quic, addr("/ip4/203.0.113.5/udp/4444/quic-v1"));
        assert!(peers.tcp_beside_quic(&natted).is_empty());
    }

    #[test]
    fn table_is_bounded_and_keeps_connected_peers() {
        let mut peers = Peers::default();
        let kept = PeerId::random();
        peers.connected(
            kept,
            ConnectionId::new_unchecked(1),
            addr("/ip4/10.0.0.1/tcp/1"),
        );
        for _ in 0..MAX_PEERS * 2 {
            peers.discovered(PeerId::random(), addr("/ip4/10.0.0.3/tcp/1"));
        }
        let all = peers.snapshot();
        assert_eq!(all.len(), MAX_PEERS);
        assert!(all.iter().any(|p| p.peer_id == kept));
    }

    #[test]
    fn peer_id_suffix_does_not_duplicate_an_address() {
        let mut peers = Peers::default();
        let peer = PeerId::random();
        peers.discovered(peer, addr(&format!("/ip4/10.0.0.1/tcp/7/p2p/{peer}")));
        peers.identified(peer, None, vec![addr("/ip4/10.0.0.1/tcp/7")]);
        assert_eq!(peers.snapshot()[0].addrs, [addr("/ip4/10.0.0.1/tcp/7")]);
    }

    #[test]
    fn unheard_of_strangers_are_forgotten_but_members_and_the_present_stay() {
        let mut peers = Peers::default();
        let (stranger, member, on_lan, connected) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let lan = addr("/ip4/10.0.0.3/tcp/1");
        for peer in [stranger, member, on_lan] {
            peers.discovered(peer, lan.clone());
        }
        peers.connected(connected, ConnectionId::new_unchecked(1), lan.clone());
        // The stranger and the member stopped: their announcements lapsed.
        peers.expired(stranger, &lan);
        peers.expired(member, &lan);
        let spared = |p: &PeerId| *p == member;
        let soon = Instant::now() + FORGET_AFTER / 2;
        assert!(peers.forget_stale(soon, spared).is_empty(), "not yet");
        let later = Instant::now() + FORGET_AFTER;
        assert_eq!(peers.forget_stale(later, spared), [stranger]);
        let mut left: Vec<PeerId> = peers.snapshot().iter().map(|p| p.peer_id).collect();
        let mut kept = vec![member, on_lan, connected];
        left.sort();
        kept.sort();
        assert_eq!(left, kept);
        assert!(peers.forget(&on_lan) && !peers.forget(&on_lan));
    }

    #[test]
    fn a_peer_is_found_by_exact_id_or_name_then_by_prefix() {
        let mut peers = Peers::default();
        let (alpha, alps) = (PeerId::random(), PeerId::random());
        peers.identified(alpha, Some("alpha".into()), Vec::new());
        peers.identified(alps, Some("alps".into()), Vec::new());
        let all = peers.snapshot();
        let found =
            |q: &str| -> Vec<PeerId> { matching(q, &all).iter().map(|p| p.peer_id).collect() };
        assert_eq!(found("alpha"), [alpha]);
        assert_eq!(found(&alps.to_base58()), [alps]);
        assert_eq!(found("alp").len(), 2, "ambiguous");
        assert_eq!(found("alph"), [alpha]);
        assert!(found("bravo").is_empty() && found("").is_empty());
    }

    #[test]
    fn addresses_per_peer_are_bounded() {
        let mut peers = Peers::default();
        let peer = PeerId::random();
        let many = (0..100)
            .map(|i| addr(&format!("/ip4/10.0.0.1/tcp/{i}")))
            .collect();
        peers.identified(peer, None, many);
        assert_eq!(peers.snapshot()[0].addrs.len(), MAX_ADDRS);
    }
}
