//! `/loopsy/exec/1`: run a program on another device as if here.
//!
//! After the gate's admission the client sends [`Request::Start`]; the server answers
//! [`Reply::Started`] (or [`Reply::Refused`] with the policy rule that said no), then
//! streams [`Reply::Stdout`] and [`Reply::Stderr`] as the program writes, and ends with one
//! [`Reply::Exited`]. Meanwhile the client sends stdin ([`Request::Stdin`], then
//! [`Request::StdinEof`]), signals and window sizes. If the stream goes away before the
//! program ends, the server kills the program's whole process group.

use serde::{Deserialize, Serialize};

/// Largest exec frame; output travels in chunks of at most [`OUTPUT_CHUNK`], input in
/// chunks of at most [`CHUNK`].
pub const MAX_FRAME: usize = 256 * 1024;
/// Bytes of input per frame.
pub const CHUNK: usize = 64 * 1024;
/// Bytes of output per frame: three times the input's, so a fast writer is read in few
/// frames; inside [`MAX_FRAME`] with room for the frame's own fields, since every version
/// reads frames of up to that size and no more.
pub const OUTPUT_CHUNK: usize = 192 * 1024;
const _: () = assert!(OUTPUT_CHUNK + 1024 <= MAX_FRAME);
/// Most arguments, environment variables, and bytes in any one of them.
pub const MAX_ARGS: usize = 4096;
pub const MAX_ARG_LEN: usize = 128 * 1024;

/// A terminal for the program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pty {
    /// `TERM` for the program.
    pub term: String,
    pub rows: u16,
    pub cols: u16,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// The program and its arguments, run directly (no shell in between). Empty means the
    /// user's login shell.
    pub argv: Vec<String>,
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
    /// Kill the program after this many seconds.
    pub timeout_secs: Option<u64>,
    /// Run on a terminal of this size.
    pub pty: Option<Pty>,
}

impl Start {
    /// Whether the sizes are within the limits.
    pub fn within_limits(&self) -> bool {
        let strings = self
            .argv
            .iter()
            .chain(self.cwd.iter())
            .chain(self.env.iter().flat_map(|(k, v)| [k, v]));
        self.argv.len() + self.env.len() <= MAX_ARGS
            && strings.into_iter().all(|s| s.len() <= MAX_ARG_LEN)
            && self.pty.as_ref().is_none_or(|p| p.term.len() <= 64)
    }
}

/// Client to server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    Start(Start),
    Stdin {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    StdinEof,
    /// Deliver a signal (by number) to the program's process group.
    Signal {
        signal: i32,
    },
    Resize {
        rows: u16,
        cols: u16,
    },
}

/// Server to client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Started {
        pid: u32,
    },
    /// Not run: a policy rule, or a program that cannot be started.
    Refused {
        reason: String,
    },
    Stdout {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Stderr {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The program ended: with `code`, or killed by `signal`; `timed_out` when the timeout
    /// killed it.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode, encode, split};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn requests_round_trip(argv in proptest::collection::vec(".{0,20}", 0..8), data in proptest::collection::vec(any::<u8>(), 0..300)) {
            for request in [
                Request::Start(Start { argv: argv.clone(), cwd: None, env: vec![("K".into(), "V".into())], timeout_secs: Some(3), pty: None }),
                Request::Stdin { data: data.clone() },
                Request::StdinEof,
                Request::Signal { signal: 2 },
            ] {
                let frame = encode(&request, MAX_FRAME).unwrap();
                let (body, _) = split(&frame, MAX_FRAME).unwrap().unwrap();
                prop_assert_eq!(decode::<Request>(body).unwrap(), request);
            }
        }
    }

    #[test]
    fn a_full_chunk_of_output_fits_a_frame() {
        let reply = Reply::Stdout {
            data: vec![0xff; CHUNK],
        };
        assert!(encode(&reply, MAX_FRAME).is_ok());
    }
}
