//! Keeping paths from a peer inside their roots. A peer names files by relative paths;
//! before anything is read or written, a path must be relative and free of `..`; it is then
//! written through directory descriptors that never follow a symlink ([`super::dirs`]), so
//! that neither a crafted path nor a symlink planted earlier (by this very transfer, say)
//! can lead outside the root. Nor may it lead into a Loopsy home, inside the roots or not
//! ([`super::homes`]).

use super::{dirs::Dest, homes::Homes};
use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt,
    path::{Component, Path, PathBuf},
};

/// Longest path accepted from a peer, and longest component.
pub const MAX_PATH: usize = 4096;
pub const MAX_COMPONENT: usize = 255;

/// A path that would leave its root, or cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Escape {
    #[error("`{0}` is absolute; paths from a peer are relative to a root")]
    Absolute(String),
    #[error("`{0}` climbs out with `..`")]
    Parent(String),
    #[error("`{0}` is empty, too long, or holds a NUL byte")]
    Malformed(String),
    #[error("`{path}` passes through the symlink `{link}`, which could lead outside the root")]
    Symlink { path: String, link: String },
    #[error("`{path}` is outside the allowed roots ({roots})")]
    Outside { path: String, roots: String },
    #[error(
        "`{path}` is in the Loopsy home {home}: a node's key, trust store and settings are never \
         reachable through `files`"
    )]
    Home { path: String, home: String },
    /// Not a refusal: the path cannot be looked at (missing, a file where a directory
    /// should be, no permission), said in plain words ([`super::words`]).
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
}

/// Checks a relative path from a peer (raw bytes: any name a file system allows), and
/// returns it normalized (no `.` components).
pub fn relative(path: &[u8]) -> Result<PathBuf, Escape> {
    let shown = || shown(path);
    if path.is_empty() || path.len() > MAX_PATH || path.contains(&0) {
        return Err(Escape::Malformed(shown()));
    }
    let mut clean = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(path)).components() {
        match component {
            Component::Normal(part) if part.len() <= MAX_COMPONENT => clean.push(part),
            Component::Normal(_) => return Err(Escape::Malformed(shown())),
            Component::CurDir => {}
            Component::ParentDir => return Err(Escape::Parent(shown())),
            Component::RootDir | Component::Prefix(_) => return Err(Escape::Absolute(shown())),
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(Escape::Malformed(shown()));
    }
    Ok(clean)
}

/// A path from a peer, readable in errors and logs whatever bytes it holds.
pub fn shown(path: &[u8]) -> String {
    String::from_utf8_lossy(path).escape_debug().to_string()
}

/// The path a peer names at the top of a copy (`PEER:PATH`): relative to the first root,
/// or absolute; never with `..`. Whether it lies inside the roots is checked by [`within`]
/// (to read) or [`writable`] (to write).
pub fn requested(roots: &[PathBuf], path: &[u8]) -> Result<PathBuf, Escape> {
    let Some(first) = roots.first() else {
        return Err(Escape::Outside {
            path: shown(path),
            roots: "none are configured".into(),
        });
    };
    if path.len() > MAX_PATH || path.contains(&0) {
        return Err(Escape::Malformed(shown(path)));
    }
    let given = Path::new(OsStr::from_bytes(path));
    if given.components().any(|c| c == Component::ParentDir) {
        return Err(Escape::Parent(shown(path)));
    }
    Ok(first.join(given))
}

