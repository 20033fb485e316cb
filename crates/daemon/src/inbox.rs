//! Messages between devices (and the agents on them), over the replicated `msg` collection:
//! a message is a record written by its sender, so every member keeps it until it expires
//! and it reaches its recipient whenever a chain of members does. The recipient moves it
//! into its inbox once (the inbox is keyed by message ID) and answers with an
//! acknowledgement record, which travels back the same way.
//!
//! The members in between must carry a message without reading it: its text is sealed to
//! the recipient ([`crate::seal`]), bound to the sender and the record key. A carrier sees
//! who sent it (the record's author), to whom, how big and when.
//!
//! Nor may a member touch the records of others: a message's key names its sender
//! (`m/SENDER/ID`) and an acknowledgement's its writer, the recipient
//! (`a/RECIPIENT/SENDER/ID`), and the collection's rule ([`written_by_entitled`]) refuses a
//! record whose author is not the one its key names. So no member overwrites or deletes
//! another's message (a newer tombstone would drop it everywhere), nor acknowledges a
//! message that was not delivered to it.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
};

use libp2p::identity::Keypair;
use loopsy_mesh::PeerId;
use loopsy_wire::replica::Record;
use serde::{Deserialize, Serialize};

use crate::{
    clock,
    fsutil::{self, StateFile},
    replica::Store,
    seal, sync,
    trust::Trust,
};

/// How long a message (and its acknowledgement) is kept by the members in between.
pub const KEEP_MS: u64 = 30 * 24 * 3600 * 1000;
/// Longest message.
pub const MAX_TEXT: usize = 16 * 1024;
/// Messages an inbox keeps (the oldest go first).
const MAX_INBOX: usize = 10_000;
/// Messages an inbox keeps from one sender (that sender's oldest go first): no member
/// pushes the others' messages out.
const MAX_PER_SENDER: usize = 2_500;
/// Settled records remembered (as many as the collection holds).
const MAX_SETTLED: usize = 10_000;
/// Tells a message's box from any other use of the device's key.
const DOMAIN: &[u8] = b"loopsy message 1";

/// A message as its record holds it: in the clear only what the carriers need to pass it
/// on, the rest sealed to the recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The recipient's peer ID.
    #[serde(with = "serde_bytes")]
    pub to: Vec<u8>,
    /// [`Contents`], sealed to the recipient.
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
}

/// What only the recipient reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Contents {
    text: String,
    sent_ms: u64,
}

/// A message in this device's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    pub id: String,
    pub from: String,
    /// The sender's peer ID (empty in messages received before it was kept).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from_peer_id: String,
    pub text: String,
    pub sent_ms: u64,
    pub received_ms: u64,
}

/// Longest message ID (this device writes 24 hex digits).
const MAX_ID: usize = 64;

/// A message's key in the `msg` collection: `m/SENDER/ID`, written by SENDER only.
pub fn message_key(sender: &PeerId, id: &str) -> Vec<u8> {
    format!("m/{}/{id}", sender.to_base58()).into_bytes()
}

/// The key of its acknowledgement: `a/RECIPIENT/SENDER/ID`, written by RECIPIENT only.
pub fn ack_key(recipient: &PeerId, sender: &PeerId, id: &str) -> Vec<u8> {
    format!("a/{}/{}/{id}", recipient.to_base58(), sender.to_base58()).into_bytes()
}

/// What a key of the `msg` collection names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Message {
        sender: PeerId,
        id: String,
    },
    Ack {
        recipient: PeerId,
        sender: PeerId,
        id: String,
    },
}

/// Reads a key of the `msg` collection; `None` for anything else (keys of older versions
/// among them). Peer IDs in their one base58 spelling, IDs of letters and digits.
fn parse_key(key: &[u8]) -> Option<Key> {
    let peer = |s: &str| s.parse::<PeerId>().ok().filter(|p| p.to_base58() == s);
    let id = |s: &str| {
        (!s.is_empty() && s.len() <= MAX_ID && s.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| s.to_owned())
    };
    let parts: Vec<&str> = std::str::from_utf8(key).ok()?.split('/').collect();
    match parts.as_slice() {
        ["m", sender, i] => Some(Key::Message {
            sender: peer(sender)?,
            id: id(i)?,
        }),
        ["a", recipient, sender, i] => Some(Key::Ack {
            recipient: peer(recipient)?,
            sender: peer(sender)?,
            id: id(i)?,
        }),
        _ => None,
    }
}

