//! The sending side: offer the entries batch by batch, and stream the files the receiver
//! wants. Files are read and hashed on a blocking thread a few chunks ahead of the network,
//! so disk, hashing and the stream overlap; a file that changes while it is read is
//! abandoned, never delivered half old, half new. A receiver that takes them gets small
//! files packed, many to a message ([`Data::Files`]).

use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    sync::atomic::Ordering,
};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, io::BufWriter};
use loopsy_mesh::framed;
use loopsy_wire::transfer::{
    self, CHUNK, Data, Digest, Entry, Kind, MAX_BATCH, MAX_BATCH_NAMES, MAX_FRAME, MAX_PACKED,
    Outcome, Plan, Reply, Whole,
};
use serde_bytes::ByteBuf;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::{
    Buffers, FileReport, Handed, Handover, IDLE, Progress, SENDING, Summary, TransferError, count,
    flush, put, tree, walk::Item,
};

/// Hand-overs (a chunk each, for a big file) read ahead of the network.
const READ_AHEAD: usize = 8;
/// Bytes of messages gathered before they go out.
const WRITE_BUFFER: usize = 64 * 1024;

/// What the reading thread hands the network: a message, a chunk and its bytes, or whole
/// small files and theirs.
enum Piece {
    Message(Data),
    Chunk { hash: Digest, bytes: Vec<u8> },
    Files(Pack),
}

/// Whole small files gathered for one [`Data::Files`].
#[derive(Default)]
struct Pack {
    files: Vec<Whole>,
    /// Their bytes, one file after the other.
    bytes: Vec<u8>,
}

impl Pack {
    /// Whether a file of `len` bytes still fits.
    fn fits(&self, len: usize) -> bool {
        self.files.len() < MAX_PACKED && self.bytes.len() + len <= CHUNK
    }
}

/// How one file went out.
#[derive(Default)]
struct Sent {
    from: u64,
    blake3: Option<Digest>,
    sha256: Option<Vec<u8>>,
}

/// Sends `items` (from `sources` top-level sources) to the receiver at the other end.
pub async fn send<S>(
    stream: S,
    items: Vec<Item>,
    sources: u32,
    options: transfer::Send,
    reports: bool,
    progress: &Progress,
) -> Result<Summary, TransferError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (reader, writer) = stream.split();
    // Small files are a few short messages each: gathered, they travel in a few frames
    // instead of four frames a file. (A chunk's bytes, bigger than the buffer, go straight
    // through.) Every wait for the receiver comes after a flush.
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER, writer);
    let mut replies = Replies::spawn(reader);
    let summary = Summary::new(reports);
    let result = send_all(
        &mut writer,
        &mut replies,
        items,
        sources,
        options,
        progress,
        summary,
    )
    .await;
    if let Err(e) = &result
        && e.tell_peer()
    {
        let _ = put(
            &mut writer,
            &Data::Error {
                message: transfer::bounded(e.to_string()),
            },
        )
        .await;
    }
    let _ = writer.close().await;
    result
}

/// Tells a receiver that the copy cannot start.
pub async fn refuse<S>(mut stream: S, message: String)
where
    S: AsyncWrite + Unpin,
{
    let message = transfer::bounded(message);
    let _ = put(&mut stream, &Data::Error { message }).await;
    let _ = stream.close().await;
}

