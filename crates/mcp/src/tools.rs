//! The tools an agent calls. Each is one or a few control API requests; failures come back
//! as tool errors (`isError`) with the node's own words, so the agent can read and react.

use std::{ops::ControlFlow, time::Duration};

use data_encoding::BASE64;
use loopsy_wire::{
    control::{self, CtxEntry, InboxMessage, Location},
    exec::Start,
    session::Status,
};
use rmcp::{
    Json, handler::server::wrapper::Parameters, schemars, schemars::JsonSchema, tool, tool_router,
};
use serde::{Deserialize, Serialize};

use crate::{
    Loopsy,
    node::{self, Failure, Watch},
};

/// Output kept of each stream of a program unless the call asks otherwise.
const OUTPUT_DEFAULT: usize = 64 * 1024;
/// The most a call may ask for, per stream.
const OUTPUT_MAX: usize = 1024 * 1024;
/// Programs that run longer are stopped unless the call gives its own timeout.
const EXEC_TIMEOUT: u64 = 300;
/// Bytes of a file `read_file` returns unless asked otherwise, and at most.
const READ_DEFAULT: usize = 256 * 1024;
const READ_MAX: usize = 4 * 1024 * 1024;
/// Files larger than this are not fetched for `read_file` at all (use `copy`).
const READ_FETCH_MAX: u64 = 64 * 1024 * 1024;
/// The largest file `write_file` takes.
const WRITE_MAX: usize = 4 * 1024 * 1024;
/// Files named in a copy's result.
const LISTED: usize = 100;
/// Listings (context keys, messages, sessions) stop at about this much JSON.
const LIST_BUDGET: usize = 256 * 1024;
/// The terminal size of a session started by an agent, unless it asks for another.
const SESSION_SIZE: (u16, u16) = (40, 120);

#[derive(Debug, Serialize, JsonSchema)]
pub struct Peers {
    pub peers: Vec<Peer>,
}

/// A device this one knows.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Peer {
    /// The device's name, once known.
    pub name: Option<String>,
    pub peer_id: String,
    /// A member of this device's mesh (only members can be used).
    pub paired: bool,
    pub online: bool,
    /// `direct`, `relayed` or `none`.
    pub connection: String,
    pub rtt_ms: Option<f64>,
}

