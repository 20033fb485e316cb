//! The device's Ed25519 key: made on first start, then loaded, never silently replaced.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use libp2p::identity::Keypair;

/// The key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read or write the identity key {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "the identity key {path} is corrupt ({reason}); restore it from a backup, or delete it \
         to make a new identity (paired devices will then no longer know this one)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "the identity key {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Exposed { path: PathBuf, mode: u32 },
}

/// Loads the key at `path`, or makes and saves a new one (mode 0600) when there is none.
pub fn load_or_create(path: &Path) -> Result<Keypair, IdentityError> {
    let io_err = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    match fs::read(path) {
        Ok(bytes) => {
            let mode = fs::metadata(path).map_err(io_err)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(IdentityError::Exposed {
                    path: path.to_owned(),
                    mode,
                });
            }
            Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Corrupt {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair
                .to_protobuf_encoding()
                .map_err(|e| io_err(io::Error::other(e)))?;
            match write_new(path, &bytes) {
                Ok(()) => Ok(keypair),
                // Made at the same moment by another process (`loopsy id` as the node
                // starts): that one is the identity.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => load_or_create(path),
                Err(e) => Err(io_err(e)),
            }
        }
        Err(e) => Err(io_err(e)),
    }
}

/// Writes a file that must not exist yet, readable by its owner only from its first byte,
/// and whole or not at all: written aside, then linked into place (a link fails if the name
/// exists), so a process reading it at the same moment never sees half a key.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".new-{}", std::process::id()));
    let aside = PathBuf::from(aside);
    let _ = fs::remove_file(&aside);
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&aside)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::hard_link(&aside, path)
    })();
    let _ = fs::remove_file(&aside);
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loopsy-id-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn created_once_then_loaded_with_mode_0600() {
        let dir = temp_dir("create");
        let path = dir.join("identity.key");
        let first = load_or_create(&path).expect("create");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = load_or_create(&path).expect("load");
        assert_eq!(first.public(), second.public());
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn corrupt_key_is_an_error_not_a_new_identity() {
        let dir = temp_dir("corrupt");
        let path = dir.join("identity.key");
        write_new(&path, b"not a key").expect("write");
        let err = load_or_create(&path).expect_err("must fail");
        assert!(matches!(err, IdentityError::Corrupt { .. }), "{err}");
        assert_eq!(fs::read(&path).expect("still there"), b"not a key");
        fs::remove_dir_all(dir).ok();
    }
}
