//! The authorization gate: every application protocol stream passes here first. Only
//! members get in, and only with the capability the protocol needs; everyone else is
//! refused with a reason, and every refusal is audited. Untrusted peers still get
//! identify, ping and pairing, which do not come through here.

use std::sync::Arc;

use futures::{AsyncWriteExt, StreamExt};
use loopsy_mesh::{Mesh, PeerId, Stream, framed};
use loopsy_wire::{
    admission::{self, Admission},
    protocol,
};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    audit::{Audit, Outcome},
    caps::{Capability, Caps},
    service::{Peer, PeerAudit, Service},
    trust::Trust,
};

/// Streams served at once per protocol.
const MAX_STREAMS: usize = 128;
/// Streams one peer may have served at once per protocol, so that no peer takes them all.
const MAX_STREAMS_PER_PEER: usize = 32;
/// Streams held per protocol, served or waiting for a place; a stream past it is dropped
/// unanswered (a flood).
const MAX_HELD: usize = 512;
/// How long a stream waits for a place before it is told the device is busy.
const WAIT_FOR_PLACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Streams being served per peer, and a wake-up for streams waiting for a place.
#[derive(Default)]
struct PerPeer(
    std::sync::Mutex<std::collections::HashMap<PeerId, usize>>,
    tokio::sync::Notify,
);

/// One peer's place among the streams being served; given back on drop.
struct Place(Arc<PerPeer>, PeerId);

impl PerPeer {
    /// A place for `peer`, waiting until `deadline` for one to be given back.
    async fn wait(self: &Arc<Self>, peer: PeerId, deadline: tokio::time::Instant) -> Option<Place> {
        loop {
            // Registered before the claim, so a place given back in between wakes it.
            let freed = self.1.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(place) = self.claim(peer) {
                return Some(place);
            }
            tokio::time::timeout_at(deadline, freed).await.ok()?;
        }
    }

    fn claim(self: &Arc<Self>, peer: PeerId) -> Option<Place> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(peer).or_default();
        if *count >= MAX_STREAMS_PER_PEER {
            return None;
        }
        *count += 1;
        Some(Place(self.clone(), peer))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.1);
            }
        }
        drop(counts);
        self.0.1.notify_waiters();
    }
}

/// What a protocol asks of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Membership alone (replication).
    Member,
    Capability(Capability),
    /// Any one of these; the protocol checks which once it knows the operation.
    AnyOf(&'static [Capability]),
}

/// What `protocol` needs; `None` for a protocol that is not an application protocol.
pub fn need(protocol: &str) -> Option<Need> {
    match protocol {
        // A command needs `exec`, a login shell `shell`: the exec service tells them apart.
        protocol::EXEC => Some(Need::AnyOf(&[Capability::Exec, Capability::Shell])),
        protocol::TRANSFER => Some(Need::Capability(Capability::Files)),
        // `own-sessions` reaches only the sessions the peer started: the service filters.
        // `view` only lists and watches: the service refuses the rest.
        protocol::SESSION => Some(Need::AnyOf(&[
            Capability::Sessions,
            Capability::OwnSessions,
            Capability::View,
        ])),
        protocol::SYNC => Some(Need::Member),
        _ => None,
    }
}

/// Why the gate refused a stream; said to the peer and written in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not paired with this device")]
    NotPaired,
    #[error("the `{0}` capability is not granted")]
    NotGranted(Capability),
    #[error("none of the {} capabilities is granted", names(.0))]
    NoneGranted(&'static [Capability]),
    #[error("{0} is not an application protocol")]
    NotApplication(String),
}

