//! Where a copy writes: through directory descriptors, never by path. The destination is
//! opened once (a write root as configured, or the directory the user named, links and
//! all); everything below it, the destination's own name included, is reached one
//! component at a time with `openat(O_DIRECTORY | O_NOFOLLOW)` from the directory above,
//! so a link met on the way refuses the copy, and nothing planted or swapped in between a
//! check and a write can lead elsewhere: the write goes where the check looked. (Each step
//! names one plain component, no `/` and no `..`, which is what `openat2`'s
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` would enforce; stepping one at a time also lets
//! each directory be checked for a Loopsy home, and is the same on every Unix.)
//!
//! The directories along the last path stay open, so a tree of many small files costs a
//! lookup per directory, not a walk per file.

use std::{
    collections::HashSet,
    ffi::{OsStr, OsString},
    fs::File,
    io,
    os::fd::{AsFd, OwnedFd},
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use rustix::{
    fs::{AtFlags, FileType, Mode, OFlags, Stat},
    io::Errno,
};

use super::{confine::Escape, homes::Homes};

/// An open directory.
pub type Dir = Arc<OwnedFd>;

/// Directories held open along the last path; deeper ones are held one at a time.
const HELD: usize = 64;

/// How directories are opened to look up and create names in them: `O_PATH` where there
/// is one (no read permission needed, nothing read).
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEARCH: OFlags = OFlags::PATH;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEARCH: OFlags = OFlags::RDONLY;

/// Where a copy is received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    /// Opened as it is named, links followed: a write root, or the directory the user
    /// named (or the one holding what the user named).
    pub from: PathBuf,
    /// Below `from`, reached without following any link: directories, then the
    /// destination (empty: `from` itself).
    pub below: PathBuf,
    /// Named with a trailing `/`: as with `cp` and `scp`, the destination must be a
    /// directory that exists, never a new name.
    pub dir: bool,
}

impl Dest {
    /// A destination the user named on this device: the user's own path, links and all
    /// (a link to a directory copies into it), down to the destination itself.
    pub fn local(path: PathBuf) -> Self {
        let dir = names_a_directory(&path);
        match path.file_name() {
            Some(name) if !path.is_dir() => {
                let from = match path.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                    Some(_) => PathBuf::from("."),
                    None => PathBuf::from("/"),
                };
                Self {
                    below: PathBuf::from(name),
                    from,
                    dir,
                }
            }
            _ => Self {
                from: path,
                below: PathBuf::new(),
                dir,
            },
        }
    }

    /// Where it is, for messages (with the `/` it was named with).
    pub fn shown(&self) -> PathBuf {
        let shown = self.from.join(&self.below);
        if self.dir && !names_a_directory(&shown) {
            return shown.join("");
        }
        shown
    }
}

/// Whether a path ends in `/` (or `/.`), which makes it a directory's name alone.
pub fn names_a_directory(path: &Path) -> bool {
    let bytes = path.as_os_str().as_encoded_bytes();
    bytes.ends_with(b"/") || bytes.ends_with(b"/.")
}

/// The directories below a base directory, reached without following links and kept out
/// of every Loopsy home.
#[derive(Debug)]
pub struct Dirs {
    base: Dir,
    shown: PathBuf,
    homes: Homes,
    /// Directories found not to be homes (device, inode): each is checked once per copy.
    clear: HashSet<(u64, u64)>,
    /// The directories along the last path, by name below `base`: open for the first
    /// [`HELD`] levels and the deepest.
    open: Vec<(OsString, Option<Dir>)>,
}

impl Dirs {
    /// Opens `path` as it is named (links followed): the base, which is not checked.
    pub fn open(path: &Path, homes: Homes) -> io::Result<Self> {
        let base = rustix::fs::open(
            path,
            SEARCH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            base: Arc::new(base),
            shown: path.to_path_buf(),
            homes,
            clear: HashSet::new(),
            open: Vec::new(),
        })
    }

    /// The directory `rel`, opened with [`Dirs::dir`], as the new base.
    pub fn rebase(mut self, rel: &Path, dir: Dir) -> Self {
        self.base = dir;
        self.shown.push(rel);
        self.open.clear();
        self
    }

    /// `rel` below the base, for messages.
    pub fn shown(&self, rel: &Path) -> PathBuf {
        self.shown.join(rel)
    }

    /// The directory `rel` below the base (the base itself when empty): every component a
    /// real directory, entered without following a link, and none a home. `Err` refuses the
    /// copy; `Ok(Err)` is a failure of what was to go there alone (a directory missing, a
    /// file in the way, no permission).
    pub fn dir(&mut self, rel: &Path) -> Result<io::Result<Dir>, Escape> {
        let held = self
            .open
            .iter()
            .zip(rel.components())
            .take_while(|((name, _), part)| name.as_os_str() == part.as_os_str())
            .count();
        self.open.truncate(held);
        while self.open.last().is_some_and(|(_, dir)| dir.is_none()) {
            self.open.pop();
        }
        let mut at = match self.open.last() {
            Some((_, Some(dir))) => dir.clone(),
            _ => self.base.clone(),
        };
        for (depth, part) in rel.components().enumerate().skip(self.open.len()) {
            let Component::Normal(name) = part else {
                return Err(Escape::Malformed(rel.display().to_string()));
            };
            let opened = rustix::fs::openat(
                &at,
                name,
                SEARCH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            );
            let dir = match opened {
                Ok(dir) => dir,
                Err(e) => return self.not_entered(&at, name, rel, depth, e),
            };
            let stat = match rustix::fs::fstat(&dir) {
                Ok(stat) => stat,
                Err(e) => return Ok(Err(e.into())),
            };
            self.check(&dir, &stat, rel, depth)?;
            let dir = Arc::new(dir);
            if self.open.len() > HELD
                && let Some(deepest) = self.open.last_mut()
            {
                deepest.1 = None;
            }
            self.open.push((name.to_owned(), Some(dir.clone())));
            at = dir;
        }
        Ok(Ok(at))
    }

    /// The directory `rel` itself, open to set its mode and time: never through a link,
    /// never a home.
    pub fn finish(&mut self, rel: &Path) -> Result<io::Result<File>, Escape> {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Ok(Err(io::ErrorKind::InvalidInput.into()));
        };
        let parent = match self.dir(parent)? {
            Ok(parent) => parent,
            Err(e) => return Ok(Err(e)),
        };
        let opened = rustix::fs::openat(
            &parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|dir| rustix::fs::fstat(&dir).map(|stat| (dir, stat)));
        match opened {
            Ok((dir, stat)) => {
                let depth = rel.components().count() - 1;
                self.check(&dir, &stat, rel, depth)?;
                Ok(Ok(File::from(dir)))
            }
            Err(e) => Ok(Err(e.into())),
        }
    }

    /// Why `name` in `at` could not be entered: a link refuses the copy.
    fn not_entered(
        &self,
        at: &Dir,
        name: &OsStr,
        rel: &Path,
        depth: usize,
        e: Errno,
    ) -> Result<io::Result<Dir>, Escape> {
        let link = matches!(e, Errno::NOTDIR | Errno::LOOP)
            && rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink);
        if link {
            return Err(Escape::Symlink {
                path: rel.display().to_string(),
                link: self.upto(rel, depth).display().to_string(),
            });
        }
        Ok(Err(e.into()))
    }

    /// Refuses the directory at `depth` of `rel` when it is a home.
    fn check(
        &mut self,
        dir: &OwnedFd,
        stat: &Stat,
        rel: &Path,
        depth: usize,
    ) -> Result<(), Escape> {
        let id = id(stat);
        if self.clear.contains(&id) {
            return Ok(());
        }
        match self.homes.is_home_at(dir.as_fd(), id) {
            Ok(false) => {
                self.clear.insert(id);
                Ok(())
            }
            Ok(true) => Err(Escape::Home {
                path: rel.display().to_string(),
                home: self.upto(rel, depth).display().to_string(),
            }),
            Err(e) => Err(Escape::Io {
                path: rel.display().to_string(),
                reason: super::words::io(&e),
            }),
        }
    }

    /// The first `depth + 1` components of `rel`, below the base, for messages.
    fn upto(&self, rel: &Path, depth: usize) -> PathBuf {
        let mut shown = self.shown.clone();
        shown.extend(rel.components().take(depth + 1));
        shown
    }
}

/// A file's (device, inode).
#[allow(clippy::unnecessary_cast)] // Their types differ between systems.
pub fn id(stat: &Stat) -> (u64, u64) {
    (stat.st_dev as u64, stat.st_ino as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{fs, os::unix::fs::symlink};

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loopsy-dirs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn open(dir: &Path, homes: Homes) -> Dirs {
        Dirs::open(dir, homes).unwrap()
    }

    #[test]
    fn no_component_is_entered_through_a_link() {
        let root = temp("links");
        let outside = temp("links-out");
        fs::create_dir_all(root.join("real/deeper")).unwrap();
        fs::write(root.join("file"), "").unwrap();
        symlink(&outside, root.join("link")).unwrap();
        symlink(&outside, root.join("real/link")).unwrap();
        let mut dirs = open(&root, Homes::default());
        assert!(dirs.dir(Path::new("")).unwrap().is_ok(), "the base");
        assert!(dirs.dir(Path::new("real/deeper")).unwrap().is_ok());
        for rel in ["link", "link/x", "real/link", "real/link/x"] {
            let err = dirs.dir(Path::new(rel)).unwrap_err();
            assert!(matches!(err, Escape::Symlink { .. }), "{rel}: {err}");
        }
        // Not there, or not a directory: that entry fails, the copy goes on.
        for rel in ["real/missing", "file", "file/x"] {
            assert!(dirs.dir(Path::new(rel)).unwrap().is_err(), "{rel}");
        }
        // A link swapped in for a directory held open is found when the path is walked
        // again, not followed.
        assert!(dirs.dir(Path::new("real/deeper")).unwrap().is_ok());
        fs::rename(root.join("real"), root.join("moved")).unwrap();
        symlink(&outside, root.join("real")).unwrap();
        assert!(dirs.dir(Path::new("other")).unwrap().is_err());
        let err = dirs.dir(Path::new("real/deeper")).unwrap_err();
        assert!(matches!(err, Escape::Symlink { .. }), "{err}");
        fs::remove_dir_all(root).ok();
        fs::remove_dir_all(outside).ok();
    }

    #[test]
    fn deep_trees_hold_a_bounded_number_of_directories() {
        let root = temp("deep");
        let deep: PathBuf = (0..HELD * 2).map(|i| format!("d{i}")).collect();
        fs::create_dir_all(root.join(&deep)).unwrap();
        let mut dirs = open(&root, Homes::default());
        let at = dirs.dir(&deep).unwrap().unwrap();
        let held = dirs.open.iter().filter(|(_, dir)| dir.is_some()).count();
        assert_eq!(held, HELD + 1);
        // The deepest is found again without a walk, and so is one held above it.
        assert!(Arc::ptr_eq(&at, &dirs.dir(&deep).unwrap().unwrap()));
        let shallow: PathBuf = deep.components().take(3).collect();
        let held_above = dirs.open[2].1.clone().unwrap();
        assert!(Arc::ptr_eq(
            &held_above,
            &dirs.dir(&shallow).unwrap().unwrap()
        ));
        // A sibling in the deep part is reached from the nearest open directory.
        let parent: PathBuf = deep.components().take(HELD + 5).collect();
        fs::create_dir(root.join(&parent).join("sibling")).unwrap();
        assert!(dirs.dir(&parent.join("sibling")).unwrap().is_ok());
        assert!(dirs.dir(&deep).unwrap().is_ok());
        fs::remove_dir_all(root).ok();
    }

    #[test]
    fn no_directory_below_is_a_home_and_each_is_checked_once() {
        let root = temp("homes");
        for dir in ["node/deeper", "relay", "own", "plain"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        fs::write(root.join("node").join(crate::home::MARKER), "").unwrap();
        fs::write(root.join("relay").join(crate::home::IDENTITY_KEY), "").unwrap();
        let mut dirs = open(&root, Homes::new(&root.join("own")));
        for rel in ["node", "node/deeper", "relay", "own", "own/x"] {
            let err = dirs.dir(Path::new(rel)).unwrap_err();
            assert!(matches!(err, Escape::Home { .. }), "{rel}: {err}");
        }
        assert!(dirs.dir(Path::new("plain")).unwrap().is_ok());
        fs::write(root.join("plain").join(crate::home::MARKER), "").unwrap();
        assert!(dirs.dir(Path::new("other")).unwrap().is_err());
        assert!(
            dirs.dir(Path::new("plain")).unwrap().is_ok(),
            "checked once per copy"
        );
        let err = dirs.finish(Path::new("node")).unwrap_err();
        assert!(matches!(err, Escape::Home { .. }), "{err}");
        fs::remove_dir_all(root).ok();
    }

    #[test]
    fn a_local_destination_follows_the_users_links() {
        let root = temp("local");
        fs::create_dir(root.join("dir")).unwrap();
        symlink(root.join("dir"), root.join("to-dir")).unwrap();
        fs::write(root.join("file"), "").unwrap();
        for into in ["dir", "to-dir"] {
            let dest = Dest::local(root.join(into));
            assert_eq!((dest.from, dest.below), (root.join(into), PathBuf::new()));
        }
        for named in ["file", "new"] {
            let dest = Dest::local(root.join(named));
            assert_eq!(
                (dest.from, dest.below),
                (root.clone(), PathBuf::from(named))
            );
        }
        fs::remove_dir_all(root).ok();
    }
}
