//! `netcheck`: the mesh's report on this device's network, in the control API's words, with
//! each member's path and the reason for it.

use loopsy_mesh::{
    Link, PeerId,
    netcheck::{self, Mapping, NetReport, Punch},
};
use loopsy_wire::control::{self, Connection, NatMapping, Pmp, Upnp};

/// A member as the trust store names it.
#[derive(Debug, Clone)]
pub struct Member {
    pub peer_id: PeerId,
    pub name: Option<String>,
}

/// The report for the control API: every member listed, reached or not.
pub fn report(net: NetReport, members: &[Member]) -> control::NetCheck {
    let strings = |addrs: &[loopsy_mesh::Multiaddr]| -> Vec<String> {
        addrs.iter().map(ToString::to_string).collect()
    };
    let ports = &net.port_mapping;
    let upnp = match ports.upnp {
        netcheck::Upnp::Off => Upnp::Off,
        netcheck::Upnp::Searching => Upnp::Searching,
        netcheck::Upnp::NoGateway => Upnp::NoGateway,
        netcheck::Upnp::NotPublic => Upnp::NotPublic,
        netcheck::Upnp::Mapped => Upnp::Mapped,
    };
    let mapped_addrs = strings(&ports.mapped);
    let mapped = !mapped_addrs.is_empty();
    let peers = members
        .iter()
        .map(|member| {
            let path = net.peers.iter().find(|p| p.peer_id == member.peer_id);
            let link = path.map_or(Link::None, |p| p.link);
            let punch = path.and_then(|p| p.punch.as_ref());
            control::PeerPath {
                name: member.name.clone(),
                peer_id: member.peer_id.to_base58(),
                connection: match link {
                    Link::Direct => Connection::Direct,
                    Link::Relayed => Connection::Relayed,
                    Link::None => Connection::None,
                },
                why: why(link, punch, net.mapping, mapped),
            }
        })
        .collect();
    control::NetCheck {
        mapping: match net.mapping {
            Mapping::Unknown => NatMapping::Unknown,
            Mapping::None => NatMapping::None,
            Mapping::Independent => NatMapping::EndpointIndependent,
            Mapping::Dependent => NatMapping::EndpointDependent,
        },
        seen_at: net
            .relays
            .iter()
            .flat_map(|relay| {
                relay.observed.iter().map(|addr| control::SeenAt {
                    relay: relay.addr.to_string(),
                    addr: addr.to_string(),
                })
            })
            .collect(),
        upnp,
        pcp: pmp(ports.pcp),
        natpmp: pmp(ports.natpmp),
        mapped_addrs,
        ipv6_addrs: strings(&net.ipv6),
        relays: net
            .relays
            .iter()
            .map(|relay| control::RelayCheck {
                addr: relay.addr.to_string(),
                connected: relay.connected,
                reserved: relay.reserved,
                rtt_ms: relay.rtt.map(|d| d.as_secs_f64() * 1000.0),
            })
            .collect(),
        mdns: net.mdns,
        lan_devices: net.lan_devices as u64,
        peers,
    }
}

fn pmp(state: netcheck::Pmp) -> Pmp {
    match state {
        netcheck::Pmp::Off => Pmp::Off,
        netcheck::Pmp::Searching => Pmp::Searching,
        netcheck::Pmp::NoGateway => Pmp::NoGateway,
        netcheck::Pmp::NotAsked => Pmp::NotAsked,
        netcheck::Pmp::NoAnswer => Pmp::NoAnswer,
        netcheck::Pmp::Unsupported => Pmp::Unsupported,
        netcheck::Pmp::Refused => Pmp::Refused,
        netcheck::Pmp::NotPublic => Pmp::NotPublic,
        netcheck::Pmp::Mapped => Pmp::Mapped,
    }
}

/// Why a member is reached the way it is, in a few words.
fn why(link: Link, punch: Option<&Punch>, mapping: Mapping, mapped: bool) -> String {
    match (link, punch) {
        (Link::None, _) => "not connected: offline, or not reachable from here".into(),
        (Link::Direct, Some(Punch::Succeeded)) => "direct: hole punched".into(),
        (Link::Direct, _) => "direct".into(),
        (Link::Relayed, Some(Punch::Succeeded)) => {
            "relayed: a hole was punched, and that connection was lost".into()
        }
        (Link::Relayed, None) => "relayed: no hole punch tried yet".into(),
        (Link::Relayed, Some(Punch::Failed(_))) => {
            let cause = match mapping {
                Mapping::Dependent if mapped => {
                    ", this device's NAT is symmetric and the other end did not reach its mapped port"
                }
                Mapping::Dependent => {
                    ", this device's NAT is symmetric (a port mapped on the router, by UPnP, PCP or NAT-PMP, would help)"
                }
                Mapping::Independent | Mapping::None => ", the other device's NAT may be symmetric",
                Mapping::Unknown => "",
            };
            format!("relayed: hole punch failed{cause}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_punch_names_the_symmetric_nat() {
        let failed = Punch::Failed("timed out".into());
        assert_eq!(
            why(Link::Relayed, Some(&failed), Mapping::Dependent, false),
            "relayed: hole punch failed, this device's NAT is symmetric (a port mapped on the \
             router, by UPnP, PCP or NAT-PMP, would help)"
        );
        assert_eq!(
            why(Link::Relayed, Some(&failed), Mapping::Independent, false),
            "relayed: hole punch failed, the other device's NAT may be symmetric"
        );
        assert_eq!(
            why(Link::Relayed, Some(&failed), Mapping::Unknown, false),
            "relayed: hole punch failed"
        );
    }

    #[test]
    fn direct_and_untried_paths_say_so() {
        assert_eq!(
            why(
                Link::Direct,
                Some(&Punch::Succeeded),
                Mapping::Independent,
                false
            ),
            "direct: hole punched"
        );
        assert_eq!(why(Link::Direct, None, Mapping::Unknown, false), "direct");
        assert_eq!(
            why(Link::Relayed, None, Mapping::Unknown, false),
            "relayed: no hole punch tried yet"
        );
        assert!(why(Link::None, None, Mapping::Unknown, false).starts_with("not connected"));
    }
}
