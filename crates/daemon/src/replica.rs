//! A replicated last-writer-wins collection: records (`loopsy_wire::replica`) signed by
//! their authors, merged by hybrid logical clock, kept on disk, and bounded. The session
//! registry, the shared context and messages are each one of these; [`crate::sync`] carries
//! them between members like the member list.

use std::{
    collections::BTreeMap,
    fs, io,
    path::PathBuf,
    sync::{Mutex, MutexGuard},
};

use libp2p::identity::Keypair;
use loopsy_mesh::PeerId;
use loopsy_wire::{
    replica::{Clock, Record},
    sync::Entry,
};
use serde_bytes::ByteBuf;
use tokio::sync::watch;

use crate::{caps::Capability, clock, fsutil, sync::Collection, trust::members::public_key};

/// How long a deletion is remembered, so that it reaches devices that were away.
pub const TOMBSTONE_MS: u64 = 7 * 24 * 3600 * 1000;

/// What one collection accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most records (live or deleted).
    pub records: usize,
    /// Largest value.
    pub value: usize,
}

/// Whether `author` may write `record` (beyond a valid signature): a collection's own rule.
pub type Rule = fn(&Record, &PeerId) -> bool;

/// A local write that was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the key is empty or longer than {max} bytes")]
    Key { max: usize },
    #[error("the value is larger than {max} bytes")]
    Value { max: usize },
    #[error("the {collection} collection is full ({max} records)")]
    Full {
        collection: &'static str,
        max: usize,
    },
}

struct State {
    records: BTreeMap<Vec<u8>, Record>,
    /// The last clock this device issued or saw.
    clock: Clock,
}

