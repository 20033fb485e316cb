//! The libp2p side of a Loopsy node.
//!
//! [`Mesh::start`] builds the swarm (TCP with TLS or Noise, QUIC, WebSocket for browsers,
//! Yamux, identify, ping, mDNS, the relay client, DCUtR hole punching, AutoNAT, and
//! libp2p-stream for the application protocols, under limits on strangers' connections
//! that spare members) and
//! hands it to one task, the event loop, which alone touches it. The returned [`Mesh`] is
//! a cheap, cloneable handle: it asks the loop for state over a bounded channel, and opens
//! or accepts application streams through libp2p-stream's control without going through
//! the loop at all.

mod addr;
mod agent;
mod alive;
mod behaviour;
pub mod copies;
mod event_loop;
pub mod framed;
pub mod identity;
mod keep;
mod limits;
pub mod muxer;
pub mod netcheck;
pub mod peers;
pub mod portmap;
pub mod report;
mod streams;
pub mod tls;
pub mod web;

use std::{collections::HashSet, time::Duration};

pub use addr::{is_loopback, is_relayed};
pub use agent::{MAX_NAME_LEN, is_deceptive, sanitize_name};
pub use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol, identity::Keypair, multiaddr};
pub use libp2p_stream::{IncomingStreams, OpenStreamError};
pub use peers::{FORGET_AFTER, Link, PeerState, matching};

use libp2p::{SwarmBuilder, multiaddr::Protocol, noise, tcp};
use tokio::{
    sync::{broadcast, mpsc, oneshot},
    task::JoinHandle,
};

use crate::{
    behaviour::Behaviour,
    event_loop::{Command, EventLoop},
};

/// Commands waiting for the event loop; callers wait when it is full.
const COMMAND_QUEUE: usize = 64;

/// How long a connection that [`keep`] lets go stays up after its last stream ends. A
/// peer's best connections are kept while its pings answer: they are what `loopsy peers`
/// reports as online.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// What a mesh node needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub keypair: Keypair,
    /// The device name announced to peers.
    pub name: String,
    /// Addresses to listen on. One with a fixed port that is taken falls back to any free
    /// port, so several nodes can share a machine.
    pub listen: Vec<Multiaddr>,
    /// Find and announce devices on the LAN by mDNS.
    pub mdns: bool,
    /// Relays to hold a reservation on (each address ends in `/p2p/<relay id>`), so that
    /// devices on other networks reach this one through them.
    pub relays: Vec<Multiaddr>,
    /// What a WebSocket listen address (`/tcp/N/ws`) also serves to plain HTTP requests:
    /// the web app (see [`web`]).
    pub site: Option<web::Site>,
    /// Ask the home router to map a port to this node (UPnP IGD).
    pub upnp: bool,
    /// Ask the default gateway to map a port to this node by PCP, or NAT-PMP where it
    /// speaks only that.
    pub natpmp: bool,
}

/// The mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot set up the network transports: {0}")]
    Transport(String),
    #[error("cannot start mDNS discovery: {0}")]
    Mdns(String),
    #[error("cannot listen on any address: {0}")]
    Listen(String),
}

/// The event loop is gone (the node is shutting down).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the mesh has stopped")]
pub struct Stopped;

/// Something that happened on the network, for whoever listens ([`Mesh::events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshEvent {
    /// A connection to the peer is up (the first, or another).
    Connected { peer: PeerId },
    /// The last connection to the peer closed.
    Disconnected { peer: PeerId },
    /// mDNS announced the peer on the LAN (it is being dialled).
    Discovered { peer: PeerId },
}

/// Events buffered per listener; one that falls further behind misses the oldest.
const EVENT_BUFFER: usize = 256;

/// This node as the network sees it.
#[derive(Debug, Clone)]
pub struct NetworkStatus {
    pub peer_id: PeerId,
    pub listen_addrs: Vec<Multiaddr>,
    pub external_addrs: Vec<Multiaddr>,
    pub relayed_addrs: Vec<Multiaddr>,
    pub nat: Nat,
    /// The relays that hold a reservation for this node.
    pub reservations: Vec<Multiaddr>,
}

