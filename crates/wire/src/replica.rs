//! Records of the replicated last-writer-wins collections (the session registry, the shared
//! context, messages): a key, a value or a deletion, the author's hybrid logical clock, and
//! the author's signature. Of two records with one key the later clock wins (the author's
//! peer ID breaks ties), so every device that has seen the same records holds the same
//! state, whatever order they came in.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Longest key, and longest value, of any collection.
pub const MAX_KEY: usize = 256;
pub const MAX_VALUE: usize = 64 * 1024;

/// A hybrid logical clock reading: wall-clock milliseconds, and a counter for events within
/// one millisecond (or while the wall clock lags behind a clock seen from a peer).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Clock {
    pub ms: u64,
    pub counter: u32,
}

impl Clock {
    /// The next reading after `self`, at wall-clock time `now_ms`.
    pub fn tick(self, now_ms: u64) -> Clock {
        if now_ms > self.ms {
            Clock {
                ms: now_ms,
                counter: 0,
            }
        } else {
            Clock {
                ms: self.ms,
                counter: self.counter.saturating_add(1),
            }
        }
    }

    /// A version number that orders like the clock (for digests).
    pub fn version(self) -> u64 {
        self.ms
            .saturating_mul(1 << 16)
            .saturating_add(u64::from(self.counter.min(0xffff)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub key: ByteBuf,
    /// `None` deletes the key (a tombstone, kept for a while so the deletion spreads).
    pub value: Option<ByteBuf>,
    pub clock: Clock,
    /// The peer ID bytes of the device that wrote and signed it.
    pub author: ByteBuf,
    /// When the value stops counting, in milliseconds since the Unix epoch.
    pub expires: Option<u64>,
    #[serde(default)]
    pub signature: ByteBuf,
}

impl Record {
    /// The bytes the author signs: the collection's name (a record signed for one
    /// collection means nothing in another), then every field but the signature.
    pub fn signed_bytes(&self, collection: &str) -> Vec<u8> {
        let unsigned = Record {
            signature: ByteBuf::new(),
            ..self.clone()
        };
        let mut out = format!("loopsy replica record v1 {collection}\n").into_bytes();
        // Encoding our own plain struct into a Vec cannot fail.
        let _ = ciborium::into_writer(&unsigned, &mut out);
        out
    }

    /// Whether this record wins over `other` (same key).
    pub fn wins_over(&self, other: &Record) -> bool {
        (self.clock, &self.author[..], &self.signature[..])
            > (other.clock, &other.author[..], &other.signature[..])
    }

    /// Whether the sizes are within bounds.
    pub fn within_limits(&self) -> bool {
        !self.key.is_empty()
            && self.key.len() <= MAX_KEY
            && self.value.as_ref().is_none_or(|v| v.len() <= MAX_VALUE)
            && self.author.len() <= 64
            && self.signature.len() <= 256
    }

    /// A digest hash that tells two records of one key and clock apart.
    pub fn hash(&self) -> u64 {
        let mut bytes = [0u8; 8];
        for (i, b) in self.signature.iter().take(8).enumerate() {
            bytes[i] = *b;
        }
        u64::from_be_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_moves_forward_whatever_the_wall_clock_does() {
        let c = Clock {
            ms: 100,
            counter: 3,
        };
        assert_eq!(
            c.tick(200),
            Clock {
                ms: 200,
                counter: 0
            }
        );
        assert_eq!(
            c.tick(100),
            Clock {
                ms: 100,
                counter: 4
            }
        );
        assert_eq!(
            c.tick(50),
            Clock {
                ms: 100,
                counter: 4
            },
            "a wall clock that went back"
        );
        assert!(c.tick(50).version() > c.version());
    }

    #[test]
    fn signed_bytes_depend_on_the_collection() {
        let r = Record {
            key: ByteBuf::from(b"k".to_vec()),
            value: None,
            clock: Clock::default(),
            author: ByteBuf::new(),
            expires: None,
            signature: ByteBuf::new(),
        };
        assert_ne!(r.signed_bytes("ctx"), r.signed_bytes("sessions"));
    }
}
