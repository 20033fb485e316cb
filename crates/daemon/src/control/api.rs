//! The control API's requests, answered from the node's state.

use std::{sync::Arc, time::Duration};

use loopsy_mesh::{Link, Mesh, Multiaddr, PeerId};
use loopsy_wire::{
    control::{self, Connection, ErrorCode, Invitation, NatStatus, Request, Response, TrustedPeer},
    pair::Code,
};

use crate::{
    Home,
    audit::{Audit, Outcome},
    caps::{self, Caps},
    clock,
    control::{Handler, Reply},
    ctx::Ctx,
    dial::Dialer,
    inbox::Messages,
    pair::{self, Pairing},
    service::Tasks,
    session::client::SessionClient,
    sync::Pushes,
    transfer::homes::Homes,
    trust::{PeerSettings, ResolveError, Trust, Via},
};

/// Shortest and longest a pairing code may live, single-use or `--multi`: long enough to
/// walk to the other device, short enough that a code seen over a shoulder or left in a
/// chat log is soon worth nothing.
const MIN_TTL: Duration = Duration::from_secs(30);
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long `trust set` waits for a connection to the member at its new addresses.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// Audit entries per response frame.
const AUDIT_BATCH: usize = 256;

/// The daemon's answerer on the control socket: each request goes to the component that
/// owns what it asks about.
pub struct Api {
    pub identity: control::Identity,
    pub mesh: Mesh,
    pub name: String,
    pub home: Home,
    pub started: std::time::Instant,
    pub trust: Arc<Trust>,
    pub audit: Arc<Audit>,
    pub pushes: Pushes,
    pub pairing: Arc<Pairing>,
    pub dialer: Dialer,
    pub sessions: SessionClient,
    pub ctx: Ctx,
    pub messages: Arc<Messages>,
    /// The Loopsy homes a pull keeps out of.
    pub homes: Homes,
    /// Dials it started in the background (`trust add`).
    pub tasks: Tasks,
    /// The mesh's attention events.
    pub events: Arc<crate::attention::Events>,
}

