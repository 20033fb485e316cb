//! What this device's network allows, as the running node has seen it (`loopsy netcheck`).
//!
//! Nothing here sends a packet: the facts come from what the node does anyway. Each relay
//! tells, through identify, the address it sees this node at; the same public port seen by
//! two relays means the NAT maps a local port alike whatever it talks to (endpoint-
//! independent, a "cone": hole punching works), different ports mean a new mapping per
//! destination (endpoint-dependent, "symmetric": punching fails, and only a port mapped on
//! the router (UPnP, PCP, NAT-PMP) or a relay connects). The port mapping's outcome, each hole punch's,
//! the relays' state and round trips complete the picture.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};

use crate::{
    Link,
    addr::{self, is_relayed},
};

/// Most peers whose last hole punch is remembered (members are few; strangers may punch).
const MAX_PUNCHES: usize = 512;
/// Most addresses remembered per relay: one per connection to it and transport, mostly.
const MAX_OBSERVED: usize = 8;

/// How this device's NAT maps a local port, as the relays see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Fewer than two relays have told what they see.
    Unknown,
    /// Seen at its own address: no NAT in the way.
    None,
    /// Endpoint-independent: one public port for every destination (a "cone" NAT).
    Independent,
    /// Endpoint-dependent: a public port per destination (a "symmetric" NAT).
    Dependent,
}

/// Which port mapping protocols the node asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asking {
    pub upnp: bool,
    /// PCP, then NAT-PMP.
    pub natpmp: bool,
}

/// What the router said to port mapping, by each protocol, and what is mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub upnp: Upnp,
    pub pcp: Pmp,
    pub natpmp: Pmp,
    /// The external addresses mapped now, each once (none yet, or none left after a
    /// mapping lapsed).
    pub mapped: Vec<Multiaddr>,
}

/// What came of UPnP IGD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upnp {
    /// Switched off (`upnp = false`).
    Off,
    /// Still looking for a UPnP router.
    Searching,
    /// No router answered the UPnP search.
    NoGateway,
    /// A router answered, but its own external address is private (a NAT behind another
    /// NAT): a mapping there would not be reachable from outside.
    NotPublic,
    /// A router answered and mapped a port (which may have lapsed since).
    Mapped,
}

/// What came of asking the default gateway by PCP or by NAT-PMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pmp {
    /// Switched off (`natpmp = false`).
    Off,
    /// Nothing asked yet (no listen address to map, or no answer in yet).
    Searching,
    /// The routing table has no default IPv4 gateway.
    NoGateway,
    /// Not needed: the gateway answered PCP (said of NAT-PMP).
    NotAsked,
    /// The gateway did not answer.
    NoAnswer,
    /// The gateway answered that it speaks another version (a NAT-PMP-only gateway, to PCP).
    Unsupported,
    /// The gateway refused the mapping.
    Refused,
    /// The gateway mapped a port, but its own external address is private.
    NotPublic,
    /// The gateway mapped a port (which may have lapsed since).
    Mapped,
}

/// Which client mapped an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mapper {
    Upnp,
    Pmp,
}

/// The outcome of the last hole punch with a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Punch {
    Succeeded,
    Failed(String),
}

/// A relay this node is configured to use.
#[derive(Debug, Clone)]
pub struct RelayState {
    pub addr: Multiaddr,
    pub connected: bool,
    pub reserved: bool,
    pub rtt: Option<Duration>,
    /// Where it sees this node (the address of this node's connection to it).
    pub observed: Vec<Multiaddr>,
}

/// How a peer is reached, and what was tried.
#[derive(Debug, Clone)]
pub struct PeerPath {
    pub peer_id: PeerId,
    pub link: Link,
    /// The last hole punch, if one was tried since the node started.
    pub punch: Option<Punch>,
}

/// Everything `netcheck` reports from the mesh.
#[derive(Debug, Clone)]
pub struct NetReport {
    pub mapping: Mapping,
    pub port_mapping: PortMapping,
    /// Global IPv6 addresses this node listens on.
    pub ipv6: Vec<Multiaddr>,
    pub relays: Vec<RelayState>,
    pub mdns: bool,
    /// Devices announced on the LAN by mDNS now.
    pub lan_devices: usize,
    pub peers: Vec<PeerPath>,
}

