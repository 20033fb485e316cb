//! Pairing over `/loopsy/pair/1`: [`serve`] answers joiners of this device's invitations,
//! [`join`] uses another device's code. See `loopsy_wire::pair` for the flow.

mod handshake;
mod invitations;
mod places;
pub mod short;

use std::{sync::Arc, time::Duration};

use futures::{AsyncWriteExt, StreamExt};
use loopsy_mesh::{Multiaddr, OpenStreamError, PeerId, Stream, framed};
use loopsy_wire::{
    control::Paired,
    pair::{self, Code, CodeError, Done, Hello, MAX_FRAME, Message, ShortCode, ShortCodeError},
    protocol,
};
use serde_bytes::ByteBuf;

pub use invitations::{Invitations, RateLimit};
pub use short::FindError;

use crate::{
    audit::Outcome,
    caps::{self, Caps},
    clock,
    node::Node,
    trust::PeerSettings,
};

/// How long one pairing may take, end to end.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long the joiner waits for a connection to the inviter.
const CONNECT_DEADLINE: Duration = Duration::from_secs(20);
/// How long a joiner may take to send its first message: it sends it as soon as the
/// stream is open, so a stream silent for longer is no joiner.
const START_DEADLINE: Duration = Duration::from_secs(2);
/// Pairing streams served at once, waiting ones included (see `places`); more are dropped
/// unanswered.
const MAX_ATTEMPTS_AT_ONCE: usize = 256;
/// How long a refusal may take to send.
const REFUSE_DEADLINE: Duration = Duration::from_secs(5);
/// Most addresses taken from a peer's hello.
const MAX_HELLO_ADDRS: usize = 16;
/// What a peer over the pairing rate limit is told.
const TOO_MANY: &str = "too many pairing attempts; wait a minute";

/// Pairing with another device's code failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Code(#[from] CodeError),
    #[error(transparent)]
    ShortCode(#[from] ShortCodeError),
    /// No single device in sight goes by a short code's name.
    #[error(transparent)]
    Find(#[from] FindError),
    #[error("the pairing code expired at {0}; ask for a new one")]
    Expired(String),
    #[error("this is this device's own pairing code; use it on the other device")]
    OwnCode,
    #[error(
        "cannot reach the device that made the code ({0}); check that it is still running \
         `loopsy pair` and that one of its addresses is reachable from here"
    )]
    Unreachable(String),
    #[error("the other device refused: {0}")]
    Refused(String),
    #[error("pairing failed: {0}")]
    Failed(String),
}

