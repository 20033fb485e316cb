//! The PCP / NAT-PMP client: one task that maps this node's listen ports on the default
//! gateway, renews the mappings, and says what changed.
//!
//! The task reads the gateway from the routing table and asks it by PCP first (a MAP
//! request); on UNSUPP_VERSION or silence it asks by NAT-PMP (the external address, then
//! a map request). Each private IPv4 listen port on the gateway's LAN is mapped for
//! [`DEFAULT_LIFETIME`] and renewed at half the lifetime granted. A renewal that goes
//! unanswered withdraws every mapped address; a gateway whose epoch went back (it
//! restarted, and forgot) has every mapping asked again at once. On release each mapping
//! is deleted (lifetime 0). Answers count only from the gateway's port 5351, and only
//! when they match what was asked (PCP's nonce, the opcode, the protocol and port).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    task::{Context, Poll},
    time::Duration,
};

use libp2p::{Multiaddr, multiaddr::Protocol as Part};
use tokio::{
    net::UdpSocket,
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};

use super::{Transport, gateway, natpmp, pcp};

/// The gateway's PCP and NAT-PMP port.
pub const SERVER_PORT: u16 = 5351;
/// The lifetime asked for a mapping: RFC 6886's recommendation.
pub const DEFAULT_LIFETIME: u32 = 7200;
/// Asks another lifetime, in seconds (for tests of a mapping that lapses).
pub const LIFETIME_VAR: &str = "LOOPSY_PORT_MAPPING_LIFETIME";
/// How long to wait for an answer after each try of one request (4 tries in 3.75 s).
const TRIES: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];
/// A deletion on release is tried once.
const RELEASE_TRY: [Duration; 1] = [Duration::from_millis(500)];
/// After a failure the gateway is asked again after this, doubling up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(60);
const MAX_RETRY: Duration = Duration::from_secs(15 * 60);
/// Events waiting for the behaviour.
const EVENTS: usize = 32;

/// Which protocol the gateway answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Pcp,
    NatPmp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Pcp => "PCP",
            Protocol::NatPmp => "NAT-PMP",
        })
    }
}

/// What came of asking the gateway by one protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    NoAnswer,
    /// It answered that it speaks another version.
    Unsupported,
    /// It answered with an error (the log says which).
    Refused,
    /// It mapped a port, but its own external address is private.
    NotPublic,
    Mapped,
}

/// What the client tells the behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The routing table has no default IPv4 gateway.
    NoGateway,
    Asked {
        protocol: Protocol,
        outcome: Outcome,
    },
    /// `external` reaches the listen address `local` now.
    Mapped {
        protocol: Protocol,
        local: Multiaddr,
        external: Multiaddr,
    },
    /// The mapping lapsed, or was deleted.
    Expired {
        protocol: Protocol,
        local: Multiaddr,
        external: Multiaddr,
    },
}

/// The handle to the client task: aborts it when dropped ([`Client::release`] first
/// deletes the mappings).
pub struct Client {
    listen: watch::Sender<Vec<Multiaddr>>,
    stop: Option<oneshot::Sender<()>>,
    events: mpsc::Receiver<Event>,
    task: Option<JoinHandle<()>>,
}

impl Client {
    /// Starts the task on the current tokio runtime.
    pub fn start() -> Self {
        let lifetime = std::env::var(LIFETIME_VAR)
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|secs| *secs >= 2)
            .unwrap_or(DEFAULT_LIFETIME);
        let (listen, listen_rx) = watch::channel(Vec::new());
        let (stop, stop_rx) = oneshot::channel();
        let (events_tx, events) = mpsc::channel(EVENTS);
        let task = Task {
            listen: listen_rx,
            events: events_tx,
            lifetime,
            gateway: None,
            no_gateway_told: false,
            mappings: HashMap::new(),
            outcomes: HashMap::new(),
            retry_at: None,
            backoff: FIRST_RETRY,
        };
        Self {
            listen,
            stop: Some(stop),
            events,
            task: Some(tokio::spawn(task.run(stop_rx))),
        }
    }

    /// The node's listen addresses now; those on the gateway's LAN are mapped.
    pub fn set_listen(&self, addrs: Vec<Multiaddr>) {
        self.listen.send_replace(addrs);
    }

    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.events.poll_recv(cx)
    }

    /// Tells the task to delete the mappings on the gateway and stop; the returned task
    /// ends when it has.
    pub fn release(&mut self) -> Option<JoinHandle<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

