//! Serves the control socket: bounded connections, a deadline for each request, and a
//! clear error frame for anything that is not a valid request.

use std::{os::fd::OwnedFd, sync::Arc, time::Duration};

use loopsy_mesh::framed::{self, ReadError, WriteError};
use loopsy_wire::control::{self, Error, ErrorCode, MAX_FRAME, Request, Response};
use tokio::{
    io::{AsyncReadExt, Interest},
    net::{
        UnixListener, UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::Semaphore,
    task::JoinSet,
};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

/// Clients served at once; more wait in the listen backlog.
const MAX_CLIENTS: usize = 64;

/// How long one side of a splice may linger after the other side ended.
const SPLICE_GRACE: Duration = Duration::from_secs(5);

/// How long a client may take to send its request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// What answers requests: the daemon.
pub trait Handler: Send + Sync + 'static {
    /// Answers `request` with one or more frames on `reply`.
    fn handle(&self, request: Request, reply: &mut Reply) -> impl Future<Output = ()> + Send;
}

/// The way back to a client: frames out, and notice of the client hanging up.
pub struct Reply {
    writer: Compat<OwnedWriteHalf>,
    reader: OwnedReadHalf,
}

/// The client has gone.
#[derive(Debug)]
pub struct Gone;

impl Reply {
    /// Sends one response frame.
    pub async fn send(&mut self, response: &Response) -> Result<(), Gone> {
        framed::write(&mut self.writer, response, MAX_FRAME)
            .await
            .map_err(|error: WriteError| {
                tracing::debug!(%error, "control client went away");
                Gone
            })
    }

    /// Sends an error response.
    pub async fn error(&mut self, code: ErrorCode, message: impl Into<String>) {
        let _ = self.send(&Response::Error(Error::new(code, message))).await;
    }

    /// Relays bytes both ways between the client and a peer's stream until either side is
    /// done: the frames are the same on both legs, so nothing is decoded here.
    pub async fn splice(&mut self, stream: loopsy_mesh::Stream) {
        use futures::{AsyncReadExt, AsyncWriteExt, io::BufReader};
        use tokio_util::compat::TokioAsyncReadCompatExt;
        const BUFFER: usize = 256 * 1024;
        let (from_peer, mut to_peer) = stream.split();
        let upstream = async {
            let from_client = BufReader::with_capacity(BUFFER, (&mut self.reader).compat());
            let _ = futures::io::copy_buf(from_client, &mut to_peer).await;
            // The client is gone: closing tells the peer, which then ends the program.
            let _ = to_peer.close().await;
        };
        let downstream = async {
            let from_peer = BufReader::with_capacity(BUFFER, from_peer);
            let _ = futures::io::copy_buf(from_peer, &mut self.writer).await;
            let _ = self.writer.close().await;
        };
        tokio::pin!(upstream, downstream);
        tokio::select! {
            _ = &mut downstream => {
                // The peer is done; the client closes once it has read everything.
                let _ = tokio::time::timeout(SPLICE_GRACE, upstream).await;
            }
            _ = &mut upstream => {
                let _ = tokio::time::timeout(SPLICE_GRACE, downstream).await;
            }
        }
    }

    /// The connection itself, as a reader and a writer, for a protocol served on it
    /// (a session on this device).
    pub fn io(&mut self) -> (Compat<&mut OwnedReadHalf>, &mut Compat<OwnedWriteHalf>) {
        ((&mut self.reader).compat(), &mut self.writer)
    }

    /// The three descriptors the client passed on one byte with SCM_RIGHTS (see
    /// `loopsy_wire::handover`: for `attach` its stdin, stdout and progress file, for
    /// `exec` its stdin, stdout and stderr); `None` when the client is not this node's own
    /// user, sent something else, or took too long.
    pub async fn receive_passed(&mut self) -> Option<[OwnedFd; 3]> {
        let socket: &UnixStream = self.reader.as_ref();
        // The socket's directory is the user's alone; this holds even if it were not.
        let peer = rustix::net::sockopt::socket_peercred(socket).ok()?;
        if peer.uid != rustix::process::geteuid() {
            tracing::warn!(
                uid = peer.uid.as_raw(),
                "a terminal from another user refused"
            );
            return None;
        }
        let receive = async {
            loop {
                socket.readable().await.ok()?;
                match socket.try_io(Interest::READABLE, || receive_fds(socket)) {
                    Ok(received) => return received,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return None,
                }
            }
        };
        tokio::time::timeout(REQUEST_DEADLINE, receive)
            .await
            .ok()
            .flatten()
    }

    /// Completes when the client closes its side (or sends anything more, which the
    /// protocol does not allow).
    pub async fn closed(&mut self) {
        let mut byte = [0u8; 1];
        let _ = self.reader.read(&mut byte).await;
    }
}

/// Accepts clients on `listener` until `shutdown` completes, then drops every open client.
pub async fn serve<H: Handler>(
    listener: UnixListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let mut clients = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
            permit = slots.clone().acquire_owned() => {
                let Ok(permit) = permit else { break };
                tokio::select! {
                    _ = &mut shutdown => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let handler = handler.clone();
                            clients.spawn(async move {
                                serve_client(stream, &*handler).await;
                                drop(permit);
                            });
                        }
                        Err(error) => {
                            tracing::warn!(%error, "control socket accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                }
            }
        }
    }
    clients.shutdown().await;
}

/// One `recvmsg` of the byte that carries the terminal: exactly three descriptors, or none
/// taken (any that came are closed).
fn receive_fds(socket: &UnixStream) -> std::io::Result<Option<[OwnedFd; 3]>> {
    use std::mem::MaybeUninit;

    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let flags = RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC;
    let received = rustix::net::recvmsg(
        socket,
        &mut [std::io::IoSliceMut::new(&mut byte)],
        &mut control,
        flags,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(passed) = message {
            fds.extend(passed);
        }
    }
    let whole = received.bytes == 1
        && byte[0] == loopsy_wire::handover::PASS_BYTE
        && !received.flags.contains(rustix::net::ReturnFlags::CTRUNC);
    Ok(whole.then(|| fds.try_into().ok()).flatten())
}

async fn serve_client<H: Handler>(stream: UnixStream, handler: &H) {
    let (reader, writer) = stream.into_split();
    let mut reader = reader.compat();
    let read =
        tokio::time::timeout(REQUEST_DEADLINE, framed::read_body(&mut reader, MAX_FRAME)).await;
    let mut reply = Reply {
        writer: writer.compat_write(),
        reader: reader.into_inner(),
    };
    match read {
        Err(_) => {} // too slow: just close
        Ok(Ok(None)) => {}
        Ok(Ok(Some(body))) => match control::decode_request(&body) {
            Ok(request) => handler.handle(request, &mut reply).await,
            Err(error) => {
                let _ = reply.send(&Response::Error(error)).await;
            }
        },
        Ok(Err(ReadError::Io(_) | ReadError::Truncated)) => {}
        Ok(Err(error)) => {
            reply
                .error(
                    ErrorCode::BadRequest,
                    format!("not a control request: {error}"),
                )
                .await
        }
    }
}
