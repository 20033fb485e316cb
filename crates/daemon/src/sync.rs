//! Replication over `/loopsy/sync/1` (the flow is in `loopsy_wire::sync`), for every
//! collection a node shares with its members: for now the member list; sessions, the
//! context and messages ride on the same engine.
//!
//! A collection only has to say what it holds ([`Collection::digest`]), hand out records,
//! and merge records, returning the ones that were new: those are passed on to the other
//! connected members, so a change crosses the mesh through any chain of members, and stops
//! where nothing new is learnt.
//!
//! Need to know: a collection that serves a capability (the context serves `ctx`, the
//! session registry `sessions`) goes only to members that hold it here, and is taken only
//! from them. Records a collection refuses (forged, dated too far ahead) are audited.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::AsyncWriteExt;
use loopsy_mesh::{PeerId, Stream, framed};
use loopsy_wire::{
    member::{self, Record},
    protocol,
    sync::{Entry, MAX_FRAME, Message},
};
use serde_bytes::ByteBuf;

use crate::{
    caps::{Capability, Caps},
    gate,
    node::Node,
    trust::Trust,
};

/// How long one exchange may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// A replicated collection.
pub trait Collection: Send + Sync {
    fn name(&self) -> &'static str;
    /// Key, version and hash of every record.
    fn digest(&self) -> Vec<Entry>;
    /// The encoded records for these keys (unknown keys are skipped).
    fn records(&self, keys: &[Vec<u8>]) -> Vec<ByteBuf>;
    /// Merges encoded records: those that were new here, and why others were refused.
    fn merge(&self, records: Vec<ByteBuf>) -> Merged;
    /// The capability a record's author needs here (whoever passed it on); `None` when
    /// membership is enough.
    fn needs(&self) -> Option<Capability> {
        None
    }
    /// The capability a member needs here to receive the collection (and to pass records
    /// of it on); `None` when membership is enough.
    fn serves(&self) -> Option<Capability> {
        None
    }
    /// The author of an encoded record.
    fn author_of(&self, _record: &[u8]) -> Option<PeerId> {
        None
    }
}

/// What a merge did.
#[derive(Debug, Default)]
pub struct Merged {
    /// Records new here, to pass on.
    pub fresh: Vec<ByteBuf>,
    /// Why records were refused, one reason each.
    pub refused: Vec<String>,
}

/// Whether a member with `grants` here may receive and pass on `collection`.
fn may_share(collection: &dyn Collection, grants: Option<&Caps>) -> bool {
    grants.is_some_and(|g| collection.serves().is_none_or(|c| g.contains(&c)))
}

/// Compares two digests: the keys whose records `mine` should send, and the keys it wants.
pub fn compare(mine: &[Entry], theirs: &[Entry]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let theirs: HashMap<&[u8], &Entry> = theirs.iter().map(|e| (e.key.as_slice(), e)).collect();
    let mut send = Vec::new();
    let mut want = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for entry in mine {
        seen.insert(entry.key.as_slice());
        match theirs.get(entry.key.as_slice()) {
            None => send.push(entry.key.to_vec()),
            Some(t) if t.hash == entry.hash && t.version == entry.version => {}
            Some(t) if t.version > entry.version => want.push(entry.key.to_vec()),
            Some(t) if t.version < entry.version => send.push(entry.key.to_vec()),
            // Same version, different records: exchange both; the merge picks one.
            Some(_) => {
                send.push(entry.key.to_vec());
                want.push(entry.key.to_vec());
            }
        }
    }
    want.extend(
        theirs
            .keys()
            .filter(|k| !seen.contains(*k))
            .map(|k| k.to_vec()),
    );
    (send, want)
}

/// Serves a sync stream from an admitted member.
pub async fn serve(node: Arc<Node>, peer: PeerId, mut stream: Stream, grants: Caps) {
    let result = tokio::time::timeout(DEADLINE, answer(&node, peer, &grants, &mut stream)).await;
    if let Ok(Err(error)) = result {
        tracing::debug!(%peer, %error, "sync exchange failed");
    }
    let _ = stream.close().await;
}

