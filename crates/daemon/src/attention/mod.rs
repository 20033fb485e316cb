//! Attention events through the mesh: the replicated `events` collection. Each host writes
//! its own events (their keys start with its peer ID, as the session registry's do, and
//! the collection's rule holds every author to that), so `loopsy events` on any device
//! shows those of every device. Like the registry it goes only to members holding
//! `sessions` here: an event names a session and says what its program printed.
//!
//! Bounded twice: an event expires an hour after it was raised (and is then purged
//! everywhere, leaving no tombstone), and a host keeps at most [`MAX_OWN`] live events of
//! its own; what it raises beyond that is dropped (logged), on top of the sessions' own
//! rate limit.

pub mod deliver;

use std::{collections::HashSet, sync::Arc};

use loopsy_mesh::PeerId;
use loopsy_wire::{
    attention::{Event, Kind, MAX_TEXT, MAX_TITLE, clean},
    control::{self, ErrorCode, MeshEvent, Response},
    session::MAX_NAME,
};
use tokio::sync::{mpsc, watch};

use crate::{
    clock,
    replica::{Limits, Store},
    session::{
        Reach, Sessions,
        attention::{Call, Raised},
        registry::{Wake, host_of, prefix},
    },
    sync,
    trust::Trust,
};

/// The collection's name on the wire.
pub const EVENTS: &str = "events";
/// How long an event lives.
pub const KEEP_MS: u64 = 3600 * 1000;
/// Live events a host keeps of its own.
pub const MAX_OWN: usize = 120;
/// What the collection holds: events of all devices.
pub const LIMITS: Limits = Limits {
    records: 4096,
    value: 2048,
    per_author: 256,
};

/// The collection's rule: a host writes only its own events, and each expires within
/// [`KEEP_MS`] of when it was written (so that no member can fill the collection for
/// longer than that).
pub fn written_by_host(record: &loopsy_wire::replica::Record, author: &PeerId) -> bool {
    let lives = record.value.is_none()
        || record
            .expires
            .is_some_and(|e| e <= record.clock.ms.saturating_add(KEEP_MS));
    lives && record.key.starts_with(&prefix(author))
}

/// This device's view of the mesh's events, and its way to raise its own.
pub struct Events {
    store: Arc<Store>,
    me: PeerId,
    name: String,
    trust: Arc<Trust>,
    pushes: sync::Pushes,
    sessions: Arc<Sessions>,
    registry: Wake,
}

impl Events {
    pub fn new(
        store: Arc<Store>,
        name: String,
        trust: Arc<Trust>,
        pushes: sync::Pushes,
        sessions: Arc<Sessions>,
        registry: Wake,
    ) -> Self {
        Self {
            me: trust.me(),
            store,
            name,
            trust,
            pushes,
            sessions,
            registry,
        }
    }

