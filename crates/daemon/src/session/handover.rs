//! An attachment whose terminal the client handed over (`loopsy attach`): this node reads
//! the keys from the client's stdin and writes the session's output to its stdout itself,
//! so a keystroke wakes no CLI and no output is copied through it. The client keeps raw
//! mode, the window size (sent here as it changes) and the exit; this side says how the
//! attachment ended. The client hanging up (killed, even) detaches.
//!
//! One task per hand-over, on descriptors of its own that never block the runtime (see
//! [`crate::passed`]): a stopped terminal holds up its own attachment, and the host then
//! waits on this stream's flow control, not the node's other sessions.

use std::{future::Future, io, os::fd::OwnedFd};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Stream, StreamExt};
use loopsy_mesh::framed::{self, ReadError};
use loopsy_wire::{
    handover::{self, DETACH, Ended, ToClient, ToNode},
    session::{self, CHUNK, Input, Reply as HostReply},
};
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

use crate::{control::Reply, passed::Passed};

/// How long closing the host's stream may take once the attachment ended.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The client's terminal: keys in, the screen out, and where the client can read how
/// far the screen got.
pub struct Terminal {
    keys: Passed,
    screen: Passed,
    shown: OwnedFd,
}

impl Terminal {
    pub fn new([stdin, stdout, shown]: [OwnedFd; 3]) -> io::Result<Self> {
        let progress = rustix::fs::fstat(&shown)?;
        if rustix::fs::FileType::from_raw_mode(progress.st_mode)
            != rustix::fs::FileType::RegularFile
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the progress file is not a file",
            ));
        }
        Ok(Self {
            keys: Passed::new(stdin, false)?,
            screen: Passed::new(stdout, true)?,
            shown,
        })
    }

    /// Notes that the screen is shown up to `at`. Written after the output it counts, so
    /// a node killed between the two would have the client show that output again: the
    /// one way a byte can repeat, in a window of one system call.
    fn shown(&self, at: u64) {
        let _ = rustix::io::pwrite(&self.shown, &at.to_le_bytes(), 0);
    }
}

/// Runs the attachment on `host` (a stream of `/loopsy/session/1` after the `attach`
/// request) until it ends, `gone` completes (the host's connection closed), or the client
/// hangs up; then tells the client how it ended and closes the host's stream.
pub async fn run<S>(
    terminal: Terminal,
    host: S,
    read_only: bool,
    reply: &mut Reply,
    gone: impl Future<Output = ()>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (from_host, mut to_host) = host.split();
    let (from_client, to_client) = reply.io();
    let ended = drive(
        &terminal,
        from_host,
        &mut to_host,
        read_only,
        (from_client, &mut *to_client),
        gone,
    )
    .await;
    if let Some(ended) = ended {
        let _ = framed::write(to_client, &ToClient::Ended(ended), handover::MAX_FRAME).await;
    }
    // The host hears the stream close and detaches this client.
    let _ = tokio::time::timeout(CLOSE_GRACE, to_host.close()).await;
}

