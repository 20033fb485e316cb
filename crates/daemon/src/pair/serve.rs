//! The inviter's side of pairing: answer joiners of this device's invitations, within
//! limits on attempts (see `places` and the rate limit), and record the pairings.

use std::sync::Arc;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, StreamExt};
use loopsy_mesh::{Mesh, PeerId, framed};
use loopsy_wire::{
    control::Paired,
    pair::{self, Done, Hello, MAX_FRAME, Message},
    protocol,
};

use super::{
    DEADLINE, MAX_ATTEMPTS_AT_ONCE, PairError, Pairing, START_DEADLINE, TOO_MANY, handshake,
    invitations, places, refuse, send,
};
use crate::audit::Outcome;

impl Pairing {
    /// Answers pairing streams until the mesh stops; every attempt's task is this loop's.
    pub async fn serve(self: Arc<Self>, mesh: Mesh) {
        let Some(mut incoming) = mesh.accept(protocol::PAIR) else {
            return;
        };
        // Anyone may open a pair stream, and each may take up to DEADLINE: cap them, and
        // keep silent ones from crowding joiners out (see `places`).
        let places = places::Places::default();
        let mut attempts = tokio::task::JoinSet::new();
        loop {
            let (peer, stream) = tokio::select! {
                next = incoming.next() => match next {
                    Some(next) => next,
                    None => break,
                },
                Some(_) = attempts.join_next(), if !attempts.is_empty() => continue,
            };
            if attempts.len() >= MAX_ATTEMPTS_AT_ONCE {
                tracing::debug!(%peer, "too many pairing attempts at once; dropping one");
                continue;
            }
            let Some(place) = places.take(peer) else {
                tracing::debug!(%peer, "too many pairing streams from one peer; dropping one");
                continue;
            };
            let (place, pairing) = (Arc::new(place), self.clone());
            let task = attempts.spawn({
                let place = place.clone();
                async move {
                    if tokio::time::timeout(DEADLINE, pairing.attempt(peer, stream, &place))
                        .await
                        .is_err()
                    {
                        tracing::debug!(%peer, "pairing attempt timed out");
                    }
                }
            });
            place.served_by(task);
        }
    }

    /// Serves one pairing stream, from its first message on.
    async fn attempt<S>(&self, peer: PeerId, mut stream: S, place: &places::Place)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // The first frame is read even from a peer about to be refused: a stream closed unread
        // can stop the peer's write (QUIC's STOP_SENDING) before it reads the refusal.
        let start = match tokio::time::timeout(START_DEADLINE, framed::read(&mut stream, MAX_FRAME))
            .await
        {
            Ok(start) => start,
            Err(_) => return,
        };
        if !place.started() {
            return;
        }
        self.answer(peer, &mut stream, start).await;
    }

    /// Answers a joiner's start: refused, or the handshake and the pairing recorded.
    pub(super) async fn answer<S>(
        &self,
        peer: PeerId,
        stream: &mut S,
        start: Result<Option<Message>, framed::ReadError>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // An attempt that names no open invitation costs its peer alone; one on an open
        // invitation counts overall too, before its secret is tried.
        let (invite, noise) = match start {
            Ok(Some(Message::Start { invite, noise })) => (invite, noise),
            // Short codes (see `short`).
            Ok(Some(Message::ShortStart { nameplate, pake })) => {
                return self.answer_short(peer, stream, nameplate, &pake).await;
            }
            other => {
                let (reason, said) = if !self.attempts.allow_peer_only(peer) {
                    (TOO_MANY.to_owned(), TOO_MANY)
                } else if let Err(e) = other {
                    (
                        format!("malformed pairing request: {e}"),
                        "malformed pairing request",
                    )
                } else {
                    (
                        "malformed pairing request".to_owned(),
                        "expected a pairing start",
                    )
                };
                self.audit.refuse_stranger(peer, "pair", "", reason.clone());
                refuse(stream, said).await;
                return;
            }
        };
        let claim = match self.claim(peer, &invite) {
            Ok(claim) => claim,
            Err(reason) => return self.deny(peer, stream, &reason).await,
        };
        let psk = pair::psk(&claim.id, &claim.secret);
        match self
            .inviter_handshake(peer, stream, &claim, &psk, &noise)
            .await
        {
            Ok(paired) => {
                self.record_invited(peer, &paired);
                self.invitations.complete(&claim, paired);
            }
            Err(reason) => {
                self.invitations.release(&claim);
                self.deny(peer, stream, &reason.to_string()).await;
            }
        }
    }

    /// Takes the invitation `invite` for `peer`'s attempt, within the rate limits; the
    /// refusal to tell otherwise.
    pub(super) fn claim(&self, peer: PeerId, invite: &[u8]) -> Result<invitations::Claim, String> {
        match self.invitations.claim(invite) {
            Ok(claim) if self.attempts.allow(peer) => Ok(claim),
            Ok(claim) => {
                self.invitations.release(&claim);
                Err(TOO_MANY.to_owned())
            }
            Err(_) if !self.attempts.allow_peer_only(peer) => Err(TOO_MANY.to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Refuses a pairing attempt, in the audit log and to the peer. A joiner is most often
    /// a stranger, and fresh peer IDs cost nothing: refusals are written within the audit
    /// log's limits on strangers.
    pub(super) async fn deny<S>(&self, peer: PeerId, stream: &mut S, reason: &str)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.audit
            .refuse_stranger(peer, "pair", "", reason.to_owned());
        refuse(stream, reason).await;
    }

    pub(super) fn record_invited(&self, peer: PeerId, paired: &Paired) {
        self.audit.record(
            Some(peer),
            Some(paired.name.clone()),
            "pair",
            "invited",
            Outcome::Ok,
            None,
        );
    }

    /// The inviter's Noise handshake, keyed by `psk`, from the joiner's first message.
    pub(super) async fn inviter_handshake<S>(
        &self,
        peer: PeerId,
        stream: &mut S,
        claim: &invitations::Claim,
        psk: &[u8; 32],
        noise: &[u8],
    ) -> Result<Paired, PairError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let me = self.me.to_bytes();
        let mut hs = handshake::inviter(psk, &me, &peer.to_bytes())?;
        handshake::read(&mut hs, noise).map_err(|_| PairError::WrongCode)?;
        let grants = self.grants_for(claim.allow.as_ref(), &peer);
        let hello = self.hello(&grants).await;
        let mut payload = Vec::new();
        ciborium::into_writer(&hello, &mut payload)
            .map_err(|e| PairError::Encode(e.to_string()))?;
        let reply = handshake::write(&mut hs, &payload)?;
        send(stream, &Message::Noise { noise: reply }).await?;
        let check_code = pair::check_code(hs.get_handshake_hash());
        let mut transport = hs
            .into_transport_mode()
            .map_err(|e| PairError::Crypto(format!("{e:?}")))?;

        let theirs: Hello = match framed::read(stream, MAX_FRAME).await {
            Ok(Some(Message::Sealed { data })) => handshake::open(&mut transport, &data)?,
            _ => return Err(PairError::BrokeOff),
        };
        // Not spread to the joiner: it does not trust this device until it reads `Done`, and
        // it reconciles with this device once it does.
        let name = self.record_pairing(peer, &theirs, claim.allow.as_ref(), Some(peer))?;
        let done = handshake::seal(&mut transport, &Done { ok: true })?;
        send(stream, &Message::Sealed { data: done }).await?;
        let _ = stream.close().await;
        Ok(Paired {
            peer_id: peer.to_base58(),
            name,
            check_code,
        })
    }
}
