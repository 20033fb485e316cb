//! `loopsy cp` on the device that runs it: this daemon is one end of the transfer (reading
//! or writing the user's own files, where the CLI named them) and the peer's daemon the
//! other, confined to its roots. The CLI only watches: progress while it runs, then the
//! summary. If the CLI goes away, so does the copy; what arrived stays for a resume.

use std::{
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use data_encoding::HEXLOWER;
use loopsy_wire::{
    control::{self, Copied, CopiedFile, CopyProgress, ErrorCode, Response},
    protocol,
    transfer::{self, Outcome},
};
use serde_bytes::ByteBuf;

use crate::{
    control::Reply,
    dial::Dialer,
    transfer::{
        Expect, FileReport, Progress, Summary, TransferError, dirs::Dest, homes::Homes, receive,
        send, walk,
    },
};

/// How often the CLI hears how far the copy has come.
const TICK: Duration = Duration::from_millis(100);
/// File reports per frame: paths may be long, and a frame holds 1 MiB.
const FILES_PER_FRAME: usize = 100;

/// Which way the files go, and the peer at the other end.
enum Direction {
    Push { sources: Vec<PathBuf>, dest: String },
    Pull { sources: Vec<String>, dest: PathBuf },
}

/// Runs the copy the CLI asked for, telling it how far it came, then what was copied;
/// `homes` are the Loopsy homes a pull keeps out of.
pub async fn copy(dialer: &Dialer, homes: &Homes, request: control::Copy, reply: &mut Reply) {
    let (peer, direction) = match direction(&request) {
        Ok(found) => found,
        Err(e) => return drop(reply.send(&Response::Error(e)).await),
    };
    let began = Instant::now();
    let progress = Progress::default();
    let work = run(dialer, homes, &peer, direction, &request, &progress);
    tokio::pin!(work);
    let mut tick = tokio::time::interval(TICK);
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            _ = reply.closed() => return,
            _ = tick.tick() => {
                let now = Response::CopyProgress(snapshot(&progress));
                if reply.send(&now).await.is_err() {
                    return;
                }
            }
        }
    };
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => return drop(reply.send(&Response::Error(e)).await),
    };
    let done = Copied {
        file_count: summary.files.len() as u64,
        failed: summary.failed as u64,
        bytes: progress.bytes.load(Ordering::Relaxed),
        transferred: summary.transferred,
        seconds: began.elapsed().as_secs_f64(),
    };
    let files: Vec<CopiedFile> = summary.files.into_iter().map(copied_file).collect();
    for batch in files.chunks(FILES_PER_FRAME) {
        let frame = Response::CopiedFiles {
            files: batch.to_vec(),
        };
        if reply.send(&frame).await.is_err() {
            return;
        }
    }
    let _ = reply.send(&Response::Copied(done)).await;
}

fn snapshot(progress: &Progress) -> CopyProgress {
    CopyProgress {
        files: progress.files.load(Ordering::Relaxed),
        bytes: progress.bytes.load(Ordering::Relaxed),
        done: progress.done.load(Ordering::Relaxed),
        transferred: progress.transferred.load(Ordering::Relaxed),
    }
}

/// One side must be a peer, the other this device, with every source on the same side.
fn direction(request: &control::Copy) -> Result<(String, Direction), control::Error> {
    let invalid = |message: &str| control::Error::new(ErrorCode::InvalidArgument, message);
    let Some(first) = request.sources.first() else {
        return Err(invalid("nothing to copy"));
    };
    if request.sources.len() > transfer::MAX_SOURCES {
        return Err(invalid("too many sources"));
    }
    if request.sources.iter().any(|s| s.peer != first.peer) {
        return Err(invalid("every source must be on the same device"));
    }
    let local = |path: &str| {
        let path = PathBuf::from(path);
        if path.is_absolute() {
            Ok(path)
        } else {
            Err(invalid("local paths must be absolute"))
        }
    };
    match (&first.peer, &request.dest.peer) {
        (None, Some(peer)) => Ok((
            peer.clone(),
            Direction::Push {
                sources: request
                    .sources
                    .iter()
                    .map(|s| local(&s.path))
                    .collect::<Result<_, _>>()?,
                dest: request.dest.path.clone(),
            },
        )),
        (Some(peer), None) => Ok((
            peer.clone(),
            Direction::Pull {
                sources: request.sources.iter().map(|s| s.path.clone()).collect(),
                dest: local(&request.dest.path)?,
            },
        )),
        (None, None) => Err(invalid(
            "both sides are on this device: name a peer as PEER:PATH on one side",
        )),
        (Some(_), Some(_)) => Err(invalid(
            "both sides are on peers: copy from one of them to this device first",
        )),
    }
}

