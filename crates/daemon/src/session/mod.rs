//! Persistent terminal sessions (`/loopsy/session/1`, the flow is in
//! `loopsy_wire::session`). This device hosts its sessions in [`host::Session`]s, which
//! outlive every client; the [`SessionService`] serves them ([`serve`]: one request, from
//! a peer's stream or, for a session on this device, from the local control connection
//! itself), and [`client`] opens a session on another device for this device's user.
//!
//! Which sessions exist is kept in `sessions.json` in the home. The programs do not outlive
//! the node: when it stops they are hung up, and a session recorded as running when the
//! node starts again shows as exited, with no code.
//!
//! Who may use a session: this device's own user, and a peer with `sessions`, reach every
//! session here (picking up on the laptop the agent started on the desktop is the point);
//! a peer with only `own-sessions` reaches those it started itself. Who started each is
//! kept on this device alone, never in the replicated registry.

pub mod attention;
pub mod client;
mod handover;
pub mod host;
pub mod recorder;
pub mod registry;
mod serve;
#[cfg(test)]
mod serve_tests;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use data_encoding::BASE32_NOPAD;
use futures::{AsyncRead, AsyncWrite, future::BoxFuture};
use loopsy_mesh::{PeerId, Stream};
use loopsy_wire::session::{Info, Request, Status};
use serde::{Deserialize, Serialize};

use crate::{
    caps::{Capability, Caps},
    clock,
    exec::policy::{self, Policy},
    fsutil,
    service::{Peer, Service, Tasks},
};
use host::Session;
use registry::Wake;
/// Ended sessions kept in the list.
const KEEP_ENDED: usize = 32;
/// Running sessions at once.
const MAX_RUNNING: usize = 64;

/// A session, and who started it: a peer, or (`None`) this device's own user.
#[derive(Clone)]
struct Hosted {
    session: Arc<Session>,
    started_by: Option<PeerId>,
}

/// A session as `sessions.json` keeps it: what the registry shows, and who started it.
#[derive(Serialize, Deserialize)]
struct Saved {
    #[serde(flatten)]
    info: Info,
    /// The peer ID of the peer that started it; absent for this device's own user (and in
    /// files written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started_by: Option<String>,
}

/// Which of this device's sessions a request reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every one: this device's own user, or a peer with `sessions`.
    Every,
    /// Only those this peer started: a peer with `own-sessions` and not `sessions`.
    StartedBy(PeerId),
}

impl Reach {
    /// What a request from `from` (a peer with its grants, or this device's own user)
    /// reaches; `None` for a peer with neither grant.
    fn of(from: Option<&(PeerId, Caps)>) -> Option<Reach> {
        match from {
            None => Some(Reach::Every),
            Some((_, grants)) if grants.contains(&Capability::Sessions) => Some(Reach::Every),
            Some((peer, grants)) if grants.contains(&Capability::OwnSessions) => {
                Some(Reach::StartedBy(*peer))
            }
            // Every session, to watch only (the service enforces that).
            Some((_, grants)) if grants.contains(&Capability::View) => Some(Reach::Every),
            Some(_) => None,
        }
    }

    fn covers(self, hosted: &Hosted) -> bool {
        match self {
            Reach::Every => true,
            Reach::StartedBy(peer) => hosted.started_by == Some(peer),
        }
    }
}

/// Why a query names no session the request may use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    #[error("no session here is called `{0}`")]
    NotFound(String),
    /// One is called that, but out of the request's reach. Worded as [`Self::NotFound`]
    /// so that a peer learns nothing of the sessions it may not use; `id` is for the
    /// host's audit log.
    #[error("no session here is called `{query}`")]
    OutOfReach { query: String, id: String },
    #[error("`{query}` matches several sessions: {}", .ids.join(", "))]
    Ambiguous { query: String, ids: Vec<String> },
}

/// Why a session was not started.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Denied(#[from] policy::Denied),
    #[error("this device runs {0} sessions already")]
    Full(usize),
    #[error(
        "a running session here is already called `{0}`: pick another name, or attach to that one"
    )]
    NameTaken(String),
    #[error("cannot start {program}: {reason}")]
    Start { program: String, reason: String },
    #[error(
        "this device keeps {0} recordings already, all of running sessions: end one, or delete \
         a recording (`loopsy session rm-recording`)"
    )]
    RecordingsFull(usize),
    #[error("cannot record the session: {0}")]
    Record(String),
}