/// The `msg` collection's rule: a message is written (or deleted) by its sender only, an
/// acknowledgement by the recipient of the message only.
pub fn written_by_entitled(record: &Record, author: &PeerId) -> bool {
    match parse_key(&record.key) {
        Some(Key::Message { sender, .. }) => sender == *author,
        Some(Key::Ack { recipient, .. }) => recipient == *author,
        None => false,
    }
}

/// This device's inbox, kept in a file.
pub struct Inbox {
    file: StateFile,
    /// This device's key, which opens the messages sealed to it.
    keypair: Keypair,
    /// By sender and ID ([`slot`]): a member that reuses the ID of another's message
    /// cannot take its place.
    messages: Mutex<BTreeMap<String, Received>>,
    /// Signatures of the records this device is done with (addressed to another, not
    /// decoding or opening here, or in the inbox and acknowledged): looked at once, not
    /// decoded again on every change of the collection.
    settled: Mutex<HashSet<Vec<u8>>>,
    /// Senders already logged as over their share (once each while the node runs).
    over_share: Mutex<HashSet<String>>,
}

/// Drops each sender's oldest messages beyond `share`; the senders that had some.
fn trim_senders(messages: &mut BTreeMap<String, Received>, share: usize) -> Vec<String> {
    let mut by_sender: HashMap<&str, Vec<(u64, &String)>> = HashMap::new();
    for (slot, message) in messages.iter() {
        by_sender
            .entry(&message.from_peer_id)
            .or_default()
            .push((message.received_ms, slot));
    }
    let mut over = Vec::new();
    let mut drop = Vec::new();
    for (sender, mut slots) in by_sender {
        if slots.len() <= share {
            continue;
        }
        slots.sort();
        let excess = slots.len() - share;
        drop.extend(slots.into_iter().take(excess).map(|(_, s)| s.clone()));
        over.push(sender.to_owned());
    }
    for slot in drop {
        messages.remove(&slot);
    }
    over
}

/// Where a message sits in the inbox: its sender and its ID.
fn slot(sender: &str, id: &str) -> String {
    format!("{sender}/{id}")
}

