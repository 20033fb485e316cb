//! The opening side of exec, for this device's user: open the stream to the peer, and once
//! its gate lets it in, relay the control connection to it, or serve the program's
//! streams on the descriptors the client handed over.

use loopsy_wire::{
    control::{ErrorCode, Response},
    exec, protocol,
};

use super::handover::{self, Stdio};
use crate::{control::Reply, dial::Dialer, gate::Departure};

/// Opens an exec stream to the peer `query` names, sends the start, and once the peer's
/// gate lets it in, relays the client's connection to it.
pub async fn exec(dialer: &Dialer, query: &str, start: exec::Start, reply: &mut Reply) {
    if let Some((stream, departure)) = open(dialer, query, start, reply).await {
        // A stream whose connection closed may never wake its reader.
        tokio::select! {
            _ = reply.splice(stream) => {}
            _ = departure.wait() => {}
        }
    }
}

/// As [`exec`], with the client's stdin, stdout and stderr, which it passes right after the
/// request: taken before anything is dialled, so a client whose descriptors this node
/// cannot use (`bad_request`) relays instead at no cost but a round trip.
/// With `stdin_relayed` the client sends its stdin as frames and the passed one is unread.
pub async fn exec_here(
    dialer: &Dialer,
    query: &str,
    start: exec::Start,
    stdin_relayed: bool,
    reply: &mut Reply,
) {
    let Some(passed) = reply.receive_passed().await else {
        return;
    };
    let stdio = match Stdio::new(passed, stdin_relayed) {
        Ok(stdio) => stdio,
        Err(e) => {
            let message = format!("cannot take the client's stdin, stdout and stderr: {e}");
            return reply.error(ErrorCode::BadRequest, message).await;
        }
    };
    if let Some((stream, departure)) = open(dialer, query, start, reply).await {
        handover::run(stdio, stream, reply, departure.wait()).await;
    }
}

/// Opens the exec stream to the peer `query` names with `start`, and tells the client it is
/// open; `None` once the client has been told why not (or has gone).
async fn open(
    dialer: &Dialer,
    query: &str,
    start: exec::Start,
    reply: &mut Reply,
) -> Option<(loopsy_mesh::Stream, Departure)> {
    let first = exec::Request::Start(start);
    let (peer, stream) = match dialer
        .open(query, protocol::EXEC, &first, exec::MAX_FRAME)
        .await
    {
        Ok(opened) => opened,
        Err(e) => {
            let _ = reply.send(&Response::Error(e)).await;
            return None;
        }
    };
    let departure = dialer.departure(peer);
    let started = Response::Stream {
        protocol: protocol::EXEC.to_owned(),
    };
    reply.send(&started).await.ok()?;
    Some((stream, departure))
}