async fn answer(
    node: &Arc<Node>,
    peer: PeerId,
    grants: &Caps,
    stream: &mut Stream,
) -> Result<(), String> {
    match read(stream).await? {
        Some(Message::Digest {
            collection,
            entries,
        }) => {
            let c = node.collection(&collection).ok_or("unknown collection")?;
            if !may_share(c, Some(grants)) {
                // Nothing either way: an empty delta, so the peer's side ends cleanly.
                let nothing = Message::Delta {
                    records: Vec::new(),
                    want: Vec::new(),
                };
                return write(stream, &nothing).await;
            }
            let (send, want) = compare(&c.digest(), &entries);
            let records = c.records(&send);
            let want = want.into_iter().map(ByteBuf::from).collect();
            write(stream, &Message::Delta { records, want }).await?;
            if let Some(Message::Records { records }) = read(stream).await? {
                learn(node, c, records, peer);
            }
            Ok(())
        }
        Some(Message::Push {
            collection,
            records,
        }) => {
            let c = node.collection(&collection).ok_or("unknown collection")?;
            if may_share(c, Some(grants)) {
                learn(node, c, records, peer);
            }
            Ok(())
        }
        Some(_) => Err("unexpected sync message".into()),
        None => Ok(()),
    }
}

/// Merges records from `from`, and passes on what was new to the other members. Records
/// whose authors lack the collection's capability here are dropped.
fn learn(node: &Arc<Node>, collection: &dyn Collection, records: Vec<ByteBuf>, from: PeerId) {
    let mut unauthorized = Vec::new();
    let records = match collection.needs() {
        None => records,
        Some(capability) => records
            .into_iter()
            .filter(|r| {
                let author = collection.author_of(r);
                let allowed = author.is_some_and(|author| {
                    author == node.mesh.peer_id()
                        || node
                            .trust
                            .grants(&author)
                            .is_some_and(|g| g.contains(&capability))
                });
                if !allowed {
                    let who = author
                        .map(|a| node.peer_name(&a).unwrap_or_else(|| a.to_base58()))
                        .unwrap_or_else(|| "an unknown author".into());
                    unauthorized.push(format!(
                        "{} record by {who}, which is not granted `{capability}` here",
                        collection.name()
                    ));
                }
                allowed
            })
            .collect(),
    };
    let mut merged = collection.merge(records);
    merged.refused.extend(unauthorized);
    if let Some(first) = merged.refused.first() {
        // One entry per exchange, however many records: a flood cannot flood the log.
        node.audit.record(
            Some(from),
            node.peer_name(&from),
            "sync",
            collection.name(),
            crate::audit::Outcome::Denied,
            Some(format!(
                "{} records refused; the first: {first}",
                merged.refused.len()
            )),
        );
    }
    if !merged.fresh.is_empty() {
        push(node, collection.name(), merged.fresh, Some(from));
    }
}

/// Anti-entropy with a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl From<String> for SyncError {
    fn from(e: String) -> Self {
        SyncError::Failed(e)
    }
}

impl From<&str> for SyncError {
    fn from(e: &str) -> Self {
        SyncError::Failed(e.to_owned())
    }
}

/// Anti-entropy with `peer` for every collection.
pub async fn reconcile(node: &Arc<Node>, peer: PeerId) -> Result<(), SyncError> {
    for name in node.collection_names() {
        tokio::time::timeout(DEADLINE, reconcile_one(node, peer, name))
            .await
            .map_err(|_| SyncError::Failed(format!("sync of {name} with {peer} timed out")))??;
    }
    Ok(())
}

