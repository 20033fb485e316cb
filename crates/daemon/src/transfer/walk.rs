//! What a sender offers: its sources, and with `-r` everything under them, as entries
//! (parents before children, names sorted so that the same command offers the same list).
//! The sources themselves are followed when they are symlinks, as `cp -H` does; links
//! inside a tree are offered as links and never followed.

use std::{
    fs::{self, Metadata},
    io,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

use loopsy_wire::transfer::{Entry, Kind};
use serde_bytes::ByteBuf;

use super::homes::Homes;

/// Most entries one copy may hold.
pub const MAX_ENTRIES: usize = 1_000_000;

/// An entry and where its data is read from.
#[derive(Debug, Clone)]
pub struct Item {
    pub local: PathBuf,
    pub entry: Entry,
    /// The file the walk saw (device, inode): what is read later must be that same file,
    /// not something swapped in under its name since.
    pub file: (u64, u64),
}

/// A source that cannot be offered.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{path}: {}", super::words::io(source))]
    Io { path: String, source: io::Error },
    #[error("{0} is a directory (copy it with -r)")]
    Directory(String),
    #[error("{0} is neither a file nor a directory")]
    Special(String),
    #[error("{0} has no name to copy it under")]
    Nameless(String),
    #[error("more than {MAX_ENTRIES} entries in one copy")]
    TooMany,
}

/// The entries for `sources`, everything in them: for the user's own copies.
pub fn walk(sources: &[PathBuf], recursive: bool) -> Result<Vec<Item>, WalkError> {
    let mut walk = Walk::default();
    walk.sources(sources, recursive)?;
    Ok(walk.items)
}

/// What a peer is offered of `sources` (each already checked to lie outside every home):
/// their entries, but for the Loopsy homes inside the trees, left out as if not there.
pub fn for_peer(sources: &[PathBuf], recursive: bool, homes: &Homes) -> Result<Walked, WalkError> {
    let mut walk = Walk {
        skip: Some(homes),
        ..Walk::default()
    };
    walk.sources(sources, recursive)?;
    Ok(Walked {
        items: walk.items,
        homes_left_out: walk.left_out,
    })
}

/// What a peer is offered.
#[derive(Debug)]
pub struct Walked {
    pub items: Vec<Item>,
    /// How many homes the trees held, for the audit log.
    pub homes_left_out: usize,
}

#[derive(Default)]
struct Walk<'a> {
    items: Vec<Item>,
    /// The homes to leave out, for a peer.
    skip: Option<&'a Homes>,
    left_out: usize,
}

