//! Replication over `/loopsy/sync/1` (the flow is in `loopsy_wire::sync`), for every
//! collection a node shares with its members: for now the member list; sessions, the
//! context and messages ride on the same engine.
//!
//! A collection only has to say what it holds ([`Collection::digest`]), hand out records,
//! and merge records, returning the ones that were new: those are passed on to the other
//! connected members, so a change crosses the mesh through any chain of members, and stops
//! where nothing new is learnt.
//!
//! Need to know: a collection that serves a capability (the context serves `ctx`, the
//! session registry `sessions`) goes only to members that hold it here, and is taken only
//! from them. Records a collection refuses (forged, dated too far ahead) are audited.
//!
//! The [`Engine`] owns the collections, registered when the node starts. [`serve`] answers
//! a member's exchange, [`client`] starts one (anti-entropy), and [`push`] sends changes to
//! the connected members through one bounded queue.

mod client;
pub mod push;
mod serve;
#[cfg(test)]
mod serve_tests;

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::{AsyncRead, AsyncWrite};
use loopsy_mesh::{PeerId, framed};
use loopsy_wire::{
    member::{self, Record},
    sync::{Entry, MAX_FRAME, Message},
};
use serde_bytes::ByteBuf;

pub use push::{Pushes, pushes};

use crate::{
    audit::Audit,
    caps::{Capability, Caps},
    trust::Trust,
};

/// How long one exchange may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// A replicated collection.
pub trait Collection: Send + Sync {
    fn name(&self) -> &'static str;
    /// Key, version and hash of every record.
    fn digest(&self) -> Vec<Entry>;
    /// The encoded records for these keys (unknown keys are skipped).
    fn records(&self, keys: &[Vec<u8>]) -> Vec<ByteBuf>;
    /// Merges encoded records: those that were new here, and why others were refused.
    fn merge(&self, records: Vec<ByteBuf>) -> Merged;
    /// The capability a record's author needs here (whoever passed it on); `None` when
    /// membership is enough.
    fn needs(&self) -> Option<Capability> {
        None
    }
    /// The capability a member needs here to receive the collection (and to pass records
    /// of it on); `None` when membership is enough.
    fn serves(&self) -> Option<Capability> {
        None
    }
    /// The author of an encoded record.
    fn author_of(&self, _record: &[u8]) -> Option<PeerId> {
        None
    }
}

/// What a merge did.
#[derive(Debug, Default)]
pub struct Merged {
    /// Records new here, to pass on.
    pub fresh: Vec<ByteBuf>,
    /// Why records were refused, one reason each.
    pub refused: Vec<String>,
}

/// Whether a member with `grants` here may receive and pass on `collection`.
fn may_share(collection: &dyn Collection, grants: Option<&Caps>) -> bool {
    grants.is_some_and(|g| {
        collection.serves().is_none_or(|c| {
            // A device that may watch the sessions may know which there are, and their events.
            g.contains(&c) || (c == Capability::Sessions && g.contains(&Capability::View))
        })
    })
}

/// Compares two digests: the keys whose records `mine` should send, and the keys it wants.
pub fn compare(mine: &[Entry], theirs: &[Entry]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let theirs: HashMap<&[u8], &Entry> = theirs.iter().map(|e| (e.key.as_slice(), e)).collect();
    let mut send = Vec::new();
    let mut want = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for entry in mine {
        seen.insert(entry.key.as_slice());
        match theirs.get(entry.key.as_slice()) {
            None => send.push(entry.key.to_vec()),
            Some(t) if t.hash == entry.hash && t.version == entry.version => {}
            Some(t) if t.version > entry.version => want.push(entry.key.to_vec()),
            Some(t) if t.version < entry.version => send.push(entry.key.to_vec()),
            // Same version, different records: exchange both; the merge picks one.
            Some(_) => {
                send.push(entry.key.to_vec());
                want.push(entry.key.to_vec());
            }
        }
    }
    want.extend(
        theirs
            .keys()
            .filter(|k| !seen.contains(*k))
            .map(|k| k.to_vec()),
    );
    (send, want)
}

/// Why an exchange with a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The peer's gate refused this device.
    #[error("refused: {0}")]
    Refused(String),
    #[error("unknown collection `{0}`")]
    UnknownCollection(String),
    #[error("unexpected sync message: expected {0}")]
    Unexpected(&'static str),
    #[error("sync message over its limits")]
    OverLimits,
    #[error("sync of {collection} with {peer} timed out")]
    Timeout {
        collection: &'static str,
        peer: PeerId,
    },
    #[error("{0}")]
    Stream(String),
}

/// The replication engine: the collections this node shares, and where changes go to
/// be pushed. It serves and merges without a mesh; the opening side is given one.
pub struct Engine {
    me: PeerId,
    trust: Arc<Trust>,
    audit: Arc<Audit>,
    /// In the order anti-entropy runs them.
    collections: Vec<Arc<dyn Collection>>,
    pushes: Pushes,
}

impl Engine {
    /// An engine for `collections` (the trust store, the member list, among them).
    pub fn new(
        trust: Arc<Trust>,
        audit: Arc<Audit>,
        collections: Vec<Arc<dyn Collection>>,
        pushes: Pushes,
    ) -> Self {
        Self {
            me: trust.me(),
            trust,
            audit,
            collections,
            pushes,
        }
    }

