use std::{io, path::PathBuf};

use loopsy_mesh::framed::{ReadError, WriteError};
use loopsy_wire::control::{self, ErrorCode};

/// A request could not be made, was refused, or its stream broke.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    /// The node (or the peer, through it) refused or failed the request.
    #[error("{0}")]
    Refused(#[from] control::Error),
    /// An answer of another type than the request has: a node of another build.
    #[error("the node answered with something other than {wanted}")]
    Unexpected { wanted: &'static str },
    /// The session's host answered with an error.
    #[error("{0}")]
    Host(String),
    /// The peer did not start the program.
    #[error("{reason}")]
    NotStarted { reason: String },
    /// The node closed a series of answers before its last one.
    #[error("the node ended the {0} before it finished")]
    Unfinished(&'static str),
    /// The stream to the peer ended before its last message.
    #[error("the connection to the peer was lost")]
    Lost,
    /// The stream to the peer broke.
    #[error("the connection to the peer failed: {0}")]
    Broken(ReadError),
    /// The peer sent more than such an answer can hold.
    #[error("the peer sent more than {limit} bytes of {what}, more than any host holds")]
    TooLarge { what: &'static str, limit: usize },
    /// Input could not be sent on the stream to the peer.
    #[error("cannot send to the peer: {0}")]
    Unsent(WriteError),
}

impl Error {
    /// The node's error code, for an error the node answered.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Refused(e) => Some(e.code),
            _ => None,
        }
    }

    /// Whether a program that did not start is missing there (what a shell says 127 to),
    /// rather than refused or unable to start for another reason.
    pub fn is_missing_program(&self) -> bool {
        matches!(self, Error::NotStarted { reason }
            if reason.starts_with("cannot start") && reason.contains("No such file"))
    }
}
