//! Hostile peers run in-process, made of the mesh crate alone: strangers with fresh
//! identities, paired with nobody (fresh peer IDs cost nothing), and a paired device's
//! identity run by other code than loopsy's.

use std::time::Duration;

use loopsy_mesh::{Config, Keypair, Mesh, MeshEvent, MeshTask, Multiaddr, PeerId};

/// A mesh node with `keypair`, called `name`, listening on loopback only.
fn mesh(keypair: Keypair, name: &str) -> anyhow::Result<(Mesh, MeshTask)> {
    Ok(Mesh::start(Config {
        keypair,
        name: name.into(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        mdns: false,
        relays: Vec::new(),
        site: None,
        upnp: false,
        natpmp: false,
    })?)
}

/// A mesh node with a fresh identity, listening on loopback only.
pub fn start() -> anyhow::Result<(Mesh, MeshTask)> {
    mesh(Keypair::generate_ed25519(), "stranger")
}

/// A paired device's identity (`keypair`, taken from its stopped node's home) run by
/// hostile code, connected to `target` at `addr`.
pub async fn impersonating(
    keypair: Keypair,
    name: &str,
    target: PeerId,
    addr: Multiaddr,
) -> anyhow::Result<(Mesh, MeshTask)> {
    let (mesh, task) = mesh(keypair, name)?;
    mesh.connect(target, vec![addr])
        .await?
        .map_err(anyhow::Error::msg)?;
    Ok((mesh, task))
}

/// A fresh stranger connected to `target`, or `None` when the connection was refused or
/// took longer than `within`.
pub async fn connected(
    target: PeerId,
    addr: &Multiaddr,
    within: Duration,
) -> anyhow::Result<Option<(Mesh, MeshTask)>> {
    let (mesh, task) = start()?;
    let connect = mesh.connect(target, vec![addr.clone()]);
    match tokio::time::timeout(within, connect).await {
        Ok(Ok(Ok(()))) => Ok(Some((mesh, task))),
        _ => Ok(None),
    }
}

/// Waits until every connection to `peer` is closed.
pub async fn closed_by(mesh: &Mesh, peer: PeerId) {
    let mut events = mesh.events();
    // Closed before the events were taken: nothing would say so.
    let connected = |peers: Vec<loopsy_mesh::PeerState>| {
        peers.iter().any(|p| p.peer_id == peer && p.is_connected())
    };
    if !connected(mesh.peers().await.unwrap_or_default()) {
        return;
    }
    loop {
        match events.recv().await {
            Ok(MeshEvent::Disconnected { peer: p }) if p == peer => return,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            _ => {}
        }
    }
}
