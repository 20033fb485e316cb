//! The local control API: how the CLI (or any local program) talks to its daemon.
//!
//! One request per connection on the daemon's Unix socket: the client sends one
//! [`Envelope`] frame, the daemon answers with one [`Response`] frame (streams, such as a
//! followed log, answer with several) and closes. Field names are stable: programs in other
//! languages rely on them (see `docs/control-api.md`).

use serde::{Deserialize, Serialize};

/// The largest control frame either side accepts.
pub const MAX_FRAME: usize = crate::frame::DEFAULT_MAX_FRAME;

/// A request with the API version it was written against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The client's [`crate::protocol::CONTROL_VERSION`].
    pub v: u16,
    #[serde(flatten)]
    pub request: Request,
}

impl Envelope {
    /// Wraps `request` with this build's API version.
    pub fn new(request: Request) -> Self {
        Self {
            v: crate::protocol::CONTROL_VERSION,
            request,
        }
    }
}

/// Decodes a request frame body, checking the version before the request itself so that a
/// client of another version gets a clear answer even for a request this build does not know.
pub fn decode_request(body: &[u8]) -> Result<Request, Error> {
    #[derive(Deserialize)]
    struct VersionOnly {
        v: u16,
    }
    let bad = |e: crate::DecodeError| {
        Error::new(ErrorCode::BadRequest, format!("not a control request: {e}"))
    };
    let VersionOnly { v } = crate::frame::decode(body).map_err(bad)?;
    if v != crate::protocol::CONTROL_VERSION {
        return Err(Error::new(
            ErrorCode::VersionMismatch,
            format!(
                "this node speaks control API version {}, the client version {v}; use the \
                 loopsy binary that matches the running node",
                crate::protocol::CONTROL_VERSION
            ),
        ));
    }
    let envelope: Envelope = crate::frame::decode(body).map_err(bad)?;
    Ok(envelope.request)
}