async fn send_all<W>(
    writer: &mut W,
    replies: &mut Replies,
    items: Vec<Item>,
    sources: u32,
    options: transfer::Send,
    progress: &Progress,
    mut summary: Summary,
) -> Result<Summary, TransferError>
where
    W: AsyncWrite + Unpin,
{
    let files = items.iter().filter(|i| is_file(&i.entry)).count() as u64;
    let bytes = items.iter().map(|i| i.entry.size()).sum();
    progress.files.store(files, Ordering::Relaxed);
    progress.bytes.store(bytes, Ordering::Relaxed);
    put(
        writer,
        &Data::Begin {
            sources,
            files,
            bytes,
        },
    )
    .await?;
    // Each offer goes out right behind the previous batch's data, before that batch's
    // report comes back: the receiver can plan it while it still stores the last files of
    // the previous one, and no round trip separates the batches. (A receiver reads the
    // flow in order, so one that answers each batch before reading on sees no change.)
    let mut rest = &items[..];
    let mut owed: Option<Owed> = None;
    while !rest.is_empty() {
        let batch = next_batch(rest);
        rest = &rest[batch.len()..];
        let entries = batch.iter().map(|i| i.entry.clone()).collect();
        put(writer, &Data::Offer { entries }).await?;
        flush(writer).await?;
        if let Some(previous) = owed.take() {
            previous.report(replies, &mut summary).await?;
        }
        owed = Some(send_batch(writer, replies, batch, options, progress).await?);
    }
    flush(writer).await?;
    if let Some(previous) = owed.take() {
        previous.report(replies, &mut summary).await?;
    }
    put(writer, &Data::Done).await?;
    flush(writer).await?;
    summary.transferred = progress.transferred.load(Ordering::Relaxed);
    Ok(summary)
}

/// As many entries as one offer holds.
fn next_batch(items: &[Item]) -> &[Item] {
    let mut names = 0;
    let end = items
        .iter()
        .take(MAX_BATCH)
        .position(|i| {
            names += i.entry.name_len();
            names > MAX_BATCH_NAMES
        })
        .unwrap_or(items.len().min(MAX_BATCH));
    &items[..end.max(1)]
}

/// Streams one offered batch (its offer already sent) as the receiver planned it, up to
/// its `Finish`; the report is still owed.
async fn send_batch<'a, W>(
    writer: &mut W,
    replies: &mut Replies,
    batch: &'a [Item],
    options: transfer::Send,
    progress: &Progress,
) -> Result<Owed<'a>, TransferError>
where
    W: AsyncWrite + Unpin,
{
    let files: Vec<usize> = (0..batch.len())
        .filter(|&i| is_file(&batch[i].entry))
        .collect();
    let (plans, packed) = match replies.next().await? {
        Reply::Plan { plans, packed } if plans.len() == files.len() => (plans, packed),
        Reply::Error { message } => return Err(TransferError::Peer(message)),
        other => return Err(unexpected(&other)),
    };
    let work: Vec<(usize, Item, Plan)> = files
        .iter()
        .zip(plans)
        .filter(|(_, plan)| *plan != Plan::Skip)
        .map(|(&index, plan)| (index, batch[index].clone(), plan))
        .collect();
    let (pieces, mut incoming) = mpsc::channel(READ_AHEAD);
    let buffers = Buffers::of(&SENDING);
    let reader_buffers = buffers.clone();
    // A SHA-256 asked for travels in `End`, which packed files have none of.
    let pack = packed && !options.sha256;
    let reading = tokio::task::spawn_blocking(move || {
        read_files(work, options, pack, &pieces, &reader_buffers)
    });
    while let Some(handed) = incoming.recv().await {
        if let Some(reply) = replies.early() {
            return Err(match reply {
                Ok(Reply::Error { message }) => TransferError::Peer(message),
                Ok(other) => unexpected(&other),
                Err(e) => e,
            });
        }
        for piece in handed.pieces {
            match piece {
                Piece::Message(message) => {
                    if let Data::File { from, .. } = message {
                        count(&progress.done, from);
                    }
                    put(writer, &message).await?;
                }
                Piece::Chunk { hash, bytes } => {
                    let len = bytes.len() as u32;
                    put(writer, &Data::Chunk { len, hash }).await?;
                    writer.write_all(&bytes).await.map_err(super::lost)?;
                    buffers.give(bytes);
                    count(&progress.transferred, len.into());
                    count(&progress.done, len.into());
                }
                Piece::Files(pack) => {
                    let files = Whole::pack(&pack.files);
                    put(writer, &Data::Files { files }).await?;
                    writer.write_all(&pack.bytes).await.map_err(super::lost)?;
                    let len = pack.bytes.len() as u64;
                    count(&progress.transferred, len);
                    count(&progress.done, len);
                }
            }
        }
    }
    let sent = reading
        .await
        .map_err(|e| TransferError::Protocol(format!("the reader failed: {e}")))?;
    put(writer, &Data::Finish).await?;
    Ok(Owed { batch, sent })
}

