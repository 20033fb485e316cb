//! Messages between devices (and the agents on them), over the replicated `msg` collection:
//! a message is a record written by its sender, so every member keeps it until it expires
//! and it reaches its recipient whenever a chain of members does. The recipient moves it
//! into its inbox once (the inbox is keyed by message ID) and answers with an
//! acknowledgement record, which travels back the same way.
//!
//! The members in between must carry a message without reading it: its text is sealed to
//! the recipient ([`crate::seal`]), bound to the sender and the message ID. A carrier sees
//! who sent it (the record's author), to whom, how big and when.

use std::{
    collections::{BTreeMap, HashSet},
    fs, io,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
};

use libp2p::identity::Keypair;
use loopsy_mesh::PeerId;
use serde::{Deserialize, Serialize};

use crate::{clock, fsutil, node::Node, seal, sync};

/// How long a message (and its acknowledgement) is kept by the members in between.
pub const KEEP_MS: u64 = 30 * 24 * 3600 * 1000;
/// Longest message.
pub const MAX_TEXT: usize = 16 * 1024;
/// Messages an inbox keeps (the oldest go first).
const MAX_INBOX: usize = 10_000;
/// Unreadable records remembered (as many as the collection holds).
const MAX_UNREADABLE: usize = 10_000;
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
    pub text: String,
    pub sent_ms: u64,
    pub received_ms: u64,
}

/// Keys in the `msg` collection.
pub fn message_key(id: &str) -> Vec<u8> {
    format!("m/{id}").into_bytes()
}

pub fn ack_key(id: &str) -> Vec<u8> {
    format!("a/{id}").into_bytes()
}

/// This device's inbox, kept in a file.
pub struct Inbox {
    path: PathBuf,
    /// This device's key, which opens the messages sealed to it.
    keypair: Keypair,
    messages: Mutex<BTreeMap<String, Received>>,
    /// Signatures of the records that did not decode or open here: tried once, not on
    /// every change of the collection.
    unreadable: Mutex<HashSet<Vec<u8>>>,
}