/// What a client asks of its daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// This device's peer ID and name.
    Id,
    /// Addresses, NAT status and relay reservations.
    Status,
    /// Known peers: paired and discovered.
    Peers,
    /// What this device's network allows, as the node has seen it: answers `netcheck`.
    #[serde(rename = "netcheck")]
    NetCheck,
    /// Make a pairing code and wait for devices to use it: answers `invitation`, then a
    /// `paired` for each device that joins (one unless `multi`), then closes at expiry.
    /// Closing the connection withdraws the invitation.
    PairInvite {
        ttl_secs: u64,
        /// Capabilities to grant the joiner; `None` for the configured defaults.
        allow: Option<Vec<String>>,
        multi: bool,
    },
    /// Pair with the device that shows `code`: answers `paired`.
    PairJoin {
        code: String,
        allow: Option<Vec<String>>,
    },
    /// The trust store: answers `trust`.
    TrustList,
    /// Trust a device by peer ID, without a code: answers `done`.
    TrustAdd {
        peer_id: String,
        name: String,
        addrs: Vec<String>,
        allow: Option<Vec<String>>,
    },
    /// Change what this device knows of a member (name, peer ID or unique prefix): the name
    /// it goes by here, addresses to reach it (dialled at once, and spread), what it may do
    /// here. Answers `done`.
    TrustSet {
        peer: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default)]
        addrs: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allow: Option<Vec<String>>,
    },
    /// Revoke a device (name, peer ID or unique prefix) mesh-wide: answers `done`.
    TrustRemove { peer: String },
    /// The audit log: answers `audit` frames, and with `follow` keeps sending new entries.
    /// With `since` (an RFC 3339 time, as entries carry), only entries from then on.
    Audit {
        follow: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<String>,
    },
    /// Run a program on a peer: answers `stream`, after which the connection carries the
    /// frames of `/loopsy/exec/1` both ways (see `crate::exec`).
    Exec {
        peer: String,
        start: crate::exec::Start,
    },
    /// An `exec` with the client's stdin, stdout and stderr handed over: right after this
    /// frame the client sends them on one byte (`crate::handover::PASS_BYTE`, SCM_RIGHTS);
    /// the node writes the program's output and reads its input itself. Answers as `exec`
    /// does (errors, then `stream`), after which the node sends `crate::handover::ExecNews`
    /// frames and the client `crate::exec::Request` frames (signals and sizes, and its
    /// input with `stdin_relayed`). A node
    /// that predates it, or cannot take the descriptors, answers `bad_request`.
    ExecHere {
        peer: String,
        start: crate::exec::Start,
        /// The client keeps reading its stdin and sends it as `stdin` frames; the node
        /// leaves the passed one unread. For a terminal in its usual mode: a shell takes
        /// it back whenever the client is stopped (Ctrl-Z), and the node must not read
        /// the keys meant for the shell then.
        #[serde(default)]
        stdin_relayed: bool,
    },
    /// Copy files to or from a peer: answers `copy_progress` frames while it runs, then
    /// `copied_files` frames and one `copied`.
    Copy(Copy),
    /// A session request to `peer` (this device when absent; for `attach` and `kill`, the
    /// device that hosts the session): answers `stream`, after which the connection carries
    /// the frames of `/loopsy/session/1` (see `crate::session`).
    Session {
        peer: Option<String>,
        request: crate::session::Request,
    },
    /// An `attach` (in `request`) with the terminal handed over: answers `stream` as
    /// `session` does, after which the client sends its stdin and stdout on one byte
    /// (`crate::handover::PASS_BYTE`, SCM_RIGHTS) and the connection carries the frames of
    /// `crate::handover`. A node that predates it answers `bad_request`.
    AttachHere {
        peer: Option<String>,
        request: crate::session::Request,
    },
    /// Every session of the mesh, from the replicated registry: answers `sessions`.
    SessionList,
    /// Sets a key of the shared context (for `ttl_secs`, if given): answers `ctx` with it.
    CtxSet {
        key: String,
        value: String,
        ttl_secs: Option<u64>,
    },
    /// Answers `ctx` with the key, or an error `not_found`.
    CtxGet { key: String },
    /// Answers `ctx` with every key that starts with `prefix`.
    CtxList { prefix: String },
    /// Deletes a key everywhere: answers `done`.
    CtxRemove { key: String },
    /// Sends a message to a device: answers `msg_sent` (within a few seconds: delivered
    /// then, or kept by the mesh until it is).
    MsgSend { peer: String, text: String },
    /// Answers `inbox`.
    MsgInbox,
    /// Drops a device that is not a member (name, peer ID or unique prefix) from `peers`,
    /// closing its connections: a stranger, or a device revoked since. Answers `done`; a
    /// member is refused (`trust_remove` it first).
    PeersForget { peer: String },
    /// Attention events of the whole mesh: answers `events` frames, oldest first. Without
    /// `since_ms` (milliseconds since the epoch) only new ones, so without `follow` none;
    /// with `follow`, new events as they arrive.
    Events {
        follow: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_ms: Option<u64>,
    },
    /// Raise an attention event on this device (`loopsy notify`), optionally for one of its
    /// sessions (an ID, a name or a unique prefix): answers `done`.
    Notify {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        text: String,
    },
}

/// A message in this device's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxMessage {
    pub id: String,
    /// The sender's name.
    pub from: String,
    pub text: String,
    /// RFC 3339, UTC.
    pub sent: String,
    pub received: String,
}

/// A key of the shared context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtxEntry {
    pub key: String,
    pub value: String,
    /// The device that set it: its name and peer ID.
    pub author: String,
    pub author_peer_id: String,
    /// RFC 3339, UTC.
    pub updated: String,
    pub expires: Option<String>,
}

/// A session as every client sees it: in the control API's `sessions`, in
/// `loopsy session ls --json` and `session new --json`, and in the MCP tools. One flat
/// shape with times in RFC 3339, built from the host's [`crate::session::Info`] by
/// [`Session::from`] (see `docs/control-api.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub name: Option<String>,
    /// The hosting device's name and peer ID.
    pub host: String,
    pub host_peer_id: String,
    /// Whether the host is this device or connected to it now.
    pub host_online: bool,
    /// For a host that is offline: when this device last heard from it (RFC 3339).
    pub host_last_seen: Option<String>,
    pub command: Vec<String>,
    pub status: SessionStatus,
    /// The exit code once exited (128+N for signal N); none while running, or when the
    /// host lost the program (its node stopped while it ran).
    pub code: Option<i32>,
    /// RFC 3339, UTC.
    pub created: String,
    pub last_activity: String,
    /// Clients attached now.
    pub clients: u32,
    /// Set while the program waits for its person (a bell, a notification, its end) and no
    /// client has typed or attached since.
    #[serde(default)]
    pub waiting: Option<SessionWaiting>,
    /// Set when the host keeps a recording of the session (`session new --record`): its
    /// size, the host's bound, and whether that bound stopped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<crate::session::Recorded>,
}

