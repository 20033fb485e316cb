//! A replicated last-writer-wins collection: records (`loopsy_wire::replica`) signed by
//! their authors, merged by hybrid logical clock, kept on disk, and bounded. The session
//! registry, the shared context and messages are each one of these; [`crate::sync`] carries
//! them between members like the member list.
//!
//! Clocks are bounded: a record dated more than [`clock::MAX_SKEW_MS`] ahead of this
//! device's wall clock is refused, so no peer can drag this device's hybrid clock into its
//! future (after which every write would tie and updates would be lost at random) or write
//! a record, or a deletion, that wins for ever.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    io,
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

use crate::{
    caps::Capability,
    clock,
    fsutil::{self, StateFile},
    sync::{Collection, Merged},
    trust::members::public_key,
};

/// How long a deletion is remembered, so that it reaches devices that were away.
pub const TOMBSTONE_MS: u64 = 7 * 24 * 3600 * 1000;

/// What one collection accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most records (live or deleted).
    pub records: usize,
    /// Largest value.
    pub value: usize,
    /// Most records (live or deleted) by one author: no single member fills the
    /// collection for the others. Past it, that author's oldest records go first.
    pub per_author: usize,
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
    #[error("this device's share of the {collection} collection is full ({max} records)")]
    Quota {
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
    /// What a member needs here to receive the collection.
    serves: Option<Capability>,
    file: StateFile,
    keypair: Keypair,
    me: PeerId,
    limits: Limits,
    rule: Rule,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    /// Authors already logged as over their quota (once each while the node runs).
    over_quota: Mutex<HashSet<Vec<u8>>>,
}

