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
        atomic::{AtomicU64, AtomicUsize, Ordering},
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
use tokio::sync::{Semaphore, SemaphorePermit};

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
/// allocates (and zeroes) a few of them instead of one per chunk. They are kept for all the
/// copies of one direction together, as many as its [`Budget`] lets queue, and let go
/// when the last of those copies ends: per copy, each would keep as many as it ever had
/// queued, and ten copies at once held 25 MiB of them.
#[derive(Debug, Clone)]
struct Buffers(Arc<Using>);

/// One copy's use of a budget's buffers, until it ends.
#[derive(Debug)]
struct Using(&'static Budget);

impl Drop for Using {
    fn drop(&mut self) {
        if self.0.copies.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.spare().clear();
        }
    }
}

impl Buffers {
    /// Most buffers kept: as many as the budget lets queue.
    const KEEP: usize = BUDGET_KIB as usize * 1024 / CHUNK;

    fn of(budget: &'static Budget) -> Self {
        budget.copies.fetch_add(1, Ordering::AcqRel);
        Self(Arc::new(Using(budget)))
    }

    fn take(&self, len: usize) -> Vec<u8> {
        // A small file's bytes get a buffer of their own size: many of them travel in one
        // hand-over, and pooled chunk-sized ones would each hold a whole chunk.
        if len < CHUNK {
            return vec![0; len];
        }
        let mut buffer = self.0.0.spare().pop().unwrap_or_default();
        buffer.resize(len, 0);
        buffer
    }

    fn give(&self, buffer: Vec<u8>) {
        let mut spare = self.0.0.spare();
        if spare.len() < Self::KEEP && buffer.capacity() >= CHUNK {
            spare.push(buffer);
        }
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

    /// The pieces gathered so far, once `budget` has room for their bytes.
    async fn take_within(&mut self, budget: &'static Budget) -> Handed<P> {
        let held = budget.hold(self.bytes).await;
        Handed {
            pieces: self.take(),
            _held: held,
        }
    }
}

/// A hand-over on its way to the other side, holding its bytes' share of the node's budget
/// until it has been sent or stored (and dropped).
struct Handed<P> {
    pieces: Vec<P>,
    _held: Option<SemaphorePermit<'static>>,
}

impl<P> Handed<P> {
    /// One piece that carries no file data.
    fn alone(piece: P) -> Self {
        Self {
            pieces: vec![piece],
            _held: None,
        }
    }
}

/// What all the copies of this node at once may have queued between the network and the
/// disks, each way: a copy queues up to 8 chunks (2 MiB) to keep both busy, so ten copies at
/// once queued 20 MiB each way and took a node past its memory target. One copy alone still
/// gets its whole queue; many share. Sending and receiving each have a budget, so that
/// neither ever waits for the other (a node can copy both ways at once).
#[derive(Debug)]
struct Budget {
    room: Semaphore,
    /// Chunk buffers not in use, for the next chunk of any of these copies.
    spare: std::sync::Mutex<Vec<Vec<u8>>>,
    /// Copies using `spare`.
    copies: AtomicUsize,
}

/// Each way's budget, in KiB.
const BUDGET_KIB: u32 = 8 * 1024;

static SENDING: Budget = Budget::new();
static RECEIVING: Budget = Budget::new();

impl Budget {
    const fn new() -> Self {
        Self {
            room: Semaphore::const_new(BUDGET_KIB as usize),
            spare: std::sync::Mutex::new(Vec::new()),
            copies: AtomicUsize::new(0),
        }
    }

    fn spare(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.spare.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for room for `bytes` of file data (none is needed for none).
    async fn hold(&'static self, bytes: usize) -> Option<SemaphorePermit<'static>> {
        if bytes == 0 {
            return None;
        }
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        // The semaphore is never closed.
        self.room.acquire_many(kib.min(BUDGET_KIB)).await.ok()
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