/// The attachment's loop: `None` when the client hung up.
async fn drive<H, W, C, T>(
    terminal: &Terminal,
    from_host: H,
    to_host: &mut W,
    read_only: bool,
    (from_client, to_client): (C, &mut T),
    gone: impl Future<Output = ()>,
) -> Option<Ended>
where
    H: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    C: AsyncRead + Unpin,
    T: AsyncWrite + Unpin,
{
    let replies = frames::<HostReply, _>(from_host, session::MAX_FRAME);
    let orders = frames::<ToNode, _>(from_client, handover::MAX_FRAME);
    tokio::pin!(replies, orders, gone);
    // The offset after the last byte shown.
    let mut at: Option<u64> = None;
    // An `attached` the client has not answered yet, with the screen to draw after.
    let mut held: Option<Option<ByteBuf>> = None;
    let mut attached = false;
    let mut typed = vec![0u8; 4096];
    let lost = |message: String, at| Some(Ended::Lost { message, at });
    let unwritable = || {
        Some(Ended::Failed {
            message: "cannot write to the terminal".into(),
        })
    };
    loop {
        tokio::select! {
            () = &mut gone => return lost("the host's connection closed".into(), at),
            reply = replies.next(), if held.is_none() => match reply {
                Some(Ok(HostReply::Attached { info, offset, screen, .. })) => {
                    at = Some(offset);
                    terminal.shown(offset);
                    attached = true;
                    let news = ToClient::Attached { session: info.id, offset };
                    framed::write(to_client, &news, handover::MAX_FRAME).await.ok()?;
                    held = Some(screen);
                }
                Some(Ok(HostReply::Output { offset, data })) => {
                    let (end, fresh) = session::unseen(at, offset, &data);
                    at = Some(end);
                    if let Some(fresh) = fresh {
                        match show(terminal, fresh, &mut orders, to_host, read_only).await {
                            Ok(()) => terminal.shown(end),
                            Err(Stop::Unwritable) => return unwritable(),
                            Err(Stop::HungUp) => return None,
                        }
                    }
                }
                Some(Ok(HostReply::Exited { code })) => return Some(Ended::Exited { code }),
                Some(Ok(HostReply::Error { message })) => return Some(Ended::Failed { message }),
                Some(Ok(_)) => {
                    return Some(Ended::Failed {
                        message: "unexpected answer: wanted a session's output".into(),
                    });
                }
                Some(Err(e)) => return lost(format!("the connection to the peer failed: {e}"), at),
                None => return lost("the host's stream ended".into(), at),
            },
            order = orders.next() => match order {
                Some(Ok(ToNode::Proceed)) => {
                    if let Some(Some(screen)) = held.take() {
                        match show(terminal, &screen, &mut orders, to_host, read_only).await {
                            Ok(()) => {}
                            Err(Stop::Unwritable) => return unwritable(),
                            Err(Stop::HungUp) => return None,
                        }
                    }
                }
                Some(Ok(ToNode::Resize { rows, cols })) => {
                    if !read_only {
                        let resize = Input::Resize { rows, cols };
                        let _ = framed::write(to_host, &resize, session::MAX_FRAME).await;
                    }
                }
                // The client hung up, or spoke nonsense: detach.
                Some(Err(_)) | None => return None,
            },
            // Keys are read once attached, and not while the screen waits to be drawn.
            read = terminal.keys.read(&mut typed), if attached && held.is_none() => {
                let n = match read {
                    Ok(n) if n > 0 => n,
                    // A pipe or /dev/null ended: leave the session running, as the
                    // detach key would.
                    _ => return Some(Ended::Detached { input_ended: true }),
                };
                let typed = &typed[..n];
                let detach = typed.iter().position(|&b| b == DETACH);
                let keys = &typed[..detach.unwrap_or(n)];
                if !read_only {
                    for piece in keys.chunks(CHUNK) {
                        let order = Input::Keys { data: ByteBuf::from(piece) };
                        if framed::write(to_host, &order, session::MAX_FRAME).await.is_err() {
                            return lost("cannot send keys to the host".into(), at);
                        }
                    }
                }
                if detach.is_some() {
                    return Some(Ended::Detached { input_ended: false });
                }
            }
        }
    }
}

/// Why [`show`] stopped short.
enum Stop {
    Unwritable,
    HungUp,
}

/// Writes `data` to the terminal, hearing the client meanwhile: a terminal that stopped
/// reading must not keep the node from noticing that its client hung up (then the
/// attachment ends and the terminal is let go). Sizes sent meanwhile are passed on.
async fn show<O, W>(
    terminal: &Terminal,
    data: &[u8],
    orders: &mut O,
    to_host: &mut W,
    read_only: bool,
) -> Result<(), Stop>
where
    O: Stream<Item = Result<ToNode, ReadError>> + Unpin,
    W: AsyncWrite + Unpin,
{
    let write = terminal.screen.write_all(data);
    tokio::pin!(write);
    loop {
        tokio::select! {
            written = &mut write => return written.map_err(|_| Stop::Unwritable),
            order = orders.next() => match order {
                Some(Ok(ToNode::Resize { rows, cols })) => {
                    if !read_only {
                        let resize = Input::Resize { rows, cols };
                        let _ = framed::write(to_host, &resize, session::MAX_FRAME).await;
                    }
                }
                // Only after an `attached`, which no write is waiting on.
                Some(Ok(ToNode::Proceed)) => {}
                Some(Err(_)) | None => return Err(Stop::HungUp),
            },
        }
    }
}

/// The frames of `reader` as a stream, which (unlike one read) may be dropped from a
/// `select!` without losing half a frame.
fn frames<T, R>(reader: R, max: usize) -> impl Stream<Item = Result<T, ReadError>>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    futures::stream::unfold(Some(reader), move |reader| async move {
        let mut reader = reader?;
        match framed::read::<T, _>(&mut reader, max).await {
            Ok(Some(frame)) => Some((Ok(frame), Some(reader))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    })
}
