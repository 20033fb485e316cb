//! Small file-system helpers shared by the state files.
//!
//! A state file (`ctx.cbor`, `registry.cbor`, `messages.cbor`, `inbox.json`,
//! `sessions.json`, `trust.toml`) is a [`StateFile`]: every write goes to a temporary file of
//! its own (process ID, counter and random bits in its name), is synced, and is renamed over
//! the file, after the file in place was kept as `NAME.prev`; then the directory is synced,
//! so the rename itself survives a power loss. Writes of one file are serialised, and each
//! carries a generation number taken under the lock of the state it snapshots: a snapshot
//! older than the one on disk is never written. Loading falls back to `NAME.prev`, with a
//! warning, when the file does not parse (a torn or damaged write), and moves the damaged
//! file aside as `NAME.corrupt` rather than deleting it.

use std::{
    ffi::OsStr,
    fs,
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

/// Temporary names handed out by this process.
static TEMPORARIES: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` atomically (temporary file, fsync, rename, fsync of the
/// directory), with `mode` from the first byte: a crash leaves the old file or the new one,
/// never half of either.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace(path, bytes, mode, false)
}

/// `NAME.suffix` beside `path`.
fn sibling(path: &Path, suffix: &str) -> io::Result<PathBuf> {
    let mut name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_owned();
    name.push(suffix);
    Ok(path.with_file_name(name))
}

/// A temporary name beside `path` that no other writer, in this process or another, uses:
/// `NAME.tmp.PID.COUNTER.RANDOM`.
fn temporary(path: &Path, kind: &str) -> io::Result<PathBuf> {
    let mut random = [0u8; 4];
    let _ = getrandom::fill(&mut random);
    sibling(
        path,
        &format!(
            ".{kind}.{}.{}.{:08x}",
            std::process::id(),
            TEMPORARIES.fetch_add(1, Ordering::Relaxed),
            u32::from_le_bytes(random)
        ),
    )
}

/// Syncs the directory that holds `path`, so that a rename in it is durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match fs::File::open(dir).and_then(|d| d.sync_all()) {
        // Some file systems cannot sync a directory; nothing more can be done there.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Writes `bytes` over `path` as described in the module's documentation, keeping the file
/// in place as `NAME.prev` first when `keep_previous`.
fn replace(path: &Path, bytes: &[u8], mode: u32, keep_previous: bool) -> io::Result<()> {
    let tmp = temporary(path, "tmp")?;
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        if keep_previous {
            keep_as_previous(path)?;
        }
        fs::rename(&tmp, path)?;
        sync_dir(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes `NAME.prev` the file now at `path` (if there is one), with `path` in place all the
/// while: a hard link under a temporary name, renamed over the previous `NAME.prev`. Where
/// hard links are not supported, a synced copy.
fn keep_as_previous(path: &Path) -> io::Result<()> {
    let prev = sibling(path, ".prev")?;
    let tmp = temporary(path, "prev-tmp")?;
    let linked = match fs::hard_link(path, &tmp) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => fs::copy(path, &tmp)
            .and_then(|_| fs::OpenOptions::new().write(true).open(&tmp))
            .and_then(|f| f.sync_all()),
    };
    let result = linked.and_then(|()| fs::rename(&tmp, &prev));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// One state file of the home: serialised, ordered writes that keep the previous copy, and a
/// load that falls back to it.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    mode: u32,
    /// The last generation handed out.
    issued: AtomicU64,
    /// The newest snapshot not yet written, if any: a writer that waits for the file takes
    /// whatever is newest by then, so a burst of writes ends in a few.
    pending: Mutex<Option<(u64, Vec<u8>)>>,
    /// The generation on disk; held while writing.
    written: Mutex<u64>,
}

impl StateFile {
    pub fn new(path: PathBuf, mode: u32) -> Self {
        Self {
            path,
            mode,
            issued: AtomicU64::new(0),
            pending: Mutex::new(None),
            written: Mutex::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A generation for a snapshot: take it under the lock that guards the state being
    /// snapshotted, so that generations follow the order of the states.
    pub fn generation(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn pending(&self) -> MutexGuard<'_, Option<(u64, Vec<u8>)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the snapshot `bytes` of `generation`, unless a newer one is written first; on
    /// return, the file holds this snapshot or a newer one (or the error says why not).
    pub fn write(&self, generation: u64, bytes: Vec<u8>) -> io::Result<()> {
        {
            let mut pending = self.pending();
            if pending.as_ref().is_none_or(|(g, _)| *g < generation) {
                *pending = Some((generation, bytes));
            }
        }
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if *written >= generation {
            let mut pending = self.pending();
            if pending.as_ref().is_some_and(|(g, _)| *g <= *written) {
                // Deposited late by a writer older than the file: never to be written.
                *pending = None;
            }
            return Ok(());
        }
        let Some((newest, bytes)) = self.pending().take() else {
            // Taken by a writer that failed (and said so to its own caller).
            return Ok(());
        };
        if newest <= *written {
            return Ok(());
        }
        match replace(&self.path, &bytes, self.mode, true) {
            Ok(()) => {
                *written = newest;
                Ok(())
            }
            Err(error) => {
                // Left for the next writer to try again, unless it has a newer one.
                self.pending().get_or_insert((newest, bytes));
                Err(error)
            }
        }
    }

    /// Reads the file with `parse`: `None` when there is none. A file that does not parse is
    /// replaced by its previous copy when that one does (with a warning; the damaged file
    /// is kept as `NAME.corrupt`), and is an error naming both otherwise. Temporary files
    /// left by a writer that died are removed.
    pub fn load<T, E: std::fmt::Display>(
        &self,
        parse: impl Fn(&[u8]) -> Result<T, E>,
    ) -> io::Result<Option<T>> {
        self.remove_leftovers();
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let error = match parse(&bytes) {
            Ok(value) => return Ok(Some(value)),
            Err(error) => error.to_string(),
        };
        let prev = sibling(&self.path, ".prev")?;
        let previous = match fs::read(&prev) {
            Ok(bytes) => {
                parse(&bytes).map_err(|e| format!("{} does not parse either: {e}", prev.display()))
            }
            Err(e) => Err(format!("no previous copy {}: {e}", prev.display())),
        };
        match previous {
            Ok(value) => {
                let corrupt = sibling(&self.path, ".corrupt")?;
                tracing::warn!(
                    file = %self.path.display(),
                    %error,
                    "the file does not parse (a write was cut, or it was damaged): using its \
                     previous copy {}; the damaged file is kept as {}",
                    prev.display(),
                    corrupt.display()
                );
                // Out of the way, so that the next write keeps the good previous copy.
                fs::rename(&self.path, &corrupt)
                    .and_then(|()| sync_dir(&self.path))
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("cannot move {} aside: {e}", self.path.display()),
                        )
                    })?;
                Ok(Some(value))
            }
            Err(previous) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {error}; {previous}", self.path.display()),
            )),
        }
    }

    /// Removes `NAME.tmp.*` and `NAME.prev-tmp.*` files of processes that are gone.
    fn remove_leftovers(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let Ok(entries) = fs::read_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) else {
            return;
        };
        for entry in entries.flatten() {
            if let Some(pid) = leftover_pid(name, &entry.file_name())
                && !alive(pid)
            {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The writer's process ID, if `file` is one of `name`'s temporary files.
fn leftover_pid(name: &OsStr, file: &OsStr) -> Option<u32> {
    let (name, file) = (name.to_str()?, file.to_str()?);
    let rest = file.strip_prefix(name)?;
    let rest = rest
        .strip_prefix(".tmp.")
        .or_else(|| rest.strip_prefix(".prev-tmp."))?;
    rest.split('.').next()?.parse().ok()
}

fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    // Permission denied means it is there (another user's).
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// Runs `work`, which blocks (writes and syncs a file, checks many signatures), without
/// stalling the async runtime: on a worker of a multi-threaded runtime, the worker's other
/// tasks move to another thread meanwhile; anywhere else it just runs.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "loopsy-fsutil-{tag}-{}-{}",
            std::process::id(),
            TEMPORARIES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_content_with_the_given_mode() {
        let dir = temp_dir("mode");
        let path = dir.join("f.toml");
        write_atomic(&path, b"one", 0o600).expect("write");
        write_atomic(&path, b"two", 0o600).expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(names(&dir), ["f.toml"], "no temporary file left");
        fs::remove_dir_all(dir).ok();
    }

    fn utf8(bytes: &[u8]) -> Result<String, String> {
        let text = String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())?;
        text.ends_with('.')
            .then_some(text.clone())
            .ok_or_else(|| format!("`{text}` is cut"))
    }

    #[test]
    fn a_state_file_keeps_its_previous_copy_and_falls_back_to_it() {
        let dir = temp_dir("prev");
        let path = dir.join("s.json");
        let file = StateFile::new(path.clone(), 0o600);
        assert_eq!(file.load(utf8).expect("none"), None);
        file.write(file.generation(), b"one.".to_vec())
            .expect("one");
        file.write(file.generation(), b"two.".to_vec())
            .expect("two");
        assert_eq!(names(&dir), ["s.json", "s.json.prev"]);
        assert_eq!(fs::read(dir.join("s.json.prev")).expect("prev"), b"one.");
        let mode = fs::metadata(dir.join("s.json.prev"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // A write cut in the middle, by a process that is gone (PID 0 is never one), and a
        // damaged file in place.
        fs::write(dir.join("s.json.tmp.0.7.00000000"), b"thr").expect("leftover");
        fs::write(&path, b"tw").expect("torn");
        let again = StateFile::new(path.clone(), 0o600);
        assert_eq!(
            again.load(utf8).expect("falls back").as_deref(),
            Some("one.")
        );
        assert_eq!(
            names(&dir),
            ["s.json.corrupt", "s.json.prev"],
            "the damaged file aside, the leftover gone"
        );
        // The next write keeps the good copy as the previous one.
        again
            .write(again.generation(), b"three.".to_vec())
            .expect("three");
        assert_eq!(fs::read(dir.join("s.json.prev")).expect("prev"), b"one.");
        assert_eq!(again.load(utf8).expect("load").as_deref(), Some("three."));

        // Both damaged: an error that names both, and nothing moved.
        fs::write(&path, b"x").expect("torn");
        fs::write(dir.join("s.json.prev"), b"y").expect("torn");
        let error = again.load(utf8).expect_err("nothing good");
        assert!(error.to_string().contains("s.json.prev"), "{error}");
        assert!(path.exists());
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        let dir = temp_dir("order");
        let file = StateFile::new(dir.join("s"), 0o600);
        let (old, new) = (file.generation(), file.generation());
        file.write(new, b"new.".to_vec()).expect("new");
        file.write(old, b"old.".to_vec()).expect("old");
        assert_eq!(file.load(utf8).expect("load").as_deref(), Some("new."));
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn writes_from_many_threads_leave_the_newest_whole() {
        let dir = temp_dir("threads");
        let file = StateFile::new(dir.join("s"), 0o600);
        let state = Mutex::new(0u64);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..25 {
                        let (generation, bytes) = {
                            let mut n = state.lock().unwrap();
                            *n += 1;
                            // Big enough that writes overlap.
                            (file.generation(), format!("{}{n}.", "x".repeat(64 * 1024)))
                        };
                        file.write(generation, bytes.into_bytes()).expect("write");
                    }
                });
            }
        });
        let text = file.load(utf8).expect("load").expect("there");
        assert!(text.ends_with("x200."), "the last state, whole");
        assert_eq!(names(&dir), ["s", "s.prev"]);
        fs::remove_dir_all(dir).ok();
    }
}
