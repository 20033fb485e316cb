//! Messages between devices (and the agents on them), over the replicated `msg` collection:
//! a message is a record written by its sender, so every member keeps it until it expires
//! and it reaches its recipient whenever a chain of members does. The recipient moves it
//! into its inbox once (the inbox is keyed by message ID) and answers with an
//! acknowledgement record, which travels back the same way.

use std::{
    collections::BTreeMap,
    fs, io,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
};

use loopsy_mesh::PeerId;
use serde::{Deserialize, Serialize};

use crate::{clock, fsutil, node::Node, sync};

/// How long a message (and its acknowledgement) is kept by the members in between.
pub const KEEP_MS: u64 = 30 * 24 * 3600 * 1000;
/// Longest message.
pub const MAX_TEXT: usize = 16 * 1024;
/// Messages an inbox keeps (the oldest go first).
const MAX_INBOX: usize = 10_000;

/// A message as its record holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub to: Vec<u8>,
    pub text: String,
    pub sent_ms: u64,
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
    messages: Mutex<BTreeMap<String, Received>>,
}

impl Inbox {
    pub fn load(path: PathBuf) -> io::Result<Self> {
        let messages: Vec<Received> = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::other(format!("{} is not an inbox: {e}", path.display()))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            messages: Mutex::new(messages.into_iter().map(|m| (m.id.clone(), m)).collect()),
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
        let Ok(message) = ciborium::from_reader::<Message, _>(&value[..]) else {
            continue;
        };
        if message.to != me {
            continue;
        }
        let id = String::from_utf8_lossy(&record.key[2..]).into_owned();
        let from = PeerId::from_bytes(&record.author)
            .map(|p| node.peer_name(&p).unwrap_or_else(|| p.to_base58()))
            .unwrap_or_default();
        let received = Received {
            id: id.clone(),
            from,
            text: message.text,
            sent_ms: message.sent_ms,
            received_ms: clock::now_ms(),
        };
        let fresh = node.inbox.add(received);
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

/// Sends `text` to `to`: the message ID.
pub fn send(node: &Arc<Node>, to: PeerId, text: &str) -> Result<String, String> {
    if text.len() > MAX_TEXT {
        return Err(format!("a message holds at most {MAX_TEXT} bytes"));
    }
    let mut bytes = [0u8; 12];
    let _ = getrandom::fill(&mut bytes);
    let id = data_encoding::HEXLOWER.encode(&bytes);
    let now = clock::now_ms();
    let message = Message {
        to: to.to_bytes(),
        text: text.to_owned(),
        sent_ms: now,
    };
    let mut value = Vec::new();
    let _ = ciborium::into_writer(&message, &mut value);
    let record = node
        .messages
        .put(&message_key(&id), Some(value), Some(now + KEEP_MS))
        .map_err(|e| e.to_string())?;
    sync::push(node, sync::MESSAGES, vec![record], None);
    Ok(id)
}

/// Whether the recipient acknowledged the message.
pub fn delivered(node: &Node, id: &str) -> bool {
    node.messages.get(&ack_key(id)).is_some()
}
