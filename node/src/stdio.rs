//! The CLI's stdin and stdout on the runtime's own thread. Tokio's `stdin()` and `stdout()`
//! run every read and write on a blocking thread, so each keystroke and each echo cost a
//! hand-off between threads (two context switches each way); on a terminal that was a
//! sixth of a session's keystroke-to-echo time. Here a terminal, pipe or socket is read when
//! epoll says it is readable, and output is written straight to the descriptor.
//!
//! The descriptors stay as they are (blocking): they are shared with the shell that started
//! us, and O_NONBLOCK on them would leak to it if we were killed. A read therefore asks
//! `poll` first, so it never blocks the runtime.

use std::{
    io::{self, Write},
    os::fd::{AsFd, BorrowedFd},
};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use tokio::io::{AsyncReadExt, Interest, unix::AsyncFd};

/// This process's stdin, read without a blocking thread where the kernel can say when
/// it is readable.
pub enum Stdin {
    /// A terminal, pipe or socket: epoll tells when to read.
    Polled(AsyncFd<std::io::Stdin>),
    /// A device epoll refuses (`/dev/null`): reads never wait, so they are done in place.
    Immediate(std::io::Stdin),
    /// A regular file, whose reads may wait on a disk: tokio's blocking thread.
    Threaded(tokio::io::Stdin),
}

impl Stdin {
    pub fn new() -> Self {
        let stdin = std::io::stdin();
        let kind =
            rustix::fs::fstat(&stdin).map(|s| rustix::fs::FileType::from_raw_mode(s.st_mode));
        // Safe here, though tokio now marks it deprecated for lack of I/O safety: fd 0
        // stays open for the whole process, and nothing here closes or replaces it (its
        // replacement, `AsyncFd::register`, is `unsafe`, which this workspace denies).
        #[allow(deprecated)]
        let registered = AsyncFd::with_interest(stdin, Interest::READABLE);
        match registered {
            Ok(fd) => Self::Polled(fd),
            Err(_) if matches!(kind, Ok(rustix::fs::FileType::CharacterDevice)) => {
                Self::Immediate(std::io::stdin())
            }
            Err(_) => Self::Threaded(tokio::io::stdin()),
        }
    }

    /// Reads what is there (at least a byte), or 0 at the end.
    pub async fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Polled(fd) => loop {
                let mut ready = fd.readable().await?;
                if !readable_now(fd.get_ref().as_fd()) {
                    ready.clear_ready();
                    continue;
                }
                return read_fd(fd.get_ref().as_fd(), buffer);
            },
            Self::Immediate(stdin) => read_fd(stdin.as_fd(), buffer),
            Self::Threaded(stdin) => stdin.read(buffer).await,
        }
    }
}

/// Whether a read of `fd` returns at once: data, an end or an error is waiting. A terminal
/// in canonical mode is readable only once a whole line is there, as `read` needs.
fn readable_now(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&now)) {
        Ok(n) => n > 0,
        // Let the read itself say what is wrong.
        Err(_) => true,
    }
}

fn read_fd(fd: BorrowedFd<'_>, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buffer) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes `data` to stdout, on this thread: a terminal takes a screenful at once, and a
/// terminal that stops reading stops us as awaiting a blocking thread did.
pub fn write_stdout(data: &[u8]) -> io::Result<()> {
    write_all(std::io::stdout().as_fd(), data)
}

/// Writes all of `data` to `fd` with `write(2)`, past std's stdout buffer: std's stdout is
/// line-buffered, so each chunk of a program's output was searched for its last newline
/// (`memrchr`, 8.5% of the CLI's time streaming 1 GiB), split in two writes and partly
/// copied into the buffer. Whatever std buffered before is flushed first.
pub fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    std::io::stdout().flush()?;
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