impl Inbox {
    /// The inbox kept in `path` (missing: empty; damaged: its previous copy).
    pub fn load(path: PathBuf, keypair: Keypair) -> io::Result<Self> {
        let file = StateFile::new(path, 0o600);
        let messages: Vec<Received> = file
            .load(|bytes| serde_json::from_slice(bytes).map_err(|e| format!("not an inbox: {e}")))?
            .unwrap_or_default();
        Ok(Self {
            file,
            keypair,
            messages: Mutex::new(
                messages
                    .into_iter()
                    .map(|m| (slot(&m.from_peer_id, &m.id), m))
                    .collect(),
            ),
            settled: Mutex::default(),
            over_share: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Received>> {
        self.messages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every message, oldest first.
    pub fn list(&self) -> Vec<Received> {
        let mut all: Vec<Received> = self.lock().values().cloned().collect();
        all.sort_by_key(|m| (m.sent_ms, m.id.clone()));
        all
    }

    fn contains(&self, sender: &PeerId, id: &str) -> bool {
        let messages = self.lock();
        // Or received before senders were kept, when IDs alone told messages apart.
        messages.contains_key(&slot(&sender.to_base58(), id))
            || messages.contains_key(&slot("", id))
    }

    fn settled(&self) -> MutexGuard<'_, HashSet<Vec<u8>>> {
        self.settled.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers a record (by its signature, which covers its key and value) that needs
    /// nothing more from this device.
    fn settle(&self, signature: &[u8]) {
        let mut settled = self.settled();
        if settled.len() >= MAX_SETTLED {
            settled.clear();
        }
        settled.insert(signature.to_vec());
    }

    /// Adds the messages that are not there already, and saves the inbox once (a snapshot
    /// taken under the lock, never written over a newer one); how many were new.
    fn add(&self, received: Vec<Received>) -> usize {
        let (generation, all, added) = {
            let mut messages = self.lock();
            let mut added = 0;
            for message in received {
                let slot = slot(&message.from_peer_id, &message.id);
                if messages.contains_key(&slot) {
                    continue;
                }
                messages.insert(slot, message);
                added += 1;
            }
            for sender in trim_senders(&mut messages, MAX_PER_SENDER) {
                let mut logged = self.over_share.lock().unwrap_or_else(|e| e.into_inner());
                if logged.insert(sender.clone()) {
                    tracing::warn!(
                        %sender,
                        share = MAX_PER_SENDER,
                        "a member sent more messages than its share of the inbox: its oldest \
                         are dropped (said once)"
                    );
                }
            }
            while messages.len() > MAX_INBOX {
                let oldest = messages
                    .iter()
                    .min_by_key(|(_, m)| m.received_ms)
                    .map(|(slot, _)| slot.clone());
                if let Some(oldest) = oldest {
                    messages.remove(&oldest);
                }
            }
            if added == 0 {
                return 0;
            }
            let all = messages.values().cloned().collect::<Vec<_>>();
            (self.file.generation(), all, added)
        };
        if let Ok(bytes) = serde_json::to_vec(&all)
            && let Err(error) = fsutil::blocking(|| self.file.write(generation, bytes))
        {
            tracing::warn!(%error, "cannot save the inbox");
        }
        added
    }
}

/// Messages: the replicated `msg` collection, and this device's inbox.
pub struct Messages {
    store: Arc<Store>,
    inbox: Inbox,
    trust: Arc<Trust>,
    pushes: sync::Pushes,
}

impl Messages {
    pub fn new(store: Arc<Store>, inbox: Inbox, trust: Arc<Trust>, pushes: sync::Pushes) -> Self {
        Self {
            store,
            inbox,
            trust,
            pushes,
        }
    }

    /// The messages this device received.
    pub fn inbox(&self) -> Vec<Received> {
        self.inbox.list()
    }

    /// Bumped on every change of the collection.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.subscribe()
    }

    /// Moves messages for this device into its inbox, and acknowledges them; runs whenever
    /// the `msg` collection changes.
    pub async fn deliver(self: Arc<Self>) {
        let mut changes = self.store.subscribe();
        loop {
            self.collect();
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    fn collect(&self) {
        let me = self.trust.me();
        // Into the inbox first (one write for all), then acknowledged.
        let mut received = Vec::new();
        let mut to_ack = Vec::new();
        for record in self.store.live(b"m/") {
            let Some(value) = record.value.as_ref() else {
                continue;
            };
            if self.inbox.settled().contains(&record.signature[..]) {
                continue;
            }
            let Some(Key::Message { sender, id }) = parse_key(&record.key) else {
                continue;
            };
            let Ok(message) = ciborium::from_reader::<Message, _>(&value[..]) else {
                // Also the messages in the clear from before they were sealed.
                let key = String::from_utf8_lossy(&record.key);
                tracing::debug!(%key, "ignoring a record that is not a sealed message");
                self.inbox.settle(&record.signature);
                continue;
            };
            // The store's rule holds the author to the key; checked again, it costs nothing.
            if message.to != me.to_bytes() || record.author.as_slice() != sender.to_bytes() {
                // Carried for another: the same record never becomes this device's.
                self.inbox.settle(&record.signature);
                continue;
            }
            // Opened once: a message already in the inbox only needs its acknowledgement.
            if !self.inbox.contains(&sender, &id) {
                match open(&self.inbox.keypair, &record.author, &record.key, &message) {
                    Ok(contents) => received.push(Received {
                        id: id.clone(),
                        from: self.trust.shown(&sender),
                        from_peer_id: sender.to_base58(),
                        text: contents.text,
                        sent_ms: contents.sent_ms,
                        received_ms: clock::now_ms(),
                    }),
                    Err(error) => {
                        tracing::debug!(%error, id, "dropping a message that does not open");
                        self.inbox.settle(&record.signature);
                        continue;
                    }
                }
            }
            let ack = ack_key(&me, &sender, &id);
            if self.store.get(&ack).is_none() {
                to_ack.push((ack, record.expires, record.signature));
            } else {
                // In the inbox and acknowledged: delivered once, as it should be.
                self.inbox.settle(&record.signature);
            }
        }
        if !received.is_empty() {
            self.inbox.add(received);
        }
        let acks: Vec<_> = to_ack
            .into_iter()
            .filter_map(|(key, expires, signature)| {
                let ack = self.store.put(&key, Some(Vec::new()), expires).ok()?;
                self.inbox.settle(&signature);
                Some(ack)
            })
            .collect();
        if !acks.is_empty() {
            self.pushes.push(sync::MESSAGES, acks, None);
        }
    }

    /// Sends `text` to `to`: the message ID.
    pub fn send(&self, to: PeerId, text: &str) -> Result<String, MessageError> {
        if text.len() > MAX_TEXT {
            return Err(MessageError::TooLong);
        }
        let mut bytes = [0u8; 12];
        let _ = getrandom::fill(&mut bytes);
        let id = data_encoding::HEXLOWER.encode(&bytes);
        let me = self.trust.me();
        let key = message_key(&me, &id);
        let now = clock::now_ms();
        let contents = Contents {
            text: text.to_owned(),
            sent_ms: now,
        };
        let message = seal_message(&me, &to, &key, &contents)?;
        let mut value = Vec::new();
        ciborium::into_writer(&message, &mut value)
            .map_err(|e| MessageError::Encode(e.to_string()))?;
        let record = self.store.put(&key, Some(value), Some(now + KEEP_MS))?;
        self.pushes.push(sync::MESSAGES, vec![record], None);
        Ok(id)
    }

    /// Whether the recipient acknowledged this device's message `id`.
    pub fn delivered(&self, id: &str) -> bool {
        acknowledged(&self.store, &self.trust.me(), id)
    }
}

/// A message cannot be sent, or a received one cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("a message holds at most {MAX_TEXT} bytes")]
    TooLong,
    #[error(transparent)]
    Seal(#[from] seal::SealError),
    #[error("the sealed message is not a message: {0}")]
    Decode(String),
    #[error("cannot encode the message: {0}")]
    Encode(String),
    #[error(transparent)]
    Write(#[from] crate::replica::WriteError),
}

/// What a message's box is bound to: its sender and its record key (which names the sender
/// and the message ID), so that nobody can move the box into a record of its own or under
/// another ID.
fn prologue(author: &[u8], key: &[u8]) -> Vec<u8> {
    let mut prologue = Vec::with_capacity(DOMAIN.len() + 8 + author.len() + key.len());
    prologue.extend_from_slice(DOMAIN);
    // The length keeps author and key apart.
    prologue.extend_from_slice(&(author.len() as u64).to_be_bytes());
    prologue.extend_from_slice(author);
    prologue.extend_from_slice(key);
    prologue
}

/// Seals a message from `author` to `to`, to be written under `key`.
fn seal_message(
    author: &PeerId,
    to: &PeerId,
    key: &[u8],
    contents: &Contents,
) -> Result<Message, MessageError> {
    let mut plain = Vec::new();
    ciborium::into_writer(contents, &mut plain).map_err(|e| MessageError::Encode(e.to_string()))?;
    Ok(Message {
        to: to.to_bytes(),
        sealed: seal::seal(to, &prologue(&author.to_bytes(), key), &plain)?,
    })
}

/// Opens a message sealed to `keypair` by `author` under `key`.
fn open(
    keypair: &Keypair,
    author: &[u8],
    key: &[u8],
    message: &Message,
) -> Result<Contents, MessageError> {
    let plain = seal::open(keypair, &prologue(author, key), &message.sealed)?;
    let contents: Contents =
        ciborium::from_reader(&plain[..]).map_err(|e| MessageError::Decode(e.to_string()))?;
    if contents.text.len() > MAX_TEXT {
        return Err(MessageError::TooLong);
    }
    Ok(contents)
}

/// Whether `messages` holds the acknowledgement of `me`'s message `id` by the recipient the
/// message names: nobody else's counts.
fn acknowledged(messages: &crate::replica::Store, me: &PeerId, id: &str) -> bool {
    let Some(value) = messages.get(&message_key(me, id)).and_then(|r| r.value) else {
        return false;
    };
    let Some(to) = ciborium::from_reader::<Message, _>(&value[..])
        .ok()
        .and_then(|m| PeerId::from_bytes(&m.to).ok())
    else {
        return false;
    };
    messages.get(&ack_key(&to, me, id)).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;
    use std::fs;

    fn contents(text: &str) -> Contents {
        Contents {
            text: text.to_owned(),
            sent_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn only_the_recipient_reads_a_message_and_only_as_sent() {
        let alpha = Keypair::generate_ed25519();
        let bravo = Keypair::generate_ed25519();
        let charlie = Keypair::generate_ed25519();
        let [a, b, c] = [&alpha, &bravo, &charlie].map(|k| k.public().to_peer_id());
        let key = message_key(&a, "0123");
        let message = seal_message(&a, &b, &key, &contents("the plan")).unwrap();
        assert_eq!(message.to, b.to_bytes());
        let mut value = Vec::new();
        ciborium::into_writer(&message, &mut value).unwrap();
        assert!(!value.windows(8).any(|w| w == b"the plan"));

        let opened = open(&bravo, &a.to_bytes(), &key, &message).unwrap();
        assert_eq!(opened, contents("the plan"));
        // The carrier cannot read it, nor pass it off as its own, nor replay it under
        // another ID.
        assert!(open(&charlie, &a.to_bytes(), &key, &message).is_err());
        assert!(open(&bravo, &c.to_bytes(), &key, &message).is_err());
        assert!(open(&bravo, &a.to_bytes(), &message_key(&a, "4567"), &message).is_err());
    }

    #[test]
    fn the_longest_message_fits_the_collection() {
        let bravo = Keypair::generate_ed25519().public().to_peer_id();
        let author = Keypair::generate_ed25519().public().to_peer_id();
        // Four-byte characters: the most CBOR for the text's length.
        let text = "\u{1F600}".repeat(MAX_TEXT / 4);
        assert_eq!(text.len(), MAX_TEXT);
        let key = message_key(&author, &"f".repeat(24));
        let message = seal_message(&author, &bravo, &key, &contents(&text)).unwrap();
        let mut value = Vec::new();
        ciborium::into_writer(&message, &mut value).unwrap();
        // `MESSAGE_LIMITS` in node/mod.rs: 20 KiB per value.
        assert!(value.len() <= 20 * 1024, "{} bytes", value.len());
    }

    #[test]
    fn a_plaintext_message_from_before_sealing_is_not_a_message() {
        #[derive(Serialize)]
        struct Old {
            to: Vec<u8>,
            text: String,
            sent_ms: u64,
        }
        let old = Old {
            to: Keypair::generate_ed25519().public().to_peer_id().to_bytes(),
            text: "hello".into(),
            sent_ms: 1,
        };
        let mut value = Vec::new();
        ciborium::into_writer(&old, &mut value).unwrap();
        assert!(ciborium::from_reader::<Message, _>(&value[..]).is_err());
    }

    fn store(keypair: &Keypair) -> crate::replica::Store {
        let path = std::env::temp_dir().join(format!(
            "loopsy-inbox-{}-{}.cbor",
            std::process::id(),
            keypair.public().to_peer_id()
        ));
        let _ = fs::remove_file(&path);
        let limits = crate::replica::Limits {
            records: 100,
            value: 20 * 1024,
            per_author: 100,
        };
        crate::replica::Store::load(
            sync::MESSAGES,
            (None, None),
            path,
            keypair.clone(),
            limits,
            written_by_entitled,
        )
        .unwrap()
    }

    /// A message from `from` to `to`, as [`write`] puts it.
    fn message(from: &crate::replica::Store, sender: &PeerId, to: &PeerId, id: &str) -> ByteBuf {
        let key = message_key(sender, id);
        let sealed = seal_message(sender, to, &key, &contents("the plan")).unwrap();
        let mut value = Vec::new();
        ciborium::into_writer(&sealed, &mut value).unwrap();
        from.put(&key, Some(value), None).unwrap()
    }

    #[test]
    fn only_its_sender_writes_a_message_and_only_its_recipient_acknowledges_it() {
        use crate::sync::Collection;
        let [alpha, bravo, mallory, carrier] = [(); 4].map(|()| Keypair::generate_ed25519());
        let [a, b, m] = [&alpha, &bravo, &mallory].map(|k| k.public().to_peer_id());
        let [alpha_s, bravo_s, mallory_s, carrier_s] =
            [&alpha, &bravo, &mallory, &carrier].map(store);
        let id = "0123456789abcdef01234567";
        let sent = message(&alpha_s, &a, &b, id);
        assert_eq!(carrier_s.merge(vec![sent.clone()]).fresh.len(), 1);
        mallory_s.merge(vec![sent.clone()]);

        // Another member writes over the message, deletes it with a newer tombstone, or
        // acknowledges it for the recipient: each signed by its author, each refused.
        let key = message_key(&a, id);
        let overwrite = mallory_s
            .put(&key, Some(b"mine now".to_vec()), None)
            .unwrap();
        let tombstone = mallory_s.put(&key, None, None).unwrap();
        let forged_ack = mallory_s
            .put(&ack_key(&b, &a, id), Some(Vec::new()), None)
            .unwrap();
        // Keys of older versions name nobody: refused too.
        let old_message = mallory_s
            .put(format!("m/{id}").as_bytes(), Some(vec![1]), None)
            .unwrap();
        let old_ack = mallory_s
            .put(format!("a/{id}").as_bytes(), Some(Vec::new()), None)
            .unwrap();
        for store in [&carrier_s, &alpha_s, &bravo_s] {
            let merged = store.merge(vec![
                overwrite.clone(),
                tombstone.clone(),
                forged_ack.clone(),
                old_message.clone(),
                old_ack.clone(),
            ]);
            assert!(merged.fresh.is_empty(), "{:?}", merged.fresh);
            assert_eq!(merged.refused.len(), 5, "{:?}", merged.refused);
            assert!(merged.refused.iter().all(|r| r.contains("may not write")));
        }
        assert!(carrier_s.get(&key).is_some(), "the message is still there");
        assert!(!acknowledged(&alpha_s, &a, id));

        // An acknowledgement under mallory's own name is mallory's to write, but does not
        // say that bravo has the message.
        let own_ack = mallory_s
            .put(&ack_key(&m, &a, id), Some(Vec::new()), None)
            .unwrap();
        assert_eq!(alpha_s.merge(vec![own_ack]).fresh.len(), 1);
        assert!(!acknowledged(&alpha_s, &a, id));

        // The recipient's acknowledgement does; and the sender may delete its own message.
        bravo_s.merge(vec![sent]);
        let ack = bravo_s
            .put(&ack_key(&b, &a, id), Some(Vec::new()), None)
            .unwrap();
        assert_eq!(alpha_s.merge(vec![ack]).fresh.len(), 1);
        assert!(acknowledged(&alpha_s, &a, id));
        let withdrawn = alpha_s.put(&key, None, None).unwrap();
        assert_eq!(carrier_s.merge(vec![withdrawn]).fresh.len(), 1);
        assert!(carrier_s.get(&key).is_none());
    }

    #[test]
    fn a_carried_or_delivered_message_is_not_decoded_on_every_change() {
        use crate::sync::Collection;
        let [alpha, bravo, charlie] = [(); 3].map(|()| Keypair::generate_ed25519());
        let [a, b, c] = [&alpha, &bravo, &charlie].map(|k| k.public().to_peer_id());
        let alpha_s = store(&alpha);
        let mine = message(&alpha_s, &a, &b, "0123456789abcdef01234567");
        let theirs = message(&alpha_s, &a, &c, "76543210fedcba9876543210");
        let dir = crate::testing::scratch("inbox-settled");
        let trust = Trust::load(
            dir.join("trust.toml"),
            bravo.clone(),
            true,
            Default::default(),
        )
        .unwrap();
        let bravo_s = Arc::new(store(&bravo));
        bravo_s.merge(vec![mine.clone(), theirs.clone()]);
        let inbox = Inbox::load(dir.join("inbox.json"), bravo.clone()).unwrap();
        let (pushes, _queue) = sync::pushes();
        let messages = Messages::new(bravo_s.clone(), inbox, Arc::new(trust), pushes);

        messages.collect();
        assert_eq!(messages.inbox().len(), 1, "bravo's own message, delivered");
        let signature = |bytes: &ByteBuf| {
            ciborium::from_reader::<Record, _>(&bytes[..])
                .unwrap()
                .signature
                .into_vec()
        };
        let settled = messages.inbox.settled().clone();
        assert!(
            settled.contains(&signature(&theirs)),
            "a message carried for charlie is looked at once"
        );
        assert!(
            settled.contains(&signature(&mine)),
            "a message in the inbox and acknowledged is done with"
        );
        messages.collect();
        assert_eq!(messages.inbox().len(), 1);
        assert!(
            bravo_s
                .get(&ack_key(&b, &a, "0123456789abcdef01234567"))
                .is_some(),
            "acknowledged once"
        );
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn keys_name_their_writer_in_one_spelling() {
        let a = Keypair::generate_ed25519().public().to_peer_id();
        let b = Keypair::generate_ed25519().public().to_peer_id();
        let id = "00ff";
        assert_eq!(
            parse_key(&message_key(&a, id)),
            Some(Key::Message {
                sender: a,
                id: id.into()
            })
        );
        assert_eq!(
            parse_key(&ack_key(&b, &a, id)),
            Some(Key::Ack {
                recipient: b,
                sender: a,
                id: id.into()
            })
        );
        let a58 = a.to_base58();
        for bad in [
            format!("m/{a58}"),
            format!("m/{a58}/"),
            format!("m/{a58}/x/y"),
            format!("m/{a58}/../x"),
            format!("m/{a58}/{}", "f".repeat(MAX_ID + 1)),
            format!("m/x{a58}/00"),
            format!("a/{a58}/00"),
            format!("x/{a58}/00"),
            "m/00".to_owned(),
        ] {
            assert_eq!(parse_key(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn one_sender_cannot_push_the_others_out_of_the_inbox() {
        let message = |sender: &str, n: u64| Received {
            id: format!("{n:x}"),
            from: sender.into(),
            from_peer_id: sender.into(),
            text: String::new(),
            sent_ms: n,
            received_ms: n,
        };
        let mut messages = BTreeMap::new();
        messages.insert(slot("friend", "0"), message("friend", 0));
        for n in 1..=30 {
            messages.insert(slot("flood", &format!("{n:x}")), message("flood", n));
        }
        assert_eq!(trim_senders(&mut messages, 10), ["flood"]);
        assert_eq!(messages.len(), 11);
        assert!(
            messages.contains_key(&slot("friend", "0")),
            "the oldest, but not the flood's"
        );
        let kept: Vec<u64> = messages
            .values()
            .filter(|m| m.from == "flood")
            .map(|m| m.received_ms)
            .collect();
        assert_eq!(kept.iter().min(), Some(&21), "the flood's newest stay");
        assert!(trim_senders(&mut messages, 10).is_empty());
    }

    #[test]
    fn the_inbox_survives_concurrent_adds_and_a_write_cut_in_the_middle() {
        let keypair = Keypair::generate_ed25519();
        let path = std::env::temp_dir().join(format!(
            "loopsy-inbox-{}-{}.json",
            std::process::id(),
            keypair.public().to_peer_id()
        ));
        let inbox = Inbox::load(path.clone(), keypair.clone()).unwrap();
        let message = |sender: usize, n: usize| Received {
            id: format!("{n:x}"),
            from: format!("s{sender}"),
            from_peer_id: format!("s{sender}"),
            text: "x".repeat(1024),
            sent_ms: n as u64,
            received_ms: n as u64,
        };
        std::thread::scope(|scope| {
            for sender in 0..8 {
                let inbox = &inbox;
                scope.spawn(move || {
                    for n in 0..20 {
                        assert_eq!(inbox.add(vec![message(sender, n)]), 1);
                    }
                });
            }
        });
        // The same ID from another sender is another message.
        assert_eq!(inbox.add(vec![message(8, 0)]), 1);
        let again = Inbox::load(path.clone(), keypair.clone()).unwrap();
        assert_eq!(
            again.list().len(),
            161,
            "every message, whichever write came last"
        );

        // A write cut in the middle: the copy before the last message.
        let whole = fs::read(&path).unwrap();
        fs::write(&path, &whole[..whole.len() / 2]).unwrap();
        let torn = Inbox::load(path.clone(), keypair).expect("the previous copy");
        assert_eq!(torn.list().len(), 160);
        for suffix in ["", ".prev", ".corrupt"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let _ = fs::remove_file(name);
        }
    }
}
