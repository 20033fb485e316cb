//! Our yamux: libp2p's stream muxer over the `yamux` crate, with a bound on what one
//! connection can make this node hold unread.
//!
//! A yamux stream may be sent 256 KiB before its reader gives more credit, and the crate
//! grows a stream's window while it is read fast, up to a total for the connection that
//! defaults to 1 GiB (libp2p-yamux gives no way to lower it). A copy whose disk stalls
//! stops reading, and each of its streams then fills whatever window it had grown: ten
//! copies at once took a node past 100 MiB that way. A peer can do the same on purpose,
//! by opening streams and writing into them faster than we read. So here:
//!
//! - the windows of all of a connection's streams together grow past their first 256 KiB
//!   each by at most [`WINDOW_GROWTH`] (enough for one stream at full speed on loopback);
//! - a connection holds at most [`MAX_STREAMS`] streams at once: a stream the peer opens
//!   past that is reset at once (the connection stays), and one we open waits until
//!   fewer than [`OPEN_BELOW`] are held, leaving room for streams the peer opens meanwhile.
//!
//! So the streams one connection holds make us hold at most [`MAX_UNREAD`] unread. A stream
//! we reset may still hold what its peer sent until yamux lets it go, which it does only
//! once its own writes have gone out: the hard bound, against a peer that also stops
//! reading, is yamux's connection window, `YAMUX_MAX_STREAMS` streams' worth (144 MiB).
//! Under yamux, the connection's flushes are gathered (see `corked`): yamux flushes after
//! every frame, and each flush became a TLS record and a system call of its own.
//! The protocol is plain
//! `/yamux/1.0.0`: every peer (browsers' js-libp2p, older nodes) still speaks it.

use std::{
    collections::VecDeque,
    io, iter,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
};

use corked::Corked;
use futures::{AsyncRead, AsyncWrite, future, ready, task::AtomicWaker};
use libp2p::core::{
    muxing::{StreamMuxer, StreamMuxerEvent},
    upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo},
};

mod corked;

/// The window every yamux stream starts with (the protocol's), which it always keeps.
pub const STREAM_WINDOW: usize = yamux::DEFAULT_CREDIT as usize;
/// How far the windows of one connection's streams may grow, all together, past their
/// first [`STREAM_WINDOW`] each. One stream on loopback needs about 16 MiB to run at full
/// speed (with none it ran at 60%; see docs/performance.md, issue 25).
pub const WINDOW_GROWTH: usize = 16 << 20;
/// Streams one connection holds at once, both ways. A hundred execs at once to one device
/// (tests/tests/load.rs) and the sessions, copies and background streams beside them fit.
pub const MAX_STREAMS: usize = 256;
/// We open a stream only while the connection holds fewer than this, so that two nodes
/// opening streams at once rarely push each other past [`MAX_STREAMS`].
pub const OPEN_BELOW: usize = MAX_STREAMS - 32;
/// The most the streams one connection holds can make this node hold unread (see the
/// module's note for streams it refused).
pub const MAX_UNREAD: usize = MAX_STREAMS * STREAM_WINDOW + WINDOW_GROWTH;

/// yamux's own bound on streams, past which it ends the whole connection: left at its
/// default (every other libp2p peer's), above ours, so that a peer opening too many loses
/// those streams only. Its connection window is then sized so that only [`WINDOW_GROWTH`]
/// is left for growth beyond the windows of that many streams.
const YAMUX_MAX_STREAMS: usize = 512;

/// The upgrade that makes a secured connection a [`Muxer`]; `Config::default` is what the
/// swarm builder takes.
#[derive(Debug, Clone, Default)]
pub struct Config;

