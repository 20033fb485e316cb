//! Load for a relay, from plain libp2p peers in this process: devices that hold a
//! reservation and count the bytes sent to them ([`Reserved`]), and senders that reach one
//! of them through a circuit ([`Circuit`]). The relay's tests and its benchmark
//! (`examples/relay_load.rs`) use them against a real `loopsy-relay` process.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder,
    multiaddr::Protocol,
    noise, relay,
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp,
};
use loopsy_mesh::muxer;

/// The protocol a sender writes on and a reserved device reads (and drops) from.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/loopsy-relay-load/1");

/// How long a reservation or a circuit may take to come up.
const SETUP: Duration = Duration::from_secs(30);

#[derive(NetworkBehaviour)]
struct Client {
    relay: relay::client::Behaviour,
    stream: libp2p_stream::Behaviour,
}

fn client() -> anyhow::Result<Swarm<Client>> {
    Ok(SwarmBuilder::with_new_identity()
        .with_tokio()
        // Noise only, as a peer that predates the relay's TLS: the tests that drive these
        // clients (tests/tests/relay_limits.rs) keep that fallback working.
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            muxer::Config::default,
        )?
        .with_relay_client(noise::Config::new, muxer::Config::default)?
        .with_behaviour(|_, relay| Client {
            relay,
            stream: libp2p_stream::Behaviour::new(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build())
}

/// A task aborted when its owner is dropped.
struct Owned(tokio::task::JoinHandle<()>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Drives `swarm` for as long as the returned handle lives.
fn drive(mut swarm: Swarm<Client>) -> Owned {
    Owned(tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    }))
}

/// A device reachable through the relay; it reads and drops whatever a circuit sends it.
pub struct Reserved {
    pub peer_id: PeerId,
    received: Arc<AtomicU64>,
    _task: Owned,
}

impl Reserved {
    /// Reserves a slot on `relay` (its address with `/p2p/ID`); an error when the relay
    /// refuses (its limits) or does not answer.
    pub async fn start(relay: &Multiaddr) -> anyhow::Result<Self> {
        let mut swarm = client()?;
        let peer_id = *swarm.local_peer_id();
        let mut incoming = swarm
            .behaviour()
            .stream
            .new_control()
            .accept(PROTOCOL)
            .context("accept the load protocol")?;
        swarm.listen_on(relay.clone().with(Protocol::P2pCircuit))?;
        tokio::time::timeout(SETUP, async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::Behaviour(ClientEvent::Relay(
                        relay::client::Event::ReservationReqAccepted { .. },
                    )) => return Ok(()),
                    SwarmEvent::ListenerClosed { reason, .. } => {
                        anyhow::bail!("reservation refused: {reason:?}")
                    }
                    SwarmEvent::ListenerError { error, .. } => {
                        anyhow::bail!("reservation refused: {error}")
                    }
                    _ => {}
                }
            }
        })
        .await
        .context("no answer to the reservation")??;
        let received = Arc::new(AtomicU64::new(0));
        let counted = received.clone();
        let task = tokio::spawn(async move {
            let mut readers = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = swarm.select_next_some() => {}
                    Some((_, mut stream)) = incoming.next() => {
                        let counted = counted.clone();
                        readers.spawn(async move {
                            let mut buf = vec![0u8; 64 * 1024];
                            while let Ok(n) = stream.read(&mut buf).await {
                                if n == 0 {
                                    break;
                                }
                                counted.fetch_add(n as u64, Ordering::Relaxed);
                            }
                        });
                    }
                    Some(_) = readers.join_next(), if !readers.is_empty() => {}
                }
            }
        });
        Ok(Self {
            peer_id,
            received,
            _task: Owned(task),
        })
    }

    /// Bytes received through circuits so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// A connection through the relay to a reserved device, with one stream open on it.
pub struct Circuit {
    stream: libp2p::Stream,
    _task: Owned,
}

impl Circuit {
    /// Connects to `target` through `relay` (its address with `/p2p/ID`) and opens a stream.
    pub async fn open(relay: &Multiaddr, target: PeerId) -> anyhow::Result<Self> {
        let mut swarm = client()?;
        let mut control = swarm.behaviour().stream.new_control();
        let addr = relay
            .clone()
            .with(Protocol::P2pCircuit)
            .with(Protocol::P2p(target));
        swarm.dial(addr.clone())?;
        tokio::time::timeout(SETUP, async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == target => {
                        return Ok(());
                    }
                    SwarmEvent::OutgoingConnectionError {
                        peer_id: Some(peer),
                        error,
                        ..
                    } if peer == target => anyhow::bail!("no circuit to {target}: {error}"),
                    _ => {}
                }
            }
        })
        .await
        .with_context(|| format!("no circuit through {addr}"))??;
        let task = drive(swarm);
        let stream = tokio::time::timeout(SETUP, control.open_stream(target, PROTOCOL))
            .await
            .context("no stream through the circuit")?
            .map_err(|e| anyhow::anyhow!("open a stream through the circuit: {e}"))?;
        Ok(Self {
            stream,
            _task: task,
        })
    }

    /// Sends `bytes` and waits until they have left this end.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Sends as fast as the path allows until `until`; returns the bytes sent.
    pub async fn send_until(&mut self, until: Instant) -> std::io::Result<u64> {
        let chunk = vec![0x5au8; 64 * 1024];
        let mut sent = 0u64;
        while Instant::now() < until {
            self.stream.write_all(&chunk).await?;
            sent += chunk.len() as u64;
        }
        self.stream.flush().await?;
        Ok(sent)
    }
}