/// Whether a session's program still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Running,
    Exited,
}

impl From<HostedSession> for Session {
    fn from(hosted: HostedSession) -> Self {
        let info = hosted.session;
        let (status, code) = match info.status {
            crate::session::Status::Running => (SessionStatus::Running, None),
            crate::session::Status::Exited { code } => (SessionStatus::Exited, code),
        };
        Self {
            id: info.id,
            name: info.name,
            host: hosted.host,
            host_peer_id: hosted.host_peer_id,
            host_online: hosted.host_online,
            host_last_seen: hosted.last_seen,
            command: info.command,
            status,
            code,
            created: rfc3339(info.created),
            last_activity: rfc3339(info.last_activity),
            clients: info.clients,
            // The host's text: a terminal shows it, so no escapes.
            waiting: info.waiting.map(|w| SessionWaiting {
                since: rfc3339(w.since_ms / 1000),
                kind: w.kind,
                text: w
                    .text
                    .map(|t| crate::attention::clean(&t, crate::attention::MAX_TEXT)),
            }),
            recording: info.recording,
        }
    }
}

/// `2026-11-25T07:30:53Z` for seconds since the epoch (days from civil, run backwards:
/// Howard Hinnant's algorithm).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// A session and the device that hosts it, as the host's registry record has it: the
/// daemon's own view, which the API answers as a [`Session`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedSession {
    /// The host's name and peer ID.
    pub host: String,
    pub host_peer_id: String,
    /// Whether the host is this device or connected to it now.
    pub host_online: bool,
    /// For a host that is offline: when this device last heard from it (RFC 3339).
    pub last_seen: Option<String>,
    pub session: crate::session::Info,
}

/// A copy: every source on one side, the destination on the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    pub sources: Vec<Location>,
    pub dest: Location,
    /// Copy directories with everything in them.
    #[serde(default)]
    pub recursive: bool,
    /// Keep files that exist at the destination.
    #[serde(default)]
    pub no_clobber: bool,
    /// Also report each file's SHA-256.
    #[serde(default)]
    pub sha256: bool,
    /// Flush each file to disk before it is renamed into place.
    #[serde(default)]
    pub fsync: bool,
}

/// A path here (absolute) or on a peer (relative to its first file root, or absolute).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    #[serde(default)]
    pub peer: Option<String>,
    pub path: String,
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Id(Identity),
    Status(Status),
    Peers {
        peers: Vec<Peer>,
    },
    Invitation(Invitation),
    Paired(Paired),
    Trust {
        peers: Vec<TrustedPeer>,
    },
    Done {
        message: String,
    },
    Audit {
        entries: Vec<AuditEntry>,
    },
    /// From here on the connection carries `protocol`'s frames, relayed to the peer.
    Stream {
        protocol: String,
    },
    CopyProgress(CopyProgress),
    /// Files of a finished copy, a few per frame, before `copied`.
    CopiedFiles {
        files: Vec<CopiedFile>,
    },
    Copied(Copied),
    Ctx {
        entries: Vec<CtxEntry>,
    },
    MsgSent {
        id: String,
        /// Whether the recipient acknowledged it already.
        delivered: bool,
    },
    Inbox {
        messages: Vec<InboxMessage>,
    },
    Sessions {
        sessions: Vec<Session>,
    },
    Error(Error),
    /// During `pair_invite`: the short code was withdrawn after wrong tries; the long code
    /// still works.
    ShortCodeWithdrawn {
        message: String,
    },
    Events {
        events: Vec<MeshEvent>,
    },
    #[serde(rename = "netcheck")]
    NetCheck(NetCheck),
}

/// What this device's network allows (`loopsy netcheck`), from what the running node has
/// seen: nothing is probed for the asking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetCheck {
    /// How the NAT maps this device's ports, read from where the relays see it.
    pub mapping: NatMapping,
    /// Where each relay sees this device.
    pub seen_at: Vec<SeenAt>,
    /// Whether the router mapped a port (UPnP IGD).
    pub upnp: Upnp,
    /// Whether the default gateway mapped a port by PCP (RFC 6887).
    #[serde(default)]
    pub pcp: Pmp,
    /// Whether it did by NAT-PMP (RFC 6886), asked when PCP is not answered.
    #[serde(default)]
    pub natpmp: Pmp,
    /// The router's public addresses mapped to this device, by any of the three.
    pub mapped_addrs: Vec<String>,
    /// Global IPv6 addresses this device listens on (none: no IPv6 beyond the LAN).
    pub ipv6_addrs: Vec<String>,
    pub relays: Vec<RelayCheck>,
    /// Whether LAN discovery is on, and how many devices it announces now.
    pub mdns: bool,
    pub lan_devices: u64,
    /// How each member is reached, and why so.
    pub peers: Vec<PeerPath>,
}

