//! What the tools ask of the local node, through its control API: the same requests the
//! CLI makes, so a peer's capabilities and policies apply to an agent exactly as to a user.
//! Every answer an agent gets is bounded here.

use std::{ops::ControlFlow, time::Duration};

use futures::{AsyncReadExt, AsyncWriteExt, future};
use loopsy_daemon::{
    Home,
    control::{self, Connection},
};
use loopsy_mesh::framed;
use loopsy_wire::{
    control::{Copied, CopiedFile, Copy, CopyProgress, Request, Response},
    exec::{self, Start},
    session::{self, Input, Reply},
};
use serde_bytes::ByteBuf;
use tokio::time::Instant;
use tokio_util::compat::TokioAsyncReadCompatExt;

/// What went wrong, in words for the agent: the node's own message where it gave one.
pub type Failure = String;

/// One request, one response.
pub async fn ask(home: &Home, request: Request) -> Result<Response, Failure> {
    control::request(home, request)
        .await
        .map_err(|e| e.to_string())
}

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
    home: &Home,
    peer: String,
    start: Start,
    stdin: Vec<u8>,
    limit: usize,
) -> Result<Ran, Failure> {
    let stream = open_stream(home, Request::Exec { peer, start }).await?;
    let (mut from, mut to) = stream.split();
    // A program may end (or be refused) without reading its input: a failed send only
    // stops the feeding, and the replies say what happened.
    let feed = async move {
        for piece in stdin.chunks(exec::CHUNK) {
            let data = piece.to_vec();
            let stdin = exec::Request::Stdin { data };
            if framed::write(&mut to, &stdin, exec::MAX_FRAME)
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = framed::write(&mut to, &exec::Request::StdinEof, exec::MAX_FRAME).await;
        // Held open: closing the connection would kill the program.
        future::pending::<()>().await;
    };
    let (mut stdout, mut stderr) = (Capped::new(limit), Capped::new(limit));
    let read = async {
        loop {
            match framed::read::<exec::Reply, _>(&mut from, exec::MAX_FRAME).await {
                Ok(Some(exec::Reply::Started { .. })) => {}
                Ok(Some(exec::Reply::Stdout { data })) => stdout.push(&data),
                Ok(Some(exec::Reply::Stderr { data })) => stderr.push(&data),
                Ok(Some(exec::Reply::Refused { reason })) => return Err(reason),
                Ok(Some(exec::Reply::Exited {
                    code,
                    signal,
                    timed_out,
                })) => return Ok((code, signal, timed_out)),
                Ok(None) => return Err("the connection was lost before the program ended".into()),
                Err(e) => return Err(format!("the connection broke: {e}")),
            }
        }
    };
    let (code, signal, timed_out) = tokio::select! {
        ended = read => ended?,
        _ = feed => unreachable!("feeding never ends by itself"),
    };
    Ok(Ran {
        code,
        signal,
        timed_out,
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
    home: &Home,
    copy: Copy,
    listed: usize,
    mut watch: impl FnMut(&CopyProgress) -> ControlFlow<Failure>,
) -> Result<CopyDone, Failure> {
    let mut connection = Connection::open(home, Request::Copy(copy))
        .await
        .map_err(|e| e.to_string())?;
    let mut files: Vec<CopiedFile> = Vec::new();
    loop {
        match connection.next().await.map_err(|e| e.to_string())? {
            Some(Response::CopyProgress(now)) => {
                if let ControlFlow::Break(reason) = watch(&now) {
                    return Err(reason);
                }
            }
            Some(Response::CopiedFiles { files: batch }) => {
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
            Some(Response::Copied(totals)) => {
                files.sort_by_key(|f| f.outcome != "failed");
                return Ok(CopyDone { totals, files });
            }
            Some(_) => return Err("the node gave an unexpected answer".into()),
            None => return Err("the node closed the connection before the copy ended".into()),
        }
    }
}

/// Sends one session request and reads its one reply.
pub async fn session(
    home: &Home,
    peer: Option<String>,
    request: session::Request,
) -> Result<Reply, Failure> {
    let mut stream = open_stream(home, Request::Session { peer, request }).await?;
    match framed::read::<Reply, _>(&mut stream, session::MAX_FRAME).await {
        Ok(Some(Reply::Error { message })) => Err(message),
        Ok(Some(reply)) => Ok(reply),
        Ok(None) => Err("the host closed the stream without answering".into()),
        Err(e) => Err(format!("the host's answer could not be read: {e}")),
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
    home: &Home,
    peer: Option<String>,
    session: String,
    keys: Vec<u8>,
    watch: Watch,
) -> Result<Look, Failure> {
    let request = session::Request::Attach {
        session,
        offset: None,
        rows: 0,
        cols: 0,
    };
    let stream = open_stream(home, Request::Session { peer, request }).await?;
    let (mut from, mut to) = stream.split();
    let Some(Reply::Attached {
        info,
        screen,
        rows,
        cols,
        ..
    }) = next_reply(&mut from).await?
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
    let typing = async {
        for piece in keys.chunks(session::CHUNK) {
            let input = Input::Keys {
                data: ByteBuf::from(piece),
            };
            framed::write(&mut to, &input, session::MAX_FRAME).await?;
        }
        Ok::<_, framed::WriteError>(())
    };
    match tokio::time::timeout_at(deadline, typing).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("cannot type into the session: {e}")),
        Err(_) => return Err("the session's program is not reading its input".into()),
    }
    while look.exited.is_none() {
        let until = deadline.min(Instant::now() + watch.quiet);
        let Ok(reply) = tokio::time::timeout_at(until, next_reply(&mut from)).await else {
            break;
        };
        match reply? {
            Some(Reply::Output { data, .. }) => terminal.process(&data),
            Some(Reply::Attached {
                screen, rows, cols, ..
            }) => {
                terminal = redraw(rows, cols, screen);
                (look.rows, look.cols) = terminal.screen().size();
            }
            Some(Reply::Exited { code }) => look.exited = Some(code),
            Some(_) => {}
            None => break,
        }
    }
    let _ = to.close().await;
    let screen = terminal.screen();
    look.text = text_of(screen);
    look.cursor = screen.cursor_position();
    Ok(look)
}

async fn next_reply(
    from: &mut (impl futures::AsyncRead + Unpin),
) -> Result<Option<Reply>, Failure> {
    match framed::read::<Reply, _>(from, session::MAX_FRAME).await {
        Ok(Some(Reply::Error { message })) => Err(message),
        Ok(reply) => Ok(reply),
        Err(e) => Err(format!("the session's stream broke: {e}")),
    }
}

fn redraw(rows: u16, cols: u16, screen: Option<ByteBuf>) -> vt100::Parser {
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

/// Makes a request whose answer is a relayed stream.
async fn open_stream(
    home: &Home,
    request: Request,
) -> Result<tokio_util::compat::Compat<tokio::net::UnixStream>, Failure> {
    let mut connection = Connection::open(home, request)
        .await
        .map_err(|e| e.to_string())?;
    match connection.next().await.map_err(|e| e.to_string())? {
        Some(Response::Stream { .. }) => Ok(connection.into_stream().compat()),
        _ => Err("the node gave an unexpected answer".into()),
    }
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
        let mut terminal = redraw(6, 20, Some(ByteBuf::from(snapshot)));
        terminal.process(b"ls\r\nfile\r\n$ ");
        assert_eq!(text_of(terminal.screen()), "$ echo hi\nhi\n$ ls\nfile\n$");
    }
}
