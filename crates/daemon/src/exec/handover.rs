//! An exec whose stdin, stdout and stderr the client handed over (`loopsy exec`, the
//! control request `exec_here`): this node writes the program's output into the client's
//! stdout and stderr and reads its stdin itself, so no byte of either crosses the control
//! connection or the CLI. The client keeps signals, window sizes and the exit code; this
//! side tells it how the program ended, once everything it wrote has been written.
//!
//! One task per exec, on descriptors that never block the runtime (see [`crate::passed`]):
//! a reader that stalls holds up its own program (through the stream's flow control), not
//! the node's other work. Buffers are bounded: a few chunks of output read ahead of the
//! writes, and a few chunks of input on their way to the peer.

use std::{convert::Infallible, future::Future, io, os::fd::OwnedFd, time::Duration};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use loopsy_mesh::framed;
use loopsy_wire::{
    exec::{self, CHUNK, Reply as ProgramReply, Request as Order},
    handover::{self, ExecNews},
};
use tokio::sync::mpsc;

use crate::{control::Reply, passed::Passed};

/// How long closing the program's stream may take once the exec ended.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Orders for the program queued at once: chunks of stdin, signals, sizes.
const QUEUED: usize = 4;
/// Chunks of output read ahead of the client's stdout and stderr.
const AHEAD: usize = 8;

/// The client's standard streams.
pub struct Stdio {
    /// None when the client sends its stdin as frames.
    stdin: Option<Passed>,
    stdout: Passed,
    stderr: Passed,
}

impl Stdio {
    /// Takes the descriptors the client passed, in order: stdin, stdout, stderr; stdin
    /// is let go unread when `stdin_relayed`.
    pub fn new([stdin, stdout, stderr]: [OwnedFd; 3], stdin_relayed: bool) -> io::Result<Self> {
        let stdin = if stdin_relayed {
            None
        } else {
            Some(Passed::new(stdin, false)?)
        };
        Ok(Self {
            stdin,
            stdout: Passed::new(stdout, true)?,
            stderr: Passed::new(stderr, true)?,
        })
    }
}

/// How an exec ended.
enum End {
    /// The peer's last word (`exited` or `refused`), for the client.
    Final(ExecNews),
    /// The client's stdout or stderr cannot be written.
    Unwritable,
    /// The client hung up (it was killed, even), or spoke out of turn.
    ClientGone,
    /// The program's stream ended or broke before its end, or the peer left.
    Lost,
}

/// Runs the exec on `program` (a stream of `/loopsy/exec/1` after the start) until the
/// program ends, the client hangs up, or `gone` completes (the peer's connection closed).
/// The client's descriptors are let go before it hears the end, so no byte of its stdin
/// is read after it returns to its shell.
pub async fn run<S>(stdio: Stdio, program: S, reply: &mut Reply, gone: impl Future<Output = ()>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (from_program, mut to_program) = program.split();
    let (from_client, to_client) = reply.io();
    let end = {
        let (queue, queued) = mpsc::channel(QUEUED);
        let output = output(&stdio, from_program, &mut *to_client);
        let relayed = stdio.stdin.is_none();
        let input = forever_after(input(stdio.stdin.as_ref(), queue.clone()));
        let orders = orders(from_client, relayed, queue);
        let send = forever_after(send(queued, &mut to_program));
        tokio::pin!(output, input, orders, send, gone);
        tokio::select! {
            end = &mut output => end,
            () = &mut orders => End::ClientGone,
            () = &mut gone => End::Lost,
            never = &mut input => match never {},
            never = &mut send => match never {},
        }
    };
    drop(stdio);
    let last = match end {
        End::Final(news) => Some(news),
        End::Unwritable => Some(ExecNews::Unwritable),
        // The client reads `lost` from the connection closing, as when relayed.
        End::ClientGone | End::Lost => None,
    };
    if let Some(news) = last {
        let _ = framed::write(to_client, &news, handover::MAX_FRAME).await;
    }
    // Closing the stream ends the program on the peer if it still runs.
    let _ = tokio::time::timeout(CLOSE_GRACE, to_program.close()).await;
}

