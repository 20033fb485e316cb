//! A member record: what one member (the author) says about another device (the subject):
//! that it belongs to the mesh, with its name and addresses, or that it was revoked.
//! Signed by the author; each author writes only its own records, so the member list
//! replicates without conflicts between writers. An admission carries what the author grants
//! the subject: the restriction chosen at pairing travels with it, so every member grants
//! an introduced device at most that.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Longest encoded record accepted.
pub const MAX_RECORD: usize = 4096;
/// Most addresses in a record.
pub const MAX_ADDRS: usize = 16;
/// Most capability names in a record, and the longest name.
pub const MAX_ALLOW: usize = 32;
pub const MAX_ALLOW_NAME: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The device the record is about (peer ID bytes).
    pub subject: ByteBuf,
    /// The member that wrote and signed it (peer ID bytes).
    pub author: ByteBuf,
    pub name: String,
    pub addrs: Vec<ByteBuf>,
    pub revoked: bool,
    /// When the author wrote it, in milliseconds since the Unix epoch; later wins.
    pub at: u64,
    /// What the author grants the subject (capability names), and so the most any member
    /// grants it on this author's word. Absent in records written before grants travelled
    /// (and left out of the signed bytes then, so their signatures still verify).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    #[serde(default)]
    pub signature: ByteBuf,
}

impl Record {
    /// The bytes the author signs: every field but the signature, after a domain tag.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let unsigned = Record {
            signature: ByteBuf::new(),
            ..self.clone()
        };
        let mut out = b"loopsy member record v1".to_vec();
        // Encoding our own plain struct into a Vec cannot fail.
        let _ = ciborium::into_writer(&unsigned, &mut out);
        out
    }

    /// The record's key in the members collection: subject, then author.
    pub fn key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.subject.len() + self.author.len() + 1);
        key.push(self.subject.len() as u8);
        key.extend(self.subject.iter());
        key.extend(self.author.iter());
        key
    }

    /// Whether sizes are within bounds.
    pub fn within_limits(&self) -> bool {
        self.subject.len() <= 64
            && self.author.len() <= 64
            && self.name.len() <= 256
            && self.addrs.len() <= MAX_ADDRS
            && self.addrs.iter().all(|a| a.len() <= 256)
            && self.signature.len() <= 256
            && self.allow.as_ref().is_none_or(|allow| {
                allow.len() <= MAX_ALLOW && allow.iter().all(|a| a.len() <= MAX_ALLOW_NAME)
            })
    }
}