/// A batch whose data went out, its report still to come.
struct Owed<'a> {
    batch: &'a [Item],
    /// How each file went out, by its index in the batch.
    sent: Vec<(usize, Sent)>,
}

impl Owed<'_> {
    /// Reads the receiver's report of the batch into `summary`.
    async fn report(
        self,
        replies: &mut Replies,
        summary: &mut Summary,
    ) -> Result<(), TransferError> {
        let batch = self.batch;
        let outcomes = match replies.next().await? {
            Reply::Report { outcomes } if outcomes.len() == batch.len() => outcomes,
            Reply::Error { message } => return Err(TransferError::Peer(message)),
            other => return Err(unexpected(&other)),
        };
        let mut sent = self.sent.into_iter().peekable();
        for (index, (item, outcome)) in batch.iter().zip(outcomes).enumerate() {
            let mine = sent.next_if(|(i, _)| *i == index).map(|(_, s)| s);
            if !is_file(&item.entry) && outcome == Outcome::Stored {
                continue;
            }
            let mine = mine.unwrap_or_default();
            summary.add(FileReport {
                path: super::confine::shown(&item.entry.path),
                size: item.entry.size(),
                blake3: mine.blake3,
                sha256: mine.sha256,
                resumed: mine.from,
                outcome,
            });
        }
        Ok(())
    }
}

fn is_file(entry: &Entry) -> bool {
    matches!(entry.kind, Kind::File { .. })
}

fn unexpected(reply: &Reply) -> TransferError {
    let what = match reply {
        Reply::Plan { .. } => "a plan",
        Reply::Report { .. } => "a report",
        Reply::Error { .. } => "an error",
    };
    TransferError::Protocol(format!("{what} that does not fit the offer"))
}

/// Reads the planned files in order and hands their pieces on, small files planned fresh
/// packed when `pack`; stops when the network side stops listening. Returns how each file
/// went out, by its index in the batch.
fn read_files(
    work: Vec<(usize, Item, Plan)>,
    options: transfer::Send,
    pack: bool,
    network: &mpsc::Sender<Handed<Piece>>,
    buffers: &Buffers,
) -> Vec<(usize, Sent)> {
    let mut sent = Vec::with_capacity(work.len());
    let mut out = Outbox {
        network,
        handover: Handover::new(),
        pack: Pack::default(),
    };
    for (index, item, plan) in work {
        let read = if pack && plan == Plan::Fresh && item.entry.size() <= CHUNK as u64 {
            read_whole(index, &item, &mut out)
        } else {
            read_file(index, &item, &plan, options, buffers, &mut out)
        };
        match read {
            Ok(Some(file)) => sent.push((index, file)),
            Ok(None) => {}
            Err(Stopped) => return sent,
        }
    }
    let _ = out.seal().and_then(|()| out.flush());
    sent
}

/// The network side went away.
struct Stopped;

/// The reading thread's end of the hand-over to the network side.
struct Outbox<'a> {
    network: &'a mpsc::Sender<Handed<Piece>>,
    handover: Handover<Piece>,
    /// Small files read whole, not handed on yet.
    pack: Pack,
}

