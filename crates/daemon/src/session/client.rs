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

use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use super::{Reach, SessionService, handover, registry::Registry};
use crate::{
    control::Reply,
    dial::Dialer,
    gate::{self, Departure},
};

/// Sessions for this device's user: its own, served on the control connection, and those
/// of other devices, through a stream to their host.
pub struct SessionClient {
    dialer: Dialer,
    service: Arc<SessionService>,
    registry: Arc<Registry>,
}

impl SessionClient {
    pub fn new(dialer: Dialer, service: Arc<SessionService>, registry: Arc<Registry>) -> Self {
        Self {
            dialer,
            service,
            registry,
        }
    }

    /// Serves a session request for the CLI, on this device or through the host's stream.
    pub async fn session(&self, peer: Option<String>, mut request: Request, reply: &mut Reply) {
        let Some(host) = self.host_or_tell(&peer, &mut request, reply).await else {
            return;
        };
        let stream_follows = stream_follows();
        match host {
            None => {
                if reply.send(&stream_follows).await.is_ok() {
                    let (reader, writer) = reply.io();
                    self.service.handle_local(request, reader, writer).await;
                }
            }
            Some(peer) => {
                let Some((stream, departure)) = self.open_on(peer, &request, reply).await else {
                    return;
                };
                if reply.send(&stream_follows).await.is_ok() {
                    tokio::select! {
                        _ = reply.splice(stream) => {}
                        _ = departure.wait() => {}
                    }
                }
            }
        }
    }

    /// Serves an `attach` whose client hands its terminal over (see
    /// `loopsy_wire::handover`): answered `stream` as [`Self::session`] does, then this
    /// node reads the keys and writes the screen itself.
    pub async fn attach_here(&self, peer: Option<String>, mut request: Request, reply: &mut Reply) {
        let Request::Attach { read_only, .. } = request else {
            let refusal =
                control::Error::new(ErrorCode::BadRequest, "only an attach is handed over");
            return drop(reply.send(&Response::Error(refusal)).await);
        };
        let Some(host) = self.host_or_tell(&peer, &mut request, reply).await else {
            return;
        };
        let stream_follows = stream_follows();
        match host {
            None => {
                if reply.send(&stream_follows).await.is_err() {
                    return;
                }
                let Some(terminal) = take_terminal(reply).await else {
                    return;
                };
                // The session is served on one end of an in-memory pipe, as it is on the
                // control connection when nothing is handed over.
                let (ours, theirs) = tokio::io::duplex(4 * session::CHUNK);
                let (reader, writer) = tokio::io::split(theirs);
                let serve =
                    self.service
                        .handle_local(request, reader.compat(), writer.compat_write());
                let attached = handover::run(
                    terminal,
                    ours.compat(),
                    read_only,
                    reply,
                    std::future::pending(),
                );
                // The attachment ending closes its end, which ends the service's side.
                tokio::join!(serve, attached);
            }
            Some(peer) => {
                let Some((stream, departure)) = self.open_on(peer, &request, reply).await else {
                    return;
                };
                if reply.send(&stream_follows).await.is_err() {
                    return;
                }
                let Some(terminal) = take_terminal(reply).await else {
                    return;
                };
                handover::run(terminal, stream, read_only, reply, departure.wait()).await;
            }
        }
    }

    /// Opens the session stream to `peer`'s node with `request`, and what ends it with the
    /// peer's departure; or answers the client with why not.
    async fn open_on(
        &self,
        peer: PeerId,
        request: &Request,
        reply: &mut Reply,
    ) -> Option<(loopsy_mesh::Stream, Departure)> {
        let opened = self
            .dialer
            .open(&peer.to_base58(), protocol::SESSION, request, MAX_FRAME)
            .await;
        match opened {
            Ok((peer, stream)) => Some((stream, self.dialer.departure(peer))),
            Err(e) => {
                let _ = reply.send(&Response::Error(e)).await;
                None
            }
        }
    }

    /// The device that hosts what `request` is about: `None` for this one. A session named
    /// without a host is looked up in the registry, and `request` then names it by its ID.
    /// As [`Self::host_of`]; `None` once the client has been told why not.
    async fn host_or_tell(
        &self,
        peer: &Option<String>,
        request: &mut Request,
        reply: &mut Reply,
    ) -> Option<Option<PeerId>> {
        match self.host_of(peer, request).await {
            Ok(host) => Some(host),
            Err(e) => {
                let _ = reply.send(&Response::Error(e)).await;
                None
            }
        }
    }

    async fn host_of(
        &self,
        peer: &Option<String>,
        request: &mut Request,
    ) -> Result<Option<PeerId>, control::Error> {
        Ok(match (peer, request) {
            (Some(query), _) => match self.dialer.target(query)? {
                peer if peer == self.dialer.mesh().peer_id() => None,
                peer => Some(peer),
            },
            (
                None,
                Request::Attach { session, .. }
                | Request::Kill { session }
                | Request::Export { session }
                | Request::DeleteRecording { session },
            ) => match self.locate(session).await? {
                Some((peer, id)) => {
                    *session = id;
                    Some(peer)
                }
                None => None,
            },
            (None, _) => None,
        })
    }

    /// Every session of the mesh, from the replicated registry (this device's own first
    /// brought up to date).
    pub async fn list(&self) -> Response {
        Response::Sessions {
            sessions: self.hosted().await.into_iter().map(Into::into).collect(),
        }
    }

    /// Every session of the mesh with its host, this device's own brought up to date first.
    async fn hosted(&self) -> Vec<HostedSession> {
        self.registry.publish_now().await;
        self.registry.hosted().await
    }

    /// The sessions of every connected member, asked directly (a member that does not answer
    /// in a few seconds is left out).
    async fn ask_connected(&self) -> Vec<HostedSession> {
        let members = self.dialer.connected_members().await;
        let asked = members.iter().map(|&peer| async move {
            let listed = async {
                let mut stream = gate::open(
                    self.dialer.mesh(),
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
                host: self.dialer.shown(&peer),
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
    async fn locate(&self, query: &str) -> Result<Option<(PeerId, String)>, control::Error> {
        if self.service.sessions().resolve(query, Reach::Every).is_ok() {
            return Ok(None);
        }
        let mut sessions = self.hosted().await;
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
            sessions.extend(self.ask_connected().await);
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
        let by_id: Vec<&HostedSession> =
            sessions.iter().filter(|s| s.session.id == query).collect();
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
}

/// The client's terminal, passed after `stream`; `None` (and the connection closed) when it
/// did not come or cannot be used, which the client reports as a lost attachment.
async fn take_terminal(reply: &mut Reply) -> Option<handover::Terminal> {
    let passed = reply.receive_passed().await?;
    match handover::Terminal::new(passed) {
        Ok(terminal) => Some(terminal),
        Err(error) => {
            tracing::debug!(%error, "a handed-over terminal cannot be used");
            None
        }
    }
}

/// The answer after which the control connection carries the session protocol.
fn stream_follows() -> Response {
    Response::Stream {
        protocol: protocol::SESSION.to_owned(),
    }
}
