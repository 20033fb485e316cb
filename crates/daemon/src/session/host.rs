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

use loopsy_wire::session::{Info, Status};
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::{mpsc, watch},
};

use crate::clock;

/// Output bytes a session keeps for clients that resume.
pub const RING: usize = 4 * 1024 * 1024;
/// Lines of scrollback the emulator keeps.
const SCROLLBACK: usize = 1000;
/// After asking a session's programs to hang up, how long before they are killed.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// What a client watches: how much output there is, and whether the program has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub end: u64,
    pub exited: Option<Option<i32>>,
}

/// What the program is told by clients.
enum ToPty {
    Keys(Vec<u8>),
    Resize(u16, u16),
}

/// Output kept for clients: the bytes from `start` to `start + bytes.len()`.
struct Ring {
    start: u64,
    bytes: VecDeque<u8>,
}

impl Ring {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    fn push(&mut self, data: &[u8]) {
        self.bytes.extend(data);
        let over = self.bytes.len().saturating_sub(RING);
        if over > 0 {
            self.bytes.drain(..over);
            self.start += over as u64;
        }
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
    info: Info,
}

/// A running (or ended) session.
pub struct Session {
    state: Mutex<State>,
    marks: watch::Sender<Mark>,
    to_pty: mpsc::Sender<ToPty>,
    pgid: Option<Pid>,
}

impl Session {
    /// Starts `program` on a new PTY of `rows` × `cols`.
    pub fn start(
        info: Info,
        program: &str,
        args: &[String],
        arg0: Option<&str>,
        cwd: &std::path::Path,
        rows: u16,
        cols: u16,
    ) -> std::io::Result<Arc<Self>> {
        let (rows, cols) = (rows.max(1), cols.max(1));
        let (pty, pts) = pty_process::open().map_err(std::io::Error::other)?;
        pty.resize(pty_process::Size::new(rows, cols))
            .map_err(std::io::Error::other)?;
        let mut command = pty_process::Command::new(program)
            .args(args)
            .current_dir(cwd)
            .env("TERM", "xterm-256color")
            .env("LOOPSY_SESSION", &info.id);
        if let Some(arg0) = arg0 {
            command = command.arg0(arg0);
        }
        let mut child = command.spawn(pts).map_err(std::io::Error::other)?;
        let pgid = child.id().and_then(|pid| Pid::from_raw(pid as i32));
        let (mut output, mut input) = pty.into_split();
        let (to_pty, mut from_clients) = mpsc::channel(64);
        let session = Arc::new(Self {
            state: Mutex::new(State {
                ring: Ring {
                    start: 0,
                    bytes: VecDeque::new(),
                },
                screen: vt100::Parser::new(rows, cols, SCROLLBACK),
                info,
            }),
            marks: watch::channel(Mark {
                end: 0,
                exited: None,
            })
            .0,
            to_pty,
            pgid,
        });
        tokio::spawn(async move {
            while let Some(message) = from_clients.recv().await {
                let done = match message {
                    ToPty::Keys(keys) => input.write_all(&keys).await,
                    ToPty::Resize(rows, cols) => input
                        .resize(pty_process::Size::new(rows, cols))
                        .map_err(std::io::Error::other),
                };
                if done.is_err() {
                    return;
                }
            }
        });
        let pump = session.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 64 * 1024];
            // A PTY whose last writer closed reads as an error (EIO), not as the end.
            while let Ok(n) = output.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                pump.record(&buffer[..n]);
            }
            let code = match child.wait().await {
                Ok(status) => status.code().or_else(|| status.signal().map(|s| 128 + s)),
                Err(_) => None,
            };
            pump.ended(Some(code).flatten());
        });
        Ok(session)
    }

    /// A session known only from the record a previous run of the node left: over.
    pub fn ended_before(info: Info) -> Arc<Self> {
        let (to_pty, _) = mpsc::channel(1);
        let exited = match info.status {
            Status::Exited { code } => code,
            Status::Running => None,
        };
        Arc::new(Self {
            state: Mutex::new(State {
                ring: Ring {
                    start: 0,
                    bytes: VecDeque::new(),
                },
                screen: vt100::Parser::new(24, 80, 0),
                info: Info {
                    status: Status::Exited { code: exited },
                    clients: 0,
                    ..info
                },
            }),
            marks: watch::channel(Mark {
                end: 0,
                exited: Some(exited),
            })
            .0,
            to_pty,
            pgid: None,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, data: &[u8]) {
        let end = {
            let mut state = self.lock();
            state.ring.push(data);
            state.screen.process(data);
            state.info.last_activity = clock::now_secs();
            state.ring.end()
        };
        self.marks.send_modify(|mark| mark.end = end);
    }

    fn ended(&self, code: Option<i32>) {
        self.lock().info.status = Status::Exited { code };
        self.marks.send_modify(|mark| mark.exited = Some(code));
    }

    pub fn info(&self) -> Info {
        self.lock().info.clone()
    }

    pub fn id(&self) -> String {
        self.lock().info.id.clone()
    }

    pub fn is_running(&self) -> bool {
        self.marks.borrow().exited.is_none()
    }

    /// Watches the output's end and the program's exit.
    pub fn marks(&self) -> watch::Receiver<Mark> {
        self.marks.subscribe()
    }

    /// The screen as it is, as bytes that draw it on a terminal, and the offset it shows.
    pub fn screen(&self) -> (Vec<u8>, u64) {
        let state = self.lock();
        (state.screen.screen().state_formatted(), state.ring.end())
    }

    /// The screen's text, for programs that read it.
    pub fn text(&self) -> String {
        self.lock().screen.screen().contents()
    }

    /// Output from `offset`, at most `max` bytes; `None` once it has left the ring.
    pub fn output(&self, offset: u64, max: usize) -> Option<Vec<u8>> {
        self.lock().ring.read(offset, max)
    }

    pub fn keys(&self, keys: Vec<u8>) {
        let _ = self.to_pty.try_send(ToPty::Keys(keys));
        self.lock().info.last_activity = clock::now_secs();
    }

    /// The terminal takes the size of the client that attached or resized last.
    pub fn resize(&self, rows: u16, cols: u16) {
        let (rows, cols) = (rows.clamp(1, 1000), cols.clamp(1, 1000));
        self.lock().screen.screen_mut().set_size(rows, cols);
        let _ = self.to_pty.try_send(ToPty::Resize(rows, cols));
    }

    pub fn client_joined(&self) {
        self.lock().info.clients += 1;
    }

    pub fn client_left(&self) {
        let mut state = self.lock();
        state.info.clients = state.info.clients.saturating_sub(1);
    }

    /// Ends the program: a hang-up to its process group, then a kill if it lingers.
    pub async fn kill(&self) {
        let Some(pgid) = self.pgid else { return };
        if !self.is_running() {
            return;
        }
        let _ = kill_process_group(pgid, Signal::HUP);
        let mut marks = self.marks();
        let ended = tokio::time::timeout(KILL_GRACE, marks.wait_for(|m| m.exited.is_some()));
        if ended.await.is_err() {
            let _ = kill_process_group(pgid, Signal::KILL);
        }
    }

    /// A hang-up to the process group, not waiting (the node is stopping).
    pub fn hang_up(&self) {
        if let Some(pgid) = self.pgid
            && self.is_running()
        {
            let _ = kill_process_group(pgid, Signal::HUP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_bytes_with_their_offsets() {
        let mut ring = Ring {
            start: 0,
            bytes: VecDeque::new(),
        };
        ring.push(b"hello");
        assert_eq!(ring.read(1, 3).unwrap(), b"ell");
        assert_eq!(ring.read(5, 3).unwrap(), b"");
        assert_eq!(ring.read(6, 3), None);
        ring.push(&vec![b'x'; RING]);
        assert_eq!(ring.start, 5);
        assert_eq!(ring.read(4, 1), None, "left the ring");
        assert_eq!(ring.read(5, 2).unwrap(), b"xx");
        assert_eq!(ring.end(), 5 + RING as u64);
    }
}
