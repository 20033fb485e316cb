//! `/loopsy/transfer/1`: copying files and trees between devices.
//!
//! After the gate's admission the opener sends one [`Request`]: [`Request::Push`] makes the
//! opener the sender and the serving device the receiver, [`Request::Pull`] the other way
//! round. From then on both directions speak the same flow, sender first:
//!
//! 1. [`Data::Begin`] with the number of top-level sources and the totals;
//! 2. batches: [`Data::Offer`] lists up to [`MAX_BATCH`] entries (parents before their
//!    children); the receiver answers [`Reply::Plan`], one [`Plan`] per file of the offer
//!    (fresh, resume from a verified prefix, or skip); the sender then streams each planned
//!    file ([`Data::File`], [`Data::Chunk`]s each followed by its raw bytes, then
//!    [`Data::End`] or [`Data::Abandon`]) and closes the batch with [`Data::Finish`]; the
//!    receiver answers [`Reply::Report`] with one [`Outcome`] per entry;
//! 3. [`Data::Done`].
//!
//! One round trip per batch, not per file, and none between batches: a sender may send the
//! next batch's offer right behind the previous batch's `Finish`, before its report comes.
//! A receiver reads the flow in order and sends each report before the next plan, and
//! sends it as soon as the batch is stored, without waiting for anything more from the
//! sender (which may be waiting for it). Either side may end the copy with an `Error`.
//!
//! Integrity: files are cut into [`CHUNK`]-byte chunks, each carrying its BLAKE3 chaining
//! value (the whole file's BLAKE3 hash when it is one chunk); the chaining values merge into
//! the file's BLAKE3 hash, the same `b3sum` prints, which [`Data::End`] carries.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Bytes of file data per chunk: a power of two of BLAKE3 chunks, so each chunk is a whole
/// subtree of the file's hash tree.
pub const CHUNK: usize = 256 * 1024;
/// Largest message frame (offers are the big ones); chunk bytes travel outside frames.
pub const MAX_FRAME: usize = 2 * 1024 * 1024;
/// Most entries in one offer.
pub const MAX_BATCH: usize = 1000;
/// Most bytes of paths and link targets in one offer, which keeps it under [`MAX_FRAME`].
pub const MAX_BATCH_NAMES: usize = 1024 * 1024;
/// Most sources in a pull, and longest message a side may give as a reason.
pub const MAX_SOURCES: usize = 1024;
pub const MAX_REASON: usize = 4096;

/// A 32-byte BLAKE3 hash or chaining value.
pub type Digest = [u8; 32];

/// The opener's first message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The opener sends; the serving device stores at `dest` (scp's rules: into it when it
    /// is a directory, as it otherwise).
    Push { dest: ByteBuf, options: Receive },
    /// The serving device sends `sources`.
    Pull {
        sources: Vec<ByteBuf>,
        options: Send,
    },
}

/// How the receiving side stores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receive {
    /// Keep existing files instead of replacing them.
    pub no_clobber: bool,
    /// Flush each file to disk before renaming it into place.
    pub fsync: bool,
}

/// How the sending side reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Send {
    /// Copy directories with everything in them.
    pub recursive: bool,
    /// Also compute each file's SHA-256.
    pub sha256: bool,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    File {
        size: u64,
    },
    Dir,
    /// A symbolic link, stored as it is and never followed.
    Symlink {
        target: ByteBuf,
    },
}

/// One thing to copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative path (raw bytes, any name a file system allows); its first component is
    /// the source's own name.
    pub path: ByteBuf,
    #[serde(flatten)]
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Modification time: seconds and nanoseconds since the epoch.
    pub mtime: i64,
    pub mtime_nsec: u32,
}

/// Sender to receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Data {
    Begin {
        /// Top-level sources: with more than one, the destination must be a directory.
        sources: u32,
        files: u64,
        bytes: u64,
    },
    Offer {
        entries: Vec<Entry>,
    },
    /// Data for the offer's entry `index` follows, from byte `from` (0, or the verified
    /// prefix the receiver offered to resume from).
    File {
        index: u32,
        from: u64,
    },
    /// `len` raw bytes follow this frame.
    Chunk {
        len: u32,
        #[serde(with = "serde_bytes")]
        hash: Digest,
    },
    /// The file's whole BLAKE3 hash, and its SHA-256 when asked for.
    End {
        #[serde(with = "serde_bytes")]
        blake3: Digest,
        sha256: Option<ByteBuf>,
    },
    /// The file could not be sent whole (it changed while being read, say): discard it.
    Abandon {
        reason: String,
    },
    Finish,
    Done,
    Error {
        message: String,
    },
}

/// What the receiver will do with one file of an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "plan", rename_all = "snake_case")]
pub enum Plan {
    Fresh,
    /// It holds the first `len` bytes already; `digest` is the BLAKE3 hash of their chunks'
    /// hashes, for the sender to compare with its own.
    Resume {
        len: u64,
        #[serde(with = "serde_bytes")]
        digest: Digest,
    },
    /// It keeps what it has (no clobber).
    Skip,
}

/// What became of one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Stored,
    Skipped,
    Failed { reason: String },
}

/// Receiver to sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Plan { plans: Vec<Plan> },
    Report { outcomes: Vec<Outcome> },
    Error { message: String },
}

impl Entry {
    /// Bytes of names this entry adds to an offer.
    pub fn name_len(&self) -> usize {
        self.path.len()
            + match &self.kind {
                Kind::Symlink { target } => target.len(),
                _ => 0,
            }
    }

    pub fn size(&self) -> u64 {
        match self.kind {
            Kind::File { size } => size,
            _ => 0,
        }
    }
}

/// Cuts a reason to [`MAX_REASON`] bytes, on a character boundary.
pub fn bounded(mut reason: String) -> String {
    if reason.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;

    fn entry(path: &[u8], kind: Kind) -> Entry {
        Entry {
            path: ByteBuf::from(path.to_vec()),
            kind,
            mode: 0o644,
            mtime: 1_700_000_000,
            mtime_nsec: 5,
        }
    }

    #[test]
    fn messages_round_trip() {
        let offer = Data::Offer {
            entries: vec![
                entry(b"dir", Kind::Dir),
                entry(b"dir/a \n\xff", Kind::File { size: 7 }),
                entry(
                    b"dir/l",
                    Kind::Symlink {
                        target: ByteBuf::from(b"../x".to_vec()),
                    },
                ),
            ],
        };
        let bytes = frame::encode(&offer, MAX_FRAME).unwrap();
        let back: Data = frame::decode(&bytes[frame::HEADER_LEN..]).unwrap();
        assert_eq!(back, offer);
        let chunk = Data::Chunk {
            len: 3,
            hash: [7; 32],
        };
        let bytes = frame::encode(&chunk, MAX_FRAME).unwrap();
        assert_eq!(
            frame::decode::<Data>(&bytes[frame::HEADER_LEN..]).unwrap(),
            chunk
        );
    }

    #[test]
    fn a_full_offer_fits_in_a_frame() {
        let long = vec![b'x'; MAX_BATCH_NAMES / MAX_BATCH];
        let entries = (0..MAX_BATCH)
            .map(|_| entry(&long, Kind::File { size: u64::MAX }))
            .collect();
        assert!(frame::encode(&Data::Offer { entries }, MAX_FRAME).is_ok());
    }

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        let cut = bounded("é".repeat(MAX_REASON));
        assert!(cut.len() <= MAX_REASON && cut.len() >= MAX_REASON - 1);
    }
}