/// A NAT's mapping behaviour (RFC 4787).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatMapping {
    /// Fewer than two relays told where they see this device.
    Unknown,
    /// Seen at its own address: no NAT.
    None,
    /// One public port for every destination: a "cone" NAT, hole punching works.
    EndpointIndependent,
    /// A public port per destination: a "symmetric" NAT, hole punching fails.
    EndpointDependent,
}

/// The address a relay sees this device at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenAt {
    pub relay: String,
    pub addr: String,
}

/// What came of asking the router for a port mapping (UPnP IGD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Upnp {
    /// Switched off in the config.
    Off,
    /// Still looking for a router.
    Searching,
    /// No router answered.
    NoGateway,
    /// A router answered, but its own address is private (a NAT behind a NAT).
    NotPublic,
    /// A router answered and mapped a port (`mapped_addrs`; empty once lapsed).
    Mapped,
}

/// What came of asking the default gateway for a port mapping by PCP or NAT-PMP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pmp {
    /// Switched off in the config.
    #[default]
    Off,
    /// Nothing asked or answered yet.
    Searching,
    /// The routing table has no default IPv4 gateway.
    NoGateway,
    /// Not needed: the gateway answered PCP (said of NAT-PMP).
    NotAsked,
    /// The gateway did not answer.
    NoAnswer,
    /// The gateway speaks another version (a NAT-PMP-only gateway, to PCP).
    Unsupported,
    /// The gateway refused the mapping.
    Refused,
    /// The gateway's own address is private (a NAT behind a NAT).
    NotPublic,
    /// The gateway mapped a port (`mapped_addrs`; empty once lapsed).
    Mapped,
}

/// A configured relay as this device finds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayCheck {
    pub addr: String,
    pub connected: bool,
    /// It holds a reservation for this device (others reach it through the relay).
    pub reserved: bool,
    /// The last ping's round trip.
    pub rtt_ms: Option<f64>,
}

/// How a member is reached now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerPath {
    pub name: Option<String>,
    pub peer_id: String,
    pub connection: Connection,
    /// Why, in words: `relayed: hole punch failed, this device's NAT is symmetric`.
    pub why: String,
}

/// An attention event as a client sees it: the host's event, the host named as this device
/// knows it, and the time in RFC 3339 too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshEvent {
    #[serde(flatten)]
    pub event: crate::attention::Event,
    pub host_peer_id: String,
    pub time: String,
}

/// A session's waiting state as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionWaiting {
    /// RFC 3339, UTC.
    pub since: String,
    pub kind: crate::attention::Kind,
    pub text: Option<String>,
}

/// How far a copy has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyProgress {
    pub files: u64,
    pub bytes: u64,
    /// Bytes verified so far, resumed ones included.
    pub done: u64,
    /// Bytes that crossed the network.
    pub transferred: u64,
}

/// A finished copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Copied {
    pub file_count: u64,
    pub failed: u64,
    pub bytes: u64,
    pub transferred: u64,
    pub seconds: f64,
}

/// What became of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiedFile {
    pub path: String,
    pub size: u64,
    /// `stored`, `skipped` or `failed`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Hex digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Bytes kept from an interrupted earlier copy.
    pub resumed: u64,
}

/// A pairing code waiting for a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub code: String,
    /// RFC 3339, UTC.
    pub expires: String,
    /// The same invitation for a device that sees this one: `NAME N-NNN-NNN-NNN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_code: Option<String>,
    /// The web app with the code in its fragment, for a phone's browser (see
    /// `loopsy_daemon::pair::link`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A completed pairing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paired {
    pub peer_id: String,
    pub name: String,
    /// The short code both devices show; they must match.
    pub check_code: String,
}

/// A device in the trust store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedPeer {
    pub peer_id: String,
    pub name: String,
    pub addrs: Vec<String>,
    /// What this node grants it.
    pub allow: Vec<String>,
    /// What it said it grants this node, when paired directly.
    pub they_allow: Option<Vec<String>>,
    /// How it joined: `paired`, `added`, or `introduced by NAME`.
    pub via: String,
    /// What kind of member it said it is when it paired here: `device` or `browser` (a
    /// label; what it may do is `allow`). Older nodes leave it out: a device.
    #[serde(default = "device_kind")]
    pub kind: String,
}