impl From<control::Peer> for Peer {
    fn from(p: control::Peer) -> Self {
        let connection = match p.connection {
            control::Connection::Direct => "direct",
            control::Connection::Relayed => "relayed",
            control::Connection::None => "none",
        };
        Self {
            name: p.name,
            peer_id: p.peer_id,
            paired: p.paired,
            online: p.online,
            connection: connection.into(),
            rtt_ms: p.rtt_ms,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecArgs {
    /// The device: its name, peer ID, or a unique prefix of either.
    pub peer: String,
    /// The program and its arguments, e.g. ["cargo", "build"]. Not run through a shell:
    /// use ["sh", "-c", "..."] for pipes and globs.
    pub argv: Vec<String>,
    /// Working directory there (default: the peer's choice, usually its home).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: Option<std::collections::BTreeMap<String, String>>,
    /// Text given to the program on its standard input (default: none).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Seconds before the program is stopped (default 300).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Bytes kept of stdout and of stderr each (default 65536, at most 1048576).
    #[serde(default)]
    pub max_output_bytes: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ExecResult {
    /// The exit code; none when a signal ended the program.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The timeout stopped the program.
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    /// Whether output was cut at `max_output_bytes`; the totals say how much there was.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadArgs {
    /// The device.
    pub peer: String,
    /// The file: relative to the peer's first file root, or absolute.
    pub path: String,
    /// Bytes returned from the start of the file (default 262144, at most 4194304).
    #[serde(default)]
    pub max_bytes: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FileContent {
    pub path: String,
    pub size: u64,
    /// `utf-8`, or `base64` for a file that is not text.
    pub encoding: String,
    pub content: String,
    /// Only the first `max_bytes` are in `content`.
    pub truncated: bool,
    /// The whole file's BLAKE3, in hex.
    pub blake3: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WriteArgs {
    /// The device.
    pub peer: String,
    /// Where to write: relative to the peer's first file root, or absolute. An existing
    /// file is replaced (atomically); an existing directory receives the file inside.
    pub path: String,
    pub content: String,
    /// `utf-8` (default) or `base64`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// Make it executable (mode 0700; otherwise 0600, private like anything an agent
    /// writes: widen it with exec if others must read it).
    #[serde(default)]
    pub executable: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Written {
    /// The file as the copy named it.
    pub path: String,
    pub bytes: u64,
    pub blake3: String,
}

/// A path on this device (absolute) or on a peer.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Place {
    /// The device; omit for this one.
    #[serde(default)]
    pub peer: Option<String>,
    /// On this device, absolute; on a peer, relative to its first file root, or absolute.
    pub path: String,
}

impl From<Place> for Location {
    fn from(p: Place) -> Self {
        Location {
            peer: p.peer,
            path: p.path,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CopyArgs {
    /// What to copy: all on one side (this device, or one peer).
    pub sources: Vec<Place>,
    /// Where to: on the other side. Several sources go into a directory, as with scp.
    pub dest: Place,
    /// Copy directories with everything in them.
    #[serde(default)]
    pub recursive: bool,
    /// Keep files that exist at the destination.
    #[serde(default)]
    pub no_clobber: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CopyResult {
    pub file_count: u64,
    pub failed: u64,
    pub bytes: u64,
    /// Bytes that crossed the network (less than `bytes` when a copy resumed).
    pub transferred: u64,
    pub seconds: f64,
    /// Up to 100 files, failed ones first.
    pub files: Vec<CopiedFile>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CopiedFile {
    pub path: String,
    pub size: u64,
    /// `stored`, `skipped` or `failed`.
    pub outcome: String,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Sessions {
    pub sessions: Vec<SessionInfo>,
    /// The list was cut to stay small.
    pub truncated: bool,
}

/// A session, in the one shape of `loopsy session ls --json` and the control API
/// (`loopsy_wire::control::Session`, which has no JSON schema of its own to publish).
#[derive(Debug, Serialize, JsonSchema)]
pub struct SessionInfo {
    pub id: String,
    pub name: Option<String>,
    /// The hosting device's name and peer ID.
    pub host: String,
    pub host_peer_id: String,
    /// Whether the host is this device or connected to it now.
    pub host_online: bool,
    /// For an offline host: when this device last heard from it (RFC 3339).
    pub host_last_seen: Option<String>,
    pub command: Vec<String>,
    /// `running` or `exited`.
    pub status: String,
    /// The exit code once exited (128+N for signal N).
    pub code: Option<i32>,
    /// RFC 3339.
    pub created: String,
    pub last_activity: String,
    /// Clients attached now.
    pub clients: u32,
    /// Set while the session's program waits for its person (a bell, a notification, its
    /// end) and no client has typed or attached since.
    pub waiting: Option<Waiting>,
    /// Set when the host keeps a recording of the session.
    pub recording: Option<Recording>,
}

/// A session's recording on its host.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Recording {
    pub bytes: u64,
    /// The host's bound; once reached, the recording stopped (`full`).
    pub max_bytes: u64,
    pub full: bool,
}

/// Since when a session waits, and why.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Waiting {
    /// RFC 3339.
    pub since: String,
    /// `bell`, `notify`, `exit` or `note`.
    pub kind: String,
    pub text: Option<String>,
}

impl From<control::Session> for SessionInfo {
    fn from(s: control::Session) -> Self {
        let status = match s.status {
            control::SessionStatus::Running => "running",
            control::SessionStatus::Exited => "exited",
        };
        Self {
            id: s.id,
            name: s.name,
            host: s.host,
            host_peer_id: s.host_peer_id,
            host_online: s.host_online,
            host_last_seen: s.host_last_seen,
            command: s.command,
            status: status.into(),
            code: s.code,
            created: s.created,
            last_activity: s.last_activity,
            clients: s.clients,
            waiting: s.waiting.map(|w| Waiting {
                since: w.since,
                kind: w.kind.name().into(),
                text: w.text,
            }),
            recording: s.recording.map(|r| Recording {
                bytes: r.bytes,
                max_bytes: r.max_bytes,
                full: r.full,
            }),
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StartArgs {
    /// The device that hosts it (omit for this one).
    #[serde(default)]
    pub peer: Option<String>,
    /// A name to find it by.
    #[serde(default)]
    pub name: Option<String>,
    /// The program and its arguments (omit for the host's login shell).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Terminal size (default 40 rows, 120 columns).
    #[serde(default)]
    pub rows: Option<u16>,
    #[serde(default)]
    pub cols: Option<u16>,
    /// Keep the whole output in a recording on the host (bounded by its config), for
    /// `loopsy session export`.
    #[serde(default)]
    pub record: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct KeysArgs {
    /// The session: its ID, its name, or a unique prefix.
    pub session: String,
    /// The device that hosts it (default: found by asking).
    #[serde(default)]
    pub peer: Option<String>,
    /// What to type, as is. Control keys are characters: "\r" is Enter, "\u0003" Ctrl-C,
    /// "\u0004" Ctrl-D, "\u001b" Escape, "\u001b[A" the up arrow.
    pub keys: String,
    /// Press Enter after the keys.
    #[serde(default)]
    pub enter: bool,
    /// Return once the session has been quiet this long (default 300 ms)...
    #[serde(default)]
    pub quiet_ms: Option<u64>,
    /// ...or at the latest this long after typing (default 5000 ms, at most 60000).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ScreenArgs {
    /// The session: its ID, its name, or a unique prefix.
    pub session: String,
    /// The device that hosts it (default: found by asking).
    #[serde(default)]
    pub peer: Option<String>,
    /// Watch the output for this long before reading the screen (default 0, at most 60000).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Screen {
    pub id: String,
    pub rows: u16,
    pub cols: u16,
    /// The screen's text, line by line, without blank lines at the bottom.
    pub text: String,
    /// Row and column of the cursor, from 0.
    pub cursor: [u16; 2],
    /// `running` or `exited`.
    pub status: String,
    pub exit_code: Option<i32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct KillArgs {
    /// The session: its ID, its name, or a unique prefix.
    pub session: String,
    /// The device that hosts it (default: found by asking).
    #[serde(default)]
    pub peer: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Done {
    pub message: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct KeyArgs {
    pub key: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SetArgs {
    pub key: String,
    pub value: String,
    /// Seconds until the key expires everywhere (default: never).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListArgs {
    /// Only keys that start with this.
    #[serde(default)]
    pub prefix: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Context {
    pub entries: Vec<ContextEntry>,
    /// The list was cut to stay small: ask with a longer prefix.
    pub truncated: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ContextEntry {
    pub key: String,
    pub value: String,
    /// The device that set it.
    pub author: String,
    /// RFC 3339.
    pub updated: String,
    pub expires: Option<String>,
}

impl From<CtxEntry> for ContextEntry {
    fn from(e: CtxEntry) -> Self {
        Self {
            key: e.key,
            value: e.value,
            author: e.author,
            updated: e.updated,
            expires: e.expires,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SendArgs {
    /// The device: its name, peer ID, or a unique prefix.
    pub peer: String,
    pub text: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct NotifyArgs {
    /// What to tell the person, short.
    pub text: String,
    /// A short title.
    pub title: Option<String>,
    /// One of this device's sessions (ID, name or unique prefix): it shows as waiting until
    /// someone attaches or types. By default, the session this server runs in, if any.
    pub session: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Sent {
    pub id: String,
    /// The recipient acknowledged it; otherwise the mesh keeps it until it can deliver.
    pub delivered: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Inbox {
    pub messages: Vec<Message>,
    /// The oldest messages were left out to stay small.
    pub truncated: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Message {
    pub id: String,
    pub from: String,
    pub text: String,
    pub sent: String,
    pub received: String,
}

impl From<InboxMessage> for Message {
    fn from(m: InboxMessage) -> Self {
        Self {
            id: m.id,
            from: m.from,
            text: m.text,
            sent: m.sent,
            received: m.received,
        }
    }
}

// Each tool answers `Result<Json<T>, String>`, spelled out: the macro publishes T's schema
// as the tool's output schema only when it sees `Json` there, and clients check results
// against it. An `Err` is a tool error the model reads.
#[tool_router(vis = "pub(crate)")]
impl Loopsy {
    #[tool(
        description = "List the devices this one knows: paired members of the mesh and \
                          devices seen on the LAN, with whether each is online and how."
    )]
    async fn peers(&self) -> Result<Json<Peers>, String> {
        let peers = self.peer_list().await?;
        Ok(Json(Peers {
            peers: peers.into_iter().map(Peer::from).collect(),
        }))
    }

    #[tool(
        description = "Run a program on a device and wait for it to end: exit code, \
                          stdout and stderr (each cut at max_output_bytes, with a flag \
                          when cut). The device's policy for this one applies."
    )]
    async fn exec(
        &self,
        Parameters(args): Parameters<ExecArgs>,
    ) -> Result<Json<ExecResult>, String> {
        if args.argv.is_empty() {
            return Err("argv is empty: name the program to run".into());
        }
        let limit = args
            .max_output_bytes
            .unwrap_or(OUTPUT_DEFAULT)
            .min(OUTPUT_MAX);
        let start = Start {
            argv: args.argv,
            cwd: args.cwd,
            env: args.env.unwrap_or_default().into_iter().collect(),
            timeout_secs: Some(args.timeout_secs.unwrap_or(EXEC_TIMEOUT)),
            pty: None,
        };
        let stdin = args.stdin.unwrap_or_default().into_bytes();
        let ran = node::exec(&self.client, args.peer, start, stdin, limit).await?;
        Ok(Json(ExecResult {
            exit_code: ran.code,
            signal: ran.signal,
            timed_out: ran.timed_out,
            stdout: ran.stdout.text(),
            stderr: ran.stderr.text(),
            stdout_truncated: ran.stdout.truncated(),
            stderr_truncated: ran.stderr.truncated(),
            stdout_bytes: ran.stdout.total(),
            stderr_bytes: ran.stderr.total(),
        }))
    }

    #[tool(
        description = "Read a file on a device (needs its `files` capability): text as \
                          is, other files in base64, cut at max_bytes."
    )]
    async fn read_file(
        &self,
        Parameters(args): Parameters<ReadArgs>,
    ) -> Result<Json<FileContent>, String> {
        let limit = args.max_bytes.unwrap_or(READ_DEFAULT).min(READ_MAX);
        let scratch = self.scratch()?;
        let copy = control::Copy {
            sources: vec![Location {
                peer: Some(args.peer),
                path: args.path.clone(),
            }],
            dest: scratch.location(),
            recursive: false,
            no_clobber: false,
            sha256: false,
            fsync: false,
        };
        let done = node::copy(&self.client, copy, 1, |now| {
            if now.bytes > READ_FETCH_MAX {
                ControlFlow::Break(format!(
                    "{} is {} bytes; read_file reads files up to {READ_FETCH_MAX} bytes: use \
                     copy for larger ones",
                    args.path, now.bytes
                ))
            } else {
                ControlFlow::Continue(())
            }
        })
        .await?;
        let file = one_file(done)?;
        let (bytes, size) = scratch
            .read_only_file(limit)
            .map_err(|e| format!("cannot read the fetched copy: {e}"))?;
        let cut = size > limit as u64;
        let (encoding, content) = as_text(bytes, cut);
        Ok(Json(FileContent {
            path: args.path,
            size,
            encoding: encoding.into(),
            content,
            truncated: cut,
            blake3: file.blake3.unwrap_or_default(),
        }))
    }

    #[tool(
        description = "Write a file on a device (needs its `files` capability). The \
                          file appears whole or not at all."
    )]
    async fn write_file(
        &self,
        Parameters(args): Parameters<WriteArgs>,
    ) -> Result<Json<Written>, String> {
        let bytes = match args.encoding.as_deref() {
            None | Some("utf-8") => args.content.into_bytes(),
            Some("base64") => BASE64
                .decode(args.content.as_bytes())
                .map_err(|e| format!("content is not base64: {e}"))?,
            Some(other) => return Err(format!("unknown encoding {other:?}: use utf-8 or base64")),
        };
        if bytes.len() > WRITE_MAX {
            return Err(format!(
                "{} bytes is more than write_file takes ({WRITE_MAX}); use copy",
                bytes.len()
            ));
        }
        let scratch = self.scratch()?;
        let mode = if args.executable { 0o700 } else { 0o600 };
        let source = scratch
            .write_file(&args.path, &bytes, mode)
            .map_err(|e| format!("cannot stage the file: {e}"))?;
        let copy = control::Copy {
            sources: vec![source],
            dest: Location {
                peer: Some(args.peer),
                path: args.path.clone(),
            },
            recursive: false,
            no_clobber: false,
            sha256: false,
            fsync: false,
        };
        let done = node::copy(&self.client, copy, 1, |_| ControlFlow::Continue(())).await?;
        let file = one_file(done)?;
        Ok(Json(Written {
            path: file.path,
            bytes: file.size,
            blake3: file.blake3.unwrap_or_default(),
        }))
    }

    #[tool(
        description = "Copy files or directories between this device and a peer, \
                          either way, verified and resumable (as `loopsy cp`)."
    )]
    async fn copy(
        &self,
        Parameters(args): Parameters<CopyArgs>,
    ) -> Result<Json<CopyResult>, String> {
        let copy = control::Copy {
            sources: args.sources.into_iter().map(Location::from).collect(),
            dest: args.dest.into(),
            recursive: args.recursive,
            no_clobber: args.no_clobber,
            sha256: false,
            fsync: false,
        };
        let done = node::copy(&self.client, copy, LISTED, |_| ControlFlow::Continue(())).await?;
        Ok(Json(CopyResult {
            file_count: done.totals.file_count,
            failed: done.totals.failed,
            bytes: done.totals.bytes,
            transferred: done.totals.transferred,
            seconds: done.totals.seconds,
            files: done
                .files
                .into_iter()
                .map(|f| CopiedFile {
                    path: f.path,
                    size: f.size,
                    outcome: f.outcome,
                    reason: f.reason,
                })
                .collect(),
        }))
    }

    #[tool(
        description = "List every terminal session in the mesh, on every device, \
                          from the replicated registry."
    )]
    async fn session_list(&self) -> Result<Json<Sessions>, String> {
        let (sessions, truncated) = within_budget(self.session_entries().await?);
        Ok(Json(Sessions {
            sessions,
            truncated,
        }))
    }

    #[tool(
        description = "Start a persistent terminal session on a device (default: the \
                          login shell). It runs until its program ends or it is killed; \
                          people and agents on any device can attach to it."
    )]
    async fn session_start(
        &self,
        Parameters(args): Parameters<StartArgs>,
    ) -> Result<Json<SessionInfo>, String> {
        let size = (
            args.rows.unwrap_or(SESSION_SIZE.0),
            args.cols.unwrap_or(SESSION_SIZE.1),
        );
        let argv = args.command.unwrap_or_default();
        let session = self
            .client
            .session_start(args.peer, args.name, argv, size, args.record)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Json(session.into()))
    }

    #[tool(
        description = "Type into a session, then return its screen once the output \
                          settles. Does not change the session's size."
    )]
    async fn session_keys(
        &self,
        Parameters(args): Parameters<KeysArgs>,
    ) -> Result<Json<Screen>, String> {
        let mut keys = args.keys.into_bytes();
        if args.enter {
            keys.push(b'\r');
        }
        let watch = Watch {
            quiet: Duration::from_millis(args.quiet_ms.unwrap_or(300).min(WAIT_MAX)),
            most: Duration::from_millis(args.wait_ms.unwrap_or(5000).min(WAIT_MAX)),
        };
        let look = node::look(&self.client, args.peer, args.session, keys, watch).await?;
        Ok(Json(screen(look)))
    }

    #[tool(
        description = "Read a session's screen as text, as an attached user sees it, \
                          without typing anything or changing its size."
    )]
    async fn session_screen(
        &self,
        Parameters(args): Parameters<ScreenArgs>,
    ) -> Result<Json<Screen>, String> {
        let wait = Duration::from_millis(args.wait_ms.unwrap_or(0).min(WAIT_MAX));
        let watch = Watch {
            quiet: wait,
            most: wait,
        };
        let look = node::look(&self.client, args.peer, args.session, Vec::new(), watch).await?;
        Ok(Json(screen(look)))
    }

    #[tool(description = "End a session: its program gets a hang-up, then a kill.")]
    async fn session_kill(
        &self,
        Parameters(args): Parameters<KillArgs>,
    ) -> Result<Json<Done>, String> {
        self.client
            .session_kill(args.peer, args.session.clone())
            .await
            .map_err(|e| e.to_string())?;
        Ok(Json(Done {
            message: format!("ended session {}", args.session),
        }))
    }

    #[tool(
        description = "Get a key of the shared context, a key-value store replicated \
                          to every device of the mesh."
    )]
    async fn ctx_get(
        &self,
        Parameters(args): Parameters<KeyArgs>,
    ) -> Result<Json<ContextEntry>, String> {
        let entry = self
            .client
            .ctx_get(args.key)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Json(entry.into()))
    }

    #[tool(
        description = "Set a key of the shared context on every device (last writer \
                          wins), optionally for ttl_secs."
    )]
    async fn ctx_set(
        &self,
        Parameters(args): Parameters<SetArgs>,
    ) -> Result<Json<ContextEntry>, String> {
        let entry = self
            .client
            .ctx_set(args.key, args.value, args.ttl_secs)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Json(entry.into()))
    }

    #[tool(
        description = "List the shared context's keys and values, optionally only \
                          those under a prefix."
    )]
    async fn ctx_list(
        &self,
        Parameters(args): Parameters<ListArgs>,
    ) -> Result<Json<Context>, String> {
        let entries = self
            .client
            .ctx_list(args.prefix.unwrap_or_default())
            .await
            .map_err(|e| e.to_string())?;
        let (entries, truncated) =
            within_budget(entries.into_iter().map(ContextEntry::from).collect());
        Ok(Json(Context { entries, truncated }))
    }