impl Outbox<'_> {
    /// Hands on a piece, behind the files packed so far.
    fn put(&mut self, piece: Piece) -> Result<(), Stopped> {
        self.seal()?;
        self.add(piece)
    }

    fn add(&mut self, piece: Piece) -> Result<(), Stopped> {
        let bytes = match &piece {
            Piece::Chunk { bytes, .. } => bytes.len(),
            Piece::Files(pack) => pack.bytes.len(),
            Piece::Message(_) => 0,
        };
        if self.handover.add(piece, bytes) {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands on the files packed so far, as one piece.
    fn seal(&mut self) -> Result<(), Stopped> {
        if self.pack.files.is_empty() {
            return Ok(());
        }
        let pack = std::mem::take(&mut self.pack);
        self.add(Piece::Files(pack))
    }

    /// Room in the pack for a file of `len` bytes (a full pack is handed on).
    fn room(&mut self, len: usize) -> Result<&mut Pack, Stopped> {
        if !self.pack.fits(len) {
            self.seal()?;
        }
        Ok(&mut self.pack)
    }

    fn message(&mut self, message: Data) -> Result<(), Stopped> {
        self.put(Piece::Message(message))
    }

    fn flush(&mut self) -> Result<(), Stopped> {
        if self.handover.pieces.is_empty() {
            return Ok(());
        }
        // This runs on a blocking thread of the runtime, which may wait on it.
        let handed =
            tokio::runtime::Handle::current().block_on(self.handover.take_within(&SENDING));
        if self.network.blocking_send(handed).is_ok() {
            Ok(())
        } else {
            Err(Stopped)
        }
    }
}

/// Sends one file: `Ok(None)` when it was abandoned.
fn read_file(
    index: usize,
    item: &Item,
    plan: &Plan,
    options: transfer::Send,
    buffers: &Buffers,
    out: &mut Outbox,
) -> Result<Option<Sent>, Stopped> {
    let size = item.entry.size();
    let opened = File::open(&item.local).and_then(|file| {
        let meta = file.metadata()?;
        Ok((file, meta))
    });
    let (mut file, before) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            out.message(Data::File {
                index: index as u32,
                from: 0,
            })?;
            out.message(abandon(format!("cannot read it: {e}")))?;
            return Ok(None);
        }
    };
    let mut sha = options.sha256.then(Sha256::new);
    let mut hashes = tree::Tree::new();
    let from = match plan {
        Plan::Resume { len, digest } => {
            match verified_prefix(&mut file, *len, *digest, size, sha.as_mut()) {
                Ok(Some(prefix)) => {
                    hashes = prefix;
                    *len
                }
                _ => {
                    sha = options.sha256.then(Sha256::new);
                    if file.seek(SeekFrom::Start(0)).is_err() {
                        return Ok(None);
                    }
                    0
                }
            }
        }
        _ => 0,
    };
    out.message(Data::File {
        index: index as u32,
        from,
    })?;
    if !unchanged(&item.entry, &before) || (before.dev(), before.ino()) != item.file {
        out.message(abandon("it changed after it was listed".into()))?;
        return Ok(None);
    }
    let mut offset = from;
    while offset < size {
        let len = (size - offset).min(CHUNK as u64) as usize;
        let mut bytes = buffers.take(len);
        if let Err(e) = file.read_exact(&mut bytes) {
            let reason = if e.kind() == io::ErrorKind::UnexpectedEof {
                "it shrank while it was being copied".to_owned()
            } else {
                format!("cannot read it: {e}")
            };
            out.message(abandon(reason))?;
            return Ok(None);
        }
        let hash = tree::chunk_hash(&bytes, offset, size);
        hashes.push(hash);
        if let Some(sha) = sha.as_mut() {
            sha.update(&bytes);
        }
        offset += len as u64;
        out.put(Piece::Chunk { hash, bytes })?;
    }
    // Written to while it was read (a log, say): what went out may be half old, half new.
    if !file
        .metadata()
        .is_ok_and(|after| unchanged(&item.entry, &after))
    {
        out.message(abandon("it changed while it was being copied".into()))?;
        return Ok(None);
    }
    let blake3 = hashes.root();
    let sha256 = sha.map(|s| s.finalize().to_vec());
    out.message(Data::End {
        blake3,
        sha256: sha256.clone().map(ByteBuf::from),
    })?;
    Ok(Some(Sent {
        from,
        blake3: Some(blake3),
        sha256,
    }))
}

fn abandon(reason: String) -> Data {
    Data::Abandon { reason }
}

/// Says that the file at `index` cannot be sent, and why.
fn refuse_file(index: usize, reason: String, out: &mut Outbox) -> Result<Option<Sent>, Stopped> {
    out.message(Data::File {
        index: index as u32,
        from: 0,
    })?;
    out.message(abandon(reason))?;
    Ok(None)
}