type Key = (Transport, u16);

/// The gateway being asked, and what it said.
struct Gateway {
    ip: Ipv4Addr,
    socket: UdpSocket,
    /// This device's address towards it.
    local: Ipv4Addr,
    speaks: Option<Protocol>,
    /// Its external address, by NAT-PMP.
    external_ip: Option<Ipv4Addr>,
    /// Its last epoch and when it was told.
    epoch: Option<(u32, Instant)>,
}

struct Mapping {
    local: Multiaddr,
    nonce: pcp::Nonce,
    /// What the gateway granted last, to ask for the same again.
    granted: Option<SocketAddrV4>,
    announced: Option<(Protocol, Multiaddr)>,
    due: Instant,
}

/// A mapping granted.
struct Granted {
    protocol: Protocol,
    external: SocketAddrV4,
    lifetime: u32,
    epoch: u32,
}

struct Task {
    listen: watch::Receiver<Vec<Multiaddr>>,
    events: mpsc::Sender<Event>,
    lifetime: u32,
    gateway: Option<Gateway>,
    no_gateway_told: bool,
    mappings: HashMap<Key, Mapping>,
    /// The last outcome told per protocol, so that each change is told once.
    outcomes: HashMap<Protocol, Outcome>,
    /// After a failure: when to ask again.
    retry_at: Option<Instant>,
    /// The wait after the next failure.
    backoff: Duration,
}