/// The session service: this device's sessions, the exec policy they start under, and
/// the registry that tells the mesh about them.
pub struct SessionService {
    sessions: Arc<Sessions>,
    policy: crate::live::Live<Policy>,
    registry: Wake,
}

impl SessionService {
    pub fn new(
        sessions: Arc<Sessions>,
        policy: impl Into<crate::live::Live<Policy>>,
        registry: Wake,
    ) -> Self {
        Self {
            sessions,
            policy: policy.into(),
            registry,
        }
    }

    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// Answers a request of this device's own user, on its control connection.
    pub async fn handle_local<R, W>(&self, request: Request, reader: R, writer: W)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        serve::handle(self, None, request, reader, writer).await;
    }
}

impl Service for SessionService {
    fn serve(self: Arc<Self>, peer: Peer, stream: Stream) -> BoxFuture<'static, ()> {
        Box::pin(async move { serve::serve(&self, &peer, stream).await })
    }
}

/// This device's sessions.
pub struct Sessions {
    file: fsutil::StateFile,
    all: Mutex<Vec<Hosted>>,
    /// Each running session's programs, and the watch that records its end.
    tasks: Tasks,
    /// Where the sessions' calls for attention go.
    alerts: attention::Alerts,
    /// Where recordings (`session new --record`) are kept, and their bound.
    recordings: recorder::Recordings,
}

