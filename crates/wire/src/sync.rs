//! `/loopsy/sync/1`: replication of shared collections between members.
//!
//! Anti-entropy, when two members connect: the opener sends a [`Message::Digest`] of one
//! collection (key, version and hash of every record); the other answers
//! [`Message::Delta`] with the records the opener lacks or holds older, and the keys it
//! wants; the opener sends those as [`Message::Records`]. On a change a member sends
//! [`Message::Push`] to the members it is connected to, and each one that learns something
//! from it passes it on, so members that never meet still converge. Records are opaque here:
//! each collection decodes, checks and merges its own.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Largest sync frame.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;
/// Most entries in one digest or records in one message.
pub const MAX_ENTRIES: usize = 16 * 1024;
/// Longest collection name.
pub const MAX_COLLECTION_NAME: usize = 32;

/// One record's summary in a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: ByteBuf,
    pub version: u64,
    /// Tells apart two records with the same key and version.
    pub hash: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    Digest {
        collection: String,
        entries: Vec<Entry>,
    },
    Delta {
        records: Vec<ByteBuf>,
        want: Vec<ByteBuf>,
    },
    Records {
        records: Vec<ByteBuf>,
    },
    Push {
        collection: String,
        records: Vec<ByteBuf>,
    },
}

impl Message {
    /// Whether the message is within the count limits (the frame limit bounds bytes).
    pub fn within_limits(&self) -> bool {
        let name_ok = |c: &String| c.len() <= MAX_COLLECTION_NAME;
        match self {
            Message::Digest {
                collection,
                entries,
            } => name_ok(collection) && entries.len() <= MAX_ENTRIES,
            Message::Delta { records, want } => {
                records.len() <= MAX_ENTRIES && want.len() <= MAX_ENTRIES
            }
            Message::Records { records } => records.len() <= MAX_ENTRIES,
            Message::Push {
                collection,
                records,
            } => name_ok(collection) && records.len() <= MAX_ENTRIES,
        }
    }
}
