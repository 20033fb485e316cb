//! Descriptors a client passed to its node (its terminal, for `attach`; its stdin, stdout
//! and stderr, for `exec`), read and written without blocking the runtime and without
//! changing them for the client's shell.
//!
//! O_NONBLOCK belongs to an open file description, which the client shares with the shell
//! that started it: set on the passed descriptor, it would reach the shell, and stay there
//! if we were killed. So a terminal or pipe is opened again through `/proc/self/fd`, which
//! makes a description of our own (same terminal, same pipe) that can be non-blocking; a
//! socket is asked not to wait on each call (`MSG_DONTWAIT`). A regular file is used in
//! place, never opened again: a new description would start at offset 0 without the
//! client's O_APPEND, where the shared one writes where the client's shell expects (`>>`,
//! or after what the shell wrote before); it is read and written on a blocking thread, so
//! a slow disk holds up its own user, not the runtime. `/dev/null` never waits and is used
//! in place. Anything else is not taken (the client relays instead): not `/dev/tty` or
//! `/dev/ptmx`, whose reopening means something else, nor other devices (`/dev/zero`, a
//! disk), which a client has no reason to hand over.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    sync::Arc,
};

use rustix::{
    fs::{FileType, Mode, OFlags},
    io::Errno,
    net::{RecvFlags, SendFlags},
};
use tokio::io::{Interest, unix::AsyncFd};

/// A passed descriptor, ready for the runtime.
pub enum Passed {
    /// A terminal or pipe, opened again: non-blocking, on epoll.
    Reopened(AsyncFd<OwnedFd>),
    /// A socket: on epoll, each call asked not to wait.
    Socket(AsyncFd<OwnedFd>),
    /// `/dev/null`, used in place.
    Null(OwnedFd),
    /// A regular file, used in place on a blocking thread.
    File(Arc<OwnedFd>),
}

enum Kind {
    Reopen,
    Socket,
    Null,
    File,
}

/// Whether `fd` can be handed to the node: what a client checks before it passes its own.
pub fn passable(fd: BorrowedFd<'_>) -> bool {
    kind(fd).is_some()
}

fn kind(fd: BorrowedFd<'_>) -> Option<Kind> {
    let stat = rustix::fs::fstat(fd).ok()?;
    let dev = |major, minor| stat.st_rdev == rustix::fs::makedev(major, minor);
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Fifo => Some(Kind::Reopen),
        // Not /dev/tty (opened again it is the opener's own terminal, and the node has
        // none) nor /dev/ptmx (opened again it makes a new terminal).
        FileType::CharacterDevice if dev(5, 0) || dev(5, 2) => None,
        FileType::CharacterDevice if rustix::termios::isatty(fd) => Some(Kind::Reopen),
        FileType::CharacterDevice if dev(1, 3) => Some(Kind::Null),
        FileType::RegularFile => Some(Kind::File),
        FileType::Socket => Some(Kind::Socket),
        _ => None,
    }
}

impl Passed {
    /// Takes `fd` to read it, or to write it when `write`.
    pub fn new(fd: OwnedFd, write: bool) -> io::Result<Self> {
        match kind(fd.as_fd()) {
            Some(Kind::Reopen) => {
                let access = if write {
                    OFlags::WRONLY
                } else {
                    OFlags::RDONLY
                };
                let flags = access | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
                let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
                let own = rustix::fs::open(path, flags, Mode::empty())?;
                Ok(Self::Reopened(register(own)?))
            }
            Some(Kind::Socket) => Ok(Self::Socket(register(fd)?)),
            Some(Kind::Null) => Ok(Self::Null(fd)),
            Some(Kind::File) => Ok(Self::File(Arc::new(fd))),
            None => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "not a terminal, pipe, socket or file",
            )),
        }
    }

    /// Reads what is there (at least a byte), or 0 at the end.
    pub async fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Reopened(fd) => {
                fd.async_io(Interest::READABLE, |fd| {
                    again(|| rustix::io::read(fd, &mut *buffer))
                })
                .await
            }
            Self::Socket(fd) => {
                fd.async_io(Interest::READABLE, |fd| {
                    again(|| {
                        rustix::net::recv(fd, &mut *buffer, RecvFlags::DONTWAIT).map(|(n, _)| n)
                    })
                })
                .await
            }
            Self::Null(fd) => again(|| rustix::io::read(fd, &mut *buffer)),
            Self::File(fd) => {
                let (fd, wanted) = (fd.clone(), buffer.len());
                let read = tokio::task::spawn_blocking(move || {
                    let mut data = vec![0u8; wanted];
                    let n = again(|| rustix::io::read(&*fd, &mut data))?;
                    data.truncate(n);
                    Ok::<_, io::Error>(data)
                });
                let data = read.await.map_err(io::Error::other)??;
                buffer[..data.len()].copy_from_slice(&data);
                Ok(data.len())
            }
        }
    }

    /// Writes all of `data`; a reader that is slow or stopped makes this wait, not the
    /// runtime.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = match self {
                Self::Reopened(fd) => {
                    fd.async_io(Interest::WRITABLE, |fd| {
                        again(|| rustix::io::write(fd, data))
                    })
                    .await?
                }
                Self::Socket(fd) => {
                    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
                    fd.async_io(Interest::WRITABLE, |fd| {
                        again(|| rustix::net::send(fd, data, flags))
                    })
                    .await?
                }
                Self::Null(fd) => again(|| rustix::io::write(fd, data))?,
                Self::File(fd) => {
                    let (fd, owned) = (fd.clone(), data.to_vec());
                    let write = tokio::task::spawn_blocking(move || {
                        again(|| rustix::io::write(&*fd, &owned))
                    });
                    write.await.map_err(io::Error::other)??
                }
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            data = &data[n..];
        }
        Ok(())
    }
}

