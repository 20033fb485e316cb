//! Open invitations, and the rate limit on pairing attempts.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use loopsy_mesh::PeerId;
use loopsy_wire::{
    control::Paired,
    pair::{INVITE_ID_LEN, SECRET_LEN},
};
use tokio::sync::mpsc;

use crate::{caps::Caps, clock};

/// Pairings reported per invitation before the waiting client reads them.
const EVENT_BUFFER: usize = 16;
/// Most invitations open at once.
const MAX_OPEN: usize = 32;

/// An invitation, as a joiner's claim gets it.
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: [u8; INVITE_ID_LEN],
    pub secret: [u8; SECRET_LEN],
    /// What to grant the joiner; `None` for the defaults.
    pub allow: Option<Caps>,
    multi: bool,
    events: mpsc::Sender<Paired>,
}

#[derive(Debug)]
struct Open {
    claim: Claim,
    expires: u64,
    busy: bool,
}

/// Why a claim was refused (said to the joiner).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("unknown, used or withdrawn pairing code")]
    Unknown,
    #[error("the pairing code has expired")]
    Expired,
    #[error("the pairing code is being used by another device right now")]
    Busy,
}

/// The open invitations of a node.
#[derive(Debug, Default, Clone)]
pub struct Invitations {
    open: Arc<Mutex<HashMap<[u8; INVITE_ID_LEN], Open>>>,
    /// Their short codes (see `short`).
    pub(super) short: super::short::ShortCodes,
}

/// Withdraws its invitation when dropped (the `loopsy pair` client went away).
#[derive(Debug)]
pub struct Withdraw {
    open: Arc<Mutex<HashMap<[u8; INVITE_ID_LEN], Open>>>,
    id: [u8; INVITE_ID_LEN],
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        lock(&self.open).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An invitation could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no randomness for a code: {0}")]
    Random(String),
    #[error("{0} invitations are open already")]
    TooMany(usize),
}

impl Invitations {
    /// Opens an invitation with fresh random ID and secret.
    pub fn open(
        &self,
        expires: u64,
        allow: Option<Caps>,
        multi: bool,
    ) -> Result<(Claim, mpsc::Receiver<Paired>, Withdraw), OpenError> {
        let mut id = [0u8; INVITE_ID_LEN];
        let mut secret = [0u8; SECRET_LEN];
        getrandom::fill(&mut id).map_err(|e| OpenError::Random(e.to_string()))?;
        getrandom::fill(&mut secret).map_err(|e| OpenError::Random(e.to_string()))?;
        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        let claim = Claim {
            id,
            secret,
            allow,
            multi,
            events,
        };
        let mut open = lock(&self.open);
        let now = clock::now_secs();
        open.retain(|_, o| o.expires > now);
        if open.len() >= MAX_OPEN {
            return Err(OpenError::TooMany(MAX_OPEN));
        }
        open.insert(
            id,
            Open {
                claim: claim.clone(),
                expires,
                busy: false,
            },
        );
        let withdraw = Withdraw {
            open: self.open.clone(),
            id,
        };
        Ok((claim, receiver, withdraw))
    }

    /// Takes the invitation for one pairing attempt; [`Invitations::release`] or
    /// [`Invitations::complete`] ends the attempt.
    pub fn claim(&self, id: &[u8]) -> Result<Claim, ClaimError> {
        let mut open = lock(&self.open);
        let Some(entry) = <[u8; INVITE_ID_LEN]>::try_from(id)
            .ok()
            .and_then(|id| open.get_mut(&id))
        else {
            return Err(ClaimError::Unknown);
        };
        if entry.expires <= clock::now_secs() {
            return Err(ClaimError::Expired);
        }
        if entry.busy {
            return Err(ClaimError::Busy);
        }
        entry.busy = true;
        Ok(entry.claim.clone())
    }

    /// Ends a failed attempt: the invitation can be used again.
    pub fn release(&self, claim: &Claim) {
        if let Some(entry) = lock(&self.open).get_mut(&claim.id) {
            entry.busy = false;
        }
    }

    /// Ends a successful attempt: tells the waiting client, and closes a single-use
    /// invitation.
    pub fn complete(&self, claim: &Claim, paired: Paired) {
        let _ = claim.events.try_send(paired);
        let mut open = lock(&self.open);
        if claim.multi {
            if let Some(entry) = open.get_mut(&claim.id) {
                entry.busy = false;
            }
        } else {
            open.remove(&claim.id);
        }
    }
}

/// A sliding-window limit on pairing attempts, per peer and overall, so that nobody can
/// try codes quickly (the 128-bit secret makes guessing hopeless anyway).
///
/// Only an attempt on an open invitation (one that tries its secret) counts overall: one
/// that names none costs its peer alone, or throwaway identities sending garbage would
/// spend the overall budget and lock every real joiner out.
#[derive(Debug)]
pub struct RateLimit {
    per_peer: usize,
    overall: usize,
    window: Duration,
    seen: Mutex<Attempts>,
}

/// Most peers whose recent attempts are remembered: past it, the one that tried least
/// recently is forgotten (as good as a fresh identity, which costs nothing anyway).
const MAX_PEERS_REMEMBERED: usize = 4096;

