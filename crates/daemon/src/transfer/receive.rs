//! The receiving side: place each offered entry under the destination (scp's rules), plan
//! each file (fresh, resume from a verified partial file, or skip), then store the data a
//! blocking thread behind the network: every chunk checked against its hash before it is
//! written, the file's hash checked at the end, and only then the file renamed into place.
//! A partial file lives beside its destination as `.NAME.loopsy-part`: kept when the
//! connection is lost (the next run resumes from it), removed when the copy failed for any
//! other reason. Everything is written through directory descriptors that never follow a
//! link ([`super::dirs`]), and a part file is only ever written when it is this copy's
//! own: a regular file of this user with no other name (a link to a file elsewhere,
//! planted under the part name, is set aside, never written through).

use std::{
    collections::HashSet,
    ffi::{OsStr, OsString},
    fs::{self, File},
    io::{self, Read, Seek, SeekFrom, Write},
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, LazyLock, Mutex, MutexGuard, atomic::Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use loopsy_wire::transfer::{
    self, CHUNK, Data, Digest, Entry, Kind, MAX_BATCH, Outcome, Plan, Receive, Reply, Whole,
};
use rustix::{
    fs::{AtFlags, FileType, Mode, OFlags},
    io::Errno,
};
use tokio::sync::mpsc;

use super::{
    Buffers, Expect, FileReport, Handed, Handover, IDLE, MAX_NAME_BYTES, Progress, RECEIVING,
    Summary, TransferError, confine, count,
    dirs::{Dest, Dir, Dirs},
    flush, get, put, tree,
    walk::MAX_ENTRIES,
};

/// Hand-overs (a chunk each, for a big file) received ahead of the disk.
const WRITE_BEHIND: usize = 8;
/// How long to wait for another copy to let go of a part file.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// After giving up, how long to keep reading so the sender sees why before the stream goes.
const DRAIN: Duration = Duration::from_secs(5);

/// Receives a copy into `dest`.
pub async fn receive<S>(
    stream: S,
    dest: Dest,
    options: Receive,
    expect: Expect,
    progress: &Progress,
) -> Result<Summary, TransferError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = stream.split();
    let result = receive_all(&mut reader, &mut writer, dest, options, expect, progress).await;
    match &result {
        Err(e) if e.tell_peer() => {
            give_up(&mut reader, &mut writer, e.to_string()).await;
        }
        _ => drop(writer.close().await),
    }
    result
}

/// Tells a sender that the copy cannot start.
pub async fn refuse<S>(stream: S, message: String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = stream.split();
    give_up(&mut reader, &mut writer, message).await;
}

async fn give_up<R, W>(reader: &mut R, writer: &mut W, message: String)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let message = transfer::bounded(message);
    let _ = put(writer, &Reply::Error { message }).await;
    let _ = writer.close().await;
    let _ = tokio::time::timeout(DRAIN, futures::io::copy(reader, &mut futures::io::sink())).await;
}

async fn receive_all<R, W>(
    reader: &mut R,
    writer: &mut W,
    dest: Dest,
    options: Receive,
    expect: Expect,
    progress: &Progress,
) -> Result<Summary, TransferError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let sources = match get(reader).await? {
        Data::Begin {
            sources,
            files,
            bytes,
        } => {
            progress.files.store(files, Ordering::Relaxed);
            progress.bytes.store(bytes, Ordering::Relaxed);
            sources
        }
        Data::Error { message } => return Err(TransferError::Peer(message)),
        _ => {
            return Err(TransferError::Protocol(
                "expected the start of a copy".into(),
            ));
        }
    };
    if expect
        .names
        .as_ref()
        .is_some_and(|n| n.len() != sources as usize)
    {
        return Err(protocol("a different number of sources than asked for"));
    }
    let place = Arc::new(Placement::new(dest, sources, expect.clone())?);
    let mut summary = Summary::new(expect.reports);
    let mut dirs = Vec::new();
    let (mut seen, mut names) = (0, 0);
    // The previous batch, all its data in, while its last files are still being stored:
    // a sender that sends its next offer without waiting for the report gets that offer
    // planned meanwhile. The report is sent as soon as the files are stored, and always
    // before the next plan.
    let mut storing: Option<Storing> = None;
    loop {
        let next = get(reader);
        let message = match storing.take() {
            None => next.await?,
            Some(mut writing) => {
                tokio::pin!(next);
                tokio::select! {
                    biased;
                    stored = &mut writing.0 => {
                        report(writer, Storing::done(stored)?, &mut summary, &mut dirs).await?;
                        next.await?
                    }
                    message = &mut next => {
                        storing = Some(writing);
                        message?
                    }
                }
            }
        };
        match message {
            Data::Offer { entries } => {
                if entries.is_empty() || entries.len() > MAX_BATCH {
                    return Err(TransferError::Protocol(format!(
                        "an offer of {} entries",
                        entries.len()
                    )));
                }
                seen += entries.len();
                names += entries.iter().map(Entry::name_len).sum::<usize>();
                if seen > MAX_ENTRIES || names > MAX_NAME_BYTES {
                    return Err(TransferError::Destination(format!(
                        "more than {MAX_ENTRIES} entries or {} MiB of names in one copy",
                        MAX_NAME_BYTES >> 20
                    )));
                }
                let preparing = place.clone();
                let batch = blocking(move || prepare(&preparing, entries, options)).await?;
                if let Some(writing) = storing.take() {
                    let stored = Storing::done(writing.0.await)?;
                    report(writer, stored, &mut summary, &mut dirs).await?;
                }
                put(
                    writer,
                    &Reply::Plan {
                        plans: batch.plans(),
                        packed: true,
                    },
                )
                .await?;
                flush(writer).await?;
                storing = Some(receive_batch(reader, batch, &place, options, progress).await?);
            }
            Data::Done => {
                if let Some(writing) = storing.take() {
                    let stored = Storing::done(writing.0.await)?;
                    report(writer, stored, &mut summary, &mut dirs).await?;
                }
                break;
            }
            Data::Error { message } => return Err(TransferError::Peer(message)),
            _ => return Err(TransferError::Protocol("expected an offer".into())),
        }
    }
    // Last, and deepest first: storing files inside a directory changes its time, and a
    // read-only directory must stay writable until everything is in it.
    blocking(move || {
        let mut open = place.dirs();
        for made in dirs.iter().rev() {
            let Ok(dir) = open.finish(&made.rel)? else {
                continue;
            };
            if let Some(mode) = made.mode {
                let _ = dir.set_permissions(fs::Permissions::from_mode(mode));
            }
            if let Some(time) = made.mtime {
                let _ = dir.set_modified(time);
            }
        }
        Ok(())
    })
    .await?;
    summary.transferred = progress.transferred.load(Ordering::Relaxed);
    Ok(summary)
}