/// `fd` on the runtime's epoll. Tokio marks `AsyncFd::new` deprecated for lack of I/O
/// safety with borrowed descriptors; this one is owned by the `AsyncFd`, so nothing else can
/// close it while registered (`register`, the replacement, is `unsafe`, which the workspace
/// denies).
#[allow(deprecated)]
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::new(fd)
}

/// Runs `call` again when a signal interrupted it; "would block" becomes the error that
/// tells tokio to wait for the next readiness.
fn again<T>(mut call: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pipe_is_read_and_written_without_o_nonblock_on_the_callers_side() {
        let (reader, writer) = std::io::pipe().unwrap();
        let flags = |fd: BorrowedFd<'_>| rustix::fs::fcntl_getfl(fd).unwrap();
        let (read_before, write_before) = (flags(reader.as_fd()), flags(writer.as_fd()));
        let ours_in = Passed::new(rustix::io::dup(&reader).unwrap(), false).unwrap();
        let ours_out = Passed::new(rustix::io::dup(&writer).unwrap(), true).unwrap();
        assert!(matches!(ours_in, Passed::Reopened(_)));
        ours_out.write_all(b"keys").await.unwrap();
        let mut buffer = [0u8; 16];
        let n = ours_in.read(&mut buffer).await.unwrap();
        assert_eq!(&buffer[..n], b"keys");
        // The caller's descriptors are as they were: still blocking.
        assert_eq!(flags(reader.as_fd()), read_before);
        assert_eq!(flags(writer.as_fd()), write_before);
        assert!(!flags(reader.as_fd()).contains(OFlags::NONBLOCK));
    }

    #[tokio::test]
    async fn a_file_is_written_in_place_keeping_its_append_mode_and_flags() {
        use std::io::{Seek, Write};
        let path = std::env::temp_dir().join(format!("passed-{}", std::process::id()));
        std::fs::write(&path, "before\n").unwrap();
        let mut appended = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let flags_before = rustix::fs::fcntl_getfl(&appended).unwrap();
        let ours = Passed::new(rustix::io::dup(&appended).unwrap(), true).unwrap();
        assert!(matches!(ours, Passed::File(_)));
        ours.write_all(b"ours\n").await.unwrap();
        // The caller's description is the one written: its offset moved, O_APPEND held.
        appended.write_all(b"theirs\n").unwrap();
        assert_eq!(appended.stream_position().unwrap(), 19);
        assert_eq!(rustix::fs::fcntl_getfl(&appended).unwrap(), flags_before);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(text, "before\nours\ntheirs\n");
    }

    #[test]
    fn devices_other_than_null_and_terminals_are_not_taken() {
        for device in ["/dev/zero", "/dev/urandom", "/dev/tty", "/dev/ptmx"] {
            if let Ok(file) = std::fs::File::open(device) {
                assert!(!passable(file.as_fd()), "{device}");
            }
        }
    }

    #[test]
    fn a_directory_is_not_taken() {
        let dir = std::fs::File::open("/").unwrap();
        assert!(!passable(dir.as_fd()));
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(passable(null.as_fd()));
    }
}
