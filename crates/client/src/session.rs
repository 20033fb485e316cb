//! Terminal sessions (`/loopsy/session/1` through the node): start, end, and attach.
//! Attached, the host's replies come as typed [`Event`]s and keys and sizes go back.

use loopsy_mesh::framed;
use loopsy_wire::{
    control::{HostedSession, Request, Session},
    session::{self, CHUNK, Info, Input as Order, MAX_FRAME, Reply},
};
use serde_bytes::ByteBuf;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::compat::Compat;

use crate::{Client, Connection, Error};

/// What an attached client hears from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Attached (again, after falling behind): `screen` redraws the terminal as it is at
    /// `offset`, absent when resuming; output goes on from `offset`.
    Attached {
        info: Info,
        offset: u64,
        screen: Option<Vec<u8>>,
        rows: u16,
        cols: u16,
    },
    /// Output from `offset` on (the offset of its first byte since the session started).
    Output { offset: u64, data: Vec<u8> },
    /// The program ended: its code, or none when the host lost it.
    Exited { code: Option<i32> },
}

/// The host's side of an attachment.
pub struct Output(Compat<OwnedReadHalf>);

/// Our side of an attachment: keys and sizes.
pub struct Input(Compat<OwnedWriteHalf>);

/// Where to attach, and from where.
#[derive(Debug, Clone)]
pub struct Attach {
    /// The session: an ID, a name, or a unique prefix.
    pub session: String,
    /// The host; `None` to let the node find it.
    pub host: Option<String>,
    /// Resume after this offset, the one after the last byte shown; `None` for the
    /// screen as it is.
    pub offset: Option<u64>,
    /// The terminal's size; 0 × 0 leaves the size to the other clients.
    pub rows: u16,
    pub cols: u16,
    /// Watch only: the host takes no keys or sizes from this client.
    pub read_only: bool,
}

impl Attach {
    /// The host it names, and the attach request for it.
    pub(crate) fn into_request(self) -> (Option<String>, session::Request) {
        let request = session::Request::Attach {
            session: self.session,
            offset: self.offset,
            rows: self.rows,
            cols: self.cols,
            read_only: self.read_only,
        };
        (self.host, request)
    }
}

impl Client {
    /// Sends one session request to `host` (this device when `None`) and reads its one
    /// reply; the host's `error` is [`Error::Host`].
    pub async fn session_request(
        &self,
        host: Option<String>,
        request: session::Request,
    ) -> Result<Reply, Error> {
        let request = Request::Session {
            peer: host,
            request,
        };
        let (mut reader, _writer) = Connection::open(self, request).await?.hand_over().await?;
        match framed::read::<Reply, _>(&mut reader, MAX_FRAME).await {
            Ok(Some(Reply::Error { message })) => Err(Error::Host(message)),
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(Error::Lost),
            Err(e) => Err(Error::Broken(e)),
        }
    }

    /// Starts a session on `host` (this device when `None`): `argv`, or the host's login
    /// shell when empty, on a terminal of `rows` × `cols`. Answers the session as every
    /// listing shows it.
    pub async fn session_new(
        &self,
        host: Option<String>,
        name: Option<String>,
        argv: Vec<String>,
        size: (u16, u16),
    ) -> Result<Session, Error> {
        self.session_start(host, name, argv, size, false).await
    }

    /// [`Self::session_new`], recorded on the host when `record` is set (a host that
    /// predates recordings answers a session whose `recording` is empty).
    pub async fn session_start(
        &self,
        host: Option<String>,
        name: Option<String>,
        argv: Vec<String>,
        (rows, cols): (u16, u16),
        record: bool,
    ) -> Result<Session, Error> {
        let request = session::Request::New {
            name,
            argv,
            rows,
            cols,
            record,
        };
        let Reply::Created(info) = self.session_request(host.clone(), request).await? else {
            return Err(Error::Unexpected {
                wanted: "a new session",
            });
        };
        let (name, peer_id) = self.identify(host).await;
        Ok(Session::from(HostedSession {
            host: name,
            host_peer_id: peer_id,
            // It answered just now.
            host_online: true,
            last_seen: None,
            session: info,
        }))
    }

