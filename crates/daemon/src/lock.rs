//! One node per home: the running node holds an exclusive lock on `node.lock`.

use std::{
    fs::{self, File, TryLockError},
    io::{self, Write},
    path::PathBuf,
};

use crate::Home;

/// Held for as long as the node runs; the OS releases it when the process ends, however.
#[derive(Debug)]
pub struct NodeLock {
    _file: File,
}

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another loopsy node{pid} is already running with home {home}; stop it first, or give \
         this one its own state directory with --home DIR"
    )]
    Taken { home: PathBuf, pid: String },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl NodeLock {
    /// Takes the home's lock, or says which node holds it.
    pub fn acquire(home: &Home) -> Result<Self, LockError> {
        let path = home.lock();
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let pid = fs::read_to_string(&path)
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .map(|s| format!(" (pid {s})"))
                    .unwrap_or_default();
                return Err(LockError::Taken {
                    home: home.dir().to_owned(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        file.set_len(0).map_err(io_err)?;
        write!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(Self { _file: file })
    }
}
