//! The member list: signed records, merged by last-writer-wins per (subject, author), and
//! the set of trusted devices, with what each may do here, derived from them.
//!
//! Trust starts at this device and spreads through records that admit a device, but only
//! records whose author may vouch here count: this device itself, and members that hold
//! the `admit` capability here (none at all when this device refuses introductions). A
//! device introduced that way gets at most what its introducer holds here, intersected with
//! what the admission record allows (the restriction chosen at pairing travels in it) and
//! with this device's defaults; several introducers add up. What this device chose for a
//! peer itself (pairing with it, `trust add`) is what it gets.
//!
//! The newest record about a device from an author that may vouch decides: a revocation
//! newer than every admission removes it everywhere, and pairing it again later admits it
//! again. When an introducer is revoked, its introductions stop counting: a device only it
//! vouched for leaves with it, one that others vouched for too stays. A device's records
//! about itself carry its name and addresses but never count for trust, so a revoked
//! device cannot vouch itself back in. Records dated more than [`clock::MAX_SKEW_MS`]
//! ahead of this device's clock are refused, so a wrong clock cannot win for ever.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use loopsy_mesh::{Keypair, Multiaddr, PeerId};
use loopsy_wire::{member::Record, sync::Entry};
use serde_bytes::ByteBuf;

use crate::{
    caps::{self, Capability, Caps},
    clock,
};

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
    /// What it may do here.
    pub grants: Caps,
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
    #[error("record is dated {0}, more than the allowed clock skew ahead of this device")]
    Future(String),
}

/// The member list of one device.
#[derive(Debug)]
pub struct Members {
    me: PeerId,
    accept_introductions: bool,
    /// What members get here unless this device chose otherwise for them.
    defaults: Caps,
    /// What this device chose for particular peers.
    chosen: BTreeMap<PeerId, Caps>,
    /// The names this device's user gave particular peers.
    aliases: BTreeMap<PeerId, String>,
    records: BTreeMap<Vec<u8>, Record>,
    trusted: BTreeMap<PeerId, Member>,
}

/// Records about each device by other devices: subject to (author, record).
type About<'a> = HashMap<PeerId, Vec<(PeerId, &'a Record)>>;