    /// Deletes a session's recording on its host: how many bytes it held.
    pub async fn session_delete_recording(
        &self,
        host: Option<String>,
        session: String,
    ) -> Result<u64, Error> {
        match self
            .session_request(host, session::Request::DeleteRecording { session })
            .await?
        {
            Reply::RecordingDeleted { bytes } => Ok(bytes),
            _ => Err(Error::Unexpected {
                wanted: "a deleted recording",
            }),
        }
    }

    /// Ends a session: a hang-up to its program, then a kill.
    pub async fn session_kill(&self, host: Option<String>, session: String) -> Result<(), Error> {
        match self
            .session_request(host, session::Request::Kill { session })
            .await?
        {
            Reply::Killed => Ok(()),
            _ => Err(Error::Unexpected {
                wanted: "a killed session",
            }),
        }
    }

    /// Attaches to a session. A refusal (no such session, a host that cannot be reached)
    /// is [`Error::Refused`], with the node's code to tell the cases apart.
    pub async fn attach(&self, to: Attach) -> Result<(Output, Input), Error> {
        let (peer, request) = to.into_request();
        let request = Request::Session { peer, request };
        let (reader, writer) = Connection::open(self, request).await?.hand_over().await?;
        Ok((Output(reader), Input(writer)))
    }

    /// The name and peer ID of the device `query` names (this device for `None`), as this
    /// node's peer list has them; the query itself when the list does not tell.
    async fn identify(&self, query: Option<String>) -> (String, String) {
        let Some(query) = query else {
            return match self.id().await {
                Ok(me) => (me.name, me.peer_id),
                Err(_) => (String::new(), String::new()),
            };
        };
        let peers = self.peers().await.unwrap_or_default();
        let members = || peers.iter().filter(|p| p.paired);
        let named = |p: &&loopsy_wire::control::Peer, exact: bool| {
            let name = p.name.as_deref().unwrap_or_default();
            if exact {
                name == query || p.peer_id == query
            } else {
                name.starts_with(&query) || p.peer_id.starts_with(&query)
            }
        };
        let exact: Vec<_> = members().filter(|p| named(p, true)).collect();
        let found = if exact.is_empty() {
            members().filter(|p| named(p, false)).collect()
        } else {
            exact
        };
        match found.as_slice() {
            [one] => (
                one.name.clone().unwrap_or_else(|| one.peer_id.clone()),
                one.peer_id.clone(),
            ),
            _ => (query.clone(), query),
        }
    }
}

impl Output {
    /// The next event; `Ok(None)` when the stream ended (the connection dropped).
    pub async fn next(&mut self) -> Result<Option<Event>, Error> {
        let reply = match framed::read::<Reply, _>(&mut self.0, MAX_FRAME).await {
            Ok(Some(reply)) => reply,
            Ok(None) => return Ok(None),
            Err(e) => return Err(Error::Broken(e)),
        };
        match reply {
            Reply::Attached {
                info,
                offset,
                screen,
                rows,
                cols,
            } => Ok(Some(Event::Attached {
                info,
                offset,
                screen: screen.map(ByteBuf::into_vec),
                rows,
                cols,
            })),
            Reply::Output { offset, data } => Ok(Some(Event::Output {
                offset,
                data: data.into_vec(),
            })),
            Reply::Exited { code } => Ok(Some(Event::Exited { code })),
            Reply::Error { message } => Err(Error::Host(message)),
            Reply::Created(_)
            | Reply::Sessions { .. }
            | Reply::Killed
            | Reply::RecordingDeleted { .. }
            | Reply::Recording { .. } => Err(Error::Unexpected {
                wanted: "a session's output",
            }),
        }
    }
}

impl Input {
    /// Types `keys`, in pieces the protocol takes.
    pub async fn keys(&mut self, keys: &[u8]) -> Result<(), Error> {
        for piece in keys.chunks(CHUNK) {
            let order = Order::Keys {
                data: ByteBuf::from(piece),
            };
            self.send(&order).await?;
        }
        Ok(())
    }

    /// The terminal's new size.
    pub async fn resize(&mut self, rows: u16, cols: u16) -> Result<(), Error> {
        self.send(&Order::Resize { rows, cols }).await
    }

    /// Detaches: the host sees the stream close.
    pub async fn close(mut self) {
        let _ = futures::AsyncWriteExt::close(&mut self.0).await;
    }

    async fn send(&mut self, order: &Order) -> Result<(), Error> {
        framed::write(&mut self.0, order, MAX_FRAME)
            .await
            .map_err(Error::Unsent)
    }
}