    #[tool(description = "Delete a key of the shared context everywhere.")]
    async fn ctx_delete(
        &self,
        Parameters(args): Parameters<KeyArgs>,
    ) -> Result<Json<Done>, String> {
        let message = self
            .client
            .ctx_remove(args.key)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Json(Done { message }))
    }

    #[tool(
        description = "Send a text message to a device (its people and agents read it \
                          with msg_inbox or `loopsy msg inbox`)."
    )]
    async fn msg_send(&self, Parameters(args): Parameters<SendArgs>) -> Result<Json<Sent>, String> {
        let sent = self
            .client
            .msg_send(args.peer, args.text)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Json(Sent {
            id: sent.id,
            delivered: sent.delivered,
        }))
    }

    #[tool(
        description = "Tell the person, on every device of the mesh, that you need them \
                       (a question, a permission, a finished task): an attention event, \
                       shown by `loopsy events` and delivered as a desktop notification \
                       or to a webhook where configured."
    )]
    async fn notify(&self, Parameters(args): Parameters<NotifyArgs>) -> Result<Json<Done>, String> {
        let session = args
            .session
            .or_else(|| std::env::var("LOOPSY_SESSION").ok())
            .filter(|s| !s.is_empty());
        let message = self
            .client
            .notify(session, args.title, args.text)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Json(Done { message }))
    }

    #[tool(description = "Read the messages other devices sent to this one, newest last.")]
    async fn msg_inbox(&self) -> Result<Json<Inbox>, String> {
        let messages = self.client.msg_inbox().await.map_err(|e| e.to_string())?;
        // Newest last: keep the newest that fit.
        let newest_first = messages.into_iter().rev().map(Message::from).collect();
        let (mut messages, truncated) = within_budget(newest_first);
        messages.reverse();
        Ok(Json(Inbox {
            messages,
            truncated,
        }))
    }
}