async fn reconcile_one(
    node: &Arc<Node>,
    peer: PeerId,
    name: &'static str,
) -> Result<(), SyncError> {
    let collection = node.collection(name).ok_or("unknown collection")?;
    if !may_share(collection, node.trust.grants(&peer).as_ref()) {
        return Ok(());
    }
    let digest = Message::Digest {
        collection: name.to_owned(),
        entries: collection.digest(),
    };
    let mut stream = gate::open(&node.mesh, peer, protocol::SYNC, &digest, MAX_FRAME)
        .await
        .map_err(|e| match e {
            gate::NotAdmitted::Refused(reason) => SyncError::Refused(reason),
            broken => SyncError::Failed(broken.to_string()),
        })?;
    let Some(Message::Delta { records, want }) = read(&mut stream).await? else {
        return Err("expected a sync delta".into());
    };
    let want: Vec<Vec<u8>> = want.into_iter().map(|k| k.into_vec()).collect();
    let answer = collection.records(&want);
    write(&mut stream, &Message::Records { records: answer }).await?;
    let _ = stream.close().await;
    learn(node, collection, records, peer);
    Ok(())
}

/// Sends `records` of `collection` to every connected member but `except`, in the
/// background (see [`run_pushes`]).
pub fn push(
    node: &Arc<Node>,
    collection: &'static str,
    records: Vec<ByteBuf>,
    except: Option<PeerId>,
) {
    if records.is_empty() {
        return;
    }
    node.pushes.send(Queued {
        push: Push {
            collection,
            records,
        },
        except,
    });
}

/// Changes waiting for the push task; past it a change is not pushed (anti-entropy brings
/// it all the same).
const CHANGES_WAITING: usize = 256;
/// Pushes queued for one member; past it the oldest is dropped.
const PUSHES_PER_MEMBER: usize = 32;
/// Most bytes of records one push carries when queued changes are put together, well
/// within a frame.
const MAX_PUSH_BYTES: usize = MAX_FRAME / 2;
/// Changes the push task takes at once, to look the connected members up once for them.
const BATCH: usize = 64;

/// Records of one collection to push.
#[derive(Debug, Clone, PartialEq)]
struct Push {
    collection: &'static str,
    records: Vec<ByteBuf>,
}

impl Push {
    fn bytes(&self) -> usize {
        self.records.iter().map(|r| r.len()).sum()
    }
}

/// A change to push, to every member but `except`.
#[derive(Debug)]
pub struct Queued {
    push: Push,
    except: Option<PeerId>,
}

/// Where changes go to be pushed: the sender side of the push task's queue.
#[derive(Debug, Clone)]
pub struct Pushes(tokio::sync::mpsc::Sender<Queued>);

/// The push task's side of the queue.
#[derive(Debug)]
pub struct PushQueue(tokio::sync::mpsc::Receiver<Queued>);

/// The queue between [`push`] and [`run_pushes`].
pub fn pushes() -> (Pushes, PushQueue) {
    let (tx, rx) = tokio::sync::mpsc::channel(CHANGES_WAITING);
    (Pushes(tx), PushQueue(rx))
}

impl Pushes {
    fn send(&self, queued: Queued) {
        if self.0.try_send(queued).is_err() {
            tracing::debug!("too many changes waiting to be pushed; anti-entropy will catch up");
        }
    }
}

/// What waits to be pushed to each member. Each member's queue is bounded, and changes
/// of one collection queued one after another go as one push: a member that is slow (or
/// gone) costs a bounded queue, and what it misses it gets from anti-entropy, which runs
/// whenever a member connects and every minute besides.
#[derive(Debug, Default)]
struct Outbox {
    queues: HashMap<PeerId, std::collections::VecDeque<Push>>,
    /// Members a push is on its way to: one at a time each.
    sending: std::collections::HashSet<PeerId>,
}

impl Outbox {
    /// Queues `push` for `peer`, with the last one queued if it is of the same collection
    /// and there is room; the oldest goes when the queue is full.
    fn queue(&mut self, peer: PeerId, push: Push) {
        let queue = self.queues.entry(peer).or_default();
        if let Some(last) = queue.back_mut()
            && last.collection == push.collection
            && last.records.len() + push.records.len() <= loopsy_wire::sync::MAX_ENTRIES
            && last.bytes() + push.bytes() <= MAX_PUSH_BYTES
        {
            last.records.extend(push.records);
            return;
        }
        queue.push_back(push);
        if queue.len() > PUSHES_PER_MEMBER {
            queue.pop_front();
            tracing::debug!(%peer, "push queue full: dropped the oldest; anti-entropy will catch up");
        }
    }

