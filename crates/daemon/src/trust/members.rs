//! The member list: signed records, merged by last-writer-wins per (subject, author), and
//! the set of trusted devices derived from them.
//!
//! Trust starts at this device and spreads through records that admit a device, written by
//! devices already trusted (only through this device's own records when it refuses
//! introductions). The newest record about a device from a trusted author decides: a
//! revocation newer than every admission removes it everywhere, and pairing it again
//! later admits it again. A device's records about itself carry its name and addresses
//! but never count for trust, so a revoked device cannot vouch itself back in.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use loopsy_mesh::{Keypair, Multiaddr, PeerId};
use loopsy_wire::{member::Record, sync::Entry};
use serde_bytes::ByteBuf;

use crate::clock;

/// Most records kept: enough for a mesh of dozens of devices each vouching for all others.
pub const MAX_RECORDS: usize = 4096;

/// How a trusted device came to be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// This device paired with it or added it.
    Direct,
    /// Another member did.
    IntroducedBy(PeerId),
}

/// A trusted device, as the records describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub peer_id: PeerId,
    pub name: String,
    pub addrs: Vec<Multiaddr>,
    pub via: Via,
}

/// A record that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecord {
    #[error("record exceeds size limits")]
    TooLarge,
    #[error("record names a malformed peer ID")]
    BadPeerId,
    #[error("record holds a malformed address")]
    BadAddr,
    #[error("record's author key cannot be read from its peer ID")]
    NoKey,
    #[error("record's signature does not verify")]
    BadSignature,
    #[error("the member list is full ({MAX_RECORDS} records)")]
    Full,
}

/// The member list of one device.
#[derive(Debug)]
pub struct Members {
    me: PeerId,
    accept_introductions: bool,
    records: BTreeMap<Vec<u8>, Record>,
    trusted: BTreeMap<PeerId, Member>,
}

impl Members {
    pub fn new(me: PeerId, accept_introductions: bool) -> Self {
        Self {
            me,
            accept_introductions,
            records: BTreeMap::new(),
            trusted: BTreeMap::new(),
        }
    }

    /// Devices trusted now (never this device itself).
    pub fn trusted(&self) -> &BTreeMap<PeerId, Member> {
        &self.trusted
    }

