//! The pairing link a phone opens: the web app's address with the code in the fragment
//! (`http://192.168.1.20:7718/#code=LOOPSY1-…`). A browser never sends the fragment to the
//! server, and the app takes it off the address bar at once.
//!
//! The page comes from this device's WebSocket listener when it has one a LAN can reach,
//! else from a relay holding a reservation for it that serves the app over TLS. The device
//! itself is preferred: a page is code, and a page from a relay is code from the relay's
//! operator, which then sees the code in the fragment.

use std::net::IpAddr;

use loopsy_mesh::{Multiaddr, multiaddr::Protocol};

/// The link to the web app for `code`, from the addresses this device listens on and is
/// relayed at; none when neither this device nor a relay of it serves the app.
pub fn link(addrs: &[Multiaddr], code: &str) -> Option<String> {
    let direct: Vec<(Origin, bool)> = addrs
        .iter()
        .filter(|a| !loopsy_mesh::is_relayed(a))
        .filter_map(origin)
        .filter(|(o, _)| !o.tls)
        .collect();
    let relayed = addrs
        .iter()
        .filter(|a| loopsy_mesh::is_relayed(a))
        .filter_map(origin)
        .find(|(o, _)| o.tls);
    let lan = direct.iter().find(|(_, loopback)| !loopback).cloned();
    let (origin, _) = lan.or(relayed).or_else(|| direct.first().cloned())?;
    Some(format!("{}/#code={code}", origin.url()))
}

/// Where a page is served from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    host: String,
    port: u16,
    tls: bool,
}

impl Origin {
    fn url(&self) -> String {
        let (scheme, default) = if self.tls {
            ("https", 443)
        } else {
            ("http", 80)
        };
        match self.port {
            p if p == default => format!("{scheme}://{}", self.host),
            p => format!("{scheme}://{}:{p}", self.host),
        }
    }
}

/// The origin of a WebSocket address (`/ip4/A/tcp/P/ws`, `/dns4/N/tcp/P/tls/ws`, a relay's
/// such address before `/p2p-circuit`), and whether it is a loopback one.
fn origin(addr: &Multiaddr) -> Option<(Origin, bool)> {
    let mut parts = addr.iter();
    let (host, loopback) = match parts.next()? {
        Protocol::Ip4(ip) if !ip.is_unspecified() => (ip.to_string(), ip.is_loopback()),
        Protocol::Ip6(ip) if !ip.is_unspecified() && !is_link_local(&ip.into()) => {
            (format!("[{ip}]"), ip.is_loopback())
        }
        Protocol::Dns(name) | Protocol::Dns4(name) | Protocol::Dns6(name) => {
            (name.to_string(), name == "localhost")
        }
        _ => return None,
    };
    let Protocol::Tcp(port) = parts.next()? else {
        return None;
    };
    let tls = match parts.next()? {
        Protocol::Ws(path) if path == "/" => false,
        Protocol::Wss(path) if path == "/" => true,
        Protocol::Tls => match parts.next()? {
            Protocol::Ws(path) if path == "/" => true,
            _ => return None,
        },
        _ => return None,
    };
    // What may follow: the device's or the relay's ID, then a circuit through it.
    for rest in parts {
        if !matches!(rest, Protocol::P2p(_) | Protocol::P2pCircuit) {
            return None;
        }
    }
    Some((Origin { host, port, tls }, loopback))
}

fn is_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<Multiaddr> {
        list.iter().map(|a| a.parse().expect("multiaddr")).collect()
    }

    const RELAY: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

    #[test]
    fn the_lan_listener_comes_first() {
        let list = addrs(&[
            &format!("/dns4/relay.example.net/tcp/443/tls/ws/p2p/{RELAY}/p2p-circuit"),
            "/ip4/127.0.0.1/tcp/7718/ws",
            "/ip4/192.168.1.20/tcp/7717",
            "/ip4/192.168.1.20/tcp/7718/ws",
        ]);
        assert_eq!(
            link(&list, "LOOPSY1-ABC").as_deref(),
            Some("http://192.168.1.20:7718/#code=LOOPSY1-ABC")
        );
    }

    #[test]
    fn a_relay_serving_the_app_over_tls_is_next() {
        let list = addrs(&[
            "/ip4/127.0.0.1/tcp/7718/ws",
            "/ip4/192.168.1.20/tcp/7717",
            &format!("/ip4/203.0.113.5/tcp/4001/p2p/{RELAY}/p2p-circuit"),
            &format!("/ip4/203.0.113.5/tcp/80/ws/p2p/{RELAY}/p2p-circuit"),
            &format!("/dns4/relay.example.net/tcp/443/tls/ws/p2p/{RELAY}/p2p-circuit"),
        ]);
        assert_eq!(
            link(&list, "C").as_deref(),
            Some("https://relay.example.net/#code=C")
        );
    }

    #[test]
    fn loopback_is_the_last_resort_and_plain_listeners_serve_nothing() {
        let list = addrs(&["/ip6/::1/tcp/7718/ws", "/ip4/10.0.0.1/udp/7717/quic-v1"]);
        assert_eq!(
            link(&list, "C").as_deref(),
            Some("http://[::1]:7718/#code=C")
        );
        let list = addrs(&["/ip4/10.0.0.1/tcp/7717", "/ip4/0.0.0.0/tcp/7718/ws"]);
        assert_eq!(link(&list, "C"), None);
        let list = addrs(&[
            "/ip6/fe80::1/tcp/7718/ws",
            "/ip4/10.0.0.1/tcp/7718/tls/http",
        ]);
        assert_eq!(link(&list, "C"), None);
    }
}
