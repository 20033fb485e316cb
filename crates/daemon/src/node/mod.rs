//! Running a node: take the home's lock, load identity, config and trust, start the mesh,
//! the protocol services and the control socket, and serve until told to stop.

mod api;
mod copy;
mod ctx;
mod keeper;
mod sessions;

use std::{fs, io, os::unix::fs::PermissionsExt, path::PathBuf, sync::Arc, time::Duration};

use loopsy_mesh::{Mesh, Multiaddr, PeerId, identity, multiaddr::Protocol};
use loopsy_wire::{control, member::Record, pair::Hello, protocol};
use tokio::{net::UnixListener, task::JoinSet};

use crate::{
    Home,
    audit::Audit,
    caps::{self, Capability, Caps},
    config::{Config, ConfigError},
    control::serve,
    gate,
    lock::{LockError, NodeLock},
    pair::{self, Invitations, RateLimit},
    sync::{self, Collection},
    trust::{Trust, TrustError},
};

/// Most addresses this device hands out (in codes, hellos and its member record).
const MAX_ADVERTISED: usize = 8;
/// The session registry's bounds: sessions of all devices, and bytes per session.
const REGISTRY_LIMITS: crate::replica::Limits = crate::replica::Limits {
    records: 4096,
    value: 16 * 1024,
};
/// Messages in transit (and acknowledgements) kept for the mesh.
const MESSAGE_LIMITS: crate::replica::Limits = crate::replica::Limits {
    records: 10_000,
    value: 20 * 1024,
};
/// The shared context's bounds: keys, and bytes per value.
const CTX_LIMITS: crate::replica::Limits = crate::replica::Limits {
    records: 10_000,
    value: 64 * 1024,
};

