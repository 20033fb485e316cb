//! The client side of the control socket, used by the CLI.

use std::{io, path::PathBuf};

use loopsy_mesh::framed::{self, ReadError, WriteError};
use loopsy_wire::control::{self, Envelope, MAX_FRAME, Request, Response};
use tokio::net::UnixStream;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use crate::Home;

/// A request could not be made or was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no loopsy node is running with home {home} (no control socket at {socket}); start \
         one with `loopsy{hint} node`"
    )]
    NoNode {
        home: PathBuf,
        socket: PathBuf,
        hint: String,
    },
    #[error("cannot reach the node's control socket {socket}: {source}")]
    Connect { socket: PathBuf, source: io::Error },
    #[error("cannot send the request to the node: {0}")]
    Send(#[from] WriteError),
    #[error("the node's answer could not be read: {0}")]
    Receive(#[from] ReadError),
    #[error("the node closed the connection without answering")]
    NoAnswer,
    #[error("{0}")]
    Refused(#[from] control::Error),
}

/// An open request to the daemon, for requests that answer with a stream.
pub struct Connection {
    stream: Compat<UnixStream>,
}

impl Connection {
    /// Connects to the home's daemon and sends `request`.
    pub async fn open(home: &Home, request: Request) -> Result<Self, ClientError> {
        let socket = home.socket();
        let stream = UnixStream::connect(&socket)
            .await
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NoNode {
                    home: home.dir().to_owned(),
                    socket: socket.clone(),
                    hint: home.flag_hint(),
                },
                _ => ClientError::Connect {
                    socket: socket.clone(),
                    source,
                },
            })?;
        let mut stream = stream.compat();
        framed::write(&mut stream, &Envelope::new(request), MAX_FRAME).await?;
        Ok(Self { stream })
    }

    /// The raw connection, for requests whose answer turns it into a relayed stream.
    pub fn into_stream(self) -> UnixStream {
        self.stream.into_inner()
    }

    /// The next response; `Ok(None)` once the daemon has closed the stream.
    pub async fn next(&mut self) -> Result<Option<Response>, ClientError> {
        match framed::read(&mut self.stream, MAX_FRAME).await? {
            Some(Response::Error(error)) => Err(ClientError::Refused(error)),
            other => Ok(other),
        }
    }
}

/// Sends one request and returns its one response; an error response becomes `Err`.
pub async fn request(home: &Home, request: Request) -> Result<Response, ClientError> {
    let mut connection = Connection::open(home, request).await?;
    connection.next().await?.ok_or(ClientError::NoAnswer)
}
