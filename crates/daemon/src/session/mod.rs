//! Persistent terminal sessions (`/loopsy/session/1`, the flow is in
//! `loopsy_wire::session`). This device hosts its sessions in [`host::Session`]s, which
//! outlive every client; [`handle`] serves one request, from a peer's stream or, for a
//! session on this device, from the local control connection itself.
//!
//! Which sessions exist is kept in `sessions.json` in the home. The programs do not outlive
//! the node: when it stops they are hung up, and a session recorded as running when the
//! node starts again shows as exited, with no code.
//!
//! Who may use a session: this device's own user, and a peer with `sessions`, reach every
//! session here (picking up on the laptop the agent started on the desktop is the point);
//! a peer with only `own-sessions` reaches those it started itself. Who started each is
//! kept on this device alone, never in the replicated registry.

pub mod host;
pub mod registry;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use data_encoding::BASE32_NOPAD;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use loopsy_mesh::{PeerId, Stream, framed};
use loopsy_wire::{
    exec,
    session::{CHUNK, Info, Input, MAX_FRAME, Reply, Request, Status},
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::{
    audit::Outcome,
    caps::{Capability, Caps},
    clock,
    exec::policy::{self, Policy},
    fsutil,
    node::Node,
};
use host::Session;

/// How long a client may take to say what it wants.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
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

/// This device's sessions.
pub struct Sessions {
    file: fsutil::StateFile,
    all: Mutex<Vec<Hosted>>,
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
        let sessions = Self {
            file,
            all: Mutex::new(hosted.collect()),
        };
        sessions.save();
        sessions
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
    /// `started_by` (`None`: this device's own user).
    fn start(
        self: &Arc<Self>,
        name: Option<String>,
        approved: &policy::Approved,
        command: Vec<String>,
        rows: u16,
        cols: u16,
        started_by: Option<PeerId>,
    ) -> Result<Info, String> {
        if self
            .lock()
            .iter()
            .filter(|h| h.session.is_running())
            .count()
            >= MAX_RUNNING
        {
            return Err(format!("this device runs {MAX_RUNNING} sessions already"));
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
                return Err(format!(
                    "a running session here is already called `{name}`: pick another name, \
                     or attach to that one"
                ));
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
        };
        let cwd = approved.working_dir()?;
        let session = Session::start(
            info,
            &approved.program,
            &approved.args,
            approved.arg0.as_deref(),
            cwd.path(),
            rows,
            cols,
        )
        .map_err(|e| format!("cannot start {}: {e}", approved.program))?;
        {
            let mut all = self.lock();
            all.push(Hosted {
                session: session.clone(),
                started_by,
            });
            // Forget the oldest ended sessions.
            let ended = all.iter().filter(|h| !h.session.is_running()).count();
            let mut drop_ended = ended.saturating_sub(KEEP_ENDED);
            all.retain(|h| {
                let forget = drop_ended > 0 && !h.session.is_running();
                drop_ended -= usize::from(forget);
                !forget
            });
        }
        self.save();
        let sessions = self.clone();
        let mut marks = session.marks();
        tokio::spawn(async move {
            let _ = marks.wait_for(|m| m.exited.is_some()).await;
            sessions.save();
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

/// Serves one session stream from an admitted peer.
pub async fn serve(node: Arc<Node>, peer: PeerId, stream: Stream, grants: Caps) {
    let (mut reader, writer) = stream.split();
    let request = tokio::time::timeout(
        REQUEST_DEADLINE,
        framed::read::<Request, _>(&mut reader, MAX_FRAME),
    )
    .await;
    if let Ok(Ok(Some(request))) = request {
        handle(&node, Some((peer, grants)), request, reader, writer).await;
    }
}

/// Answers `request`, from a peer with its grants here (or from this device's own user).
pub async fn handle<R, W>(
    node: &Arc<Node>,
    from: Option<(PeerId, Caps)>,
    request: Request,
    reader: R,
    mut writer: W,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let peer = from.as_ref().map(|(peer, _)| *peer);
    let audit = |action: &str, args: String, outcome: Outcome, reason: Option<String>| {
        if let Some(peer) = peer {
            node.audit.record(
                Some(peer),
                node.peer_name(&peer),
                action,
                args,
                outcome,
                reason,
            );
        }
    };
    if !request.within_limits() {
        return error(&mut writer, "the request exceeds the size limits").await;
    }
    // The gate lets in only peers with one of the two grants; this holds without it.
    let Some(reach) = Reach::of(from.as_ref()) else {
        let reason = "neither the `sessions` nor the `own-sessions` capability is granted";
        audit(
            "session",
            String::new(),
            Outcome::Denied,
            Some(reason.into()),
        );
        return error(&mut writer, reason).await;
    };
    // A session out of reach is audited here, and answered as if it did not exist.
    let unresolved = |action: &str, why: &Unresolved| {
        if let Unresolved::OutOfReach { id, .. } = why {
            let reason = "started by another; this peer may use only the sessions it started";
            audit(action, id.clone(), Outcome::Denied, Some(reason.into()));
        }
    };
    match request {
        Request::New {
            name,
            argv,
            rows,
            cols,
        } => {
            // Peers run what the exec policy and their grants allow (a login shell needs
            // `shell` and a program list that names it, a program `exec`); this device's
            // own user anything. The session remembers the peer that started it.
            let (policy, grants) = match &from {
                Some((peer, grants)) => (
                    node.exec_policy
                        .with(node.trust.exec_overrides(peer).as_ref()),
                    grants.clone(),
                ),
                None => (
                    Policy::default(),
                    Caps::from([Capability::Exec, Capability::Shell]),
                ),
            };
            let start = exec::Start {
                argv: argv.clone(),
                cwd: None,
                env: Vec::new(),
                timeout_secs: None,
                pty: None,
            };
            let shown = if argv.is_empty() {
                "(login shell)".to_owned()
            } else {
                argv.join(" ")
            };
            let started = policy::check(&start, &policy, &grants).and_then(|approved| {
                let command = if argv.is_empty() {
                    vec![approved.program.clone()]
                } else {
                    argv
                };
                node.sessions
                    .start(name, &approved, command, rows, cols, peer)
            });
            match started {
                Ok(info) => {
                    registry::publish_soon(node);
                    audit(
                        "session new",
                        format!("{} {shown}", info.id),
                        Outcome::Ok,
                        None,
                    );
                    let _ = put(&mut writer, &Reply::Created(info)).await;
                }
                Err(reason) => {
                    audit("session new", shown, Outcome::Denied, Some(reason.clone()));
                    error(&mut writer, &reason).await;
                }
            }
        }
        Request::List => {
            let sessions = node.sessions.list(reach);
            let _ = put(&mut writer, &Reply::Sessions { sessions }).await;
        }
        Request::Kill { session } => match node.sessions.resolve(&session, reach) {
            Ok(found) if !found.is_running() => {
                let how = match found.info().status {
                    Status::Exited { code: Some(code) } => format!(" (exit code {code})"),
                    _ => String::new(),
                };
                let said = format!("session {} had already ended{how}", found.id());
                error(&mut writer, &said).await
            }
            Ok(found) => {
                audit("session kill", found.id(), Outcome::Ok, None);
                found.kill().await;
                registry::publish_soon(node);
                let _ = put(&mut writer, &Reply::Killed).await;
            }
            Err(why) => {
                unresolved("session kill", &why);
                error(&mut writer, &why.to_string()).await
            }
        },
        Request::Attach {
            session,
            offset,
            rows,
            cols,
        } => match node.sessions.resolve(&session, reach) {
            Ok(found) => {
                audit("session attach", found.id(), Outcome::Ok, None);
                attach(node, found, offset, rows, cols, reader, &mut writer).await;
                registry::publish_soon(node);
            }
            Err(why) => {
                unresolved("session attach", &why);
                error(&mut writer, &why.to_string()).await
            }
        },
    }
    let _ = writer.close().await;
}

async fn put<W: AsyncWrite + Unpin>(writer: &mut W, reply: &Reply) -> Result<(), ()> {
    framed::write(writer, reply, MAX_FRAME)
        .await
        .map_err(|_| ())
}

async fn error<W: AsyncWrite + Unpin>(writer: &mut W, message: &str) {
    let message = message.to_owned();
    let _ = put(writer, &Reply::Error { message }).await;
}

/// Keeps a client's count while it is attached.
struct Attached(Arc<Session>);

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.client_left();
    }
}

/// Serves one attached client: the screen (or the output since `offset`), then the output
/// as it comes, and the client's keys and sizes to the program.
async fn attach<R, W>(
    node: &Arc<Node>,
    session: Arc<Session>,
    offset: Option<u64>,
    rows: u16,
    cols: u16,
    mut reader: R,
    writer: &mut W,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    session.client_joined();
    let _attached = Attached(session.clone());
    // A client with no terminal of its own (an agent reading the screen) sends 0 × 0 and
    // leaves the size to the others.
    if rows > 0 && cols > 0 {
        session.resize(rows, cols);
    }
    let mut marks = session.marks();
    let resumed = offset.filter(|&o| session.output(o, 0).is_some());
    let (attached, mut at) = match resumed {
        Some(offset) => {
            let (rows, cols) = session.size();
            let reply = Reply::Attached {
                info: session.info(),
                offset,
                screen: None,
                rows,
                cols,
            };
            (reply, offset)
        }
        None => redraw(&session),
    };
    if put(writer, &attached).await.is_err() {
        return;
    }
    // The client count changed: after the screen went out, so it costs the client nothing.
    registry::publish_soon(node);
    let inputs = async {
        loop {
            match framed::read::<Input, _>(&mut reader, MAX_FRAME).await {
                Ok(Some(Input::Keys { data })) => session.keys(data.into_vec()).await,
                Ok(Some(Input::Resize { rows, cols })) if rows > 0 && cols > 0 => {
                    session.resize(rows, cols)
                }
                Ok(Some(Input::Resize { .. })) => {}
                _ => return,
            }
        }
    };
    let outputs = async {
        loop {
            let mark = *marks.borrow_and_update();
            while at < mark.end {
                let reply = match session.output(at, CHUNK) {
                    Some(data) => {
                        let reply = Reply::Output {
                            offset: at,
                            data: ByteBuf::from(data),
                        };
                        at += reply_len(&reply);
                        reply
                    }
                    // This client fell further behind than the ring holds: it gets the
                    // screen as it is now, and goes on from there.
                    None => {
                        let (reply, offset) = redraw(&session);
                        at = offset;
                        reply
                    }
                };
                if put(writer, &reply).await.is_err() {
                    return;
                }
            }
            if let Some(code) = mark.exited {
                let _ = put(writer, &Reply::Exited { code }).await;
                return;
            }
            if marks.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = inputs => {}
        _ = outputs => {}
    }
}

/// The session's screen as it is now, for a client that starts from it, and the offset
/// output goes on from.
fn redraw(session: &Session) -> (Reply, u64) {
    let screen = session.screen();
    let reply = Reply::Attached {
        info: session.info(),
        offset: screen.offset,
        screen: Some(ByteBuf::from(screen.bytes)),
        rows: screen.rows,
        cols: screen.cols,
    };
    (reply, screen.offset)
}

fn reply_len(reply: &Reply) -> u64 {
    match reply {
        Reply::Output { data, .. } => data.len() as u64,
        _ => 0,
    }
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
