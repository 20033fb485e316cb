//! Places for pairing streams. Anyone may open one, and fresh peer IDs cost nothing, so a
//! stream that has not said anything yet must not keep a real joiner out: each peer holds
//! at most [`MAX_PER_PEER`] streams, and past [`MAX_WAITING`] streams waiting for their
//! first message the oldest waiting one is dropped for the newcomer. A joiner sends its
//! first message as soon as the stream is open, so it waits a round trip at most, while an
//! idle stream waits until it is dropped or its deadline passes.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use loopsy_mesh::PeerId;
use tokio::task::AbortHandle;

/// Pairing streams one peer holds at once: a joiner opens one, and one more when the first
/// was lost in negotiation.
pub const MAX_PER_PEER: usize = 2;
/// Pairing streams waiting for their first message at once.
pub const MAX_WAITING: usize = 128;

#[derive(Debug, Default)]
struct Inner {
    per_peer: HashMap<PeerId, usize>,
    /// Streams waiting for their first message, oldest first, with the task to stop to
    /// drop one (once it is known).
    waiting: VecDeque<(u64, Option<AbortHandle>)>,
    next: u64,
}

/// The places of the pairing streams being served.
#[derive(Debug, Clone, Default)]
pub struct Places(Arc<Mutex<Inner>>);

/// One stream's place; given back on drop.
#[derive(Debug)]
pub struct Place {
    places: Places,
    peer: PeerId,
    id: u64,
}

impl Places {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new stream from `peer`, waiting for its first message; `None` when the
    /// peer holds as many as it may. The oldest waiting stream past [`MAX_WAITING`] is
    /// stopped.
    pub fn take(&self, peer: PeerId) -> Option<Place> {
        let mut inner = self.lock();
        let count = inner.per_peer.entry(peer).or_default();
        if *count >= MAX_PER_PEER {
            return None;
        }
        *count += 1;
        inner.next += 1;
        let id = inner.next;
        inner.waiting.push_back((id, None));
        while inner.waiting.len() > MAX_WAITING {
            if let Some((_, Some(task))) = inner.waiting.pop_front() {
                task.abort();
            }
        }
        Some(Place {
            places: self.clone(),
            peer,
            id,
        })
    }

    /// How many streams wait for their first message.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }
}

impl Place {
    /// Names the task serving this place, so that it can be stopped while it waits.
    pub fn served_by(&self, task: AbortHandle) {
        let mut inner = self.places.lock();
        if let Some(entry) = inner.waiting.iter_mut().find(|(id, _)| *id == self.id) {
            entry.1 = Some(task);
        }
    }

    /// The stream sent its first message: it no longer waits, and is not dropped for a
    /// newcomer. `false` when it was dropped already.
    pub fn started(&self) -> bool {
        let mut inner = self.places.lock();
        match inner.waiting.iter().position(|(id, _)| *id == self.id) {
            Some(i) => {
                inner.waiting.remove(i);
                true
            }
            None => false,
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut inner = self.places.lock();
        if let Some(i) = inner.waiting.iter().position(|(id, _)| *id == self.id) {
            inner.waiting.remove(i);
        }
        if let Some(count) = inner.per_peer.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                inner.per_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_holds_few_places() {
        let places = Places::default();
        let peer = PeerId::random();
        let held: Vec<Place> = (0..MAX_PER_PEER)
            .map(|_| places.take(peer).expect("room"))
            .collect();
        assert!(places.take(peer).is_none(), "one peer is capped");
        assert!(places.take(PeerId::random()).is_some(), "others are not");
        drop(held);
        assert!(places.take(peer).is_some(), "places are given back");
    }

    #[tokio::test]
    async fn the_oldest_idle_stream_makes_room_and_started_ones_stay() {
        let places = Places::default();
        let idle = || {
            let place = places.take(PeerId::random()).expect("room");
            let task = tokio::spawn(std::future::pending::<()>());
            place.served_by(task.abort_handle());
            (place, task)
        };
        let (started, _task) = idle();
        assert!(started.started(), "a stream that spoke no longer waits");
        let mut waiting: Vec<_> = (0..MAX_WAITING).map(|_| idle()).collect();
        assert_eq!(places.waiting(), MAX_WAITING);
        let (_newcomer, _task) = idle();
        assert_eq!(places.waiting(), MAX_WAITING, "the newcomer got a place");
        let (oldest, task) = waiting.remove(0);
        assert!(
            task.await.is_err_and(|e| e.is_cancelled()),
            "the oldest was stopped"
        );
        assert!(!oldest.started(), "and it knows");
        assert!(!waiting[0].1.is_finished(), "the others wait on");
    }
}
