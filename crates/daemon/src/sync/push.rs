//! Pushes: changes go to the connected members at once, through one bounded queue and one
//! task, each member with a bounded queue of its own. What a push misses, anti-entropy
//! brings.

use std::{collections::HashMap, sync::Arc};

use futures::AsyncWriteExt;
use loopsy_mesh::{Mesh, PeerId};
use loopsy_wire::{
    member::Record,
    protocol,
    sync::{MAX_FRAME, Message},
};
use serde_bytes::ByteBuf;

use super::{DEADLINE, Engine, SyncError};
use crate::{dial::connected_members, gate};

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

#[cfg(test)]
impl PushQueue {
    /// The next change queued, if any: its collection, how many records, and the member
    /// it is not for.
    pub fn try_next(&mut self) -> Option<(&'static str, usize, Option<PeerId>)> {
        let queued = self.0.try_recv().ok()?;
        Some((
            queued.push.collection,
            queued.push.records.len(),
            queued.except,
        ))
    }
}

/// The queue between [`Pushes::push`] and [`Engine::run_pushes`].
pub fn pushes() -> (Pushes, PushQueue) {
    let (tx, rx) = tokio::sync::mpsc::channel(CHANGES_WAITING);
    (Pushes(tx), PushQueue(rx))
}

impl Pushes {
    /// Sends `records` of `collection` to every connected member but `except`, in the
    /// background (see [`Engine::run_pushes`]).
    pub fn push(&self, collection: &'static str, records: Vec<ByteBuf>, except: Option<PeerId>) {
        if records.is_empty() {
            return;
        }
        let push = Push {
            collection,
            records,
        };
        self.send(Queued { push, except });
    }

    /// Spreads new member records to the connected members, but `except`.
    pub fn members(&self, records: &[Record], except: Option<PeerId>) {
        let encoded = records.iter().map(super::encode_record).collect();
        self.push(super::MEMBERS, encoded, except);
    }

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

impl Engine {
    /// The sync engine's push task: takes changes from [`Pushes::push`], queues them per
    /// connected member that may have them, and sends each member its pushes one at a time
    /// (members in parallel, all within this task).
    pub async fn run_pushes(self: Arc<Self>, mesh: Mesh, PushQueue(mut changes): PushQueue) {
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
                    let members = connected_members(&mesh, &self.trust).await;
                    for Queued { push, except } in batch {
                        let Ok(shared) = self.collection(push.collection) else {
                            continue;
                        };
                        for peer in &members {
                            if Some(*peer) != except && self.shares_with(&**shared, peer) {
                                outbox.queue(*peer, push.clone());
                            }
                        }
                    }
                }
                Some((peer, ok)) = futures::StreamExt::next(&mut sending) => outbox.sent(peer, ok),
            }
            for (peer, push) in outbox.ready() {
                sending.push(send_push(&mesh, peer, push));
            }
        }
    }
}

/// Sends one push; whether it went.
async fn send_push(mesh: &Mesh, peer: PeerId, push: Push) -> (PeerId, bool) {
    let collection = push.collection;
    let message = Message::Push {
        collection: collection.to_owned(),
        records: push.records,
    };
    let sent = tokio::time::timeout(DEADLINE, async {
        let mut stream = gate::open(mesh, peer, protocol::SYNC, &message, MAX_FRAME)
            .await
            .map_err(|e| SyncError::Stream(e.to_string()))?;
        stream
            .close()
            .await
            .map_err(|e| SyncError::Stream(e.to_string()))
    })
    .await;
    let ok = matches!(sent, Ok(Ok(())));
    if !ok {
        tracing::debug!(%peer, collection, "push failed; anti-entropy will catch up");
    }
    (peer, ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{CTX, MEMBERS, SESSIONS};

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