async fn run(
    dialer: &Dialer,
    homes: &Homes,
    query: &str,
    direction: Direction,
    request: &control::Copy,
    progress: &Progress,
) -> Result<Summary, control::Error> {
    let sending = transfer::Send {
        recursive: request.recursive,
        sha256: request.sha256,
    };
    let receiving = transfer::Receive {
        no_clobber: request.no_clobber,
        fsync: request.fsync,
    };
    let bytes = |path: &str| ByteBuf::from(path.as_bytes().to_vec());
    match direction {
        Direction::Push { sources, dest } => {
            let count = sources.len() as u32;
            let items =
                tokio::task::spawn_blocking(move || walk::walk(&sources, sending.recursive))
                    .await
                    .map_err(|e| control::Error::new(ErrorCode::Internal, e.to_string()))?
                    .map_err(|e| failure(e.into()))?;
            let first = transfer::Request::Push {
                dest: bytes(&dest),
                options: receiving,
            };
            let (peer, stream) = dialer
                .open(query, protocol::TRANSFER, &first, transfer::MAX_FRAME)
                .await?;
            until_gone(
                dialer,
                peer,
                send::send(stream, items, count, sending, true, progress),
            )
            .await
        }
        Direction::Pull { sources, dest } => {
            let expect = expect(&sources, &dest, request.recursive, homes)?;
            let first = transfer::Request::Pull {
                sources: sources.iter().map(|s| bytes(s)).collect(),
                options: sending,
            };
            let (peer, stream) = dialer
                .open(query, protocol::TRANSFER, &first, transfer::MAX_FRAME)
                .await?;
            until_gone(
                dialer,
                peer,
                receive::receive(stream, Dest::local(dest), receiving, expect, progress),
            )
            .await
        }
    }
}

/// What a pull may receive: the names it asked for. A source with no name of its own
/// (`PEER:` or `PEER:.`) can only become a new name here, never go into a directory, where
/// the sender would pick the name. The destination is the user's to name, even inside a
/// home; what the peer names below it stays out of every home here.
fn expect(
    sources: &[String],
    dest: &Path,
    recursive: bool,
    homes: &Homes,
) -> Result<Expect, control::Error> {
    let names: Option<Vec<Vec<u8>>> = sources
        .iter()
        .map(|s| Path::new(s).file_name().map(|n| n.as_bytes().to_vec()))
        .collect();
    if names.is_none() && dest.is_dir() {
        return Err(control::Error::new(
            ErrorCode::InvalidArgument,
            format!(
                "name the directory to copy (PEER:dir, not PEER: or PEER:.) to copy it into {}; or give a new name",
                dest.display()
            ),
        ));
    }
    Ok(Expect {
        names,
        recursive,
        reports: true,
        homes: homes.clone(),
    })
}

/// Runs a copy until it ends, or the peer's connection does (whose stream may never wake).
async fn until_gone(
    dialer: &Dialer,
    peer: loopsy_mesh::PeerId,
    copy: impl Future<Output = Result<Summary, TransferError>>,
) -> Result<Summary, control::Error> {
    let departure = dialer.departure(peer);
    // What the peer said is about its own files: say whose.
    let from_peer = |e| match e {
        TransferError::Peer(said) => failure(TransferError::Peer(format!(
            "{}: {said}",
            dialer.shown(&peer)
        ))),
        e => failure(e),
    };
    tokio::select! {
        result = copy => result.map_err(from_peer),
        _ = departure.wait() => Err(failure(TransferError::Connection(
            "the other device went away".into(),
        ))),
    }
}

fn failure(e: TransferError) -> control::Error {
    let code = match &e {
        TransferError::Escape(_) => ErrorCode::Refused,
        TransferError::Walk(walk::WalkError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            ErrorCode::NotFound
        }
        TransferError::Walk(_) => ErrorCode::InvalidArgument,
        TransferError::Connection(_) | TransferError::Timeout => ErrorCode::Unreachable,
        _ => ErrorCode::Failed,
    };
    let message = match e {
        TransferError::Connection(reason) => {
            format!("connection lost ({reason}); run the same command again to resume")
        }
        e => e.to_string(),
    };
    control::Error::new(code, message)
}

fn copied_file(f: FileReport) -> CopiedFile {
    let hex = |bytes: &[u8]| HEXLOWER.encode(bytes);
    let (outcome, reason) = match f.outcome {
        Outcome::Stored => ("stored", None),
        Outcome::Skipped => ("skipped", None),
        Outcome::Failed { reason } => ("failed", Some(reason)),
    };
    CopiedFile {
        path: f.path,
        size: f.size,
        outcome: outcome.into(),
        reason,
        blake3: f.blake3.map(|d| hex(&d)),
        sha256: f.sha256.map(|d| hex(&d)),
        resumed: f.resumed,
    }
}