/// Writes the program's output where the client's would go, and passes on the rest. The
/// stream is read ahead of the writes (up to [`AHEAD`] chunks), so that neither waits for
/// the other: a pipe's reader and the stream's sender each keep going, as they did when
/// the client relayed on a thread of its own.
async fn output<R, W>(stdio: &Stdio, from_program: R, to_client: &mut W) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (ahead, chunks) = mpsc::channel(AHEAD);
    let receive = receive(from_program, ahead, to_client);
    let write = write(stdio, chunks);
    tokio::pin!(receive, write);
    let mut received = None;
    loop {
        tokio::select! {
            end = &mut receive, if received.is_none() => match end {
                // Its queue is closed now: the writes end once they have caught up.
                End::Final(news) => received = Some(news),
                other => return other,
            },
            written = &mut write => {
                return match (written, received.take()) {
                    (Ok(()), Some(news)) => End::Final(news),
                    (Ok(()), None) => End::Lost,
                    (Err(_), _) => End::Unwritable,
                };
            }
        }
    }
}

/// Which of the client's streams a chunk of output goes to.
enum Chunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// Reads the program's replies: output into `ahead`, the start to the client, and the end
/// (or why there was none) as the result.
async fn receive<R, W>(mut from_program: R, ahead: mpsc::Sender<Chunk>, to_client: &mut W) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut scratch = Vec::new();
    loop {
        let read = framed::read_reusing::<ProgramReply, _>(
            &mut from_program,
            exec::MAX_FRAME,
            &mut scratch,
        );
        let reply = match read.await {
            Ok(Some(reply)) => reply,
            Ok(None) | Err(_) => return End::Lost,
        };
        let chunk = match reply {
            ProgramReply::Stdout { data } => Chunk::Stdout(data),
            ProgramReply::Stderr { data } => Chunk::Stderr(data),
            ProgramReply::Started { pid } => {
                let news = ExecNews::Started { pid };
                if framed::write(&mut *to_client, &news, handover::MAX_FRAME)
                    .await
                    .is_err()
                {
                    return End::ClientGone;
                }
                continue;
            }
            ProgramReply::Refused { reason } => return End::Final(ExecNews::Refused { reason }),
            ProgramReply::Exited {
                code,
                signal,
                timed_out,
            } => {
                return End::Final(ExecNews::Exited {
                    code,
                    signal,
                    timed_out,
                });
            }
        };
        if ahead.send(chunk).await.is_err() {
            // The writes failed; `write` says so.
            return std::future::pending().await;
        }
    }
}

/// Writes the chunks, in order, until their queue closes and is empty.
async fn write(stdio: &Stdio, mut chunks: mpsc::Receiver<Chunk>) -> io::Result<()> {
    while let Some(chunk) = chunks.recv().await {
        match chunk {
            Chunk::Stdout(data) => stdio.stdout.write_all(&data).await?,
            Chunk::Stderr(data) => stdio.stderr.write_all(&data).await?,
        }
    }
    Ok(())
}

/// Reads the client's stdin into orders for the program, then says where it ended; when
/// the client sends it, nothing.
async fn input(stdin: Option<&Passed>, queue: mpsc::Sender<Order>) {
    let Some(stdin) = stdin else {
        return;
    };
    let mut buffer = vec![0u8; CHUNK];
    loop {
        match stdin.read(&mut buffer).await {
            Ok(n) if n > 0 => {
                let data = buffer[..n].to_vec();
                if queue.send(Order::Stdin { data }).await.is_err() {
                    return;
                }
            }
            // The end, or a stdin that cannot be read: the program's input ends (as a
            // relaying client does).
            _ => {
                let _ = queue.send(Order::StdinEof).await;
                return;
            }
        }
    }
}

/// The client's signals and sizes (and its stdin, when `stdin_relayed`), queued for the
/// program in order; returns when the client hangs up or sends anything else.
async fn orders<C>(mut from_client: C, stdin_relayed: bool, queue: mpsc::Sender<Order>)
where
    C: AsyncRead + Unpin,
{
    loop {
        let order = match framed::read::<Order, _>(&mut from_client, exec::MAX_FRAME).await {
            Ok(Some(order @ (Order::Signal { .. } | Order::Resize { .. }))) => order,
            Ok(Some(order @ (Order::Stdin { .. } | Order::StdinEof))) if stdin_relayed => order,
            _ => return,
        };
        // A queue that is gone means the stream broke: the output hears of it.
        let _ = queue.send(order).await;
    }
}

/// Sends the queued orders to the program, in order, until the queue or the stream ends.
async fn send<W>(mut queued: mpsc::Receiver<Order>, to_program: &mut W)
where
    W: AsyncWrite + Unpin,
{
    while let Some(order) = queued.recv().await {
        if framed::write(&mut *to_program, &order, exec::MAX_FRAME)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// `work`, then nothing: for a part whose end ends nothing else.
async fn forever_after(work: impl Future<Output = ()>) -> Infallible {
    work.await;
    std::future::pending().await
}
