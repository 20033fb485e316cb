//! A program on a peer (`/loopsy/exec/1` through the node): its output and end as typed
//! events on one side, its input, signals and window size on the other. Closing the
//! connection (dropping both halves) kills the program.

use loopsy_mesh::framed;
use loopsy_wire::{
    control::Request,
    exec::{CHUNK, MAX_FRAME, Reply, Request as Order, Start},
};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::compat::Compat;

use crate::{Client, Connection, Error};

/// The program's side: what it writes, and how it ended.
pub struct Output(Compat<OwnedReadHalf>);

/// Our side: what goes to the program.
pub struct Input(pub(crate) Compat<OwnedWriteHalf>);

/// One piece of what the program did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The last event.
    Exited(Exit),
}

/// How a program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code; none when a signal ended it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The timeout stopped it.
    pub timed_out: bool,
}

impl Client {
    /// Starts `start` on `peer`. A peer that refuses says so here or as the first event.
    pub async fn exec(&self, peer: String, start: Start) -> Result<(Output, Input), Error> {
        let connection = Connection::open(self, Request::Exec { peer, start }).await?;
        let (reader, writer) = connection.hand_over().await?;
        Ok((Output(reader), Input(writer)))
    }
}

impl Output {
    /// The next event; a program that was not started is [`Error::NotStarted`], a stream
    /// that ended before the exit is [`Error::Lost`].
    pub async fn next(&mut self) -> Result<Event, Error> {
        loop {
            let reply = match framed::read::<Reply, _>(&mut self.0, MAX_FRAME).await {
                Ok(Some(reply)) => reply,
                Ok(None) => return Err(Error::Lost),
                Err(e) => return Err(Error::Broken(e)),
            };
            return match reply {
                Reply::Started { .. } => continue,
                Reply::Stdout { data } => Ok(Event::Stdout(data)),
                Reply::Stderr { data } => Ok(Event::Stderr(data)),
                Reply::Refused { reason } => Err(Error::NotStarted { reason }),
                Reply::Exited {
                    code,
                    signal,
                    timed_out,
                } => Ok(Event::Exited(Exit {
                    code,
                    signal,
                    timed_out,
                })),
            };
        }
    }
}

impl Input {
    /// Writes `data` to the program's stdin, in pieces the protocol takes.
    pub async fn stdin(&mut self, data: &[u8]) -> Result<(), Error> {
        for piece in data.chunks(CHUNK) {
            self.send(&Order::Stdin {
                data: piece.to_vec(),
            })
            .await?;
        }
        Ok(())
    }

    /// Closes the program's stdin.
    pub async fn eof(&mut self) -> Result<(), Error> {
        self.send(&Order::StdinEof).await
    }

    /// Signal `number` to the program's process group.
    pub async fn signal(&mut self, number: i32) -> Result<(), Error> {
        self.send(&Order::Signal { signal: number }).await
    }

    /// The program's terminal size (for a program on a terminal).
    pub async fn resize(&mut self, rows: u16, cols: u16) -> Result<(), Error> {
        self.send(&Order::Resize { rows, cols }).await
    }

    async fn send(&mut self, order: &Order) -> Result<(), Error> {
        framed::write(&mut self.0, order, MAX_FRAME)
            .await
            .map_err(Error::Unsent)
    }
}