impl Handler for Api {
    async fn handle(&self, request: Request, reply: &mut Reply) {
        let node = self;
        let response = match request {
            Request::Id => Response::Id(node.identity.clone()),
            Request::Status => status(node).await,
            Request::Peers => peers(node).await,
            Request::NetCheck => netcheck(node).await,
            Request::PairInvite {
                ttl_secs,
                allow,
                multi,
            } => return invite(node, ttl_secs, allow, multi, reply).await,
            Request::PairJoin { code, allow } => join(node, &code, allow).await,
            Request::TrustList => trust_list(node),
            Request::TrustAdd {
                peer_id,
                name,
                addrs,
                allow,
            } => trust_add(node, &peer_id, &name, &addrs, allow).await,
            Request::TrustSet {
                peer,
                name,
                addrs,
                allow,
            } => trust_set(node, &peer, name, &addrs, allow).await,
            Request::TrustRemove { peer } => trust_remove(node, &peer).await,
            Request::Audit { follow, since } => return audit(node, follow, since, reply).await,
            Request::Exec { peer, start } => {
                return crate::exec::client::exec(&node.dialer, &peer, start, reply).await;
            }
            Request::ExecHere {
                peer,
                start,
                stdin_relayed,
            } => {
                let dialer = &node.dialer;
                return crate::exec::client::exec_here(dialer, &peer, start, stdin_relayed, reply)
                    .await;
            }
            Request::Copy(copy) => {
                return crate::transfer::client::copy(&node.dialer, &node.homes, copy, reply).await;
            }
            Request::Session { peer, request } => {
                return node.sessions.session(peer, request, reply).await;
            }
            Request::AttachHere { peer, request } => {
                return node.sessions.attach_here(peer, request, reply).await;
            }
            Request::SessionList => node.sessions.list().await,
            Request::CtxSet {
                key,
                value,
                ttl_secs,
            } => node.ctx.set(&key, &value, ttl_secs),
            Request::CtxGet { key } => node.ctx.get(&key),
            Request::CtxList { prefix } => node.ctx.list(&prefix),
            Request::CtxRemove { key } => node.ctx.remove(&key),
            Request::MsgSend { peer, text } => msg_send(node, &peer, &text).await,
            Request::MsgInbox => msg_inbox(node),
            Request::PeersForget { peer } => peers_forget(node, &peer).await,
            Request::Events { follow, since_ms } => {
                return crate::attention::stream(&node.events, follow, since_ms, reply).await;
            }
            Request::Notify {
                session,
                title,
                text,
            } => node.events.notify(session, title, text).await,
        };
        let _ = reply.send(&response).await;
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(control::Error::new(code, message))
}

fn stopping() -> Response {
    error(ErrorCode::Unavailable, "the node is shutting down")
}

/// Addresses as a user gave them, or which one is not an address.
fn parse_addrs(addrs: &[String]) -> Result<Vec<Multiaddr>, control::Error> {
    addrs
        .iter()
        .map(|addr| {
            addr.parse::<Multiaddr>().map_err(|_| {
                control::Error::new(
                    ErrorCode::InvalidArgument,
                    format!("`{addr}` is not an address like /ip4/192.0.2.7/tcp/7717"),
                )
            })
        })
        .collect()
}

fn parse_allow(allow: Option<Vec<String>>) -> Result<Option<Caps>, control::Error> {
    allow
        .map(|a| caps::parse(&a))
        .transpose()
        .map_err(|e| control::Error::new(ErrorCode::InvalidArgument, e.to_string()))
}

async fn status(node: &Api) -> Response {
    let Ok(net) = node.mesh.status().await else {
        return stopping();
    };
    let strings = |addrs: Vec<Multiaddr>| addrs.iter().map(ToString::to_string).collect();
    Response::Status(control::Status {
        peer_id: net.peer_id.to_base58(),
        name: node.name.clone(),
        listen_addrs: strings(net.listen_addrs),
        external_addrs: strings(net.external_addrs),
        relayed_addrs: strings(net.relayed_addrs),
        nat: match net.nat {
            loopsy_mesh::Nat::Unknown => NatStatus::Unknown,
            loopsy_mesh::Nat::Public => NatStatus::Public,
            loopsy_mesh::Nat::Private => NatStatus::Private,
        },
        relay_reservations: strings(net.reservations),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_secs: node.started.elapsed().as_secs(),
        home: node.home.dir().display().to_string(),
        config: node.home.config().display().to_string(),
    })
}

/// What this device's network allows, and how each member is reached.
async fn netcheck(node: &Api) -> Response {
    let Ok(net) = node.mesh.netcheck().await else {
        return stopping();
    };
    let members: Vec<crate::netcheck::Member> = node
        .trust
        .list()
        .into_iter()
        .map(|listed| crate::netcheck::Member {
            peer_id: listed.member.peer_id,
            name: Some(listed.member.name.clone()).filter(|n| !n.is_empty()),
        })
        .collect();
    Response::NetCheck(crate::netcheck::report(net, &members))
}

/// Paired devices (online or not) and devices seen on the network.
async fn peers(node: &Api) -> Response {
    let Ok(mut seen) = node.mesh.peers().await else {
        return stopping();
    };
    let mut peers = Vec::new();
    for listed in node.trust.list() {
        let member = listed.member;
        let live = seen
            .iter()
            .position(|p| p.peer_id == member.peer_id)
            .map(|i| seen.swap_remove(i));
        let mut addrs: Vec<String> = live
            .as_ref()
            .map(|p| p.addrs.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        for addr in &member.addrs {
            let addr = addr.to_string();
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        peers.push(control::Peer {
            name: Some(member.name.clone())
                .filter(|n| !n.is_empty())
                .or_else(|| live.as_ref().and_then(|p| p.name.clone())),
            peer_id: member.peer_id.to_base58(),
            paired: true,
            online: live.as_ref().is_some_and(|p| p.is_connected()),
            connection: live
                .as_ref()
                .map_or(Connection::None, |p| connection(p.link)),
            addrs,
            rtt_ms: live
                .as_ref()
                .and_then(|p| p.rtt)
                .map(|d| d.as_secs_f64() * 1000.0),
            connections: live.as_ref().map_or(0, |p| p.connections as u32),
            relayed_connections: live.as_ref().map_or(0, |p| p.relayed_connections as u32),
            last_seen: live.as_ref().map(|p| seen_at(p.seen_ago)),
        });
    }
    for peer in seen {
        peers.push(control::Peer {
            online: peer.is_connected(),
            name: peer.name,
            peer_id: peer.peer_id.to_base58(),
            paired: false,
            connection: connection(peer.link),
            addrs: peer.addrs.iter().map(ToString::to_string).collect(),
            rtt_ms: peer.rtt.map(|d| d.as_secs_f64() * 1000.0),
            connections: peer.connections as u32,
            relayed_connections: peer.relayed_connections as u32,
            last_seen: Some(seen_at(peer.seen_ago)),
        });
    }
    Response::Peers { peers }
}

/// Drops a device that is not a member from the peers listed (and closes its connections).
async fn peers_forget(node: &Api, query: &str) -> Response {
    if let Ok(member) = node.trust.resolve(query) {
        let name = node.dialer.shown(&member);
        let message = format!(
            "{name} is a member of the mesh: revoke it first (`loopsy trust rm {name}`), \
             then `loopsy peers forget` drops it from the list"
        );
        return error(ErrorCode::Refused, message);
    }
    let Ok(seen) = node.mesh.peers().await else {
        return stopping();
    };
    let peer = match loopsy_mesh::matching(query, &seen).as_slice() {
        [one] => (*one).clone(),
        [] => {
            return error(
                ErrorCode::NotFound,
                format!("no device `{query}` is listed"),
            );
        }
        many => {
            let named: Vec<String> = many
                .iter()
                .map(|p| format!("{} ({})", p.name.as_deref().unwrap_or("?"), p.peer_id))
                .collect();
            let message = format!("`{query}` matches {}: give more of it", named.join(", "));
            return error(ErrorCode::Ambiguous, message);
        }
    };
    if node.mesh.forget(peer.peer_id).await.is_err() {
        return stopping();
    }
    let name = peer.name.unwrap_or_default();
    Response::Done {
        message: format!(
            "forgot {name} ({}); it is listed again if it connects or is seen on the LAN",
            peer.peer_id
        ),
    }
}

/// The wall-clock time `ago` before now, in RFC 3339.
fn seen_at(ago: std::time::Duration) -> String {
    let ago = u64::try_from(ago.as_millis()).unwrap_or(u64::MAX);
    crate::clock::rfc3339_ms(crate::clock::now_ms().saturating_sub(ago))
}

fn connection(link: Link) -> Connection {
    match link {
        Link::Direct => Connection::Direct,
        Link::Relayed => Connection::Relayed,
        Link::None => Connection::None,
    }
}

/// Shows a code, then reports each device that pairs with it until it expires or the
/// client hangs up (which withdraws it).
async fn invite(
    node: &Api,
    ttl_secs: u64,
    allow: Option<Vec<String>>,
    multi: bool,
    reply: &mut Reply,
) {
    let allow = match parse_allow(allow) {
        Ok(allow) => allow,
        Err(e) => return drop(reply.send(&Response::Error(e)).await),
    };
    let ttl = Duration::from_secs(ttl_secs);
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        let message = format!(
            "a pairing code lives between 30s and 24h (asked: {ttl_secs}s); pick a --ttl in that range"
        );
        return reply.error(ErrorCode::InvalidArgument, message).await;
    }
    let expires = clock::now_secs() + ttl.as_secs();
    let (claim, mut events, _withdraw) =
        match node.pairing.invitations().open(expires, allow, multi) {
            Ok(opened) => opened,
            Err(e) => return reply.error(ErrorCode::Unavailable, e.to_string()).await,
        };
    let code = Code {
        inviter: node.mesh.peer_id().to_bytes(),
        addrs: node
            .pairing
            .advertised()
            .await
            .iter()
            .map(|a| a.to_vec())
            .collect(),
        invite: claim.id,
        secret: claim.secret,
        expires,
    };
    // A short code beside the long one, for a device that sees this one (see `pair::short`).
    let (short_code, mut withdraw_short) = match node.pairing.open_short(&claim) {
        Ok((short, withdraw)) => (Some(short.to_text()), Some(withdraw)),
        Err(e) => {
            tracing::debug!(error = %e, "no short pairing code");
            (None, None)
        }
    };
    let code = code.to_text();
    let url = match node.mesh.status().await {
        Ok(status) => {
            let addrs: Vec<_> = status
                .listen_addrs
                .into_iter()
                .chain(status.relayed_addrs)
                .collect();
            pair::link(&addrs, &code)
        }
        Err(_) => None,
    };
    let invitation = Invitation {
        code,
        expires: clock::rfc3339(expires),
        short_code,
        url,
    };
    if reply.send(&Response::Invitation(invitation)).await.is_err() {
        return;
    }
    let deadline = tokio::time::sleep(ttl);
    tokio::pin!(deadline);
    let mut paired = 0;
    loop {
        tokio::select! {
            _ = reply.closed() => return,
            _ = &mut deadline => break,
            _ = short_withdrawn(&mut withdraw_short) => {
                let message = format!(
                    "the short code was tried wrongly {} times and is withdrawn; the long \
                     code still works",
                    pair::short::MAX_FAILURES
                );
                if reply.send(&Response::ShortCodeWithdrawn { message }).await.is_err() {
                    return;
                }
            }
            event = events.recv() => match event {
                Some(p) => {
                    paired += 1;
                    if reply.send(&Response::Paired(p)).await.is_err() || !multi {
                        return;
                    }
                }
                None => break,
            },
        }
    }
    if paired == 0 {
        reply
            .error(
                ErrorCode::Expired,
                "the pairing code expired before a device used it",
            )
            .await;
    }
}

/// Returns once the short code is withdrawn for its wrong tries (never without one).
async fn short_withdrawn(withdraw: &mut Option<pair::short::Withdraw>) {
    match withdraw {
        Some(withdraw) => withdraw.withdrawn().await,
        None => std::future::pending().await,
    }
}

async fn join(node: &Api, code: &str, allow: Option<Vec<String>>) -> Response {
    let allow = match parse_allow(allow) {
        Ok(allow) => allow,
        Err(e) => return Response::Error(e),
    };
    match node.pairing.join(&node.mesh, code, allow).await {
        Ok(paired) => Response::Paired(paired),
        Err(e) => {
            let code = match e {
                pair::JoinError::Code(_)
                | pair::JoinError::ShortCode(_)
                | pair::JoinError::OwnCode => ErrorCode::InvalidArgument,
                pair::JoinError::Find(pair::FindError::NotInSight(_)) => ErrorCode::NotFound,
                pair::JoinError::Find(pair::FindError::Several { .. }) => ErrorCode::Ambiguous,
                pair::JoinError::Expired(_) => ErrorCode::Expired,
                pair::JoinError::Unreachable(_) => ErrorCode::Unreachable,
                pair::JoinError::Refused(_) => ErrorCode::Refused,
                pair::JoinError::Failed(_) => ErrorCode::Internal,
            };
            error(code, e.to_string())
        }
    }
}

fn trust_list(node: &Api) -> Response {
    let list = node.trust.list();
    let name_of = |peer: &PeerId| {
        list.iter()
            .find(|l| l.member.peer_id == *peer)
            .map(|l| l.member.name.clone())
            .unwrap_or_else(|| peer.to_base58())
    };
    let peers = list
        .iter()
        .map(|l| TrustedPeer {
            peer_id: l.member.peer_id.to_base58(),
            name: l.member.name.clone(),
            addrs: l.member.addrs.iter().map(ToString::to_string).collect(),
            allow: caps::names(&l.grants),
            they_allow: l.settings.they_allow.clone(),
            via: match &l.member.via {
                Via::Direct => l.settings.how.clone().unwrap_or_else(|| "paired".into()),
                Via::IntroducedBy(peer) => format!("introduced by {}", name_of(peer)),
            },
            kind: l.settings.kind.unwrap_or_default().as_str().to_owned(),
        })
        .collect();
    Response::Trust { peers }
}

async fn trust_add(
    node: &Api,
    peer_id: &str,
    name: &str,
    addrs: &[String],
    allow: Option<Vec<String>>,
) -> Response {
    let Ok(peer) = peer_id.parse::<PeerId>() else {
        return error(
            ErrorCode::InvalidArgument,
            format!("`{peer_id}` is not a peer ID (see `loopsy id` on that device)"),
        );
    };
    if peer == node.mesh.peer_id() {
        return error(
            ErrorCode::InvalidArgument,
            "that is this device's own peer ID",
        );
    }
    let name = loopsy_mesh::sanitize_name(name);
    if name.is_empty() {
        return error(
            ErrorCode::InvalidArgument,
            "give the device a name with --name",
        );
    }
    let (parsed, allow) = match parse_addrs(addrs).and_then(|a| Ok((a, parse_allow(allow)?))) {
        Ok(parsed) => parsed,
        Err(e) => return Response::Error(e),
    };
    let known = node.trust.is_member(&peer);
    let settings = PeerSettings {
        peer_id: peer.to_base58(),
        name: Some(name.clone()),
        allow: allow.as_ref().map(caps::names),
        they_allow: None,
        how: Some("added".into()),
        exec: None,
        files: None,
        kind: None,
    };
    let record = match node.trust.admit(peer, &name, &parsed, settings) {
        Ok(record) => record,
        Err(e) => return error(ErrorCode::Internal, e.to_string()),
    };
    node.pushes.members(&[record], None);
    node.audit.record(
        Some(peer),
        Some(name.clone()),
        "trust add",
        parsed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        Outcome::Ok,
        None,
    );
    let mesh = node.mesh.clone();
    node.tasks.spawn(async move {
        let _ = mesh.connect(peer, parsed).await;
    });
    let message = if known {
        format!("{name} was a member already: its name here, addresses and grants are updated")
    } else {
        format!(
            "trusted {name} ({peer}). On {name}, trust this device too: loopsy trust add {} --name {}",
            node.mesh.peer_id(),
            node.name
        )
    };
    Response::Done { message }
}

/// `trust set`: a member's name here, addresses (dialled at once), grants.
async fn trust_set(
    node: &Api,
    query: &str,
    name: Option<String>,
    addrs: &[String],
    allow: Option<Vec<String>>,
) -> Response {
    let peer = match node.trust.resolve(query) {
        Ok(peer) => peer,
        Err(e @ ResolveError::NotFound(_)) => return error(ErrorCode::NotFound, e.to_string()),
        Err(e @ ResolveError::Ambiguous(..)) => return error(ErrorCode::Ambiguous, e.to_string()),
    };
    let name = name.map(|n| loopsy_mesh::sanitize_name(&n));
    if name.as_ref().is_some_and(String::is_empty) {
        return error(ErrorCode::InvalidArgument, "a name cannot be empty");
    }
    let (parsed, allow) = match parse_addrs(addrs).and_then(|a| Ok((a, parse_allow(allow)?))) {
        Ok(parsed) => parsed,
        Err(e) => return Response::Error(e),
    };
    let changed = [
        name.as_ref().map(|n| format!("name {n}")),
        (!parsed.is_empty()).then(|| format!("{} addresses", parsed.len())),
        allow
            .as_ref()
            .map(|a| format!("allow {}", caps::names(a).join(","))),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>();
    if changed.is_empty() {
        return error(
            ErrorCode::InvalidArgument,
            "nothing to change: give --name, --addr or --allow",
        );
    }
    match node.trust.set(peer, name, &parsed, allow) {
        Ok(Some(record)) => node.pushes.members(&[record], None),
        Ok(None) => {}
        Err(e) => return error(ErrorCode::Internal, e.to_string()),
    }
    let shown = node.trust.name_of(&peer).unwrap_or_default();
    node.audit.record(
        Some(peer),
        Some(shown.clone()),
        "trust set",
        changed.join("; "),
        Outcome::Ok,
        None,
    );
    let mut message = format!("{shown}: set {}", changed.join(", "));
    if !parsed.is_empty() {
        let reached = tokio::time::timeout(CONNECT_DEADLINE, node.mesh.connect(peer, parsed)).await;
        message.push_str(match reached {
            Ok(Ok(Ok(()))) => "; connected",
            _ => "; not reachable at those addresses right now (it will be tried again)",
        });
    }
    Response::Done { message }
}

async fn trust_remove(node: &Api, query: &str) -> Response {
    let peer = match node.trust.resolve(query) {
        Ok(peer) => peer,
        Err(e @ ResolveError::NotFound(_)) => return error(ErrorCode::NotFound, e.to_string()),
        Err(e @ ResolveError::Ambiguous(..)) => return error(ErrorCode::Ambiguous, e.to_string()),
    };
    let name = node.trust.name_of(&peer);
    // Counted first: the keeper also reacts to the revocation, and may close them first.
    let closed = node
        .mesh
        .peers()
        .await
        .unwrap_or_default()
        .iter()
        .find(|p| p.peer_id == peer)
        .map_or(0, |p| p.connections);
    let (record, dropped) = match node.trust.revoke(peer) {
        Ok(revoked) => revoked,
        Err(e) => return error(ErrorCode::Internal, e.to_string()),
    };
    node.pushes.members(&[record], Some(peer));
    // Returns once every connection to it is closed (or none was left to close).
    let _ = tokio::time::timeout(Duration::from_secs(5), node.mesh.disconnect(peer)).await;
    node.audit.record(
        Some(peer),
        name.clone(),
        "trust rm",
        format!("{closed} connections closed"),
        Outcome::Ok,
        None,
    );
    for gone in &dropped {
        node.audit.record(
            Some(gone.peer_id),
            Some(gone.name.clone()),
            "trust rm",
            format!("introduced by {} alone", name.clone().unwrap_or_default()),
            Outcome::Ok,
            None,
        );
        let _ =
            tokio::time::timeout(Duration::from_secs(5), node.mesh.disconnect(gone.peer_id)).await;
    }
    let mut message = format!(
        "revoked {} ({peer}) on every device of the mesh; closed {closed} connection{}",
        name.unwrap_or_default(),
        if closed == 1 { "" } else { "s" }
    );
    if !dropped.is_empty() {
        let names: Vec<String> = dropped
            .iter()
            .map(|m| format!("{} ({})", m.name, m.peer_id))
            .collect();
        message.push_str(&format!(
            ". Its introductions no longer count: {} left the mesh here too, since no \
             other member vouched for {}; pair or `loopsy trust add` a device again to keep it",
            names.join(", "),
            if dropped.len() == 1 { "it" } else { "them" }
        ));
    }
    Response::Done { message }
}

/// Sends the log on disk, then with `follow` every new entry until the client hangs up.
async fn audit(node: &Api, follow: bool, since: Option<String>, reply: &mut Reply) {
    let mut live = node.audit.subscribe();
    let mut entries = node.audit.read_all();
    // Times are RFC 3339 in UTC with milliseconds, so they order as text.
    if let Some(since) = &since {
        entries.retain(|e| e.time >= *since);
    }
    for batch in entries.chunks(AUDIT_BATCH) {
        let frame = Response::Audit {
            entries: batch.to_vec(),
        };
        if reply.send(&frame).await.is_err() {
            return;
        }
    }
    if entries.is_empty() && !follow {
        let _ = reply
            .send(&Response::Audit {
                entries: Vec::new(),
            })
            .await;
    }
    if !follow {
        return;
    }
    loop {
        tokio::select! {
            _ = reply.closed() => return,
            entry = live.recv() => match entry {
                Ok(entry) => {
                    let frame = Response::Audit { entries: vec![entry] };
                    if reply.send(&frame).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// How long `msg send` waits for the recipient's acknowledgement.
const DELIVERY_WAIT: Duration = Duration::from_secs(3);

async fn msg_send(node: &Api, query: &str, text: &str) -> Response {
    let peer = match node.trust.resolve(query) {
        Ok(peer) => peer,
        Err(e @ ResolveError::NotFound(_)) => return error(ErrorCode::NotFound, e.to_string()),
        Err(e @ ResolveError::Ambiguous(..)) => return error(ErrorCode::Ambiguous, e.to_string()),
    };
    // What the peer said it grants this device when they paired: a device that does not
    // take messages from here would refuse this one (and audit it) when it arrived.
    if let Some(granted) = node.trust.they_allow(&peer)
        && !granted.iter().any(|c| c == "msg" || c == "all")
    {
        let name = node
            .trust
            .name_of(&peer)
            .unwrap_or_else(|| query.to_owned());
        return error(
            ErrorCode::Refused,
            format!(
                "{name} does not take messages from this device (it grants it: {}); ask for \
                 `msg` on {name}",
                if granted.is_empty() {
                    "nothing".to_owned()
                } else {
                    granted.join(", ")
                }
            ),
        );
    }
    let id = match node.messages.send(peer, text) {
        Ok(id) => id,
        Err(e) => return error(ErrorCode::InvalidArgument, e.to_string()),
    };
    let mut changes = node.messages.subscribe();
    let acked = tokio::time::timeout(DELIVERY_WAIT, async {
        while !node.messages.delivered(&id) {
            if changes.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
    let delivered = acked.is_ok() && node.messages.delivered(&id);
    Response::MsgSent { id, delivered }
}

fn msg_inbox(node: &Api) -> Response {
    let messages = node
        .messages
        .inbox()
        .into_iter()
        .map(|m| control::InboxMessage {
            id: m.id,
            from: m.from,
            text: m.text,
            sent: clock::rfc3339_ms(m.sent_ms),
            received: clock::rfc3339_ms(m.received_ms),
        })
        .collect();
    Response::Inbox { messages }
}
