//! `/loopsy/session/1`: persistent terminal sessions, hosted by one device and attached to
//! from any.
//!
//! The opener sends one [`Request`]. `new`, `list` and `kill` get one [`Reply`]. `attach`
//! gets [`Reply::Attached`] (with the screen as it is now, unless the client resumes from an
//! output offset the host still holds), then [`Reply::Output`] frames, each with the offset
//! of its first byte in the session's output since it started, and [`Reply::Exited`] when
//! the program ends. Meanwhile the client sends [`Input`] frames. A client that lost its
//! connection attaches again with the offset after the last byte it got: nothing is lost
//! and nothing repeats while the host still holds those bytes.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The largest terminal a session takes; sizes beyond are cut to these.
pub const MAX_ROWS: u16 = 500;
pub const MAX_COLS: u16 = 1000;

/// Largest session frame; output travels in pieces of at most [`CHUNK`].
pub const MAX_FRAME: usize = 256 * 1024;
pub const CHUNK: usize = 64 * 1024;
/// Longest session name.
pub const MAX_NAME: usize = 64;

/// The opener's first message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start a session: `argv` (empty for the host's login shell) on a terminal of this size.
    New {
        name: Option<String>,
        argv: Vec<String>,
        rows: u16,
        cols: u16,
        /// Keep the whole output in a recording on the host, beyond the ring, up to the
        /// host's size bound. Absent when false, so that a plain start is what it was (a
        /// host that predates recordings starts the session unrecorded: the reply's
        /// `recording` then stays empty).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        record: bool,
    },
    List,
    Kill {
        session: String,
    },
    /// `session` is an ID, a name, or a unique prefix of either. With `offset`, resume the
    /// output from there; without, start from the current screen. A size of 0 × 0 keeps
    /// the terminal's size (for clients with no terminal, such as agents).
    Attach {
        session: String,
        offset: Option<u64>,
        rows: u16,
        cols: u16,
        /// Watch only: the host takes no keys and no sizes from this client, and its
        /// attaching does not answer a session that waits. Absent when false, so that a
        /// plain attach is what it was.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        read_only: bool,
    },
    /// The output the host still holds, with the time each piece came: answered by
    /// [`Reply::Recording`] frames, the last with `last` set.
    Export {
        session: String,
    },
    /// Delete the session's recording (stopping it if it is being written): answered by
    /// [`Reply::RecordingDeleted`].
    DeleteRecording {
        session: String,
    },
}

/// What a client sends while attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    Keys { data: ByteBuf },
    Resize { rows: u16, cols: u16 },
}

/// A session's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    Running,
    /// `code` is the exit code, or 128+N for signal N; none when the host lost the program
    /// (the node stopped while it ran).
    Exited {
        code: Option<i32>,
    },
}

/// A session as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub id: String,
    pub name: Option<String>,
    pub command: Vec<String>,
    pub status: Status,
    /// Seconds since the epoch.
    pub created: u64,
    pub last_activity: u64,
    pub clients: u32,
    /// Set while the program waits for its person: since its first bell, notification or
    /// end that no client has answered by typing or attaching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<crate::attention::Waiting>,
    /// Set when the host keeps a recording of the session (`session new --record`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<Recorded>,
}

/// A session's recording on its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// Bytes of the recording file (asciicast v2) so far.
    pub bytes: u64,
    /// The host's bound on it: once reached, the recording stops (`full`).
    pub max_bytes: u64,
    /// The bound was reached: output after that point is not in the recording.
    #[serde(default)]
    pub full: bool,
}

/// Host to client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Created(Info),
    Sessions {
        sessions: Vec<Info>,
    },
    Killed,
    /// `screen` redraws the terminal as it is at `offset` (absent when resuming); output
    /// follows from `offset`.
    Attached {
        info: Info,
        offset: u64,
        screen: Option<ByteBuf>,
        /// The terminal's size (the screen's, when there is one).
        #[serde(default)]
        rows: u16,
        #[serde(default)]
        cols: u16,
    },
    Output {
        offset: u64,
        data: ByteBuf,
    },
    Exited {
        code: Option<i32>,
    },
    Error {
        message: String,
    },
    /// The recording is gone; it held `bytes`.
    RecordingDeleted {
        bytes: u64,
    },
    /// Part of an export: the terminal's size, when the session started, and output pieces
    /// each with the milliseconds since the epoch at which the host read it.
    Recording {
        rows: u16,
        cols: u16,
        /// Seconds since the epoch.
        created: u64,
        pieces: Vec<Piece>,
        last: bool,
    },
}

/// A piece of a session's output and when it came (milliseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub time_ms: u64,
    pub data: ByteBuf,
}

impl Request {
    /// Whether the sizes are within the limits.
    pub fn within_limits(&self) -> bool {
        match self {
            Request::New { name, argv, .. } => {
                name.as_ref().is_none_or(|n| n.len() <= MAX_NAME)
                    && argv.len() <= crate::exec::MAX_ARGS
                    && argv.iter().all(|a| a.len() <= crate::exec::MAX_ARG_LEN)
            }
            Request::List => true,
            Request::Kill { session }
            | Request::Attach { session, .. }
            | Request::Export { session }
            | Request::DeleteRecording { session } => session.len() <= 256,
        }
    }
}

/// Of output `data` at `offset`, the part not shown yet when `at` was shown up to, and
/// where the shown output then ends. Bytes already shown before a reconnection are not
/// shown again; the offsets are the host's, so no sum of them may overflow.
pub fn unseen(at: Option<u64>, offset: u64, data: &[u8]) -> (u64, Option<&[u8]>) {
    let at = at.unwrap_or(offset);
    let end = offset.saturating_add(data.len() as u64);
    let skip = usize::try_from(at.saturating_sub(offset)).unwrap_or(usize::MAX);
    (end.max(at), data.get(skip..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_shown_once_whatever_offsets_the_host_sends() {
        assert_eq!(unseen(None, 5, b"abc"), (8, Some(&b"abc"[..])));
        // After a reconnection, what was shown already is skipped.
        assert_eq!(unseen(Some(6), 5, b"abc"), (8, Some(&b"bc"[..])));
        assert_eq!(unseen(Some(9), 5, b"abc"), (9, None));
        // An offset at the end of the range is no overflow (a panic, in a debug build).
        assert_eq!(
            unseen(Some(1), u64::MAX, b"abc"),
            (u64::MAX, Some(&b"abc"[..]))
        );
    }
    use crate::frame;

    #[test]
    fn messages_round_trip() {
        let info = Info {
            id: "k3j2".into(),
            name: Some("agent".into()),
            command: vec!["claude".into()],
            status: Status::Exited { code: Some(3) },
            created: 1,
            last_activity: 2,
            clients: 1,
            waiting: None,
            recording: None,
        };
        for reply in [
            Reply::Attached {
                info: info.clone(),
                offset: 7,
                screen: Some(ByteBuf::from(b"\x1b[H".to_vec())),
                rows: 24,
                cols: 80,
            },
            Reply::Sessions {
                sessions: vec![info],
            },
            Reply::Output {
                offset: 9,
                data: ByteBuf::from(b"hi".to_vec()),
            },
        ] {
            let bytes = frame::encode(&reply, MAX_FRAME).unwrap();
            let back: Reply = frame::decode(&bytes[frame::HEADER_LEN..]).unwrap();
            assert_eq!(back, reply);
        }
        let long = Request::New {
            name: Some("x".repeat(MAX_NAME + 1)),
            argv: vec![],
            rows: 24,
            cols: 80,
            record: false,
        };
        assert!(!long.within_limits());
    }
}
