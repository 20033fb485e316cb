//! Persistent terminal sessions (`/loopsy/session/1`, the flow is in
//! `loopsy_wire::session`). This device hosts its sessions in [`host::Session`]s, which
//! outlive every client; [`handle`] serves one request, from a peer's stream or, for a
//! session on this device, from the local control connection itself.
//!
//! Which sessions exist is kept in `sessions.json` in the home. The programs do not outlive
//! the node: when it stops they are hung up, and a session recorded as running when the
//! node starts again shows as exited, with no code.

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

/// This device's sessions.
pub struct Sessions {
    file: fsutil::StateFile,
    all: Mutex<Vec<Arc<Session>>>,
}

impl Sessions {
    /// The sessions a previous run left in `path` (or in its previous copy, if it is
    /// damaged): all over now.
    pub fn load(path: PathBuf) -> Self {
        let file = fsutil::StateFile::new(path, 0o600);
        let recorded: Vec<Info> = file
            .load(|bytes| serde_json::from_slice(bytes).map_err(|e| e.to_string()))
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "the record of sessions is lost");
                None
            })
            .unwrap_or_default();
        let sessions = Self {
            file,
            all: Mutex::new(recorded.into_iter().map(Session::ended_before).collect()),
        };
        sessions.save();
        sessions
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Session>>> {
        self.all.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the sessions: a snapshot taken under the lock, never written over a newer one.
    fn save(&self) {
        let (generation, infos) = {
            let all = self.lock();
            let infos: Vec<Info> = all.iter().map(|s| s.info()).collect();
            (self.file.generation(), infos)
        };
        if let Ok(bytes) = serde_json::to_vec_pretty(&infos)
            && let Err(error) = fsutil::blocking(|| self.file.write(generation, bytes))
        {
            tracing::warn!(%error, "cannot record the sessions");
        }
    }

    pub fn list(&self) -> Vec<Info> {
        self.lock().iter().map(|s| s.info()).collect()
    }

    /// The session called `query`: its ID, its name, or a unique prefix of either.
    pub fn resolve(&self, query: &str) -> Result<Arc<Session>, String> {
        let all = self.lock();
        // An exact ID first: a name that happens to be another session's ID cannot capture
        // a client that reattaches by ID.
        if let Some(found) = all.iter().find(|s| s.id() == query) {
            return Ok(found.clone());
        }
        let by = |exact: bool| -> Vec<Arc<Session>> {
            all.iter()
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
            0 => Err(format!("no session here is called `{query}`")),
            1 => Ok(found.remove(0)),
            _ => Err(format!(
                "`{query}` matches several sessions: {}",
                found.iter().map(|s| s.id()).collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// Starts a session running `approved` (a program, or the login shell).
    fn start(
        self: &Arc<Self>,
        name: Option<String>,
        approved: &policy::Approved,
        command: Vec<String>,
        rows: u16,
        cols: u16,
    ) -> Result<Info, String> {
        if self.lock().iter().filter(|s| s.is_running()).count() >= MAX_RUNNING {
            return Err(format!("this device runs {MAX_RUNNING} sessions already"));
        }
        let now = clock::now_secs();
        let info = Info {
            id: new_id(),
            name: name
                .map(|n| loopsy_mesh::sanitize_name(&n))
                .filter(|n| !n.is_empty()),
            command,
            status: Status::Running,
            created: now,
            last_activity: now,
            clients: 0,
        };
        let session = Session::start(
            info,
            &approved.program,
            &approved.args,
            approved.arg0.as_deref(),
            &approved.cwd,
            rows,
            cols,
        )
        .map_err(|e| format!("cannot start {}: {e}", approved.program))?;
        {
            let mut all = self.lock();
            all.push(session.clone());
            // Forget the oldest ended sessions.
            let ended = all.iter().filter(|s| !s.is_running()).count();
            let mut drop_ended = ended.saturating_sub(KEEP_ENDED);
            all.retain(|s| {
                let forget = drop_ended > 0 && !s.is_running();
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
        let all: Vec<Arc<Session>> = self.lock().clone();
        for session in &all {
            session.signal(rustix::process::Signal::HUP);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for session in &all {
            session.signal(rustix::process::Signal::KILL);
        }
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
    match request {
        Request::New {
            name,
            argv,
            rows,
            cols,
        } => {
            // Peers run what the exec policy and their grants allow (a login shell needs
            // `shell`, a program `exec`); this device's own user anything.
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
                node.sessions.start(name, &approved, command, rows, cols)
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
            let sessions = node.sessions.list();
            let _ = put(&mut writer, &Reply::Sessions { sessions }).await;
        }
        Request::Kill { session } => match node.sessions.resolve(&session) {
            Ok(found) => {
                audit("session kill", found.id(), Outcome::Ok, None);
                found.kill().await;
                registry::publish_soon(node);
                let _ = put(&mut writer, &Reply::Killed).await;
            }
            Err(reason) => error(&mut writer, &reason).await,
        },
        Request::Attach {
            session,
            offset,
            rows,
            cols,
        } => match node.sessions.resolve(&session) {
            Ok(found) => {
                audit("session attach", found.id(), Outcome::Ok, None);
                attach(node, found, offset, rows, cols, reader, &mut writer).await;
                registry::publish_soon(node);
            }
            Err(reason) => error(&mut writer, &reason).await,
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