impl Task {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut work_now = true;
        loop {
            let due = if work_now {
                Some(Instant::now())
            } else {
                self.next_due()
            };
            let sleep = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stop => break,
                changed = self.listen.changed() => match changed {
                    Ok(()) => work_now = true,
                    Err(_) => break,
                },
                _ = sleep => {
                    work_now = false;
                    self.work().await;
                }
            }
        }
        self.release().await;
    }

    fn next_due(&self) -> Option<Instant> {
        if let Some(at) = self.retry_at {
            return Some(at);
        }
        self.mappings.values().map(|m| m.due).min()
    }

    /// Finds the gateway, brings the mappings in line with the listen addresses, and asks
    /// for those that are due.
    async fn work(&mut self) {
        let listen = self.listen.borrow().clone();
        let any_mappable = listen.iter().any(|a| mappable(a).is_some());
        if !any_mappable && self.mappings.is_empty() {
            return;
        }
        let now = Instant::now();
        if self.retry_at.is_some_and(|at| at > now) {
            return;
        }
        let retrying = self.retry_at.take().is_some();
        if !self.find_gateway().await {
            return;
        }
        let Some(local) = self.gateway.as_ref().map(|g| g.local) else {
            return;
        };
        let wanted: HashMap<Key, Multiaddr> = listen
            .iter()
            .filter_map(|a| {
                mappable(a)
                    .filter(|(ip, _)| *ip == local)
                    .map(|(_, key)| (key, a.clone()))
            })
            .collect();
        let gone: Vec<Key> = self
            .mappings
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            if let Some(mapping) = self.mappings.remove(&key) {
                self.delete(key, &mapping, &TRIES[..1]).await;
                self.withdraw(mapping).await;
            }
        }
        for (key, local) in wanted {
            self.mappings.entry(key).or_insert_with(|| Mapping {
                local,
                nonce: nonce(),
                granted: None,
                announced: None,
                due: now,
            });
        }
        let due: Vec<Key> = self
            .mappings
            .iter()
            .filter(|(_, m)| m.due <= now || retrying)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if !self.map(key).await {
                break;
            }
        }
    }

    /// Reads the default gateway; a new one starts afresh. False when there is none.
    async fn find_gateway(&mut self) -> bool {
        let found = tokio::task::spawn_blocking(gateway::default_ipv4)
            .await
            .ok()
            .flatten();
        if found.is_some() && found == self.gateway.as_ref().map(|g| g.ip) {
            return true;
        }
        self.forget_gateway().await;
        let Some(ip) = found else {
            if !self.no_gateway_told {
                self.no_gateway_told = true;
                self.tell(Event::NoGateway).await;
            }
            self.failed();
            return false;
        };
        self.no_gateway_told = false;
        match connect(ip).await {
            Ok((socket, local)) => {
                tracing::debug!(gateway = %ip, %local, "asking the gateway for port mappings (PCP, NAT-PMP)");
                self.gateway = Some(Gateway {
                    ip,
                    socket,
                    local,
                    speaks: None,
                    external_ip: None,
                    epoch: None,
                });
                true
            }
            Err(error) => {
                tracing::debug!(gateway = %ip, %error, "cannot reach the gateway");
                self.failed();
                false
            }
        }
    }

    /// Withdraws every mapped address (the gateway changed or went silent).
    async fn forget_gateway(&mut self) {
        self.gateway = None;
        let keys: Vec<Key> = self.mappings.keys().copied().collect();
        for key in keys {
            if let Some(mapping) = self.mappings.get_mut(&key) {
                mapping.granted = None;
                let announced = mapping.announced.take();
                if let Some((protocol, external)) = announced {
                    let local = mapping.local.clone();
                    self.tell(Event::Expired {
                        protocol,
                        local,
                        external,
                    })
                    .await;
                }
            }
        }
    }

    /// Asks again later, waiting longer after each failure in a row.
    fn failed(&mut self) {
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_RETRY);
    }

    /// Asks for (or renews) one mapping. False when the gateway did not answer, and the
    /// others need not be asked now.
    async fn map(&mut self, key: Key) -> bool {
        let Some(gateway) = &mut self.gateway else {
            return false;
        };
        let Some(mapping) = self.mappings.get(&key) else {
            return true;
        };
        let lifetime = self.lifetime;
        let (nonce, granted) = (mapping.nonce, mapping.granted);
        let mut told = Vec::new();
        let result = match gateway.speaks {
            Some(Protocol::Pcp) => map_pcp(gateway, key, nonce, granted, lifetime).await,
            Some(Protocol::NatPmp) => map_natpmp(gateway, key, granted, lifetime).await,
            None => match map_pcp(gateway, key, nonce, granted, lifetime).await {
                Err((_, outcome @ (Outcome::Unsupported | Outcome::NoAnswer))) => {
                    told.push((Protocol::Pcp, outcome));
                    map_natpmp(gateway, key, granted, lifetime).await
                }
                other => other,
            },
        };
        for (protocol, outcome) in told {
            self.tell_outcome(protocol, outcome).await;
        }
        match result {
            Ok(granted) => {
                self.granted(key, granted).await;
                true
            }
            Err((protocol, Outcome::NoAnswer)) => {
                tracing::info!(
                    "the gateway stopped answering {protocol}: its port mappings are withdrawn"
                );
                self.tell_outcome(protocol, Outcome::NoAnswer).await;
                self.forget_gateway().await;
                self.failed();
                false
            }
            Err((protocol, outcome)) => {
                self.tell_outcome(protocol, outcome).await;
                if let Some(gateway) = &mut self.gateway {
                    gateway.speaks = Some(protocol);
                }
                if let Some(mapping) = self.mappings.get_mut(&key) {
                    mapping.granted = None;
                    let announced = mapping.announced.take();
                    let local = mapping.local.clone();
                    if let Some((protocol, external)) = announced {
                        self.tell(Event::Expired {
                            protocol,
                            local,
                            external,
                        })
                        .await;
                    }
                }
                self.failed();
                true
            }
        }
    }

    async fn granted(&mut self, key: Key, granted: Granted) {
        let Some(gateway) = &mut self.gateway else {
            return;
        };
        gateway.speaks = Some(granted.protocol);
        self.backoff = FIRST_RETRY;
        let now = Instant::now();
        let lost = gateway
            .epoch
            .is_some_and(|(epoch, at)| epoch_lost(epoch, at, granted.epoch, now));
        gateway.epoch = Some((granted.epoch, now));
        if lost {
            tracing::info!(protocol = %granted.protocol, "the gateway lost its mappings (its epoch went back): asking again");
            gateway.external_ip = None;
            for (other, mapping) in &mut self.mappings {
                if *other != key {
                    mapping.due = now;
                }
            }
        }
        let public = is_global(*granted.external.ip());
        self.tell_outcome(
            granted.protocol,
            if public {
                Outcome::Mapped
            } else {
                Outcome::NotPublic
            },
        )
        .await;
        let Some(mapping) = self.mappings.get_mut(&key) else {
            return;
        };
        mapping.granted = Some(granted.external);
        mapping.due = now + renew_after(granted.lifetime);
        let external = public.then(|| external_addr(&mapping.local, granted.external));
        let before = mapping.announced.as_ref().map(|(_, a)| a.clone());
        if external == before {
            return;
        }
        let local = mapping.local.clone();
        let old = mapping.announced.take();
        mapping.announced = external.clone().map(|e| (granted.protocol, e));
        if let Some((protocol, external)) = old {
            self.tell(Event::Expired {
                protocol,
                local: local.clone(),
                external,
            })
            .await;
        }
        if let Some(external) = external {
            tracing::info!(address = %external, protocol = %granted.protocol, "the router mapped a port");
            self.tell(Event::Mapped {
                protocol: granted.protocol,
                local,
                external,
            })
            .await;
        } else {
            tracing::info!(protocol = %granted.protocol, "the router's own address is private: its mapping is not used");
        }
    }

    /// Deletes one mapping on the gateway (lifetime 0), trying as `tries` says.
    async fn delete(&self, key: Key, mapping: &Mapping, tries: &[Duration]) {
        let Some(gateway) = &self.gateway else {
            return;
        };
        let Some((protocol, _)) = &mapping.announced else {
            return;
        };
        let (transport, port) = key;
        let deleted = match protocol {
            Protocol::Pcp => {
                let request = pcp::MapRequest {
                    lifetime: 0,
                    client: gateway.local,
                    nonce: mapping.nonce,
                    transport,
                    internal_port: port,
                    suggested_port: 0,
                    suggested_ip: Ipv4Addr::UNSPECIFIED,
                };
                exchange(
                    gateway,
                    &request.encode(),
                    tries,
                    |bytes| match pcp::decode(bytes) {
                        Ok(pcp::Response::Map(map)) => (map.nonce == mapping.nonce).then_some(()),
                        _ => None,
                    },
                )
                .await
            }
            Protocol::NatPmp => {
                let request = natpmp::MapRequest {
                    transport,
                    internal_port: port,
                    suggested_port: 0,
                    lifetime: 0,
                };
                exchange(
                    gateway,
                    &request.encode(),
                    tries,
                    |bytes| match natpmp::decode(bytes) {
                        Ok(natpmp::Response::Map { internal_port, .. }) => {
                            (internal_port == port).then_some(())
                        }
                        _ => None,
                    },
                )
                .await
            }
        };
        tracing::debug!(%protocol, port, deleted = deleted.is_some(), "deleting a port mapping");
    }

    async fn withdraw(&mut self, mapping: Mapping) {
        if let Some((protocol, external)) = mapping.announced {
            self.tell(Event::Expired {
                protocol,
                local: mapping.local,
                external,
            })
            .await;
        }
    }

    /// Deletes every mapping on the gateway.
    async fn release(&mut self) {
        let mappings: Vec<(Key, Mapping)> = self.mappings.drain().collect();
        for (key, mapping) in mappings {
            self.delete(key, &mapping, &RELEASE_TRY).await;
            self.withdraw(mapping).await;
        }
    }

    async fn tell_outcome(&mut self, protocol: Protocol, outcome: Outcome) {
        if self.outcomes.insert(protocol, outcome) != Some(outcome) {
            self.tell(Event::Asked { protocol, outcome }).await;
        }
    }

    async fn tell(&self, event: Event) {
        // Gone only when the behaviour is: nobody to tell.
        let _ = self.events.send(event).await;
    }
}

