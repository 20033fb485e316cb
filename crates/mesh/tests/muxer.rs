//! A peer that writes into streams we do not read cannot make one connection hold more than
//! `muxer::MAX_UNREAD`. The attacker here speaks yamux frame by frame, bound by none of
//! yamux's courtesies: it claims a long round trip (it answers our pings late, and yamux
//! grows a window whenever it is read within two round trips), fills every window it is
//! given while we read fast, then opens far more streams than we hold and fills those too
//! while we read nothing. And past the streams we hold, opening one more waits rather than
//! ends the connection.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use std::task::Poll;

use futures::{AsyncReadExt, AsyncWriteExt, future};
use libp2p::core::{
    muxing::StreamMuxerExt,
    upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade},
};
use loopsy_mesh::muxer::{self, MAX_STREAMS, MAX_UNREAD, OPEN_BELOW, STREAM_WINDOW};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Notify, mpsc, oneshot},
};
use tokio_util::compat::TokioAsyncReadCompatExt;

const DATA: u8 = 0;
const WINDOW_UPDATE: u8 = 1;
const PING: u8 = 2;
const GO_AWAY: u8 = 3;
const SYN: u16 = 1;
const ACK: u16 = 2;
const RST: u16 = 8;
/// The round trip the attacker makes us measure.
const CLAIMED_RTT: Duration = Duration::from_millis(100);
/// Streams read fast first, so that their windows grow.
const READ_FAST: u32 = 8;
/// Streams opened afterwards and never read: well past what one connection holds.
const FLOOD: u32 = 500;
const FRAME: usize = 64 * 1024;

fn header(kind: u8, flags: u16, stream: u32, len: u32) -> Vec<u8> {
    let mut h = vec![0, kind];
    h.extend_from_slice(&flags.to_be_bytes());
    h.extend_from_slice(&stream.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h
}

/// What the attacker knows of one of its streams.
#[derive(Debug, Default)]
struct Sent {
    credit: u64,
    sent: u64,
    opened: bool,
    reset: bool,
}

#[derive(Default)]
struct Attacker {
    streams: Mutex<BTreeMap<u32, Sent>>,
    credit: Notify,
    went_away: AtomicBool,
}

impl Attacker {
    fn open(&self, ids: impl Iterator<Item = u32>) {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            streams.insert(
                id,
                Sent {
                    credit: STREAM_WINDOW as u64,
                    ..Sent::default()
                },
            );
        }
        drop(streams);
        self.credit.notify_one();
    }

    /// Bytes sent on streams we have not reset: what we hold unless we read it.
    fn sent_to_held(&self) -> u64 {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.values().filter(|s| !s.reset).map(|s| s.sent).sum()
    }

    fn reset(&self) -> usize {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.values().filter(|s| s.reset).count()
    }

    /// Reads our frames: answers pings late, counts window given, notes resets.
    async fn hear(
        self: Arc<Self>,
        mut from: tokio::net::tcp::OwnedReadHalf,
        to: mpsc::Sender<Vec<u8>>,
    ) {
        let mut head = [0u8; 12];
        while from.read_exact(&mut head).await.is_ok() {
            let kind = head[1];
            let flags = u16::from_be_bytes([head[2], head[3]]);
            let id = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            let len = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
            match kind {
                DATA => {
                    let mut body = vec![0; len as usize];
                    if from.read_exact(&mut body).await.is_err() {
                        break;
                    }
                }
                WINDOW_UPDATE | PING | GO_AWAY => {}
                _ => break,
            }
            if kind == PING && flags & ACK == 0 {
                let to = to.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(CLAIMED_RTT).await;
                    let _ = to.send(header(PING, ACK, 0, len)).await;
                });
            }
            if kind == GO_AWAY {
                self.went_away.store(true, Ordering::Release);
            }
            let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(stream) = streams.get_mut(&id) {
                if flags & RST != 0 {
                    stream.reset = true;
                } else if kind == WINDOW_UPDATE {
                    stream.credit += u64::from(len);
                }
            }
            drop(streams);
            self.credit.notify_one();
        }
    }

    /// Sends as much as every stream has credit for, for ever.
    async fn pump(self: Arc<Self>, to: mpsc::Sender<Vec<u8>>) {
        loop {
            let next = {
                let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
                streams
                    .iter_mut()
                    .find(|(_, s)| s.credit > 0 && !s.reset)
                    .map(|(id, s)| {
                        let len = s.credit.min(FRAME as u64);
                        s.credit -= len;
                        s.sent += len;
                        let flags = if s.opened { 0 } else { SYN };
                        s.opened = true;
                        (*id, flags, len as usize)
                    })
            };
            match next {
                Some((id, flags, len)) => {
                    let mut frame = header(DATA, flags, id, len as u32);
                    frame.resize(frame.len() + len, 0xa5);
                    if to.send(frame).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = tokio::time::timeout(Duration::from_millis(50), self.credit.notified())
                        .await;
                }
            }
        }
    }
}

