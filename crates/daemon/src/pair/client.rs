//! The joiner's side of pairing: use another device's code to reach it, run the
//! handshake, and record the pairing.

use futures::{AsyncRead, AsyncWrite};
use loopsy_mesh::{Mesh, Multiaddr, OpenStreamError, PeerId};
use loopsy_wire::{
    control::Paired,
    pair::{self, Code, CodeError, Done, Hello, Message, ShortCode, ShortCodeError},
    protocol,
};

use super::{CONNECT_DEADLINE, DEADLINE, JoinError, Pairing, handshake, receive, send, unexpected};
use crate::{audit::Outcome, caps::Caps, clock};

impl Pairing {
    /// Pairs with the device that made `text` (a long code, or a short one for a device in
    /// sight), granting it `allow` (or the defaults).
    pub async fn join(
        &self,
        mesh: &Mesh,
        text: &str,
        allow: Option<Caps>,
    ) -> Result<Paired, JoinError> {
        // Short codes (see `short`).
        match ShortCode::from_text(text) {
            Ok(short) => return self.join_short(mesh, &short, allow).await,
            Err(ShortCodeError::NotShort) => {}
            Err(mistyped) => return Err(mistyped.into()),
        }
        let code = Code::from_text(text)?;
        let inviter = PeerId::from_bytes(&code.inviter)
            .map_err(|_| CodeError::Malformed("inviter peer ID"))?;
        if inviter == self.me {
            return Err(JoinError::OwnCode);
        }
        if code.expires <= clock::now_secs() {
            return Err(JoinError::Expired(clock::rfc3339(code.expires)));
        }
        let addrs: Vec<Multiaddr> = code
            .addrs
            .iter()
            .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
            .collect();
        self.audited_join(
            inviter,
            self.joiner_handshake(mesh, inviter, addrs, &code, allow),
        )
        .await
    }

    /// Runs `attempt`, a joiner's pairing with `inviter` by either kind of code, within
    /// [`DEADLINE`], and audits how it went.
    pub(super) async fn audited_join(
        &self,
        inviter: PeerId,
        attempt: impl Future<Output = Result<Paired, JoinError>>,
    ) -> Result<Paired, JoinError> {
        let result = tokio::time::timeout(DEADLINE, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(JoinError::Failed(
                    "the other device stopped answering".into(),
                ))
            });
        let (outcome, reason) = match &result {
            Ok(_) => (Outcome::Ok, None),
            Err(e) => (Outcome::Failed, Some(e.to_string())),
        };
        let name = result.as_ref().ok().map(|p| p.name.clone());
        self.audit
            .record(Some(inviter), name, "pair", "joined", outcome, reason);
        result
    }

    async fn joiner_handshake(
        &self,
        mesh: &Mesh,
        inviter: PeerId,
        addrs: Vec<Multiaddr>,
        code: &Code,
        allow: Option<Caps>,
    ) -> Result<Paired, JoinError> {
        let mut stream = open_pair_stream(mesh, inviter, addrs).await?;
        self.handshake_as_joiner(&mut stream, inviter, code, allow)
            .await
    }

    /// The joiner's handshake on an open pairing stream to `inviter`, and the pairing recorded.
    pub(super) async fn handshake_as_joiner<S>(
        &self,
        stream: &mut S,
        inviter: PeerId,
        code: &Code,
        allow: Option<Caps>,
    ) -> Result<Paired, JoinError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let psk = pair::psk(&code.invite, &code.secret);
        self.joiner_noise(stream, inviter, &psk, allow, |noise| Message::Start {
            invite: code.invite.to_vec(),
            noise,
        })
        .await
    }

    /// The joiner's Noise handshake keyed by `psk` on an open pair stream, its first
    /// message sent in the frame `first` makes of it, then the hellos, and the pairing
    /// recorded.
    pub(super) async fn joiner_noise<S>(
        &self,
        stream: &mut S,
        inviter: PeerId,
        psk: &[u8; 32],
        allow: Option<Caps>,
        first: impl FnOnce(Vec<u8>) -> Message,
    ) -> Result<Paired, JoinError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let failed = |e: handshake::CryptoError| JoinError::Failed(e.0);
        let me = self.me.to_bytes();
        let mut hs = handshake::joiner(psk, &inviter.to_bytes(), &me).map_err(failed)?;
        let message = handshake::write(&mut hs, &[]).map_err(failed)?;
        let sent = send(stream, &first(message)).await;
        // Even when the send failed, the inviter may have said why.
        let answer = receive(stream).await;
        let theirs: Hello = match (answer, sent) {
            (Ok(message), _) => match message {
                Message::Noise { noise } => {
                    let payload = handshake::read(&mut hs, &noise)
                        .map_err(|_| JoinError::Failed("the handshake did not verify".into()))?;
                    loopsy_wire::frame::decode(&payload)
                        .map_err(|e| JoinError::Failed(e.to_string()))?
                }
                other => return Err(unexpected(other)),
            },
            (Err(_), Err(send_error)) => return Err(JoinError::Failed(send_error.to_string())),
            (Err(e), Ok(())) => return Err(e),
        };
        let check_code = pair::check_code(hs.get_handshake_hash());
        let mut transport = hs
            .into_transport_mode()
            .map_err(|e| JoinError::Failed(format!("{e:?}")))?;
        let grants = self.grants_for(allow.as_ref(), &inviter);
        let hello = self.hello(&grants).await;
        let sealed = handshake::seal(&mut transport, &hello).map_err(failed)?;
        send(stream, &Message::Sealed { data: sealed })
            .await
            .map_err(|e| JoinError::Failed(e.to_string()))?;
        let done: Done = match receive(stream).await? {
            Message::Sealed { data } => handshake::open(&mut transport, &data).map_err(failed)?,
            other => return Err(unexpected(other)),
        };
        if !done.ok {
            return Err(JoinError::Refused(
                "the other device did not record the pairing".into(),
            ));
        }
        let name = self
            .record_pairing(inviter, &theirs, allow.as_ref(), None)
            .map_err(|e| JoinError::Failed(e.to_string()))?;
        Ok(Paired {
            peer_id: inviter.to_base58(),
            name,
            check_code,
        })
    }
}

/// Connects to `inviter` (through `addrs` and the addresses known) and opens a pair stream.
pub(super) async fn open_pair_stream(
    mesh: &Mesh,
    inviter: PeerId,
    addrs: Vec<Multiaddr>,
) -> Result<loopsy_mesh::Stream, JoinError> {
    match tokio::time::timeout(CONNECT_DEADLINE, mesh.connect(inviter, addrs)).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(JoinError::Unreachable(e)),
        Ok(Err(stopped)) => return Err(JoinError::Failed(stopped.to_string())),
        Err(_) => return Err(JoinError::Unreachable("timed out".into())),
    }
    // Once more if the stream was lost in negotiation: it may have picked a connection
    // that was closing (one the mesh let go for a better one). Nothing was sent on it.
    match mesh.open_stream(inviter, protocol::PAIR).await {
        Err(OpenStreamError::Io(e)) => {
            tracing::debug!(%inviter, error = %e, "pairing stream lost; opening again");
            mesh.open_stream(inviter, protocol::PAIR).await
        }
        opened => opened,
    }
    .map_err(|e| JoinError::Unreachable(e.to_string()))
}