/// `loopsy node` flags that override the config for one run.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub name: Option<String>,
    pub listen: Vec<Multiaddr>,
    pub relays: Vec<Multiaddr>,
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
    Trust(#[from] TrustError),
    #[error(transparent)]
    Mesh(#[from] loopsy_mesh::StartError),
    #[error(transparent)]
    Replica(#[from] io::Error),
    #[error("cannot open the control socket {path}: {source}")]
    Socket { path: PathBuf, source: io::Error },
    #[error("--relay: {0}")]
    Relay(String),
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
    if !overrides.relays.is_empty() {
        crate::config::check_relays(&overrides.relays).map_err(NodeError::Relay)?;
        config.relays = overrides.relays;
    }
    config.mdns &= !overrides.no_mdns;
    let name = loopsy_mesh::sanitize_name(&config.name);
    // Validated when the config was loaded.
    let defaults = caps::parse(&config.grants.allow).unwrap_or_default();
    let trust = Trust::load(
        home.trust(),
        keypair.clone(),
        config.accept_introductions,
        defaults.clone(),
    )?;

    let ctx = crate::replica::Store::load(
        sync::CTX,
        (Some(Capability::Ctx), Some(Capability::Ctx)),
        home.ctx(),
        keypair.clone(),
        CTX_LIMITS,
        |_, _| true,
    )?;
    let registry = crate::replica::Store::load(
        sync::SESSIONS,
        (None, Some(Capability::Sessions)),
        home.registry(),
        keypair.clone(),
        REGISTRY_LIMITS,
        crate::session::registry::written_by_host,
    )?;
    let messages = crate::replica::Store::load(
        sync::MESSAGES,
        // Carried by every member: sealed to their recipients, they tell carriers little.
        (Some(Capability::Msg), None),
        home.messages(),
        keypair.clone(),
        MESSAGE_LIMITS,
        // A message is its sender's to write, an acknowledgement its recipient's.
        crate::inbox::written_by_entitled,
    )?;
    let inbox = crate::inbox::Inbox::load(home.inbox(), keypair.clone())?;
    let (pushes, push_queue) = sync::pushes();
    let (mesh, mesh_task) = Mesh::start(loopsy_mesh::Config {
        keypair,
        name: name.clone(),
        listen: config.listen.clone(),
        mdns: config.mdns,
        relays: config.relays.clone(),
    })?;
    let node = Arc::new(Node {
        mesh,
        name,
        home: home.clone(),
        started: std::time::Instant::now(),
        trust,
        defaults,
        audit: Audit::new(home.audit()),
        invitations: Invitations::default(),
        pair_attempts: RateLimit::new(5, 30, Duration::from_secs(60)),
        exec_policy: config.exec.clone(),
        running: crate::exec::Running::default(),
        files_policy: config.files.clone(),
        homes: crate::transfer::homes::Homes::new(home.dir()),
        sessions: Arc::new(crate::session::Sessions::load(home.sessions())),
        ctx,
        registry,
        messages,
        inbox,
        pushes,
    });

    let mut services = JoinSet::new();
    services.spawn(pair::serve(node.clone()));
    let sync_service: gate::Service =
        Arc::new(|node, peer, stream, grants| Box::pin(sync::serve(node, peer, stream, grants)));
    services.spawn(gate::serve(
        node.clone(),
        protocol::SYNC,
        Some(sync_service),
    ));
    let exec_service: gate::Service = Arc::new(|node, peer, stream, grants| {
        Box::pin(crate::exec::serve(node, peer, stream, grants))
    });
    services.spawn(gate::serve(
        node.clone(),
        protocol::EXEC,
        Some(exec_service),
    ));
    let transfer_service: gate::Service = Arc::new(|node, peer, stream, grants| {
        Box::pin(crate::transfer::serve(node, peer, stream, grants))
    });
    services.spawn(gate::serve(
        node.clone(),
        protocol::TRANSFER,
        Some(transfer_service),
    ));
    let session_service: gate::Service = Arc::new(|node, peer, stream, grants| {
        Box::pin(crate::session::serve(node, peer, stream, grants))
    });
    services.spawn(gate::serve(
        node.clone(),
        protocol::SESSION,
        Some(session_service),
    ));
    services.spawn(keeper::run(node.clone()));
    services.spawn(sync::run_pushes(node.clone(), push_queue));
    services.spawn(crate::inbox::deliver(node.clone()));

    let socket = home.socket();
    let listener = bind_socket(&socket)?;
    on_start(&Started {
        identity: node.identity(),
        socket: socket.clone(),
    });
    serve(listener, Arc::new(api::Api(node.clone())), shutdown).await;

    tracing::info!("shutting down");
    node.sessions.end_all().await;
    services.shutdown().await;
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

/// A running node's shared state.
pub struct Node {
    pub(crate) mesh: Mesh,
    pub(crate) name: String,
    pub(crate) home: Home,
    pub(crate) started: std::time::Instant,
    pub(crate) trust: Trust,
    /// What members may do here unless the trust store says otherwise.
    pub(crate) defaults: Caps,
    pub(crate) audit: Audit,
    pub(crate) invitations: Invitations,
    pub(crate) pair_attempts: RateLimit,
    /// The exec policy from the config, before per-peer overrides.
    pub(crate) exec_policy: crate::exec::policy::Policy,
    pub(crate) running: crate::exec::Running,
    /// The file roots from the config, before per-peer overrides.
    pub(crate) files_policy: crate::transfer::policy::Policy,
    /// The Loopsy homes no copy reaches, this node's own among them.
    pub(crate) homes: crate::transfer::homes::Homes,
    /// The sessions this device hosts.
    pub(crate) sessions: Arc<crate::session::Sessions>,
    /// The shared context, replicated.
    pub(crate) ctx: crate::replica::Store,
    /// Every device's sessions, replicated; each host writes its own.
    pub(crate) registry: crate::replica::Store,
    /// Messages in transit and their acknowledgements, replicated.
    pub(crate) messages: crate::replica::Store,
    pub(crate) inbox: crate::inbox::Inbox,
    /// Changes on their way to the push task, which sends them to the members.
    pub(crate) pushes: sync::Pushes,
}

impl Node {
    fn identity(&self) -> control::Identity {
        control::Identity {
            peer_id: self.mesh.peer_id().to_base58(),
            name: self.name.clone(),
        }
    }

    /// A member's name, for logs.
    pub(crate) fn peer_name(&self, peer: &PeerId) -> Option<String> {
        self.trust.member(peer).map(|m| m.name)
    }

    pub(crate) fn default_grants(&self) -> Caps {
        self.defaults.clone()
    }

    /// The addresses to give other devices: every address it listens on that another
    /// device could dial, most useful first (LAN and public before loopback).
    pub(crate) async fn advertised_addrs(&self) -> Vec<Multiaddr> {
        let Ok(status) = self.mesh.status().await else {
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

    /// This device's hello for a pairing: its name, what it grants, where to reach it.
    pub(crate) async fn hello(&self, grants: &Caps) -> Hello {
        pair::hello(&self.name, grants, &self.advertised_addrs().await)
    }

    /// Spreads new member records to the connected members, but `except`.
    pub(crate) fn spread_members(self: &Arc<Self>, records: Vec<Record>, except: Option<PeerId>) {
        let encoded = records.iter().map(sync::encode_record).collect();
        sync::push(self, sync::MEMBERS, encoded, except);
    }

    /// A replicated collection by name.
    pub(crate) fn collection(&self, name: &str) -> Option<&dyn Collection> {
        match name {
            sync::MEMBERS => Some(&self.trust),
            sync::CTX => Some(&self.ctx),
            sync::SESSIONS => Some(&self.registry),
            sync::MESSAGES => Some(&self.messages),
            _ => None,
        }
    }

    pub(crate) fn collection_names(&self) -> [&'static str; 4] {
        [sync::MEMBERS, sync::SESSIONS, sync::CTX, sync::MESSAGES]
    }

    /// Members with a connection now.
    pub(crate) async fn connected_members(&self) -> Vec<PeerId> {
        self.mesh
            .peers()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.is_connected() && self.trust.is_member(&p.peer_id))
            .map(|p| p.peer_id)
            .collect()
    }
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