/// A UDP socket bound to the gateway's port 5351, and this device's address towards it.
async fn connect(gateway: Ipv4Addr) -> std::io::Result<(UdpSocket, Ipv4Addr)> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    socket.connect((gateway, SERVER_PORT)).await?;
    match socket.local_addr()? {
        SocketAddr::V4(local) => Ok((socket, *local.ip())),
        SocketAddr::V6(_) => Err(std::io::Error::other("an IPv6 local address")),
    }
}

async fn map_pcp(
    gateway: &Gateway,
    (transport, port): Key,
    nonce: pcp::Nonce,
    granted: Option<SocketAddrV4>,
    lifetime: u32,
) -> Result<Granted, (Protocol, Outcome)> {
    let request = pcp::MapRequest {
        lifetime,
        client: gateway.local,
        nonce,
        transport,
        internal_port: port,
        suggested_port: granted.map_or(port, |g| g.port()),
        suggested_ip: granted.map_or(Ipv4Addr::UNSPECIFIED, |g| *g.ip()),
    };
    let answer = exchange(
        gateway,
        &request.encode(),
        &TRIES,
        |bytes| match pcp::decode(bytes) {
            Ok(pcp::Response::UnsupportedVersion) => Some(Err(Outcome::Unsupported)),
            Ok(pcp::Response::Failed { result, .. }) => {
                tracing::info!(
                    result,
                    why = pcp::describe(result),
                    "the gateway refused a PCP mapping"
                );
                Some(Err(Outcome::Refused))
            }
            Ok(pcp::Response::Map(map))
                if map.nonce == nonce
                    && map.transport == Some(transport)
                    && map.internal_port == port =>
            {
                match (map.result, map.external_ip) {
                    (0, Some(ip)) if map.lifetime > 0 && map.external_port != 0 => {
                        Some(Ok(Granted {
                            protocol: Protocol::Pcp,
                            external: SocketAddrV4::new(ip, map.external_port),
                            lifetime: map.lifetime,
                            epoch: map.epoch,
                        }))
                    }
                    (result, _) => {
                        tracing::info!(
                            result,
                            why = pcp::describe(result),
                            "the gateway refused a PCP mapping"
                        );
                        Some(Err(Outcome::Refused))
                    }
                }
            }
            _ => None,
        },
    )
    .await;
    match answer {
        Some(Ok(granted)) => Ok(granted),
        Some(Err(outcome)) => Err((Protocol::Pcp, outcome)),
        None => Err((Protocol::Pcp, Outcome::NoAnswer)),
    }
}