    /// The next push for every member with one queued and none on its way.
    fn ready(&mut self) -> Vec<(PeerId, Push)> {
        let mut ready = Vec::new();
        for (peer, queue) in &mut self.queues {
            if !self.sending.contains(peer)
                && let Some(push) = queue.pop_front()
            {
                self.sending.insert(*peer);
                ready.push((*peer, push));
            }
        }
        self.queues.retain(|_, queue| !queue.is_empty());
        ready
    }

    /// A push to `peer` ended; after a failure the rest of its queue goes too (it is
    /// likely gone, and anti-entropy catches it up when it is back).
    fn sent(&mut self, peer: PeerId, ok: bool) {
        self.sending.remove(&peer);
        if !ok {
            self.queues.remove(&peer);
        }
    }
}

/// The sync engine's push task: takes changes from [`push`], queues them per connected
/// member that may have them, and sends each member its pushes one at a time (members in
/// parallel, all within this task).
pub async fn run_pushes(node: Arc<Node>, PushQueue(mut changes): PushQueue) {
    let mut outbox = Outbox::default();
    let mut sending = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            change = changes.recv() => {
                let Some(first) = change else { break };
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match changes.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                let members = node.connected_members().await;
                for Queued { push, except } in batch {
                    let Some(shared) = node.collection(push.collection) else {
                        continue;
                    };
                    for peer in &members {
                        if Some(*peer) != except
                            && may_share(shared, node.trust.grants(peer).as_ref())
                        {
                            outbox.queue(*peer, push.clone());
                        }
                    }
                }
            }
            Some((peer, ok)) = futures::StreamExt::next(&mut sending) => outbox.sent(peer, ok),
        }
        for (peer, push) in outbox.ready() {
            sending.push(send_push(&node, peer, push));
        }
    }
}

/// Sends one push; whether it went.
async fn send_push(node: &Arc<Node>, peer: PeerId, push: Push) -> (PeerId, bool) {
    let collection = push.collection;
    let message = Message::Push {
        collection: collection.to_owned(),
        records: push.records,
    };
    let sent = tokio::time::timeout(DEADLINE, async {
        let mut stream = gate::open(&node.mesh, peer, protocol::SYNC, &message, MAX_FRAME)
            .await
            .map_err(|e| e.to_string())?;
        stream.close().await.map_err(|e| e.to_string())
    })
    .await;
    let ok = matches!(sent, Ok(Ok(())));
    if !ok {
        tracing::debug!(%peer, collection, "push failed; anti-entropy will catch up");
    }
    (peer, ok)
}

async fn read(stream: &mut Stream) -> Result<Option<Message>, String> {
    let message: Option<Message> = framed::read(stream, MAX_FRAME)
        .await
        .map_err(|e| e.to_string())?;
    match message {
        Some(m) if !m.within_limits() => Err("sync message over its limits".into()),
        other => Ok(other),
    }
}

async fn write(stream: &mut Stream, message: &Message) -> Result<(), String> {
    framed::write(stream, message, MAX_FRAME)
        .await
        .map_err(|e| e.to_string())
}

/// The member list as a replicated collection.
impl Collection for Trust {
    fn name(&self) -> &'static str {
        MEMBERS
    }

    fn digest(&self) -> Vec<Entry> {
        Trust::digest(self)
    }

    fn records(&self, keys: &[Vec<u8>]) -> Vec<ByteBuf> {
        Trust::records(self, keys)
            .iter()
            .map(encode_record)
            .collect()
    }

    fn merge(&self, records: Vec<ByteBuf>) -> Merged {
        let mut refused = Vec::new();
        let decoded: Vec<Record> = records
            .iter()
            .filter_map(|r| {
                if r.len() > member::MAX_RECORD {
                    refused.push("member record too large".to_owned());
                    return None;
                }
                loopsy_wire::frame::decode(r)
                    .map_err(|e| refused.push(format!("malformed member record: {e}")))
                    .ok()
            })
            .collect();
        let (fresh, invalid) = Trust::merge(self, decoded);
        if !invalid.is_empty() {
            tracing::warn!(count = invalid.len(), first = %invalid[0], "refused member records");
        }
        refused.extend(invalid.iter().map(ToString::to_string));
        Merged {
            fresh: fresh.iter().map(encode_record).collect(),
            refused,
        }
    }
}