/// Every stream the peer of `muxer` opens, as it opens them (the connection driven meanwhile).
fn accept_all<C>(mut muxer: muxer::Muxer<C>) -> mpsc::UnboundedReceiver<muxer::Stream>
where
    C: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static,
{
    let (accepted_tx, accepted) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(stream) = future::poll_fn(|cx| muxer.poll_inbound_unpin(cx)).await {
            if accepted_tx.send(stream).is_err() {
                break;
            }
        }
    });
    accepted
}

/// Waits until `value` stops changing for a second.
async fn settled(value: impl Fn() -> u64) -> u64 {
    let mut last = value();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = value();
        if now == last {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_make_a_connection_hold_more_than_its_cap() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let attacker_socket = TcpStream::connect(listener.local_addr()?).await?;
    let (socket, _) = listener.accept().await?;
    let muxer = muxer::Config
        .upgrade_inbound(socket.compat(), "/yamux/1.0.0")
        .await?;
    let mut accepted = accept_all(muxer);

    let attacker = Arc::new(Attacker::default());
    let (frames, mut outgoing) = mpsc::channel::<Vec<u8>>(16);
    let (from, mut to) = attacker_socket.into_split();
    tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if to.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(attacker.clone().hear(from, frames.clone()));
    tokio::spawn(attacker.clone().pump(frames.clone()));

    // We read the first streams as fast as they come, for long enough to grow their
    // windows as far as we let them.
    attacker.open((0..READ_FAST).map(|i| 2 * i + 1));
    let read = Arc::new(AtomicU64::new(0));
    let stop_reading = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..READ_FAST {
        let mut stream = accepted.recv().await.expect("a stream");
        let (read, stop) = (read.clone(), stop_reading.clone());
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0; FRAME];
            while !stop.load(Ordering::Acquire) {
                match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => break,
                    Ok(Ok(n)) => read.fetch_add(n as u64, Ordering::AcqRel),
                    Err(_) => continue,
                };
            }
            stream
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_reading.store(true, Ordering::Release);
    let mut held = Vec::new();
    for reader in readers {
        held.push(reader.await?);
    }
    let read_fast = read.load(Ordering::Acquire);

    // Then a flood of streams, every one filled, none read.
    attacker.open((READ_FAST..READ_FAST + FLOOD).map(|i| 2 * i + 1));
    let unread = settled(|| attacker.sent_to_held()).await - read.load(Ordering::Acquire);
    while let Ok(stream) = accepted.try_recv() {
        held.push(stream);
    }
    println!(
        "read {} MiB fast; then {} MiB unread in {} streams held, {} reset (cap {} MiB)",
        read_fast >> 20,
        unread >> 20,
        held.len(),
        attacker.reset(),
        MAX_UNREAD >> 20
    );
    assert!(
        read_fast > 64 << 20,
        "the first streams were read fast ({read_fast} bytes)"
    );
    assert!(
        unread <= MAX_UNREAD as u64,
        "{unread} bytes held unread, more than the cap of {MAX_UNREAD}"
    );
    assert!(held.len() <= MAX_STREAMS, "{} streams held", held.len());
    assert!(
        !attacker.went_away.load(Ordering::Acquire),
        "the streams past the cap were reset, not the connection"
    );

    // Once we let go of them, the connection carries a new stream as ever.
    drop(held);
    let id = 2 * (READ_FAST + FLOOD) + 1;
    let mut hello = header(DATA, SYN, id, 5);
    hello.extend_from_slice(b"hello");
    frames.send(hello).await?;
    let mut stream = tokio::time::timeout(Duration::from_secs(10), accepted.recv())
        .await?
        .expect("a stream");
    let mut got = [0; 5];
    stream.read_exact(&mut got).await?;
    assert_eq!(&got, b"hello");
    Ok(())
}