impl Store {
    /// The collection `name`, as kept in `path` (missing: empty; damaged: its previous copy,
    /// see [`StateFile::load`]; unreadable: an error). Records by others dated too far ahead
    /// (taken while this device's clock ran ahead) are dropped, and so are records the
    /// collection's rule refuses (kept by an older version); this device's own are signed
    /// again, dated now.
    pub fn load(
        name: &'static str,
        (needs, serves): (Option<Capability>, Option<Capability>),
        path: PathBuf,
        keypair: Keypair,
        limits: Limits,
        rule: Rule,
    ) -> io::Result<Self> {
        let file = StateFile::new(path, 0o600);
        let records: Vec<Record> = file
            .load(|bytes| {
                ciborium::from_reader(bytes).map_err(|e| format!("not a {name} store: {e}"))
            })?
            .unwrap_or_default();
        let me = keypair.public().to_peer_id();
        let now = clock::now_ms();
        let mut clock = Clock::default();
        let mut kept = Vec::with_capacity(records.len());
        let mut refused = 0;
        for mut record in records {
            if !PeerId::from_bytes(&record.author).is_ok_and(|author| rule(&record, &author)) {
                refused += 1;
                continue;
            }
            if record.clock.ms > now.saturating_add(clock::MAX_SKEW_MS) {
                if record.author.as_slice() != me.to_bytes().as_slice() {
                    tracing::warn!(collection = name, "dropping a record from the future");
                    continue;
                }
                record.clock = clock.tick(now);
                record.signature =
                    ByteBuf::from(keypair.sign(&record.signed_bytes(name)).unwrap_or_default());
            }
            clock = clock.max(record.clock);
            kept.push(record);
        }
        if refused > 0 {
            tracing::info!(
                collection = name,
                refused,
                "dropped records the collection no longer accepts"
            );
        }
        let records = kept;
        Ok(Self {
            name,
            needs,
            serves,
            file,
            keypair,
            me,
            limits,
            rule,
            state: Mutex::new(State {
                records: records.into_iter().map(|r| (r.key.to_vec(), r)).collect(),
                clock,
            }),
            changed: watch::channel(0).0,
            over_quota: Mutex::new(HashSet::new()),
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
            if !state.records.contains_key(key) {
                if state.records.len() >= self.limits.records {
                    return Err(WriteError::Full {
                        collection: self.name,
                        max: self.limits.records,
                    });
                }
                let me = self.me.to_bytes();
                let mine = state.records.values().filter(|r| r.author[..] == me[..]);
                if mine.count() >= self.limits.per_author {
                    return Err(WriteError::Quota {
                        collection: self.name,
                        max: self.limits.per_author,
                    });
                }
            }
            let now = clock::now_ms();
            // A clock left far ahead (this device's wall clock was wrong, and is right
            // again) starts over from now: its records would be refused everywhere.
            if state.clock.ms > now.saturating_add(clock::MAX_SKEW_MS) {
                state.clock = Clock::default();
            }
            state.clock = state.clock.tick(now);
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

    /// Persists (a snapshot taken under the lock, written off the async workers, never
    /// over a newer one) and tells the watchers.
    fn saved(&self) {
        fsutil::blocking(|| {
            let (generation, records) = {
                let state = self.lock();
                let records: Vec<Record> = state.records.values().cloned().collect();
                (self.file.generation(), records)
            };
            let mut bytes = Vec::new();
            if ciborium::into_writer(&records, &mut bytes).is_ok()
                && let Err(error) = self.file.write(generation, bytes)
            {
                let file = self.file.path().display();
                tracing::warn!(%error, collection = self.name, %file, "cannot save the collection");
            }
        });
        self.changed.send_modify(|n| *n += 1);
    }

    /// Checks a record from a peer: size, date, signature, the collection's rule; `Ok(false)`
    /// for one that expired (nothing wrong with it, just no longer needed).
    fn valid(&self, record: &Record, now: u64) -> Result<bool, Invalid> {
        let name = self.name;
        if !record.within_limits()
            || record
                .value
                .as_ref()
                .is_some_and(|v| v.len() > self.limits.value)
        {
            return Err(Invalid::TooLarge(name));
        }
        if record.clock.ms > now.saturating_add(clock::MAX_SKEW_MS) {
            let dated = clock::rfc3339_ms(record.clock.ms);
            return Err(Invalid::Ahead(name, dated));
        }
        let author =
            PeerId::from_bytes(&record.author).map_err(|_| Invalid::MalformedAuthor(name))?;
        let signed = public_key(&author)
            .is_some_and(|key| key.verify(&record.signed_bytes(self.name), &record.signature));
        if !signed {
            return Err(Invalid::Unsigned(name));
        }
        if !(self.rule)(record, &author) {
            return Err(Invalid::NotTheAuthors(name));
        }
        Ok(record.expires.is_none_or(|e| e > now))
    }
}

/// Why a record from a peer was refused (the collection's name first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{0} record over its size limits")]
    TooLarge(&'static str),
    #[error("{0} record dated {1}, more than the allowed clock skew ahead of this device")]
    Ahead(&'static str, String),
    #[error("{0} record with a malformed author")]
    MalformedAuthor(&'static str),
    #[error("{0} record whose signature does not verify")]
    Unsigned(&'static str),
    #[error("{0} record its author may not write")]
    NotTheAuthors(&'static str),
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

    fn serves(&self) -> Option<Capability> {
        self.serves
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

    fn merge(&self, records: Vec<ByteBuf>) -> Merged {
        // Checking thousands of signatures and writing the file take a while: not on an
        // async worker's time.
        fsutil::blocking(|| self.merge_now(records))
    }
}

impl Store {
    fn merge_now(&self, records: Vec<ByteBuf>) -> Merged {
        let now = clock::now_ms();
        let mut fresh = Vec::new();
        let mut refused = Vec::new();
        let mut dropped: HashMap<Vec<u8>, usize> = HashMap::new();
        {
            let mut state = self.lock();
            let mut quotas = Quotas::count(&state.records, self.limits.per_author);
            for bytes in records {
                let Ok(record) = ciborium::from_reader::<Record, _>(&bytes[..]) else {
                    refused.push(format!("malformed {} record", self.name));
                    continue;
                };
                // A copy of a record held here (every member passes a change on) was
                // verified when it came first: no signature checked again, and nothing to do.
                if state.records.get(&record.key[..]) == Some(&record) {
                    continue;
                }
                match self.valid(&record, now) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(reason) => {
                        refused.push(reason.to_string());
                        continue;
                    }
                }
                let key = record.key.to_vec();
                let held = state.records.get(&key);
                let newer = match held {
                    Some(held) => record.wins_over(held),
                    None => state.records.len() < self.limits.records,
                };
                if !newer {
                    continue;
                }
                // Within its author's quota, at the cost of that author's oldest record
                // when it is over; the record itself when it is that oldest.
                let replaced = held.map(|h| (h.author.to_vec(), h.clock));
                match quotas.admit(&state.records, &record, replaced) {
                    Admit::Yes => {}
                    Admit::InPlaceOf(oldest) => {
                        state.records.remove(&oldest);
                        *dropped.entry(record.author.to_vec()).or_default() += 1;
                    }
                    Admit::No => {
                        *dropped.entry(record.author.to_vec()).or_default() += 1;
                        continue;
                    }
                }
                // The hybrid clock's receive rule: never issue a clock below one seen.
                state.clock = state.clock.max(record.clock);
                state.records.insert(key, record);
                fresh.push(bytes);
            }
        }
        self.log_over_quota(dropped);
        if !fresh.is_empty() {
            self.saved();
        }
        Merged { fresh, refused }
    }

    /// Says once per author (while the node runs), not per record, that its records went
    /// over its quota here.
    fn log_over_quota(&self, dropped: HashMap<Vec<u8>, usize>) {
        let mut warned = self.over_quota.lock().unwrap_or_else(|e| e.into_inner());
        for (author, records) in dropped {
            if warned.insert(author.clone()) {
                let author = PeerId::from_bytes(&author)
                    .map(|p| p.to_base58())
                    .unwrap_or_default();
                tracing::warn!(
                    collection = self.name,
                    %author,
                    records,
                    quota = self.limits.per_author,
                    "a member wrote more records than its quota here: its oldest are dropped \
                     (said once)"
                );
            }
        }
    }
}

/// Whether a record from a peer fits its author's quota.
enum Admit {
    Yes,
    /// Yes, dropping this key: the author's oldest record.
    InPlaceOf(Vec<u8>),
    /// No: it is the author's oldest.
    No,
}

/// Records per author during one merge, and (for authors found at their quota) their
/// records oldest first.
struct Quotas {
    max: usize,
    counts: HashMap<Vec<u8>, usize>,
    by_age: HashMap<Vec<u8>, BTreeSet<(Clock, Vec<u8>)>>,
}

impl Quotas {
    fn count(records: &BTreeMap<Vec<u8>, Record>, max: usize) -> Self {
        let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
        for record in records.values() {
            *counts.entry(record.author.to_vec()).or_default() += 1;
        }
        Self {
            max,
            counts,
            by_age: HashMap::new(),
        }
    }

    /// Takes `record` into the count, in place of the record of the same key by
    /// `replaced` (its author and clock) when there is one.
    fn admit(
        &mut self,
        records: &BTreeMap<Vec<u8>, Record>,
        record: &Record,
        replaced: Option<(Vec<u8>, Clock)>,
    ) -> Admit {
        let author = record.author.to_vec();
        let key = record.key.to_vec();
        if let Some((by, clock)) = &replaced
            && *by == author
        {
            // Same author, same key: its count does not change.
            if let Some(aged) = self.by_age.get_mut(&author) {
                aged.remove(&(*clock, key.clone()));
                aged.insert((record.clock, key));
            }
            return Admit::Yes;
        }
        let count = self.counts.entry(author.clone()).or_default();
        let verdict = if *count < self.max {
            *count += 1;
            if let Some(aged) = self.by_age.get_mut(&author) {
                aged.insert((record.clock, key.clone()));
            }
            Admit::Yes
        } else {
            let aged = self.by_age.entry(author.clone()).or_insert_with(|| {
                records
                    .values()
                    .filter(|r| r.author[..] == author[..])
                    .map(|r| (r.clock, r.key.to_vec()))
                    .collect()
            });
            match aged.pop_first() {
                Some((oldest, oldest_key)) if oldest < record.clock => {
                    aged.insert((record.clock, key.clone()));
                    Admit::InPlaceOf(oldest_key)
                }
                Some(oldest) => {
                    aged.insert(oldest);
                    Admit::No
                }
                None => Admit::No,
            }
        };
        // Another author's record of this key gives way to it.
        if !matches!(verdict, Admit::No)
            && let Some((by, clock)) = replaced
        {
            if let Some(count) = self.counts.get_mut(&by) {
                *count = count.saturating_sub(1);
            }
            if let Some(aged) = self.by_age.get_mut(&by) {
                aged.remove(&(clock, key));
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn store(tag: &str, keypair: Keypair) -> Store {
        bounded(tag, keypair, 100, 100)
    }

    /// `store` as a restart would load it from its file.
    fn reload(store: &Store, keypair: Keypair) -> Store {
        Store::load(
            "test",
            (None, None),
            store.file.path().to_path_buf(),
            keypair,
            store.limits,
            |_, _| true,
        )
        .unwrap()
    }

    fn state(store: &Store) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        store
            .lock()
            .records
            .values()
            .map(|r| (r.key.to_vec(), r.value.as_ref().map(|v| v.to_vec())))
            .collect()
    }

    /// A store whose limits are `records` in all, `per_author` each.
    fn bounded(tag: &str, keypair: Keypair, records: usize, per_author: usize) -> Store {
        let path = std::env::temp_dir().join(format!(
            "loopsy-replica-{tag}-{}-{}",
            std::process::id(),
            keypair.public().to_peer_id()
        ));
        let _ = fs::remove_file(&path);
        let limits = Limits {
            records,
            value: 1024,
            per_author,
        };
        Store::load("test", (None, None), path, keypair, limits, |_, _| true).unwrap()
    }

    #[test]
    fn one_member_cannot_fill_another_devices_store() {
        // A member whose own store lets it write 150 records.
        let greedy = bounded("quota-greedy", Keypair::generate_ed25519(), 1000, 1000);
        let here = bounded("quota-here", Keypair::generate_ed25519(), 100, 40);
        let other = bounded("quota-other", Keypair::generate_ed25519(), 100, 40);
        let written: Vec<ByteBuf> = (0..150)
            .map(|i| {
                greedy
                    .put(format!("k{i:03}").as_bytes(), Some(vec![1]), None)
                    .unwrap()
            })
            .collect();
        // In one batch and one by one alike.
        let merged = here.merge_now(written[..75].to_vec());
        assert!(merged.refused.is_empty(), "no error per record");
        for record in &written[75..] {
            here.merge_now(vec![record.clone()]);
        }
        let held = state(&here);
        assert_eq!(held.len(), 40, "its quota");
        // Its newest records are what is left.
        assert_eq!(held.first().unwrap().0, b"k110".to_vec());
        assert_eq!(held.last().unwrap().0, b"k149".to_vec());
        // An old one coming again does not push a newer one out.
        here.merge_now(vec![written[0].clone()]);
        assert_eq!(state(&here).first().unwrap().0, b"k110".to_vec());
        // Another member still has room here, and so does this device.
        let theirs = other.put(b"theirs", Some(vec![2]), None).unwrap();
        assert_eq!(here.merge_now(vec![theirs]).fresh.len(), 1);
        here.put(b"mine", Some(vec![3]), None).unwrap();
        assert_eq!(state(&here).len(), 42);
        // This device is held to its own share too, with an error that says so.
        for i in 0..39 {
            here.put(format!("m{i}").as_bytes(), Some(vec![3]), None)
                .unwrap();
        }
        let refused = here.put(b"one-more", Some(vec![3]), None).unwrap_err();
        assert!(
            matches!(refused, WriteError::Quota { max: 40, .. }),
            "{refused}"
        );
    }

    #[test]
    fn a_copy_of_a_record_held_is_not_checked_again() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static CHECKED: AtomicUsize = AtomicUsize::new(0);
        let a = store("copy-from", Keypair::generate_ed25519());
        let keypair = Keypair::generate_ed25519();
        let path = std::env::temp_dir().join(format!(
            "loopsy-replica-copy-{}-{}",
            std::process::id(),
            keypair.public().to_peer_id()
        ));
        let _ = fs::remove_file(&path);
        let counting = |_: &Record, _: &PeerId| {
            CHECKED.fetch_add(1, Ordering::Relaxed);
            true
        };
        let b = Store::load("test", (None, None), path, keypair, a.limits, counting).unwrap();
        let record = a.put(b"k", Some(b"v".to_vec()), None).unwrap();
        assert_eq!(b.merge_now(vec![record.clone()]).fresh.len(), 1);
        // Every member that learns a change passes it on: the same record comes again.
        for _ in 0..3 {
            let again = b.merge_now(vec![record.clone()]);
            assert!(again.fresh.is_empty() && again.refused.is_empty());
        }
        assert_eq!(
            CHECKED.load(Ordering::Relaxed),
            1,
            "checked when it came first"
        );
        let newer = a.put(b"k", Some(b"w".to_vec()), None).unwrap();
        assert_eq!(b.merge_now(vec![newer]).fresh.len(), 1);
        assert_eq!(
            CHECKED.load(Ordering::Relaxed),
            2,
            "a newer record is checked"
        );
    }

    #[test]
    fn writes_survive_a_reload_and_deletions_are_records_too() {
        let keypair = Keypair::generate_ed25519();
        let a = store("reload", keypair.clone());
        a.put(b"k", Some(b"v".to_vec()), None).unwrap();
        a.put(b"gone", Some(b"x".to_vec()), None).unwrap();
        a.put(b"gone", None, None).unwrap();
        let again = reload(&a, keypair);
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
        assert!(b.merge(vec![encode(&forged)]).fresh.is_empty());
        let expired = a.put(b"old", Some(b"v".to_vec()), Some(1)).unwrap();
        assert!(b.merge(vec![expired]).fresh.is_empty());
        assert_eq!(b.merge(vec![good.clone()]).fresh.len(), 1);
        assert!(
            b.merge(vec![good]).fresh.is_empty(),
            "nothing new the second time"
        );
    }

    /// A record of `key` signed by `keypair` with any clock it likes.
    fn dated(keypair: &Keypair, key: &[u8], ms: u64) -> ByteBuf {
        let mut record = Record {
            key: ByteBuf::from(key.to_vec()),
            value: Some(ByteBuf::from(b"v".to_vec())),
            clock: Clock { ms, counter: 0 },
            author: ByteBuf::from(keypair.public().to_peer_id().to_bytes()),
            expires: None,
            signature: ByteBuf::new(),
        };
        record.signature = ByteBuf::from(keypair.sign(&record.signed_bytes("test")).unwrap());
        encode(&record)
    }

    #[test]
    fn a_record_from_2100_is_refused_and_does_not_pin_the_clock() {
        let a = store("future", Keypair::generate_ed25519());
        let liar = Keypair::generate_ed25519();
        let merged = a.merge(vec![dated(&liar, b"k", 4_102_444_800_000)]);
        assert!(merged.fresh.is_empty());
        assert!(
            merged.refused[0].contains("2100-01-01"),
            "{:?}",
            merged.refused
        );
        assert!(a.lock().clock.ms <= clock::now_ms() + clock::MAX_SKEW_MS);
    }

    #[test]
    fn a_store_whose_own_clock_ran_ahead_recovers_on_load() {
        let keypair = Keypair::generate_ed25519();
        let a = store("recover", keypair.clone());
        let other = Keypair::generate_ed25519();
        // Written while this device's clock said 2100 (its own), and taken from another
        // device while it did (not its own).
        let own = dated(&keypair, b"mine", 4_102_444_800_000);
        let theirs = dated(&other, b"theirs", 4_102_444_800_000);
        {
            let mut state = a.lock();
            for bytes in [own, theirs] {
                let record: Record = ciborium::from_reader(&bytes[..]).unwrap();
                state.records.insert(record.key.to_vec(), record);
            }
        }
        a.saved();
        let again = reload(&a, keypair);
        let now = clock::now_ms() + clock::MAX_SKEW_MS;
        assert!(again.get(b"theirs").is_none(), "dropped");
        let mine = again.get(b"mine").expect("kept, dated anew");
        assert!(mine.clock.ms <= now);
        let b = store("recover-b", Keypair::generate_ed25519());
        assert_eq!(
            b.merge(vec![encode(&mine)]).fresh.len(),
            1,
            "others take it"
        );
    }

    /// Removes a state file with its copies.
    fn remove(path: &std::path::Path) {
        for suffix in ["", ".prev", ".corrupt"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let _ = fs::remove_file(name);
        }
    }

    /// The keys in the file at `path` (none before there is a file).
    fn keys(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
        let bytes = match fs::read(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other.map_err(|e| e.to_string())?,
        };
        let records: Vec<Record> = ciborium::from_reader(&bytes[..]).map_err(|e| e.to_string())?;
        Ok(records.into_iter().map(|r| r.key.to_vec()).collect())
    }

    #[test]
    fn concurrent_writes_and_merges_never_leave_a_damaged_or_older_file() {
        let keypair = Keypair::generate_ed25519();
        let path = std::env::temp_dir().join(format!(
            "loopsy-replica-concurrent-{}-{}",
            std::process::id(),
            keypair.public().to_peer_id()
        ));
        let _ = fs::remove_file(&path);
        let limits = Limits {
            records: 10_000,
            value: 8 * 1024,
            per_author: 10_000,
        };
        let a = Store::load(
            "test",
            (None, None),
            path.clone(),
            keypair.clone(),
            limits,
            |_, _| true,
        )
        .unwrap();
        // Records from other members, merged in batches meanwhile.
        let now = clock::now_ms();
        let batches: Vec<Vec<ByteBuf>> = (0..4)
            .map(|t| {
                let peer = Keypair::generate_ed25519();
                (0..60)
                    .map(|i| dated(&peer, format!("m{t}-{i}").as_bytes(), now))
                    .collect()
            })
            .collect();
        let done = std::sync::atomic::AtomicBool::new(false);
        let (seen, bad) = std::thread::scope(|scope| {
            // Keys are only ever added: every file read must load, and hold at least as many
            // as the one before.
            let reader = scope.spawn(|| {
                let (mut seen, mut bad) = (0, Vec::new());
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    match keys(&path) {
                        Ok(keys) if keys.len() < seen => {
                            bad.push(format!("{} keys after {seen}", keys.len()))
                        }
                        Ok(keys) => seen = keys.len(),
                        Err(e) => bad.push(e),
                    }
                }
                (seen, bad)
            });
            let writers: Vec<_> = (0..4)
                .map(|t| {
                    let a = &a;
                    scope.spawn(move || {
                        for i in 0..60 {
                            a.put(format!("p{t}-{i}").as_bytes(), Some(vec![b'v'; 4096]), None)
                                .unwrap();
                        }
                    })
                })
                .chain(batches.into_iter().map(|batch| {
                    let a = &a;
                    scope.spawn(move || {
                        for chunk in batch.chunks(5) {
                            assert_eq!(a.merge(chunk.to_vec()).fresh.len(), chunk.len());
                        }
                    })
                }))
                .collect();
            for writer in writers {
                writer.join().unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().unwrap()
        });
        assert!(
            bad.is_empty(),
            "{} bad reads, the first: {}",
            bad.len(),
            bad[0]
        );
        assert!(seen > 0);
        // The newest state is the one on disk.
        assert_eq!(keys(&path).unwrap().len(), 480);
        let again = Store::load(
            "test",
            (None, None),
            path.clone(),
            keypair,
            limits,
            |_, _| true,
        )
        .unwrap();
        assert_eq!(again.digest().len(), 480);
        remove(&path);
    }

    #[test]
    fn a_write_cut_in_the_middle_loads_the_previous_copy() {
        let keypair = Keypair::generate_ed25519();
        let a = store("torn", keypair.clone());
        let path = a.file.path().to_path_buf();
        a.put(b"first", Some(b"v".to_vec()), None).unwrap();
        a.put(b"second", Some(b"v".to_vec()), None).unwrap();
        // Cut: half of the file in place, and the half-written temporary file of a process
        // that is gone (PID 0 is never one).
        let whole = fs::read(&path).unwrap();
        fs::write(&path, &whole[..whole.len() / 2]).unwrap();
        let mut leftover = path.as_os_str().to_owned();
        leftover.push(".tmp.0.1.0000abcd");
        fs::write(&leftover, &whole[..10]).unwrap();
        let again = Store::load(
            "test",
            (None, None),
            path.clone(),
            keypair.clone(),
            a.limits,
            |_, _| true,
        )
        .expect("the previous copy");
        assert!(again.get(b"first").is_some());
        assert!(again.get(b"second").is_none(), "not in the previous copy");
        assert!(!std::path::Path::new(&leftover).exists());
        // Written again, it loads whole, and the damaged copy stays aside for a look.
        again.put(b"third", Some(b"v".to_vec()), None).unwrap();
        let third = Store::load(
            "test",
            (None, None),
            path.clone(),
            keypair,
            a.limits,
            |_, _| true,
        )
        .unwrap();
        assert!(third.get(b"first").is_some() && third.get(b"third").is_some());
        let mut corrupt = path.as_os_str().to_owned();
        corrupt.push(".corrupt");
        assert_eq!(fs::read(&corrupt).unwrap(), &whole[..whole.len() / 2]);
        remove(&path);
    }

    #[test]
    fn records_the_rule_refuses_are_dropped_on_load() {
        let keypair = Keypair::generate_ed25519();
        let a = store("rule", keypair.clone());
        a.put(b"ok/1", Some(b"v".to_vec()), None).unwrap();
        a.put(b"old/1", Some(b"v".to_vec()), None).unwrap();
        let again = Store::load(
            "test",
            (None, None),
            a.file.path().to_path_buf(),
            keypair,
            a.limits,
            |r, _| r.key.starts_with(b"ok/"),
        )
        .unwrap();
        assert!(again.get(b"ok/1").is_some());
        assert!(again.get(b"old/1").is_none());
        remove(a.file.path());
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        /// Whatever clocks peers' records carry, this device's clock stays within the skew
        /// of its wall clock, and its next write of a key wins over whatever it holds.
        #[test]
        fn peers_cannot_drag_the_clock_ahead_or_make_writes_lose(
            offsets in proptest::collection::vec(-86_400_000i64..3_000_000_000_000, 1..10),
        ) {
            let a = store("bounded", Keypair::generate_ed25519());
            let peer = Keypair::generate_ed25519();
            let now = clock::now_ms();
            let records = offsets
                .iter()
                .map(|o| dated(&peer, b"k", now.saturating_add_signed(*o)))
                .collect();
            a.merge(records);
            proptest::prop_assert!(a.lock().clock.ms <= clock::now_ms() + clock::MAX_SKEW_MS);
            let held = a.lock().records.get(b"k".as_slice()).cloned();
            a.put(b"k", Some(b"mine".to_vec()), None).unwrap();
            let written = a.get(b"k").unwrap();
            proptest::prop_assert_eq!(written.value.as_deref().map(|v| v.as_slice()), Some(b"mine".as_slice()));
            if let Some(held) = held {
                proptest::prop_assert!(written.wins_over(&held));
            }
        }
    }
}