/// The longest a session tool waits.
const WAIT_MAX: u64 = 60_000;

impl Loopsy {
    pub(crate) async fn peer_list(&self) -> Result<Vec<control::Peer>, Failure> {
        self.client.peers().await.map_err(|e| e.to_string())
    }

    pub(crate) async fn session_entries(&self) -> Result<Vec<SessionInfo>, Failure> {
        let sessions = self.client.sessions().await.map_err(|e| e.to_string())?;
        Ok(sessions.into_iter().map(SessionInfo::from).collect())
    }
}

pub(crate) fn screen(look: node::Look) -> Screen {
    let (status, exit_code) = match (look.exited, &look.info.status) {
        (Some(code), _) | (None, &Status::Exited { code }) => ("exited", code),
        (None, Status::Running) => ("running", None),
    };
    Screen {
        id: look.info.id,
        rows: look.rows,
        cols: look.cols,
        text: look.text,
        cursor: [look.cursor.0, look.cursor.1],
        status: status.into(),
        exit_code,
    }
}

/// The one file a single-file copy reports, or why it failed.
fn one_file(done: node::CopyDone) -> Result<control::CopiedFile, Failure> {
    let file = done
        .files
        .into_iter()
        .next()
        .ok_or_else(|| "the copy reported no file".to_owned())?;
    match file.outcome.as_str() {
        "stored" => Ok(file),
        _ => Err(file
            .reason
            .unwrap_or_else(|| format!("{} was not copied", file.path))),
    }
}