/// Past `OPEN_BELOW` streams held, opening one more waits for a stream to end, where
/// libp2p-yamux's error (at 512) ended the whole connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_opened_past_the_limit_waits_for_one_to_end() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let dialer = TcpStream::connect(listener.local_addr()?).await?;
    let (socket, _) = listener.accept().await?;
    let mut ours = muxer::Config
        .upgrade_outbound(dialer.compat(), "/yamux/1.0.0")
        .await?;
    let theirs = muxer::Config
        .upgrade_inbound(socket.compat(), "/yamux/1.0.0")
        .await?;
    let mut accepted = accept_all(theirs);
    // Our side: the connection driven, and streams opened one request at a time.
    let (requests, mut to_open) = mpsc::channel::<oneshot::Sender<muxer::Stream>>(1);
    tokio::spawn(async move {
        let mut waiting = None;
        future::poll_fn(|cx| {
            loop {
                if let Poll::Ready(Err(_)) = ours.poll_unpin(cx) {
                    return Poll::Ready(());
                }
                if waiting.is_none() {
                    match to_open.poll_recv(cx) {
                        Poll::Ready(Some(reply)) => waiting = Some(reply),
                        Poll::Ready(None) => return Poll::Ready(()),
                        Poll::Pending => {}
                    }
                }
                if waiting.is_some() {
                    match ours.poll_outbound_unpin(cx) {
                        Poll::Ready(Ok(stream)) => {
                            if let Some(reply) = waiting.take() {
                                let _ = reply.send(stream);
                            }
                            continue;
                        }
                        Poll::Ready(Err(_)) => return Poll::Ready(()),
                        Poll::Pending => {}
                    }
                }
                return Poll::Pending;
            }
        })
        .await;
    });
    let open = || {
        let requests = requests.clone();
        async move {
            let (reply, stream) = oneshot::channel();
            requests.send(reply).await.ok()?;
            stream.await.ok()
        }
    };

    let mut held = Vec::new();
    for _ in 0..OPEN_BELOW {
        let mut stream = open().await.expect("a stream");
        stream.write_all(b"x").await?;
        held.push(stream);
    }
    for _ in 0..OPEN_BELOW {
        tokio::time::timeout(Duration::from_secs(10), accepted.recv())
            .await?
            .expect("the peer takes every stream");
    }
    let next = tokio::spawn(open());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!next.is_finished(), "a stream past the limit waits");
    held.pop();
    let mut stream = tokio::time::timeout(Duration::from_secs(10), next)
        .await??
        .expect("opened once a stream ended");
    stream.write_all(b"still here").await?;
    let mut theirs = tokio::time::timeout(Duration::from_secs(10), accepted.recv())
        .await?
        .expect("the connection carries it");
    let mut got = [0; 10];
    theirs.read_exact(&mut got).await?;
    assert_eq!(&got, b"still here");
    Ok(())
}

/// What reaches a socket: its writes, counted.
struct Counted<C> {
    io: C,
    writes: Arc<AtomicU64>,
}

impl<C: futures::AsyncRead + Unpin> futures::AsyncRead for Counted<C> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<C: futures::AsyncWrite + Unpin> futures::AsyncWrite for Counted<C> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::AcqRel);
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_close(cx)
    }
}

/// Polls `muxer` (its connection) in a task of its own until it fails.
fn drive<C>(mut muxer: muxer::Muxer<C>)
where
    muxer::Muxer<C>: libp2p::core::muxing::StreamMuxer + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        future::poll_fn(|cx| match muxer.poll_unpin(cx) {
            Poll::Ready(Err(_)) => Poll::Ready(()),
            _ => Poll::Pending,
        })
        .await
    });
}

