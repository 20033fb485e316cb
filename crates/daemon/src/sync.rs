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

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::AsyncWriteExt;
use loopsy_mesh::{PeerId, Stream, framed};
use loopsy_wire::{
    member::{self, Record},
    protocol,
    sync::{Entry, MAX_FRAME, Message},
};
use serde_bytes::ByteBuf;

use crate::{
    caps::{Capability, Caps},
    gate,
    node::Node,
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
    grants.is_some_and(|g| collection.serves().is_none_or(|c| g.contains(&c)))
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

/// Serves a sync stream from an admitted member.
pub async fn serve(node: Arc<Node>, peer: PeerId, mut stream: Stream, grants: Caps) {
    let result = tokio::time::timeout(DEADLINE, answer(&node, peer, &grants, &mut stream)).await;
    if let Ok(Err(error)) = result {
        tracing::debug!(%peer, %error, "sync exchange failed");
    }
    let _ = stream.close().await;
}

async fn answer(
    node: &Arc<Node>,
    peer: PeerId,
    grants: &Caps,
    stream: &mut Stream,
) -> Result<(), String> {
    match read(stream).await? {
        Some(Message::Digest {
            collection,
            entries,
        }) => {
            let c = node.collection(&collection).ok_or("unknown collection")?;
            if !may_share(c, Some(grants)) {
                // Nothing either way: an empty delta, so the peer's side ends cleanly.
                let nothing = Message::Delta {
                    records: Vec::new(),
                    want: Vec::new(),
                };
                return write(stream, &nothing).await;
            }
            let (send, want) = compare(&c.digest(), &entries);
            let records = c.records(&send);
            let want = want.into_iter().map(ByteBuf::from).collect();
            write(stream, &Message::Delta { records, want }).await?;
            if let Some(Message::Records { records }) = read(stream).await? {
                learn(node, c, records, peer);
            }
            Ok(())
        }
        Some(Message::Push {
            collection,
            records,
        }) => {
            let c = node.collection(&collection).ok_or("unknown collection")?;
            if may_share(c, Some(grants)) {
                learn(node, c, records, peer);
            }
            Ok(())
        }
        Some(_) => Err("unexpected sync message".into()),
        None => Ok(()),
    }
}

/// Merges records from `from`, and passes on what was new to the other members. Records
/// whose authors lack the collection's capability here are dropped.
fn learn(node: &Arc<Node>, collection: &dyn Collection, records: Vec<ByteBuf>, from: PeerId) {
    let mut unauthorized = Vec::new();
    let records = match collection.needs() {
        None => records,
        Some(capability) => records
            .into_iter()
            .filter(|r| {
                let author = collection.author_of(r);
                let allowed = author.is_some_and(|author| {
                    author == node.mesh.peer_id()
                        || node
                            .trust
                            .grants(&author)
                            .is_some_and(|g| g.contains(&capability))
                });
                if !allowed {
                    let who = author
                        .map(|a| node.peer_name(&a).unwrap_or_else(|| a.to_base58()))
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
        node.audit.record(
            Some(from),
            node.peer_name(&from),
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
        push(node, collection.name(), merged.fresh, Some(from));
    }
}

/// Anti-entropy with a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl From<String> for SyncError {
    fn from(e: String) -> Self {
        SyncError::Failed(e)
    }
}

impl From<&str> for SyncError {
    fn from(e: &str) -> Self {
        SyncError::Failed(e.to_owned())
    }
}

/// Anti-entropy with `peer` for every collection.
pub async fn reconcile(node: &Arc<Node>, peer: PeerId) -> Result<(), SyncError> {
    for name in node.collection_names() {
        tokio::time::timeout(DEADLINE, reconcile_one(node, peer, name))
            .await
            .map_err(|_| SyncError::Failed(format!("sync of {name} with {peer} timed out")))??;
    }
    Ok(())
}

async fn reconcile_one(
    node: &Arc<Node>,
    peer: PeerId,
    name: &'static str,
) -> Result<(), SyncError> {
    let collection = node.collection(name).ok_or("unknown collection")?;
    if !may_share(collection, node.trust.grants(&peer).as_ref()) {
        return Ok(());
    }
    let digest = Message::Digest {
        collection: name.to_owned(),
        entries: collection.digest(),
    };
    let mut stream = gate::open(&node.mesh, peer, protocol::SYNC, &digest, MAX_FRAME)
        .await
        .map_err(|e| match e {
            gate::NotAdmitted::Refused(reason) => SyncError::Refused(reason),
            broken => SyncError::Failed(broken.to_string()),
        })?;
    let Some(Message::Delta { records, want }) = read(&mut stream).await? else {
        return Err("expected a sync delta".into());
    };
    let want: Vec<Vec<u8>> = want.into_iter().map(|k| k.into_vec()).collect();
    let answer = collection.records(&want);
    write(&mut stream, &Message::Records { records: answer }).await?;
    let _ = stream.close().await;
    learn(node, collection, records, peer);
    Ok(())
}

/// Sends `records` of `collection` to every connected member but `except`, in the
/// background.
pub fn push(
    node: &Arc<Node>,
    collection: &'static str,
    records: Vec<ByteBuf>,
    except: Option<PeerId>,
) {
    let node = node.clone();
    tokio::spawn(async move {
        let Some(shared) = node.collection(collection) else {
            return;
        };
        for peer in node.connected_members().await {
            if Some(peer) == except || !may_share(shared, node.trust.grants(&peer).as_ref()) {
                continue;
            }
            let node = node.clone();
            let message = Message::Push {
                collection: collection.to_owned(),
                records: records.clone(),
            };
            tokio::spawn(async move {
                let sent = tokio::time::timeout(DEADLINE, async {
                    let mut stream =
                        gate::open(&node.mesh, peer, protocol::SYNC, &message, MAX_FRAME)
                            .await
                            .map_err(|e| e.to_string())?;
                    stream.close().await.map_err(|e| e.to_string())
                })
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    tracing::debug!(%peer, collection, "push failed; anti-entropy will catch up");
                }
            });
        }
    });
}

async fn read(stream: &mut Stream) -> Result<Option<Message>, String> {
    let message: Option<Message> = framed::read(stream, MAX_FRAME)
        .await
        .map_err(|e| e.to_string())?;
    match message {
        Some(m) if !m.within_limits() => Err("sync message over its limits".into()),
        other => Ok(other),
    }
}

async fn write(stream: &mut Stream, message: &Message) -> Result<(), String> {
    framed::write(stream, message, MAX_FRAME)
        .await
        .map_err(|e| e.to_string())
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
