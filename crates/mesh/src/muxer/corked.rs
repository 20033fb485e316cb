//! The connection under yamux, with its flushes gathered.
//!
//! yamux flushes after every frame it writes, even with more frames queued behind it, and
//! below it the TLS writer turns each flush into a record and a system call. A relay
//! forwarding a circuit writes a frame per 8 KiB it reads (libp2p-relay's buffer), and made
//! a `writev` per 7.6 KiB relayed (strace over 100 MiB). So once [`GATHER_FROM`] bytes wait
//! unflushed, a flush asked for right after writing is put off, and the connection's task
//! woken, so that the frames yamux writes in this pass go out together on the next; a
//! flush asked for with nothing written since the last one, as the next pass begins with,
//! goes through. Nothing waits longer than that one turn of the task, and a small frame
//! alone (a keystroke, its echo) is not kept waiting at all.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite, ready};

/// Bytes waiting unflushed from which a flush may be put off: below it, frames are few and
/// small, and the one turn of the task would only add to their latency.
const GATHER_FROM: usize = 4096;

#[derive(Debug)]
pub(super) struct Corked<C> {
    io: C,
    /// Bytes were written since the last flush asked for.
    written: bool,
    /// Bytes written since the last flush that went through.
    unflushed: usize,
}

impl<C> Corked<C> {
    pub(super) fn new(io: C) -> Self {
        Self {
            io,
            written: false,
            unflushed: 0,
        }
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Corked<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Corked<C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
        self.written |= n > 0;
        self.unflushed += n;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if std::mem::take(&mut self.written) && self.unflushed >= GATHER_FROM {
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        self.unflushed = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.written = false;
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        self.unflushed = 0;
        Pin::new(&mut self.io).poll_close(cx)
    }
}
