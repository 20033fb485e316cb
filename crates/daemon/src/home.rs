//! The state directory: one per node, so several nodes can share a machine.

use std::{
    fs, io,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

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

    /// Creates the directory, private to its owner, if it is not there yet.
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
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).map_err(err)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn source(&self) -> Source {
        self.source
    }

    /// The device's libp2p key.
    pub fn identity_key(&self) -> PathBuf {
        self.dir.join("identity.key")
    }

    /// The node's settings, in TOML.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// The control API's Unix socket.
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
