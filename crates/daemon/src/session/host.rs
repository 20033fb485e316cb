//! One hosted session: a program on a PTY in a process group of its own, its output kept in
//! a bounded ring (with each byte's offset since the start) and mirrored by a terminal
//! emulator, so that a client can get the screen as it is now, or the output from any
//! offset the ring still holds.

use std::{
    collections::VecDeque,
    os::unix::process::ExitStatusExt,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use loopsy_wire::session::{Info, MAX_COLS, MAX_ROWS, Status};
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::{mpsc, watch},
};

use super::{
    attention::{Alerts, Call, Raised, Scanner},
    recorder::Recorder,
};
use crate::clock;
use loopsy_wire::attention::{Kind, Waiting};

/// Output bytes a session keeps for clients that resume.
pub const RING: usize = 4 * 1024 * 1024;
/// Lines of scrollback the emulator keeps.
const SCROLLBACK: usize = 200;
/// After the program exits, its output is read until it stops for this long (a background
/// job may keep the terminal open for ever).
const DRAIN_IDLE: Duration = Duration::from_millis(200);
/// After asking a session's programs to hang up, how long before they are killed.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// What a client watches: how much output there is, and whether the program has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub end: u64,
    pub exited: Option<Option<i32>>,
}

/// A terminal size from a client, kept within bounds.
pub(super) fn bounded(rows: u16, cols: u16) -> (u16, u16) {
    (rows.clamp(1, MAX_ROWS), cols.clamp(1, MAX_COLS))
}

/// A session's screen at one moment.
pub struct Screen {
    /// Bytes that draw it on a terminal of `rows` by `cols`.
    pub bytes: Vec<u8>,
    /// The output offset it shows.
    pub offset: u64,
    pub rows: u16,
    pub cols: u16,
}

/// Time marks a ring keeps at most: past that, the two oldest pieces are taken as one.
const MAX_MARKS: usize = 65_536;

/// Output kept for clients: the bytes from `start` to `start + bytes.len()`, and when each
/// piece of them came (for recordings).
#[derive(Default)]
struct Ring {
    start: u64,
    bytes: VecDeque<u8>,
    /// `(offset, milliseconds since the epoch)`: the output from each offset on, up to the
    /// next mark, came then. The first may lie before `start` (its piece was cut).
    marks: VecDeque<(u64, u64)>,
}

impl Ring {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    fn push(&mut self, data: &[u8], time_ms: u64) {
        // Pieces of the same millisecond are one.
        if !data.is_empty() && self.marks.back().is_none_or(|&(_, t)| t != time_ms) {
            if self.marks.len() >= MAX_MARKS {
                self.marks.remove(1);
            }
            self.marks.push_back((self.end(), time_ms));
        }
        self.bytes.extend(data);
        let over = self.bytes.len().saturating_sub(RING);
        if over > 0 {
            self.bytes.drain(..over);
            self.start += over as u64;
        }
        while self.marks.len() > 1 && self.marks[1].0 <= self.start {
            self.marks.pop_front();
        }
    }

    /// The bytes held, in pieces of at most `max` bytes, each with its time.
    fn pieces(&self, max: usize) -> Vec<(u64, Vec<u8>)> {
        let mut pieces = Vec::new();
        for (i, &(from, time)) in self.marks.iter().enumerate() {
            let to = self.marks.get(i + 1).map_or(self.end(), |&(next, _)| next);
            let mut at = from.max(self.start);
            while at < to {
                let len = usize::try_from(to - at)
                    .unwrap_or(usize::MAX)
                    .min(max.max(1));
                if let Some(bytes) = self.read(at, len) {
                    pieces.push((time, bytes));
                }
                at += len as u64;
            }
        }
        pieces
    }

    /// Up to `max` bytes from `offset`; `None` once they have left the ring.
    fn read(&self, offset: u64, max: usize) -> Option<Vec<u8>> {
        let skip = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        if skip > self.bytes.len() {
            return None;
        }
        let end = skip.saturating_add(max).min(self.bytes.len());
        Some(self.bytes.range(skip..end).copied().collect())
    }
}

struct State {
    ring: Ring,
    screen: vt100::Parser,
    /// Where the output the screen has parsed ends: the ring may be ahead of it for a
    /// moment (see `Session::record`).
    parsed: u64,
    info: Info,
    scanner: Scanner,
    /// The whole output, beyond the ring, for a session started with `--record`.
    recorder: Option<Recorder>,
}

