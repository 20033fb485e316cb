//! File transfer (`/loopsy/transfer/1`, the flow is in `loopsy_wire::transfer`). One engine
//! serves both directions: [`send::send`] offers files and streams them, and
//! [`receive::receive`] places them, each chunk checked against its BLAKE3 hash, each file
//! written beside its destination and renamed into place only once whole and verified,
//! through directory descriptors that never follow a link ([`dirs`]).
//! The same two functions run on the device that opened the copy (on the user's own files)
//! and on the one that serves it ([`Transfer`], confined to the peer's file roots by
//! [`confine`], and kept out of every Loopsy home by [`homes`]).

pub mod client;
pub mod confine;
pub mod dirs;
pub mod homes;
pub mod policy;
pub mod receive;
pub mod send;
mod serve;
#[cfg(test)]
mod tests;
pub mod tree;
pub mod walk;
pub mod words;

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use loopsy_mesh::framed;
use loopsy_wire::{
    frame,
    transfer::{CHUNK, Digest, MAX_FRAME, Outcome},
};
use serde::{Serialize, de::DeserializeOwned};

use confine::Escape;
use homes::Homes;
use walk::WalkError;

pub use serve::Transfer;

/// Longest wait for the other side's next message: generous, since a side may be hashing a
/// long prefix to resume from meanwhile; a peer that leaves ends the copy at once anyway.
const IDLE: Duration = Duration::from_secs(600);
/// Most bytes of names one copy may offer, which bounds what a receiver keeps per copy.
const MAX_NAME_BYTES: usize = 32 * 1024 * 1024;

/// Why a copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A path that would leave the roots.
    #[error("refused: {0}")]
    Escape(Escape),
    #[error(transparent)]
    Walk(#[from] WalkError),
    /// What the other side said when it gave up.
    #[error("{0}")]
    Peer(String),
    #[error("the other device broke the transfer protocol: {0}")]
    Protocol(String),
    #[error("connection lost: {0}")]
    Connection(String),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{0}")]
    Destination(String),
    #[error("the other device sent nothing for {} s", IDLE.as_secs())]
    Timeout,
}

impl From<Escape> for TransferError {
    fn from(e: Escape) -> Self {
        match e {
            // A path that is missing or unreadable is no refusal: it reads as `cp` says it.
            Escape::Io { .. } => Self::Destination(e.to_string()),
            e => Self::Escape(e),
        }
    }
}

impl TransferError {
    fn io(path: &std::path::Path, source: io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Whether the other side should hear of it (it knows its own words, and a lost
    /// connection carries nothing).
    fn tell_peer(&self) -> bool {
        !matches!(self, Self::Peer(_) | Self::Connection(_) | Self::Timeout)
    }
}

/// How far a copy has come, for progress bars; updated as it goes.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// Bytes of files verified so far, resumed prefixes included.
    pub done: AtomicU64,
    /// Bytes of file data that crossed the network.
    pub transferred: AtomicU64,
}

/// Chunk buffers passed between the network and the disk and back, so that a copy
/// allocates (and zeroes) a few of them instead of one per chunk.
#[derive(Debug, Clone, Default)]
struct Buffers(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl Buffers {
    /// Most buffers kept for reuse.
    const KEEP: usize = 16;

    fn take(&self, len: usize) -> Vec<u8> {
        // A small file's bytes get a buffer of their own size: many of them travel in one
        // hand-over, and pooled chunk-sized ones would each hold a whole chunk.
        if len < CHUNK {
            return vec![0; len];
        }
        let mut buffer = self.lock().pop().unwrap_or_default();
        buffer.resize(len, 0);
        buffer
    }

    fn give(&self, buffer: Vec<u8>) {
        let mut pool = self.lock();
        if pool.len() < Self::KEEP && buffer.capacity() >= CHUNK {
            pool.push(buffer);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Pieces gathered for one hand-over between the network task and a file thread: 10,000
/// small files are 30,000 pieces, and waking the other side for each costs more than
/// storing them.
struct Handover<P> {
    pieces: Vec<P>,
    bytes: usize,
}

impl<P> Handover<P> {
    /// Most pieces in one hand-over.
    const PIECES: usize = 64;

    fn new() -> Self {
        Self {
            pieces: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a piece carrying `bytes` of file data; true when the hand-over is due (a whole
    /// chunk's worth, so that a big file's chunks go one by one, as soon as they are read).
    fn add(&mut self, piece: P, bytes: usize) -> bool {
        self.pieces.push(piece);
        self.bytes += bytes;
        self.pieces.len() >= Self::PIECES || self.bytes >= CHUNK
    }

    fn take(&mut self) -> Vec<P> {
        self.bytes = 0;
        std::mem::take(&mut self.pieces)
    }
}

/// Adds to a progress counter.
fn count(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// What became of one file (or of another entry that failed).
#[derive(Debug, Clone)]
pub struct FileReport {
    /// The path as offered: the source's name, then the path inside it.
    pub path: String,
    pub size: u64,
    pub blake3: Option<Digest>,
    pub sha256: Option<Vec<u8>>,
    /// Bytes that were already there and verified.
    pub resumed: u64,
    pub outcome: Outcome,
}

/// What a finished copy did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Every file's report, when the side keeps them (the device that runs `loopsy cp`;
    /// a serving device only counts).
    pub files: Vec<FileReport>,
    pub failed: usize,
    pub transferred: u64,
    keep: bool,
}

impl Summary {
    pub fn new(keep: bool) -> Self {
        Self {
            keep,
            ..Self::default()
        }
    }

    fn add(&mut self, report: FileReport) {
        self.failed += usize::from(matches!(report.outcome, Outcome::Failed { .. }));
        if self.keep {
            self.files.push(report);
        }
    }
}

/// What a receiver accepts from its sender, beyond staying inside the destination.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// The names the top-level sources must have: a pull asked for them, and a sender
    /// must not pick other names in the destination. `None` for a push, whose sender names
    /// what it sends.
    pub names: Option<Vec<Vec<u8>>>,
    /// Whether directories may come.
    pub recursive: bool,
    /// Whether to keep a report per file.
    pub reports: bool,
    /// The homes no entry may go into (the destination itself is the caller's to check:
    /// a peer's, or the one the user named).
    pub homes: Homes,
}

/// Writes one message without flushing (chunks follow close behind).
async fn put<W, T>(writer: &mut W, message: &T) -> Result<(), TransferError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let bytes =
        frame::encode(message, MAX_FRAME).map_err(|e| TransferError::Protocol(e.to_string()))?;
    writer.write_all(&bytes).await.map_err(lost)
}

/// Reads the next message.
async fn get<R, T>(reader: &mut R) -> Result<T, TransferError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    match tokio::time::timeout(IDLE, framed::read(reader, MAX_FRAME)).await {
        Ok(Ok(Some(message))) => Ok(message),
        Ok(Ok(None)) => Err(TransferError::Connection(
            "the other device closed the stream".into(),
        )),
        Ok(Err(framed::ReadError::Io(e))) => Err(lost(e)),
        Ok(Err(e)) => Err(TransferError::Protocol(e.to_string())),
        Err(_) => Err(TransferError::Timeout),
    }
}

async fn flush<W: AsyncWrite + Unpin>(writer: &mut W) -> Result<(), TransferError> {
    writer.flush().await.map_err(lost)
}

fn lost(e: io::Error) -> TransferError {
    TransferError::Connection(e.to_string())
}