/// Sends the report of a stored batch, and keeps what the end of the copy needs.
async fn report<W: AsyncWrite + Unpin>(
    writer: &mut W,
    stored: Stored,
    summary: &mut Summary,
    dirs: &mut Vec<Made>,
) -> Result<(), TransferError> {
    put(
        writer,
        &Reply::Report {
            outcomes: stored.outcomes,
        },
    )
    .await?;
    flush(writer).await?;
    for report in stored.reports {
        summary.add(report);
    }
    dirs.extend(stored.dirs);
    Ok(())
}

/// A batch whose data all came, still being stored by its thread.
struct Storing(tokio::task::JoinHandle<Result<Stored, TransferError>>);

impl Storing {
    fn done(
        joined: Result<Result<Stored, TransferError>, tokio::task::JoinError>,
    ) -> Result<Stored, TransferError> {
        joined.map_err(|e| TransferError::Destination(format!("the writer failed: {e}")))?
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TransferError> + Send + 'static,
) -> Result<T, TransferError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| TransferError::Destination(format!("the writer failed: {e}")))?
}

/// Where entries go: into the destination when it is a directory, as the destination
/// (the source's own name replaced) otherwise; never through a link, never into a home
/// below it.
#[derive(Debug)]
struct Placement {
    /// The directory entries are placed in: the destination, or the one holding it.
    dirs: Mutex<Dirs>,
    /// The destination's name, when the top entry becomes it (`None`: entries go into
    /// the destination).
    rename: Option<OsString>,
    expect: Expect,
    /// The directories this copy made (below the placement's directory): nothing was in
    /// them before, so what is offered into them needs no look for what is there.
    made: Mutex<HashSet<PathBuf>>,
}

impl Placement {
    fn new(dest: Dest, sources: u32, expect: Expect) -> Result<Self, TransferError> {
        let shown = dest.shown();
        let missing = |dir: &Path, e: io::Error| match e.kind() {
            io::ErrorKind::NotFound => no_such_directory(dir),
            io::ErrorKind::NotADirectory => not_a_directory(dir),
            _ => TransferError::io(dir, e),
        };
        let mut dirs =
            Dirs::open(&dest.from, expect.homes.clone()).map_err(|e| missing(&dest.from, e))?;
        let (into, rename) = match (dest.below.parent(), dest.below.file_name()) {
            (Some(parent), Some(name)) => {
                let at = dirs
                    .dir(parent)?
                    .map_err(|e| missing(&dirs.shown(parent), e))?;
                match rustix::fs::statat(&at, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                        let dir = dirs
                            .dir(&dest.below)?
                            .map_err(|e| TransferError::io(&shown, e))?;
                        (Some(dir), None)
                    }
                    // Named as a directory, it must be one.
                    Ok(_) if dest.dir => return Err(not_a_directory(&shown)),
                    Err(Errno::NOENT) if dest.dir => return Err(no_such_directory(&shown)),
                    // Anything else is replaced (a link too, never followed).
                    Ok(_) => (None, Some((parent, name.to_owned(), true))),
                    Err(Errno::NOENT) => (None, Some((parent, name.to_owned(), false))),
                    Err(e) => return Err(TransferError::io(&shown, e.into())),
                }
            }
            _ => (None, None),
        };
        let dirs = match (into, &rename) {
            (Some(dir), _) => dirs.rebase(&dest.below, dir),
            (None, Some((parent, _, exists))) => {
                // Several sources go into a directory, which this is not.
                if sources > 1 && *exists {
                    return Err(not_a_directory(&shown));
                }
                if sources > 1 {
                    return Err(no_such_directory(&shown));
                }
                let at = dirs
                    .dir(parent)?
                    .map_err(|e| missing(&dirs.shown(parent), e))?;
                dirs.rebase(parent, at)
            }
            (None, None) => dirs,
        };
        Ok(Self {
            dirs: Mutex::new(dirs),
            rename: rename.map(|(_, name, _)| name),
            expect,
            made: Mutex::new(HashSet::new()),
        })
    }

    fn dirs(&self) -> MutexGuard<'_, Dirs> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where `entry` goes, below the placement's directory; an error when it may not come
    /// at all.
    fn target(&self, entry: &Entry) -> Result<PathBuf, TransferError> {
        let rel = confine::relative(&entry.path)?;
        let mut parts = rel.components();
        let top = parts
            .next()
            .map(|c| c.as_os_str().as_bytes())
            .unwrap_or_default();
        // A pull names what it wants: the sender may not choose other names here (an
        // `.ssh` next to the file asked for), nor send a tree unasked.
        if let Some(names) = &self.expect.names
            && self.rename.is_none()
            && !names.iter().any(|n| n == top)
        {
            return Err(protocol(&format!(
                "`{}` was not asked for",
                confine::shown(top)
            )));
        }
        if !self.expect.recursive && (parts.next().is_some() || entry.kind == Kind::Dir) {
            return Err(protocol("a directory that was not asked for (no -r)"));
        }
        Ok(match &self.rename {
            None => rel,
            Some(name) => {
                let mut renamed = PathBuf::from(name);
                renamed.extend(rel.components().skip(1));
                renamed
            }
        })
    }
}