/// A file's bytes for an agent: text when they are UTF-8 (a character cut in two at the
/// end of a `cut` read does not count against that), base64 otherwise.
fn as_text(bytes: Vec<u8>, cut: bool) -> (&'static str, String) {
    match String::from_utf8(bytes) {
        Ok(text) => ("utf-8", text),
        Err(e) if cut && e.utf8_error().error_len().is_none() => {
            let valid = e.utf8_error().valid_up_to();
            let mut bytes = e.into_bytes();
            bytes.truncate(valid);
            ("utf-8", String::from_utf8(bytes).unwrap_or_default())
        }
        Err(e) => ("base64", BASE64.encode(e.as_bytes())),
    }
}

/// The first items whose JSON fits in [`LIST_BUDGET`], and whether any were left out.
pub(crate) fn within_budget<T: Serialize>(mut items: Vec<T>) -> (Vec<T>, bool) {
    let mut used = 0;
    let fit = items
        .iter()
        .take_while(|item| {
            used += serde_json::to_vec(item).map_or(usize::MAX / 2, |v| v.len() + 1);
            used <= LIST_BUDGET
        })
        .count();
    let cut = fit < items.len();
    items.truncate(fit);
    (items, cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_cut_at_the_end_keeps_text_text() {
        let text = "naïve".as_bytes();
        assert_eq!(as_text(text[..3].to_vec(), true), ("utf-8", "na".into()));
        assert_eq!(as_text(text.to_vec(), false), ("utf-8", "naïve".into()));
        // Cut in two but not at a read's end: not text.
        assert_eq!(as_text(text[..3].to_vec(), false).0, "base64");
        assert_eq!(as_text(vec![0xff, b'a'], true).0, "base64");
    }

    #[test]
    fn lists_stop_at_the_budget() {
        let big = "x".repeat(1000);
        let (kept, cut) = within_budget(vec![big.clone(); 1000]);
        assert!(cut);
        assert!(kept.len() < 300 && !kept.is_empty(), "{}", kept.len());
        let (kept, cut) = within_budget(vec![big; 3]);
        assert_eq!((kept.len(), cut), (3, false));
    }
}
