//! `loopsy session` and `loopsy attach` on the device that runs them: a session on this
//! device is served right on the control connection; one on a peer goes over a
//! `/loopsy/session/1` stream that the daemon relays. Listing, and finding a session's
//! host, read the replicated session registry.

use std::{sync::Arc, time::Duration};

use loopsy_mesh::PeerId;
use loopsy_wire::{
    control::{self, ErrorCode, HostedSession, Response},
    protocol,
    session::{self, MAX_FRAME, Request},
};

use super::{Node, api::open};
use crate::{control::Reply, gate};

/// Serves a session request for the CLI, on this device or through the host's stream.
pub(super) async fn session(
    node: &Arc<Node>,
    peer: Option<String>,
    mut request: Request,
    reply: &mut Reply,
) {
    let host = match (&peer, &mut request) {
        (Some(query), _) => match super::api::target(node, query) {
            Ok(peer) if peer == node.mesh.peer_id() => None,
            Ok(peer) => Some(peer),
            Err(e) => return drop(reply.send(&Response::Error(e)).await),
        },
        (None, Request::Attach { session, .. } | Request::Kill { session }) => {
            match locate(node, session).await {
                Ok(Some((peer, id))) => {
                    *session = id;
                    Some(peer)
                }
                Ok(None) => None,
                Err(e) => return drop(reply.send(&Response::Error(e)).await),
            }
        }
        (None, _) => None,
    };
    let stream_follows = Response::Stream {
        protocol: protocol::SESSION.to_owned(),
    };
    match host {
        None => {
            if reply.send(&stream_follows).await.is_ok() {
                let (reader, writer) = reply.io();
                crate::session::handle(node, None, request, reader, writer).await;
            }
        }
        Some(peer) => {
            let query = peer.to_base58();
            let (peer, stream) =
                match open(node, &query, protocol::SESSION, &request, MAX_FRAME).await {
                    Ok(opened) => opened,
                    Err(e) => return drop(reply.send(&Response::Error(e)).await),
                };
            let departure = gate::Departure::connection(node, peer);
            if reply.send(&stream_follows).await.is_ok() {
                tokio::select! {
                    _ = reply.splice(stream) => {}
                    _ = departure.wait(node) => {}
                }
            }
        }
    }
}

/// Every session of the mesh, from the replicated registry (this device's own first
/// brought up to date).
pub(super) async fn list(node: &Arc<Node>) -> Response {
    Response::Sessions {
        sessions: hosted(node).await.into_iter().map(Into::into).collect(),
    }
}

/// Every session of the mesh with its host, this device's own brought up to date first.
async fn hosted(node: &Arc<Node>) -> Vec<HostedSession> {
    let publishing = node.clone();
    let _ =
        tokio::task::spawn_blocking(move || crate::session::registry::publish(&publishing)).await;
    crate::session::registry::hosted(node).await
}

/// The sessions of every connected member, asked directly (a member that does not answer
/// in a few seconds is left out).
async fn ask_connected(node: &Arc<Node>) -> Vec<HostedSession> {
    let members = node.connected_members().await;
    let asked = members.iter().map(|&peer| async move {
        let listed = async {
            let mut stream = gate::open(
                &node.mesh,
                peer,
                protocol::SESSION,
                &Request::List,
                MAX_FRAME,
            )
            .await
            .ok()?;
            match loopsy_mesh::framed::read::<session::Reply, _>(&mut stream, MAX_FRAME).await {
                Ok(Some(session::Reply::Sessions { sessions })) => Some(sessions),
                _ => None,
            }
        };
        let sessions = tokio::time::timeout(Duration::from_secs(3), listed)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        sessions.into_iter().map(move |session| HostedSession {
            host: node.peer_name(&peer).unwrap_or_else(|| peer.to_base58()),
            host_peer_id: peer.to_base58(),
            host_online: true,
            last_seen: None,
            session,
        })
    });
    futures::future::join_all(asked)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The host of the session called `query`: `None` for this device.
async fn locate(node: &Arc<Node>, query: &str) -> Result<Option<(PeerId, String)>, control::Error> {
    if node
        .sessions
        .resolve(query, crate::session::Reach::Every)
        .is_ok()
    {
        return Ok(None);
    }
    let mut sessions = hosted(node).await;
    // A session started a moment ago may not have reached this device's registry yet:
    // then the connected devices are asked directly.
    let known = |sessions: &[HostedSession]| {
        sessions.iter().any(|s| {
            s.session.id.starts_with(query)
                || s.session
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(query))
        })
    };
    if !known(&sessions) {
        sessions.extend(ask_connected(node).await);
    }
    let matches = |exact: bool| -> Vec<&HostedSession> {
        sessions
            .iter()
            .filter(|s| {
                let names = [Some(s.session.id.as_str()), s.session.name.as_deref()];
                names.into_iter().flatten().any(|n| {
                    if exact {
                        n == query
                    } else {
                        n.starts_with(query)
                    }
                })
            })
            .collect()
    };
    let by_id: Vec<&HostedSession> = sessions.iter().filter(|s| s.session.id == query).collect();
    let mut found = if by_id.len() == 1 {
        by_id
    } else {
        matches(true)
    };
    if found.is_empty() {
        found = matches(false);
    }
    if found.len() > 1 {
        let running: Vec<_> = found
            .iter()
            .copied()
            .filter(|s| s.session.status == session::Status::Running)
            .collect();
        if running.len() == 1 {
            found = running;
        }
    }
    match found.as_slice() {
        [] => Err(control::Error::new(
            ErrorCode::NotFound,
            format!(
                "no session is called `{query}` on this device or a connected one; see `loopsy session ls`"
            ),
        )),
        [one] => {
            let peer = one
                .host_peer_id
                .parse()
                .map_err(|_| control::Error::new(ErrorCode::Internal, "a bad peer ID"))?;
            Ok(Some((peer, one.session.id.clone())))
        }
        many => Err(control::Error::new(
            ErrorCode::Ambiguous,
            format!(
                "`{query}` matches several sessions: {}",
                many.iter()
                    .map(|s| format!("{} on {}", s.session.id, s.host))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}
