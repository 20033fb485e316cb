//! Serving `/loopsy/session/1`: one request, from a peer's stream or, for a session on this
//! device, from the local control connection itself; an attach streams the session's
//! screen and output, and takes the client's keys and sizes.

use std::{sync::Arc, time::Duration};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use loopsy_mesh::framed;
use loopsy_wire::{
    exec,
    session::{CHUNK, Input, MAX_FRAME, Piece, Reply, Request, Status},
};
use serde_bytes::ByteBuf;

use super::{Reach, SessionError, SessionService, Unresolved, host::Session};
use crate::{
    audit::Outcome,
    caps::{Capability, Caps},
    exec::policy::{self, Policy},
    service::Peer,
};

/// How long a client may take to say what it wants.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// Serves one session stream from an admitted peer.
pub(super) async fn serve<S>(service: &SessionService, peer: &Peer, stream: S)
where
    S: AsyncRead + AsyncWrite + Send,
{
    let (mut reader, writer) = stream.split();
    let request = tokio::time::timeout(
        REQUEST_DEADLINE,
        framed::read::<Request, _>(&mut reader, MAX_FRAME),
    )
    .await;
    if let Ok(Ok(Some(request))) = request {
        handle(service, Some(peer), request, reader, writer).await;
    }
}

/// Answers `request`, from a peer with its grants here (or from this device's own user).
pub(super) async fn handle<R, W>(
    service: &SessionService,
    from: Option<&Peer>,
    request: Request,
    reader: R,
    mut writer: W,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let peer = from.map(|p| p.id);
    let audit = |action: &str, args: String, outcome: Outcome, reason: Option<String>| {
        if let Some(from) = from {
            from.audit.record(action, args, outcome, reason);
        }
    };
    if !request.within_limits() {
        return error(&mut writer, "the request exceeds the size limits").await;
    }
    // The gate lets in only peers with one of the two grants; this holds without it.
    let Some(reach) = Reach::of(from.map(|p| (p.id, p.grants.clone())).as_ref()) else {
        let reason = "neither the `sessions` nor the `own-sessions` capability is granted";
        audit(
            "session",
            String::new(),
            Outcome::Denied,
            Some(reason.into()),
        );
        return error(&mut writer, reason).await;
    };
    // A peer granted only `view` lists and watches: it starts, types in and ends nothing.
    let watch_only = from.is_some_and(|p| {
        !p.grants.contains(&Capability::Sessions)
            && !p.grants.contains(&Capability::OwnSessions)
            && p.grants.contains(&Capability::View)
    });
    const WATCH_ONLY: &str = "this device may only watch sessions here (the `view` capability)";
    // A session out of reach is audited here, and answered as if it did not exist.
    let unresolved = |action: &str, why: &Unresolved| {
        if let Unresolved::OutOfReach { id, .. } = why {
            let reason = "started by another; this peer may use only the sessions it started";
            audit(action, id.clone(), Outcome::Denied, Some(reason.into()));
        }
    };
    match request {
        Request::New { argv, .. } if watch_only => {
            let shown = argv.join(" ");
            audit(
                "session new",
                shown,
                Outcome::Denied,
                Some(WATCH_ONLY.into()),
            );
            error(&mut writer, WATCH_ONLY).await;
        }
        Request::DeleteRecording { session } if watch_only => {
            audit(
                "session rm-recording",
                session,
                Outcome::Denied,
                Some(WATCH_ONLY.into()),
            );
            error(&mut writer, WATCH_ONLY).await;
        }
        Request::Kill { session } if watch_only => {
            audit(
                "session kill",
                session,
                Outcome::Denied,
                Some(WATCH_ONLY.into()),
            );
            error(&mut writer, WATCH_ONLY).await;
        }
        Request::New {
            name,
            argv,
            rows,
            cols,
            record,
        } => {
            // Peers run what the exec policy and their grants allow (a login shell needs
            // `shell` and a program list that names it, a program `exec`); this device's
            // own user anything. The session remembers the peer that started it.
            let (policy, grants) = match from {
                Some(peer) => (
                    service.policy.get().with(peer.policies.exec.as_ref()),
                    peer.grants.clone(),
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
            let started = policy::check(&start, &policy, &grants)
                .map_err(SessionError::from)
                .and_then(|approved| {
                    let command = if argv.is_empty() {
                        vec![approved.program.clone()]
                    } else {
                        argv
                    };
                    service
                        .sessions
                        .start(name, &approved, command, rows, cols, peer, record)
                });
            match started {
                Ok(info) => {
                    service.registry.publish_soon();
                    let recorded = if info.recording.is_some() {
                        " (recorded)"
                    } else {
                        ""
                    };
                    audit(
                        "session new",
                        format!("{}{recorded} {shown}", info.id),
                        Outcome::Ok,
                        None,
                    );
                    let _ = put(&mut writer, &Reply::Created(info)).await;
                }
                Err(reason) => {
                    let reason = reason.to_string();
                    audit("session new", shown, Outcome::Denied, Some(reason.clone()));
                    error(&mut writer, &reason).await;
                }
            }
        }
        Request::List => {
            let sessions = service.sessions.list(reach);
            let _ = put(&mut writer, &Reply::Sessions { sessions }).await;
        }
        Request::Kill { session } => match service.sessions.resolve(&session, reach) {
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
                service.registry.publish_soon();
                let _ = put(&mut writer, &Reply::Killed).await;
            }
            Err(why) => {
                unresolved("session kill", &why);
                error(&mut writer, &why.to_string()).await
            }
        },
        Request::DeleteRecording { session } => match service.sessions.resolve(&session, reach) {
            Ok(found) => match service.sessions.delete_recording(&found) {
                Some(bytes) => {
                    audit("session rm-recording", found.id(), Outcome::Ok, None);
                    service.registry.publish_soon();
                    let _ = put(&mut writer, &Reply::RecordingDeleted { bytes }).await;
                }
                None => {
                    let said = format!("session {} has no recording", found.id());
                    error(&mut writer, &said).await
                }
            },
            Err(why) => {
                unresolved("session rm-recording", &why);
                error(&mut writer, &why.to_string()).await
            }
        },
        Request::Export { session } => match service.sessions.resolve(&session, reach) {
            Ok(found) => {
                audit("session export", found.id(), Outcome::Ok, None);
                let recording = service.sessions.recording_of(&found);
                export(&found, recording, &mut writer).await;
            }
            Err(why) => {
                unresolved("session export", &why);
                error(&mut writer, &why.to_string()).await
            }
        },
        Request::Attach {
            session,
            offset,
            rows,
            cols,
            read_only,
        } => match service.sessions.resolve(&session, reach) {
            Ok(found) => {
                let read_only = read_only || watch_only;
                let action = if read_only {
                    "session watch"
                } else {
                    "session attach"
                };
                audit(action, found.id(), Outcome::Ok, None);
                let size = (!read_only && rows > 0 && cols > 0).then_some((rows, cols));
                attach(service, found, offset, size, read_only, reader, &mut writer).await;
                service.registry.publish_soon();
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
/// as it comes, and the client's keys and sizes to the program. A client with no `size`
/// leaves the terminal's size to the others; one that only watches (`size` is `None` for it
/// too) has its keys and sizes dropped, and its coming answers no waiting.
async fn attach<R, W>(
    service: &SessionService,
    session: Arc<Session>,
    offset: Option<u64>,
    size: Option<(u16, u16)>,
    read_only: bool,
    mut reader: R,
    writer: &mut W,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    session.client_joined();
    let _attached = Attached(session.clone());
    // Someone came to answer: the session no longer waits (the publication below says so).
    if !read_only {
        session.answered();
    }
    // A client with no terminal of its own (an agent reading the screen) sends 0 × 0 and
    // leaves the size to the others.
    if let Some((rows, cols)) = size {
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
    service.registry.publish_soon();
    let inputs = async {
        loop {
            match framed::read::<Input, _>(&mut reader, MAX_FRAME).await {
                // A watcher's keys and sizes reach nothing.
                Ok(Some(_)) if read_only => {}
                Ok(Some(Input::Keys { data })) => {
                    // A person typed: the session no longer waits for them.
                    if session.answered() {
                        service.registry.publish_soon();
                    }
                    session.keys(data.into_vec()).await
                }
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

/// Sends the session's output with its times, in frames of about [`CHUNK`]: its whole
/// recording when it has one (`recording`, its file), else what the ring still holds.
async fn export<W: AsyncWrite + Unpin>(
    session: &Session,
    recording: Option<std::path::PathBuf>,
    writer: &mut W,
) {
    let (mut rows, mut cols, created, mut pieces) = session.recording(CHUNK);
    if let Some(path) = recording {
        let read = tokio::task::spawn_blocking(move || super::recorder::read(&path)).await;
        match read {
            Ok(Ok(recorded)) => (rows, cols, pieces) = recorded,
            Ok(Err(e)) => {
                let said = format!("cannot read the session's recording: {e}");
                return error(writer, &said).await;
            }
            Err(_) => return error(writer, "cannot read the session's recording").await,
        }
        // Pieces as the wire carries them: at most a chunk each.
        pieces = pieces
            .into_iter()
            .flat_map(|(time, bytes)| {
                bytes
                    .chunks(CHUNK)
                    .map(|c| (time, c.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
    }
    let frame = |pieces: Vec<Piece>, last: bool| Reply::Recording {
        rows,
        cols,
        created,
        pieces,
        last,
    };
    let mut batch = Vec::new();
    let mut size = 0;
    for (time_ms, data) in pieces {
        // A piece costs its bytes and its framing (a time, a length: at most 16 bytes).
        let cost = data.len() + 16;
        if size + cost > CHUNK && !batch.is_empty() {
            if put(writer, &frame(std::mem::take(&mut batch), false))
                .await
                .is_err()
            {
                return;
            }
            size = 0;
        }
        size += cost;
        batch.push(Piece {
            time_ms,
            data: ByteBuf::from(data),
        });
    }
    let _ = put(writer, &frame(batch, true)).await;
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