impl Members {
    pub fn new(me: PeerId, accept_introductions: bool, defaults: Caps) -> Self {
        Self {
            me,
            accept_introductions,
            defaults,
            chosen: BTreeMap::new(),
            aliases: BTreeMap::new(),
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

    /// What members get here unless this device chose otherwise for them.
    pub fn defaults(&self) -> &Caps {
        &self.defaults
    }

    /// Takes new defaults and introduction rule (a reloaded config).
    pub fn configure(&mut self, accept_introductions: bool, defaults: Caps) {
        self.accept_introductions = accept_introductions;
        self.defaults = defaults;
        self.recompute();
    }

    /// Sets (or with `None` forgets) what this device grants `peer`, in place of the defaults.
    pub fn choose(&mut self, peer: PeerId, grants: Option<Caps>) {
        match grants {
            Some(grants) => self.chosen.insert(peer, grants),
            None => self.chosen.remove(&peer),
        };
        self.recompute();
    }

    /// Sets (or with `None` forgets) the name `peer` goes by here, in place of its own.
    pub fn alias(&mut self, peer: PeerId, name: Option<String>) {
        match name {
            Some(name) => self.aliases.insert(peer, name),
            None => self.aliases.remove(&peer),
        };
        self.recompute();
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

    /// Checks a record from another device: valid, and not dated too far ahead of `now`.
    fn acceptable(record: &Record, now: u64) -> Result<(), InvalidRecord> {
        Self::verify(record)?;
        if record.at > now.saturating_add(clock::MAX_SKEW_MS) {
            return Err(InvalidRecord::Future(clock::rfc3339_ms(record.at)));
        }
        Ok(())
    }

    /// Merges a record from anywhere; `Ok(true)` when it was new to this list.
    pub fn merge(&mut self, record: Record) -> Result<bool, InvalidRecord> {
        let (fresh, mut invalid) = self.merge_all(vec![record]);
        match invalid.pop() {
            Some(e) => Err(e),
            None => Ok(!fresh.is_empty()),
        }
    }

    /// Merges records from anywhere, deriving trust once at the end; returns the records
    /// that were new here, and why the others were refused.
    pub fn merge_all(&mut self, records: Vec<Record>) -> (Vec<Record>, Vec<InvalidRecord>) {
        let now = clock::now_ms();
        let mut fresh = Vec::new();
        let mut invalid = Vec::new();
        for record in records {
            // A copy of a record held here (every member passes a change on) was verified
            // when it came first: no signature checked again, and nothing to do.
            if self.records.get(&record.key()) == Some(&record) {
                continue;
            }
            match Self::acceptable(&record, now).and_then(|()| self.insert(record.clone())) {
                Ok(true) => fresh.push(record),
                Ok(false) => {}
                Err(e) => invalid.push(e),
            }
        }
        if !fresh.is_empty() {
            self.recompute();
        }
        (fresh, invalid)
    }

    /// Loads this device's own store. Records by others dated too far ahead (accepted while
    /// this device's clock ran ahead) are dropped: their authors send them again once they
    /// are due. This device's own are dated anew by [`Members::redate_own`].
    pub fn load(&mut self, records: Vec<Record>) -> Result<(), InvalidRecord> {
        let now = clock::now_ms();
        let me = self.me.to_bytes();
        for record in records {
            Self::verify(&record)?;
            if record.author.as_slice() != me.as_slice()
                && record.at > now.saturating_add(clock::MAX_SKEW_MS)
            {
                tracing::warn!(at = %clock::rfc3339_ms(record.at), "dropping a member record from the future");
                continue;
            }
            self.insert(record)?;
        }
        self.recompute();
        Ok(())
    }

    /// Signs again, dated now, this device's records dated too far ahead (written while its
    /// own clock ran ahead), so that other devices accept them; returns them.
    pub fn redate_own(&mut self, keypair: &Keypair) -> Vec<Record> {
        let limit = clock::now_ms().saturating_add(clock::MAX_SKEW_MS);
        let me = self.me.to_bytes();
        let stale: Vec<Record> = self
            .records
            .values()
            .filter(|r| r.author.as_slice() == me.as_slice() && r.at > limit)
            .cloned()
            .collect();
        let redated: Vec<Record> = stale
            .into_iter()
            .map(|mut record| {
                record.at = clock::now_ms();
                record.signature =
                    ByteBuf::from(keypair.sign(&record.signed_bytes()).unwrap_or_default());
                self.records.insert(record.key(), record.clone());
                record
            })
            .collect();
        if !redated.is_empty() {
            self.recompute();
        }
        redated
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

    /// Writes and signs this device's record about `subject`; an admission carries
    /// `allow`, what this device grants it.
    pub fn write(
        &mut self,
        keypair: &Keypair,
        subject: PeerId,
        name: &str,
        addrs: &[Multiaddr],
        revoked: bool,
        allow: Option<&Caps>,
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
            allow: allow.filter(|_| !revoked).map(caps::names),
            signature: ByteBuf::new(),
        };
        // Later than anything this device wrote for the same subject, whatever the clock
        // did; unless that was dated too far ahead (its clock was wrong then): now wins.
        let now = clock::now_ms();
        let previous = self
            .records
            .get(&record.key())
            .map_or(0, |r| r.at)
            .saturating_add(1);
        record.at = if previous > now.saturating_add(clock::MAX_SKEW_MS) {
            now
        } else {
            now.max(previous)
        };
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
        let mut about: About = HashMap::new();
        // Who each device vouches for: whose grants to look at again when its own change.
        let mut vouches: HashMap<PeerId, Vec<PeerId>> = HashMap::new();
        for record in self.records.values() {
            let (Ok(subject), Ok(author)) = (
                PeerId::from_bytes(&record.subject),
                PeerId::from_bytes(&record.author),
            ) else {
                continue;
            };
            if subject != author {
                about.entry(subject).or_default().push((author, record));
                vouches.entry(author).or_default().push(subject);
            }
        }
        let first = self.grant(&about, &vouches, &BTreeSet::new());
        let revoked = self.revoked(&about, &first);
        let second = self.grant(&about, &vouches, &revoked);
        let revoked = self.revoked(&about, &second);

        let mut trusted = BTreeMap::new();
        for (peer, grants) in second
            .iter()
            .filter(|(p, _)| **p != self.me && !revoked.contains(p))
        {
            let records = &about[peer];
            let direct = records.iter().any(|(a, r)| *a == self.me && !r.revoked);
            let admissions: Vec<&Record> = records
                .iter()
                .filter(|(a, r)| !r.revoked && self.may_vouch(a, &second))
                .map(|(_, r)| *r)
                .collect();
            let latest = records
                .iter()
                .filter(|(a, r)| !r.revoked && self.may_vouch(a, &second))
                .max_by(|x, y| order(x.1, y.1));
            let via = match (direct, latest) {
                (true, _) | (false, None) => Via::Direct,
                (false, Some((author, _))) => Via::IntroducedBy(*author),
            };
            // The name this device's user gave it; else the device's own record names it
            // best; otherwise the newest admission.
            let own = self.records.get(&key_of(peer, peer)).filter(|r| !r.revoked);
            let name = match self.aliases.get(peer) {
                Some(alias) => alias.clone(),
                None => own
                    .or(latest.map(|(_, r)| *r))
                    .map(|r| loopsy_mesh::sanitize_name(&r.name))
                    .unwrap_or_default(),
            };
            // Addresses from its own record first, then from every admission: any of them
            // may be the one that works.
            let mut addrs: Vec<Multiaddr> = Vec::new();
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
                    grants: grants.clone(),
                },
            );
        }
        self.trusted = trusted;
        self.tell_apart();
    }

    /// Names are chosen by the devices themselves: a member that takes another's name (or
    /// this device's) could pass for it in listings, the inbox and the audit log. Every
    /// member whose name is not its own alone is shown with the end of its peer ID.
    fn tell_apart(&mut self) {
        let mine = self
            .records
            .get(&key_of(&self.me, &self.me))
            .map(|r| loopsy_mesh::sanitize_name(&r.name));
        let mut counts: HashMap<String, usize> = HashMap::new();
        for member in self.trusted.values() {
            *counts.entry(member.name.clone()).or_default() += 1;
        }
        for member in self.trusted.values_mut() {
            let shared = counts[&member.name] > 1 || mine.as_ref() == Some(&member.name);
            if shared && !member.name.is_empty() {
                let id = member.peer_id.to_base58();
                let tail = &id[id.len().saturating_sub(6)..];
                member.name = format!("{} (…{tail})", member.name);
            }
        }
    }

    /// Whether `author`'s records about other devices count here, given what each device
    /// may do here.
    fn may_vouch(&self, author: &PeerId, grants: &BTreeMap<PeerId, Caps>) -> bool {
        *author == self.me
            || (self.accept_introductions
                && grants
                    .get(author)
                    .is_some_and(|g| g.contains(&Capability::Admit)))
    }

    /// What each device reached from this one may do here (this device: everything), found
    /// by following admissions outward from this device. Grants only grow as the walk goes
    /// on, so it ends, in the same place whatever the order.
    fn grant(
        &self,
        about: &About,
        vouches: &HashMap<PeerId, Vec<PeerId>>,
        excluded: &BTreeSet<PeerId>,
    ) -> BTreeMap<PeerId, Caps> {
        let mut grants = BTreeMap::from([(self.me, caps::all())]);
        let mut queue: VecDeque<PeerId> = vouches.get(&self.me).cloned().unwrap_or_default().into();
        while let Some(subject) = queue.pop_front() {
            if subject == self.me || excluded.contains(&subject) {
                continue;
            }
            let Some(records) = about.get(&subject) else {
                continue;
            };
            let Some(now) = self.grants_of(&subject, records, &grants) else {
                continue;
            };
            if grants.get(&subject) != Some(&now) {
                grants.insert(subject, now);
                queue.extend(vouches.get(&subject).into_iter().flatten().copied());
            }
        }
        grants
    }

    /// What `subject` may do here by the admissions about it, given what their authors may
    /// do here; `None` when no admission counts.
    fn grants_of(
        &self,
        subject: &PeerId,
        records: &[(PeerId, &Record)],
        grants: &BTreeMap<PeerId, Caps>,
    ) -> Option<Caps> {
        let mut total: Option<Caps> = None;
        for (author, record) in records {
            if record.revoked || !self.may_vouch(author, grants) {
                continue;
            }
            let bound = if *author == self.me {
                self.defaults.clone()
            } else {
                let allowed = record
                    .allow
                    .as_deref()
                    .map_or_else(caps::all, caps::parse_known);
                let introducer = grants.get(author).cloned().unwrap_or_default();
                introducer
                    .into_iter()
                    .filter(|c| allowed.contains(c) && self.defaults.contains(c))
                    .collect()
            };
            total.get_or_insert_default().extend(bound);
        }
        // This device's own choice for a peer replaces whatever the records would give.
        total.map(|derived| self.chosen.get(subject).cloned().unwrap_or(derived))
    }

    /// Of `grants`' devices, those whose newest record by an author that may vouch here is
    /// a revocation.
    fn revoked(&self, about: &About, grants: &BTreeMap<PeerId, Caps>) -> BTreeSet<PeerId> {
        grants
            .keys()
            .filter(|peer| {
                about
                    .get(peer)
                    .and_then(|records| {
                        records
                            .iter()
                            .filter(|(author, _)| self.may_vouch(author, grants))
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
        allow: None,
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
            Self::with_defaults(accept_introductions, caps::all())
        }
        fn with_defaults(accept_introductions: bool, defaults: Caps) -> Self {
            let key = Keypair::generate_ed25519();
            let members = Members::new(key.public().to_peer_id(), accept_introductions, defaults);
            Self { key, members }
        }
        fn id(&self) -> PeerId {
            self.key.public().to_peer_id()
        }
        /// Pairs with `other`, granting what this device's defaults say.
        fn vouch(&mut self, other: PeerId) -> Record {
            let defaults = self.members.defaults().clone();
            self.members
                .write(&self.key, other, "x", &[], false, Some(&defaults))
        }
        /// Pairs with `other` granting `allow` only (`pair --allow`).
        fn vouch_with(&mut self, other: PeerId, allow: &[&str]) -> Record {
            let allow = grants(allow);
            self.members.choose(other, Some(allow.clone()));
            self.members
                .write(&self.key, other, "x", &[], false, Some(&allow))
        }
        fn revoke(&mut self, other: PeerId) -> Record {
            self.members.write(&self.key, other, "x", &[], true, None)
        }
        fn grants_of(&self, other: PeerId) -> Option<Vec<String>> {
            self.members
                .trusted()
                .get(&other)
                .map(|m| caps::names(&m.grants))
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
            .write(&a.key, b.id(), "b", std::slice::from_ref(&lan), false, None);
        // b's own record, written before it knew its addresses, must not hide them.
        let own_empty = b.members.write(&b.key, b.id(), "b", &[], false, None);
        let own_later =
            b.members
                .write(&b.key, b.id(), "b", std::slice::from_ref(&vpn), false, None);
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
        let mut forward = Members::new(observer_key.public().to_peer_id(), true, caps::all());
        let mut backward = Members::new(observer_key.public().to_peer_id(), true, caps::all());
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

    fn grants(names: &[&str]) -> Caps {
        caps::parse(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_member_without_admit_introduces_nobody() {
        // The attack: bravo, paired with `--allow files`, vouches for a key of its own.
        let (mut alpha, mut bravo, shadow) =
            (Device::new(true), Device::new(true), Device::new(true));
        alpha.vouch_with(bravo.id(), &["files"]);
        let minted = bravo.vouch(shadow.id());
        alpha.learn(&[minted]);
        assert!(alpha.trusts(bravo.id()));
        assert!(!alpha.trusts(shadow.id()), "files does not admit");
        // Nor can it revoke anyone.
        let carol = Device::new(true);
        alpha.vouch(carol.id());
        std::thread::sleep(std::time::Duration::from_millis(2));
        let kick = bravo.revoke(carol.id());
        alpha.learn(&[kick]);
        assert!(alpha.trusts(carol.id()), "a revocation needs admit too");
    }

    #[test]
    fn an_introduced_device_gets_at_most_what_its_introducer_holds() {
        let (mut alpha, mut bravo, shadow) =
            (Device::new(true), Device::new(true), Device::new(true));
        alpha.vouch_with(bravo.id(), &["admit", "exec", "ctx"]);
        let intro = bravo.vouch_with(shadow.id(), &["admit", "exec", "files", "ctx"]);
        alpha.learn(&[intro]);
        assert_eq!(
            alpha.grants_of(shadow.id()).unwrap(),
            ["exec", "ctx", "admit"],
            "no files: bravo does not hold it here"
        );
        // ... and never more than this device's own defaults.
        let mut strict = Device::with_defaults(true, grants(&["ctx", "admit"]));
        strict.vouch(bravo.id());
        let intro = bravo.vouch(shadow.id());
        strict.learn(&[intro]);
        assert_eq!(strict.grants_of(shadow.id()).unwrap(), ["ctx", "admit"]);
    }

    #[test]
    fn a_restriction_chosen_at_pairing_holds_on_every_member() {
        let (mut alpha, mut charlie, phone) =
            (Device::new(true), Device::new(true), Device::new(true));
        let ac = alpha.vouch(charlie.id());
        let ca = charlie.vouch(alpha.id());
        let files_only = alpha.vouch_with(phone.id(), &["files"]);
        charlie.learn(&[ac, files_only]);
        alpha.learn(&[ca]);
        assert_eq!(charlie.grants_of(phone.id()).unwrap(), ["files"]);
        assert_eq!(
            charlie.members.trusted()[&phone.id()].via,
            Via::IntroducedBy(alpha.id())
        );
    }

    #[test]
    fn revoking_an_introducer_drops_only_what_it_alone_vouched_for() {
        let (mut alpha, mut bravo, mut charlie) =
            (Device::new(true), Device::new(true), Device::new(true));
        let (only_b, both) = (Device::new(true), Device::new(true));
        alpha.vouch(bravo.id());
        alpha.vouch(charlie.id());
        let records = [
            bravo.vouch(alpha.id()),
            bravo.vouch(only_b.id()),
            bravo.vouch(both.id()),
            charlie.vouch(alpha.id()),
            charlie.vouch(both.id()),
        ];
        alpha.learn(&records);
        assert!(alpha.trusts(only_b.id()) && alpha.trusts(both.id()));
        std::thread::sleep(std::time::Duration::from_millis(2));
        alpha.revoke(bravo.id());
        assert!(!alpha.trusts(bravo.id()));
        assert!(!alpha.trusts(only_b.id()), "vouched for by bravo alone");
        assert!(alpha.trusts(both.id()), "charlie vouched for it too");
    }

    #[test]
    fn records_from_the_future_are_refused_and_a_wrong_clock_recovers() {
        let (mut alpha, mut bravo, carol) =
            (Device::new(true), Device::new(true), Device::new(true));
        alpha.vouch(bravo.id());
        alpha.vouch(carol.id());
        // bravo's clock says 2100: its revocation of carol would win for ever.
        let mut from_2100 = bravo.revoke(carol.id());
        from_2100.at = 4_102_444_800_000;
        from_2100.signature = ByteBuf::from(bravo.key.sign(&from_2100.signed_bytes()).unwrap());
        assert!(matches!(
            alpha.members.merge(from_2100.clone()),
            Err(InvalidRecord::Future(_))
        ));
        assert!(alpha.trusts(carol.id()));
        // bravo's own list holds it (its clock was wrong); its next record is dated now.
        bravo.members.insert(from_2100).unwrap();
        let again = bravo.vouch(carol.id());
        assert!(again.at <= clock::now_ms());
        assert_eq!(bravo.members.get(&again.key()), Some(&again));
        alpha.learn(&[again]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        /// No sequence of records from a member without `admit` (and from the devices it
        /// makes up) admits anything, revokes anything, or changes a grant.
        #[test]
        fn no_records_from_a_member_without_admit_grant_anything(
            held in proptest::sample::subsequence(
                vec!["exec", "shell", "files", "sessions", "ctx", "msg"], 0..=6),
            writes in proptest::collection::vec(
                (0usize..4, 0usize..5, proptest::bool::ANY,
                 proptest::sample::subsequence(vec!["exec", "files", "admit", "ctx"], 0..=4)),
                1..16),
        ) {
            let mut alpha = Device::new(true);
            let mallory = Device::new(true);
            let carol = Device::new(true);
            alpha.vouch_with(mallory.id(), &held);
            alpha.vouch(carol.id());
            let before: Vec<_> = alpha.members.trusted().clone().into_iter().collect();
            // Mallory and three identities of its own write about each other and carol.
            let mut authors = vec![mallory];
            authors.extend((0..3).map(|_| Device::new(true)));
            let subjects: Vec<PeerId> = authors
                .iter()
                .map(Device::id)
                .chain([carol.id()])
                .collect();
            let mut records = Vec::new();
            for (author, subject, revoked, allow) in writes {
                let subject = subjects[subject];
                let author = &mut authors[author];
                let allow = grants(&allow);
                records.push(author.members.write(
                    &author.key, subject, "x", &[], revoked, Some(&allow),
                ));
            }
            for record in records.iter().rev().chain(records.iter()) {
                let _ = alpha.members.merge(record.clone());
            }
            let after: Vec<_> = alpha.members.trusted().clone().into_iter().collect();
            proptest::prop_assert_eq!(before, after);
        }
    }

    #[test]
    fn a_member_cannot_pass_for_another_by_its_name() {
        let (mut alpha, mut bravo, mut mallory) =
            (Device::new(true), Device::new(true), Device::new(true));
        alpha
            .members
            .write(&alpha.key, alpha.id(), "alpha", &[], false, None);
        alpha.vouch(bravo.id());
        alpha.vouch(mallory.id());
        let bravo_self = bravo
            .members
            .write(&bravo.key, bravo.id(), "bravo", &[], false, None);
        // mallory names itself bravo, with a right-to-left override for good measure.
        let squat = mallory.members.write(
            &mallory.key,
            mallory.id(),
            "bra\u{202e}vo",
            &[],
            false,
            None,
        );
        alpha.learn(&[bravo_self, squat]);
        let names: Vec<String> = alpha
            .members
            .trusted()
            .values()
            .map(|m| m.name.clone())
            .collect();
        assert!(names.iter().all(|n| n != "bravo"), "{names:?}");
        assert!(names.iter().all(|n| !n.contains('\u{202e}')), "{names:?}");
        // ... and one that takes this device's own name is told apart too.
        let as_me = mallory
            .members
            .write(&mallory.key, mallory.id(), "alpha", &[], false, None);
        alpha.learn(&[as_me]);
        assert_ne!(alpha.members.trusted()[&mallory.id()].name, "alpha");
    }
}