    pub fn is_trusted(&self, peer: &PeerId) -> bool {
        self.trusted.contains_key(peer)
    }

    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }

    pub fn get(&self, key: &[u8]) -> Option<&Record> {
        self.records.get(key)
    }

    /// Checks a record's form and signature; returns its subject and author.
    pub fn verify(record: &Record) -> Result<(PeerId, PeerId), InvalidRecord> {
        if !record.within_limits() {
            return Err(InvalidRecord::TooLarge);
        }
        let subject = PeerId::from_bytes(&record.subject).map_err(|_| InvalidRecord::BadPeerId)?;
        let author = PeerId::from_bytes(&record.author).map_err(|_| InvalidRecord::BadPeerId)?;
        for addr in &record.addrs {
            Multiaddr::try_from(addr.to_vec()).map_err(|_| InvalidRecord::BadAddr)?;
        }
        let key = public_key(&author).ok_or(InvalidRecord::NoKey)?;
        if !key.verify(&record.signed_bytes(), &record.signature) {
            return Err(InvalidRecord::BadSignature);
        }
        Ok((subject, author))
    }

    /// Merges a record from anywhere; `Ok(true)` when it was new to this list.
    pub fn merge(&mut self, record: Record) -> Result<bool, InvalidRecord> {
        Self::verify(&record)?;
        let changed = self.insert(record)?;
        if changed {
            self.recompute();
        }
        Ok(changed)
    }

    /// Merges records known to be valid (loaded from this device's own store).
    pub fn load(&mut self, records: Vec<Record>) -> Result<(), InvalidRecord> {
        for record in records {
            Self::verify(&record)?;
            self.insert(record)?;
        }
        self.recompute();
        Ok(())
    }

    fn insert(&mut self, record: Record) -> Result<bool, InvalidRecord> {
        let key = record.key();
        match self.records.get(&key) {
            Some(old) if !newer(&record, old) => return Ok(false),
            None if self.records.len() >= MAX_RECORDS => return Err(InvalidRecord::Full),
            _ => {}
        }
        self.records.insert(key, record);
        Ok(true)
    }

    /// Writes and signs this device's record about `subject`.
    pub fn write(
        &mut self,
        keypair: &Keypair,
        subject: PeerId,
        name: &str,
        addrs: &[Multiaddr],
        revoked: bool,
    ) -> Record {
        let mut record = Record {
            subject: ByteBuf::from(subject.to_bytes()),
            author: ByteBuf::from(self.me.to_bytes()),
            name: name.chars().take(loopsy_mesh::MAX_NAME_LEN).collect(),
            addrs: addrs
                .iter()
                .take(loopsy_wire::member::MAX_ADDRS)
                .map(|a| ByteBuf::from(a.to_vec()))
                .collect(),
            revoked,
            at: 0,
            signature: ByteBuf::new(),
        };
        // Later than anything this device wrote for the same subject, whatever the clock did.
        let previous = self.records.get(&record.key()).map_or(0, |r| r.at);
        record.at = clock::now_ms().max(previous + 1);
        record.signature = ByteBuf::from(keypair.sign(&record.signed_bytes()).unwrap_or_default());
        self.records.insert(record.key(), record.clone());
        self.recompute();
        record
    }

    /// A digest of every record, for anti-entropy.
    pub fn digest(&self) -> Vec<Entry> {
        self.records
            .iter()
            .map(|(key, r)| Entry {
                key: ByteBuf::from(key.clone()),
                version: r.at,
                hash: record_hash(r),
            })
            .collect()
    }

    fn recompute(&mut self) {
        // Records about each device by others: (author, record).
        let mut about: HashMap<PeerId, Vec<(PeerId, &Record)>> = HashMap::new();
        for record in self.records.values() {
            let (Ok(subject), Ok(author)) = (
                PeerId::from_bytes(&record.subject),
                PeerId::from_bytes(&record.author),
            ) else {
                continue;
            };
            if subject != author {
                about.entry(subject).or_default().push((author, record));
            }
        }
        let first = self.admit(&about, &BTreeSet::new());
        let revoked = self.revoked(&about, &first);
        let second = self.admit(&about, &revoked);
        let revoked = self.revoked(&about, &second);

        let mut trusted = BTreeMap::new();
        for peer in second
            .iter()
            .filter(|p| **p != self.me && !revoked.contains(p))
        {
            let records = &about[peer];
            let direct = records.iter().any(|(a, r)| *a == self.me && !r.revoked);
            let latest_admission = records
                .iter()
                .filter(|(a, r)| second.contains(a) && !r.revoked)
                .max_by(|x, y| order(x.1, y.1));
            let via = match (direct, latest_admission) {
                (true, _) | (false, None) => Via::Direct,
                (false, Some((author, _))) => Via::IntroducedBy(*author),
            };
            // The device's own record names it best; otherwise the newest admission.
            let own = self.records.get(&key_of(peer, peer)).filter(|r| !r.revoked);
            let name = own
                .or(latest_admission.map(|(_, r)| *r))
                .map(|r| r.name.clone())
                .unwrap_or_default();
            // Addresses from its own record first, then from every admission: any of them
            // may be the one that works.
            let mut addrs: Vec<Multiaddr> = Vec::new();
            let admissions = records
                .iter()
                .filter(|(a, r)| second.contains(a) && !r.revoked)
                .map(|(_, r)| *r);
            for record in own.into_iter().chain(admissions) {
                for addr in record.addrs.iter() {
                    if let Ok(addr) = Multiaddr::try_from(addr.to_vec())
                        && !addrs.contains(&addr)
                        && addrs.len() < 2 * loopsy_wire::member::MAX_ADDRS
                    {
                        addrs.push(addr);
                    }
                }
            }
            trusted.insert(
                *peer,
                Member {
                    peer_id: *peer,
                    name,
                    addrs,
                    via,
                },
            );
        }
        self.trusted = trusted;
    }

    /// Devices reached from this one through admissions by admitted authors.
    fn admit(
        &self,
        about: &HashMap<PeerId, Vec<(PeerId, &Record)>>,
        excluded: &BTreeSet<PeerId>,
    ) -> BTreeSet<PeerId> {
        let mut set = BTreeSet::from([self.me]);
        loop {
            let before = set.len();
            for (subject, records) in about {
                if set.contains(subject) || excluded.contains(subject) {
                    continue;
                }
                let admitted = records.iter().any(|(author, r)| {
                    !r.revoked
                        && set.contains(author)
                        && (*author == self.me || self.accept_introductions)
                });
                if admitted {
                    set.insert(*subject);
                }
            }
            if set.len() == before {
                return set;
            }
        }
    }

    /// Of `set`, the devices whose newest record by an author in `set` is a revocation.
    fn revoked(
        &self,
        about: &HashMap<PeerId, Vec<(PeerId, &Record)>>,
        set: &BTreeSet<PeerId>,
    ) -> BTreeSet<PeerId> {
        set.iter()
            .filter(|peer| {
                about
                    .get(peer)
                    .and_then(|records| {
                        records
                            .iter()
                            .filter(|(author, _)| set.contains(author))
                            .max_by(|x, y| order(x.1, y.1))
                    })
                    .is_some_and(|(_, r)| r.revoked)
            })
            .copied()
            .collect()
    }
}