fn no_such_directory(dir: &Path) -> TransferError {
    TransferError::Destination(format!("{}: no such directory", dir.display()))
}

fn not_a_directory(dir: &Path) -> TransferError {
    TransferError::Destination(format!("{}: not a directory", dir.display()))
}

/// The directory an entry goes in, and its name there.
fn split(rel: &Path) -> (&Path, &OsStr) {
    (
        rel.parent().unwrap_or(Path::new("")),
        rel.file_name().unwrap_or_default(),
    )
}

/// One entry of an offer, after planning.
enum Slot {
    Settled(Outcome),
    /// A file to receive, at `rel` below the placement's directory.
    Pending {
        rel: PathBuf,
        resume: Option<Box<Resume>>,
    },
}

/// The verified prefix of an earlier partial copy, and that part file, open and locked
/// from the moment it was hashed (so what was hashed is what gets appended to).
struct Resume {
    dir: Dir,
    len: u64,
    hashes: tree::Tree,
    file: File,
}

/// What storing a batch came to.
struct Stored {
    /// One per entry, for the sender.
    outcomes: Vec<Outcome>,
    /// The files (and failed entries) to show.
    reports: Vec<FileReport>,
    /// Directories to finish at the very end.
    dirs: Vec<Made>,
}

struct Batch {
    entries: Vec<Entry>,
    slots: Vec<Slot>,
    /// Directories this copy made, to finish at the very end.
    dirs: Vec<Made>,
}

/// A directory of the copy: its time is set once everything is in it, and its mode too
/// when this copy made it (one that was there keeps its mode).
struct Made {
    rel: PathBuf,
    mode: Option<u32>,
    mtime: Option<SystemTime>,
}

impl Batch {
    fn plans(&self) -> Vec<Plan> {
        self.entries
            .iter()
            .zip(&self.slots)
            .filter(|(e, _)| matches!(e.kind, Kind::File { .. }))
            .map(|(_, slot)| match slot {
                Slot::Settled(_) => Plan::Skip,
                Slot::Pending {
                    resume: Some(resume),
                    ..
                } => Plan::Resume {
                    len: resume.len,
                    digest: resume.hashes.digest(),
                },
                Slot::Pending { .. } => Plan::Fresh,
            })
            .collect()
    }
}

/// Places directories and links now, and decides for each file.
fn prepare(
    place: &Placement,
    entries: Vec<Entry>,
    options: Receive,
) -> Result<Batch, TransferError> {
    let mut slots = Vec::with_capacity(entries.len());
    let mut dirs = Vec::new();
    let mut seen = HashSet::with_capacity(entries.len());
    let mut made = place.made.lock().unwrap_or_else(|e| e.into_inner());
    for entry in &entries {
        // Taken per entry: the previous batch's last files may still be going in.
        let mut open = place.dirs();
        // In order: a link placed by an earlier entry is met by the later ones' walks.
        let rel = place.target(entry)?;
        if !seen.insert(rel.clone()) {
            return Err(protocol(&format!(
                "`{}` is offered twice",
                confine::shown(&entry.path)
            )));
        }
        let (parent, name) = split(&rel);
        let at = open.dir(parent)?;
        // In a directory this copy made, only what this copy put there can be in the way,
        // and a file or link goes in by a rename that fails on a directory: a look per
        // entry (10,000 small files, 10,000 `statat`s) would find nothing to go by. Not
        // for a directory (offered again by a later batch, as two sources of one name do,
        // it is gone into, not made twice) nor with no clobber (a file this copy put
        // there stays).
        let surely_new =
            made.contains(parent) && !options.no_clobber && !matches!(entry.kind, Kind::Dir);
        let existing = at.as_ref().ok().and_then(|at| {
            if surely_new {
                return None;
            }
            rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW)
                .ok()
                .map(|stat| FileType::from_raw_mode(stat.st_mode))
        });
        let failed = |reason: &str| {
            Slot::Settled(Outcome::Failed {
                reason: reason.to_owned(),
            })
        };
        let slot = match (&entry.kind, at) {
            (_, Err(e)) => failed(&missing(&e)),
            (Kind::Dir, _) if existing == Some(FileType::Directory) => {
                // Going into it: a home there refuses the whole copy.
                match open.dir(&rel)? {
                    Ok(_) => {
                        dirs.push(Made {
                            rel,
                            mode: None,
                            mtime: mtime(entry),
                        });
                        Slot::Settled(Outcome::Stored)
                    }
                    Err(e) => failed(&e.to_string()),
                }
            }
            (Kind::Dir, _) if existing.is_some() => failed("it exists and is not a directory"),
            (Kind::Dir, Ok(at)) => match rustix::fs::mkdirat(&at, name, Mode::from(0o700)) {
                Ok(()) => {
                    made.insert(rel.clone());
                    dirs.push(Made {
                        rel,
                        mode: Some(entry.mode & 0o777),
                        mtime: mtime(entry),
                    });
                    Slot::Settled(Outcome::Stored)
                }
                Err(e) => failed(&io::Error::from(e).to_string()),
            },
            (Kind::Symlink { .. }, _) if existing.is_some() && options.no_clobber => {
                Slot::Settled(Outcome::Skipped)
            }
            (Kind::Symlink { target: link }, Ok(_)) if reserved(name) => {
                confine::link_target(link)?;
                failed(RESERVED)
            }
            (Kind::Symlink { target: link }, Ok(at)) => {
                let link = confine::link_target(link)?;
                let temp = beside(name, "link");
                let _ = rustix::fs::unlinkat(&at, &temp, AtFlags::empty());
                match rustix::fs::symlinkat(link, &at, &temp)
                    .and_then(|()| rustix::fs::renameat(&at, &temp, &at, name))
                {
                    Ok(()) => Slot::Settled(Outcome::Stored),
                    Err(e) => {
                        let _ = rustix::fs::unlinkat(&at, &temp, AtFlags::empty());
                        failed(&io::Error::from(e).to_string())
                    }
                }
            }
            (Kind::File { .. }, _) if reserved(name) => failed(RESERVED),
            (Kind::File { .. }, _) if existing == Some(FileType::Directory) => {
                failed("it exists and is a directory")
            }
            (Kind::File { .. }, _) if existing.is_some() && options.no_clobber => {
                Slot::Settled(Outcome::Skipped)
            }
            (Kind::File { size }, Ok(at)) => Slot::Pending {
                resume: partial(&at, name, *size),
                rel,
            },
        };
        slots.push(slot);
    }
    Ok(Batch {
        entries,
        slots,
        dirs,
    })
}

