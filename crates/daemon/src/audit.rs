//! The audit log: one JSON line for everything peers did or tried here, and for changes to
//! the trust store. Append-only, rotated by size (the current file and four older ones),
//! and followed live by `loopsy audit --follow`.
//!
//! What peers say ends up in the fields (argv, paths, names), so control and invisible
//! formatting characters are escaped before an entry is written: no entry can pass for two,
//! or hide what it says. Refusals of strangers are rate-limited, per stranger and all
//! together (fresh peer IDs cost nothing), and what was left out is counted in a summary
//! entry: a stranger looping refused streams cannot rotate the history away.

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
/// Older files kept after rotation (`audit.jsonl.1` is the newest of them).
pub const KEEP_ROTATED: usize = 4;
/// Refusals of strangers written per minute, from one of them, and from all of them.
const STRANGER_PER_PEER: u32 = 10;
const STRANGERS_OVERALL: u32 = 60;
const STRANGER_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
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
    strangers: Mutex<Strangers>,
}

/// Refusals of strangers in the current window.
#[derive(Debug, Default)]
struct Strangers {
    since: Option<std::time::Instant>,
    per_peer: std::collections::HashMap<PeerId, u32>,
    written: u32,
    left_out: u32,
}

impl Strangers {
    /// Whether a refusal of `peer` is written now; a summary of the window that ended,
    /// when one did and left entries out.
    fn admit(&mut self, peer: PeerId, now: std::time::Instant) -> (bool, Option<u32>) {
        let mut summary = None;
        if self
            .since
            .is_none_or(|since| now.duration_since(since) >= STRANGER_WINDOW)
        {
            summary = (self.left_out > 0).then_some(self.left_out);
            *self = Strangers {
                since: Some(now),
                ..Strangers::default()
            };
        }
        let count = self.per_peer.entry(peer).or_default();
        if *count >= STRANGER_PER_PEER || self.written >= STRANGERS_OVERALL {
            self.left_out += 1;
            // Bounded: past the overall limit no new peer is remembered.
            if *count == 0 {
                self.per_peer.remove(&peer);
            }
            return (false, summary);
        }
        *count += 1;
        self.written += 1;
        (true, summary)
    }
}

impl Audit {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: Mutex::new(None),
            follow: broadcast::channel(FOLLOW_BUFFER).0,
            strangers: Mutex::new(Strangers::default()),
        }
    }

    /// Records a refusal of a device that is not a member, within the strangers' limits.
    pub fn refuse_stranger(
        &self,
        peer: PeerId,
        action: &str,
        args: impl Into<String>,
        reason: String,
    ) {
        let (write, summary) = self
            .strangers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(peer, std::time::Instant::now());
        if let Some(left_out) = summary {
            self.record(
                None,
                None,
                "refusals left out",
                format!("{left_out}"),
                Outcome::Denied,
                Some(format!(
                    "{left_out} refusals of strangers in the last minute went unwritten \
                     (at most {STRANGER_PER_PEER} a minute from one, {STRANGERS_OVERALL} from all)"
                )),
            );
        }
        if write {
            self.record(
                Some(peer),
                None,
                action,
                args,
                Outcome::Denied,
                Some(reason),
            );
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
        let mut args = escape(&args.into());
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
            name: name.map(|n| escape(&n)),
            action: action.to_owned(),
            args,
            result: outcome.name().to_owned(),
            reason: reason.map(|r| escape(&r)),
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
            for n in (1..KEEP_ROTATED).rev() {
                match fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(&self.path, rotated(&self.path, 1))?;
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
        let oldest_first = (1..=KEEP_ROTATED).rev().map(|n| rotated(&self.path, n));
        for path in oldest_first.chain([self.path.clone()]) {
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

/// The `n`th older file: `audit.jsonl.n`.
fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{n}"));
    path.with_file_name(name)
}

/// `text` with control and invisible formatting characters written as `\u{..}` escapes
/// (and `\` doubled, so an escape in the text cannot pass for one of ours).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if loopsy_mesh::is_deceptive(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
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
        assert!(
            on_disk <= 2 * ROTATE_AT + 4096,
            "{on_disk} bytes (two files so far)"
        );
        let all = audit.read_all();
        assert!(all.len() > 1000);
        assert!(all.iter().all(|e| e.args.chars().count() <= MAX_ARGS + 1));
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn no_entry_passes_for_two_or_hides_what_it_says() {
        assert_eq!(
            escape("x\nFORGED 2026 alpha exec ok"),
            "x\\nFORGED 2026 alpha exec ok"
        );
        assert_eq!(escape("al\u{202e}ahpla"), "al\\u{202e}ahpla");
        assert_eq!(
            escape("a\\nb"),
            "a\\\\nb",
            "a backslash in the text is doubled"
        );
        assert_eq!(escape("ünïcode stays"), "ünïcode stays");
        let dir = std::env::temp_dir().join(format!("loopsy-audit-esc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let audit = Audit::new(dir.join("audit.jsonl"));
        audit.record(
            None,
            Some("a\u{1b}[2Jb".into()),
            "exec",
            "x\ny",
            Outcome::Ok,
            Some("r\rs".into()),
        );
        let entry = &audit.read_all()[0];
        assert_eq!(entry.args, "x\\ny");
        assert_eq!(entry.name.as_deref(), Some("a\\u{1b}[2Jb"));
        assert_eq!(entry.reason.as_deref(), Some("r\\rs"));
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn strangers_cannot_flush_the_history() {
        let mut strangers = Strangers::default();
        let start = std::time::Instant::now();
        let one = PeerId::random();
        let written = (0..100).filter(|_| strangers.admit(one, start).0).count();
        assert_eq!(
            written, STRANGER_PER_PEER as usize,
            "one stranger, one minute"
        );
        // Fresh identities are free: all of them together are held to the overall limit.
        let many = (0..1000)
            .filter(|_| strangers.admit(PeerId::random(), start).0)
            .count();
        assert_eq!(many as u32, STRANGERS_OVERALL - STRANGER_PER_PEER);
        assert!(strangers.per_peer.len() <= STRANGERS_OVERALL as usize);
        // The next window starts with a summary of what was left out.
        let later = start + STRANGER_WINDOW;
        let (write, summary) = strangers.admit(one, later);
        assert!(write);
        assert_eq!(summary, Some(90 + 1000 - 50));
    }

    #[test]
    fn four_older_files_are_kept() {
        let dir = std::env::temp_dir().join(format!("loopsy-audit-keep-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let audit = Audit::new(path.clone());
        let long = "x".repeat(MAX_ARGS);
        for _ in 0..((KEEP_ROTATED as u64 + 2) * ROTATE_AT / 600) {
            audit.record(None, None, "pair", long.clone(), Outcome::Ok, None);
        }
        assert!(rotated(&path, KEEP_ROTATED).exists());
        assert!(!rotated(&path, KEEP_ROTATED + 1).exists());
        fs::remove_dir_all(dir).ok();
    }
}
