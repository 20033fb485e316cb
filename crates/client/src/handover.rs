//! `attach` and `exec` with the terminal or standard streams handed to the node (see
//! [`loopsy_wire::handover`]): the descriptors go to the node on one byte with SCM_RIGHTS,
//! after which the node reads the keys or input and writes the screen or output itself,
//! and this side hears only how the attachment or program goes.

use std::{
    io::{self, IoSlice},
    mem::MaybeUninit,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    pin::Pin,
};

use futures::{Stream, StreamExt};
use loopsy_mesh::framed::{self, ReadError};
use loopsy_wire::{
    control::Request,
    exec::Start,
    handover::{ExecNews, MAX_FRAME, PASS_BYTE, SHOWN_LEN, ToClient, ToNode},
};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use tokio::{
    io::Interest,
    net::{
        UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
};
use tokio_util::compat::Compat;

use crate::{
    Client, Connection, Error,
    exec::{Exit, Input},
    session::Attach,
};

/// An attachment whose terminal the node holds.
pub struct HandedOver {
    news: Pin<Box<dyn Stream<Item = Result<ToClient, ReadError>> + Send>>,
    orders: Compat<OwnedWriteHalf>,
    /// The progress file the node writes.
    shown: OwnedFd,
}

impl Client {
    /// Attaches to a session with `stdin` and `stdout` handed to the node. A node that
    /// predates hand-overs refuses the request as [`Error::Refused`] with `bad_request`:
    /// attach with [`Client::attach`] then.
    pub async fn attach_here(
        &self,
        to: Attach,
        stdin: BorrowedFd<'_>,
        stdout: BorrowedFd<'_>,
    ) -> Result<HandedOver, Error> {
        let (peer, request) = to.into_request();
        let request = Request::AttachHere { peer, request };
        let unsent = |e: io::Error| Error::Unsent(e.into());
        let shown =
            rustix::fs::memfd_create("loopsy-attach-shown", rustix::fs::MemfdFlags::CLOEXEC)
                .map_err(|e| unsent(e.into()))?;
        let (reader, writer) = Connection::open(self, request).await?.hand_over().await?;
        pass(writer.get_ref().as_ref(), [stdin, stdout, shown.as_fd()])
            .await
            .map_err(unsent)?;
        let news = futures::stream::unfold(Some(reader), |reader| async move {
            let mut reader = reader?;
            match framed::read::<ToClient, _>(&mut reader, MAX_FRAME).await {
                Ok(Some(news)) => Some((Ok(news), Some(reader))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok(HandedOver {
            news: Box::pin(news),
            orders: writer,
            shown,
        })
    }
}

/// A program on a peer whose output the node writes into this process's stdout and
/// stderr, and whose input it reads from this process's stdin.
pub struct ExecHandedOver {
    news: Compat<OwnedReadHalf>,
}

/// How a handed-over program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecEnd {
    /// It ended; everything it wrote has been written.
    Exited(Exit),
    /// Its output could not be written (nobody reads it any more), so the node ended it.
    Unwritable,
}

impl Client {
    /// Starts `start` on `peer` with `stdin`, `stdout` and `stderr` handed to the node; the
    /// [`Input`] carries signals and sizes, and with `stdin_relayed` the input, which the
    /// node then leaves unread (see `Request::ExecHere`). A node that predates hand-overs, or
    /// cannot use these descriptors, refuses as [`Error::Refused`] with `bad_request`:
    /// use [`Client::exec`] then. A peer that refuses says so here or from
    /// [`ExecHandedOver::end`], as with [`Client::exec`].
    pub async fn exec_here(
        &self,
        peer: String,
        start: Start,
        [stdin, stdout, stderr]: [BorrowedFd<'_>; 3],
        stdin_relayed: bool,
    ) -> Result<(ExecHandedOver, Input), Error> {
        let request = Request::ExecHere {
            peer,
            start,
            stdin_relayed,
        };
        let mut connection = Connection::open(self, request).await?;
        // Straight behind the request: the node takes them before it dials.
        if let Err(e) = pass(connection.socket(), [stdin, stdout, stderr]).await {
            // A node that does not know the request may have answered and hung up already.
            return match connection.answer().await {
                Err(refused @ Error::Refused(_)) => Err(refused),
                _ => Err(Error::Unsent(e.into())),
            };
        }
        let (reader, writer) = connection.hand_over().await?;
        Ok((ExecHandedOver { news: reader }, Input(writer)))
    }
}

impl ExecHandedOver {
    /// Waits for the program's end; a program that was not started is
    /// [`Error::NotStarted`], a node that went quiet before the end is [`Error::Lost`].
    pub async fn end(mut self) -> Result<ExecEnd, Error> {
        loop {
            let news = match framed::read::<ExecNews, _>(&mut self.news, MAX_FRAME).await {
                Ok(Some(news)) => news,
                Ok(None) => return Err(Error::Lost),
                Err(e) => return Err(Error::Broken(e)),
            };
            return match news {
                ExecNews::Started { .. } => continue,
                ExecNews::Refused { reason } => Err(Error::NotStarted { reason }),
                ExecNews::Exited {
                    code,
                    signal,
                    timed_out,
                } => Ok(ExecEnd::Exited(Exit {
                    code,
                    signal,
                    timed_out,
                })),
                ExecNews::Unwritable => Ok(ExecEnd::Unwritable),
            };
        }
    }
}

impl HandedOver {
    /// What the node has to say; `Ok(None)` when it closed the connection. Safe to drop
    /// from a `select!`: no frame is lost half read.
    pub async fn next(&mut self) -> Result<Option<ToClient>, Error> {
        match self.news.next().await {
            Some(Ok(news)) => Ok(Some(news)),
            Some(Err(e)) => Err(Error::Broken(e)),
            None => Ok(None),
        }
    }

    /// The offset after the last byte the node showed, as it noted it: where to resume
    /// when the node went away without saying so. `None` before it noted any.
    pub fn shown(&self) -> Option<u64> {
        let mut bytes = [0u8; SHOWN_LEN];
        match rustix::io::pread(&self.shown, &mut bytes, 0) {
            Ok(SHOWN_LEN) => Some(u64::from_le_bytes(bytes)),
            _ => None,
        }
    }

    /// The terminal's new size.
    pub async fn resize(&mut self, rows: u16, cols: u16) -> Result<(), Error> {
        self.send(&ToNode::Resize { rows, cols }).await
    }

    /// Lets the node draw the screen it attached with.
    pub async fn proceed(&mut self) -> Result<(), Error> {
        self.send(&ToNode::Proceed).await
    }

    async fn send(&mut self, order: &ToNode) -> Result<(), Error> {
        framed::write(&mut self.orders, order, MAX_FRAME)
            .await
            .map_err(Error::Unsent)
    }
}

/// Sends `fds` to the node on the one byte that carries them.
async fn pass(socket: &UnixStream, fds: [BorrowedFd<'_>; 3]) -> io::Result<()> {
    loop {
        socket.writable().await?;
        let sent = socket.try_io(Interest::WRITABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                return Err(io::Error::other("no room for the descriptors"));
            }
            let byte = [PASS_BYTE];
            let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
            Ok(rustix::net::sendmsg(
                socket,
                &[IoSlice::new(&byte)],
                &mut control,
                flags,
            )?)
        });
        match sent {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}