pub struct Store {
    name: &'static str,
    /// What a record's author needs here.
    needs: Option<Capability>,
    path: PathBuf,
    keypair: Keypair,
    me: PeerId,
    limits: Limits,
    rule: Rule,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

impl Store {
    /// The collection `name`, as kept in `path` (missing: empty; unreadable: an error).
    pub fn load(
        name: &'static str,
        needs: Option<Capability>,
        path: PathBuf,
        keypair: Keypair,
        limits: Limits,
        rule: Rule,
    ) -> io::Result<Self> {
        let records: Vec<Record> = match fs::read(&path) {
            Ok(bytes) => ciborium::from_reader(&bytes[..]).map_err(|e| {
                io::Error::other(format!("{} is not a {name} store: {e}", path.display()))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let clock = records.iter().map(|r| r.clock).max().unwrap_or_default();
        let me = keypair.public().to_peer_id();
        Ok(Self {
            name,
            needs,
            path,
            keypair,
            me,
            limits,
            rule,
            state: Mutex::new(State {
                records: records.into_iter().map(|r| (r.key.to_vec(), r)).collect(),
                clock,
            }),
            changed: watch::channel(0).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes (or with `None` deletes) `key` as this device; returns the encoded record to
    /// push to the members.
    pub fn put(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        expires: Option<u64>,
    ) -> Result<ByteBuf, WriteError> {
        if key.is_empty() || key.len() > loopsy_wire::replica::MAX_KEY {
            return Err(WriteError::Key {
                max: loopsy_wire::replica::MAX_KEY,
            });
        }
        let max = self.limits.value.min(loopsy_wire::replica::MAX_VALUE);
        if value.as_ref().is_some_and(|v| v.len() > max) {
            return Err(WriteError::Value { max });
        }
        let record = {
            let mut state = self.lock();
            purge(&mut state.records);
            if !state.records.contains_key(key) && state.records.len() >= self.limits.records {
                return Err(WriteError::Full {
                    collection: self.name,
                    max: self.limits.records,
                });
            }
            state.clock = state.clock.tick(clock::now_ms());
            let mut record = Record {
                key: ByteBuf::from(key.to_vec()),
                value: value.map(ByteBuf::from),
                clock: state.clock,
                author: ByteBuf::from(self.me.to_bytes()),
                expires,
                signature: ByteBuf::new(),
            };
            if let Ok(signature) = self.keypair.sign(&record.signed_bytes(self.name)) {
                record.signature = ByteBuf::from(signature);
            }
            state.records.insert(key.to_vec(), record.clone());
            record
        };
        self.saved();
        Ok(encode(&record))
    }

    /// The live record of `key`: there, not deleted, not expired.
    pub fn get(&self, key: &[u8]) -> Option<Record> {
        let now = clock::now_ms();
        self.lock()
            .records
            .get(key)
            .filter(|r| is_live(r, now))
            .cloned()
    }

    /// Every live record whose key starts with `prefix`, in key order.
    pub fn live(&self, prefix: &[u8]) -> Vec<Record> {
        let now = clock::now_ms();
        self.lock()
            .records
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, r)| r)
            .filter(|r| is_live(r, now))
            .cloned()
            .collect()
    }

    /// Changes, for whoever waits on new records.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Persists and tells the watchers.
    fn saved(&self) {
        let records: Vec<Record> = self.lock().records.values().cloned().collect();
        let mut bytes = Vec::new();
        if ciborium::into_writer(&records, &mut bytes).is_ok()
            && let Err(error) = fsutil::write_atomic(&self.path, &bytes, 0o600)
        {
            tracing::warn!(%error, collection = self.name, "cannot save the collection");
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Checks a record from a peer: size, signature, the collection's rule, not expired.
    fn valid(&self, record: &Record, now: u64) -> bool {
        if !record.within_limits()
            || record
                .value
                .as_ref()
                .is_some_and(|v| v.len() > self.limits.value)
            || record.expires.is_some_and(|e| e <= now)
        {
            return false;
        }
        let Ok(author) = PeerId::from_bytes(&record.author) else {
            return false;
        };
        public_key(&author)
            .is_some_and(|key| key.verify(&record.signed_bytes(self.name), &record.signature))
            && (self.rule)(record, &author)
    }
}

fn is_live(record: &Record, now: u64) -> bool {
    record.value.is_some() && record.expires.is_none_or(|e| e > now)
}

/// Drops what no longer needs remembering: expired values, and deletions old enough.
fn purge(records: &mut BTreeMap<Vec<u8>, Record>) {
    let now = clock::now_ms();
    records.retain(|_, r| {
        let expired = r.expires.is_some_and(|e| e <= now);
        let old_tombstone = r.value.is_none() && r.clock.ms.saturating_add(TOMBSTONE_MS) < now;
        !expired && !old_tombstone
    });
}

pub fn encode(record: &Record) -> ByteBuf {
    let mut bytes = Vec::new();
    // Encoding our own plain struct into a Vec cannot fail.
    let _ = ciborium::into_writer(record, &mut bytes);
    ByteBuf::from(bytes)
}

impl Collection for Store {
    fn name(&self) -> &'static str {
        self.name
    }

    fn needs(&self) -> Option<Capability> {
        self.needs
    }

    fn author_of(&self, record: &[u8]) -> Option<PeerId> {
        let record: Record = ciborium::from_reader(record).ok()?;
        PeerId::from_bytes(&record.author).ok()
    }

    fn digest(&self) -> Vec<Entry> {
        let mut state = self.lock();
        purge(&mut state.records);
        state
            .records
            .values()
            .map(|r| Entry {
                key: r.key.clone(),
                version: r.clock.version(),
                hash: r.hash(),
            })
            .collect()
    }

    fn records(&self, keys: &[Vec<u8>]) -> Vec<ByteBuf> {
        let state = self.lock();
        keys.iter()
            .filter_map(|k| state.records.get(k))
            .map(encode)
            .collect()
    }

    fn merge(&self, records: Vec<ByteBuf>) -> Vec<ByteBuf> {
        let now = clock::now_ms();
        let mut fresh = Vec::new();
        {
            let mut state = self.lock();
            for bytes in records {
                let Ok(record) = ciborium::from_reader::<Record, _>(&bytes[..]) else {
                    continue;
                };
                if !self.valid(&record, now) {
                    continue;
                }
                let key = record.key.to_vec();
                let newer = match state.records.get(&key) {
                    Some(held) => record.wins_over(held),
                    None => state.records.len() < self.limits.records,
                };
                if newer {
                    // The hybrid clock's receive rule: never issue a clock below one seen.
                    state.clock = state.clock.max(record.clock);
                    state.records.insert(key, record);
                    fresh.push(bytes);
                }
            }
        }
        if !fresh.is_empty() {
            self.saved();
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(tag: &str, keypair: Keypair) -> Store {
        let path = std::env::temp_dir().join(format!(
            "loopsy-replica-{tag}-{}-{}",
            std::process::id(),
            keypair.public().to_peer_id()
        ));
        let _ = fs::remove_file(&path);
        let limits = Limits {
            records: 100,
            value: 1024,
        };
        Store::load("test", None, path, keypair, limits, |_, _| true).unwrap()
    }

    fn state(store: &Store) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        store
            .lock()
            .records
            .values()
            .map(|r| (r.key.to_vec(), r.value.as_ref().map(|v| v.to_vec())))
            .collect()
    }

    #[test]
    fn writes_survive_a_reload_and_deletions_are_records_too() {
        let keypair = Keypair::generate_ed25519();
        let a = store("reload", keypair.clone());
        a.put(b"k", Some(b"v".to_vec()), None).unwrap();
        a.put(b"gone", Some(b"x".to_vec()), None).unwrap();
        a.put(b"gone", None, None).unwrap();
        let again =
            Store::load("test", None, a.path.clone(), keypair, a.limits, |_, _| true).unwrap();
        assert_eq!(again.get(b"k").unwrap().value.unwrap().as_ref(), b"v");
        assert!(again.get(b"gone").is_none());
        assert_eq!(again.digest().len(), 2, "the deletion is remembered");
        assert!(matches!(
            again.put(b"k", Some(vec![0; 2000]), None),
            Err(WriteError::Value { .. })
        ));
    }

    #[test]
    fn forged_and_expired_records_are_refused() {
        let a = store("forged", Keypair::generate_ed25519());
        let b = store("forged-b", Keypair::generate_ed25519());
        let good = a.put(b"k", Some(b"v".to_vec()), None).unwrap();
        let mut forged: Record = ciborium::from_reader(&good[..]).unwrap();
        forged.value = Some(ByteBuf::from(b"evil".to_vec()));
        assert!(b.merge(vec![encode(&forged)]).is_empty());
        let expired = a.put(b"old", Some(b"v".to_vec()), Some(1)).unwrap();
        assert!(b.merge(vec![expired]).is_empty());
        assert_eq!(b.merge(vec![good.clone()]).len(), 1);
        assert!(
            b.merge(vec![good]).is_empty(),
            "nothing new the second time"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Whatever order records arrive in, and however often, every store ends the same.
        #[test]
        fn merges_commute_and_repeat_harmlessly(
            writes in proptest::collection::vec((0usize..3, 0u8..4, proptest::option::of(0u8..3)), 1..12),
            order in proptest::collection::vec(0usize..100, 12),
        ) {
            let writers: Vec<Store> = (0..3)
                .map(|i| store(&format!("prop{i}"), Keypair::generate_ed25519()))
                .collect();
            let mut all = Vec::new();
            for (w, key, value) in writes {
                let value = value.map(|v| vec![v]);
                all.push(writers[w].put(&[key], value, None).unwrap());
            }
            let x = store("prop-x", Keypair::generate_ed25519());
            let y = store("prop-y", Keypair::generate_ed25519());
            x.merge(all.clone());
            let mut shuffled = all.clone();
            for (i, j) in order.iter().enumerate() {
                let n = shuffled.len();
                shuffled.swap(i % n, j % n);
            }
            for half in shuffled.chunks(2) {
                y.merge(half.to_vec());
            }
            y.merge(all);
            proptest::prop_assert_eq!(state(&x), state(&y));
        }
    }
}
