//! The opening side of exec, for this device's user: open the stream to the peer, and once
//! its gate lets it in, relay the control connection to it.

use loopsy_wire::{control::Response, exec, protocol};

use crate::{control::Reply, dial::Dialer};

/// Opens an exec stream to the peer `query` names, sends the start, and once the peer's
/// gate lets it in, relays the client's connection to it.
pub async fn exec(dialer: &Dialer, query: &str, start: exec::Start, reply: &mut Reply) {
    let first = exec::Request::Start(start);
    let (peer, stream) = match dialer
        .open(query, protocol::EXEC, &first, exec::MAX_FRAME)
        .await
    {
        Ok(opened) => opened,
        Err(e) => return drop(reply.send(&Response::Error(e)).await),
    };
    let started = Response::Stream {
        protocol: protocol::EXEC.to_owned(),
    };
    let departure = dialer.departure(peer);
    if reply.send(&started).await.is_ok() {
        // A stream whose connection closed may never wake its reader.
        tokio::select! {
            _ = reply.splice(stream) => {}
            _ = departure.wait() => {}
        }
    }
}
