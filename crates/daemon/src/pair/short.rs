//! Short pairing codes (`alpha 1-472-135-890`) for a device that already sees the inviter.
//!
//! The secret is about 30 bits: keying Noise with it directly would let anyone who saw the
//! joiner's first message (a stranger on the LAN answering as `alpha`) test every guess
//! offline. So it keys SPAKE2 first, bound to both peer IDs, and SPAKE2's key becomes the
//! Noise key: each guess costs the guesser one online attempt, and a short code is withdrawn
//! after [`MAX_FAILURES`] attempts that did not pair (the long code of the same invitation,
//! with its 128 bits, still works). The rest of pairing is the long code's (see `super`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use futures::{AsyncRead, AsyncWrite};
use loopsy_mesh::{Mesh, PeerId, framed};
use loopsy_wire::{
    control::Paired,
    pair::{INVITE_ID_LEN, MAX_FRAME, MAX_NAMEPLATE, MAX_PAKE, Message, ShortCode, short_psk},
};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use tokio::sync::oneshot;

use super::{
    Invitations, JoinError, PairError, Pairing, TOO_MANY, client::open_pair_stream,
    handshake::CryptoError, invitations::Claim, receive, send, unexpected,
};
use crate::caps::Caps;

/// Attempts on one short code that may fail before it is withdrawn: a mistyped digit or
/// two is forgiven, and a guesser's odds stay at 3 in 10^9 per code.
pub const MAX_FAILURES: u32 = 3;

/// What the joiner is told about a short code that is not open.
const UNKNOWN: &str = "unknown, used or withdrawn short pairing code; make a new one with \
                       `loopsy pair` on the other device";

/// The open short codes of a node, by nameplate.
#[derive(Debug, Default, Clone)]
pub struct ShortCodes {
    open: Arc<Mutex<HashMap<u16, Entry>>>,
}

#[derive(Debug)]
struct Entry {
    invite: [u8; INVITE_ID_LEN],
    secret: u32,
    /// Wrong attempts so far; at [`MAX_FAILURES`] the code is withdrawn, but its
    /// nameplate stays taken until its guard drops (the guard removes by nameplate).
    failures: u32,
    /// Told when the code is withdrawn for its failures.
    withdrawn: Option<oneshot::Sender<()>>,
}

/// Withdraws its short code when dropped (the invitation ended); tells when the code was
/// withdrawn for its failures.
#[derive(Debug)]
pub struct Withdraw {
    open: Arc<Mutex<HashMap<u16, Entry>>>,
    nameplate: u16,
    withdrawn: Option<oneshot::Receiver<()>>,
}

impl Withdraw {
    /// Returns once the short code is withdrawn after [`MAX_FAILURES`] failed attempts;
    /// never otherwise.
    pub async fn withdrawn(&mut self) {
        if let Some(told) = self.withdrawn.as_mut()
            && told.await.is_ok()
        {
            self.withdrawn = None;
            return;
        }
        self.withdrawn = None;
        std::future::pending().await
    }
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        lock(&self.open).remove(&self.nameplate);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What is left of a short code after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    Tries(u32),
    Withdrawn,
}

impl ShortCodes {
    /// Opens a short code for the invitation `invite`: the lowest free nameplate and a fresh
    /// secret.
    fn open(&self, invite: [u8; INVITE_ID_LEN]) -> Result<(u16, u32, Withdraw), String> {
        let secret = random_secret()?;
        let mut open = lock(&self.open);
        let nameplate = (1..=MAX_NAMEPLATE)
            .find(|n| !open.contains_key(n))
            .ok_or("too many short pairing codes are open")?;
        let (told, withdrawn) = oneshot::channel();
        open.insert(
            nameplate,
            Entry {
                invite,
                secret,
                failures: 0,
                withdrawn: Some(told),
            },
        );
        let withdraw = Withdraw {
            open: self.open.clone(),
            nameplate,
            withdrawn: Some(withdrawn),
        };
        Ok((nameplate, secret, withdraw))
    }

    /// The invitation and secret of an open short code (not withdrawn).
    fn lookup(&self, nameplate: u16) -> Option<([u8; INVITE_ID_LEN], u32)> {
        lock(&self.open)
            .get(&nameplate)
            .filter(|e| e.failures < MAX_FAILURES)
            .map(|e| (e.invite, e.secret))
    }