/// Why an entry's directory could not be entered.
fn missing(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => "its directory is missing".into(),
        _ => format!("cannot enter its directory: {e}"),
    }
}

/// `.NAME.loopsy-KIND` beside `name` (or a hashed name when that would be too long).
fn beside(name: &OsStr, kind: &str) -> OsString {
    let name = name.as_bytes();
    let mut temp = Vec::with_capacity(name.len() + 16);
    if name.len() + kind.len() + 9 <= confine::MAX_COMPONENT {
        temp.extend_from_slice(b".");
        temp.extend_from_slice(name);
    } else {
        let hash = blake3::hash(name);
        temp.extend_from_slice(b".");
        temp.extend_from_slice(hash.to_hex()[..32].as_bytes());
    }
    temp.extend_from_slice(b".loopsy-");
    temp.extend_from_slice(kind.as_bytes());
    OsStr::from_bytes(&temp).to_owned()
}

/// Whether `name` ends as the names [`beside`] makes do. A file or link offered under such
/// a name is refused: a later file of the name it ends in would take it for its own partial
/// file and put it in place under that name, and a link's temporary name is cleared first.
fn reserved(name: &OsStr) -> bool {
    let name = name.as_bytes();
    // In any case: a case-insensitive directory holds `.X.LOOPSY-PART` as `.x.loopsy-part`.
    [b".loopsy-part".as_slice(), b".loopsy-link"]
        .iter()
        .any(|end| {
            name.len() >= end.len() && name[name.len() - end.len()..].eq_ignore_ascii_case(end)
        })
}

const RESERVED: &str = "names ending in .loopsy-part or .loopsy-link are Loopsy's own";

/// This process's user: the only owner of a part file written to.
static USER: LazyLock<u32> = LazyLock::new(|| rustix::process::geteuid().as_raw());

/// Opens the partial file `part` in `dir` when it is one this copy may write to: a regular
/// file of this user with no other name, never through a symlink (one could have been
/// offered under its name) nor a hard link to a file elsewhere. `None` when there is no
/// such file; with `create`, a new one is made when there is nothing under the name. Its
/// length is read once it is locked (see [`still_named`]).
fn open_part(dir: &Dir, part: &OsStr, create: bool) -> io::Result<Option<File>> {
    let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let flags = if create {
        flags | OFlags::CREATE
    } else {
        flags
    };
    let file = match rustix::fs::openat(dir, part, flags, Mode::from(0o600)) {
        Ok(file) => file,
        Err(Errno::NOENT | Errno::LOOP) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let stat = rustix::fs::fstat(&file)?;
    let own = FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
        && stat.st_nlink == 1
        && stat.st_uid == *USER;
    Ok(own.then(|| File::from(file)))
}

/// A part file to write from the start, empty: a new one when nothing holds the name (made
/// with `mode`, and then certainly this copy's own: no check needed), else the one there
/// when it is this copy's own to write, else a new one in place of whatever holds the name
/// (that thing itself is left alone: only its name here goes). Says whether it was made
/// new, with `mode`. Locked for this copy either way, and still under its name once locked:
/// whoever held the lock before may have renamed it into place meanwhile (another copy
/// into the same place, or, with `shared`, the other thread of this one: a long name's part
/// name is a hash that a short name can be, and a case-insensitive directory folds two
/// names into one), and then it is that file, no longer a part to write.
fn fresh_part(dir: &Dir, part: &OsStr, mode: u32, shared: bool) -> io::Result<(File, bool)> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    for _ in 0..PART_TRIES {
        // Locked even when new: another copy into the same place may find it by its name.
        match rustix::fs::openat(dir, part, flags, Mode::from(mode)) {
            Ok(file) => {
                let file = File::from(file);
                lock(&file)?;
                if !shared || still_named(dir, part, &file) {
                    return Ok((file, true));
                }
                continue;
            }
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(file) = open_part(dir, part, true)? {
            lock(&file)?;
            if !still_named(dir, part, &file) {
                continue;
            }
            // On ext4, truncating to zero marks the file for a forced writeback of
            // everything written when it is closed: only a leftover with something in it is
            // emptied.
            if file.metadata()?.len() > 0 {
                file.set_len(0)?;
            }
            return Ok((file, false));
        }
        rustix::fs::unlinkat(dir, part, AtFlags::empty())?;
        let file = File::from(rustix::fs::openat(dir, part, flags, Mode::from(0o600))?);
        lock(&file)?;
        if !shared || still_named(dir, part, &file) {
            return Ok((file, false));
        }
    }
    Err(io::Error::other("another copy keeps taking its part file"))
}

/// How often a part file is made or taken again when it was renamed away under us.
const PART_TRIES: usize = 8;

/// Whether `dir` still holds `file` under `part`.
fn still_named(dir: &Dir, part: &OsStr, file: &File) -> bool {
    let named = rustix::fs::statat(dir, part, AtFlags::SYMLINK_NOFOLLOW);
    let held = rustix::fs::fstat(file);
    matches!((named, held), (Ok(n), Ok(h)) if (n.st_dev, n.st_ino) == (h.st_dev, h.st_ino))
}

/// This process's umask, when it can be read without changing it (`umask(2)` can only set
/// it, and another thread could make a file meanwhile).
static UMASK: LazyLock<Option<u32>> = LazyLock::new(|| {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
});

/// The mode to make a new part file with: the file's own when the umask leaves it whole
/// (then it needs no `fchmod` before the rename), else only the owner's read and write.
/// The owner can always read and write it, so an earlier part can be resumed.
fn part_mode(entry: &Entry) -> u32 {
    let mode = entry.mode & 0o777;
    match *UMASK {
        Some(umask) if mode & 0o600 == 0o600 && mode & umask == 0 => mode,
        _ => 0o600,
    }
}

/// The whole chunks of an earlier partial copy of `name` in `dir`, hashed: what a resume
/// can keep.
fn partial(dir: &Dir, name: &OsStr, size: u64) -> Option<Box<Resume>> {
    if size <= CHUNK as u64 {
        return None;
    }
    let part = beside(name, "part");
    let mut file = open_part(dir, &part, false).ok()??;
    lock(&file).ok()?;
    // Once locked, still the part file: not one a copy of the same name renamed into place.
    if !still_named(dir, &part, &file) {
        return None;
    }
    let have = file.metadata().ok()?.len().min(size);
    let len = have - have % CHUNK as u64;
    if len == 0 {
        return None;
    }
    let mut hashes = tree::Tree::new();
    let mut bytes = vec![0; CHUNK];
    for offset in (0..len).step_by(CHUNK) {
        file.read_exact(&mut bytes).ok()?;
        hashes.push(tree::chunk_hash(&bytes, offset, size));
    }
    Some(Box::new(Resume {
        dir: dir.clone(),
        len,
        hashes,
        file,
    }))
}

/// Locks a part file for this copy alone. A copy that was just cut off may still be
/// letting go of it (its connection's end takes a moment to be noticed): waits a little.
fn lock(file: &File) -> io::Result<()> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => return Err(io::Error::other("another copy is writing it")),
        }
    }
}