    /// Raises the sessions' signals as they come, until the sessions are gone.
    pub async fn run(self: Arc<Self>, mut raised: mpsc::Receiver<Raised>) {
        while let Some(raised) = raised.recv().await {
            // The session waits now: the registry says so.
            self.registry.publish_soon();
            let events = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                events.write(Some(raised.session), raised.name, raised.call)
            })
            .await;
        }
    }

    /// Writes an event of this device, and pushes it to the members.
    fn write(&self, session: Option<String>, session_name: Option<String>, signal: Call) {
        let now = clock::now_ms();
        let own = self.store.live(&prefix(&self.me));
        if own.len() >= MAX_OWN {
            tracing::warn!(
                kind = signal.kind.name(),
                "an attention event dropped: this device raised {MAX_OWN} in the last hour"
            );
            return;
        }
        let id = new_id(now);
        let event = Event {
            id: id.clone(),
            session,
            session_name,
            host: self.name.clone(),
            kind: signal.kind,
            title: signal.title,
            text: signal.text,
            time_ms: now,
        };
        let mut value = Vec::new();
        let _ = ciborium::into_writer(&event, &mut value);
        match self.store.put(
            &event_key(&self.me, now, &id),
            Some(value),
            Some(now + KEEP_MS),
        ) {
            Ok(record) => self.pushes.push(EVENTS, vec![record], None),
            Err(error) => tracing::warn!(%error, "an attention event was not recorded"),
        }
    }

    /// `loopsy notify`: an event of this device, for one of its sessions when `session`
    /// names one (which then waits, as if its program had asked).
    pub async fn notify(
        self: &Arc<Self>,
        session: Option<String>,
        title: Option<String>,
        text: String,
    ) -> Response {
        let title = title
            .map(|t| clean(&t, MAX_TITLE))
            .filter(|t| !t.is_empty());
        let text = Some(clean(&text, MAX_TEXT)).filter(|t| !t.is_empty());
        if title.is_none() && text.is_none() {
            return error(ErrorCode::InvalidArgument, "a notification needs a text");
        }
        let signal = Call {
            kind: Kind::Note,
            title,
            text,
        };
        if let Some(query) = session {
            return match self.sessions.resolve(&query, Reach::Every) {
                // Through the session: it waits, and its event goes out as its others do.
                Ok(found) => {
                    found.raise(signal);
                    Response::Done {
                        message: format!("notified for session {}", found.id()),
                    }
                }
                Err(why) => error(ErrorCode::NotFound, why.to_string()),
            };
        }
        let events = self.clone();
        let _ = tokio::task::spawn_blocking(move || events.write(None, None, signal)).await;
        Response::Done {
            message: "notified".into(),
        }
    }

    /// Every live event of the mesh from `since_ms` on, oldest first, and the keys seen.
    pub fn list(&self, since_ms: u64) -> (Vec<MeshEvent>, HashSet<Vec<u8>>) {
        let records = self.store.live(&[]);
        let keys = records.iter().map(|r| r.key.to_vec()).collect();
        let mut events: Vec<MeshEvent> = records
            .iter()
            .filter_map(|record| self.shown(record))
            .filter(|e| e.event.time_ms >= since_ms)
            .collect();
        events.sort_by_key(|e| e.event.time_ms);
        (events, keys)
    }

    /// The events not in `seen`, oldest first; adds them to it, and forgets those that
    /// expired (a key is never used again, and the node's delivery keeps `seen` for as
    /// long as it runs).
    pub fn new_since(&self, seen: &mut HashSet<Vec<u8>>) -> Vec<MeshEvent> {
        let records = self.store.live(&[]);
        let live: HashSet<&[u8]> = records.iter().map(|r| &r.key[..]).collect();
        seen.retain(|key| live.contains(&key[..]));
        let mut events: Vec<MeshEvent> = records
            .iter()
            .filter(|r| seen.insert(r.key.to_vec()))
            .filter_map(|r| self.shown(r))
            .collect();
        events.sort_by_key(|e| e.event.time_ms);
        events
    }

    /// Changes to the collection.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.store.subscribe()
    }

    /// A record as clients see it: the host named as this device knows it.
    fn shown(&self, record: &loopsy_wire::replica::Record) -> Option<MeshEvent> {
        let host = host_of(&record.key)?;
        let mut event: Event = ciborium::from_reader(&record.value.as_ref()?[..]).ok()?;
        // The name a host gives itself is only a claim: one this device does not know (no
        // longer a member, its events still carried by others) is shown by its peer ID, as
        // the registry shows its sessions, not as whichever member it says it is.
        event.host = if host == self.me {
            self.name.clone()
        } else {
            self.trust
                .name_of(&host)
                .unwrap_or_else(|| host.to_base58())
        };
        // Another host's texts are cleaned here too: they reach terminals, notifications and
        // webhook headers.
        event.title = event.title.map(|t| clean(&t, MAX_TITLE));
        event.text = event.text.map(|t| clean(&t, MAX_TEXT));
        event.session = event.session.map(|s| clean(&s, MAX_NAME));
        event.session_name = event.session_name.map(|s| clean(&s, MAX_NAME));
        event.id = clean(&event.id, MAX_NAME);
        // The time is the host's word: no later than its record's clock (which this device
        // bounded when the record came), nor than this device's clock plus the allowed
        // skew, so that no event is "the newest" for ever.
        let latest = record
            .clock
            .ms
            .min(clock::now_ms().saturating_add(clock::MAX_SKEW_MS));
        event.time_ms = event.time_ms.min(latest);
        Some(MeshEvent {
            time: clock::rfc3339_ms(event.time_ms),
            host_peer_id: host.to_base58(),
            event,
        })
    }
}