    /// Counts a failed attempt, withdrawing the code at [`MAX_FAILURES`].
    fn failed(&self, nameplate: u16) -> Left {
        let mut open = lock(&self.open);
        let Some(entry) = open
            .get_mut(&nameplate)
            .filter(|e| e.failures < MAX_FAILURES)
        else {
            return Left::Withdrawn;
        };
        entry.failures += 1;
        if entry.failures < MAX_FAILURES {
            return Left::Tries(MAX_FAILURES - entry.failures);
        }
        if let Some(told) = entry.withdrawn.take() {
            let _ = told.send(());
        }
        tracing::warn!(
            nameplate,
            "a short pairing code failed {MAX_FAILURES} times; it is withdrawn"
        );
        Left::Withdrawn
    }
}

/// A secret of [`loopsy_wire::pair::SHORT_DIGITS`] digits, uniform.
fn random_secret() -> Result<u32, String> {
    // The largest multiple of 10^9 below 2^32: drawing under it keeps every value as likely.
    const BOUND: u32 = 4_000_000_000;
    loop {
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
        let n = u32::from_be_bytes(bytes);
        if n < BOUND {
            return Ok(n % 1_000_000_000);
        }
    }
}

impl Invitations {
    /// A short code for the invitation of `claim`, named after this device; withdrawn when
    /// the returned guard drops.
    pub fn open_short(&self, claim: &Claim, name: &str) -> Result<(ShortCode, Withdraw), String> {
        if name.trim().is_empty() {
            return Err("this device has no name to put in a short code".into());
        }
        let (nameplate, secret, withdraw) = self.short.open(claim.id)?;
        let code = ShortCode {
            name: name.to_owned(),
            nameplate,
            secret,
        };
        Ok((code, withdraw))
    }
}

/// SPAKE2, joiner's side ("A"), bound to both peer IDs.
fn pake_joiner(code: &ShortCode, joiner: &[u8], inviter: &[u8]) -> (Spake2<Ed25519Group>, Vec<u8>) {
    Spake2::<Ed25519Group>::start_a(
        &Password::new(code.password()),
        &Identity::new(joiner),
        &Identity::new(inviter),
    )
}

/// SPAKE2, inviter's side ("B").
fn pake_inviter(
    code: &ShortCode,
    joiner: &[u8],
    inviter: &[u8],
) -> (Spake2<Ed25519Group>, Vec<u8>) {
    Spake2::<Ed25519Group>::start_b(
        &Password::new(code.password()),
        &Identity::new(joiner),
        &Identity::new(inviter),
    )
}

/// The Noise key from the other side's SPAKE2 message; fails on a malformed one (a wrong
/// code does not fail here: it yields another key, which the handshake then refuses).
fn pake_finish(state: Spake2<Ed25519Group>, theirs: &[u8]) -> Result<[u8; 32], CryptoError> {
    if theirs.len() > MAX_PAKE {
        return Err(CryptoError("SPAKE2 message too large".into()));
    }
    let key = state
        .finish(theirs)
        .map_err(|e| CryptoError(format!("malformed SPAKE2 message: {e:?}")))?;
    Ok(short_psk(&key))
}

/// Ends an inviter's attempt on a short code: unless [`Attempt::paired`] was called, the
/// claim is released and the failure counted, even when the attempt is dropped at its
/// deadline (a joiner that stalls costs its code a try, as a wrong one does).
struct Attempt<'a> {
    invitations: &'a Invitations,
    claim: Claim,
    nameplate: u16,
    open: bool,
}

impl Attempt<'_> {
    fn paired(mut self, paired: Paired) {
        self.open = false;
        self.invitations.complete(&self.claim, paired);
    }

    fn failed(mut self) -> Left {
        self.open = false;
        self.invitations.release(&self.claim);
        self.invitations.short.failed(self.nameplate)
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.open {
            self.invitations.release(&self.claim);
            self.invitations.short.failed(self.nameplate);
        }
    }
}