/// For writing where a peer asks: `requested` itself when it exists, else its parent, must
/// lie inside one of `roots` once every symlink is resolved, and outside every home.
/// Returns where to write: the root, opened as configured, and below it the real path
/// (the real parent and the new name when it does not exist yet), which the copy then
/// walks without following a link ([`super::dirs`]).
pub fn writable(roots: &[PathBuf], homes: &Homes, requested: &Path) -> Result<Dest, Escape> {
    let real = if std::fs::symlink_metadata(requested).is_ok() {
        within(roots, homes, requested)?
    } else {
        let (Some(parent), Some(name)) = (requested.parent(), requested.file_name()) else {
            return Err(Escape::Malformed(requested.display().to_string()));
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        within(roots, homes, parent)?.join(name)
    };
    let Some(root) = root_of(roots, &real) else {
        return Err(outside(roots, requested));
    };
    let below = real
        .strip_prefix(&root)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Ok(Dest {
        from: root,
        below,
        dir: super::dirs::names_a_directory(requested),
    })
}

/// The real path of the root `real` lies in.
fn root_of(roots: &[PathBuf], real: &Path) -> Option<PathBuf> {
    roots
        .iter()
        .filter_map(|root| root.canonicalize().ok())
        .find(|root| real.starts_with(root))
}

fn outside(roots: &[PathBuf], requested: &Path) -> Escape {
    Escape::Outside {
        path: requested.display().to_string(),
        roots: roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// For reading what a peer asks for: the real path of `requested`, which must lie inside
/// one of `roots` once every symlink is resolved, and outside every home.
pub fn within(roots: &[PathBuf], homes: &Homes, requested: &Path) -> Result<PathBuf, Escape> {
    let real = requested.canonicalize().map_err(|e| Escape::Io {
        path: requested.display().to_string(),
        reason: super::words::io(&e),
    })?;
    if root_of(roots, &real).is_some() {
        homes.outside(&real)?;
        Ok(real)
    } else {
        Err(outside(roots, requested))
    }
}

/// A symlink's target as a peer sent it, for a link inside the tree: stored as it is, never
/// followed here; only a NUL byte or an over-long target is refused.
pub fn link_target(target: &[u8]) -> Result<&OsStr, Escape> {
    if target.is_empty() || target.len() > MAX_PATH || target.contains(&0) {
        return Err(Escape::Malformed(shown(target)));
    }
    Ok(OsStr::from_bytes(target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loopsy-confine-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn relative_paths_are_checked_and_normalized() {
        assert_eq!(
            relative(b"a/./b/c.txt").unwrap(),
            PathBuf::from("a/b/c.txt")
        );
        assert_eq!(
            relative("name with spaces/ünïcode\nnewline".as_bytes())
                .unwrap()
                .components()
                .count(),
            2
        );
        assert!(matches!(relative(b"/etc/passwd"), Err(Escape::Absolute(_))));
        assert!(matches!(relative(b"a/../../etc"), Err(Escape::Parent(_))));
        assert!(matches!(relative(b".."), Err(Escape::Parent(_))));
        assert!(matches!(relative(b""), Err(Escape::Malformed(_))));
        assert!(matches!(relative(b"."), Err(Escape::Malformed(_))));
        assert!(matches!(relative(b"a\0b"), Err(Escape::Malformed(_))));
        assert!(matches!(
            relative("x".repeat(300).as_bytes()),
            Err(Escape::Malformed(_))
        ));
    }

    #[test]
    fn reads_stay_inside_the_roots_after_symlinks_are_resolved() {
        let root = temp("within");
        let outside = temp("within-out");
        std::fs::write(root.join("ok.txt"), "x").unwrap();
        std::fs::write(outside.join("secret"), "x").unwrap();
        symlink(outside.join("secret"), root.join("sneaky")).unwrap();
        symlink(root.join("ok.txt"), root.join("alias")).unwrap();
        let roots = [root.clone()];
        assert!(within(&roots, &Homes::default(), &root.join("ok.txt")).is_ok());
        assert!(
            within(&roots, &Homes::default(), &root.join("alias")).is_ok(),
            "a link that stays inside"
        );
        assert!(matches!(
            within(&roots, &Homes::default(), &root.join("sneaky")),
            Err(Escape::Outside { .. })
        ));
        assert!(matches!(
            within(
                &roots,
                &Homes::default(),
                &root
                    .join("../")
                    .join(outside.file_name().unwrap())
                    .join("secret")
            ),
            Err(Escape::Outside { .. })
        ));
        std::fs::remove_dir_all(root).ok();
        std::fs::remove_dir_all(outside).ok();
    }

    proptest::proptest! {
        /// Whatever `relative` accepts stays under the root once joined to it.
        #[test]
        fn accepted_paths_stay_under_the_root(path in "[a-z./]{0,40}|(\\.\\./)+[a-z]{1,3}|/[a-z/]{0,10}") {
            if let Ok(rel) = relative(path.as_bytes()) {
                let joined = Path::new("/root/dir").join(&rel);
                proptest::prop_assert!(joined.starts_with("/root/dir"));
                proptest::prop_assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
            }
        }
    }

    #[test]
    fn top_level_paths_start_at_the_first_root_and_writes_stay_inside() {
        let root = temp("writable");
        let outside = temp("writable-out");
        symlink(&outside, root.join("out")).unwrap();
        let roots = [root.clone()];
        assert_eq!(requested(&roots, b"").unwrap(), root);
        assert_eq!(requested(&roots, b"a/b").unwrap(), root.join("a/b"));
        assert!(matches!(
            requested(&roots, b"a/../../x"),
            Err(Escape::Parent(_))
        ));
        assert!(matches!(requested(&[], b"x"), Err(Escape::Outside { .. })));
        let real = root.canonicalize().unwrap();
        let dest = writable(&roots, &Homes::default(), &root.join("new")).unwrap();
        assert_eq!(
            (dest.from, dest.below),
            (real.clone(), PathBuf::from("new"))
        );
        std::fs::create_dir(root.join("sub")).unwrap();
        symlink(root.join("sub"), root.join("to-sub")).unwrap();
        let dest = writable(&roots, &Homes::default(), &root.join("to-sub/new")).unwrap();
        assert_eq!(
            (dest.from, dest.below),
            (real.clone(), PathBuf::from("sub/new")),
            "below the root, a real path: no link left to follow"
        );
        let dest = writable(&roots, &Homes::default(), &root).unwrap();
        assert_eq!((dest.from, dest.below), (real, PathBuf::new()));
        assert!(matches!(
            writable(&roots, &Homes::default(), &root.join("out")),
            Err(Escape::Outside { .. })
        ));
        assert!(matches!(
            writable(&roots, &Homes::default(), &root.join("out/new")),
            Err(Escape::Outside { .. })
        ));
        assert!(matches!(
            writable(&roots, &Homes::default(), Path::new("/etc/new")),
            Err(Escape::Outside { .. })
        ));
        std::fs::remove_dir_all(root).ok();
        std::fs::remove_dir_all(outside).ok();
    }

    #[test]
    fn no_path_reaches_a_home_whatever_the_roots_say() {
        let root = temp("homes");
        let state = root.join(".local/share/loopsy");
        let own = root.join("own");
        for dir in [&state, &own, &root.join("plain")] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(state.join(crate::home::MARKER), "").unwrap();
        std::fs::write(state.join("identity.key"), "key").unwrap();
        std::fs::write(own.join("trust.toml"), "").unwrap();
        symlink(&state, root.join("door")).unwrap();
        // Roots that take in the homes, even a root that is one.
        let roots = [root.clone(), state.clone()];
        let homes = Homes::new(&own);
        fn is_home<T: std::fmt::Debug>(result: Result<T, Escape>) {
            match result {
                Err(Escape::Home { .. }) => {}
                other => panic!("not refused as a home: {other:?}"),
            }
        }
        for path in [
            state.join("identity.key"),
            state.clone(),
            root.join("door/identity.key"),
            root.join("door"),
            root.join("plain/../.local/share/loopsy/identity.key"),
            own.join("trust.toml"),
        ] {
            is_home(within(&roots, &homes, &path));
        }
        for path in [
            state.join("trust.toml"),
            state.join("new"),
            state.clone(),
            root.join("door/new"),
            own.join("trust.toml"),
            own.join("new"),
        ] {
            is_home(writable(&roots, &homes, &path));
        }
        let mut dirs = crate::transfer::dirs::Dirs::open(&root, homes.clone()).unwrap();
        for rel in [".local/share/loopsy/x", "door/x", "own/sub/x"] {
            let err = dirs.dir(Path::new(rel)).unwrap_err();
            assert!(
                matches!(err, Escape::Home { .. } | Escape::Symlink { .. }),
                "{rel}: {err}"
            );
        }
        assert!(within(&roots, &homes, &root.join("plain")).is_ok());
        assert!(writable(&roots, &homes, &root.join("plain/new")).is_ok());
        std::fs::create_dir_all(root.join("plain/a/b")).unwrap();
        assert!(dirs.dir(Path::new("plain/a/b")).unwrap().is_ok());
        std::fs::remove_dir_all(root).ok();
    }

    #[test]
    fn link_targets_are_kept_verbatim_but_bounded() {
        assert_eq!(link_target(b"../x").unwrap(), OsStr::new("../x"));
        assert!(link_target(b"a\0b").is_err());
        assert!(link_target(b"").is_err());
    }
}
