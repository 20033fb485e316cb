//! The addresses this device hands out (in pairing codes, hellos and its member record).

use futures::future::BoxFuture;
use loopsy_mesh::{Mesh, Multiaddr, multiaddr::Protocol};

/// Most addresses this device hands out.
const MAX_ADVERTISED: usize = 8;

/// Where this device can be reached: the mesh's view, or a fixed list in the tests.
pub trait Advertise: Send + Sync {
    fn advertised(&self) -> BoxFuture<'_, Vec<Multiaddr>>;
}

impl Advertise for Mesh {
    fn advertised(&self) -> BoxFuture<'_, Vec<Multiaddr>> {
        Box::pin(advertised(self))
    }
}

impl Advertise for Vec<Multiaddr> {
    fn advertised(&self) -> BoxFuture<'_, Vec<Multiaddr>> {
        let addrs = self.clone();
        Box::pin(async move { addrs })
    }
}

/// The addresses to give other devices: every address it listens on that another
/// device could dial, most useful first (LAN and public before loopback).
pub async fn advertised(mesh: &Mesh) -> Vec<Multiaddr> {
    let Ok(status) = mesh.status().await else {
        return Vec::new();
    };
    let mut addrs: Vec<Multiaddr> = Vec::new();
    let candidates = status
        .external_addrs
        .into_iter()
        .chain(status.relayed_addrs)
        .chain(status.listen_addrs);
    for addr in candidates.filter(|a| !is_undialable(a)) {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    // A stable order: the self-record is republished only when the set really changes.
    // Relayed addresses come first, so that they fit in a pairing code: they are the
    // ones that reach this device from another network.
    addrs.sort_by_cached_key(|a| {
        (
            loopsy_mesh::is_loopback(a),
            !loopsy_mesh::is_relayed(a),
            a.to_string(),
        )
    });
    addrs.truncate(MAX_ADVERTISED);
    addrs
}

/// IPv6 link-local addresses need an interface scope that a multiaddr cannot carry;
/// unspecified addresses name no host at all.
fn is_undialable(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip6(ip) => (ip.segments()[0] & 0xffc0) == 0xfe80 || ip.is_unspecified(),
        Protocol::Ip4(ip) => ip.is_unspecified(),
        _ => false,
    })
}
