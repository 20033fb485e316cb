//! Trust: which devices are members of this device's mesh, what each may do here, and the
//! records that replicate membership between members.
//!
//! [`Trust`] is shared by the daemon's tasks. Every change is saved to `trust.toml` before
//! it takes effect, and announced on a watch channel so that connections to revoked devices
//! are cut and new members are dialled. (Records merged from members are written just after
//! the lock is released, in the order of the changes; they are announced once written.)

pub mod members;
pub mod store;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Mutex, MutexGuard},
};

use loopsy_mesh::{Keypair, Multiaddr, PeerId};
use loopsy_wire::member::Record;
use tokio::sync::watch;

pub use members::{InvalidRecord, Member, Via};
pub use store::PeerSettings;

use crate::{
    caps::{self, Caps},
    fsutil::{self, StateFile},
};

/// The trust store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "{path} is not a valid trust store: {reason}; fix or restore it (moving it away \
         forgets every paired device)"
    )]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot save the trust store {path}: {source}")]
    Save {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the member list is full")]
    Full,
}

/// A device the trust store lists, with this device's settings for it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub member: Member,
    /// What this device grants it.
    pub grants: Caps,
    pub settings: PeerSettings,
}

/// What a reload changed about members, one line each.
fn reload_changes(
    before: &BTreeMap<PeerId, Member>,
    after: &BTreeMap<PeerId, Member>,
    old: &BTreeMap<PeerId, PeerSettings>,
    new: &BTreeMap<PeerId, PeerSettings>,
) -> Vec<String> {
    let grants = |caps: &Caps| caps::names(caps).join(",");
    let mut changes = Vec::new();
    for (peer, was) in before {
        match after.get(peer) {
            None => changes.push(format!("{} ({peer}) is no longer a member", was.name)),
            Some(now) if now.grants != was.grants => changes.push(format!(
                "{} may now do [{}] (was [{}])",
                now.name,
                grants(&now.grants),
                grants(&was.grants)
            )),
            Some(now) if now.name != was.name => {
                changes.push(format!("{} ({peer}) is now called {}", was.name, now.name))
            }
            Some(_) => {}
        }
    }
    for (peer, now) in after.iter().filter(|(p, _)| !before.contains_key(p)) {
        changes.push(format!("{} ({peer}) is a member again", now.name));
    }
    let peers: std::collections::BTreeSet<&PeerId> = old.keys().chain(new.keys()).collect();
    let policies = |s: Option<&PeerSettings>| s.map(|s| (s.exec.clone(), s.files.clone()));
    for peer in peers {
        if policies(old.get(peer)) != policies(new.get(peer)) {
            let name = after.get(peer).or(before.get(peer)).map(|m| m.name.clone());
            changes.push(format!(
                "policies of {} changed",
                name.unwrap_or_else(|| peer.to_string())
            ));
        }
    }
    changes
}

/// A peer name that does not pick one member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no paired device is called `{0}`; see `loopsy trust ls`")]
    NotFound(String),
    #[error("`{0}` matches several paired devices: {1}; use more of the peer ID")]
    Ambiguous(String, String),
}

struct State {
    members: members::Members,
    /// This device's settings per peer, kept after a revocation so that pairing the device
    /// again restores them (unless the new pairing says otherwise).
    settings: BTreeMap<PeerId, PeerSettings>,
}

/// A member's own policies here, over the config's (`trust set` writes them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies {
    pub exec: Option<crate::exec::policy::Overrides>,
    pub files: Option<crate::transfer::policy::Overrides>,
}

/// The trust store of a running node.
pub struct Trust {
    keypair: Keypair,
    file: StateFile,
    state: Mutex<State>,
    changes: watch::Sender<u64>,
}

