//! Running a node: take the home's lock, load identity and config, start the mesh and the
//! control socket, and serve until told to stop.

use std::{fs, io, os::unix::fs::PermissionsExt, path::PathBuf, sync::Arc};

use loopsy_mesh::{Link, Mesh, Multiaddr, PeerState, identity};
use loopsy_wire::control::{self, Connection, ErrorCode, NatStatus, Request, Response};
use tokio::net::UnixListener;

use crate::{
    Home,
    config::{Config, ConfigError},
    control::{Handler, serve},
    lock::{LockError, NodeLock},
};

/// `loopsy node` flags that override the config for one run.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub name: Option<String>,
    pub listen: Vec<Multiaddr>,
    pub no_mdns: bool,
}

/// The node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Home(#[from] crate::home::HomeError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Mesh(#[from] loopsy_mesh::StartError),
    #[error("cannot open the control socket {path}: {source}")]
    Socket { path: PathBuf, source: io::Error },
}

/// What a started node tells whoever started it.
#[derive(Debug, Clone)]
pub struct Started {
    pub identity: control::Identity,
    pub socket: PathBuf,
}

/// Runs a node on `home` until `shutdown` completes. `on_start` is called once the node
/// serves its control socket.
pub async fn run(
    home: Home,
    overrides: Overrides,
    on_start: impl FnOnce(&Started),
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    home.create()?;
    let _lock = NodeLock::acquire(&home)?;
    let keypair = identity::load_or_create(&home.identity_key())?;
    let mut config = Config::load_or_create(&home)?;
    if let Some(name) = overrides.name {
        config.name = name;
    }
    if !overrides.listen.is_empty() {
        config.listen = overrides.listen;
    }
    config.mdns &= !overrides.no_mdns;
    let name = loopsy_mesh::sanitize_name(&config.name);

    let (mesh, mesh_task) = Mesh::start(loopsy_mesh::Config {
        keypair,
        name: name.clone(),
        listen: config.listen,
        mdns: config.mdns,
    })?;

    let socket = home.socket();
    let listener = bind_socket(&socket)?;
    let node = Arc::new(Node { mesh, name });
    on_start(&Started {
        identity: node.identity(),
        socket: socket.clone(),
    });
    serve(listener, node, shutdown).await;

    tracing::info!("shutting down");
    let _ = fs::remove_file(&socket);
    mesh_task.shutdown().await;
    Ok(())
}

/// Binds the control socket, owner-only. A socket file left by a node that died is
/// replaced: holding the lock proves no live node uses it.
fn bind_socket(path: &PathBuf) -> Result<UnixListener, NodeError> {
    let err = |source| NodeError::Socket {
        path: path.clone(),
        source,
    };
    match fs::remove_file(path) {
        Ok(()) => tracing::debug!("removed a stale control socket"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// The daemon's state, as the control API sees it.
struct Node {
    mesh: Mesh,
    name: String,
}

impl Node {
    fn identity(&self) -> control::Identity {
        control::Identity {
            peer_id: self.mesh.peer_id().to_base58(),
            name: self.name.clone(),
        }
    }

    async fn status(&self) -> Response {
        let Ok(net) = self.mesh.status().await else {
            return stopping();
        };
        let strings = |addrs: Vec<Multiaddr>| addrs.iter().map(ToString::to_string).collect();
        Response::Status(control::Status {
            peer_id: net.peer_id.to_base58(),
            name: self.name.clone(),
            listen_addrs: strings(net.listen_addrs),
            external_addrs: strings(net.external_addrs),
            relayed_addrs: strings(net.relayed_addrs),
            nat: NatStatus::Unknown,
            relay_reservations: Vec::new(),
        })
    }

    async fn peers(&self) -> Response {
        let Ok(peers) = self.mesh.peers().await else {
            return stopping();
        };
        Response::Peers {
            peers: peers.into_iter().map(peer_view).collect(),
        }
    }
}

impl Handler for Node {
    async fn handle(&self, request: Request) -> Response {
        match request {
            Request::Id => Response::Id(self.identity()),
            Request::Status => self.status().await,
            Request::Peers => self.peers().await,
        }
    }
}

fn peer_view(peer: PeerState) -> control::Peer {
    control::Peer {
        online: peer.is_connected() || peer.on_lan,
        name: peer.name,
        peer_id: peer.peer_id.to_base58(),
        paired: false,
        connection: match peer.link {
            Link::Direct => Connection::Direct,
            Link::Relayed => Connection::Relayed,
            Link::None => Connection::None,
        },
        addrs: peer.addrs.iter().map(ToString::to_string).collect(),
        rtt_ms: peer.rtt.map(|d| d.as_secs_f64() * 1000.0),
    }
}

fn stopping() -> Response {
    Response::Error(control::Error::new(
        ErrorCode::Unavailable,
        "the node is shutting down",
    ))
}
