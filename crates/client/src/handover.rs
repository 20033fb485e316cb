//! `attach` with the terminal handed to the node (see [`loopsy_wire::handover`]): stdin and
//! stdout go to the node on one byte with SCM_RIGHTS, after which the node reads the keys
//! and draws the screen itself, and this side hears only how the attachment goes.

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
    handover::{MAX_FRAME, PASS_BYTE, SHOWN_LEN, ToClient, ToNode},
};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use tokio::{
    io::Interest,
    net::{UnixStream, unix::OwnedWriteHalf},
};
use tokio_util::compat::Compat;

use crate::{Client, Connection, Error, session::Attach};

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
