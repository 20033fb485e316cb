//! One control connection: the request frame out, answer frames in, and the hand-over
//! that turns it into a relayed peer stream.

use std::io;

use loopsy_mesh::framed;
use loopsy_wire::control::{Envelope, MAX_FRAME, Request, Response};
use tokio::net::{
    UnixStream,
    unix::{OwnedReadHalf, OwnedWriteHalf},
};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use crate::{Client, Error};

/// An open request to the node, for requests that answer with several frames.
pub struct Connection {
    stream: Compat<UnixStream>,
}

/// The two directions of a connection handed over to a peer's protocol.
pub(crate) type Halves = (Compat<OwnedReadHalf>, Compat<OwnedWriteHalf>);

impl Connection {
    /// Connects to the node and sends `request`.
    pub async fn open(client: &Client, request: Request) -> Result<Self, Error> {
        let stream = UnixStream::connect(&client.socket)
            .await
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => Error::NoNode {
                    home: client.home.clone(),
                    socket: client.socket.clone(),
                    hint: client.hint.clone(),
                },
                _ => Error::Connect {
                    socket: client.socket.clone(),
                    source,
                },
            })?;
        let mut stream = stream.compat();
        framed::write(&mut stream, &Envelope::new(request), MAX_FRAME).await?;
        Ok(Self { stream })
    }

    /// The next answer; `Ok(None)` once the node has closed the connection. An `error`
    /// answer is `Err(Error::Refused)`.
    pub async fn next(&mut self) -> Result<Option<Response>, Error> {
        match framed::read(&mut self.stream, MAX_FRAME).await? {
            Some(Response::Error(error)) => Err(Error::Refused(error)),
            other => Ok(other),
        }
    }

    /// The next answer, which must be there.
    pub async fn answer(&mut self) -> Result<Response, Error> {
        self.next().await?.ok_or(Error::NoAnswer)
    }

    /// The socket itself, to pass descriptors on.
    pub(crate) fn socket(&self) -> &UnixStream {
        self.stream.get_ref()
    }

    /// Waits for the `stream` answer, after which the connection carries the peer
    /// protocol's frames: the hand-over of `exec` and `session` requests.
    pub(crate) async fn hand_over(mut self) -> Result<Halves, Error> {
        match self.answer().await? {
            Response::Stream { .. } => {
                let (reader, writer) = self.stream.into_inner().into_split();
                Ok((reader.compat(), writer.compat_write()))
            }
            _ => Err(Error::Unexpected { wanted: "a stream" }),
        }
    }
}