/// Answers pairing streams until the mesh stops.
pub async fn serve(node: Arc<Node>) {
    let Some(mut incoming) = node.mesh.accept(protocol::PAIR) else {
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
        let (place, node) = (Arc::new(place), node.clone());
        let task = attempts.spawn({
            let place = place.clone();
            async move {
                if tokio::time::timeout(DEADLINE, attempt(&node, peer, stream, &place))
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
async fn attempt(node: &Arc<Node>, peer: PeerId, mut stream: Stream, place: &places::Place) {
    // The first frame is read even from a peer about to be refused: a stream closed unread
    // can stop the peer's write (QUIC's STOP_SENDING) before it reads the refusal.
    let start =
        match tokio::time::timeout(START_DEADLINE, framed::read(&mut stream, MAX_FRAME)).await {
            Ok(start) => start,
            Err(_) => return,
        };
    if !place.started() {
        return;
    }
    answer(node, peer, &mut stream, start).await;
}

async fn answer(
    node: &Arc<Node>,
    peer: PeerId,
    stream: &mut Stream,
    start: Result<Option<Message>, framed::ReadError>,
) {
    // An attempt that names no open invitation costs its peer alone; one on an open
    // invitation counts overall too, before its secret is tried.
    let (invite, noise) = match start {
        Ok(Some(Message::Start { invite, noise })) => (invite, noise),
        // Short codes (see `short`).
        Ok(Some(Message::ShortStart { nameplate, pake })) => {
            return short::answer(node, peer, stream, nameplate, &pake).await;
        }
        other => {
            let (reason, said) = if !node.pair_attempts.allow_peer_only(peer) {
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
            node.audit.refuse_stranger(peer, "pair", "", reason.clone());
            refuse(stream, said).await;
            return;
        }
    };
    let claim = match claim(node, peer, &invite) {
        Ok(claim) => claim,
        Err(reason) => return deny(node, peer, stream, &reason).await,
    };
    let psk = pair::psk(&claim.id, &claim.secret);
    match inviter_handshake(node, peer, stream, &claim, &psk, &noise).await {
        Ok(paired) => {
            record_invited(node, peer, &paired);
            node.invitations.complete(&claim, paired);
        }
        Err(reason) => {
            node.invitations.release(&claim);
            deny(node, peer, stream, &reason).await;
        }
    }
}

/// Takes the invitation `invite` for `peer`'s attempt, within the rate limits; the refusal
/// to tell otherwise.
fn claim(node: &Node, peer: PeerId, invite: &[u8]) -> Result<invitations::Claim, String> {
    match node.invitations.claim(invite) {
        Ok(claim) if node.pair_attempts.allow(peer) => Ok(claim),
        Ok(claim) => {
            node.invitations.release(&claim);
            Err(TOO_MANY.to_owned())
        }
        Err(_) if !node.pair_attempts.allow_peer_only(peer) => Err(TOO_MANY.to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Refuses a pairing attempt, in the audit log and to the peer. A joiner is most often a
/// stranger, and fresh peer IDs cost nothing: refusals are written within the audit log's
/// limits on strangers.
async fn deny(node: &Node, peer: PeerId, stream: &mut Stream, reason: &str) {
    node.audit
        .refuse_stranger(peer, "pair", "", reason.to_owned());
    refuse(stream, reason).await;
}

fn record_invited(node: &Node, peer: PeerId, paired: &Paired) {
    node.audit.record(
        Some(peer),
        Some(paired.name.clone()),
        "pair",
        "invited",
        Outcome::Ok,
        None,
    );
}

/// The inviter's Noise handshake, keyed by `psk`, from the joiner's first message.
async fn inviter_handshake(
    node: &Arc<Node>,
    peer: PeerId,
    stream: &mut Stream,
    claim: &invitations::Claim,
    psk: &[u8; 32],
    noise: &[u8],
) -> Result<Paired, String> {
    let me = node.mesh.peer_id().to_bytes();
    let mut hs = handshake::inviter(psk, &me, &peer.to_bytes()).map_err(|e| e.0)?;
    handshake::read(&mut hs, noise).map_err(|_| "wrong pairing code".to_owned())?;
    let grants = claim
        .allow
        .clone()
        .or_else(|| node.trust.chosen(&peer))
        .unwrap_or_else(|| node.default_grants());
    let hello = node.hello(&grants).await;
    let mut payload = Vec::new();
    ciborium::into_writer(&hello, &mut payload).map_err(|e| e.to_string())?;
    let reply = handshake::write(&mut hs, &payload).map_err(|e| e.0)?;
    send(stream, &Message::Noise { noise: reply }).await?;
    let check_code = pair::check_code(hs.get_handshake_hash());
    let mut transport = hs.into_transport_mode().map_err(|e| format!("{e:?}"))?;

    let theirs: Hello = match framed::read(stream, MAX_FRAME).await {
        Ok(Some(Message::Sealed { data })) => {
            handshake::open(&mut transport, &data).map_err(|e| e.0)?
        }
        _ => return Err("the joiner broke off the handshake".into()),
    };
    // Not spread to the joiner: it does not trust this device until it reads `Done`, and
    // it reconciles with this device once it does.
    let name = record_pairing(node, peer, &theirs, claim.allow.as_ref(), Some(peer))?;
    let done = handshake::seal(&mut transport, &Done { ok: true }).map_err(|e| e.0)?;
    send(stream, &Message::Sealed { data: done }).await?;
    let _ = stream.close().await;
    Ok(Paired {
        peer_id: peer.to_base58(),
        name,
        check_code,
    })
}

/// Pairs with the device that made `text` (a long code, or a short one for a device in
/// sight), granting it `allow` (or the defaults).
pub async fn join(node: &Arc<Node>, text: &str, allow: Option<Caps>) -> Result<Paired, JoinError> {
    // Short codes (see `short`).
    match ShortCode::from_text(text) {
        Ok(short) => return short::join(node, &short, allow).await,
        Err(ShortCodeError::NotShort) => {}
        Err(mistyped) => return Err(mistyped.into()),
    }
    let code = Code::from_text(text)?;
    let inviter =
        PeerId::from_bytes(&code.inviter).map_err(|_| CodeError::Malformed("inviter peer ID"))?;
    if inviter == node.mesh.peer_id() {
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
    let result = tokio::time::timeout(
        DEADLINE,
        joiner_handshake(node, inviter, addrs, &code, allow),
    )
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
    node.audit
        .record(Some(inviter), name, "pair", "joined", outcome, reason);
    result
}

async fn joiner_handshake(
    node: &Arc<Node>,
    inviter: PeerId,
    addrs: Vec<Multiaddr>,
    code: &Code,
    allow: Option<Caps>,
) -> Result<Paired, JoinError> {
    let mut stream = open_pair_stream(node, inviter, addrs).await?;
    let psk = pair::psk(&code.invite, &code.secret);
    joiner_noise(node, &mut stream, inviter, &psk, allow, |noise| {
        Message::Start {
            invite: code.invite.to_vec(),
            noise,
        }
    })
    .await
}

/// Connects to `inviter` (through `addrs` and the addresses known) and opens a pair stream.
async fn open_pair_stream(
    node: &Node,
    inviter: PeerId,
    addrs: Vec<Multiaddr>,
) -> Result<Stream, JoinError> {
    match tokio::time::timeout(CONNECT_DEADLINE, node.mesh.connect(inviter, addrs)).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(JoinError::Unreachable(e)),
        Ok(Err(stopped)) => return Err(JoinError::Failed(stopped.to_string())),
        Err(_) => return Err(JoinError::Unreachable("timed out".into())),
    }
    // Once more if the stream was lost in negotiation: it may have picked a connection
    // that was closing (one the mesh let go for a better one). Nothing was sent on it.
    match node.mesh.open_stream(inviter, protocol::PAIR).await {
        Err(OpenStreamError::Io(e)) => {
            tracing::debug!(%inviter, error = %e, "pairing stream lost; opening again");
            node.mesh.open_stream(inviter, protocol::PAIR).await
        }
        opened => opened,
    }
    .map_err(|e| JoinError::Unreachable(e.to_string()))
}

/// The joiner's Noise handshake keyed by `psk` on an open pair stream, its first message
/// sent in the frame `first` makes of it, then the hellos.
async fn joiner_noise(
    node: &Arc<Node>,
    stream: &mut Stream,
    inviter: PeerId,
    psk: &[u8; 32],
    allow: Option<Caps>,
    first: impl FnOnce(Vec<u8>) -> Message,
) -> Result<Paired, JoinError> {
    let failed = |e: handshake::CryptoError| JoinError::Failed(e.0);
    let me = node.mesh.peer_id().to_bytes();
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
        (Err(_), Err(send_error)) => return Err(JoinError::Failed(send_error)),
        (Err(e), Ok(())) => return Err(e),
    };
    let check_code = pair::check_code(hs.get_handshake_hash());
    let mut transport = hs
        .into_transport_mode()
        .map_err(|e| JoinError::Failed(format!("{e:?}")))?;
    let grants = allow
        .clone()
        .or_else(|| node.trust.chosen(&inviter))
        .unwrap_or_else(|| node.default_grants());
    let hello = node.hello(&grants).await;
    let sealed = handshake::seal(&mut transport, &hello).map_err(failed)?;
    send(stream, &Message::Sealed { data: sealed })
        .await
        .map_err(JoinError::Failed)?;
    let done: Done = match receive(stream).await? {
        Message::Sealed { data } => handshake::open(&mut transport, &data).map_err(failed)?,
        other => return Err(unexpected(other)),
    };
    if !done.ok {
        return Err(JoinError::Refused(
            "the other device did not record the pairing".into(),
        ));
    }
    let name =
        record_pairing(node, inviter, &theirs, allow.as_ref(), None).map_err(JoinError::Failed)?;
    Ok(Paired {
        peer_id: inviter.to_base58(),
        name,
        check_code,
    })
}

/// Records a completed pairing on this side and spreads it to the members (but `except`);
/// returns the other device's name.
fn record_pairing(
    node: &Arc<Node>,
    peer: PeerId,
    theirs: &Hello,
    allow: Option<&Caps>,
    except: Option<PeerId>,
) -> Result<String, String> {
    let (name, addrs, they_allow) = accept_hello(theirs);
    let settings = PeerSettings {
        peer_id: peer.to_base58(),
        name: None,
        allow: allow.map(caps::names),
        they_allow: Some(they_allow),
        how: Some("paired".into()),
        exec: None,
        files: None,
    };
    let record = node
        .trust
        .admit(peer, &name, &addrs, settings)
        .map_err(|e| e.to_string())?;
    node.spread_members(vec![record], except);
    Ok(name)
}

/// A peer's hello, checked: its name, its addresses, and the grants it claims to give.
fn accept_hello(hello: &Hello) -> (String, Vec<Multiaddr>, Vec<String>) {
    let name = loopsy_mesh::sanitize_name(&hello.name);
    let addrs = hello
        .addrs
        .iter()
        .take(MAX_HELLO_ADDRS)
        .filter_map(|a| Multiaddr::try_from(a.to_vec()).ok())
        .collect();
    let grants = caps::names(&caps::parse(&hello.grants).unwrap_or_default());
    (name, addrs, grants)
}

/// This device's hello: its name, the grants it gives, and where to reach it.
pub fn hello(name: &str, grants: &Caps, addrs: &[Multiaddr]) -> Hello {
    Hello {
        name: name.to_owned(),
        grants: caps::names(grants),
        addrs: addrs.iter().map(|a| ByteBuf::from(a.to_vec())).collect(),
    }
}

async fn send(stream: &mut Stream, message: &Message) -> Result<(), String> {
    framed::write(stream, message, MAX_FRAME)
        .await
        .map_err(|e| e.to_string())
}

async fn receive(stream: &mut Stream) -> Result<Message, JoinError> {
    match framed::read(stream, MAX_FRAME).await {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err(JoinError::Failed(
            "the other device closed the stream".into(),
        )),
        Err(e) => Err(JoinError::Failed(e.to_string())),
    }
}

fn unexpected(message: Message) -> JoinError {
    match message {
        Message::Refused { reason } => JoinError::Refused(reason),
        _ => JoinError::Failed("unexpected message from the other device".into()),
    }
}

/// Sends a refusal and closes the stream gracefully: a dropped stream is reset, and a reset
/// can discard the refusal before the other side reads it.
async fn refuse(stream: &mut Stream, reason: &str) {
    let refusal = Message::Refused {
        reason: reason.to_owned(),
    };
    // A peer that does not read must not hold the place for long.
    let _ = tokio::time::timeout(REFUSE_DEADLINE, async {
        let _ = send(stream, &refusal).await;
        let _ = stream.close().await;
    })
    .await;
}