    /// A collection by name.
    fn collection(&self, name: &str) -> Result<&Arc<dyn Collection>, SyncError> {
        self.collections
            .iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| SyncError::UnknownCollection(name.to_owned()))
    }

    /// Whether `peer` may receive and pass on `collection`.
    fn shares_with(&self, collection: &dyn Collection, peer: &PeerId) -> bool {
        may_share(collection, self.trust.grants(peer).as_ref())
    }

    /// Merges records from `from`, and passes on what was new to the other members. Records
    /// whose authors lack the collection's capability here are dropped.
    fn learn(&self, collection: &dyn Collection, records: Vec<ByteBuf>, from: PeerId) {
        let mut unauthorized = Vec::new();
        let records = match collection.needs() {
            None => records,
            Some(capability) => records
                .into_iter()
                .filter(|r| {
                    let author = collection.author_of(r);
                    let allowed = author.is_some_and(|author| {
                        author == self.me
                            || self
                                .trust
                                .grants(&author)
                                .is_some_and(|g| g.contains(&capability))
                    });
                    if !allowed {
                        let who = author
                            .map(|a| self.trust.shown(&a))
                            .unwrap_or_else(|| "an unknown author".into());
                        unauthorized.push(format!(
                            "{} record by {who}, which is not granted `{capability}` here",
                            collection.name()
                        ));
                    }
                    allowed
                })
                .collect(),
        };
        let mut merged = collection.merge(records);
        merged.refused.extend(unauthorized);
        if let Some(first) = merged.refused.first() {
            // One entry per exchange, however many records: a flood cannot flood the log.
            self.audit.record(
                Some(from),
                self.trust.name_of(&from),
                "sync",
                collection.name(),
                crate::audit::Outcome::Denied,
                Some(format!(
                    "{} records refused; the first: {first}",
                    merged.refused.len()
                )),
            );
        }
        if !merged.fresh.is_empty() {
            self.pushes
                .push(collection.name(), merged.fresh, Some(from));
        }
    }
}

async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Option<Message>, SyncError> {
    let message: Option<Message> = framed::read(stream, MAX_FRAME)
        .await
        .map_err(|e| SyncError::Stream(e.to_string()))?;
    match message {
        Some(m) if !m.within_limits() => Err(SyncError::OverLimits),
        other => Ok(other),
    }
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, message: &Message) -> Result<(), SyncError> {
    framed::write(stream, message, MAX_FRAME)
        .await
        .map_err(|e| SyncError::Stream(e.to_string()))
}

/// The member list as a replicated collection.
impl Collection for Trust {
    fn name(&self) -> &'static str {
        MEMBERS
    }

    fn digest(&self) -> Vec<Entry> {
        Trust::digest(self)
    }

    fn records(&self, keys: &[Vec<u8>]) -> Vec<ByteBuf> {
        Trust::records(self, keys)
            .iter()
            .map(encode_record)
            .collect()
    }

    fn merge(&self, records: Vec<ByteBuf>) -> Merged {
        let mut refused = Vec::new();
        let decoded: Vec<Record> = records
            .iter()
            .filter_map(|r| {
                if r.len() > member::MAX_RECORD {
                    refused.push("member record too large".to_owned());
                    return None;
                }
                loopsy_wire::frame::decode(r)
                    .map_err(|e| refused.push(format!("malformed member record: {e}")))
                    .ok()
            })
            .collect();
        let (fresh, invalid) = Trust::merge(self, decoded);
        if !invalid.is_empty() {
            tracing::warn!(count = invalid.len(), first = %invalid[0], "refused member records");
        }
        refused.extend(invalid.iter().map(ToString::to_string));
        Merged {
            fresh: fresh.iter().map(encode_record).collect(),
            refused,
        }
    }
}

/// The member list's collection name.
pub const MEMBERS: &str = "members";
/// The shared context's.
pub const CTX: &str = "ctx";
/// The session registry's.
pub const SESSIONS: &str = "sessions";
/// Messages'.
pub const MESSAGES: &str = "msg";

pub fn encode_record(record: &Record) -> ByteBuf {
    let mut out = Vec::new();
    let _ = ciborium::into_writer(record, &mut out);
    ByteBuf::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, version: u64, hash: u64) -> Entry {
        Entry {
            key: ByteBuf::from(key.as_bytes().to_vec()),
            version,
            hash,
        }
    }

    #[test]
    fn compare_sends_newer_and_wants_missing() {
        let mine = [
            entry("a", 2, 1),
            entry("b", 1, 1),
            entry("c", 5, 5),
            entry("d", 3, 1),
        ];
        let theirs = [
            entry("a", 1, 9),
            entry("b", 4, 2),
            entry("c", 5, 5),
            entry("d", 3, 2),
            entry("e", 1, 1),
        ];
        let (send, want) = compare(&mine, &theirs);
        let text = |v: Vec<Vec<u8>>| {
            let mut v: Vec<String> = v
                .into_iter()
                .map(|k| String::from_utf8(k).unwrap())
                .collect();
            v.sort();
            v
        };
        assert_eq!(text(send), ["a", "d"]);
        assert_eq!(text(want), ["b", "d", "e"]);
    }
}