fn device_kind() -> String {
    crate::pair::Kind::Device.as_str().to_owned()
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// RFC 3339, UTC, with milliseconds.
    pub time: String,
    pub peer: Option<String>,
    pub name: Option<String>,
    pub action: String,
    pub args: String,
    /// `ok`, `denied` or `failed`.
    pub result: String,
    pub reason: Option<String>,
}

/// A device's name on the wire and for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub peer_id: String,
    pub name: String,
}

/// A node's view of itself on the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub peer_id: String,
    pub name: String,
    /// Addresses the node listens on.
    pub listen_addrs: Vec<String>,
    /// Addresses others have confirmed reach this node.
    pub external_addrs: Vec<String>,
    /// Addresses through relays.
    pub relayed_addrs: Vec<String>,
    pub nat: NatStatus,
    pub relay_reservations: Vec<String>,
    /// The running node's version.
    #[serde(default)]
    pub version: String,
    /// Seconds since the node started.
    #[serde(default)]
    pub uptime_secs: u64,
    /// The node's state directory, and its config file.
    #[serde(default)]
    pub home: String,
    #[serde(default)]
    pub config: String,
}

/// Whether this node is reachable from outside, as far as it can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatStatus {
    Unknown,
    Public,
    Private,
}

/// One peer as `loopsy peers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    /// The device's own name, once known.
    pub name: Option<String>,
    pub peer_id: String,
    pub paired: bool,
    /// Connected now, or seen on the LAN recently.
    pub online: bool,
    pub connection: Connection,
    /// Addresses known for the peer; the one in use comes first.
    pub addrs: Vec<String>,
    /// Latest ping round trip.
    pub rtt_ms: Option<f64>,
    /// Open connections, and how many of them go through a relay (a relayed one stays
    /// beside a direct one for a moment after a punch).
    #[serde(default)]
    pub connections: u32,
    #[serde(default)]
    pub relayed_connections: u32,
    /// When this node last had news of it (RFC 3339): now while connected; none when it
    /// has not seen it since it started.
    #[serde(default)]
    pub last_seen: Option<String>,
}

/// How this node is connected to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Connection {
    Direct,
    Relayed,
    None,
}

/// A refused or failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

