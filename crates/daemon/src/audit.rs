//! The audit log: one JSON line for everything peers did or tried here, and for changes to
//! the trust store. Append-only, rotated by size (the current file and one older one), and
//! followed live by `loopsy audit --follow`.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Mutex,
};

use loopsy_mesh::PeerId;
use loopsy_wire::control::AuditEntry;
use tokio::sync::broadcast;

use crate::clock;

/// A log file is rotated when it grows past this.
pub const ROTATE_AT: u64 = 8 * 1024 * 1024;
/// New entries buffered per follower.
const FOLLOW_BUFFER: usize = 1024;
/// Longest argument summary kept.
const MAX_ARGS: usize = 512;

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Denied,
    Failed,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

/// The audit log of one node.
#[derive(Debug)]
pub struct Audit {
    path: PathBuf,
    file: Mutex<Option<(File, u64)>>,
    follow: broadcast::Sender<AuditEntry>,
}

impl Audit {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: Mutex::new(None),
            follow: broadcast::channel(FOLLOW_BUFFER).0,
        }
    }

    /// Records one event. A log that cannot be written is reported, but never stops the
    /// node from answering the peer.
    pub fn record(
        &self,
        peer: Option<PeerId>,
        name: Option<String>,
        action: &str,
        args: impl Into<String>,
        outcome: Outcome,
        reason: Option<String>,
    ) {
        let mut args: String = args.into();
        if args.len() > MAX_ARGS {
            let cut = (0..=MAX_ARGS)
                .rev()
                .find(|&i| args.is_char_boundary(i))
                .unwrap_or(0);
            args.truncate(cut);
            args.push('…');
        }
        let entry = AuditEntry {
            time: clock::rfc3339_ms(clock::now_ms()),
            peer: peer.map(|p| p.to_base58()),
            name,
            action: action.to_owned(),
            args,
            result: outcome.name().to_owned(),
            reason,
        };
        if let Err(error) = self.append(&entry) {
            tracing::error!(%error, path = %self.path.display(), "cannot write the audit log");
        }
        let _ = self.follow.send(entry);
    }

    fn append(&self, entry: &AuditEntry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut slot = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|(_, size)| *size >= ROTATE_AT) {
            *slot = None;
            fs::rename(&self.path, rotated(&self.path))?;
        }
        if slot.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)?;
            let size = file.metadata()?.len();
            *slot = Some((file, size));
        }
        if let Some((file, size)) = slot.as_mut() {
            file.write_all(&line)?;
            *size += line.len() as u64;
        }
        Ok(())
    }

    /// New entries from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AuditEntry> {
        self.follow.subscribe()
    }

    /// Every entry on disk, oldest first; lines that do not parse are skipped.
    pub fn read_all(&self) -> Vec<AuditEntry> {
        let mut entries = Vec::new();
        for path in [rotated(&self.path), self.path.clone()] {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            for line in BufReader::new(file).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str(&line) {
                    entries.push(entry);
                }
            }
        }
        entries
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".1");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_appended_read_back_and_rotated() {
        let dir = std::env::temp_dir().join(format!("loopsy-audit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let audit = Audit::new(dir.join("audit.jsonl"));
        let mut follower = audit.subscribe();
        let peer = PeerId::random();
        audit.record(
            Some(peer),
            None,
            "exec",
            "ls",
            Outcome::Denied,
            Some("not paired".into()),
        );
        let seen = follower.try_recv().unwrap();
        assert_eq!(seen.result, "denied");
        assert_eq!(seen.peer, Some(peer.to_base58()));

        // Fill past the rotation size with long entries: the total on disk stays bounded.
        let long = "x".repeat(MAX_ARGS);
        let per_entry = 700;
        for _ in 0..(2 * ROTATE_AT / per_entry + 10) {
            audit.record(None, None, "pair", long.clone(), Outcome::Ok, None);
        }
        let on_disk: u64 = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(on_disk <= 2 * ROTATE_AT + 4096, "{on_disk} bytes");
        let all = audit.read_all();
        assert!(all.len() > 1000);
        assert!(all.iter().all(|e| e.args.chars().count() <= MAX_ARGS + 1));
        fs::remove_dir_all(dir).ok();
    }
}
