//! What the tools ask of the local node, through the client library the CLI uses too: the
//! same requests, so a peer's capabilities and policies apply to an agent exactly as to a
//! user. What is the agent's own lives here: every answer it gets is bounded, a program's
//! input is given whole, and a session's screen is rebuilt as text.

use std::{ops::ControlFlow, time::Duration};

use loopsy_client::{
    Client, exec,
    session::{Attach, Event},
    streams::CopyEvent,
};
use loopsy_wire::{
    control::{Copied, CopiedFile, Copy, CopyProgress},
    exec::Start,
    session,
};
use tokio::time::Instant;

/// What went wrong, in words for the agent: the node's own message where it gave one.
pub type Failure = String;

/// Output kept up to a limit, counting what was cut.
#[derive(Debug)]
pub struct Capped {
    kept: Vec<u8>,
    total: u64,
    limit: usize,
}

impl Capped {
    pub fn new(limit: usize) -> Self {
        Self {
            kept: Vec::new(),
            total: 0,
            limit,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.limit.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..room.min(data.len())]);
    }

    pub fn truncated(&self) -> bool {
        self.total > self.kept.len() as u64
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The kept bytes as text; bytes that are not UTF-8 become U+FFFD.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept).into_owned()
    }
}

/// How a program ran.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: Capped,
    pub stderr: Capped,
}

/// Runs `start` on `peer` with `stdin` as its whole input, keeping `limit` bytes of each
/// output stream. Output past the limit is read and dropped, so the program never blocks
/// on a full pipe.
pub async fn exec(
    client: &Client,
    peer: String,
    start: Start,
    stdin: Vec<u8>,
    limit: usize,
) -> Result<Ran, Failure> {
    let (mut output, mut input) = client.exec(peer, start).await.map_err(|e| e.to_string())?;
    // A program may end (or be refused) without reading its input: a failed send only
    // stops the feeding, and the output says what happened.
    let feed = async move {
        if input.stdin(&stdin).await.is_ok() {
            let _ = input.eof().await;
        }
        // Held open: closing the connection would kill the program.
        std::future::pending::<()>().await;
    };
    let (mut stdout, mut stderr) = (Capped::new(limit), Capped::new(limit));
    let read = async {
        loop {
            match output.next().await.map_err(|e| e.to_string())? {
                exec::Event::Stdout(data) => stdout.push(&data),
                exec::Event::Stderr(data) => stderr.push(&data),
                exec::Event::Exited(exit) => return Ok::<_, Failure>(exit),
            }
        }
    };
    let exit = tokio::select! {
        ended = read => ended?,
        _ = feed => unreachable!("feeding never ends by itself"),
    };
    Ok(Ran {
        code: exit.code,
        signal: exit.signal,
        timed_out: exit.timed_out,
        stdout,
        stderr,
    })
}

/// A finished copy and the first few files it reports.
#[derive(Debug)]
pub struct CopyDone {
    pub totals: Copied,
    pub files: Vec<CopiedFile>,
}

/// Runs a copy. `watch` sees each progress report and may stop the copy with a reason;
/// at most `listed` files are kept of the report, failed ones first.
pub async fn copy(
    client: &Client,
    copy: Copy,
    listed: usize,
    mut watch: impl FnMut(&CopyProgress) -> ControlFlow<Failure>,
) -> Result<CopyDone, Failure> {
    let mut run = client.copy(copy).await.map_err(|e| e.to_string())?;
    let mut files: Vec<CopiedFile> = Vec::new();
    loop {
        match run.next().await.map_err(|e| e.to_string())? {
            CopyEvent::Progress(now) => {
                if let ControlFlow::Break(reason) = watch(&now) {
                    return Err(reason);
                }
            }
            CopyEvent::Files(batch) => {
                for file in batch {
                    let failed = file.outcome == "failed";
                    if files.len() < listed {
                        files.push(file);
                    } else if failed
                        && let Some(slot) = files.iter_mut().rev().find(|f| f.outcome != "failed")
                    {
                        *slot = file;
                    }
                }
            }
            CopyEvent::Done(totals) => {
                files.sort_by_key(|f| f.outcome != "failed");
                return Ok(CopyDone { totals, files });
            }
        }
    }
}

