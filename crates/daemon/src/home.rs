//! The state directory: one per node, so several nodes can share a machine.

use std::{
    fs, io,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// The file that says a directory is a Loopsy home, so that no node lets a peer reach it
/// through `files` (see [`is_home`]). `loopsy-relay` writes the same name into its own.
pub const MARKER: &str = ".loopsy-home";
/// The device's key, in every node's and relay's home.
pub const IDENTITY_KEY: &str = "identity.key";
/// What the marker says to someone who finds it.
const MARKER_TEXT: &str = "This directory holds a Loopsy node's state: its key, trust store and \
settings.\nNo other device can read or write it through `loopsy cp`, whatever the file roots say.\n";

/// Whether `dir` is a Loopsy home (a node's or a relay's): it holds the marker, or a key
/// (a home made before the marker was, a relay's). Conservative on purpose: any such
/// directory stays out of a peer's reach, wherever it lies.
pub fn is_home(dir: &Path) -> io::Result<bool> {
    for name in [MARKER, IDENTITY_KEY] {
        match fs::symlink_metadata(dir.join(name)) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Where a home's path came from, for messages that tell the user how to pick another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Default,
}

/// A node's state directory and the files in it.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
    source: Source,
}

/// The state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("no home directory to keep Loopsy's state in; pass --home DIR or set LOOPSY_HOME")]
    NoDefault,
    #[error("cannot create the state directory {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
}

impl Home {
    /// The home given by `--home` / `LOOPSY_HOME`, or else the platform's data directory.
    pub fn resolve(explicit: Option<PathBuf>) -> Result<Self, HomeError> {
        match explicit {
            Some(dir) => Ok(Self::at(dir)),
            None => directories::ProjectDirs::from("", "", "loopsy")
                .map(|dirs| Self {
                    dir: dirs.data_dir().to_owned(),
                    source: Source::Default,
                })
                .ok_or(HomeError::NoDefault),
        }
    }

    /// A home at an explicit path.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        // A relative home would break as soon as the daemon or a client changed directory.
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        Self {
            dir,
            source: Source::Flag,
        }
    }

    /// Creates the directory, private to its owner, if it is not there yet, and marks it as
    /// a home.
    pub fn create(&self) -> Result<(), HomeError> {
        let err = |source| HomeError::Create {
            path: self.dir.clone(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(err)?;
        // An existing directory may have been made with looser permissions.
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).map_err(err)?;
        let marked = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.marker())
            .and_then(|mut file| io::Write::write_all(&mut file, MARKER_TEXT.as_bytes()));
        match marked {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(err(e)),
            _ => Ok(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn source(&self) -> Source {
        self.source
    }

    /// The device's libp2p key.
    pub fn identity_key(&self) -> PathBuf {
        self.dir.join(IDENTITY_KEY)
    }

    /// The file that marks this directory as a home.
    pub fn marker(&self) -> PathBuf {
        self.dir.join(MARKER)
    }

    /// The node's settings, in TOML.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// The control API's Unix socket.
    /// The ports this node got for listen addresses with port 0 (see `ports.rs`).
    pub fn ports(&self) -> PathBuf {
        self.dir.join("ports.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// Paired devices and the member records.
    pub fn trust(&self) -> PathBuf {
        self.dir.join("trust.toml")
    }

    /// The audit log.
    pub fn audit(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    /// This device's copy of the session registry (every device's sessions).
    pub fn registry(&self) -> PathBuf {
        self.dir.join("registry.cbor")
    }

    /// This device's copy of the messages in transit, and its inbox.
    pub fn messages(&self) -> PathBuf {
        self.dir.join("messages.cbor")
    }

    /// This device's copy of the mesh's recent attention events.
    pub fn events(&self) -> PathBuf {
        self.dir.join("events.cbor")
    }

    pub fn inbox(&self) -> PathBuf {
        self.dir.join("inbox.json")
    }

    /// This device's copy of the shared context.
    pub fn ctx(&self) -> PathBuf {
        self.dir.join("ctx.cbor")
    }

    /// The sessions this device hosts (and hosted), for `session ls` after a restart.
    pub fn sessions(&self) -> PathBuf {
        self.dir.join("sessions.json")
    }

    /// Held by the running node, so a second one on the same home refuses to start.
    pub fn lock(&self) -> PathBuf {
        self.dir.join("node.lock")
    }

    /// How to name this home on a command line, for messages.
    pub fn flag_hint(&self) -> String {
        match self.source {
            Source::Flag => format!(" --home {}", self.dir.display()),
            Source::Default => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_home_is_marked_and_keys_make_homes_too() {
        let dir = std::env::temp_dir().join(format!("loopsy-home-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let home = Home::at(dir.join("node"));
        home.create().unwrap();
        assert!(home.marker().is_file());
        assert!(is_home(home.dir()).unwrap());
        // Created again (every start): the marker stays as it is.
        home.create().unwrap();
        let relay = dir.join("relay");
        fs::create_dir_all(&relay).unwrap();
        assert!(!is_home(&relay).unwrap());
        fs::write(relay.join(IDENTITY_KEY), "key").unwrap();
        assert!(is_home(&relay).unwrap());
        assert!(!is_home(&dir).unwrap());
        fs::remove_dir_all(dir).ok();
    }
}