impl Pairing {
    /// A short code for the invitation of `claim`, named after this device; withdrawn when
    /// the returned guard drops.
    pub fn open_short(&self, claim: &Claim) -> Result<(ShortCode, Withdraw), String> {
        self.invitations.open_short(claim, &self.name)
    }

    /// Serves a joiner's [`Message::ShortStart`]: claims the short code's invitation, runs
    /// SPAKE2, then the long code's handshake keyed by its result.
    pub(super) async fn answer_short<S>(
        &self,
        peer: PeerId,
        stream: &mut S,
        nameplate: u16,
        pake: &[u8],
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some((invite, secret)) = self.invitations.short.lookup(nameplate) else {
            let reason = match self.attempts.allow_peer_only(peer) {
                true => UNKNOWN,
                false => TOO_MANY,
            };
            return self.deny(peer, stream, reason).await;
        };
        let claim = match self.claim(peer, &invite) {
            Ok(claim) => claim,
            Err(reason) => return self.deny(peer, stream, &reason).await,
        };
        let attempt = Attempt {
            invitations: &self.invitations,
            claim,
            nameplate,
            open: true,
        };
        let code = ShortCode {
            name: String::new(),
            nameplate,
            secret,
        };
        match self
            .short_handshake(peer, stream, &attempt.claim, &code, pake)
            .await
        {
            Ok(paired) => {
                self.record_invited(peer, &paired);
                attempt.paired(paired);
            }
            Err(reason) => {
                let said = match attempt.failed() {
                    Left::Tries(1) => {
                        format!("{reason}; one more try before the short code is withdrawn")
                    }
                    Left::Tries(n) => {
                        format!("{reason}; {n} more tries before the short code is withdrawn")
                    }
                    Left::Withdrawn => format!(
                        "{reason}; the short code is now withdrawn: make a new one with \
                         `loopsy pair` on the other device (its long code still works)"
                    ),
                };
                self.deny(peer, stream, &said).await;
            }
        }
    }

    async fn short_handshake<S>(
        &self,
        peer: PeerId,
        stream: &mut S,
        claim: &Claim,
        code: &ShortCode,
        theirs: &[u8],
    ) -> Result<Paired, PairError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let me = self.me.to_bytes();
        let (state, mine) = pake_inviter(code, &peer.to_bytes(), &me);
        let psk = pake_finish(state, theirs)?;
        send(stream, &Message::Pake { pake: mine }).await?;
        let noise = match framed::read(stream, MAX_FRAME).await {
            Ok(Some(Message::Noise { noise })) => noise,
            _ => return Err(PairError::BrokeOff),
        };
        self.inviter_handshake(peer, stream, claim, &psk, &noise)
            .await
    }

    /// The one device in sight (connected, or announced on the LAN) that goes by `name`.
    async fn find(&self, mesh: &Mesh, name: &str) -> Result<PeerId, JoinError> {
        let peers = mesh
            .peers()
            .await
            .map_err(|e| JoinError::Failed(e.to_string()))?;
        let named: Vec<PeerId> = peers
            .iter()
            .filter(|p| p.is_connected() || p.on_lan)
            .filter(|p| p.name.as_deref().is_some_and(|n| same_name(n, name)))
            .map(|p| p.peer_id)
            .collect();
        match named[..] {
            [peer] => Ok(peer),
            [] if same_name(&self.name, name) => Err(JoinError::OwnCode),
            [] => Err(FindError::NotInSight(name.to_owned()).into()),
            _ => Err(FindError::Several {
                name: name.to_owned(),
                count: named.len(),
                ids: named
                    .iter()
                    .map(|p| p.to_base58())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
            .into()),
        }
    }

    /// Pairs with the device in sight that shows `code`, granting it `allow` (or the
    /// defaults).
    pub(super) async fn join_short(
        &self,
        mesh: &Mesh,
        code: &ShortCode,
        allow: Option<Caps>,
    ) -> Result<Paired, JoinError> {
        let inviter = self.find(mesh, &code.name).await?;
        self.audited_join(inviter, self.join_peer(mesh, inviter, code, allow))
            .await
    }

    async fn join_peer(
        &self,
        mesh: &Mesh,
        inviter: PeerId,
        code: &ShortCode,
        allow: Option<Caps>,
    ) -> Result<Paired, JoinError> {
        let mut stream = open_pair_stream(mesh, inviter, Vec::new()).await?;
        self.short_handshake_as_joiner(&mut stream, inviter, code, allow)
            .await
    }

    /// The joiner's side of a short code on an open pairing stream to `inviter`: SPAKE2,
    /// then the handshake keyed by it, and the pairing recorded.
    pub(super) async fn short_handshake_as_joiner<S>(
        &self,
        stream: &mut S,
        inviter: PeerId,
        code: &ShortCode,
        allow: Option<Caps>,
    ) -> Result<Paired, JoinError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (state, mine) = pake_joiner(code, &self.me.to_bytes(), &inviter.to_bytes());
        let start = Message::ShortStart {
            nameplate: code.nameplate,
            pake: mine,
        };
        let sent = send(stream, &start).await;
        let theirs = match (receive(stream).await, sent) {
            (Ok(Message::Pake { pake }), _) => pake,
            (Ok(other), _) => return Err(unexpected(other)),
            (Err(_), Err(send_error)) => return Err(JoinError::Failed(send_error.to_string())),
            (Err(e), Ok(())) => return Err(e),
        };
        let psk = pake_finish(state, &theirs).map_err(|e| JoinError::Failed(e.0))?;
        self.joiner_noise(stream, inviter, &psk, allow, |noise| Message::Noise {
            noise,
        })
        .await
    }
}

