//! Reaching the peer a user names, for the opening side of every protocol: resolve the
//! name, connect, open the stream through the peer's gate, and say in words why not.

use std::{sync::Arc, time::Duration};

use loopsy_mesh::{Mesh, PeerId};
use loopsy_wire::control::{self, ErrorCode};

use crate::{
    gate::{self, Departure},
    trust::{ResolveError, Trust},
};

/// How long a command waits for a connection to its peer.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);

/// Opens streams to members for this device's user.
#[derive(Clone)]
pub struct Dialer {
    mesh: Mesh,
    trust: Arc<Trust>,
    /// This device's name, which names no peer.
    name: String,
}

impl Dialer {
    pub fn new(mesh: Mesh, trust: Arc<Trust>, name: String) -> Self {
        Self { mesh, trust, name }
    }

    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// A member's name, or its peer ID.
    pub fn shown(&self, peer: &PeerId) -> String {
        self.trust.shown(peer)
    }

    /// Members with a connection now.
    pub async fn connected_members(&self) -> Vec<PeerId> {
        connected_members(&self.mesh, &self.trust).await
    }

    /// The end of `peer`'s connection.
    pub fn departure(&self, peer: PeerId) -> Departure {
        Departure::connection(&self.mesh, &self.trust, peer)
    }

    /// Connects to the peer a user means, opens a `protocol` stream, and sends `first`: the
    /// stream once the peer's gate let it in.
    pub async fn open<T: serde::Serialize>(
        &self,
        query: &str,
        protocol: &'static str,
        first: &T,
        max: usize,
    ) -> Result<(PeerId, loopsy_mesh::Stream), control::Error> {
        let failed = |code, message: String| control::Error::new(code, message);
        let peer = self.target(query)?;
        let addrs = self
            .trust
            .member(&peer)
            .map(|m| m.addrs)
            .unwrap_or_default();
        let name = self
            .trust
            .name_of(&peer)
            .unwrap_or_else(|| query.to_owned());
        match tokio::time::timeout(CONNECT_DEADLINE, self.mesh.connect(peer, addrs)).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::info!(%peer, error = %e, "cannot reach a peer");
                return Err(failed(ErrorCode::Unreachable, unreachable(&name, &e)));
            }
            Ok(Err(_)) => {
                return Err(failed(
                    ErrorCode::Unavailable,
                    "the node is shutting down".into(),
                ));
            }
            Err(_) => {
                return Err(failed(
                    ErrorCode::Unreachable,
                    format!(
                        "{name} did not answer within {}s: it may be offline, or its network \
                         drops what this device sends",
                        CONNECT_DEADLINE.as_secs()
                    ),
                ));
            }
        }
        match gate::open(&self.mesh, peer, protocol, first, max).await {
            Ok(stream) => Ok((peer, stream)),
            Err(gate::NotAdmitted::Refused(reason)) => Err(failed(
                ErrorCode::Refused,
                format!("{query} refused: {reason}"),
            )),
            Err(broken) => {
                tracing::info!(%peer, error = %broken, "no stream to a peer");
                Err(failed(
                    ErrorCode::Unreachable,
                    unreachable(&name, &broken.to_string()),
                ))
            }
        }
    }

    /// The peer a user means: a member by name, ID or prefix, or any full peer ID.
    pub fn target(&self, query: &str) -> Result<PeerId, control::Error> {
        let me = self.mesh.peer_id();
        if query == self.name || query == me.to_base58() {
            return Err(control::Error::new(
                ErrorCode::InvalidArgument,
                format!("`{query}` is this device; run the command here directly"),
            ));
        }
        match self.trust.resolve(query) {
            Ok(peer) => Ok(peer),
            Err(ResolveError::NotFound(_)) => query.parse::<PeerId>().map_err(|_| {
                control::Error::new(
                    ErrorCode::NotFound,
                    format!("no paired device is called `{query}`; see `loopsy peers`"),
                )
            }),
            Err(e @ ResolveError::Ambiguous(..)) => {
                Err(control::Error::new(ErrorCode::Ambiguous, e.to_string()))
            }
        }
    }
}

/// Why a peer could not be reached, in words: libp2p's dial errors list every address
/// with its transport's error, which says little to a person (the log has it whole).
fn unreachable(name: &str, error: &str) -> String {
    let why = if error.contains("Connection refused") {
        "nothing answers at its known addresses: it is probably not running, or it moved to \
         other ports (see `loopsy peers`)"
    } else if error.contains("No route to host") || error.contains("Network is unreachable") {
        "its known addresses are not reachable from this network"
    } else if error.contains("no addresses") || error.contains("NoAddresses") {
        "no address is known for it: mDNS has not seen it and it has no relay address"
    } else if error.contains("timed out") || error.contains("Timeout") {
        "it did not answer in time"
    } else {
        "it is offline or unreachable"
    };
    format!("cannot reach {name}: {why}")
}

/// Why a dial failed, in a few words and the first address tried ("connection refused at
/// /ip4/192.0.2.7/tcp/7717"): libp2p's dial errors list every address with its
/// transport's error, in words meant for developers.
pub fn why_unreachable(error: &str) -> String {
    let lower = error.to_ascii_lowercase();
    let why = [
        ("connection refused", "connection refused"),
        ("no route to host", "no route to host"),
        ("network is unreachable", "network unreachable"),
        ("timed out", "timed out"),
        ("timeout", "timed out"),
        ("no addresses", "no address known"),
        ("noaddresses", "no address known"),
        (
            "too many connection attempts",
            "too many connection attempts at once",
        ),
    ]
    .iter()
    .find(|(needle, _)| lower.contains(needle))
    .map_or("dial failed", |(_, said)| said);
    let mut starts: Vec<usize> = ["/ip4/", "/ip6/", "/dns4/", "/dns6/", "/dns/"]
        .iter()
        .flat_map(|start| error.match_indices(start).map(|(at, _)| at))
        .collect();
    // In the order the error lists them.
    starts.sort_unstable();
    let addrs: Vec<&str> = starts
        .into_iter()
        .map(|at| {
            let rest = &error[at..];
            let end = rest
                .find(|c: char| c.is_whitespace() || matches!(c, ',' | ')' | ']' | '('))
                .unwrap_or(rest.len());
            let addr = rest[..end].trim_end_matches(':');
            addr.find("/p2p/").map_or(addr, |p2p| &addr[..p2p])
        })
        .collect();
    match addrs.as_slice() {
        [] => why.to_owned(),
        [one] => format!("{why} at {one}"),
        [first, rest @ ..] => format!("{why} at {first} (and {} more addresses)", rest.len()),
    }
}

/// Members with a connection now.
pub async fn connected_members(mesh: &Mesh, trust: &Trust) -> Vec<PeerId> {
    mesh.peers()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.is_connected() && trust.is_member(&p.peer_id))
        .map(|p| p.peer_id)
        .collect()
}