impl Trust {
    /// Loads `trust.toml` (an empty store when there is none).
    pub fn load(
        path: PathBuf,
        keypair: Keypair,
        accept_introductions: bool,
        defaults: Caps,
    ) -> Result<Self, TrustError> {
        let invalid = |reason: String| TrustError::Invalid {
            path: path.clone(),
            reason,
        };
        let file = StateFile::new(path.clone(), 0o600);
        let stored = store::load(&file).map_err(|e| invalid(e.to_string()))?;
        let me = keypair.public().to_peer_id();
        let mut members = members::Members::new(me, accept_introductions, defaults);
        let mut settings = BTreeMap::new();
        for peer in stored.peers {
            let id = peer
                .peer_id
                .parse::<PeerId>()
                .map_err(|_| invalid(format!("`{}` is not a peer ID", peer.peer_id)))?;
            if let Some(allow) = &peer.allow {
                let chosen = caps::parse(allow).map_err(|e| invalid(e.to_string()))?;
                members.choose(id, Some(chosen));
            }
            if let Some(name) = &peer.name {
                members.alias(id, Some(loopsy_mesh::sanitize_name(name)));
            }
            settings.insert(id, peer);
        }
        members
            .load(stored.records)
            .map_err(|e| invalid(e.to_string()))?;
        let trust = Self {
            keypair,
            file,
            state: Mutex::new(State { members, settings }),
            changes: watch::channel(0).0,
        };
        // Records this device wrote while its clock ran ahead would be refused everywhere.
        let mut state = trust.lock();
        let redated = state.members.redate_own(&trust.keypair);
        if !redated.is_empty() {
            tracing::warn!(
                count = redated.len(),
                "re-dated member records written while this device's clock ran ahead"
            );
            trust.save(&state)?;
        }
        drop(state);
        Ok(trust)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn me(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    /// Bumped on every change of the trusted set or of a grant.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn is_member(&self, peer: &PeerId) -> bool {
        self.lock().members.is_trusted(peer)
    }

    pub fn member(&self, peer: &PeerId) -> Option<Member> {
        self.lock().members.trusted().get(peer).cloned()
    }

    /// What `peer` may do here; `None` when it is not a member.
    pub fn grants(&self, peer: &PeerId) -> Option<Caps> {
        self.lock()
            .members
            .trusted()
            .get(peer)
            .map(|m| m.grants.clone())
    }

    /// What this device chose to grant `peer` itself (kept after a revocation), if anything.
    pub fn chosen(&self, peer: &PeerId) -> Option<Caps> {
        self.lock()
            .settings
            .get(peer)
            .and_then(|s| s.allow.as_deref())
            .map(caps::parse_known)
    }

    /// What `peer` said it grants this device when they paired, if they paired directly.
    pub fn they_allow(&self, peer: &PeerId) -> Option<Vec<String>> {
        self.lock()
            .settings
            .get(peer)
            .and_then(|s| s.they_allow.clone())
    }

    /// A member's name, for logs.
    pub fn name_of(&self, peer: &PeerId) -> Option<String> {
        self.lock()
            .members
            .trusted()
            .get(peer)
            .map(|m| m.name.clone())
    }

    /// A member's name, or else the peer ID: how a peer is shown to the user and in logs.
    pub fn shown(&self, peer: &PeerId) -> String {
        self.name_of(peer).unwrap_or_else(|| peer.to_base58())
    }

    /// A member's own exec and file policies.
    pub fn policies(&self, peer: &PeerId) -> Policies {
        let state = self.lock();
        let settings = state.settings.get(peer);
        Policies {
            exec: settings.and_then(|s| s.exec.clone()),
            files: settings.and_then(|s| s.files.clone()),
        }
    }

    /// A member's changes to the exec policy.
    pub fn exec_overrides(&self, peer: &PeerId) -> Option<crate::exec::policy::Overrides> {
        self.lock().settings.get(peer).and_then(|s| s.exec.clone())
    }

    pub fn files_overrides(&self, peer: &PeerId) -> Option<crate::transfer::policy::Overrides> {
        self.lock().settings.get(peer).and_then(|s| s.files.clone())
    }

    /// Every member, with its grants and settings.
    pub fn list(&self) -> Vec<Listed> {
        let state = self.lock();
        state
            .members
            .trusted()
            .values()
            .map(|member| Listed {
                member: member.clone(),
                grants: member.grants.clone(),
                settings: state
                    .settings
                    .get(&member.peer_id)
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Re-reads this device's own settings per peer from `trust.toml` (edited by hand,
    /// say) and takes `defaults` and `accept_introductions` from a reloaded config: what a
    /// member may do changes for the next stream it opens, and streams already open stay.
    /// Records are not re-read: they are this node's to write, and it holds the newest.
    /// Returns what changed, in words; a file that does not parse changes nothing.
    pub fn reload(
        &self,
        accept_introductions: bool,
        defaults: Caps,
    ) -> Result<Vec<String>, TrustError> {
        let path = self.file.path().to_owned();
        let invalid = |reason: String| TrustError::Invalid {
            path: path.clone(),
            reason,
        };
        let stored = store::load(&self.file).map_err(|e| invalid(e.to_string()))?;
        let mut settings = BTreeMap::new();
        for peer in stored.peers {
            let id = peer
                .peer_id
                .parse::<PeerId>()
                .map_err(|_| invalid(format!("`{}` is not a peer ID", peer.peer_id)))?;
            if let Some(allow) = &peer.allow {
                caps::parse(allow).map_err(|e| invalid(e.to_string()))?;
            }
            settings.insert(id, peer);
        }
        let mut state = self.lock();
        let before = state.members.trusted().clone();
        let old_settings = std::mem::take(&mut state.settings);
        state.members.configure(accept_introductions, defaults);
        for peer in old_settings.keys().filter(|p| !settings.contains_key(p)) {
            state.members.choose(*peer, None);
            state.members.alias(*peer, None);
        }
        for (peer, new) in &settings {
            let chosen = new.allow.as_deref().map(caps::parse_known);
            state.members.choose(*peer, chosen);
            state.members.alias(
                *peer,
                new.name.clone().map(|n| loopsy_mesh::sanitize_name(&n)),
            );
        }
        let changes = reload_changes(&before, state.members.trusted(), &old_settings, &settings);
        state.settings = settings;
        drop(state);
        if !changes.is_empty() {
            self.changed();
        }
        Ok(changes)
    }

    /// Trusts `peer` directly (by pairing or `trust add`) and returns the record to spread.
    /// What `settings` leaves unsaid (grants, policies) is kept from an earlier pairing of
    /// the same device, revoked since.
    pub fn admit(
        &self,
        peer: PeerId,
        name: &str,
        addrs: &[Multiaddr],
        mut settings: PeerSettings,
    ) -> Result<Record, TrustError> {
        let mut state = self.lock();
        if let Some(old) = state.settings.get(&peer) {
            settings.name = settings.name.or_else(|| old.name.clone());
            settings.allow = settings.allow.or_else(|| old.allow.clone());
            settings.exec = settings.exec.or_else(|| old.exec.clone());
            settings.files = settings.files.or_else(|| old.files.clone());
        }
        let chosen = settings.allow.as_deref().map(caps::parse_known);
        state.members.choose(peer, chosen.clone());
        state.members.alias(peer, settings.name.clone());
        let allow = chosen.unwrap_or_else(|| state.members.defaults().clone());
        let record = state
            .members
            .write(&self.keypair, peer, name, addrs, false, Some(&allow));
        state.settings.insert(peer, settings);
        self.save(&state)?;
        drop(state);
        self.changed();
        Ok(record)
    }

    /// Changes what this device knows of the member `peer`: the name it goes by here, more
    /// addresses (first), what it may do here. Returns this device's record about it to
    /// spread, when addresses or grants changed (they travel in it).
    pub fn set(
        &self,
        peer: PeerId,
        name: Option<String>,
        addrs: &[Multiaddr],
        allow: Option<Caps>,
    ) -> Result<Option<Record>, TrustError> {
        let mut state = self.lock();
        let settings = state.settings.entry(peer).or_insert_with(|| PeerSettings {
            peer_id: peer.to_base58(),
            ..PeerSettings::default()
        });
        if let Some(name) = &name {
            settings.name = Some(name.clone());
        }
        if let Some(allow) = &allow {
            settings.allow = Some(caps::names(allow));
        }
        if name.is_some() {
            state.members.alias(peer, name);
        }
        let mut record = None;
        if allow.is_some() || !addrs.is_empty() {
            if allow.is_some() {
                state.members.choose(peer, allow);
            }
            let mine = state
                .members
                .get(&members::key_of(&peer, &self.me()))
                .cloned();
            let mut all: Vec<Multiaddr> = addrs.to_vec();
            for addr in mine.iter().flat_map(|r| r.addrs.iter()) {
                if let Ok(addr) = Multiaddr::try_from(addr.to_vec())
                    && !all.contains(&addr)
                {
                    all.push(addr);
                }
            }
            let member = state.members.trusted().get(&peer).cloned();
            let label = member.as_ref().map(|m| m.name.clone()).unwrap_or_default();
            let grants = member.map(|m| m.grants).unwrap_or_default();
            record =
                Some(
                    state
                        .members
                        .write(&self.keypair, peer, &label, &all, false, Some(&grants)),
                );
        }
        self.save(&state)?;
        drop(state);
        self.changed();
        Ok(record)
    }

    /// Revokes `peer` mesh-wide and returns the record to spread, with the devices that
    /// are no longer trusted here because only `peer` vouched for them.
    pub fn revoke(&self, peer: PeerId) -> Result<(Record, Vec<Member>), TrustError> {
        let mut state = self.lock();
        let before = state.members.trusted().clone();
        let name = before
            .get(&peer)
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let record = state
            .members
            .write(&self.keypair, peer, &name, &[], true, None);
        let dropped = before
            .into_values()
            .filter(|m| m.peer_id != peer && !state.members.is_trusted(&m.peer_id))
            .collect();
        self.save(&state)?;
        drop(state);
        self.changed();
        Ok((record, dropped))
    }

    /// Updates this device's record about itself when its name or addresses changed.
    pub fn describe_self(
        &self,
        name: &str,
        addrs: &[Multiaddr],
    ) -> Result<Option<Record>, TrustError> {
        let me = self.me();
        let mut state = self.lock();
        let key = members::key_of(&me, &me);
        let current = state.members.get(&key);
        let wanted: Vec<Vec<u8>> = addrs.iter().map(|a| a.to_vec()).collect();
        let same = current.is_some_and(|r| {
            r.name == name && r.addrs.iter().map(|a| a.to_vec()).collect::<Vec<_>>() == wanted
        });
        if same {
            return Ok(None);
        }
        let record = state
            .members
            .write(&self.keypair, me, name, addrs, false, None);
        self.save(&state)?;
        Ok(Some(record))
    }

    /// Merges records from a member; returns those that were new, to pass on, and why the
    /// others were refused. Not on an async worker's time: thousands of records take a while.
    pub fn merge(&self, records: Vec<Record>) -> (Vec<Record>, Vec<InvalidRecord>) {
        fsutil::blocking(|| self.merge_now(records))
    }

    fn merge_now(&self, records: Vec<Record>) -> (Vec<Record>, Vec<InvalidRecord>) {
        let mut state = self.lock();
        let before = state.members.trusted().clone();
        let (fresh, invalid) = state.members.merge_all(records);
        if !fresh.is_empty() {
            // Written once the lock is released: the gate does not wait for the disk.
            let snapshot = self.snapshot(&state);
            let after = state.members.trusted();
            for gone in before.values().filter(|m| !after.contains_key(&m.peer_id)) {
                tracing::info!(peer = %gone.peer_id, name = %gone.name, "no longer a member");
            }
            let changed = before.len() != after.len()
                || before
                    .iter()
                    .zip(after.iter())
                    .any(|((a, x), (b, y))| a != b || x.grants != y.grants);
            drop(state);
            if let Err(error) = self.write(snapshot) {
                tracing::error!(%error, "cannot save merged member records");
            }
            if changed {
                self.changed();
            }
        }
        (fresh, invalid)
    }

    /// Key, version and hash of every member record, for anti-entropy.
    pub fn digest(&self) -> Vec<loopsy_wire::sync::Entry> {
        self.lock().members.digest()
    }

    /// The records with these keys (unknown keys are skipped).
    pub fn records(&self, keys: &[Vec<u8>]) -> Vec<Record> {
        let state = self.lock();
        keys.iter()
            .filter_map(|k| state.members.get(k).cloned())
            .collect()
    }

    /// Finds the member a user means: a name, a peer ID, or a unique prefix of either.
    pub fn resolve(&self, query: &str) -> Result<PeerId, ResolveError> {
        let state = self.lock();
        let members: Vec<&Member> = state.members.trusted().values().collect();
        resolve_among(query, &members)
    }

    /// Saves `state` (called with its lock held).
    fn save(&self, state: &State) -> Result<(), TrustError> {
        self.write(self.snapshot(state))
    }

    /// What to write for `state`, and its generation (taken under the lock, so that an older
    /// snapshot is never written over a newer one).
    fn snapshot(&self, state: &State) -> (u64, store::Stored) {
        let stored = store::Stored {
            peers: state.settings.values().cloned().collect(),
            records: state.members.records().cloned().collect(),
        };
        (self.file.generation(), stored)
    }

    fn write(&self, (generation, stored): (u64, store::Stored)) -> Result<(), TrustError> {
        store::encode(&stored)
            .and_then(|bytes| fsutil::blocking(|| self.file.write(generation, bytes)))
            .map_err(|source| TrustError::Save {
                path: self.file.path().to_path_buf(),
                source,
            })
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

/// Picks one member by exact peer ID, exact name, or unique prefix of either.
pub fn resolve_among(query: &str, members: &[&Member]) -> Result<PeerId, ResolveError> {
    if let Some(m) = members.iter().find(|m| m.peer_id.to_base58() == query) {
        return Ok(m.peer_id);
    }
    let exact: Vec<_> = members.iter().filter(|m| m.name == query).collect();
    if exact.len() == 1 {
        return Ok(exact[0].peer_id);
    }
    let candidates: Vec<_> = if exact.len() > 1 {
        exact
    } else {
        members
            .iter()
            .filter(|m| m.peer_id.to_base58().starts_with(query) || m.name.starts_with(query))
            .collect()
    };
    match candidates.as_slice() {
        [] => Err(ResolveError::NotFound(query.to_owned())),
        [one] => Ok(one.peer_id),
        many => Err(ResolveError::Ambiguous(
            query.to_owned(),
            many.iter()
                .map(|m| format!("{} ({})", m.name, m.peer_id))
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(path: &std::path::Path, me: &Keypair) -> Result<Trust, TrustError> {
        let defaults = caps::parse(&["all".to_owned()]).unwrap();
        Trust::load(path.to_path_buf(), me.clone(), true, defaults)
    }

    #[test]
    fn a_reload_takes_grants_from_the_edited_file_and_refuses_a_broken_one() {
        let dir = std::env::temp_dir().join(format!("loopsy-trust-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trust.toml");
        let me = Keypair::generate_ed25519();
        let one = Keypair::generate_ed25519().public().to_peer_id();
        let trust = load(&path, &me).unwrap();
        let settings = PeerSettings {
            peer_id: one.to_base58(),
            ..PeerSettings::default()
        };
        trust.admit(one, "one", &[], settings).unwrap();
        assert_eq!(trust.grants(&one), Some(caps::all()));
        let all = || caps::parse(&["all".to_owned()]).unwrap();
        let with_allow = |allow: &str| {
            let text = std::fs::read_to_string(&path).unwrap();
            let line = format!("peer_id = \"{}\"", one.to_base58());
            assert!(text.contains(&line), "{text}");
            std::fs::write(
                &path,
                text.replace(&line, &format!("{line}\nallow = {allow}")),
            )
            .unwrap();
        };

        // Edited by hand: `ctx` only, at once, and said.
        let changes = trust.changes.subscribe();
        with_allow("[\"ctx\"]");
        let said = trust.reload(true, all()).unwrap();
        assert_eq!(
            trust.grants(&one),
            Some(caps::parse(&["ctx".to_owned()]).unwrap())
        );
        assert!(
            said.iter().any(|c| c.starts_with("one may now do [ctx]")),
            "{said:?}"
        );
        assert!(changes.has_changed().unwrap(), "watchers are told");

        // Nothing changed: nothing said.
        assert_eq!(trust.reload(true, all()).unwrap(), Vec::<String>::new());

        // An unknown capability: an error, and the grants stay.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("allow = [\"ctx\"]", "allow = [\"exce\"]"),
        )
        .unwrap();
        assert!(trust.reload(true, all()).is_err());
        assert_eq!(
            trust.grants(&one),
            Some(caps::parse(&["ctx".to_owned()]).unwrap())
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_torn_store_loads_its_previous_copy_but_a_forged_one_stops_the_node() {
        let dir = std::env::temp_dir().join(format!("loopsy-trust-torn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trust.toml");
        let me = Keypair::generate_ed25519();
        let [one, two, three] = [(); 3].map(|()| Keypair::generate_ed25519().public().to_peer_id());
        let settings = |peer: PeerId| PeerSettings {
            peer_id: peer.to_base58(),
            ..PeerSettings::default()
        };
        let trust = load(&path, &me).unwrap();
        trust.admit(one, "one", &[], settings(one)).unwrap();
        trust.admit(two, "two", &[], settings(two)).unwrap();
        drop(trust);

        // A write cut in the middle, or at the end of a line (which TOML still parses): the
        // previous copy, which knows `one` only.
        let whole = std::fs::read_to_string(&path).unwrap();
        let at_a_line = whole[..whole.len() / 2].rfind('\n').unwrap() + 1;
        for cut in [whole.len() / 2, at_a_line] {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let trust = load(&path, &me).expect("the previous copy");
            assert!(trust.is_member(&one));
            assert!(!trust.is_member(&two));
            assert!(dir.join("trust.toml.corrupt").exists());
            std::fs::rename(dir.join("trust.toml.corrupt"), &path).unwrap();
        }
        let trust = load(&path, &me).expect("the previous copy");
        trust.admit(three, "three", &[], settings(three)).unwrap();
        drop(trust);

        // A record changed by hand (or by an attacker) parses, but does not verify: an error,
        // whatever the previous copy holds.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(std::fs::read(dir.join("trust.toml.prev")).is_ok());
        std::fs::write(&path, text.replace("name = \"three\"", "name = \"evil\"")).unwrap();
        let error = load(&path, &me)
            .err()
            .expect("a forged record stops the node");
        assert!(matches!(error, TrustError::Invalid { .. }), "{error}");
        std::fs::remove_dir_all(dir).ok();
    }
}
