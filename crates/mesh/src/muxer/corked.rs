//! The connection under yamux, with its flushes gathered.
//!
//! yamux flushes after every frame it writes, even with more frames queued behind it, and
//! below it the TLS writer turns each flush into a record and a system call. A relay
//! forwarding a circuit writes a frame per 8 KiB it reads (libp2p-relay's buffer), and made
//! a `writev` per 7.6 KiB relayed (strace over 100 MiB). So a flush asked for right after
//! writing is put off, and the connection's task woken, so that the frames yamux writes in
//! this pass go out together on the next; a flush asked for with nothing written since the
//! last one, as the next pass begins with, goes through. Nothing waits longer than that one
//! turn of the task.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite, ready};

#[derive(Debug)]
pub(super) struct Corked<C> {
    io: C,
    /// Bytes were written since the last flush asked for.
    written: bool,
}

impl<C> Corked<C> {
    pub(super) fn new(io: C) -> Self {
        Self { io, written: false }
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
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if std::mem::take(&mut self.written) {
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.written = false;
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        Pin::new(&mut self.io).poll_close(cx)
    }
}
