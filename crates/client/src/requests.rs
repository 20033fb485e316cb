//! The one-shot requests: one frame out, one answer in, matched to its type here and
//! nowhere else.

use loopsy_wire::control::{
    CtxEntry, Identity, InboxMessage, NetCheck, Paired, Peer, Request, Response, Session, Status,
    TrustedPeer,
};

use crate::{Client, Connection, Error};

/// A message as `msg_send` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub id: String,
    /// The recipient acknowledged it already; otherwise the mesh keeps it until it can.
    pub delivered: bool,
}

/// Sends `request` and takes its one answer apart with `pattern`; another answer is
/// [`Error::Unexpected`], named by `wanted`.
macro_rules! ask {
    ($client:expr, $request:expr, $wanted:literal, $pattern:pat => $value:expr) => {
        match $client.request($request).await? {
            $pattern => Ok($value),
            _ => Err(Error::Unexpected { wanted: $wanted }),
        }
    };
}

impl Client {
    /// Sends one request and returns its one answer, whatever its type.
    pub async fn request(&self, request: Request) -> Result<Response, Error> {
        Connection::open(self, request).await?.answer().await
    }

    /// A request that answers `done`: its message, for people.
    pub async fn done(&self, request: Request) -> Result<String, Error> {
        ask!(self, request, "`done`", Response::Done { message } => message)
    }

    /// This device's peer ID and name.
    pub async fn id(&self) -> Result<Identity, Error> {
        ask!(self, Request::Id, "its identity", Response::Id(id) => id)
    }

    pub async fn status(&self) -> Result<Status, Error> {
        ask!(self, Request::Status, "its status", Response::Status(status) => status)
    }

    /// What this device's network allows, as the node has seen it.
    pub async fn netcheck(&self) -> Result<NetCheck, Error> {
        ask!(self, Request::NetCheck, "its network check", Response::NetCheck(check) => check)
    }

    /// Paired and discovered devices.
    pub async fn peers(&self) -> Result<Vec<Peer>, Error> {
        ask!(self, Request::Peers, "its peers", Response::Peers { peers } => peers)
    }

    pub async fn trust_list(&self) -> Result<Vec<TrustedPeer>, Error> {
        ask!(self, Request::TrustList, "its trust store", Response::Trust { peers } => peers)
    }

    /// Pairs with the device that shows `code`.
    pub async fn pair_join(
        &self,
        code: String,
        allow: Option<Vec<String>>,
    ) -> Result<Paired, Error> {
        let request = Request::PairJoin { code, allow };
        ask!(self, request, "a pairing", Response::Paired(paired) => paired)
    }

    /// Every session of the mesh, from the replicated registry.
    pub async fn sessions(&self) -> Result<Vec<Session>, Error> {
        ask!(self, Request::SessionList, "sessions", Response::Sessions { sessions } => sessions)
    }

    /// Sets a key of the shared context everywhere: the entry as stored.
    pub async fn ctx_set(
        &self,
        key: String,
        value: String,
        ttl_secs: Option<u64>,
    ) -> Result<CtxEntry, Error> {
        let request = Request::CtxSet {
            key,
            value,
            ttl_secs,
        };
        one_entry(ask!(self, request, "context entries", Response::Ctx { entries } => entries)?)
    }

    /// A key of the shared context; [`Error::Refused`] with `not_found` when it is not set.
    pub async fn ctx_get(&self, key: String) -> Result<CtxEntry, Error> {
        let request = Request::CtxGet { key };
        one_entry(ask!(self, request, "context entries", Response::Ctx { entries } => entries)?)
    }

    /// Every key of the shared context that starts with `prefix`.
    pub async fn ctx_list(&self, prefix: String) -> Result<Vec<CtxEntry>, Error> {
        let request = Request::CtxList { prefix };
        ask!(self, request, "context entries", Response::Ctx { entries } => entries)
    }

    /// Deletes a key everywhere.
    pub async fn ctx_remove(&self, key: String) -> Result<String, Error> {
        self.done(Request::CtxRemove { key }).await
    }

    pub async fn msg_send(&self, peer: String, text: String) -> Result<Sent, Error> {
        let request = Request::MsgSend { peer, text };
        ask!(self, request, "a sent message",
            Response::MsgSent { id, delivered } => Sent { id, delivered })
    }

    /// Raises an attention event on this device (for one of its sessions, when `session`
    /// names one); every device of the mesh sees it.
    pub async fn notify(
        &self,
        session: Option<String>,
        title: Option<String>,
        text: String,
    ) -> Result<String, Error> {
        let request = Request::Notify {
            session,
            title,
            text,
        };
        ask!(self, request, "`done`", Response::Done { message } => message)
    }

    /// This device's inbox, oldest first.
    pub async fn msg_inbox(&self) -> Result<Vec<InboxMessage>, Error> {
        ask!(self, Request::MsgInbox, "its inbox", Response::Inbox { messages } => messages)
    }
}

fn one_entry(mut entries: Vec<CtxEntry>) -> Result<CtxEntry, Error> {
    entries.pop().ok_or(Error::Unexpected {
        wanted: "a context entry",
    })
}