/// Why a request failed, for programs that handle cases apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request could not be decoded, or is not one this daemon knows.
    BadRequest,
    /// The client speaks another version of the API.
    VersionMismatch,
    /// The daemon is shutting down or busy.
    Unavailable,
    /// Something failed inside the daemon.
    Internal,
    /// An argument is not valid (a malformed peer ID, an unknown capability, ...).
    InvalidArgument,
    /// No peer or session of that name.
    NotFound,
    /// The name matches more than one peer or session.
    Ambiguous,
    /// The other device cannot be reached.
    Unreachable,
    /// The other device, or this one, refused.
    Refused,
    /// A pairing code expired before anyone used it.
    Expired,
    /// The operation started but could not finish (a disk full, a broken copy, ...).
    Failed,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode, encode, split};

    fn round_trip<T>(value: &T) -> T
    where
        T: Serialize + serde::de::DeserializeOwned,
    {
        let frame = encode(value, MAX_FRAME).expect("encode");
        let (body, _) = split(&frame, MAX_FRAME).expect("split").expect("whole");
        decode(body).expect("decode")
    }

    #[test]
    fn requests_round_trip() {
        for request in [Request::Id, Request::Status, Request::Peers] {
            let env = Envelope::new(request);
            assert_eq!(round_trip(&env), env);
        }
    }

    #[test]
    fn responses_round_trip() {
        let peer = Peer {
            name: Some("laptop".into()),
            peer_id: "12D3KooW".into(),
            paired: false,
            online: true,
            connection: Connection::Direct,
            addrs: vec!["/ip4/10.0.0.2/tcp/7717".into()],
            rtt_ms: Some(0.4),
            connections: 2,
            relayed_connections: 1,
            last_seen: Some("2026-12-06T09:00:00.000Z".into()),
        };
        for response in [
            Response::Peers { peers: vec![peer] },
            Response::Error(Error::new(ErrorCode::BadRequest, "no")),
            Response::Id(Identity {
                peer_id: "p".into(),
                name: "n".into(),
            }),
        ] {
            assert_eq!(round_trip(&response), response);
        }
    }

    /// The documented shape other languages rely on: `{"v": 1, "op": "peers"}`.
    #[test]
    fn envelope_is_a_flat_map() {
        let mut body = Vec::new();
        ciborium::into_writer(&Envelope::new(Request::Peers), &mut body).expect("encode");
        let value: ciborium::Value = ciborium::from_reader(&body[..]).expect("decode");
        let map = value.into_map().expect("a map");
        let keys: Vec<_> = map
            .iter()
            .map(|(k, _)| k.as_text().expect("text key").to_owned())
            .collect();
        assert_eq!(keys, ["v", "op"]);
    }

    fn body(value: ciborium::Value) -> Vec<u8> {
        let mut body = Vec::new();
        ciborium::into_writer(&value, &mut body).expect("encode");
        body
    }

    #[test]
    fn version_is_checked_before_the_request() {
        let future = body(ciborium::Value::Map(vec![
            ("v".into(), 99.into()),
            ("op".into(), "teleport".into()),
        ]));
        let err = decode_request(&future).expect_err("refused");
        assert_eq!(err.code, ErrorCode::VersionMismatch);
        let garbage = decode_request(&[0xff, 0x00]).expect_err("refused");
        assert_eq!(garbage.code, ErrorCode::BadRequest);
        let ok = body(ciborium::Value::Map(vec![
            ("v".into(), 1.into()),
            ("op".into(), "id".into()),
        ]));
        assert_eq!(decode_request(&ok), Ok(Request::Id));
    }

    #[test]
    fn a_hosts_waiting_text_reaches_clients_without_escapes() {
        let hosted = HostedSession {
            host: "alpha".into(),
            host_peer_id: "12D3KooW".into(),
            host_online: true,
            last_seen: None,
            session: crate::session::Info {
                id: "k3j2".into(),
                name: None,
                command: vec!["sh".into()],
                status: crate::session::Status::Running,
                created: 0,
                last_activity: 0,
                clients: 0,
                waiting: Some(crate::attention::Waiting {
                    since_ms: 1_796_533_224_000,
                    kind: crate::attention::Kind::Notify,
                    text: Some("a\x1b[2J\rb".into()),
                }),
                recording: None,
            },
        };
        let waiting = Session::from(hosted).waiting.expect("waiting");
        assert_eq!(waiting.text.as_deref(), Some("a [2J b"));
        assert_eq!(waiting.since, "2026-12-06T05:00:24Z");
    }

    #[test]
    fn a_session_is_one_flat_shape_with_rfc3339_times() {
        let hosted = HostedSession {
            host: "alpha".into(),
            host_peer_id: "12D3KooW".into(),
            host_online: false,
            last_seen: Some("2026-12-06T09:00:00.000Z".into()),
            session: crate::session::Info {
                id: "k3j2".into(),
                name: Some("agent".into()),
                command: vec!["claude".into()],
                status: crate::session::Status::Exited { code: Some(3) },
                created: 1_796_533_224,
                last_activity: 951_782_400,
                clients: 0,
                waiting: None,
                recording: None,
            },
        };
        let listed = Session::from(hosted);
        assert_eq!(listed.created, "2026-12-06T05:00:24Z");
        assert_eq!(listed.last_activity, "2000-02-29T00:00:00Z");
        let json = cbor_map(&listed);
        assert_eq!(json["status"], ciborium::Value::from("exited"));
        assert_eq!(json["code"], ciborium::Value::from(3));
        assert_eq!(
            json["host_last_seen"],
            ciborium::Value::from("2026-12-06T09:00:00.000Z")
        );
        assert_eq!(round_trip(&listed), listed);
    }

    /// The CBOR map of `value`, by key, as a client in another language reads it.
    fn cbor_map<T: Serialize>(value: &T) -> std::collections::BTreeMap<String, ciborium::Value> {
        let mut body = Vec::new();
        ciborium::into_writer(value, &mut body).expect("encode");
        let map: ciborium::Value = ciborium::from_reader(&body[..]).expect("decode");
        map.into_map()
            .expect("a map")
            .into_iter()
            .map(|(k, v)| (k.as_text().expect("text key").to_owned(), v))
            .collect()
    }

    #[test]
    fn unknown_op_is_a_decode_error() {
        let mut body = Vec::new();
        let value = ciborium::Value::Map(vec![
            ("v".into(), 1.into()),
            ("op".into(), "launch_missiles".into()),
        ]);
        ciborium::into_writer(&value, &mut body).expect("encode");
        assert!(decode::<Envelope>(&body).is_err());
    }
}