impl Walk<'_> {
    fn sources(&mut self, sources: &[PathBuf], recursive: bool) -> Result<(), WalkError> {
        for source in sources {
            let meta = fs::metadata(source).map_err(|e| io_error(source, e))?;
            let real;
            let name = match source.file_name() {
                Some(name) => name,
                // `.`, `dir/..`: named after what they are.
                None => {
                    real = source.canonicalize().map_err(|e| io_error(source, e))?;
                    real.file_name()
                        .ok_or_else(|| WalkError::Nameless(source.display().to_string()))?
                }
            };
            let name = PathBuf::from(name);
            if meta.is_dir() {
                if !recursive {
                    return Err(WalkError::Directory(source.display().to_string()));
                }
                self.items.push(item(source, &name, &meta, Kind::Dir));
                self.tree(source, &name)?;
            } else if meta.is_file() {
                let size = meta.len();
                self.items
                    .push(item(source, &name, &meta, Kind::File { size }));
            } else {
                return Err(WalkError::Special(source.display().to_string()));
            }
            if self.items.len() > MAX_ENTRIES {
                return Err(WalkError::TooMany);
            }
        }
        Ok(())
    }

    /// Everything under the directory `local`, offered as `path/...`. Sockets, pipes and
    /// devices are left out, and for a peer so are homes.
    fn tree(&mut self, local: &Path, path: &Path) -> Result<(), WalkError> {
        let mut children = fs::read_dir(local)
            .and_then(|dir| {
                dir.map(|e| e.map(|e| e.file_name()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|e| io_error(local, e))?;
        children.sort();
        for name in children {
            let (local, path) = (local.join(&name), path.join(&name));
            let meta = fs::symlink_metadata(&local).map_err(|e| io_error(&local, e))?;
            let kind = if meta.file_type().is_symlink() {
                let target = fs::read_link(&local).map_err(|e| io_error(&local, e))?;
                Kind::Symlink {
                    target: ByteBuf::from(target.as_os_str().as_bytes().to_vec()),
                }
            } else if meta.is_dir() {
                if let Some(homes) = self.skip
                    && homes
                        .is_home(&local, &meta)
                        .map_err(|e| io_error(&local, e))?
                {
                    self.left_out += 1;
                    continue;
                }
                Kind::Dir
            } else if meta.is_file() {
                Kind::File { size: meta.len() }
            } else {
                continue;
            };
            let is_dir = kind == Kind::Dir;
            self.items.push(item(&local, &path, &meta, kind));
            if self.items.len() > MAX_ENTRIES {
                return Err(WalkError::TooMany);
            }
            if is_dir {
                self.tree(&local, &path)?;
            }
        }
        Ok(())
    }
}

fn item(local: &Path, path: &Path, meta: &Metadata, kind: Kind) -> Item {
    Item {
        local: local.to_path_buf(),
        file: (meta.dev(), meta.ino()),
        entry: Entry {
            path: ByteBuf::from(path.as_os_str().as_bytes().to_vec()),
            kind,
            mode: meta.mode() & 0o7777,
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        },
    }
}

fn io_error(path: &Path, source: io::Error) -> WalkError {
    WalkError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_tree_is_offered_parents_first_with_links_as_links() {
        let dir = std::env::temp_dir().join(format!("loopsy-walk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("src/b/c")).unwrap();
        fs::write(dir.join("src/b/c/f"), "hi").unwrap();
        fs::write(dir.join("src/a"), "").unwrap();
        symlink("/etc", dir.join("src/link")).unwrap();
        let items = walk(&[dir.join("src")], true).unwrap();
        let paths: Vec<_> = items
            .iter()
            .map(|i| String::from_utf8_lossy(&i.entry.path).into_owned())
            .collect();
        assert_eq!(
            paths,
            ["src", "src/a", "src/b", "src/b/c", "src/b/c/f", "src/link"]
        );
        assert_eq!(items[4].entry.kind, Kind::File { size: 2 });
        assert!(matches!(items[5].entry.kind, Kind::Symlink { .. }));
        assert!(matches!(
            walk(&[dir.join("src")], false),
            Err(WalkError::Directory(_))
        ));
        assert!(matches!(
            walk(&[dir.join("missing")], false),
            Err(WalkError::Io { .. })
        ));
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_peer_is_offered_a_tree_without_the_homes_in_it() {
        let dir = std::env::temp_dir().join(format!("loopsy-walk-homes-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let src = dir.join("src");
        for sub in ["state", "relay", "own", "plain"] {
            fs::create_dir_all(src.join(sub)).unwrap();
        }
        fs::write(src.join("state").join(crate::home::MARKER), "").unwrap();
        fs::write(src.join("state/trust.toml"), "").unwrap();
        fs::write(src.join("relay/identity.key"), "key").unwrap();
        fs::write(src.join("own/config.toml"), "").unwrap();
        fs::write(src.join("plain/f"), "f").unwrap();
        // A link to a home is offered as the link it is, never followed.
        symlink(src.join("state"), src.join("door")).unwrap();
        let homes = Homes::new(&src.join("own"));
        let offered = for_peer(std::slice::from_ref(&src), true, &homes).unwrap();
        let paths: Vec<_> = offered
            .items
            .iter()
            .map(|i| String::from_utf8_lossy(&i.entry.path).into_owned())
            .collect();
        assert_eq!(paths, ["src", "src/door", "src/plain", "src/plain/f"]);
        assert_eq!(offered.homes_left_out, 3);
        // The user's own copy takes everything.
        assert_eq!(walk(&[src], true).unwrap().len(), 11);
        fs::remove_dir_all(dir).ok();
    }
}