async fn map_natpmp(
    gateway: &mut Gateway,
    (transport, port): Key,
    granted: Option<SocketAddrV4>,
    lifetime: u32,
) -> Result<Granted, (Protocol, Outcome)> {
    let fail = |outcome| Err((Protocol::NatPmp, outcome));
    let refused = |result: u16| {
        if result == natpmp::UNSUPPORTED_VERSION {
            Outcome::Unsupported
        } else {
            tracing::info!(
                result,
                why = natpmp::describe(result),
                "the gateway refused a NAT-PMP request"
            );
            Outcome::Refused
        }
    };
    let external_ip = match gateway.external_ip {
        Some(ip) => ip,
        None => {
            let answer = exchange(
                gateway,
                &natpmp::external_address_request(),
                &TRIES,
                |bytes| match natpmp::decode(bytes) {
                    Ok(natpmp::Response::ExternalAddress { ip, .. }) => Some(Ok(ip)),
                    Ok(natpmp::Response::Failed {
                        opcode: 0, result, ..
                    }) => Some(Err(refused(result))),
                    _ => None,
                },
            )
            .await;
            match answer {
                Some(Ok(ip)) => ip,
                Some(Err(outcome)) => return fail(outcome),
                None => return fail(Outcome::NoAnswer),
            }
        }
    };
    gateway.external_ip = Some(external_ip);
    let request = natpmp::MapRequest {
        transport,
        internal_port: port,
        suggested_port: granted.map_or(port, |g| g.port()),
        lifetime,
    };
    let opcode = request.encode()[1];
    let answer = exchange(
        gateway,
        &request.encode(),
        &TRIES,
        |bytes| match natpmp::decode(bytes) {
            Ok(natpmp::Response::Map {
                transport: t,
                epoch,
                internal_port,
                external_port,
                lifetime,
            }) if t == transport && internal_port == port => {
                if lifetime == 0 || external_port == 0 {
                    Some(Err(Outcome::Refused))
                } else {
                    Some(Ok(Granted {
                        protocol: Protocol::NatPmp,
                        external: SocketAddrV4::new(external_ip, external_port),
                        lifetime,
                        epoch,
                    }))
                }
            }
            Ok(natpmp::Response::Failed {
                opcode: op, result, ..
            }) if op == opcode => Some(Err(refused(result))),
            _ => None,
        },
    )
    .await;
    match answer {
        Some(Ok(granted)) => Ok(granted),
        Some(Err(outcome)) => fail(outcome),
        None => fail(Outcome::NoAnswer),
    }
}

