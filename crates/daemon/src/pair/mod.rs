//! Pairing over `/loopsy/pair/1`: the [`Pairing`] component owns this device's
//! invitations and the rate limit on attempts; [`serve`] answers joiners of its
//! invitations, [`client`] uses another device's code. See `loopsy_wire::pair` for the
//! flow.

mod client;
mod handshake;
mod invitations;
mod link;
mod places;
mod serve;
#[cfg(test)]
mod serve_tests;
pub mod short;

use std::{sync::Arc, time::Duration};

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use loopsy_mesh::{Multiaddr, PeerId, framed};
use loopsy_wire::pair::{CodeError, Hello, Kind, MAX_FRAME, Message, ShortCodeError};
use serde_bytes::ByteBuf;

pub use invitations::{Invitations, RateLimit};
pub use link::link;
pub use short::FindError;

use crate::{
    addrs::Advertise,
    audit::Audit,
    caps::{self, Caps},
    sync::Pushes,
    trust::{PeerSettings, Trust, TrustError},
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
/// Longest refusal from the other device shown to the user.
const MAX_REFUSAL: usize = 512;
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

/// Why the serving side of a pairing failed; said to the joiner and audited.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("wrong pairing code")]
    WrongCode,
    #[error("the joiner broke off the handshake")]
    BrokeOff,
    #[error("{0}")]
    Crypto(String),
    #[error("{0}")]
    Stream(String),
    #[error("{0}")]
    Encode(String),
    #[error(transparent)]
    Trust(#[from] TrustError),
}

impl From<handshake::CryptoError> for PairError {
    fn from(e: handshake::CryptoError) -> Self {
        PairError::Crypto(e.0)
    }
}

/// Pairing: this device's invitations, the limit on attempts, and what a pairing
/// records (in the trust store, spread to the members).
pub struct Pairing {
    me: PeerId,
    /// This device's name, for its hello.
    name: String,
    /// What a new member may do here unless the code or the trust store says otherwise.
    defaults: Caps,
    trust: Arc<Trust>,
    audit: Arc<Audit>,
    pushes: Pushes,
    addrs: Arc<dyn Advertise>,
    invitations: Invitations,
    attempts: RateLimit,
    /// What this side's hello says it is: a node is a device (a test plays a browser).
    kind: Kind,
}

impl Pairing {
    pub fn new(
        name: String,
        defaults: Caps,
        trust: Arc<Trust>,
        audit: Arc<Audit>,
        pushes: Pushes,
        addrs: Arc<dyn Advertise>,
    ) -> Self {
        Self {
            me: trust.me(),
            name,
            defaults,
            trust,
            audit,
            pushes,
            addrs,
            invitations: Invitations::default(),
            attempts: RateLimit::new(5, 30, Duration::from_secs(60)),
            kind: Kind::Device,
        }
    }

    /// This device's open invitations.
    pub fn invitations(&self) -> &Invitations {
        &self.invitations
    }

    /// The addresses this device hands out, in codes among others.
    pub async fn advertised(&self) -> Vec<Multiaddr> {
        self.addrs.advertised().await
    }

    /// What this device grants `peer` on pairing: what the code said, or what it chose
    /// for it before, or the defaults.
    fn grants_for(&self, allow: Option<&Caps>, peer: &PeerId) -> Caps {
        allow
            .cloned()
            .or_else(|| self.trust.chosen(peer))
            .unwrap_or_else(|| self.defaults.clone())
    }

    /// This device's hello for a pairing: its name, what it grants, where to reach it.
    async fn hello(&self, grants: &Caps) -> Hello {
        hello(&self.name, grants, &self.advertised().await, self.kind)
    }

    /// Records a completed pairing on this side and spreads it to the members (but `except`);
    /// returns the other device's name.
    fn record_pairing(
        &self,
        peer: PeerId,
        theirs: &Hello,
        allow: Option<&Caps>,
        except: Option<PeerId>,
    ) -> Result<String, TrustError> {
        let (name, addrs, they_allow) = accept_hello(theirs);
        let settings = PeerSettings {
            peer_id: peer.to_base58(),
            name: None,
            // What this device grants it is the code's, the user's or the defaults: never
            // more or less for the kind it claims, which only labels it.
            allow: allow.map(caps::names),
            they_allow: Some(they_allow),
            how: Some("paired".into()),
            exec: None,
            files: None,
            kind: (!theirs.kind.is_device()).then_some(theirs.kind),
        };
        let record = self.trust.admit(peer, &name, &addrs, settings)?;
        self.pushes.members(&[record], except);
        Ok(name)
    }
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
fn hello(name: &str, grants: &Caps, addrs: &[Multiaddr], kind: Kind) -> Hello {
    Hello {
        name: name.to_owned(),
        grants: caps::names(grants),
        addrs: addrs.iter().map(|a| ByteBuf::from(a.to_vec())).collect(),
        kind,
    }
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, message: &Message) -> Result<(), PairError> {
    framed::write(stream, message, MAX_FRAME)
        .await
        .map_err(|e| PairError::Stream(e.to_string()))
}

async fn receive<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Message, JoinError> {
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
        // The other device's words, shown to the user: plain text, bounded.
        Message::Refused { reason } => {
            JoinError::Refused(loopsy_wire::attention::clean(&reason, MAX_REFUSAL))
        }
        _ => JoinError::Failed("unexpected message from the other device".into()),
    }
}

/// Sends a refusal and closes the stream gracefully: a dropped stream is reset, and a reset
/// can discard the refusal before the other side reads it.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, reason: &str) {
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