impl Sessions {
    /// The sessions a previous run left in `path` (or in its previous copy, if it is
    /// damaged): all over now.
    pub fn load(path: PathBuf) -> Self {
        let file = fsutil::StateFile::new(path, 0o600);
        let recorded: Vec<Saved> = file
            .load(|bytes| serde_json::from_slice(bytes).map_err(|e| e.to_string()))
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "the record of sessions is lost");
                None
            })
            .unwrap_or_default();
        let hosted = recorded.into_iter().map(|saved| Hosted {
            session: Session::ended_before(saved.info),
            // One that does not read as a peer ID was started by no peer that can ask.
            started_by: saved.started_by.and_then(|p| p.parse().ok()),
        });
        let dir = file.path().parent().map(|p| p.join("recordings"));
        let recordings = recorder::Recordings::new(
            dir.unwrap_or_else(|| PathBuf::from("recordings")),
            recorder::Settings::default().max_bytes(),
        );
        let sessions = Self {
            file,
            all: Mutex::new(hosted.collect()),
            tasks: Tasks::default(),
            alerts: attention::Alerts::default(),
            recordings,
        };
        sessions.forget_unlisted_recordings();
        sessions.save();
        sessions
    }

    /// Bounds the recordings of sessions started from now on to `max_bytes` each.
    pub fn with_record_max(mut self, max_bytes: u64) -> Self {
        self.recordings = self.recordings.with_max(max_bytes);
        self
    }

    /// Removes recording files that no listed session has.
    fn forget_unlisted_recordings(&self) {
        let kept: Vec<String> = self
            .lock()
            .iter()
            .map(|h| h.session.info())
            .filter(|i| i.recording.is_some())
            .map(|i| i.id)
            .collect();
        self.recordings.forget_all_but(&kept);
    }

    /// The file of a session's recording, when it has one.
    pub fn recording_of(&self, session: &Session) -> Option<PathBuf> {
        let info = session.info();
        info.recording?;
        self.recordings.path(&info.id)
    }

    /// Stops and removes a session's recording: how large it was (`None`: it had none).
    pub fn delete_recording(&self, session: &Session) -> Option<u64> {
        let path = self.recordings.path(&session.id());
        let bytes = session.drop_recording()?;
        if let Some(path) = path
            && let Err(error) = std::fs::remove_file(&path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), %error, "cannot remove a recording");
        }
        self.save();
        Some(bytes)
    }

    /// Makes room for one more recording: forgets the oldest of an ended session when
    /// [`recorder::MAX_KEPT`] are kept; refuses when all of those are still being written.
    fn room_for_a_recording(&self) -> Result<(), SessionError> {
        let recorded: Vec<Arc<Session>> = self
            .lock()
            .iter()
            .filter(|h| h.session.info().recording.is_some())
            .map(|h| h.session.clone())
            .collect();
        if recorded.len() < recorder::MAX_KEPT {
            return Ok(());
        }
        let oldest_ended = recorded
            .iter()
            .filter(|s| !s.is_running())
            .min_by_key(|s| s.info().created);
        match oldest_ended {
            Some(oldest) => {
                self.delete_recording(oldest);
                Ok(())
            }
            None => Err(SessionError::RecordingsFull(recorder::MAX_KEPT)),
        }
    }

    /// Sends the calls for attention of sessions started from now on to `alerts`.
    pub fn with_alerts(mut self, alerts: attention::Alerts) -> Self {
        self.alerts = alerts;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Hosted>> {
        self.all.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the sessions: a snapshot taken under the lock, never written over a newer one.
    fn save(&self) {
        let (generation, saved) = {
            let all = self.lock();
            let saved: Vec<Saved> = all
                .iter()
                .map(|h| Saved {
                    info: h.session.info(),
                    started_by: h.started_by.map(|p| p.to_base58()),
                })
                .collect();
            (self.file.generation(), saved)
        };
        if let Ok(bytes) = serde_json::to_vec_pretty(&saved)
            && let Err(error) = fsutil::blocking(|| self.file.write(generation, bytes))
        {
            tracing::warn!(%error, "cannot record the sessions");
        }
    }

    /// The sessions `reach` covers.
    pub fn list(&self, reach: Reach) -> Vec<Info> {
        self.lock()
            .iter()
            .filter(|h| reach.covers(h))
            .map(|h| h.session.info())
            .collect()
    }

    /// The session called `query` among those `reach` covers: its ID, its name, or a
    /// unique prefix of either. The others are not even considered, so that neither a
    /// match nor an ambiguity can reveal them.
    pub fn resolve(&self, query: &str, reach: Reach) -> Result<Arc<Session>, Unresolved> {
        let all = self.lock();
        let reached: Vec<Arc<Session>> = all
            .iter()
            .filter(|h| reach.covers(h))
            .map(|h| h.session.clone())
            .collect();
        match pick(&reached, query) {
            Err(Unresolved::NotFound(_)) if reach != Reach::Every => {
                let every: Vec<Arc<Session>> = all.iter().map(|h| h.session.clone()).collect();
                Err(match pick(&every, query) {
                    Ok(found) => Unresolved::OutOfReach {
                        query: query.to_owned(),
                        id: found.id(),
                    },
                    Err(_) => Unresolved::NotFound(query.to_owned()),
                })
            }
            picked => picked,
        }
    }

    /// Starts a session running `approved` (a program, or the login shell), started by
    /// `started_by` (`None`: this device's own user), recorded when `record` is set.
    #[allow(clippy::too_many_arguments)]
    fn start(
        self: &Arc<Self>,
        name: Option<String>,
        approved: &policy::Approved,
        command: Vec<String>,
        rows: u16,
        cols: u16,
        started_by: Option<PeerId>,
        record: bool,
    ) -> Result<Info, SessionError> {
        if self
            .lock()
            .iter()
            .filter(|h| h.session.is_running())
            .count()
            >= MAX_RUNNING
        {
            return Err(SessionError::Full(MAX_RUNNING));
        }
        let name = name
            .map(|n| loopsy_mesh::sanitize_name(&n))
            .filter(|n| !n.is_empty());
        // A name picks one running session: `attach agent` must not meet two.
        if let Some(name) = &name {
            let taken = self
                .lock()
                .iter()
                .any(|h| h.session.is_running() && h.session.info().name.as_ref() == Some(name));
            if taken {
                return Err(SessionError::NameTaken(name.clone()));
            }
        }
        let now = clock::now_secs();
        let info = Info {
            id: new_id(),
            name,
            command,
            status: Status::Running,
            created: now,
            last_activity: now,
            clients: 0,
            waiting: None,
            recording: None,
        };
        let cwd = approved.working_dir()?;
        let recorder = if record {
            self.room_for_a_recording()?;
            let (rows, cols) = host::bounded(rows, cols);
            let recorder = self
                .recordings
                .start(&info.id, rows, cols, clock::now_ms())
                .map_err(|e| SessionError::Record(e.to_string()))?;
            Some(recorder)
        } else {
            None
        };
        let (session, pumps) = Session::start(
            info,
            &approved.program,
            &approved.args,
            approved.arg0.as_deref(),
            cwd.path(),
            (rows, cols),
            self.alerts.clone(),
            recorder,
        )
        .map_err(|e| SessionError::Start {
            program: approved.program.clone(),
            reason: e.to_string(),
        })?;
        self.tasks.spawn(pumps);
        let forgotten = {
            let mut all = self.lock();
            all.push(Hosted {
                session: session.clone(),
                started_by,
            });
            // Forget the oldest ended sessions.
            let ended = all.iter().filter(|h| !h.session.is_running()).count();
            let mut drop_ended = ended.saturating_sub(KEEP_ENDED);
            let mut forgotten = Vec::new();
            all.retain(|h| {
                let forget = drop_ended > 0 && !h.session.is_running();
                drop_ended -= usize::from(forget);
                if forget {
                    forgotten.push(h.session.clone());
                }
                !forget
            });
            forgotten
        };
        // A forgotten session's recording goes with it.
        for session in forgotten {
            if let Some(path) = self.recording_of(&session) {
                let _ = std::fs::remove_file(path);
            }
        }
        self.save();
        // Weak: the store owns this task, which must not keep the store alive.
        let sessions = Arc::downgrade(self);
        // Woken by the exit alone: marks would wake it (and, through it, another worker
        // thread) for every piece of output, on the path of each keystroke's echo.
        let exited = session.exited();
        self.tasks.spawn(async move {
            exited.await;
            if let Some(sessions) = sessions.upgrade() {
                sessions.save();
            }
        });
        Ok(session.info())
    }

    /// Ends every session's programs (the node is stopping): a hang-up, a moment to take
    /// it, then a kill for what is left.
    pub async fn end_all(&self) {
        let all: Vec<Hosted> = self.lock().clone();
        for hosted in &all {
            hosted.session.signal(rustix::process::Signal::HUP);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for hosted in &all {
            hosted.session.signal(rustix::process::Signal::KILL);
        }
        self.tasks.shutdown().await;
    }
}

/// The session called `query` among `sessions`.
fn pick(sessions: &[Arc<Session>], query: &str) -> Result<Arc<Session>, Unresolved> {
    // An exact ID first: a name that happens to be another session's ID cannot capture
    // a client that reattaches by ID.
    if let Some(found) = sessions.iter().find(|s| s.id() == query) {
        return Ok(found.clone());
    }
    let by = |exact: bool| -> Vec<Arc<Session>> {
        sessions
            .iter()
            .filter(|s| {
                let info = s.info();
                let names = [Some(info.id.as_str()), info.name.as_deref()];
                names.into_iter().flatten().any(|n| {
                    if exact {
                        n == query
                    } else {
                        n.starts_with(query)
                    }
                })
            })
            .cloned()
            .collect()
    };
    let mut found = by(true);
    if found.is_empty() && !query.is_empty() {
        found = by(false);
    }
    // A running session wins over ended ones of the same name.
    if found.len() > 1 {
        let running: Vec<_> = found.iter().filter(|s| s.is_running()).cloned().collect();
        if running.len() == 1 {
            found = running;
        }
    }
    match found.len() {
        0 => Err(Unresolved::NotFound(query.to_owned())),
        1 => Ok(found.remove(0)),
        _ => Err(Unresolved::Ambiguous {
            query: query.to_owned(),
            ids: found.iter().map(|s| s.id()).collect(),
        }),
    }
}

/// A short random ID, as people type it.
fn new_id() -> String {
    let mut bytes = [0u8; 5];
    let _ = getrandom::fill(&mut bytes);
    BASE32_NOPAD.encode(&bytes).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(id: &str, name: &str, started_by: Option<PeerId>) -> Hosted {
        let info = Info {
            id: id.into(),
            name: Some(name.into()),
            command: vec!["true".into()],
            status: Status::Exited { code: Some(0) },
            created: 1,
            last_activity: 1,
            clients: 0,
            waiting: None,
            recording: None,
        };
        Hosted {
            session: Session::ended_before(info),
            started_by,
        }
    }

    fn file(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("loopsy-sessions-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a test directory");
        dir.join("sessions.json")
    }

    /// Alpha's own session, and one each that peers `p` and `q` started; all named `work`.
    fn three(tag: &str) -> (Sessions, PeerId, PeerId) {
        let (p, q) = (PeerId::random(), PeerId::random());
        let sessions = Sessions {
            file: fsutil::StateFile::new(file(tag), 0o600),
            tasks: Tasks::default(),
            alerts: attention::Alerts::default(),
            recordings: recorder::Recordings::new(std::env::temp_dir().join("none"), 1),
            all: Mutex::new(vec![
                ended("mine", "work", None),
                ended("ofpee", "work", Some(p)),
                ended("ofque", "work", Some(q)),
            ]),
        };
        (sessions, p, q)
    }

    /// Why `resolve` found nothing (a session is not `Debug`, so no `unwrap_err`).
    fn unresolved(resolved: Result<Arc<Session>, Unresolved>) -> Unresolved {
        match resolved {
            Ok(found) => panic!("found {}", found.id()),
            Err(why) => why,
        }
    }

    fn ids(infos: Vec<Info>) -> Vec<String> {
        infos.into_iter().map(|i| i.id).collect()
    }

    #[test]
    fn a_peer_with_own_sessions_reaches_only_those_it_started() {
        let (sessions, p, _) = three("reach");
        let own = Reach::StartedBy(p);
        assert_eq!(ids(sessions.list(own)), ["ofpee"]);
        assert_eq!(sessions.list(Reach::Every).len(), 3);
        // Its own by ID, name or prefix: the others do not make the name ambiguous.
        for query in ["ofpee", "work", "of"] {
            let found = sessions.resolve(query, own).expect(query);
            assert_eq!(found.id(), "ofpee");
        }
        // Another's is answered as if it did not exist; the host learns which it was.
        let err = unresolved(sessions.resolve("mine", own));
        assert_eq!(err.to_string(), "no session here is called `mine`");
        assert!(matches!(err, Unresolved::OutOfReach { ref id, .. } if id == "mine"));
        let err = unresolved(sessions.resolve("ofque", own));
        assert!(!err.to_string().contains("ofpee"), "{err}");
        assert!(matches!(
            sessions.resolve("nothing", own),
            Err(Unresolved::NotFound(_))
        ));
        // Everyone else's reach names every candidate.
        let err = unresolved(sessions.resolve("work", Reach::Every));
        assert!(matches!(err, Unresolved::Ambiguous { ref ids, .. } if ids.len() == 3));
    }

    #[test]
    fn who_may_reach_what_follows_the_grants() {
        let p = PeerId::random();
        let grants = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            crate::caps::parse(&names).expect("capabilities")
        };
        assert_eq!(Reach::of(None), Some(Reach::Every));
        let of = |names: &[&str]| Reach::of(Some(&(p, grants(names))));
        assert_eq!(of(&["sessions"]), Some(Reach::Every));
        assert_eq!(of(&["all"]), Some(Reach::Every));
        assert_eq!(of(&["sessions,own-sessions"]), Some(Reach::Every));
        assert_eq!(of(&["own-sessions,exec"]), Some(Reach::StartedBy(p)));
        assert_eq!(of(&["exec,shell"]), None);
    }

    #[test]
    fn who_started_a_session_is_kept_across_a_restart() {
        let (sessions, p, _) = three("kept");
        sessions.save();
        let again = Sessions::load(sessions.file.path().to_owned());
        assert_eq!(ids(again.list(Reach::StartedBy(p))), ["ofpee"]);
        assert_eq!(again.list(Reach::Every).len(), 3);
        // A file from before the starter was kept: every session is this device's own.
        let info = sessions.list(Reach::Every).remove(0);
        let old = serde_json::to_vec(&vec![info]).expect("JSON");
        std::fs::write(sessions.file.path(), old).expect("write");
        let old = Sessions::load(sessions.file.path().to_owned());
        assert_eq!(old.list(Reach::Every).len(), 1);
        assert!(old.list(Reach::StartedBy(p)).is_empty());
    }
}