/// Sends `request` to the gateway and waits for the first answer `accept` takes, trying
/// again after each wait in `tries`. Datagrams from anyone else, too long, or not taken
/// are ignored. `None`: no answer (or nothing listens on the gateway's port).
async fn exchange<T>(
    gateway: &Gateway,
    request: &[u8],
    tries: &[Duration],
    mut accept: impl FnMut(&[u8]) -> Option<T>,
) -> Option<T> {
    let from_gateway = SocketAddr::from((gateway.ip, SERVER_PORT));
    let mut buf = [0u8; pcp::MAX_MESSAGE + 1];
    for wait in tries {
        if let Err(error) = gateway.socket.send(request).await {
            tracing::debug!(%error, "cannot send to the gateway");
            return None;
        }
        let deadline = Instant::now() + *wait;
        loop {
            match tokio::time::timeout_at(deadline, gateway.socket.recv_from(&mut buf)).await {
                Err(_) => break,
                // The gateway's port is closed (ICMP port unreachable): nothing to wait for.
                Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return None;
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "reading from the gateway");
                    break;
                }
                Ok(Ok((len, from))) => {
                    if from != from_gateway || len > pcp::MAX_MESSAGE {
                        continue;
                    }
                    if let Some(answer) = accept(&buf[..len]) {
                        return Some(answer);
                    }
                }
            }
        }
    }
    None
}

/// The local IPv4 address and mapping key of a listen address that may be mapped.
fn mappable(addr: &Multiaddr) -> Option<(Ipv4Addr, Key)> {
    let mut parts = addr.iter();
    let Some(Part::Ip4(ip)) = parts.next() else {
        return None;
    };
    if ip.is_loopback() || ip.is_unspecified() {
        return None;
    }
    match parts.next()? {
        Part::Tcp(port) => Some((ip, (Transport::Tcp, port))),
        Part::Udp(port) => Some((ip, (Transport::Udp, port))),
        _ => None,
    }
}

/// The listen address with the gateway's external address and port in place of its own.
fn external_addr(local: &Multiaddr, external: SocketAddrV4) -> Multiaddr {
    local
        .iter()
        .enumerate()
        .map(|(i, part)| match (i, part) {
            (0, _) => Part::Ip4(*external.ip()),
            (1, Part::Tcp(_)) => Part::Tcp(external.port()),
            (1, Part::Udp(_)) => Part::Udp(external.port()),
            (_, part) => part,
        })
        .collect()
}

/// When to renew a mapping granted for `lifetime` seconds: at half of it, between 1 s
/// and an hour (an untrusted lifetime neither spins nor stalls the renewals).
fn renew_after(lifetime: u32) -> Duration {
    Duration::from_secs(u64::from(lifetime / 2).clamp(1, 3600))
}