/// What the network hands the writing thread.
enum Piece {
    Start {
        index: usize,
        from: u64,
    },
    Chunk {
        hash: Digest,
        bytes: Vec<u8>,
    },
    End {
        blake3: Digest,
        sha256: Option<Vec<u8>>,
    },
    Abandon(String),
    /// Whole small files, their bytes one after the other.
    Files {
        files: Vec<Whole>,
        bytes: Vec<u8>,
    },
    /// The sender broke the protocol: drop the file being written.
    Discard,
}

/// Reads one batch's data off the network, checking its shape, while a blocking thread
/// checks and stores it; once all of it came, gives back that thread, still storing.
async fn receive_batch<R>(
    reader: &mut R,
    batch: Batch,
    place: &Arc<Placement>,
    options: Receive,
    progress: &Progress,
) -> Result<Storing, TransferError>
where
    R: AsyncRead + Unpin,
{
    // What the network side needs to check the sender's pieces: size and resume point of
    // each file still to come.
    let expected: Vec<Option<(u64, u64)>> = batch
        .entries
        .iter()
        .zip(&batch.slots)
        .map(|(entry, slot)| match slot {
            Slot::Pending { resume, .. } => {
                Some((entry.size(), resume.as_ref().map_or(0, |r| r.len)))
            }
            Slot::Settled(_) => None,
        })
        .collect();
    let (pieces, incoming) = mpsc::channel(WRITE_BEHIND);
    let buffers = Buffers::of(&RECEIVING);
    let writer_buffers = buffers.clone();
    let place = place.clone();
    let writing = tokio::task::spawn_blocking(move || {
        store(batch, &place, options, incoming, &writer_buffers)
    });
    let mut handover = Handover::new();
    let network = async {
        // The file being received: its index and the bytes still due.
        let mut current: Option<(usize, u64)> = None;
        let mut next_index = 0;
        loop {
            let piece = match get(reader).await? {
                Data::File { index, from } => {
                    let index = index as usize;
                    let due = match expected.get(index) {
                        Some(Some((size, resume)))
                            if current.is_none()
                                && index >= next_index
                                && (from == 0 || from == *resume) =>
                        {
                            size - from
                        }
                        _ => return Err(protocol("a file that was not planned, or out of order")),
                    };
                    next_index = index + 1;
                    current = Some((index, due));
                    count(&progress.done, from);
                    Piece::Start { index, from }
                }
                Data::Chunk { len, hash } => {
                    let Some((_, due)) = current.as_mut() else {
                        return Err(protocol("data outside a file"));
                    };
                    let len = u64::from(len);
                    if len == 0 || len != (*due).min(CHUNK as u64) {
                        return Err(protocol(
                            "more bytes than offered, or a chunk of the wrong size",
                        ));
                    }
                    let mut bytes = buffers.take(len as usize);
                    tokio::time::timeout(IDLE, reader.read_exact(&mut bytes))
                        .await
                        .map_err(|_| TransferError::Timeout)?
                        .map_err(super::lost)?;
                    *due -= len;
                    count(&progress.transferred, len);
                    count(&progress.done, len);
                    Piece::Chunk { hash, bytes }
                }
                Data::End { blake3, sha256 } => match current.take() {
                    Some((_, 0)) => Piece::End {
                        blake3,
                        sha256: sha256.map(|s| s.into_vec()),
                    },
                    _ => return Err(protocol("a file ended before its offered size")),
                },
                Data::Files { files } => {
                    let files = Whole::unpack(&files).map_err(|e| protocol(&e.to_string()))?;
                    if current.is_some() {
                        return Err(protocol("packed files inside a file"));
                    }
                    let mut total = 0;
                    for file in &files {
                        let index = file.index as usize;
                        let len = u64::from(file.len);
                        match expected.get(index) {
                            Some(Some((size, 0)))
                                if index >= next_index && *size == len && len <= CHUNK as u64 => {}
                            _ => {
                                return Err(protocol(
                                    "a packed file that was not planned fresh, or out of order",
                                ));
                            }
                        }
                        next_index = index + 1;
                        total += len;
                    }
                    if total > CHUNK as u64 {
                        return Err(protocol("more packed bytes than a chunk"));
                    }
                    let mut bytes = vec![0; total as usize];
                    tokio::time::timeout(IDLE, reader.read_exact(&mut bytes))
                        .await
                        .map_err(|_| TransferError::Timeout)?
                        .map_err(super::lost)?;
                    // Checked here, before anything is written, so that hashing the next
                    // files overlaps with storing the last ones on the writing thread.
                    let mut rest = &bytes[..];
                    for file in &files {
                        let Some((data, after)) = rest.split_at_checked(file.len as usize) else {
                            return Err(protocol("packed files shorter than their table"));
                        };
                        rest = after;
                        if *blake3::hash(data).as_bytes() != file.blake3 {
                            return Err(protocol("a packed file does not match its hash"));
                        }
                    }
                    count(&progress.transferred, total);
                    count(&progress.done, total);
                    Piece::Files { files, bytes }
                }
                Data::Abandon { reason } => match current.take() {
                    Some(_) => Piece::Abandon(transfer::bounded(reason)),
                    None => return Err(protocol("an abandoned file that was not started")),
                },
                Data::Finish if current.is_none() => return Ok(()),
                Data::Error { message } => return Err(TransferError::Peer(message)),
                _ => return Err(protocol("an unexpected message in a batch")),
            };
            let bytes = match &piece {
                Piece::Chunk { bytes, .. } | Piece::Files { bytes, .. } => bytes.len(),
                _ => 0,
            };
            if handover.add(piece, bytes)
                && pieces
                    .send(handover.take_within(&RECEIVING).await)
                    .await
                    .is_err()
            {
                // The writer stopped: its error says why.
                return Ok(());
            }
        }
    };
    let received = network.await;
    // What came before the end (or the failure) is stored: whole files are put in place,
    // and a file cut off keeps its verified part for a resume.
    let _ = pieces.send(handover.take_within(&RECEIVING).await).await;
    if received.as_ref().is_err_and(TransferError::tell_peer) {
        let _ = pieces.send(Handed::alone(Piece::Discard)).await;
    }
    drop(pieces);
    let Err(failed) = received else {
        return Ok(Storing(writing));
    };
    // A failure to store is the real cause when both sides failed.
    Storing::done(writing.await)?;
    Err(failed)
}