/// The member list's collection name.
pub const MEMBERS: &str = "members";
/// The shared context's.
pub const CTX: &str = "ctx";
/// The session registry's.
pub const SESSIONS: &str = "sessions";
/// Messages'.
pub const MESSAGES: &str = "msg";

pub fn encode_record(record: &Record) -> ByteBuf {
    let mut out = Vec::new();
    let _ = ciborium::into_writer(record, &mut out);
    ByteBuf::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, version: u64, hash: u64) -> Entry {
        Entry {
            key: ByteBuf::from(key.as_bytes().to_vec()),
            version,
            hash,
        }
    }

    #[test]
    fn compare_sends_newer_and_wants_missing() {
        let mine = [
            entry("a", 2, 1),
            entry("b", 1, 1),
            entry("c", 5, 5),
            entry("d", 3, 1),
        ];
        let theirs = [
            entry("a", 1, 9),
            entry("b", 4, 2),
            entry("c", 5, 5),
            entry("d", 3, 2),
            entry("e", 1, 1),
        ];
        let (send, want) = compare(&mine, &theirs);
        let text = |v: Vec<Vec<u8>>| {
            let mut v: Vec<String> = v
                .into_iter()
                .map(|k| String::from_utf8(k).unwrap())
                .collect();
            v.sort();
            v
        };
        assert_eq!(text(send), ["a", "d"]);
        assert_eq!(text(want), ["b", "d", "e"]);
    }

    fn change(collection: &'static str, record: &str) -> Push {
        Push {
            collection,
            records: vec![ByteBuf::from(record.as_bytes().to_vec())],
        }
    }

    #[test]
    fn a_members_pushes_are_bounded_and_the_oldest_go() {
        let mut outbox = Outbox::default();
        let peer = PeerId::random();
        // Alternating collections: nothing to put together.
        for i in 0..PUSHES_PER_MEMBER + 8 {
            let collection = if i % 2 == 0 { CTX } else { SESSIONS };
            outbox.queue(peer, change(collection, &i.to_string()));
        }
        let queue = &outbox.queues[&peer];
        assert_eq!(queue.len(), PUSHES_PER_MEMBER);
        assert_eq!(queue[0], change(CTX, "8"), "the oldest eight went");
    }

    #[test]
    fn changes_of_one_collection_go_as_one_push() {
        let mut outbox = Outbox::default();
        let peer = PeerId::random();
        for i in 0..1000 {
            outbox.queue(peer, change(CTX, &i.to_string()));
        }
        outbox.queue(peer, change(MEMBERS, "m"));
        let ready = outbox.ready();
        assert_eq!(ready.len(), 1);
        assert_eq!(
            ready[0].1.records.len(),
            1000,
            "a thousand changes, one push"
        );
        assert_eq!(
            outbox.queues[&peer].len(),
            1,
            "the member record waits its turn"
        );
    }

    #[test]
    fn one_push_at_a_time_per_member_and_a_failure_empties_its_queue() {
        let mut outbox = Outbox::default();
        let (slow, other) = (PeerId::random(), PeerId::random());
        outbox.queue(slow, change(CTX, "a"));
        outbox.queue(other, change(CTX, "a"));
        assert_eq!(outbox.ready().len(), 2);
        outbox.queue(slow, change(MEMBERS, "b"));
        assert!(outbox.ready().is_empty(), "each has one on its way");
        outbox.sent(other, true);
        outbox.sent(slow, false);
        assert!(outbox.ready().is_empty(), "the failed member's queue went");
        assert!(outbox.queues.is_empty() && outbox.sending.is_empty());
    }
}