fn names(caps: &[Capability]) -> String {
    caps.iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a peer with `grants` (`None`: not a member) gets on `protocol`: its grants, or why not.
pub fn check(grants: Option<Caps>, protocol: &str) -> Result<Caps, Refusal> {
    let Some(grants) = grants else {
        return Err(Refusal::NotPaired);
    };
    match need(protocol) {
        Some(Need::Member) => Ok(grants),
        Some(Need::Capability(cap)) if grants.contains(&cap) => Ok(grants),
        Some(Need::Capability(cap)) => Err(Refusal::NotGranted(cap)),
        Some(Need::AnyOf(caps)) if caps.iter().any(|c| grants.contains(c)) => Ok(grants),
        Some(Need::AnyOf(caps)) => Err(Refusal::NoneGranted(caps)),
        None => Err(Refusal::NotApplication(protocol.to_owned())),
    }
}

/// The gate: admits streams against the trust store, audits refusals, and hands admitted
/// streams to their [`Service`] with the peer's context.
pub struct Gate {
    mesh: Mesh,
    trust: Arc<Trust>,
    audit: Arc<Audit>,
}

impl Gate {
    pub fn new(mesh: Mesh, trust: Arc<Trust>, audit: Arc<Audit>) -> Self {
        Self { mesh, trust, audit }
    }

    /// Accepts `protocol` streams until the mesh stops or `stop` is cancelled: each is
    /// admitted or refused, and admitted ones go to `service` (or are told the protocol is
    /// not served yet). Past a peer's share of places, or all of them, a stream waits for
    /// one (a hundred execs at once run 32 at a time), and is told the device is busy if
    /// none comes in time. Every stream's task belongs to this loop: when it ends, they go.
    pub async fn serve(
        self: Arc<Self>,
        protocol: &'static str,
        service: Option<Arc<dyn Service>>,
        stop: CancellationToken,
    ) {
        let Some(mut incoming) = self.mesh.accept(protocol) else {
            tracing::error!(protocol, "already accepting this protocol");
            return;
        };
        let slots = Arc::new(Semaphore::new(MAX_STREAMS));
        let held = Arc::new(Semaphore::new(MAX_HELD));
        let per_peer = Arc::new(PerPeer::default());
        let mut streams = JoinSet::new();
        loop {
            let (peer, stream) = tokio::select! {
                next = incoming.next() => match next {
                    Some(next) => next,
                    None => break,
                },
                Some(_) = streams.join_next(), if !streams.is_empty() => continue,
                _ = stop.cancelled() => break,
            };
            let Ok(hold) = held.clone().try_acquire_owned() else {
                tracing::warn!(%peer, protocol, "too many streams waiting; dropping one");
                continue;
            };
            let place = Waiting {
                slots: slots.clone(),
                per_peer: per_peer.clone(),
                hold,
            };
            let stop = stop.clone();
            streams.spawn(
                self.clone()
                    .admit(protocol, service.clone(), peer, stream, place, stop),
            );
        }
    }

    /// Serves one stream: a place, the verdict, then the service until it ends or the peer
    /// leaves.
    async fn admit(
        self: Arc<Self>,
        protocol: &'static str,
        service: Option<Arc<dyn Service>>,
        peer: PeerId,
        mut stream: Stream,
        waiting: Waiting,
        stop: CancellationToken,
    ) {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_PLACE;
        let place = waiting.per_peer.wait(peer, deadline).await;
        let permit = match place {
            Some(_) => tokio::time::timeout_at(deadline, waiting.slots.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        let (Some(place), Some(permit)) = (place, permit) else {
            tracing::warn!(%peer, protocol, "no place for a stream in time; busy");
            let busy = Admission::Refused {
                reason: format!(
                    "busy: this device serves at most {MAX_STREAMS_PER_PEER} {protocol} \
                     streams from yours at once, and none ended in time; try again"
                ),
            };
            let _ = framed::write(&mut stream, &busy, admission::MAX_FRAME).await;
            drop(stream.close().await);
            return;
        };
        let verdict = check(self.trust.grants(&peer), protocol);
        let name = self.trust.name_of(&peer);
        let reply = match (&verdict, &service) {
            (Err(reason), _) => {
                if self.trust.is_member(&peer) {
                    self.audit.record(
                        Some(peer),
                        name.clone(),
                        action(protocol),
                        protocol,
                        Outcome::Denied,
                        Some(reason.to_string()),
                    );
                } else {
                    self.audit.refuse_stranger(
                        peer,
                        action(protocol),
                        protocol,
                        reason.to_string(),
                    );
                }
                Admission::Refused {
                    reason: reason.to_string(),
                }
            }
            (Ok(_), None) => Admission::Refused {
                reason: format!("this device does not serve {protocol} yet"),
            },
            (Ok(_), Some(_)) => Admission::Accepted,
        };
        // Watched from before the service starts, so no departure is missed.
        let departure = Departure::watch(&self.mesh, &self.trust, peer);
        let sent = framed::write(&mut stream, &reply, admission::MAX_FRAME).await;
        match (verdict, service, sent) {
            (Ok(grants), Some(service), Ok(())) => {
                let departed = stop.child_token();
                let cx = Peer {
                    id: peer,
                    name: name.clone(),
                    grants,
                    policies: self.trust.policies(&peer),
                    audit: PeerAudit::new(self.audit.clone(), peer, name),
                    departed: departed.clone(),
                };
                // A stream whose connection closed never wakes its reader: the service is
                // dropped (and with it what it runs) when the peer leaves instead.
                let served = service.serve(cx, stream);
                tokio::select! {
                    _ = served => {}
                    _ = departure.wait() => {
                        tracing::debug!(%peer, protocol, "peer left: service ended");
                    }
                    _ = stop.cancelled() => {}
                }
                departed.cancel();
            }
            // Closed, not dropped: a reset could discard the refusal unread.
            _ => drop(stream.close().await),
        }
        drop((permit, place, waiting.hold));
    }
}

/// What a stream holds while it waits for its place.
struct Waiting {
    slots: Arc<Semaphore>,
    per_peer: Arc<PerPeer>,
    hold: tokio::sync::OwnedSemaphorePermit,
}

/// The end of a peer's stay: its last connection closed, or (when asked) it stopped being
/// a member.
pub struct Departure {
    peer: PeerId,
    membership: bool,
    mesh: Mesh,
    trust: Arc<Trust>,
    events: tokio::sync::broadcast::Receiver<loopsy_mesh::MeshEvent>,
    changes: tokio::sync::watch::Receiver<u64>,
}

impl Departure {
    /// Watches for the peer's last connection closing, and for it leaving the mesh.
    pub fn watch(mesh: &Mesh, trust: &Arc<Trust>, peer: PeerId) -> Self {
        Self::connection(mesh, trust, peer).and_membership()
    }

    /// Watches for the peer's last connection closing.
    pub fn connection(mesh: &Mesh, trust: &Arc<Trust>, peer: PeerId) -> Self {
        Self {
            peer,
            membership: false,
            mesh: mesh.clone(),
            trust: trust.clone(),
            events: mesh.events(),
            changes: trust.subscribe(),
        }
    }

    fn and_membership(mut self) -> Self {
        self.membership = true;
        self
    }

    pub async fn wait(mut self) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            tokio::select! {
                event = self.events.recv() => match event {
                    Ok(loopsy_mesh::MeshEvent::Disconnected { peer }) if peer == self.peer => return,
                    Ok(_) => {}
                    // Events were missed: ask whether the peer is still connected.
                    Err(RecvError::Lagged(_)) => {
                        let peers = self.mesh.peers().await.unwrap_or_default();
                        if !peers.iter().any(|p| p.peer_id == self.peer && p.is_connected()) {
                            return;
                        }
                    }
                    Err(RecvError::Closed) => return,
                },
                changed = self.changes.changed() => {
                    if changed.is_err()
                        || (self.membership && !self.trust.is_member(&self.peer))
                    {
                        return;
                    }
                }
            }
        }
    }
}

/// The audit action for a protocol: its name without the prefix and version.
fn action(protocol: &str) -> &str {
    protocol
        .strip_prefix("/loopsy/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or(protocol)
}

/// Why a stream this device opened was not let in.
#[derive(Debug, thiserror::Error)]
pub enum NotAdmitted {
    /// The other device's gate said no.
    #[error("refused by the other device: {0}")]
    Refused(String),
    /// The stream failed before a verdict.
    #[error("{0}")]
    Broken(String),
}

/// Times a stream dropped before its verdict is opened again.
const REOPEN: u32 = 3;

/// Opens a `protocol` stream to `peer`, reads the serving side's admission, then sends
/// `first`. libp2p-stream hands inbound streams to the acceptor through a one-slot
/// channel and drops a stream that arrives while the slot is taken (two devices attaching
/// at the same moment, say), and a stream may be opened on a connection that is closing:
/// either way the opener sees it end with no verdict. The verdict comes before `first` is
/// sent, so such a stream surely served nothing, and another is opened, a few times. Once
/// `first` is on its way nothing is retried: the other side may have acted on it.
pub async fn open<T: serde::Serialize>(
    mesh: &loopsy_mesh::Mesh,
    peer: PeerId,
    protocol: &'static str,
    first: &T,
    max: usize,
) -> Result<Stream, NotAdmitted> {
    let mut tries = 0;
    let mut stream = loop {
        let verdict = match mesh.open_stream(peer, protocol).await {
            Ok(mut stream) => admitted(&mut stream).await.map(|()| stream),
            Err(e) => Err(NotAdmitted::Broken(e.to_string())),
        };
        match verdict {
            Ok(stream) => break stream,
            Err(NotAdmitted::Broken(reason)) if tries < REOPEN => {
                tries += 1;
                tracing::debug!(%peer, protocol, %reason, tries, "no verdict; opening again");
                tokio::time::sleep(std::time::Duration::from_millis(20 << tries)).await;
            }
            Err(e) => return Err(e),
        }
    };
    framed::write(&mut stream, first, max)
        .await
        .map_err(|e| NotAdmitted::Broken(e.to_string()))?;
    Ok(stream)
}

/// Reads the serving side's admission on a stream this device opened.
pub async fn admitted(stream: &mut Stream) -> Result<(), NotAdmitted> {
    match framed::read::<Admission, _>(stream, admission::MAX_FRAME).await {
        Ok(Some(Admission::Accepted)) => Ok(()),
        Ok(Some(Admission::Refused { reason })) => Err(NotAdmitted::Refused(reason)),
        Ok(None) => Err(NotAdmitted::Broken(
            "the other device closed the stream".into(),
        )),
        Err(e) => Err(NotAdmitted::Broken(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_past_its_share_waits_for_a_place() {
        let per_peer = Arc::new(PerPeer::default());
        let a = PeerId::random();
        let held: Vec<Place> = (0..MAX_STREAMS_PER_PEER)
            .map(|_| per_peer.claim(a).expect("a place"))
            .collect();
        let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(50);
        assert!(
            per_peer.wait(a, soon).await.is_none(),
            "none given back: busy"
        );
        let waiting = {
            let per_peer = per_peer.clone();
            let later = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            tokio::spawn(async move { per_peer.wait(a, later).await.is_some() })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        drop(held);
        assert!(
            waiting.await.expect("task"),
            "a place given back goes to the waiter"
        );
    }

    #[test]
    fn one_peer_cannot_take_every_stream() {
        let per_peer = Arc::new(PerPeer::default());
        let (a, b) = (PeerId::random(), PeerId::random());
        let held: Vec<Place> = (0..MAX_STREAMS_PER_PEER)
            .map(|_| per_peer.claim(a).expect("a place"))
            .collect();
        assert!(per_peer.claim(a).is_none(), "a is at its limit");
        assert!(per_peer.claim(b).is_some(), "b is not");
        drop(held);
        let again = per_peer.claim(a);
        assert!(again.is_some(), "places come back");
        assert_eq!(per_peer.0.lock().unwrap().get(&a), Some(&1));
        drop(again);
        assert!(
            per_peer.0.lock().unwrap().is_empty(),
            "no peer is remembered for nothing"
        );
    }
}