/// A stream written in small pieces, as a relay forwards a circuit (8 KiB at a time, no
/// flush between), over a connection whose writes are buffered as TLS buffers them: the
/// frames queued together go out together, where yamux alone flushed each one into a
/// write of its own. And a lone small write still goes out by itself, at once.
#[tokio::test]
async fn frames_written_together_leave_together() -> anyhow::Result<()> {
    const PIECE: usize = 8 * 1024;
    const PIECES: usize = 1024;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let dialer = TcpStream::connect(listener.local_addr()?).await?;
    let (socket, _) = listener.accept().await?;
    let writes = Arc::new(AtomicU64::new(0));
    let buffered = futures::io::BufWriter::with_capacity(
        64 * 1024,
        Counted {
            io: dialer.compat(),
            writes: writes.clone(),
        },
    );
    let mut ours = muxer::Config
        .upgrade_outbound(buffered, "/yamux/1.0.0")
        .await?;
    let theirs = muxer::Config
        .upgrade_inbound(socket.compat(), "/yamux/1.0.0")
        .await?;
    let mut accepted = accept_all(theirs);
    let mut stream = future::poll_fn(|cx| ours.poll_outbound_unpin(cx)).await?;
    drive(ours);

    stream.write_all(b"hello").await?;
    let mut peer = tokio::time::timeout(Duration::from_secs(5), accepted.recv())
        .await?
        .expect("the peer takes the stream");
    let mut hello = [0; 5];
    tokio::time::timeout(Duration::from_secs(5), peer.read_exact(&mut hello)).await??;
    assert_eq!(&hello, b"hello", "a lone write goes out unasked");

    let reader = tokio::spawn(async move {
        let mut got = vec![0; PIECE * PIECES];
        peer.read_exact(&mut got).await.map(|_| got)
    });
    let before = writes.load(Ordering::Acquire);
    let piece: Vec<u8> = (0..PIECE).map(|i| i as u8).collect();
    for _ in 0..PIECES {
        stream.write_all(&piece).await?;
    }
    stream.flush().await?;
    let got = tokio::time::timeout(Duration::from_secs(30), reader).await???;
    assert!(
        got.chunks(PIECE).all(|c| c == piece),
        "the bytes arrive whole"
    );
    let made = writes.load(Ordering::Acquire) - before;
    println!("{PIECES} frames of {PIECE} bytes made {made} socket writes");
    assert!(
        made < PIECES as u64 / 4,
        "{PIECES} frames made {made} socket writes"
    );
    Ok(())
}

/// A relayed connection's TLS writes each record (16,406 bytes: 16 KiB of data, its header
/// and tag) into a stream of the connection to the relay. Split at yamux's 16 KiB, every
/// record crossed as a frame and a 22-byte one, doubling the frames the sender, the relay
/// and the receiver each handle; a record now crosses as one frame.
#[tokio::test]
async fn a_tls_record_written_into_a_stream_leaves_as_one_frame() -> anyhow::Result<()> {
    const RECORD: usize = 5 + 16 * 1024 + 1 + 16;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let dialer = TcpStream::connect(listener.local_addr()?).await?;
    let (mut raw, _) = listener.accept().await?;
    let mut ours = muxer::Config
        .upgrade_outbound(dialer.compat(), "/yamux/1.0.0")
        .await?;
    let mut stream = future::poll_fn(|cx| ours.poll_outbound_unpin(cx)).await?;
    drive(ours);
    let record: Vec<u8> = (0..RECORD).map(|i| i as u8).collect();
    stream.write_all(&record).await?;
    stream.flush().await?;

    let mut frames = Vec::new();
    let mut got = Vec::new();
    let mut head = [0u8; 12];
    while got.len() < RECORD {
        tokio::time::timeout(Duration::from_secs(5), raw.read_exact(&mut head)).await??;
        let len = u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize;
        if head[1] == DATA && len > 0 {
            let mut body = vec![0; len];
            raw.read_exact(&mut body).await?;
            frames.push(len);
            got.extend_from_slice(&body);
        }
    }
    assert_eq!(got, record, "the bytes arrive whole");
    assert_eq!(frames, [RECORD], "one frame for one record");
    Ok(())
}