fn protocol(what: &str) -> TransferError {
    TransferError::Protocol(what.into())
}

/// A file being written.
struct Open {
    index: usize,
    file: File,
    /// The directory it is in, and its name there.
    dir: Dir,
    part: OsString,
    /// How it is shown.
    shown: PathBuf,
    /// Where this run started: the verified prefix it resumed from.
    from: u64,
    offset: u64,
    size: u64,
    hashes: tree::Tree,
    /// An earlier part file that did not match is written anew from the first chunk on.
    rewrite: bool,
    /// Whether this run wrote to it yet.
    written: bool,
    /// The mode this run made it with, when it made it.
    made_with: Option<u32>,
}

/// Checks and stores the pieces of one batch, on a blocking thread.
fn store(
    batch: Batch,
    place: &Placement,
    options: Receive,
    mut pieces: mpsc::Receiver<Handed<Piece>>,
    buffers: &Buffers,
) -> Result<Stored, TransferError> {
    let mut writer = Writer::new(batch, place, options);
    while let Some(handed) = pieces.blocking_recv() {
        for piece in handed.pieces {
            if let Some(bytes) = writer.apply(piece)? {
                buffers.give(bytes);
            }
        }
    }
    Ok(writer.finish())
}

/// Packed files in one piece worth storing on two threads: making a file is the
/// filesystem's work (ext4 made 10,000 small files in 0.32 s on one thread, 0.19 s on two),
/// and a thread costs tens of microseconds.
const TWO_LANES_FROM: usize = 32;

/// Pieces stored by two threads so far: the tests of the split see that it happened.
#[cfg(test)]
pub(super) static SPLIT_PIECES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// One batch's files as they are written.
struct Writer<'a> {
    place: &'a Placement,
    options: Receive,
    entries: Vec<Entry>,
    slots: Vec<Slot>,
    dirs: Vec<Made>,
    reports: Vec<Option<FileReport>>,
    /// The file whose chunks are coming.
    open: Option<Open>,
}

impl<'a> Writer<'a> {
    fn new(batch: Batch, place: &'a Placement, options: Receive) -> Self {
        let reports = batch.entries.iter().map(|_| None).collect();
        Self {
            place,
            options,
            entries: batch.entries,
            slots: batch.slots,
            dirs: batch.dirs,
            reports,
            open: None,
        }
    }