/// What the event loop learns for `netcheck` as it goes.
#[derive(Debug)]
pub(crate) struct Observations {
    /// The addresses each relay reported seeing this node at, oldest first.
    seen_by: HashMap<PeerId, Vec<Multiaddr>>,
    port_mapping: PortMapping,
    /// The mapped addresses, by the client that mapped each.
    mapped: Vec<(Mapper, Multiaddr)>,
    punches: HashMap<PeerId, Punch>,
}

impl Observations {
    pub fn new(asking: Asking) -> Self {
        let pmp = if asking.natpmp {
            Pmp::Searching
        } else {
            Pmp::Off
        };
        Self {
            seen_by: HashMap::new(),
            port_mapping: PortMapping {
                upnp: if asking.upnp {
                    Upnp::Searching
                } else {
                    Upnp::Off
                },
                pcp: pmp,
                natpmp: pmp,
                mapped: Vec::new(),
            },
            mapped: Vec::new(),
            punches: HashMap::new(),
        }
    }

    /// A relay says it sees this node at `addr`. Every address is kept (up to a bound), as
    /// a node may have several connections to a relay, from its listen port (which hole
    /// punching uses) and from others.
    pub fn seen_by_relay(&mut self, relay: PeerId, mut addr: Multiaddr) {
        if is_relayed(&addr) || addr::ip(&addr).is_none() {
            return;
        }
        if addr::peer_id(&addr).is_some() {
            addr.pop();
        }
        let seen = self.seen_by.entry(relay).or_default();
        if seen.contains(&addr) {
            return;
        }
        if seen.len() >= MAX_OBSERVED {
            seen.remove(0);
        }
        seen.push(addr);
    }

    pub fn seen(&self, relay: &PeerId) -> &[Multiaddr] {
        self.seen_by.get(relay).map_or(&[], Vec::as_slice)
    }

    pub fn relay_dropped(&mut self, relay: &PeerId) {
        self.seen_by.remove(relay);
    }

    pub fn on_port_mapping(&mut self, event: &crate::portmap::Event) {
        use crate::portmap::{
            Event,
            pmp::{self, Outcome, Protocol},
        };
        use libp2p::upnp::Event as UpnpEvent;
        let state = &mut self.port_mapping;
        match event {
            Event::Upnp(UpnpEvent::GatewayNotFound) => state.upnp = Upnp::NoGateway,
            Event::Upnp(UpnpEvent::NonRoutableGateway) => state.upnp = Upnp::NotPublic,
            Event::Upnp(UpnpEvent::NewExternalAddr { external_addr, .. }) => {
                state.upnp = Upnp::Mapped;
                self.mapped_by(Mapper::Upnp, external_addr, true);
            }
            Event::Upnp(UpnpEvent::ExpiredExternalAddr { external_addr, .. }) => {
                self.mapped_by(Mapper::Upnp, external_addr, false);
            }
            Event::Pmp(pmp::Event::NoGateway) => {
                state.pcp = Pmp::NoGateway;
                state.natpmp = Pmp::NoGateway;
            }
            Event::Pmp(pmp::Event::Asked { protocol, outcome }) => {
                let said = match outcome {
                    Outcome::NoAnswer => Pmp::NoAnswer,
                    Outcome::Unsupported => Pmp::Unsupported,
                    Outcome::Refused => Pmp::Refused,
                    Outcome::NotPublic => Pmp::NotPublic,
                    Outcome::Mapped => Pmp::Mapped,
                };
                match protocol {
                    Protocol::Pcp => {
                        state.pcp = said;
                        // NAT-PMP is asked only when PCP is not answered.
                        if !matches!(said, Pmp::NoAnswer | Pmp::Unsupported) {
                            state.natpmp = Pmp::NotAsked;
                        }
                    }
                    Protocol::NatPmp => state.natpmp = said,
                }
            }
            Event::Pmp(pmp::Event::Mapped { external, .. }) => {
                self.mapped_by(Mapper::Pmp, external, true);
            }
            Event::Pmp(pmp::Event::Expired { external, .. }) => {
                self.mapped_by(Mapper::Pmp, external, false);
            }
        }
    }

