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
//! A receiver that says so in its plan ([`Reply::Plan`]'s `packed`) also takes small
//! files packed: [`Data::Files`] stands for the `File`, `Chunk` and `End` of each of up to
//! [`MAX_PACKED`] whole files planned fresh, its table ([`Whole`]s) in the frame and their
//! bytes, one after the other, behind it. A sender that never sees `packed` (an older
//! receiver) sends each file on its own, and an older sender ignores the field.
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

/// Most files in one [`Data::Files`]; their bytes together are at most [`CHUNK`].
pub const MAX_PACKED: usize = 64;

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
    /// Whole small files, planned fresh, in the order of the offer: `files` is their table
    /// ([`Whole::pack`]); their bytes follow this frame, one file after the other.
    Files {
        files: ByteBuf,
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
    Plan {
        plans: Vec<Plan>,
        /// The receiver takes [`Data::Files`] (absent from older receivers).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        packed: bool,
    },
    Report {
        outcomes: Vec<Outcome>,
    },
    Error {
        message: String,
    },
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

/// One file of a [`Data::Files`]: the offer's entry `index`, all `len` bytes of it, and its
/// BLAKE3 hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Whole {
    pub index: u32,
    pub len: u32,
    pub blake3: Digest,
}

/// A [`Data::Files`] table that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a table of packed files of {0} bytes")]
pub struct BadTable(pub usize);

impl Whole {
    /// Bytes of one file in a table: index and length (big-endian), then the hash.
    pub const LEN: usize = 40;

    /// The table of `files`, as [`Data::Files`] carries it.
    pub fn pack(files: &[Whole]) -> ByteBuf {
        let mut table = Vec::with_capacity(files.len() * Self::LEN);
        for file in files {
            table.extend_from_slice(&file.index.to_be_bytes());
            table.extend_from_slice(&file.len.to_be_bytes());
            table.extend_from_slice(&file.blake3);
        }
        ByteBuf::from(table)
    }

    /// The files of a table: one to [`MAX_PACKED`] of them, or an error.
    pub fn unpack(table: &[u8]) -> Result<Vec<Whole>, BadTable> {
        let count = table.len() / Self::LEN;
        if !table.len().is_multiple_of(Self::LEN) || count == 0 || count > MAX_PACKED {
            return Err(BadTable(table.len()));
        }
        Ok(table
            .chunks_exact(Self::LEN)
            .map(|file| {
                let (index, rest) = file.split_at(4);
                let (len, blake3) = rest.split_at(4);
                Whole {
                    index: u32::from_be_bytes(index.try_into().unwrap_or_default()),
                    len: u32::from_be_bytes(len.try_into().unwrap_or_default()),
                    blake3: blake3.try_into().unwrap_or_default(),
                }
            })
            .collect())
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
    fn a_plan_says_packed_and_older_sides_read_past_it() {
        // The reply as a receiver before packed files wrote and read it.
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum Older {
            Plan { plans: Vec<Plan> },
        }
        let plans = vec![Plan::Fresh, Plan::Skip];
        let new = Reply::Plan {
            plans: plans.clone(),
            packed: true,
        };
        let bytes = frame::encode(&new, MAX_FRAME).unwrap();
        let body = &bytes[frame::HEADER_LEN..];
        assert_eq!(frame::decode::<Reply>(body).unwrap(), new);
        assert_eq!(
            frame::decode::<Older>(body).unwrap(),
            Older::Plan {
                plans: plans.clone()
            }
        );
        let old = frame::encode(
            &Older::Plan {
                plans: plans.clone(),
            },
            MAX_FRAME,
        )
        .unwrap();
        assert_eq!(
            frame::decode::<Reply>(&old[frame::HEADER_LEN..]).unwrap(),
            Reply::Plan {
                plans,
                packed: false
            }
        );
    }

    #[test]
    fn packed_tables_round_trip_and_bad_ones_are_refused() {
        let files: Vec<Whole> = (0..MAX_PACKED as u32)
            .map(|i| Whole {
                index: i * 3,
                len: u32::MAX - i,
                blake3: [i as u8; 32],
            })
            .collect();
        let table = Whole::pack(&files);
        assert_eq!(Whole::unpack(&table).unwrap(), files);
        let message = Data::Files { files: table };
        let bytes = frame::encode(&message, MAX_FRAME).unwrap();
        assert_eq!(
            frame::decode::<Data>(&bytes[frame::HEADER_LEN..]).unwrap(),
            message
        );
        let too_many = Whole::pack(&[files.clone(), files[..1].to_vec()].concat());
        for bad in [&[][..], &too_many[..], &Whole::pack(&files[..2])[..79]] {
            assert_eq!(Whole::unpack(bad), Err(BadTable(bad.len())));
        }
    }

    proptest::proptest! {
        /// Any bytes as a table: files or an error, never a panic.
        #[test]
        fn any_table_unpacks_or_is_refused(table in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000)) {
            if let Ok(files) = Whole::unpack(&table) {
                proptest::prop_assert_eq!(&Whole::pack(&files)[..], &table[..]);
            }
        }
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