/// A session's screen as an agent reads it.
#[derive(Debug)]
pub struct Look {
    pub info: session::Info,
    pub rows: u16,
    pub cols: u16,
    pub text: String,
    /// Where the cursor is: row and column, from 0.
    pub cursor: (u16, u16),
    /// The program's exit code, when it ended while we watched.
    pub exited: Option<Option<i32>>,
}

/// How long to watch a session after attaching (and typing).
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// Return once no output came for this long...
    pub quiet: Duration,
    /// ...or this long after the keys went out, whichever is first.
    pub most: Duration,
}

/// Attaches to `session` without taking over its size, types `keys` if any, watches the
/// output as `watch` says, and detaches. The screen is rebuilt here from the host's
/// snapshot and the output after it, so the text is what an attached user would see.
pub async fn look(
    client: &Client,
    peer: Option<String>,
    session: String,
    keys: Vec<u8>,
    watch: Watch,
) -> Result<Look, Failure> {
    let to = Attach {
        session,
        host: peer,
        offset: None,
        rows: 0,
        cols: 0,
        // Only looking is no answer to a session that waits; typing is.
        read_only: keys.is_empty(),
    };
    let (mut from, mut to) = client.attach(to).await.map_err(|e| e.to_string())?;
    let Some(Event::Attached {
        info,
        screen,
        rows,
        cols,
        ..
    }) = from.next().await.map_err(|e| e.to_string())?
    else {
        return Err("the host did not attach".into());
    };
    let mut terminal = redraw(rows, cols, screen);
    let (rows, cols) = terminal.screen().size();
    let mut look = Look {
        info,
        rows,
        cols,
        text: String::new(),
        cursor: (0, 0),
        exited: None,
    };
    let deadline = Instant::now() + watch.most;
    // A program that reads nothing stops the typing (the host holds a few MiB): it may
    // take no longer than the watch.
    match tokio::time::timeout_at(deadline, to.keys(&keys)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("cannot type into the session: {e}")),
        Err(_) => return Err("the session's program is not reading its input".into()),
    }
    while look.exited.is_none() {
        let until = deadline.min(Instant::now() + watch.quiet);
        let Ok(event) = tokio::time::timeout_at(until, from.next()).await else {
            break;
        };
        match event.map_err(|e| format!("the session's stream broke: {e}"))? {
            Some(Event::Output { data, .. }) => terminal.process(&data),
            Some(Event::Attached {
                screen, rows, cols, ..
            }) => {
                terminal = redraw(rows, cols, screen);
                (look.rows, look.cols) = terminal.screen().size();
            }
            Some(Event::Exited { code }) => look.exited = Some(code),
            None => break,
        }
    }
    to.close().await;
    let screen = terminal.screen();
    look.text = text_of(screen);
    look.cursor = screen.cursor_position();
    Ok(look)
}

fn redraw(rows: u16, cols: u16, screen: Option<Vec<u8>>) -> vt100::Parser {
    // A host that gives no size gets the common one; none gets more than a session may
    // have (the emulator holds every cell).
    let (rows, cols) = if rows == 0 || cols == 0 {
        (24, 80)
    } else {
        (rows.min(session::MAX_ROWS), cols.min(session::MAX_COLS))
    };
    let mut terminal = vt100::Parser::new(rows, cols, 0);
    if let Some(screen) = screen {
        terminal.process(&screen);
    }
    terminal
}

/// The screen's lines without the blank ones at the bottom.
fn text_of(screen: &vt100::Screen) -> String {
    let contents = screen.contents();
    contents.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_keeps_the_start_and_counts_the_rest() {
        let mut out = Capped::new(5);
        out.push(b"abc");
        out.push(b"defg");
        assert_eq!(out.text(), "abcde");
        assert_eq!(out.total(), 7);
        assert!(out.truncated());
        let mut exact = Capped::new(3);
        exact.push(b"abc");
        assert!(!exact.truncated());
    }

    #[test]
    fn a_screen_is_rebuilt_from_snapshot_and_output() {
        let mut source = vt100::Parser::new(6, 20, 0);
        source.process(b"$ echo hi\r\nhi\r\n$ ");
        let snapshot = source.screen().state_formatted();
        let mut terminal = redraw(6, 20, Some(snapshot));
        terminal.process(b"ls\r\nfile\r\n$ ");
        assert_eq!(text_of(terminal.screen()), "$ echo hi\nhi\n$ ls\nfile\n$");
    }
}
