//! `loopsy netcheck`: what this device's network allows, in one screen.

use std::process::ExitCode;

use clap::Args;
use loopsy_daemon::Home;
use loopsy_wire::control::{NatMapping, NetCheck, Pmp, Upnp};

use crate::output;

/// Show this device's NAT (how it maps ports, as relays see it), port mapping (UPnP, PCP,
/// NAT-PMP), IPv6, each relay's reachability and round trip, LAN discovery, and how each
/// member is reached and why.
#[derive(Debug, Args)]
pub struct Cmd {
    /// One JSON document with stable field names (docs/networks.md).
    #[arg(long)]
    json: bool,
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        let check = crate::client(&home).netcheck().await?;
        if self.json {
            output::json(&check)?;
        } else {
            show(&check);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The mapped addresses (one list for the three protocols).
fn mapped(check: &NetCheck) -> String {
    if check.mapped_addrs.is_empty() {
        "mapped, but the mapping lapsed".to_owned()
    } else {
        format!("mapped {}", check.mapped_addrs.join(", "))
    }
}

/// What came of PCP or NAT-PMP, in words.
fn pmp(state: Pmp, check: &NetCheck) -> String {
    match state {
        Pmp::Off => "off (natpmp = false in config.toml)".to_owned(),
        Pmp::Searching => "asking the gateway".to_owned(),
        Pmp::NoGateway => "no default gateway".to_owned(),
        Pmp::NotAsked => "not asked (the gateway speaks PCP)".to_owned(),
        Pmp::NoAnswer => "the gateway did not answer".to_owned(),
        Pmp::Unsupported => "the gateway speaks another version".to_owned(),
        Pmp::Refused => "the gateway refused (the node's log says why)".to_owned(),
        Pmp::NotPublic => "the gateway's own address is private (a NAT behind a NAT)".to_owned(),
        Pmp::Mapped => mapped(check),
    }
}

fn show(check: &NetCheck) {
    let nat = match check.mapping {
        NatMapping::Unknown => "unknown: fewer than two relays told where they see this device",
        NatMapping::None => "none: relays see this device at its own address",
        NatMapping::EndpointIndependent => {
            "cone (endpoint-independent mapping): hole punching works"
        }
        NatMapping::EndpointDependent => {
            "symmetric (endpoint-dependent mapping): hole punching fails; relays or a mapped port connect"
        }
    };
    let mut nat = vec![nat.to_owned()];
    nat.extend(
        check
            .seen_at
            .iter()
            .map(|seen| format!("seen at {} by {}", seen.addr, seen.relay)),
    );
    output::field("nat", &nat);

    let upnp = match check.upnp {
        Upnp::Off => "off (upnp = false in config.toml)".to_owned(),
        Upnp::Searching => "looking for the router".to_owned(),
        Upnp::NoGateway => "no router answered".to_owned(),
        Upnp::NotPublic => "the router's own address is private (a NAT behind a NAT)".to_owned(),
        Upnp::Mapped => mapped(check),
    };
    output::field("upnp", &[upnp]);
    output::field("pcp", &[pmp(check.pcp, check)]);
    output::field("nat-pmp", &[pmp(check.natpmp, check)]);

    let ipv6 = if check.ipv6_addrs.is_empty() {
        vec!["no global address".to_owned()]
    } else {
        check.ipv6_addrs.clone()
    };
    output::field("ipv6", &ipv6);

    let relays: Vec<String> = check
        .relays
        .iter()
        .map(|relay| {
            let state = match (relay.connected, relay.reserved) {
                (_, true) => "reserved",
                (true, false) => "connected, no reservation",
                (false, false) => "unreachable",
            };
            let rtt = relay
                .rtt_ms
                .map(|ms| format!(", {ms:.1} ms"))
                .unwrap_or_default();
            format!("{}  {state}{rtt}", relay.addr)
        })
        .collect();
    output::field("relays", &relays);

    let mdns = if check.mdns {
        format!("on, {} devices announced on the LAN", check.lan_devices)
    } else {
        "off".to_owned()
    };
    output::field("mdns", &[mdns]);

    let paths: Vec<String> = check
        .peers
        .iter()
        .map(|peer| {
            let name = peer.name.as_deref().unwrap_or(&peer.peer_id);
            format!("{}  {}", output::plain(name), peer.why)
        })
        .collect();
    output::field("members", &paths);
}
