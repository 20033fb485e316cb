//! The session registry: every device's sessions, replicated to every member, so that
//! `session ls` on any device lists them all, including those of hosts that are offline.
//! Each host is the only writer of its own records (their keys start with its peer ID,
//! and the signature proves the author); it publishes a record when a session starts,
//! changes or ends, and deletes it when the session is forgotten.

use std::{collections::HashMap, sync::Arc};

use loopsy_mesh::{Mesh, PeerId};
use loopsy_wire::{control::HostedSession, replica::Record, session::Info};
use tokio::sync::Notify;

use super::Sessions;
use crate::{clock, dial::connected_members, replica::Store, sync, trust::Trust};

/// A session's key: the host's peer ID (length first), then the session's ID.
pub(crate) fn key(host: &PeerId, id: &str) -> Vec<u8> {
    let mut key = prefix(host);
    key.extend_from_slice(id.as_bytes());
    key
}

pub(crate) fn prefix(host: &PeerId) -> Vec<u8> {
    let host = host.to_bytes();
    let mut key = Vec::with_capacity(host.len() + 16);
    key.push(host.len() as u8);
    key.extend_from_slice(&host);
    key
}

/// The host of a key, if it is one.
pub(crate) fn host_of(key: &[u8]) -> Option<PeerId> {
    let (&len, rest) = key.split_first()?;
    PeerId::from_bytes(rest.get(..usize::from(len))?).ok()
}

/// The registry's rule: a host writes only its own sessions.
pub fn written_by_host(record: &Record, author: &PeerId) -> bool {
    record.key.starts_with(&prefix(author))
}

/// The registry: the replicated store of every device's sessions, and this device's
/// sessions to publish in it.
pub struct Registry {
    store: Arc<Store>,
    sessions: Arc<Sessions>,
    me: PeerId,
    /// This device's name.
    name: String,
    trust: Arc<Trust>,
    mesh: Mesh,
    pushes: sync::Pushes,
    wake: Wake,
}

/// Asks the registry to publish this device's sessions soon: what the session service
/// holds of the registry.
#[derive(Debug, Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    pub fn publish_soon(&self) {
        self.0.notify_one();
    }
}

impl Registry {
    pub fn new(
        store: Arc<Store>,
        sessions: Arc<Sessions>,
        name: String,
        trust: Arc<Trust>,
        mesh: Mesh,
        pushes: sync::Pushes,
    ) -> Self {
        Self {
            store,
            sessions,
            me: mesh.peer_id(),
            name,
            trust,
            mesh,
            pushes,
            wake: Wake::default(),
        }
    }

    /// Brings this device's records in line with its sessions, and pushes what changed.
    pub fn publish(&self) {
        let me = self.me;
        let mut held: HashMap<Vec<u8>, Record> = self
            .store
            .live(&prefix(&me))
            .into_iter()
            .map(|r| (r.key.to_vec(), r))
            .collect();
        let mut changed = Vec::new();
        // Every session, whoever started it: who may use which is decided on this device.
        for info in self.sessions.list(super::Reach::Every) {
            let key = key(&me, &info.id);
            let mut value = Vec::new();
            let _ = ciborium::into_writer(&info, &mut value);
            let same = held
                .remove(&key)
                .is_some_and(|r| r.value.as_ref().is_some_and(|v| v[..] == value[..]));
            if !same && let Ok(record) = self.store.put(&key, Some(value), None) {
                changed.push(record);
            }
        }
        // Sessions this device no longer lists.
        for key in held.into_keys() {
            if let Ok(record) = self.store.put(&key, None, None) {
                changed.push(record);
            }
        }
        if !changed.is_empty() {
            self.pushes.push(sync::SESSIONS, changed, None);
        }
    }

    /// Asks for a [`Self::publish`] soon, by [`Self::run`], not waiting.
    pub fn publish_soon(&self) {
        self.wake.publish_soon();
    }

    /// The handle that asks for a publication.
    pub fn wake(&self) -> Wake {
        self.wake.clone()
    }

    /// [`Self::publish`] off the async threads (it writes the registry to disk).
    pub async fn publish_now(self: &Arc<Self>) {
        let registry = self.clone();
        let _ = tokio::task::spawn_blocking(move || registry.publish()).await;
    }

    /// Publishes whenever asked to, requests that come while it runs taken as one.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.wake.0.notified().await;
            self.publish_now().await;
        }
    }

    /// Every session in the mesh, newest first, with whether its host is reachable now and
    /// when this device last heard from it.
    pub async fn hosted(&self) -> Vec<HostedSession> {
        let me = self.me;
        let online: Vec<PeerId> = connected_members(&self.mesh, &self.trust).await;
        let records = self.store.live(&[]);
        let mut heard: HashMap<PeerId, u64> = HashMap::new();
        for record in &records {
            if let Some(host) = host_of(&record.key) {
                let at = heard.entry(host).or_default();
                *at = (*at).max(record.clock.ms);
            }
        }
        let mut sessions: Vec<HostedSession> = records
            .iter()
            .filter_map(|record| {
                let host = host_of(&record.key)?;
                let info: Info = ciborium::from_reader(&record.value.as_ref()?[..]).ok()?;
                let host_online = host == me || online.contains(&host);
                Some(HostedSession {
                    host: if host == me {
                        self.name.clone()
                    } else {
                        self.trust
                            .name_of(&host)
                            .unwrap_or_else(|| host.to_base58())
                    },
                    host_peer_id: host.to_base58(),
                    host_online,
                    last_seen: (!host_online)
                        .then(|| heard.get(&host).map(|ms| clock::rfc3339_ms(*ms)))
                        .flatten(),
                    session: info,
                })
            })
            .collect();
        sessions.sort_by_key(|s| std::cmp::Reverse(s.session.created));
        sessions
    }
}