/// An event's key: the host's prefix, the time (so that a host's events sort by it), the ID.
fn event_key(host: &PeerId, time_ms: u64, id: &str) -> Vec<u8> {
    let mut key = prefix(host);
    key.extend_from_slice(&time_ms.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

fn new_id(now: u64) -> String {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    format!("{now:x}{}", data_encoding::HEXLOWER.encode(&bytes))
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(control::Error::new(code, message))
}

/// `loopsy events`: the events from `since_ms` (none of the past without it), then with
/// `follow` each new one as it arrives, until the client hangs up.
pub async fn stream(
    events: &Events,
    follow: bool,
    since_ms: Option<u64>,
    reply: &mut crate::control::Reply,
) {
    let mut changes = events.subscribe();
    changes.borrow_and_update();
    let (past, mut seen) = events.list(since_ms.unwrap_or(u64::MAX));
    let frame = Response::Events { events: past };
    if reply.send(&frame).await.is_err() || !follow {
        return;
    }
    loop {
        tokio::select! {
            _ = reply.closed() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                let fresh = events.new_since(&mut seen);
                if fresh.is_empty() {
                    continue;
                }
                if reply.send(&Response::Events { events: fresh }).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;
    use loopsy_wire::replica::{Clock, Record};
    use serde_bytes::ByteBuf;

    use super::*;
    use crate::{sync::Collection, testing};

    /// A device's events, as `keypair`'s device named `name` keeps them in `dir`.
    fn events(dir: &std::path::Path, keypair: &Keypair, name: &str) -> Events {
        let store = Store::load(
            EVENTS,
            (None, Some(crate::caps::Capability::Sessions)),
            dir.join(format!("{name}-events.cbor")),
            keypair.clone(),
            LIMITS,
            written_by_host,
        )
        .unwrap();
        let trust = Trust::load(
            dir.join(format!("{name}-trust.toml")),
            keypair.clone(),
            true,
            Default::default(),
        )
        .unwrap();
        let sessions = Sessions::load(dir.join(format!("{name}-sessions.json")));
        Events::new(
            Arc::new(store),
            name.into(),
            Arc::new(trust),
            sync::pushes().0,
            Arc::new(sessions),
            Wake::default(),
        )
    }

    #[test]
    fn what_was_seen_is_forgotten_once_it_expired() {
        let dir = testing::scratch("events-seen-expire");
        let here = events(&dir, &Keypair::generate_ed25519(), "here");
        let event = |id: &str, expires: u64| {
            let value = Event {
                id: id.into(),
                session: None,
                session_name: None,
                host: "here".into(),
                kind: Kind::Note,
                title: None,
                text: Some("hi".into()),
                time_ms: clock::now_ms(),
            };
            let mut bytes = Vec::new();
            ciborium::into_writer(&value, &mut bytes).unwrap();
            let key = event_key(&here.me, value.time_ms, id);
            here.store.put(&key, Some(bytes), Some(expires)).unwrap();
        };
        let mut seen = HashSet::new();
        event("brief", clock::now_ms() + 300);
        event("lasting", clock::now_ms() + KEEP_MS);
        assert_eq!(here.new_since(&mut seen).len(), 2);
        std::thread::sleep(std::time::Duration::from_millis(600));
        assert!(here.new_since(&mut seen).is_empty());
        assert_eq!(seen.len(), 1, "the expired event's key is forgotten");
    }

    #[test]
    fn an_unknown_host_is_shown_by_its_peer_id_not_the_name_it_claims() {
        let dir = testing::scratch("events-claimed-host");
        let (mine, theirs) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let here = events(&dir, &mine, "here");
        // A device this one does not know, calling itself by a member's name.
        let stranger = events(&dir, &theirs, "alpha");
        stranger.write(
            None,
            None,
            Call {
                kind: Kind::Note,
                title: None,
                text: Some("approve me".into()),
            },
        );
        let keys: Vec<Vec<u8>> = stranger
            .store
            .live(&[])
            .iter()
            .map(|r| r.key.to_vec())
            .collect();
        here.store.merge(stranger.store.records(&keys));
        let (shown, _) = here.list(0);
        assert_eq!(shown.len(), 1);
        let peer = theirs.public().to_peer_id().to_base58();
        assert_eq!(shown[0].host_peer_id, peer);
        assert_eq!(shown[0].event.host, peer, "not the name it claims");
    }

    #[test]
    fn an_event_dated_in_the_future_is_not_the_newest_for_ever() {
        let dir = testing::scratch("events-future");
        let (mine, theirs) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let here = events(&dir, &mine, "here");
        let there = events(&dir, &theirs, "there");
        // Its record is dated now (else refused), its event a day ahead.
        let now = clock::now_ms();
        let value = Event {
            id: "future".into(),
            session: None,
            session_name: None,
            host: "there".into(),
            kind: Kind::Note,
            title: None,
            text: Some("pinned".into()),
            time_ms: now + 24 * 3600 * 1000,
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(&value, &mut bytes).unwrap();
        let key = event_key(&there.me, now, "future");
        let record = there
            .store
            .put(&key, Some(bytes), Some(now + KEEP_MS))
            .unwrap();
        here.store.merge(vec![record]);
        std::thread::sleep(std::time::Duration::from_millis(5));
        here.write(
            None,
            None,
            Call {
                kind: Kind::Note,
                title: None,
                text: Some("later".into()),
            },
        );
        let (shown, _) = here.list(0);
        assert_eq!(shown.len(), 2);
        let future = shown.iter().find(|e| e.event.id == "future").unwrap();
        assert!(
            future.event.time_ms <= clock::now_ms() + clock::MAX_SKEW_MS,
            "clamped: {}",
            future.event.time_ms
        );
        assert_eq!(
            shown.last().unwrap().event.text.as_deref(),
            Some("later"),
            "the event raised last is the newest"
        );
    }

    fn record(author: &PeerId, expires: Option<u64>) -> Record {
        Record {
            key: ByteBuf::from(event_key(author, 1_000, "e1")),
            value: Some(ByteBuf::from(vec![1])),
            clock: Clock {
                ms: 1_000,
                ..Clock::default()
            },
            author: ByteBuf::from(author.to_bytes()),
            expires,
            signature: ByteBuf::new(),
        }
    }

    #[test]
    fn a_host_writes_only_its_own_events_and_none_for_longer_than_an_hour() {
        let (host, other) = (PeerId::random(), PeerId::random());
        assert!(written_by_host(
            &record(&host, Some(1_000 + KEEP_MS)),
            &host
        ));
        assert!(!written_by_host(
            &record(&host, Some(1_000 + KEEP_MS)),
            &other
        ));
        assert!(!written_by_host(
            &record(&host, Some(1_001 + KEEP_MS)),
            &host
        ));
        assert!(!written_by_host(&record(&host, None), &host), "for ever");
    }
}