/// Whether a gateway's epoch (seconds since its mapping table began) says it lost its
/// mappings since the last answer, by RFC 6887 8.5's test: it went back, or it moved
/// unlike this device's clock.
fn epoch_lost(previous: u32, at: Instant, epoch: u32, now: Instant) -> bool {
    let (previous, epoch) = (u64::from(previous), u64::from(epoch));
    if epoch + 1 < previous {
        return true;
    }
    let server = epoch.saturating_sub(previous);
    let client = now.saturating_duration_since(at).as_secs();
    client + 2 < server - server / 16 || server + 2 < client - client / 16
}

/// Whether an external address is reachable from the internet (not private, shared,
/// loopback, link-local, documentation, reserved or broadcast).
fn is_global(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0
        || ip.is_private()
        || (a == 100 && (b & 0xc0) == 0x40)
        || ip.is_loopback()
        || ip.is_link_local()
        || (a == 192 && b == 0 && c == 0)
        || ip.is_documentation()
        || (a == 198 && (b & 0xfe) == 18)
        || a >= 240)
}

fn nonce() -> pcp::Nonce {
    let mut nonce = [0u8; 12];
    if getrandom::fill(&mut nonce).is_err() {
        // Without randomness the nonce only guards less against off-path forgery; the
        // source check still holds.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        nonce.copy_from_slice(&t.to_be_bytes()[4..]);
    }
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("address")
    }

    #[test]
    fn only_ipv4_tcp_and_udp_listen_addresses_are_mapped() {
        let ip = Ipv4Addr::new(192, 168, 1, 2);
        assert_eq!(
            mappable(&addr("/ip4/192.168.1.2/tcp/7717")),
            Some((ip, (Transport::Tcp, 7717)))
        );
        assert_eq!(
            mappable(&addr("/ip4/192.168.1.2/udp/7717/quic-v1")),
            Some((ip, (Transport::Udp, 7717)))
        );
        for not in [
            "/ip4/127.0.0.1/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip4/0.0.0.0/tcp/1",
        ] {
            assert_eq!(mappable(&addr(not)), None, "{not}");
        }
    }

    #[test]
    fn the_external_address_keeps_the_rest_of_the_listen_address() {
        let external = SocketAddrV4::new(Ipv4Addr::new(11, 99, 0, 2), 50000);
        assert_eq!(
            external_addr(&addr("/ip4/192.168.1.2/udp/7717/quic-v1"), external),
            addr("/ip4/11.99.0.2/udp/50000/quic-v1")
        );
        assert_eq!(
            external_addr(&addr("/ip4/192.168.1.2/tcp/7717"), external),
            addr("/ip4/11.99.0.2/tcp/50000")
        );
    }

    #[test]
    fn renewals_come_at_half_the_lifetime_within_bounds() {
        assert_eq!(renew_after(7200), Duration::from_secs(3600));
        assert_eq!(renew_after(10), Duration::from_secs(5));
        assert_eq!(renew_after(0), Duration::from_secs(1));
        assert_eq!(renew_after(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn an_epoch_that_goes_back_or_runs_off_means_lost_mappings() {
        let at = Instant::now();
        let later = at + Duration::from_secs(100);
        assert!(!epoch_lost(1000, at, 1100, later));
        assert!(!epoch_lost(1000, at, 1098, later), "a little drift is fine");
        assert!(epoch_lost(1000, at, 5, later), "restarted");
        assert!(epoch_lost(1000, at, 5000, later), "ran ahead of this clock");
        assert!(epoch_lost(u32::MAX, at, 0, at));
        assert!(!epoch_lost(
            0,
            at,
            u32::MAX,
            at + Duration::from_secs(u64::from(u32::MAX))
        ));
    }

    #[test]
    fn private_external_addresses_are_not_public() {
        for private in [
            "10.0.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "127.0.0.1",
            "0.0.0.0",
            "203.0.113.5",
        ] {
            assert!(!is_global(private.parse().unwrap()), "{private}");
        }
        for public in ["11.99.0.2", "8.8.8.8"] {
            assert!(is_global(public.parse().unwrap()), "{public}");
        }
    }
}