impl Config {
    fn yamux() -> yamux::Config {
        let mut config = yamux::Config::default();
        config.set_max_num_streams(YAMUX_MAX_STREAMS);
        // A frame holds a whole TLS record (16 KiB and 22 bytes of framing), as a relayed
        // connection writes them into its stream to the relay: split at 16 KiB, each
        // record crossed as two frames, one of 22 bytes.
        config.set_split_send_size(16 * 1024 + 64);
        config.set_max_connection_receive_window(Some(
            YAMUX_MAX_STREAMS * STREAM_WINDOW + WINDOW_GROWTH,
        ));
        config
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        iter::once("/yamux/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Muxer<C>, io::Error>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(io, yamux::Mode::Server)))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Muxer<C>, io::Error>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(io, yamux::Mode::Client)))
    }
}

/// A connection's streams held at once, and the task waiting for one of them to end.
#[derive(Debug, Default)]
struct Held {
    streams: AtomicUsize,
    ended: AtomicWaker,
}

impl Held {
    fn count(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }
}

/// One yamux connection: its streams, opened and accepted.
#[derive(Debug)]
pub struct Muxer<C> {
    connection: yamux::Connection<Corked<C>>,
    held: Arc<Held>,
    /// Streams the peer opened while the swarm was driving the connection rather than
    /// asking for them (yamux only makes progress while asked for inbound streams).
    inbound: VecDeque<Stream>,
    inbound_waker: Option<Waker>,
    /// Streams of the peer's reset for being past [`MAX_STREAMS`].
    refused: u64,
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    fn new(io: C, mode: yamux::Mode) -> Self {
        Self {
            connection: yamux::Connection::new(Corked::new(io), Config::yamux(), mode),
            held: Arc::default(),
            inbound: VecDeque::new(),
            inbound_waker: None,
            refused: 0,
        }
    }

    fn hold(&self, stream: yamux::Stream) -> Stream {
        self.held.streams.fetch_add(1, Ordering::AcqRel);
        Stream {
            inner: stream,
            _held: StreamHeld(self.held.clone()),
        }
    }

    /// The next stream the peer opens that we keep; those past [`MAX_STREAMS`] are
    /// dropped, which resets them.
    fn poll_next_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Result<Stream, Error>> {
        loop {
            let stream = ready!(self.connection.poll_next_inbound(cx))
                .ok_or(Error(yamux::ConnectionError::Closed))?
                .map_err(Error)?;
            if self.held.count() < MAX_STREAMS {
                return Poll::Ready(Ok(self.hold(stream)));
            }
            self.refused += 1;
            if self.refused.is_power_of_two() {
                tracing::warn!(
                    refused = self.refused,
                    "a peer opened more than {MAX_STREAMS} streams on one connection; resetting"
                );
            }
        }
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    type Substream = Stream;
    type Error = Error;

    fn poll_inbound(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Stream, Error>> {
        if let Some(stream) = self.inbound.pop_front() {
            return Poll::Ready(Ok(stream));
        }
        let next = self.poll_next_inbound(cx);
        if next.is_pending() {
            self.inbound_waker = Some(cx.waker().clone());
        }
        next
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Stream, Error>> {
        // Registered before the count is read, so a stream ending in between wakes us.
        self.held.ended.register(cx.waker());
        if self.held.count() >= OPEN_BELOW {
            return Poll::Pending;
        }
        match ready!(self.connection.poll_new_outbound(cx)) {
            Ok(stream) => Poll::Ready(Ok(self.hold(stream))),
            // yamux forgets a dropped stream only when next driven; until it has, it may
            // count more than we do. Wait for the next stream to end rather than end the
            // connection, which is what an error here does.
            Err(yamux::ConnectionError::TooManyStreams) => Poll::Pending,
            Err(e) => Poll::Ready(Err(Error(e))),
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.connection.poll_close(cx).map_err(Error)
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<StreamMuxerEvent, Error>> {
        let this = self.get_mut();
        let stream = ready!(this.poll_next_inbound(cx))?;
        // Bounded: every stream in it is held, and at most MAX_STREAMS are.
        this.inbound.push_back(stream);
        if let Some(waker) = this.inbound_waker.take() {
            waker.wake();
        }
        // Let the swarm take it, then come back for more.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// One stream of a [`Muxer`]'s connection.
#[derive(Debug)]
pub struct Stream {
    inner: yamux::Stream,
    _held: StreamHeld,
}

/// A stream's place among its connection's [`MAX_STREAMS`], given back when it ends.
#[derive(Debug)]
struct StreamHeld(Arc<Held>);

impl Drop for StreamHeld {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.wake();
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A yamux connection's failure.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(yamux::ConnectionError);

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e.0 {
            yamux::ConnectionError::Io(e) => e,
            e => io::Error::other(e),
        }
    }
}