/// Why no device could be picked for a short code's name.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error(
        "no device named '{0}' is in sight (see `loopsy peers`); on the same network it \
         shows up within seconds, otherwise use the long code (LOOPSY1-...)"
    )]
    NotInSight(String),
    #[error(
        "{count} devices in sight are named '{name}' ({ids}); use the long code \
         (LOOPSY1-...) to pick the right one"
    )]
    Several {
        name: String,
        count: usize,
        ids: String,
    },
}

/// Names as people type them: case aside, and the spaces around them.
fn same_name(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;

    /// Whether `future` is ready at its first poll.
    fn ready_at_once(future: impl std::future::Future<Output = ()>) -> bool {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        future.as_mut().poll(&mut cx).is_ready()
    }

    fn code(secret: u32) -> ShortCode {
        ShortCode {
            name: "alpha".into(),
            nameplate: 1,
            secret,
        }
    }

    /// Both sides' Noise keys: the joiner's with `joiner_code` and its view of the peer IDs,
    /// the inviter's with `inviter_code` and its own view.
    fn keys(
        joiner_code: u32,
        inviter_code: u32,
        joiner_view: (&[u8], &[u8]),
        inviter_view: (&[u8], &[u8]),
    ) -> ([u8; 32], [u8; 32]) {
        let (j, j_msg) = pake_joiner(&code(joiner_code), joiner_view.0, joiner_view.1);
        let (i, i_msg) = pake_inviter(&code(inviter_code), inviter_view.0, inviter_view.1);
        (
            pake_finish(j, &i_msg).unwrap(),
            pake_finish(i, &j_msg).unwrap(),
        )
    }

    /// Whether the Noise handshake keyed by the two keys gets past the joiner's first
    /// message, as the inviter checks it.
    fn noise_agrees(joiner_psk: [u8; 32], inviter_psk: [u8; 32]) -> bool {
        let mut j = super::super::handshake::joiner(&joiner_psk, b"I", b"J").unwrap();
        let mut i = super::super::handshake::inviter(&inviter_psk, b"I", b"J").unwrap();
        let first = super::super::handshake::write(&mut j, &[]).unwrap();
        super::super::handshake::read(&mut i, &first).is_ok()
    }

    #[test]
    fn the_right_code_gives_both_sides_one_key() {
        let (j, i) = keys(472_135_890, 472_135_890, (b"J", b"I"), (b"J", b"I"));
        assert_eq!(j, i);
        assert!(noise_agrees(j, i));
    }

    #[test]
    fn a_wrong_code_fails_the_handshake() {
        let (j, i) = keys(472_135_891, 472_135_890, (b"J", b"I"), (b"J", b"I"));
        assert_ne!(j, i);
        assert!(!noise_agrees(j, i));
    }

    #[test]
    fn the_key_is_bound_to_both_peer_ids() {
        // A device in the middle, relaying to a third one, changes one end or the other.
        for (joiner_view, inviter_view) in [
            ((&b"J"[..], &b"I"[..]), (&b"M"[..], &b"I"[..])),
            ((b"J", b"I"), (b"J", b"M")),
            ((b"J", b"I"), (b"I", b"J")),
        ] {
            let (j, i) = keys(1, 1, joiner_view, inviter_view);
            assert_ne!(j, i, "{joiner_view:?} against {inviter_view:?}");
        }
    }

    #[test]
    fn a_malformed_pake_message_is_refused() {
        for garbage in [&[][..], &[0x41; 33], &[0x42; 200], &[0x41; 3]] {
            let (i, _) = pake_inviter(&code(1), b"J", b"I");
            assert!(pake_finish(i, garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn secrets_have_nine_digits_and_vary() {
        let secrets: Vec<u32> = (0..64).map(|_| random_secret().unwrap()).collect();
        assert!(secrets.iter().all(|s| *s < 1_000_000_000));
        let mut distinct = secrets.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 60, "{secrets:?}");
    }

    #[test]
    fn a_short_code_is_withdrawn_after_its_failures_and_with_its_invitation() {
        let invitations = Invitations::default();
        let (claim, _events, _withdraw) = invitations
            .open(clock::now_secs() + 60, None, false)
            .unwrap();
        let (code, mut withdraw_short) = invitations.open_short(&claim, "alpha").unwrap();
        assert_eq!(code.nameplate, 1, "the lowest nameplate is free");
        let (second, _keep) = invitations.open_short(&claim, "alpha").unwrap();
        assert_eq!(second.nameplate, 2);
        let short = &invitations.short;
        assert_eq!(short.lookup(1), Some((claim.id, code.secret)));
        assert_eq!(short.failed(1), Left::Tries(2));
        assert_eq!(short.failed(1), Left::Tries(1));
        assert_eq!(short.failed(1), Left::Withdrawn);
        assert_eq!(short.lookup(1), None, "withdrawn after {MAX_FAILURES}");
        assert!(short.lookup(2).is_some(), "the other code is not");
        assert!(
            ready_at_once(withdraw_short.withdrawn()),
            "the inviter is told"
        );
        drop(withdraw_short);
        let (third, mut withdraw) = invitations.open_short(&claim, "alpha").unwrap();
        assert!(!ready_at_once(withdraw.withdrawn()), "not before");
        assert_eq!(third.nameplate, 1, "a nameplate is free again");
        drop(withdraw);
        assert_eq!(short.lookup(1), None, "gone with its guard");
    }

    #[test]
    fn a_withdrawn_code_ending_late_leaves_the_next_code_alone() {
        let invitations = Invitations::default();
        let open = || {
            invitations
                .open(clock::now_secs() + 60, None, false)
                .unwrap()
        };
        let (first, _events, _withdraw) = open();
        let (code, withdraw_first) = invitations.open_short(&first, "alpha").unwrap();
        for _ in 0..MAX_FAILURES {
            invitations.short.failed(code.nameplate);
        }
        // Another `loopsy pair` opens a short code while the first one's invitation (its
        // long code) still waits; then the first invitation ends.
        let (second, _events, _withdraw) = open();
        let (next, _keep) = invitations.open_short(&second, "alpha").unwrap();
        drop(withdraw_first);
        assert_eq!(
            invitations.short.lookup(next.nameplate),
            Some((second.id, next.secret)),
            "the second code still works"
        );
    }

    #[test]
    fn a_dropped_attempt_counts_as_a_failure_and_frees_the_invitation() {
        let invitations = Invitations::default();
        let (claim, _events, _withdraw) = invitations
            .open(clock::now_secs() + 60, None, false)
            .unwrap();
        let (code, _short) = invitations.open_short(&claim, "alpha").unwrap();
        let attempt = Attempt {
            invitations: &invitations,
            claim: invitations.claim(&claim.id).unwrap(),
            nameplate: code.nameplate,
            open: true,
        };
        drop(attempt);
        assert!(invitations.claim(&claim.id).is_ok(), "released");
        assert_eq!(invitations.short.failed(code.nameplate), Left::Tries(1));
    }
}