/// Records ordered by time, then signature, so every device picks the same winner.
fn order(a: &Record, b: &Record) -> std::cmp::Ordering {
    (a.at, &a.signature).cmp(&(b.at, &b.signature))
}

fn newer(a: &Record, b: &Record) -> bool {
    order(a, b).is_gt()
}

/// The key of `author`'s record about `subject`.
pub(crate) fn key_of(subject: &PeerId, author: &PeerId) -> Vec<u8> {
    Record {
        subject: ByteBuf::from(subject.to_bytes()),
        author: ByteBuf::from(author.to_bytes()),
        name: String::new(),
        addrs: Vec::new(),
        revoked: false,
        at: 0,
        signature: ByteBuf::new(),
    }
    .key()
}

/// A short hash of a record, telling apart records of equal key and version.
pub fn record_hash(record: &Record) -> u64 {
    let mut bytes = [0u8; 8];
    for (i, b) in record.signature.iter().take(8).enumerate() {
        bytes[i] = *b;
    }
    u64::from_be_bytes(bytes)
}

/// The public key inside a peer ID (Ed25519 peer IDs carry it whole).
pub fn public_key(peer: &PeerId) -> Option<libp2p::identity::PublicKey> {
    let multihash = peer.as_ref();
    // Code 0 is the identity multihash: the digest is the key itself.
    if multihash.code() != 0 {
        return None;
    }
    libp2p::identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Device {
        key: Keypair,
        members: Members,
    }

    impl Device {
        fn new(accept_introductions: bool) -> Self {
            let key = Keypair::generate_ed25519();
            let members = Members::new(key.public().to_peer_id(), accept_introductions);
            Self { key, members }
        }
        fn id(&self) -> PeerId {
            self.key.public().to_peer_id()
        }
        fn vouch(&mut self, other: PeerId) -> Record {
            self.members.write(&self.key, other, "x", &[], false)
        }
        fn revoke(&mut self, other: PeerId) -> Record {
            self.members.write(&self.key, other, "x", &[], true)
        }
        fn learn(&mut self, records: &[Record]) {
            for r in records {
                self.members.merge(r.clone()).unwrap();
            }
        }
        fn all(&self) -> Vec<Record> {
            self.members.records().cloned().collect()
        }
        fn trusts(&self, other: PeerId) -> bool {
            self.members.is_trusted(&other)
        }
    }

    #[test]
    fn a_device_paired_with_one_member_is_trusted_by_all() {
        let (mut a, mut b, mut c) = (Device::new(true), Device::new(true), Device::new(true));
        let ab = a.vouch(b.id());
        let ba = b.vouch(a.id());
        let ac = a.vouch(c.id());
        let ca = c.vouch(a.id());
        b.learn(&[ab.clone(), ac.clone(), ca.clone()]);
        c.learn(&[ab, ba]);
        assert!(b.trusts(c.id()), "introduced by a");
        assert!(c.trusts(b.id()), "introduced by a");
        assert_eq!(b.members.trusted()[&c.id()].via, Via::IntroducedBy(a.id()));
        assert_eq!(b.members.trusted()[&a.id()].via, Via::Direct);
    }

    #[test]
    fn a_revocation_by_any_member_wins_until_paired_again() {
        let (mut a, mut b, c) = (Device::new(true), Device::new(true), Device::new(true));
        let ab = a.vouch(b.id());
        let ac = a.vouch(c.id());
        b.vouch(a.id());
        b.learn(&[ab, ac]);
        assert!(b.trusts(c.id()));
        std::thread::sleep(std::time::Duration::from_millis(2));
        let revocation = b.revoke(c.id());
        a.learn(&[revocation]);
        assert!(
            !a.trusts(c.id()),
            "a revocation spreads to the member that paired it"
        );
        assert!(!b.trusts(c.id()));
        // Pairing again later admits it again.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let again = a.vouch(c.id());
        b.learn(&[again]);
        assert!(a.trusts(c.id()) && b.trusts(c.id()));
    }

    #[test]
    fn a_revoked_device_cannot_vouch_itself_back_in() {
        let (mut a, mut c) = (Device::new(true), Device::new(true));
        a.vouch(c.id());
        a.revoke(c.id());
        // c writes a newer record about itself, and one about a, signed by itself.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let self_record = c.vouch(c.id());
        a.learn(&[self_record]);
        assert!(!a.trusts(c.id()));
    }

    #[test]
    fn addresses_come_from_every_record_about_a_device() {
        let (mut a, mut b) = (Device::new(true), Device::new(true));
        let lan: Multiaddr = "/ip4/10.0.0.2/tcp/7717".parse().unwrap();
        let vpn: Multiaddr = "/ip4/100.64.0.2/tcp/7717".parse().unwrap();
        a.members
            .write(&a.key, b.id(), "b", std::slice::from_ref(&lan), false);
        // b's own record, written before it knew its addresses, must not hide them.
        let own_empty = b.members.write(&b.key, b.id(), "b", &[], false);
        let own_later = b
            .members
            .write(&b.key, b.id(), "b", std::slice::from_ref(&vpn), false);
        a.learn(&[own_empty]);
        assert_eq!(
            a.members.trusted()[&b.id()].addrs,
            std::slice::from_ref(&lan)
        );
        a.learn(&[own_later]);
        assert_eq!(a.members.trusted()[&b.id()].addrs, [vpn, lan]);
    }

    #[test]
    fn introductions_can_be_refused() {
        let (mut a, mut b, c) = (Device::new(true), Device::new(false), Device::new(true));
        let ab = a.vouch(b.id());
        let ac = a.vouch(c.id());
        b.vouch(a.id());
        b.learn(&[ab, ac]);
        assert!(b.trusts(a.id()));
        assert!(!b.trusts(c.id()), "b refuses introductions");
    }

    #[test]
    fn tampered_records_are_refused() {
        let (mut a, b) = (Device::new(true), Device::new(true));
        let mut record = a.vouch(b.id());
        record.revoked = true;
        let mut other = Device::new(true);
        assert_eq!(
            other.members.merge(record),
            Err(InvalidRecord::BadSignature)
        );
        let mut forged = a.all()[0].clone();
        forged.author = ByteBuf::from(other.id().to_bytes());
        assert_eq!(
            other.members.merge(forged),
            Err(InvalidRecord::BadSignature)
        );
    }

    #[test]
    fn merging_is_order_independent_and_idempotent() {
        let (mut a, mut b, mut c) = (Device::new(true), Device::new(true), Device::new(true));
        let mut records = vec![a.vouch(b.id()), b.vouch(a.id()), a.vouch(c.id())];
        // The revocation must be later than the admission it overrides.
        std::thread::sleep(std::time::Duration::from_millis(2));
        records.push(b.revoke(c.id()));
        records.push(c.vouch(a.id()));
        let observer_key = a.key.clone();
        let mut forward = Members::new(observer_key.public().to_peer_id(), true);
        let mut backward = Members::new(observer_key.public().to_peer_id(), true);
        for r in &records {
            forward.merge(r.clone()).unwrap();
        }
        for r in records.iter().rev() {
            backward.merge(r.clone()).unwrap();
            backward.merge(r.clone()).unwrap();
        }
        let ids = |m: &Members| m.trusted().keys().copied().collect::<Vec<_>>();
        assert_eq!(ids(&forward), ids(&backward));
        assert_eq!(forward.digest(), backward.digest());
        assert!(!forward.is_trusted(&c.id()));
    }
}