/// A running (or ended) session.
pub struct Session {
    state: Mutex<State>,
    marks: watch::Sender<Mark>,
    /// Whether the program has ended (its code is in `marks`): for waiters that have no use
    /// for every piece of output `marks` would wake them for.
    ended: watch::Sender<bool>,
    /// Keys for the program: a client that types faster than it reads waits.
    keys: mpsc::Sender<Vec<u8>>,
    /// The terminal's size: only the latest matters.
    size: watch::Sender<(u16, u16)>,
    /// The program's terminal session (its ID is the program's PID): every process in it,
    /// background jobs included, ends with the session.
    sid: Option<Pid>,
    /// Where its calls for attention go.
    alerts: Alerts,
}

impl Session {
    /// Starts `program` on a new PTY of `rows` × `cols`, its calls for attention going to
    /// `alerts` and its output to `recorder` too when there is one: the session, and the
    /// pumps that carry its input and output, for its owner to run.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        mut info: Info,
        program: &str,
        args: &[String],
        arg0: Option<&str>,
        cwd: &std::path::Path,
        (rows, cols): (u16, u16),
        alerts: Alerts,
        recorder: Option<Recorder>,
    ) -> std::io::Result<(Arc<Self>, impl Future<Output = ()> + Send + 'static)> {
        info.recording = recorder.as_ref().map(Recorder::state);
        let (rows, cols) = bounded(rows, cols);
        let (pty, pts) = pty_process::open().map_err(std::io::Error::other)?;
        pty.resize(pty_process::Size::new(rows, cols))
            .map_err(std::io::Error::other)?;
        let mut command = pty_process::Command::from(loopsy_mesh::copies::untuned(program))
            .args(args)
            .current_dir(cwd)
            .env("TERM", "xterm-256color")
            .env("LOOPSY_SESSION", &info.id);
        if let Some(arg0) = arg0 {
            command = command.arg0(arg0);
        }
        let mut child = command.spawn(pts).map_err(std::io::Error::other)?;
        let sid = child.id().and_then(|pid| Pid::from_raw(pid as i32));
        let (mut output, mut input) = pty.into_split();
        let (keys, mut typed) = mpsc::channel::<Vec<u8>>(64);
        let (size, mut sizes) = watch::channel((rows, cols));
        let session = Arc::new(Self {
            state: Mutex::new(State {
                ring: Ring::default(),
                screen: vt100::Parser::new(rows, cols, SCROLLBACK),
                parsed: 0,
                info,
                scanner: Scanner::default(),
                recorder,
            }),
            marks: watch::channel(Mark {
                end: 0,
                exited: None,
            })
            .0,
            ended: watch::channel(false).0,
            keys,
            size,
            sid,
            alerts,
        });
        // Ends when the session is dropped, or the terminal is gone.
        let typing = async move {
            loop {
                let done = tokio::select! {
                    keys = typed.recv() => match keys {
                        Some(keys) => input.write_all(&keys).await,
                        None => return,
                    },
                    changed = sizes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let (rows, cols) = *sizes.borrow_and_update();
                        input
                            .resize(pty_process::Size::new(rows, cols))
                            .map_err(std::io::Error::other)
                    }
                };
                if done.is_err() {
                    return;
                }
            }
        };
        let pump = session.clone();
        let pumping = async move {
            let mut buffer = vec![0u8; 64 * 1024];
            // The program's end, not the terminal's: a background job may hold the terminal
            // open after the program is gone.
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    read = output.read(&mut buffer) => match read {
                        // A PTY whose last writer closed reads as an error (EIO).
                        Ok(0) | Err(_) => break child.wait().await,
                        Ok(n) => pump.record(&buffer[..n]),
                    },
                }
            };
            // As when a terminal closes: what it left behind on it hangs up too.
            if let Some(sid) = sid {
                signal_session(sid, Signal::HUP);
            }
            // What it wrote last is still on its way.
            while let Ok(Ok(n)) = tokio::time::timeout(DRAIN_IDLE, output.read(&mut buffer)).await {
                if n == 0 {
                    break;
                }
                pump.record(&buffer[..n]);
            }
            let code = match status {
                Ok(status) => status.code().or_else(|| status.signal().map(|s| 128 + s)),
                Err(_) => None,
            };
            pump.ended(code);
        };
        let pumps = async move {
            futures::future::join(typing, pumping).await;
        };
        Ok((session, pumps))
    }

    /// A session known only from the record a previous run of the node left: over.
    pub fn ended_before(info: Info) -> Arc<Self> {
        let (keys, _) = mpsc::channel(1);
        let exited = match info.status {
            Status::Exited { code } => code,
            Status::Running => None,
        };
        Arc::new(Self {
            state: Mutex::new(State {
                ring: Ring::default(),
                screen: vt100::Parser::new(24, 80, 0),
                parsed: 0,
                info: Info {
                    status: Status::Exited { code: exited },
                    clients: 0,
                    ..info
                },
                scanner: Scanner::default(),
                recorder: None,
            }),
            marks: watch::channel(Mark {
                end: 0,
                exited: Some(exited),
            })
            .0,
            ended: watch::channel(true).0,
            keys,
            size: watch::channel((24, 80)).0,
            sid: None,
            alerts: Alerts::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, data: &[u8]) {
        let now_ms = clock::now_ms();
        let end = {
            let mut state = self.lock();
            state.ring.push(data, now_ms);
            state.ring.end()
        };
        // Attached clients are woken before the screen parses the bytes: an echo goes out
        // while the parser works, not after it.
        self.marks.send_modify(|mark| mark.end = end);
        let signals = {
            let mut state = self.lock();
            if let Some(recorder) = state.recorder.as_mut() {
                recorder.output(data, now_ms);
                state.info.recording = Some(recorder.state());
            }
            state.screen.process(data);
            state.parsed = end;
            state.info.last_activity = now_ms / 1000;
            state.scanner.scan(data, std::time::Instant::now)
        };
        for signal in signals {
            self.raise(signal);
        }
    }

    fn ended(&self, code: Option<i32>) {
        {
            let mut state = self.lock();
            state.info.status = Status::Exited { code };
            // Closes the recording's file.
            state.recorder = None;
        }
        self.marks.send_modify(|mark| mark.exited = Some(code));
        self.ended.send_replace(true);
        let text = match code {
            Some(code) => format!("exited with code {code}"),
            None => "exited".to_owned(),
        };
        self.raise(Call {
            kind: Kind::Exit,
            title: None,
            text: Some(text),
        });
    }

    /// Marks the session as waiting (from its first unanswered call on), and tells the
    /// node.
    pub fn raise(&self, call: Call) {
        let (session, name) = {
            let mut state = self.lock();
            if state.info.waiting.is_none() {
                state.info.waiting = Some(Waiting {
                    since_ms: clock::now_ms(),
                    kind: call.kind,
                    text: call.text.clone().or_else(|| call.title.clone()),
                });
            }
            (state.info.id.clone(), state.info.name.clone())
        };
        self.alerts.raise(Raised {
            session,
            name,
            call,
        });
    }

    /// A client answered (typed or attached): the session no longer waits. Whether it did.
    pub fn answered(&self) -> bool {
        self.lock().info.waiting.take().is_some()
    }

    pub fn info(&self) -> Info {
        self.lock().info.clone()
    }

    /// Stops the recording, if one is being written, and forgets it: how large it was.
    pub fn drop_recording(&self) -> Option<u64> {
        let mut state = self.lock();
        state.recorder = None;
        state.info.recording.take().map(|r| r.bytes)
    }

    pub fn id(&self) -> String {
        self.lock().info.id.clone()
    }

    pub fn is_running(&self) -> bool {
        !*self.ended.borrow()
    }

    /// Watches the output's end and the program's exit.
    pub fn marks(&self) -> watch::Receiver<Mark> {
        self.marks.subscribe()
    }

    /// Until the program has exited.
    pub fn exited(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut ended = self.ended.subscribe();
        async move {
            let _ = ended.wait_for(|&ended| ended).await;
        }
    }

    /// The screen as it is, as bytes that draw it on a terminal of its size.
    pub fn screen(&self) -> Screen {
        let state = self.lock();
        let screen = state.screen.screen();
        let (rows, cols) = screen.size();
        Screen {
            bytes: screen.state_formatted(),
            offset: state.parsed,
            rows,
            cols,
        }
    }

    /// The terminal's size now.
    pub fn size(&self) -> (u16, u16) {
        *self.size.borrow()
    }

    /// The screen's text, for programs that read it.
    pub fn text(&self) -> String {
        self.lock().screen.screen().contents()
    }

    /// What the session's terminal holds for a recording: its size, when it started, and
    /// the output still in the ring in pieces of at most `max` bytes, each with its time.
    pub fn recording(&self, max: usize) -> (u16, u16, u64, Vec<(u64, Vec<u8>)>) {
        let state = self.lock();
        let (rows, cols) = state.screen.screen().size();
        (rows, cols, state.info.created, state.ring.pieces(max))
    }

    /// Output from `offset`, at most `max` bytes; `None` once it has left the ring.
    pub fn output(&self, offset: u64, max: usize) -> Option<Vec<u8>> {
        self.lock().ring.read(offset, max)
    }

    /// Types `keys`; waits while the program has not read what came before.
    pub async fn keys(&self, keys: Vec<u8>) {
        self.lock().info.last_activity = clock::now_secs();
        let _ = self.keys.send(keys).await;
    }

    /// The terminal takes the size of the client that attached or resized last.
    pub fn resize(&self, rows: u16, cols: u16) {
        let (rows, cols) = bounded(rows, cols);
        self.lock().screen.screen_mut().set_size(rows, cols);
        self.size.send_replace((rows, cols));
    }

    pub fn client_joined(&self) {
        self.lock().info.clients += 1;
    }

    pub fn client_left(&self) {
        let mut state = self.lock();
        state.info.clients = state.info.clients.saturating_sub(1);
    }

    /// Ends the program and everything it started on its terminal: a hang-up, then a kill
    /// for whatever lingers.
    pub async fn kill(&self) {
        let Some(sid) = self.sid.filter(|_| self.is_running()) else {
            return;
        };
        signal_session(sid, Signal::HUP);
        let _ = tokio::time::timeout(KILL_GRACE, self.exited()).await;
        signal_session(sid, Signal::KILL);
    }

    /// Signals every process of a running session's terminal, not waiting.
    pub fn signal(&self, signal: Signal) {
        if let Some(sid) = self.sid.filter(|_| self.is_running()) {
            signal_session(sid, signal);
        }
    }
}

/// Sends `signal` to every process whose terminal session is `sid` (a job that made a
/// process group of its own included).
fn signal_session(sid: Pid, signal: Signal) {
    let _ = kill_process_group(sid, signal);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .and_then(Pid::from_raw)
        else {
            continue;
        };
        if session_of(&entry.path()) == Some(sid.as_raw_nonzero().get()) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

/// A process's session ID, from `/proc/PID/stat` (after the command name, which may hold
/// spaces and parentheses: state, parent, group, session).
fn session_of(proc_dir: &std::path::Path) -> Option<i32> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_terminal_larger_than_the_bounds_is_cut_down_to_them() {
        let info = Info {
            id: "t".into(),
            name: None,
            command: vec!["true".into()],
            status: Status::Running,
            created: 0,
            last_activity: 0,
            clients: 0,
            waiting: None,
            recording: None,
        };
        let (session, pumps) = Session::start(
            info,
            "true",
            &[],
            None,
            std::path::Path::new("/"),
            (u16::MAX, u16::MAX),
            Alerts::default(),
            None,
        )
        .unwrap();
        let _pumps = tokio::spawn(pumps);
        assert_eq!(session.lock().screen.screen().size(), (MAX_ROWS, MAX_COLS));
        session.resize(0, 0);
        assert_eq!(session.lock().screen.screen().size(), (1, 1));
        let mut marks = session.marks();
        let _ = marks.wait_for(|m| m.exited.is_some()).await;
    }

    #[test]
    fn the_ring_keeps_the_newest_bytes_with_their_offsets() {
        let mut ring = Ring::default();
        ring.push(b"hello", 1);
        assert_eq!(ring.read(1, 3).unwrap(), b"ell");
        assert_eq!(ring.read(5, 3).unwrap(), b"");
        assert_eq!(ring.read(6, 3), None);
        ring.push(&vec![b'x'; RING], 2);
        assert_eq!(ring.start, 5);
        assert_eq!(ring.read(4, 1), None, "left the ring");
        assert_eq!(ring.read(5, 2).unwrap(), b"xx");
        assert_eq!(ring.end(), 5 + RING as u64);
    }

    #[test]
    fn the_ring_keeps_when_each_piece_came() {
        let mut ring = Ring::default();
        ring.push(b"ab", 10);
        ring.push(b"c", 10);
        ring.push(b"defg", 20);
        assert_eq!(
            ring.pieces(3),
            [
                (10, b"abc".to_vec()),
                (20, b"def".to_vec()),
                (20, b"g".to_vec())
            ]
        );
        // A piece cut by the ring keeps its time for what is left of it.
        ring.push(&vec![b'x'; RING - 2], 30);
        let pieces = ring.pieces(RING);
        assert_eq!(pieces[0], (20, b"fg".to_vec()));
        assert_eq!(pieces[1].0, 30);
        assert_eq!(pieces.len(), 2);
        // Marks stay bounded, however many pieces come.
        for t in 0..(MAX_MARKS as u64 + 10) {
            ring.push(b"y", 100 + t);
        }
        assert!(ring.marks.len() <= MAX_MARKS);
        let total: usize = ring.pieces(CHUNK_TEST).iter().map(|(_, b)| b.len()).sum();
        assert_eq!(total, RING);
    }

    const CHUNK_TEST: usize = 64 * 1024;
}
