//! A private directory for files on their way to or from a peer: `read_file` fetches into
//! one, `write_file` stages there. Removed, with what is in it, when dropped.

use std::{
    fs,
    io::{self, Read, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use loopsy_wire::control::Location;

pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Makes a new directory, readable by this user only, under `parent` (in the node's
    /// home, which the node surely sees: a service's private /tmp would hide /tmp).
    pub fn new(parent: &Path) -> io::Result<Self> {
        static MADE: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "loopsy-mcp-{}-{}-{nanos}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        );
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(parent)?;
        let dir = parent.join(name);
        // Fails on anything already there, a planted symlink included.
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(Self { dir })
    }

    /// The directory, as a copy's destination on this device.
    pub fn location(&self) -> Location {
        Location {
            peer: None,
            path: self.dir.to_string_lossy().into_owned(),
        }
    }

    /// The first `limit` bytes of the one file a copy put here, and its whole size.
    pub fn read_only_file(&self, limit: usize) -> io::Result<(Vec<u8>, u64)> {
        let mut entries = fs::read_dir(&self.dir)?;
        let Some(entry) = entries.next().transpose()? else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no file arrived"));
        };
        // A symlink arrives as a link: following it here would read this device's file.
        if !entry.file_type()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is not a regular file there (a symlink? read its target)",
            ));
        }
        let file = fs::File::open(entry.path())?;
        let size = file.metadata()?.len();
        let mut bytes = Vec::new();
        file.take(limit as u64).read_to_end(&mut bytes)?;
        Ok((bytes, size))
    }

    /// Writes `bytes` under the last part of `dest` (the name the file gets there), with
    /// `mode` (which the copy keeps), as a copy's source on this device.
    pub fn write_file(&self, dest: &str, bytes: &[u8], mode: u32) -> io::Result<Location> {
        let name = Path::new(dest)
            .file_name()
            .map_or_else(|| "file".into(), |n| n.to_owned());
        let path = self.dir.join(name);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)?;
        file.write_all(bytes)?;
        // The umask may have taken bits away.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        Ok(Location {
            peer: None,
            path: path.to_string_lossy().into_owned(),
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_reads_and_cleans_up() {
        let parent = std::env::temp_dir().join(format!("scratch-test-{}", std::process::id()));
        let scratch = Scratch::new(&parent).expect("scratch");
        let dir = scratch.dir.clone();
        let staged = scratch
            .write_file("notes/today.txt", b"hello", 0o750)
            .expect("write");
        assert!(staged.path.ends_with("/today.txt"));
        let mode = fs::metadata(&staged.path)
            .expect("staged")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750);
        assert_eq!(
            scratch.read_only_file(3).expect("read"),
            (b"hel".to_vec(), 5)
        );
        drop(scratch);
        assert!(!dir.exists());
        let _ = fs::remove_dir(&parent);
    }

    #[test]
    fn a_link_that_arrived_is_not_followed() {
        let parent = std::env::temp_dir().join(format!("scratch-link-{}", std::process::id()));
        let scratch = Scratch::new(&parent).expect("scratch");
        std::os::unix::fs::symlink("/etc/hostname", scratch.dir.join("link")).expect("link");
        let error = scratch.read_only_file(10).expect_err("a link is refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        drop(scratch);
        let _ = fs::remove_dir(&parent);
    }
}
