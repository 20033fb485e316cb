//! What the protocols' unit tests share: an in-memory stream, a scratch directory, an
//! audit log to read back, and peers with chosen grants.

use std::{path::PathBuf, sync::Arc};

use loopsy_mesh::PeerId;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use crate::{audit::Audit, caps, service::Peer};

/// One end of an in-memory stream.
pub type Pipe = Compat<tokio::io::DuplexStream>;

/// Two connected ends: the client's and the service's.
pub fn pipe() -> (Pipe, Pipe) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (a.compat(), b.compat())
}

/// A fresh directory for one test.
pub fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loopsy-unit-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// An audit log in `dir`.
pub fn audit(dir: &std::path::Path) -> Arc<Audit> {
    Arc::new(Audit::new(dir.join("audit.log")))
}

/// A peer with these grants (names as `--allow` takes them), audited to `audit`.
pub fn peer(grants: &[&str], audit: &Arc<Audit>) -> Peer {
    let names: Vec<String> = grants.iter().map(|g| g.to_string()).collect();
    let grants = caps::parse(&names).expect("capabilities");
    Peer::new(PeerId::random(), grants, audit.clone())
}