    /// All of the batch's files, writing one at a time.
    fn lane(&mut self) -> Lane<'_> {
        Lane {
            place: self.place,
            options: self.options,
            entries: &self.entries,
            base: 0,
            slots: &mut self.slots,
            reports: &mut self.reports,
            open: &mut self.open,
            shared: false,
        }
    }

    /// The batch's files before `base` and from `base` on, written at once by two threads;
    /// the second lane's open file is `later_open`.
    fn lanes<'w>(&'w mut self, base: usize, later_open: &'w mut Option<Open>) -> [Lane<'w>; 2] {
        let (slots, later_slots) = self.slots.split_at_mut(base);
        let (reports, later_reports) = self.reports.split_at_mut(base);
        let (place, options, entries) = (self.place, self.options, &self.entries[..]);
        let lane = |base, slots, reports, open| Lane {
            place,
            options,
            entries,
            base,
            slots,
            reports,
            open,
            shared: true,
        };
        [
            lane(0, slots, reports, &mut self.open),
            lane(base, later_slots, later_reports, later_open),
        ]
    }

    /// Applies one piece; gives back a chunk's buffer for reuse.
    fn apply(&mut self, piece: Piece) -> Result<Option<Vec<u8>>, TransferError> {
        match piece {
            Piece::Start { index, from } => self.lane().start(index, from)?,
            Piece::Chunk { hash, bytes } => {
                self.lane().chunk(hash, &bytes)?;
                return Ok(Some(bytes));
            }
            Piece::End { blake3, sha256 } => self.lane().end(blake3, sha256)?,
            Piece::Files { files, bytes } => {
                // The network side read exactly their lengths together.
                let mut rest = &bytes[..];
                let mut packed = Vec::with_capacity(files.len());
                for file in files {
                    let Some((data, after)) = rest.split_at_checked(file.len as usize) else {
                        return Err(protocol("packed files shorter than their table"));
                    };
                    rest = after;
                    packed.push((file, data));
                }
                self.packed(&packed)?;
            }
            Piece::Abandon(reason) => {
                if let Some(done) = self.open.take() {
                    // What an earlier run left stays for the next one, unless this run
                    // already wrote over it.
                    if done.written || done.from == 0 && !done.rewrite {
                        done.remove();
                    }
                    self.slots[done.index] = Slot::Settled(Outcome::Failed { reason });
                }
            }
            Piece::Discard => {
                if let Some(open) = self.open.take() {
                    open.remove();
                }
            }
        }
        Ok(None)
    }

    /// Stores whole files, half of them on a second thread when there are enough. Each file
    /// is written under its part name (`.NAME.loopsy-part`, which no offered file has: see
    /// [`reserved`]) and renamed to its own. Two files can still meet at one part name (a
    /// long name's is a hash, a case-insensitive directory folds names): the two threads
    /// then take it in turn, each only once it holds the lock and the name (`fresh_part`).
    fn packed(&mut self, packed: &[(Whole, &[u8])]) -> Result<(), TransferError> {
        // At the middle: even halves gain more than keeping each directory's files on one
        // thread, though two threads making files in one directory wait on each other's
        // hold of it (split at a change of directory, the halves were uneven, and `cp -r`
        // of 10,000 files in 100 directories gained 5% where this gains 10%).
        let cut = if packed.len() < TWO_LANES_FROM {
            packed.len()
        } else {
            packed.len() / 2
        };
        let (first, second) = packed.split_at(cut);
        let Some((head, _)) = second.first() else {
            return self.lane().whole(first);
        };
        // Indices rise through a piece (the network side checked), so the second lane's
        // files are all past the first lane's.
        let mut none = None;
        let [mut here, mut there] = self.lanes(head.index as usize, &mut none);
        let (stored, helped) = std::thread::scope(|scope| {
            let helper = std::thread::Builder::new()
                .name("loopsy-store".into())
                .spawn_scoped(scope, || there.whole(second));
            #[cfg(test)]
            if helper.is_ok() {
                SPLIT_PIECES.fetch_add(1, Ordering::Relaxed);
            }
            let stored = here.whole(first);
            let helped = helper.ok().map(|helper| {
                helper.join().unwrap_or_else(|_| {
                    Err(TransferError::Destination("a writing thread failed".into()))
                })
            });
            (stored, helped)
        });
        stored?;
        // Without a second thread to be had, this one stores them all.
        helped.unwrap_or_else(|| there.whole(second))
    }

    /// Every entry's outcome. A file still open was cut off by the network: what is written
    /// is verified and stays for a resume.
    fn finish(self) -> Stored {
        let keep = self.place.expect.reports;
        let outcomes: Vec<Outcome> = self
            .slots
            .into_iter()
            .map(|slot| match slot {
                Slot::Settled(outcome) => outcome,
                Slot::Pending { .. } => Outcome::Failed {
                    reason: "its data never came".into(),
                },
            })
            .collect();
        let reports = self
            .entries
            .iter()
            .zip(&outcomes)
            .zip(self.reports)
            .filter_map(|((entry, outcome), report)| {
                let is_file = matches!(entry.kind, Kind::File { .. });
                match report {
                    Some(report) => Some(report),
                    None if keep && is_file || matches!(outcome, Outcome::Failed { .. }) => {
                        Some(FileReport {
                            path: confine::shown(&entry.path),
                            size: entry.size(),
                            blake3: None,
                            sha256: None,
                            resumed: 0,
                            outcome: outcome.clone(),
                        })
                    }
                    None => None,
                }
            })
            .collect();
        Stored {
            outcomes,
            reports,
            dirs: self.dirs,
        }
    }
}

/// Files of a batch written one at a time: all of them, or one thread's share of a piece
/// of packed files (the slots and reports from `base` on, or up to it).
struct Lane<'w> {
    place: &'w Placement,
    options: Receive,
    entries: &'w [Entry],
    /// The batch's index of `slots[0]` and `reports[0]`.
    base: usize,
    slots: &'w mut [Slot],
    reports: &'w mut [Option<FileReport>],
    open: &'w mut Option<Open>,
    /// Whether another lane writes beside this one (see [`fresh_part`]).
    shared: bool,
}