    /// Notes that `mapper` maps `addr` (or no longer does); the report lists each once.
    fn mapped_by(&mut self, mapper: Mapper, addr: &Multiaddr, mapped: bool) {
        let entry = (mapper, addr.clone());
        self.mapped.retain(|e| *e != entry);
        if mapped {
            self.mapped.push(entry);
        }
        let mut addrs: Vec<Multiaddr> = Vec::new();
        for (_, addr) in &self.mapped {
            if !addrs.contains(addr) {
                addrs.push(addr.clone());
            }
        }
        self.port_mapping.mapped = addrs;
    }

    pub fn port_mapping(&self) -> &PortMapping {
        &self.port_mapping
    }

    pub fn punched(&mut self, peer: PeerId, punch: Punch) {
        if self.punches.len() >= MAX_PUNCHES && !self.punches.contains_key(&peer) {
            return;
        }
        self.punches.insert(peer, punch);
    }

    pub fn punch(&self, peer: &PeerId) -> Option<Punch> {
        self.punches.get(peer).cloned()
    }

    pub fn forget(&mut self, peer: &PeerId) {
        self.punches.remove(peer);
    }
}

/// The transport part of an address: `tcp`, `udp` (QUIC), or nothing.
fn transport(addr: &Multiaddr) -> Option<&'static str> {
    addr.iter().find_map(|p| match p {
        Protocol::Tcp(_) => Some("tcp"),
        Protocol::Udp(_) => Some("udp"),
        _ => None,
    })
}

fn ip_and_port(addr: &Multiaddr) -> Option<(IpAddr, u16)> {
    let ip = addr::ip(addr)?;
    let port = addr.iter().find_map(|p| match p {
        Protocol::Tcp(port) | Protocol::Udp(port) => Some(port),
        _ => None,
    })?;
    Some((ip, port))
}

/// Reads the NAT's mapping from where relays see this node (`seen`, per relay) and the
/// addresses it listens on: per transport, an address that two relays or more all saw
/// means one mapping for every destination; none in common, a mapping per destination.
/// (A relay may see several: connections from the listen port, which punches use, and
/// from other ports.) TCP only tells a cone; QUIC tells both. Seen only at listen
/// addresses: there is no NAT.
pub fn mapping(seen: &[(PeerId, Vec<Multiaddr>)], listen: &[Multiaddr]) -> Mapping {
    let listening: Vec<(IpAddr, u16)> = listen.iter().filter_map(ip_and_port).collect();
    let mut verdict = Mapping::Unknown;
    for kind in ["tcp", "udp"] {
        let per_relay: Vec<Vec<(IpAddr, u16)>> = seen
            .iter()
            .map(|(_, addrs)| {
                addrs
                    .iter()
                    .filter(|a| transport(a) == Some(kind))
                    .filter_map(ip_and_port)
                    .collect::<Vec<_>>()
            })
            .filter(|points| !points.is_empty())
            .collect();
        if per_relay.is_empty() {
            continue;
        }
        if per_relay.iter().flatten().all(|p| listening.contains(p)) {
            verdict = verdict.max_with(Mapping::None);
            continue;
        }
        if per_relay.len() < 2 {
            continue;
        }
        let shared = per_relay[0]
            .iter()
            .any(|p| per_relay[1..].iter().all(|other| other.contains(p)));
        let found = match (shared, kind) {
            (true, _) => Mapping::Independent,
            // A TCP dial may come from another port than the listen port (libp2p reuses
            // it only at times), so TCP ports that differ tell nothing; QUIC always
            // sends from its listen socket.
            (false, "tcp") => continue,
            (false, _) => Mapping::Dependent,
        };
        verdict = verdict.max_with(found);
    }
    verdict
}

