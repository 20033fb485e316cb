//! Loopsy homes stay out of reach: whatever the file roots say, a peer reads and writes no
//! node's state directory (its key, trust store, config), neither this node's own nor any
//! other on the machine (another node's, a relay's). With the key a peer would be this
//! device to the whole mesh; with the trust store or the config it would grant itself more.
//!
//! A directory is a home when it is this node's own (the same directory, however it is
//! reached) or when [`crate::home::is_home`] says so (its marker or a key). Checks go by
//! real paths: a path a peer names is checked once, with every directory above it, after
//! every link is resolved; below it, each directory a walk or a placement meets is checked
//! once (a placement looks inside the open directory itself, [`Homes::is_home_at`]), so a
//! tree of many small files costs a check per directory, not per file.

use std::{
    fs::{self, Metadata},
    io,
    os::{fd::BorrowedFd, unix::fs::MetadataExt},
    path::Path,
};

use rustix::{fs::AtFlags, io::Errno};

use super::confine::Escape;
use crate::home::{IDENTITY_KEY, MARKER};

/// The homes a node keeps from its peers.
#[derive(Debug, Clone, Default)]
pub struct Homes {
    /// This node's own home (device, inode): known even if its marker and key were gone.
    own: Option<(u64, u64)>,
}

impl Homes {
    /// The homes, for the node whose own home is `own`.
    pub fn new(own: &Path) -> Self {
        Self {
            own: fs::metadata(own).ok().map(|m| (m.dev(), m.ino())),
        }
    }

    /// Whether the directory `dir`, whose metadata is `meta`, is a home.
    pub fn is_home(&self, dir: &Path, meta: &Metadata) -> io::Result<bool> {
        if self.own == Some((meta.dev(), meta.ino())) {
            return Ok(true);
        }
        crate::home::is_home(dir)
    }

    /// Whether the open directory `dir`, whose (device, inode) is `id`, is a home: what
    /// [`Homes::is_home`] says, looked up inside that very directory.
    pub fn is_home_at(&self, dir: BorrowedFd<'_>, id: (u64, u64)) -> io::Result<bool> {
        if self.own == Some(id) {
            return Ok(true);
        }
        for name in [MARKER, IDENTITY_KEY] {
            match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(_) => return Ok(true),
                Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Refuses `real` (a path with every link resolved, there or about to be made) when it
    /// or a directory above it is a home.
    pub fn outside(&self, real: &Path) -> Result<(), Escape> {
        for dir in real.ancestors() {
            let meta = match fs::metadata(dir) {
                Ok(meta) if meta.is_dir() => meta,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(cannot_check(real, e)),
            };
            if self
                .is_home(dir, &meta)
                .map_err(|e| cannot_check(real, e))?
            {
                return Err(Escape::Home {
                    path: real.display().to_string(),
                    home: dir.display().to_string(),
                });
            }
        }
        Ok(())
    }
}

fn cannot_check(path: &Path, e: io::Error) -> Escape {
    Escape::Io {
        path: path.display().to_string(),
        reason: super::words::io(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn own_home_marked_homes_and_keyed_homes_are_all_homes() {
        let dir = std::env::temp_dir().join(format!("loopsy-homes-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for sub in ["own", "marked", "relay", "plain/deeper"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        fs::write(dir.join("marked").join(MARKER), "").unwrap();
        fs::write(dir.join("relay").join(IDENTITY_KEY), "").unwrap();
        let homes = Homes::new(&dir.join("own"));
        let real = dir.canonicalize().unwrap();
        for home in ["own", "marked", "relay"] {
            for path in [home.to_owned(), format!("{home}/new/file")] {
                let err = homes.outside(&real.join(&path)).unwrap_err();
                assert!(matches!(err, Escape::Home { .. }), "{path}: {err}");
            }
        }
        homes.outside(&real.join("plain/deeper/file")).unwrap();
        // Without knowing it, the own home (unmarked) is a plain directory.
        Homes::default().outside(&real.join("own/file")).unwrap();

        let id = |p: &str| {
            let meta = fs::symlink_metadata(dir.join(p)).unwrap();
            (meta.dev(), meta.ino())
        };
        let at = |p: &str| fs::File::open(dir.join(p)).unwrap();
        for home in ["own", "marked", "relay"] {
            assert!(
                homes.is_home_at(at(home).as_fd(), id(home)).unwrap(),
                "{home}"
            );
        }
        assert!(!homes.is_home_at(at("plain").as_fd(), id("plain")).unwrap());
        fs::remove_dir_all(dir).ok();
    }
}
