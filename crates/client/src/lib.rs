//! A client of a running node's control socket (`docs/control-api.md`), shared by the
//! `loopsy` CLI and `loopsy mcp`: every request as a typed call, and the requests that
//! hand the connection over to a peer's stream (exec, session, attach) as typed streams.
//!
//! [`Client`] knows where the socket is. A one-shot request ([`Client::peers`],
//! [`Client::sessions`], ...) connects, sends one frame and reads one answer, matched to
//! the type it must have in one place. Requests that answer with a stream of frames
//! (copy, audit, a pairing invitation) read them as typed events; requests that answer
//! `stream` turn the connection into the peer protocol's frames ([`exec`], [`session`]).

mod connection;
mod error;
pub mod exec;
pub mod handover;
pub mod recording;
mod requests;
pub mod session;
pub mod streams;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use connection::Connection;
pub use error::Error;
pub use requests::Sent;

/// Where a node's control socket is, and how to name that node's home to a person.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    home: PathBuf,
    hint: String,
}

impl Client {
    /// A client of the node at `socket`, whose home is `home`; `hint` is the flag that
    /// selects that home on a command line (` --home DIR`, or empty for the default), for
    /// the message that says no node runs there.
    pub fn new(socket: PathBuf, home: PathBuf, hint: String) -> Self {
        Self { socket, home, hint }
    }
}
