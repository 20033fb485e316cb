//! Running a node: the composition root. It takes the home's lock, loads identity, config
//! and trust, starts the mesh, builds every component with the handles it needs, registers
//! the services with the gate, serves the control socket until told to stop, and stops
//! everything in order. Nothing else in the daemon imports it.

mod reload;

use std::{fs, io, os::unix::fs::PermissionsExt, path::PathBuf, sync::Arc};

use loopsy_mesh::{Mesh, Multiaddr, identity};
use loopsy_wire::{control, protocol};
use tokio::{net::UnixListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    Home,
    audit::Audit,
    caps::{self, Capability},
    config::{Config, ConfigError},
    control::{api::Api, serve},
    ctx::Ctx,
    dial::Dialer,
    exec::Exec,
    gate::Gate,
    inbox::{Inbox, Messages},
    keeper::Keeper,
    lock::{LockError, NodeLock},
    pair::Pairing,
    replica::Store,
    service::{Service, Tasks},
    session::{SessionService, Sessions, client::SessionClient, registry::Registry},
    sync::{self, Collection, Engine},
    transfer::{Transfer, homes::Homes},
    trust::{Trust, TrustError},
};

/// The session registry's bounds: sessions of all devices, and bytes per session.
const REGISTRY_LIMITS: crate::replica::Limits = crate::replica::Limits {
    records: 4096,
    value: 16 * 1024,
    per_author: 512,
};
/// Messages in transit (and acknowledgements) kept for the mesh.
const MESSAGE_LIMITS: crate::replica::Limits = crate::replica::Limits {
    records: 10_000,
    value: 20 * 1024,
    per_author: 2_500,
};
/// The shared context's bounds: keys, and bytes per value.
const CTX_LIMITS: crate::replica::Limits = crate::replica::Limits {
    records: 10_000,
    value: 64 * 1024,
    per_author: 5_000,
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
    Relay(#[from] crate::config::BadRelay),
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
    let on_disk = config.clone();
    let relays_from_flags = !overrides.relays.is_empty();
    if let Some(name) = overrides.name {
        config.name = name;
    }
    if !overrides.listen.is_empty() {
        config.listen = overrides.listen;
    }
    if !overrides.relays.is_empty() {
        crate::config::check_relays(&overrides.relays)?;
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

    let trust = Arc::new(trust);
    let audit = Arc::new(Audit::new(home.audit()));
    let ctx = Arc::new(Store::load(
        sync::CTX,
        (Some(Capability::Ctx), Some(Capability::Ctx)),
        home.ctx(),
        keypair.clone(),
        CTX_LIMITS,
        |_, _| true,
    )?);
    let registry = Arc::new(Store::load(
        sync::SESSIONS,
        (None, Some(Capability::Sessions)),
        home.registry(),
        keypair.clone(),
        REGISTRY_LIMITS,
        crate::session::registry::written_by_host,
    )?);
    let messages = Arc::new(Store::load(
        sync::MESSAGES,
        // Carried by every member: sealed to their recipients, they tell carriers little.
        (Some(Capability::Msg), None),
        home.messages(),
        keypair.clone(),
        MESSAGE_LIMITS,
        // A message is its sender's to write, an acknowledgement its recipient's.
        crate::inbox::written_by_entitled,
    )?);
    let events = Arc::new(Store::load(
        crate::attention::EVENTS,
        // Like the registry: an event names a session and what its program printed.
        (None, Some(Capability::Sessions)),
        home.events(),
        keypair.clone(),
        crate::attention::LIMITS,
        crate::attention::written_by_host,
    )?);
    let inbox = Inbox::load(home.inbox(), keypair.clone())?;
    let (pushes, push_queue) = sync::pushes();
    let ports = crate::ports::Ports::load(home.ports());
    let (mesh, mesh_task) = Mesh::start(loopsy_mesh::Config {
        keypair,
        name: name.clone(),
        listen: ports.pin(&config.listen),
        mdns: config.mdns,
        relays: config.relays.clone(),
        site: Some(loopsy_web::SITE),
        upnp: config.upnp,
        natpmp: config.natpmp,
    })?;

    // The components, each given the few handles it needs.
    let collections: Vec<Arc<dyn Collection>> = vec![
        trust.clone(),
        registry.clone(),
        ctx.clone(),
        messages.clone(),
        events.clone(),
    ];
    let engine = Arc::new(Engine::new(
        trust.clone(),
        audit.clone(),
        collections,
        pushes.clone(),
    ));
    let (alerts, raised) = crate::session::attention::Alerts::channel();
    let sessions = Arc::new(
        Sessions::load(home.sessions())
            .with_alerts(alerts)
            .with_record_max(config.sessions.max_bytes()),
    );
    let registry = Arc::new(Registry::new(
        registry,
        sessions.clone(),
        name.clone(),
        trust.clone(),
        mesh.clone(),
        pushes.clone(),
    ));
    // Shared with the reload on SIGHUP.
    let exec_policy = crate::live::Live::new(config.exec.clone());
    let files_policy = crate::live::Live::new(config.files.clone());
    let session = Arc::new(SessionService::new(
        sessions.clone(),
        exec_policy.clone(),
        registry.wake(),
    ));
    let events = Arc::new(crate::attention::Events::new(
        events,
        name.clone(),
        trust.clone(),
        pushes.clone(),
        sessions.clone(),
        registry.wake(),
    ));
    let homes = Homes::new(home.dir());
    let exec = Arc::new(Exec::new(exec_policy.clone()));
    let transfer = Arc::new(Transfer::new(files_policy.clone(), homes.clone()));
    let pairing = Arc::new(Pairing::new(
        name.clone(),
        defaults,
        trust.clone(),
        audit.clone(),
        pushes.clone(),
        Arc::new(mesh.clone()),
    ));
    let messages = Arc::new(Messages::new(
        messages,
        inbox,
        trust.clone(),
        pushes.clone(),
    ));
    let gate = Arc::new(Gate::new(mesh.clone(), trust.clone(), audit.clone()));

    // The services, and the tasks that keep the mesh and its state together.
    let stop = CancellationToken::new();
    let mut services = JoinSet::new();
    services.spawn(pairing.clone().serve(mesh.clone()));
    let served: [(&'static str, Arc<dyn Service>); 4] = [
        (protocol::SYNC, engine.clone()),
        (protocol::EXEC, exec),
        (protocol::TRANSFER, transfer),
        (protocol::SESSION, session.clone()),
    ];
    for (protocol, service) in served {
        services.spawn(gate.clone().serve(protocol, Some(service), stop.clone()));
    }
    let keeper = Keeper {
        mesh: mesh.clone(),
        trust: trust.clone(),
        audit: audit.clone(),
        engine: engine.clone(),
        registry: registry.clone(),
        pushes: pushes.clone(),
        name: name.clone(),
    };
    services.spawn(keeper.run());
    services.spawn(engine.run_pushes(mesh.clone(), push_queue));
    services.spawn(messages.clone().deliver());
    services.spawn(registry.clone().run());
    services.spawn(ports.keep(mesh.clone(), config.listen.clone()));
    let reloader = reload::Reloader {
        home: home.clone(),
        on_disk,
        trust: trust.clone(),
        exec: exec_policy,
        files: files_policy,
        mesh: mesh.clone(),
        relays_from_flags,
    };
    services.spawn(reloader.run(stop.clone()));
    services.spawn(events.clone().run(raised));
    services.spawn(crate::attention::deliver::run(
        events.clone(),
        config.notify.clone(),
    ));

    let identity = control::Identity {
        peer_id: mesh.peer_id().to_base58(),
        name: name.clone(),
    };
    let dialer = Dialer::new(mesh.clone(), trust.clone(), name.clone());
    let api = Arc::new(Api {
        identity: identity.clone(),
        mesh: mesh.clone(),
        name: name.clone(),
        home: home.clone(),
        started: std::time::Instant::now(),
        trust: trust.clone(),
        audit,
        pushes: pushes.clone(),
        pairing,
        dialer: dialer.clone(),
        sessions: SessionClient::new(dialer, session, registry),
        ctx: Ctx::new(ctx, pushes, trust, name),
        messages,
        homes,
        tasks: Tasks::default(),
        events,
    });

    let socket = home.socket();
    let listener = bind_socket(&socket)?;
    on_start(&Started {
        identity,
        socket: socket.clone(),
    });
    serve(listener, api.clone(), shutdown).await;

    // Stopped in order: the programs, then what serves and keeps the mesh, then the mesh.
    tracing::info!("shutting down");
    sessions.end_all().await;
    stop.cancel();
    api.tasks.shutdown().await;
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