/// When recent attempts were made, per peer and overall.
#[derive(Debug, Default)]
struct Attempts {
    per_peer: HashMap<PeerId, VecDeque<Instant>>,
    overall: VecDeque<Instant>,
}

impl RateLimit {
    pub fn new(per_peer: usize, overall: usize, window: Duration) -> Self {
        Self {
            per_peer,
            overall,
            window,
            seen: Mutex::new(Attempts::default()),
        }
    }

    /// Counts an attempt by `peer` on an open invitation; `false` when it is over either
    /// limit.
    pub fn allow(&self, peer: PeerId) -> bool {
        self.charge(peer, true)
    }

    /// Counts an attempt by `peer` that names no open invitation (or is no pairing start
    /// at all): against the peer's limit only.
    pub fn allow_peer_only(&self, peer: PeerId) -> bool {
        self.charge(peer, false)
    }

    fn charge(&self, peer: PeerId, overall: bool) -> bool {
        let now = Instant::now();
        let mut seen = lock(&self.seen);
        let Attempts {
            per_peer: peers,
            overall: all,
        } = &mut *seen;
        let fresh = |q: &mut VecDeque<Instant>| {
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) > self.window)
            {
                q.pop_front();
            }
        };
        fresh(all);
        if let Some(mine) = peers.get_mut(&peer) {
            fresh(mine);
        } else if peers.len() >= MAX_PEERS_REMEMBERED {
            peers.retain(|_, q| {
                fresh(q);
                !q.is_empty()
            });
            if peers.len() >= MAX_PEERS_REMEMBERED {
                let least_recent = peers
                    .iter()
                    .min_by_key(|(_, q)| q.back().copied())
                    .map(|(p, _)| *p);
                if let Some(p) = least_recent {
                    peers.remove(&p);
                }
            }
        }
        let mine = peers.entry(peer).or_default();
        if mine.len() >= self.per_peer || (overall && all.len() >= self.overall) {
            return false;
        }
        mine.push_back(now);
        if overall {
            all.push_back(now);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_use_invitation_is_gone_after_one_pairing() {
        let invitations = Invitations::default();
        let (claim, mut events, _withdraw) = invitations
            .open(clock::now_secs() + 60, None, false)
            .unwrap();
        let taken = invitations.claim(&claim.id).unwrap();
        assert_eq!(invitations.claim(&claim.id).unwrap_err(), ClaimError::Busy);
        invitations.release(&taken);
        let taken = invitations.claim(&claim.id).unwrap();
        let paired = Paired {
            peer_id: "p".into(),
            name: "n".into(),
            check_code: "000 000".into(),
        };
        invitations.complete(&taken, paired.clone());
        assert_eq!(events.try_recv().unwrap(), paired);
        assert_eq!(
            invitations.claim(&claim.id).unwrap_err(),
            ClaimError::Unknown
        );
    }

    #[test]
    fn expired_and_withdrawn_invitations_refuse() {
        let invitations = Invitations::default();
        let (old, _e, _w) = invitations
            .open(clock::now_secs() - 1, None, false)
            .unwrap();
        assert_eq!(invitations.claim(&old.id).unwrap_err(), ClaimError::Expired);
        let (live, _e, withdraw) = invitations
            .open(clock::now_secs() + 60, None, true)
            .unwrap();
        drop(withdraw);
        assert_eq!(
            invitations.claim(&live.id).unwrap_err(),
            ClaimError::Unknown
        );
        assert_eq!(
            invitations.claim(b"short").unwrap_err(),
            ClaimError::Unknown
        );
    }

    #[test]
    fn attempts_are_limited_per_peer_and_overall() {
        let limit = RateLimit::new(2, 3, Duration::from_secs(60));
        let (a, b) = (PeerId::random(), PeerId::random());
        assert!(limit.allow(a) && limit.allow(a));
        assert!(!limit.allow(a), "third attempt by one peer");
        assert!(limit.allow(b));
        assert!(!limit.allow(b), "over the overall limit");
    }

    #[test]
    fn attempts_that_name_no_invitation_cost_only_their_peer() {
        let limit = RateLimit::new(5, 30, Duration::from_secs(60));
        // Six throwaway identities, each spending its whole budget on garbage.
        for _ in 0..6 {
            let throwaway = PeerId::random();
            for _ in 0..5 {
                assert!(limit.allow_peer_only(throwaway));
            }
            assert!(!limit.allow_peer_only(throwaway), "each is stopped");
            assert!(!limit.allow(throwaway), "on real invitations too");
        }
        assert!(limit.allow(PeerId::random()), "the real joiner is not");
    }

    #[test]
    fn the_peers_remembered_are_bounded() {
        let limit = RateLimit::new(1, usize::MAX, Duration::from_secs(60));
        let first = PeerId::random();
        assert!(limit.allow_peer_only(first));
        assert!(!limit.allow_peer_only(first));
        for _ in 0..MAX_PEERS_REMEMBERED {
            assert!(limit.allow_peer_only(PeerId::random()));
        }
        assert_eq!(lock(&limit.seen).per_peer.len(), MAX_PEERS_REMEMBERED);
        assert!(
            limit.allow_peer_only(first),
            "the least recent was forgotten"
        );
    }
}
