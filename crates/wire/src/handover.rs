//! A terminal handed over to the daemon (`attach`): the client passes its stdin and stdout
//! to its node with SCM_RIGHTS, as ssh's ControlMaster clients do, and the node reads keys
//! and writes the session's output itself. The control connection then carries these
//! frames: sizes from the client, and from the node what became of the attachment.

use serde::{Deserialize, Serialize};

/// The largest frame either side sends.
pub const MAX_FRAME: usize = 64 * 1024;

/// The one byte that carries the descriptors, sent once the node has answered `stream`:
/// stdin, stdout, then the client's progress file, a regular file (a memfd) in which the
/// node keeps the offset after the last byte it showed ([`SHOWN_LEN`] bytes, little-endian,
/// written after each write to the terminal), for the client to resume from exactly should
/// the node die holding its terminal.
pub const PASS_BYTE: u8 = b'T';

/// The progress file's length once the node has written to it.
pub const SHOWN_LEN: usize = 8;

/// Client to node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToNode {
    /// The terminal's new size.
    Resize { rows: u16, cols: u16 },
    /// The client has said what it had to about the last `attached`: the screen may be
    /// drawn now (so that a line of the client's never lands inside it).
    Proceed,
}

/// Node to client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToClient {
    /// Attached to `session`, its output from `offset` on; the node draws nothing until
    /// the client answers `proceed`.
    Attached { session: String, offset: u64 },
    /// The last frame: how the hand-over ended.
    Ended(Ended),
}

/// How a handed-over attachment ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Ended {
    /// The detach key was typed, or (with `input_ended`) the input ended.
    Detached { input_ended: bool },
    /// The session's program ended: its code, none when the host lost it.
    Exited { code: Option<i32> },
    /// The connection to the host dropped; the output was shown up to `at`.
    Lost { message: String, at: Option<u64> },
    /// Not worth trying again (the host's error, a terminal that cannot be written).
    Failed { message: String },
}

/// The key that detaches: Ctrl-\ (as dtach). The node that reads the keys stops at it.
pub const DETACH: u8 = 0x1c;

/// Node to client on an `exec` whose stdin, stdout and stderr were handed over (the
/// control request `exec_here`; the descriptors travel on [`PASS_BYTE`] in that order).
/// The program's output never crosses the control connection: it is in the client's
/// stdout and stderr before the node sends `exited`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecNews {
    /// The program is running.
    Started { pid: u32 },
    /// Not run: a policy rule, or a program that cannot be started (as `exec`'s).
    Refused { reason: String },
    /// The program ended, as `exec`'s `exited`; everything it wrote has been written.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
    },
    /// Its stdout or stderr could not be written (a reader that went away): the node has
    /// ended the program, as a relaying client does when its own write fails.
    Unwritable,
}