/// Reads a small file planned fresh whole into the pack, with the same checks as
/// [`read_file`]: `Ok(None)` when it was abandoned.
fn read_whole(index: usize, item: &Item, out: &mut Outbox) -> Result<Option<Sent>, Stopped> {
    let size = item.entry.size() as usize;
    let (mut file, before) = match File::open(&item.local).and_then(|file| {
        let meta = file.metadata()?;
        Ok((file, meta))
    }) {
        Ok(opened) => opened,
        Err(e) => return refuse_file(index, format!("cannot read it: {e}"), out),
    };
    if !unchanged(&item.entry, &before) || (before.dev(), before.ino()) != item.file {
        return refuse_file(index, "it changed after it was listed".into(), out);
    }
    let pack = out.room(size)?;
    let start = pack.bytes.len();
    pack.bytes.resize(start + size, 0);
    let read = file.read_exact(&mut pack.bytes[start..]);
    // Written to while it was read: what was read may be half old, half new.
    let changed = read.is_ok()
        && !file
            .metadata()
            .is_ok_and(|after| unchanged(&item.entry, &after));
    if read.is_err() || changed {
        pack.bytes.truncate(start);
        let reason = match read {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                "it shrank while it was being copied".to_owned()
            }
            Err(e) => format!("cannot read it: {e}"),
            Ok(()) => "it changed while it was being copied".to_owned(),
        };
        return refuse_file(index, reason, out);
    }
    let blake3 = *blake3::hash(&pack.bytes[start..]).as_bytes();
    pack.files.push(Whole {
        index: index as u32,
        len: size as u32,
        blake3,
    });
    Ok(Some(Sent {
        from: 0,
        blake3: Some(blake3),
        sha256: None,
    }))
}

/// Whether the file still has the size and time it was offered with.
fn unchanged(entry: &Entry, meta: &std::fs::Metadata) -> bool {
    meta.len() == entry.size()
        && meta.mtime() == entry.mtime
        && meta.mtime_nsec() == i64::from(entry.mtime_nsec)
}

/// Hashes the first `len` bytes as the receiver did; the tree so far when they match.
fn verified_prefix(
    file: &mut File,
    len: u64,
    digest: Digest,
    size: u64,
    mut sha: Option<&mut Sha256>,
) -> io::Result<Option<tree::Tree>> {
    if len == 0 || len > size || !len.is_multiple_of(CHUNK as u64) {
        return Ok(None);
    }
    let mut hashes = tree::Tree::new();
    let mut bytes = vec![0; CHUNK];
    let mut offset = 0;
    while offset < len {
        file.read_exact(&mut bytes)?;
        hashes.push(tree::chunk_hash(&bytes, offset, size));
        if let Some(sha) = sha.as_mut() {
            sha.update(&bytes);
        }
        offset += CHUNK as u64;
    }
    Ok((hashes.digest() == digest).then_some(hashes))
}

/// The receiver's replies, read by a task of their own so that an error it sends in the
/// middle of a batch is seen at once.
struct Replies {
    incoming: mpsc::Receiver<Result<Reply, TransferError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Replies {
    fn spawn<R>(mut reader: R) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let (tx, incoming) = mpsc::channel(4);
        // No deadline here: between a plan and its report the receiver says nothing for as
        // long as the batch's data takes.
        let task = tokio::spawn(async move {
            loop {
                let reply = match framed::read::<Reply, _>(&mut reader, MAX_FRAME).await {
                    Ok(Some(reply)) => Ok(reply),
                    Ok(None) => Err(TransferError::Connection("the stream ended".into())),
                    Err(framed::ReadError::Io(e)) => Err(super::lost(e)),
                    Err(e) => Err(TransferError::Protocol(e.to_string())),
                };
                let end = reply.is_err();
                if tx.send(reply).await.is_err() || end {
                    return;
                }
            }
        });
        Self { incoming, task }
    }

    /// The reply the receiver owes now (a plan, or a report).
    async fn next(&mut self) -> Result<Reply, TransferError> {
        match tokio::time::timeout(IDLE, self.incoming.recv()).await {
            Ok(Some(reply)) => reply,
            Ok(None) => Err(TransferError::Connection("the stream ended".into())),
            Err(_) => Err(TransferError::Timeout),
        }
    }

    /// A reply (or a broken stream) that came while none was expected: the receiver gave up.
    fn early(&mut self) -> Option<Result<Reply, TransferError>> {
        self.incoming.try_recv().ok()
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        self.task.abort();
    }
}