impl Inbox {
    pub fn load(path: PathBuf, keypair: Keypair) -> io::Result<Self> {
        let messages: Vec<Received> = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::other(format!("{} is not an inbox: {e}", path.display()))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            keypair,
            messages: Mutex::new(messages.into_iter().map(|m| (m.id.clone(), m)).collect()),
            unreadable: Mutex::default(),
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

    fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    fn unreadable(&self) -> MutexGuard<'_, HashSet<Vec<u8>>> {
        self.unreadable.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers a record (by its signature) that did not decode or open here.
    fn mark_unreadable(&self, signature: &[u8]) {
        let mut unreadable = self.unreadable();
        if unreadable.len() >= MAX_UNREADABLE {
            unreadable.clear();
        }
        unreadable.insert(signature.to_vec());
    }

    /// Adds a message unless it is there already; whether it was new.
    fn add(&self, message: Received) -> bool {
        let all = {
            let mut messages = self.lock();
            if messages.contains_key(&message.id) {
                return false;
            }
            messages.insert(message.id.clone(), message);
            if messages.len() > MAX_INBOX {
                let oldest = messages
                    .values()
                    .min_by_key(|m| m.received_ms)
                    .map(|m| m.id.clone());
                if let Some(oldest) = oldest {
                    messages.remove(&oldest);
                }
            }
            messages.values().cloned().collect::<Vec<_>>()
        };
        if let Ok(bytes) = serde_json::to_vec(&all)
            && let Err(error) = fsutil::write_atomic(&self.path, &bytes, 0o600)
        {
            tracing::warn!(%error, "cannot save the inbox");
        }
        true
    }
}

/// Moves messages for this device into its inbox, and acknowledges them; runs whenever
/// the `msg` collection changes.
pub async fn deliver(node: Arc<Node>) {
    let mut changes = node.messages.subscribe();
    loop {
        collect(&node);
        if changes.changed().await.is_err() {
            return;
        }
    }
}

fn collect(node: &Arc<Node>) {
    let me = node.mesh.peer_id().to_bytes();
    let mut acks = Vec::new();
    for record in node.messages.live(b"m/") {
        let Some(value) = record.value.as_ref() else {
            continue;
        };
        if node.inbox.unreadable().contains(&record.signature[..]) {
            continue;
        }
        let Ok(message) = ciborium::from_reader::<Message, _>(&value[..]) else {
            // Also the messages in the clear from before they were sealed.
            let key = String::from_utf8_lossy(&record.key);
            tracing::debug!(%key, "ignoring a record that is not a sealed message");
            node.inbox.mark_unreadable(&record.signature);
            continue;
        };
        if message.to != me {
            continue;
        }
        let id = String::from_utf8_lossy(&record.key[2..]).into_owned();
        // Opened once: a message already in the inbox only needs its acknowledgement.
        let fresh = !node.inbox.contains(&id)
            && match open(&node.inbox.keypair, &record.author, &record.key, &message) {
                Ok(contents) => {
                    let from = PeerId::from_bytes(&record.author)
                        .map(|p| node.peer_name(&p).unwrap_or_else(|| p.to_base58()))
                        .unwrap_or_default();
                    node.inbox.add(Received {
                        id: id.clone(),
                        from,
                        text: contents.text,
                        sent_ms: contents.sent_ms,
                        received_ms: clock::now_ms(),
                    })
                }
                Err(error) => {
                    tracing::debug!(%error, id, "dropping a message that does not open");
                    node.inbox.mark_unreadable(&record.signature);
                    continue;
                }
            };
        if (fresh || node.messages.get(&ack_key(&id)).is_none())
            && let Ok(ack) = node
                .messages
                .put(&ack_key(&id), Some(Vec::new()), record.expires)
        {
            acks.push(ack);
        }
    }
    if !acks.is_empty() {
        sync::push(node, sync::MESSAGES, acks, None);
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

/// What a message's box is bound to: its sender and its record key (the message ID), so
/// that nobody can move the box into a record of its own or under another ID.
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

/// Sends `text` to `to`: the message ID. (The error is a string for the control API.)
pub fn send(node: &Arc<Node>, to: PeerId, text: &str) -> Result<String, String> {
    write(node, to, text).map_err(|e| e.to_string())
}

fn write(node: &Arc<Node>, to: PeerId, text: &str) -> Result<String, MessageError> {
    if text.len() > MAX_TEXT {
        return Err(MessageError::TooLong);
    }
    let mut bytes = [0u8; 12];
    let _ = getrandom::fill(&mut bytes);
    let id = data_encoding::HEXLOWER.encode(&bytes);
    let key = message_key(&id);
    let now = clock::now_ms();
    let contents = Contents {
        text: text.to_owned(),
        sent_ms: now,
    };
    let message = seal_message(&node.mesh.peer_id(), &to, &key, &contents)?;
    let mut value = Vec::new();
    ciborium::into_writer(&message, &mut value).map_err(|e| MessageError::Encode(e.to_string()))?;
    let record = node.messages.put(&key, Some(value), Some(now + KEEP_MS))?;
    sync::push(node, sync::MESSAGES, vec![record], None);
    Ok(id)
}

/// Whether the recipient acknowledged the message.
pub fn delivered(node: &Node, id: &str) -> bool {
    node.messages.get(&ack_key(id)).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let key = message_key("0123");
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
        assert!(open(&bravo, &a.to_bytes(), &message_key("4567"), &message).is_err());
    }

    #[test]
    fn the_longest_message_fits_the_collection() {
        let bravo = Keypair::generate_ed25519().public().to_peer_id();
        let author = Keypair::generate_ed25519().public().to_peer_id();
        // Four-byte characters: the most CBOR for the text's length.
        let text = "\u{1F600}".repeat(MAX_TEXT / 4);
        assert_eq!(text.len(), MAX_TEXT);
        let key = message_key(&"f".repeat(24));
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
}