impl Mapping {
    /// The more telling of two verdicts: a NAT that maps any transport per destination
    /// is symmetric for hole punching's purposes.
    fn max_with(self, other: Mapping) -> Mapping {
        let rank = |m: Mapping| match m {
            Mapping::Unknown => 0,
            Mapping::None => 1,
            Mapping::Independent => 2,
            Mapping::Dependent => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// Whether an address is a global IPv6 one (not loopback, link-local or unique local).
pub(crate) fn is_global_ipv6(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip6(ip)) => {
            let first = ip.segments()[0];
            !ip.is_loopback()
                && !ip.is_unspecified()
                && (first & 0xffc0) != 0xfe80
                && (first & 0xfe00) != 0xfc00
                && !(first == 0x2001 && ip.segments()[1] == 0xdb8)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("address")
    }

    fn relays(seen: &[&[&str]]) -> Vec<(PeerId, Vec<Multiaddr>)> {
        seen.iter()
            .map(|addrs| {
                (
                    PeerId::random(),
                    addrs.iter().map(|a| addr(a)).collect::<Vec<_>>(),
                )
            })
            .collect()
    }

    const LISTEN: &str = "/ip4/192.168.1.2/tcp/40000";

    #[test]
    fn the_same_port_from_two_relays_is_a_cone_and_different_ones_symmetric() {
        let listen = [addr(LISTEN)];
        let cone = relays(&[&["/ip4/10.99.0.2/tcp/40000"], &["/ip4/10.99.0.2/tcp/40000"]]);
        assert_eq!(mapping(&cone, &listen), Mapping::Independent);
        let symmetric = relays(&[
            &["/ip4/10.99.0.3/udp/51234/quic-v1"],
            &["/ip4/10.99.0.3/udp/61001/quic-v1"],
        ]);
        assert_eq!(mapping(&symmetric, &listen), Mapping::Dependent);
        // TCP dials that did not come from the listen port: nothing to tell.
        let tcp = relays(&[&["/ip4/10.99.0.3/tcp/51234"], &["/ip4/10.99.0.3/tcp/61001"]]);
        assert_eq!(mapping(&tcp, &listen), Mapping::Unknown);
    }

    #[test]
    fn one_relay_tells_nothing_unless_it_sees_a_listen_address() {
        let listen = [addr(LISTEN)];
        let one = relays(&[&["/ip4/10.99.0.2/tcp/40000"]]);
        assert_eq!(mapping(&one, &listen), Mapping::Unknown);
        assert_eq!(mapping(&[], &listen), Mapping::Unknown);
        let open = relays(&[&[
            "/ip4/192.168.1.2/tcp/40000/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
        ]]);
        assert_eq!(mapping(&open, &listen), Mapping::None);
    }

    #[test]
    fn transports_are_compared_apart_and_a_symmetric_one_wins() {
        let listen = [addr(LISTEN)];
        // TCP seen by one relay, QUIC by the other: nothing to compare.
        let apart = relays(&[
            &["/ip4/10.99.0.2/tcp/40000"],
            &["/ip4/10.99.0.2/udp/40000/quic-v1"],
        ]);
        assert_eq!(mapping(&apart, &listen), Mapping::Unknown);
        let mixed = relays(&[
            &[
                "/ip4/10.99.0.2/tcp/40000",
                "/ip4/10.99.0.2/udp/5000/quic-v1",
            ],
            &[
                "/ip4/10.99.0.2/tcp/40000",
                "/ip4/10.99.0.2/udp/5001/quic-v1",
            ],
        ]);
        assert_eq!(mapping(&mixed, &listen), Mapping::Dependent);
    }

    #[test]
    fn a_relay_keeps_each_address_once_and_a_bounded_few() {
        let relay = PeerId::random();
        let mut seen = Observations::new(ASKING);
        seen.seen_by_relay(relay, addr("/ip4/10.99.0.2/tcp/1"));
        seen.seen_by_relay(relay, addr("/ip4/10.99.0.2/tcp/1"));
        seen.seen_by_relay(relay, addr("/ip4/10.99.0.2/udp/3/quic-v1"));
        seen.seen_by_relay(relay, addr("/p2p-circuit"));
        assert_eq!(
            seen.seen(&relay),
            [
                addr("/ip4/10.99.0.2/tcp/1"),
                addr("/ip4/10.99.0.2/udp/3/quic-v1")
            ]
        );
        for port in 10..30 {
            seen.seen_by_relay(relay, addr(&format!("/ip4/10.99.0.2/tcp/{port}")));
        }
        assert_eq!(seen.seen(&relay).len(), MAX_OBSERVED);
    }

    #[test]
    fn a_connection_from_another_port_does_not_hide_a_cone() {
        let listen = [addr(LISTEN)];
        // The second relay also saw a connection that did not reuse the listen port.
        let cone = relays(&[
            &["/ip4/10.99.0.2/tcp/40000"],
            &["/ip4/10.99.0.2/tcp/40000", "/ip4/10.99.0.2/tcp/51000"],
        ]);
        assert_eq!(mapping(&cone, &listen), Mapping::Independent);
    }

    #[test]
    fn port_mapping_follows_the_gateway() {
        use crate::portmap::{
            Event,
            pmp::{self, Outcome, Protocol},
        };
        use libp2p::upnp::Event as UpnpEvent;
        let mut seen = Observations::new(ASKING);
        assert_eq!(seen.port_mapping().upnp, Upnp::Searching);
        assert_eq!(seen.port_mapping().pcp, Pmp::Searching);
        let mapped = addr("/ip4/11.99.0.2/tcp/40000");
        let event = |external_addr: &Multiaddr| {
            Event::Upnp(UpnpEvent::NewExternalAddr {
                local_addr: addr(LISTEN),
                external_addr: external_addr.clone(),
            })
        };
        seen.on_port_mapping(&event(&mapped));
        seen.on_port_mapping(&event(&mapped));
        assert_eq!(seen.port_mapping().upnp, Upnp::Mapped);
        assert_eq!(seen.port_mapping().mapped, std::slice::from_ref(&mapped));
        // PCP maps the same address: listed once, and kept while either maps it.
        seen.on_port_mapping(&Event::Pmp(pmp::Event::Asked {
            protocol: Protocol::Pcp,
            outcome: Outcome::Mapped,
        }));
        let pcp = pmp::Event::Mapped {
            protocol: Protocol::Pcp,
            local: addr(LISTEN),
            external: mapped.clone(),
        };
        seen.on_port_mapping(&Event::Pmp(pcp));
        assert_eq!(seen.port_mapping().mapped, std::slice::from_ref(&mapped));
        assert_eq!(seen.port_mapping().pcp, Pmp::Mapped);
        assert_eq!(seen.port_mapping().natpmp, Pmp::NotAsked);
        seen.on_port_mapping(&Event::Upnp(UpnpEvent::ExpiredExternalAddr {
            local_addr: addr(LISTEN),
            external_addr: mapped.clone(),
        }));
        assert_eq!(seen.port_mapping().mapped, std::slice::from_ref(&mapped));
        seen.on_port_mapping(&Event::Pmp(pmp::Event::Expired {
            protocol: Protocol::Pcp,
            local: addr(LISTEN),
            external: mapped,
        }));
        assert!(seen.port_mapping().mapped.is_empty());
        seen.on_port_mapping(&Event::Upnp(UpnpEvent::NonRoutableGateway));
        assert_eq!(seen.port_mapping().upnp, Upnp::NotPublic);
        // A NAT-PMP-only gateway.
        for (protocol, outcome) in [
            (Protocol::Pcp, Outcome::Unsupported),
            (Protocol::NatPmp, Outcome::Mapped),
        ] {
            seen.on_port_mapping(&Event::Pmp(pmp::Event::Asked { protocol, outcome }));
        }
        assert_eq!(seen.port_mapping().pcp, Pmp::Unsupported);
        assert_eq!(seen.port_mapping().natpmp, Pmp::Mapped);
        let off = Observations::new(Asking {
            upnp: false,
            natpmp: false,
        });
        assert_eq!(off.port_mapping().upnp, Upnp::Off);
        assert_eq!(off.port_mapping().natpmp, Pmp::Off);
    }

    const ASKING: Asking = Asking {
        upnp: true,
        natpmp: true,
    };

    #[test]
    fn only_global_ipv6_counts() {
        assert!(is_global_ipv6(&addr("/ip6/2a01:4f8::1/tcp/1")));
        for local in ["/ip6/::1/tcp/1", "/ip6/fe80::1/tcp/1", "/ip6/fd00::1/tcp/1"] {
            assert!(!is_global_ipv6(&addr(local)), "{local}");
        }
        assert!(!is_global_ipv6(&addr("/ip4/8.8.8.8/tcp/1")));
    }
}