/// Whether other devices can dial this one, as AutoNAT probes found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    Unknown,
    Public,
    Private,
}

/// A handle to a running mesh node.
#[derive(Clone)]
pub struct Mesh {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    streams: libp2p_stream::Control,
    events: broadcast::Sender<MeshEvent>,
}

/// The running event loop; dropping it stops the node.
pub struct MeshTask {
    handle: JoinHandle<()>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl MeshTask {
    /// Stops the event loop, closing every connection, and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.handle).await;
    }
}

impl Drop for MeshTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl Mesh {
    /// Builds the swarm, starts listening, and spawns the event loop on the current runtime.
    pub fn start(config: Config) -> Result<(Mesh, MeshTask), StartError> {
        let name = sanitize_name(&config.name);
        let mdns = config.mdns;
        let site = config.site;
        // The configured relays are never counted as strangers.
        let relay_ids: Vec<PeerId> = config.relays.iter().filter_map(addr::peer_id).collect();
        let mut swarm = SwarmBuilder::with_existing_identity(config.keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                (tls::Tls::new, noise::Config::new),
                muxer::Config::default,
            )
            .map_err(|e| StartError::Transport(e.to_string()))?
            .with_quic()
            // For browsers: WebSocket listen addresses (`/tcp/N/ws`), with the site beside.
            .with_other_transport(|key| {
                web::transport(key, site, None)
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            })
            .map_err(|e| StartError::Transport(e.to_string()))?
            // Names in addresses (/dns4/relay.example.net/...) resolve through the
            // system's resolver, /etc/hosts first.
            .with_dns()
            .map_err(|e| {
                StartError::Transport(format!("cannot read the system's DNS settings: {e}"))
            })?
            // TLS inside a relayed circuit too (see `tls`): its bytes are sealed twice on each
            // node and once more in the relay, and AES-GCM costs a sixth of ChaCha20's.
            .with_relay_client((tls::Tls::new, noise::Config::new), muxer::Config::default)
            .map_err(|e| StartError::Transport(e.to_string()))?
            .with_behaviour(|key, relay| {
                Behaviour::new(key, &name, mdns, relay, relay_ids)
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            })
            .map_err(|e| StartError::Mdns(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
            .build();

        // Probe every fixed TCP port before listening on any, since our own IPv4 listener
        // would make a dual-stack probe of the same port fail.
        let listen: Vec<Multiaddr> = config
            .listen
            .into_iter()
            .map(|addr| match with_any_port(&addr) {
                Some(fallback) if tcp_port_taken(&addr) => {
                    tracing::warn!(%addr, %fallback, "port taken; listening on another");
                    fallback
                }
                _ => addr,
            })
            .collect();
        let mut listening = 0;
        let mut last_error = String::from("no listen address configured");
        for addr in listen {
            match swarm.listen_on(addr.clone()) {
                Ok(_) => listening += 1,
                Err(error) => match with_any_port(&addr) {
                    Some(fallback) if swarm.listen_on(fallback.clone()).is_ok() => {
                        let error = report::Chain(&error);
                        tracing::warn!(%addr, %fallback, %error, "cannot listen; using another port");
                        listening += 1;
                    }
                    _ => {
                        let error = report::Chain(&error);
                        tracing::warn!(%addr, %error, "cannot listen");
                        last_error = format!("{addr}: {error}");
                    }
                },
            }
        }
        if listening == 0 {
            return Err(StartError::Listen(last_error));
        }

        // Before the first poll, so that every listen address is mapped.
        if config.upnp {
            swarm.behaviour_mut().portmap.enable_upnp();
        }
        if config.natpmp {
            swarm.behaviour_mut().portmap.enable_pmp();
        }
        let peer_id = *swarm.local_peer_id();
        let streams = swarm.behaviour().streams.new_control();
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let event_loop = EventLoop::new(
            swarm,
            commands_rx,
            shutdown_rx,
            events.clone(),
            config.relays,
            crate::netcheck::Asking {
                upnp: config.upnp,
                natpmp: config.natpmp,
            },
        );
        let handle = tokio::spawn(event_loop.run());
        let mesh = Mesh {
            peer_id,
            commands: commands_tx,
            streams,
            events,
        };
        let task = MeshTask {
            handle,
            shutdown: Some(shutdown_tx),
        };
        Ok((mesh, task))
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Listen, external and relayed addresses.
    pub async fn status(&self) -> Result<NetworkStatus, Stopped> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// What this device's network allows, as the node has seen it (`loopsy netcheck`).
    pub async fn netcheck(&self) -> Result<netcheck::NetReport, Stopped> {
        self.ask(|reply| Command::NetCheck { reply }).await
    }

    /// Every peer this node knows of.
    pub async fn peers(&self) -> Result<Vec<PeerState>, Stopped> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// Starts a connection to `addr`; it shows in [`Mesh::peers`] once established.
    pub async fn dial(&self, addr: Multiaddr) -> Result<Result<(), String>, Stopped> {
        self.ask(|reply| Command::Dial { addr, reply }).await
    }

    /// Connects to `peer` (through `addrs` and any address already known) unless connected.
    pub async fn connect(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> Result<Result<(), String>, Stopped> {
        self.ask(|reply| Command::Connect { peer, addrs, reply })
            .await
    }

    /// Closes every connection to `peer`; answers, once they are closed, how many there
    /// were.
    pub async fn disconnect(&self, peer: PeerId) -> Result<usize, Stopped> {
        self.ask(|reply| Command::Disconnect { peer, reply }).await
    }

    /// Drops `peer` from [`Mesh::peers`] and closes its connections: whether it was
    /// listed. It shows again if it connects or is announced again.
    pub async fn forget(&self, peer: PeerId) -> Result<bool, Stopped> {
        self.ask(|reply| Command::Forget { peer, reply }).await
    }

    /// Tells the mesh which peers are members: they are always let in, whatever the
    /// number of strangers' connections (`limits` has the bounds).
    pub async fn set_members(&self, members: HashSet<PeerId>) -> Result<(), Stopped> {
        self.ask(|reply| Command::SetMembers { members, reply })
            .await
    }

    /// Replaces the relays this node holds a reservation on (a reloaded config): each new
    /// one is asked for a reservation, and one no longer listed is let go.
    pub async fn set_relays(&self, relays: Vec<Multiaddr>) -> Result<(), Stopped> {
        self.ask(|reply| Command::SetRelays { relays, reply }).await
    }

    /// Network events from now on.
    pub fn events(&self) -> broadcast::Receiver<MeshEvent> {
        self.events.subscribe()
    }

    /// Opens a stream for `protocol` to `peer`, connecting first if needed.
    pub async fn open_stream(
        &self,
        peer: PeerId,
        protocol: &'static str,
    ) -> Result<Stream, OpenStreamError> {
        self.streams
            .clone()
            .open_stream(peer, StreamProtocol::new(protocol))
            .await
    }

    /// Starts accepting streams for `protocol`; `None` when something already accepts it.
    pub fn accept(&self, protocol: &'static str) -> Option<IncomingStreams> {
        self.streams
            .clone()
            .accept(StreamProtocol::new(protocol))
            .ok()
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }
}

/// Whether a fixed TCP port in `addr` is already bound. libp2p-tcp listens with
/// SO_REUSEPORT (hole punching dials from the listen port), so two nodes of one user could
/// otherwise both bind it and the kernel would split incoming connections between them.
fn tcp_port_taken(addr: &Multiaddr) -> bool {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(p) if p != 0 => port = Some(p),
            _ => {}
        }
    }
    match (ip, port) {
        (Some(ip), Some(port)) => matches!(
            std::net::TcpListener::bind((ip, port)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse
        ),
        _ => false,
    }
}

/// The same address with port 0 in place of a fixed TCP or UDP port.
fn with_any_port(addr: &Multiaddr) -> Option<Multiaddr> {
    let mut changed = false;
    let out = addr
        .iter()
        .map(|p| match p {
            Protocol::Tcp(port) if port != 0 => {
                changed = true;
                Protocol::Tcp(0)
            }
            Protocol::Udp(port) if port != 0 => {
                changed = true;
                Protocol::Udp(0)
            }
            other => other,
        })
        .collect();
    changed.then_some(out)
}