impl Lane<'_> {
    fn slot(&mut self, index: usize) -> &mut Slot {
        &mut self.slots[index - self.base]
    }

    /// Whole files, each as if it came on its own, its one chunk (none when empty) checked
    /// against its hash already.
    fn whole(&mut self, files: &[(Whole, &[u8])]) -> Result<(), TransferError> {
        for (file, data) in files {
            self.start(file.index as usize, 0)?;
            if !data.is_empty() {
                self.write(file.blake3, data)?;
            }
            self.end(file.blake3, None)?;
        }
        Ok(())
    }

    fn start(&mut self, index: usize, from: u64) -> Result<(), TransferError> {
        let Slot::Pending { rel, resume } = &mut self.slots[index - self.base] else {
            return Ok(());
        };
        let (parent, name) = split(rel);
        let part = beside(name, "part");
        let (shown, dir) = {
            let mut dirs = self.place.dirs();
            let shown = dirs.shown(parent).join(&part);
            match resume.as_ref() {
                Some(resume) => (shown, Ok(resume.dir.clone())),
                None => (shown, dirs.dir(parent)?),
            }
        };
        let opened = dir.and_then(|dir| match resume.take() {
            // The part file hashed when planning, still locked: go on after its verified
            // prefix (dropping a torn tail), or, when the sender's file differs, write it
            // anew, but only once data comes, so a file that never comes keeps it.
            Some(resume) => {
                let Resume {
                    len,
                    hashes,
                    mut file,
                    ..
                } = *resume;
                let resumed = from == len;
                if resumed {
                    file.set_len(from)?;
                }
                file.seek(SeekFrom::Start(from))?;
                let hashes = if resumed { hashes } else { tree::Tree::new() };
                Ok((dir, file, hashes, !resumed, None))
            }
            None => {
                let mode = part_mode(&self.entries[index]);
                let (file, made) = fresh_part(&dir, &part, mode, self.shared)?;
                Ok((dir, file, tree::Tree::new(), false, made.then_some(mode)))
            }
        });
        match opened {
            Ok((dir, file, hashes, rewrite, made_with)) => {
                *self.open = Some(Open {
                    made_with,
                    index,
                    file,
                    dir,
                    part,
                    shown,
                    from,
                    offset: from,
                    size: self.entries[index].size(),
                    hashes,
                    rewrite,
                    written: false,
                });
            }
            // This file cannot be written (its directory is read-only, say); the others can.
            Err(e) => {
                let reason = format!("cannot write {}: {e}", shown.display());
                *self.slot(index) = Slot::Settled(Outcome::Failed { reason });
            }
        }
        Ok(())
    }

    fn chunk(&mut self, hash: Digest, bytes: &[u8]) -> Result<(), TransferError> {
        let Some(at) = self.open.as_mut() else {
            return Ok(());
        };
        if tree::chunk_hash(bytes, at.offset, at.size) != hash {
            let offset = at.offset;
            return Err(discard(self.open.take(), |part| {
                TransferError::Protocol(format!(
                    "the chunk at byte {offset} of {part} does not match its hash"
                ))
            }));
        }
        self.write(hash, bytes)
    }

    /// Writes a chunk already checked against its `hash`.
    fn write(&mut self, hash: Digest, bytes: &[u8]) -> Result<(), TransferError> {
        let Some(at) = self.open.as_mut() else {
            return Ok(());
        };
        if at.rewrite
            && !at.written
            && let Err(e) = at.file.set_len(0)
        {
            return Err(discard(self.open.take(), |part| TransferError::Io {
                path: part.to_owned(),
                source: e,
            }));
        }
        at.written = true;
        if let Err(e) = at.file.write_all(bytes) {
            return Err(discard(self.open.take(), |part| TransferError::Io {
                path: part.to_owned(),
                source: e,
            }));
        }
        at.hashes.push(hash);
        at.offset += bytes.len() as u64;
        Ok(())
    }

    /// Checks the whole file, and renames it into place with its mode and time.
    fn end(&mut self, blake3: Digest, sha256: Option<Vec<u8>>) -> Result<(), TransferError> {
        let Some(mut done) = self.open.take() else {
            return Ok(());
        };
        let index = done.index;
        let entry = &self.entries[index];
        let Slot::Pending { rel, .. } = &self.slots[index - self.base] else {
            return Ok(());
        };
        let name = split(rel).1;
        let root = std::mem::take(&mut done.hashes).root();
        if root != blake3 {
            return Err(discard(Some(done), |part| {
                TransferError::Protocol(format!("{part} does not match the file's BLAKE3 hash"))
            }));
        }
        // Written from its start (or from a prefix cut to length), the file is already
        // `offset` long; only an old part file that no data replaced needs cutting. On ext4 a
        // truncate to the same length is no no-op: it puts the inode on the orphan list and
        // takes it off again, a journaled change per file.
        let trim = done.rewrite && !done.written;
        let placed = (if trim {
            done.file.set_len(done.offset)
        } else {
            Ok(())
        })
        .and_then(|()| finish(&done.file, entry, done.made_with, self.options))
        .and_then(|()| {
            Ok(rustix::fs::renameat(
                &done.dir, &done.part, &done.dir, name,
            )?)
        });
        if let Err(e) = placed {
            // This file could not be put in place; the others may still be.
            let shown = done.shown.with_file_name(name);
            done.remove();
            let reason = format!("cannot put {} in place: {e}", shown.display());
            *self.slot(index) = Slot::Settled(Outcome::Failed { reason });
            return Ok(());
        }
        // A serving device only counts what failed: no report is made for the rest.
        if !self.place.expect.reports {
            *self.slot(index) = Slot::Settled(Outcome::Stored);
            return Ok(());
        }
        self.reports[index - self.base] = Some(FileReport {
            path: confine::shown(&entry.path),
            size: entry.size(),
            blake3: Some(root),
            sha256,
            resumed: done.from,
            outcome: Outcome::Stored,
        });
        *self.slot(index) = Slot::Settled(Outcome::Stored);
        Ok(())
    }
}

/// Removes a partial file that must not be resumed from, and says why.
fn discard(open: Option<Open>, error: impl FnOnce(&str) -> TransferError) -> TransferError {
    let Some(open) = open else {
        return error("a file");
    };
    open.remove();
    error(&format!("{} (removed)", open.shown.display()))
}

impl Open {
    /// Removes the part file.
    fn remove(&self) {
        let _ = rustix::fs::unlinkat(&self.dir, &self.part, AtFlags::empty());
    }
}

/// The file's mode (unless it was made with it) and time, and a flush to disk when asked
/// for.
fn finish(file: &File, entry: &Entry, made_with: Option<u32>, options: Receive) -> io::Result<()> {
    if options.fsync {
        file.sync_all()?;
    }
    let mode = entry.mode & 0o777;
    if made_with != Some(mode) {
        file.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    if let Some(time) = mtime(entry) {
        file.set_modified(time)?;
    }
    Ok(())
}

fn mtime(entry: &Entry) -> Option<SystemTime> {
    let nanos = Duration::from_nanos(u64::from(entry.mtime_nsec.min(999_999_999)));
    if entry.mtime >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(entry.mtime as u64) + nanos)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(entry.mtime.unsigned_abs()))?
            .checked_add(nanos)
    }
}
