//! Opt-in recordings (`session new --record`): the whole output of a session, beyond the
//! ring, written on the host as an asciicast v2 file as it comes, each piece timed from the
//! recording's start.
//!
//! What a peer can make the host write is bounded: the file's name is the session's ID
//! (which the host chose), in `recordings/` of the home (mode 0700, files 0600, never
//! through a link); each recording stops at the host's size bound, and the host keeps at
//! most [`MAX_KEPT`] recordings.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, Read, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use loopsy_wire::session::Recorded;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Recordings the host keeps at most: starting one more forgets the oldest of an ended
/// session, and is refused while all of them are still being written.
pub const MAX_KEPT: usize = 16;
/// The default bound on one recording.
pub const DEFAULT_MAX_MIB: u64 = 64;
/// The largest bound the config may set (a client takes at most this much in an export).
pub const LIMIT_MAX_MIB: u64 = 256;
/// A line of a recording read back longer than this is no line this host wrote.
const MAX_LINE: usize = 1024 * 1024;

/// `[sessions]` in `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The most one recording (`session new --record`) takes on disk, in MiB; it stops
    /// there.
    #[serde(default = "default_max")]
    pub record_max_mib: u64,
}

fn default_max() -> u64 {
    DEFAULT_MAX_MIB
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            record_max_mib: DEFAULT_MAX_MIB,
        }
    }
}

/// A bound outside what a recording may take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record_max_mib is {0}; it must be between 1 and {LIMIT_MAX_MIB}")]
pub struct BadBound(pub u64);

impl Settings {
    pub fn check(&self) -> Result<(), BadBound> {
        if (1..=LIMIT_MAX_MIB).contains(&self.record_max_mib) {
            Ok(())
        } else {
            Err(BadBound(self.record_max_mib))
        }
    }

    pub fn max_bytes(&self) -> u64 {
        self.record_max_mib.clamp(1, LIMIT_MAX_MIB) * 1024 * 1024
    }
}

/// Where a host keeps its recordings, and how large each may grow.
#[derive(Debug, Clone)]
pub struct Recordings {
    dir: PathBuf,
    max_bytes: u64,
}

impl Recordings {
    pub fn new(dir: PathBuf, max_bytes: u64) -> Self {
        Self { dir, max_bytes }
    }

    /// The same directory, with another bound for recordings started from now on.
    pub fn with_max(&self, max_bytes: u64) -> Self {
        Self::new(self.dir.clone(), max_bytes)
    }

    /// The file of session `id`; `None` for an ID this host would never have made (so no
    /// name read from a file can lead out of the directory).
    pub fn path(&self, id: &str) -> Option<PathBuf> {
        let made_here = !id.is_empty()
            && id.len() <= 32
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        made_here.then(|| self.dir.join(format!("{id}.cast")))
    }

    /// Starts the recording of session `id` on a terminal of `rows` × `cols`.
    pub fn start(&self, id: &str, rows: u16, cols: u16, now_ms: u64) -> io::Result<Recorder> {
        let path = self
            .path(id)
            .ok_or_else(|| io::Error::other("not a session ID"))?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        // A new file only (no link followed, nothing overwritten), for this user alone.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)?;
        let mut recorder = Recorder {
            file: Some(file),
            path,
            start_ms: now_ms,
            carried: Vec::new(),
            state: Recorded {
                bytes: 0,
                max_bytes: self.max_bytes,
                full: false,
            },
        };
        let header = json!({
            "version": 2,
            "width": cols.max(1),
            "height": rows.max(1),
            "timestamp": now_ms / 1000,
            "env": {"TERM": "xterm-256color"},
        });
        recorder.line(&header.to_string());
        Ok(recorder)
    }

    /// Removes the recordings of sessions not in `kept` (left by sessions since forgotten,
    /// or by a run that stopped before it saved).
    pub fn forget_all_but(&self, kept: &[String]) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".cast")) else {
                continue;
            };
            if !kept.iter().any(|k| k == id) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// A recording being written.
pub struct Recorder {
    /// `None` once it stopped (full, or the disk failed it).
    file: Option<File>,
    path: PathBuf,
    start_ms: u64,
    /// The start of a character whose end is in the next read.
    carried: Vec<u8>,
    state: Recorded,
}

impl Recorder {
    /// What it has written, for the session's listing.
    pub fn state(&self) -> Recorded {
        self.state
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends output read at `now_ms`.
    pub fn output(&mut self, data: &[u8], now_ms: u64) {
        if self.file.is_none() {
            return;
        }
        self.carried.extend_from_slice(data);
        let text = take_text(&mut self.carried);
        if text.is_empty() {
            return;
        }
        let seconds = now_ms.saturating_sub(self.start_ms) as f64 / 1000.0;
        self.line(&json!([seconds, "o", text]).to_string());
    }

    /// Writes one line, or stops for good where it would pass the bound.
    fn line(&mut self, line: &str) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let len = line.len() as u64 + 1;
        if self.state.bytes + len > self.state.max_bytes {
            self.file = None;
            self.state.full = true;
            tracing::warn!(
                path = %self.path.display(),
                max_bytes = self.state.max_bytes,
                "a session's recording reached its size bound: it stops here"
            );
            return;
        }
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        match file.write_all(&bytes) {
            Ok(()) => self.state.bytes += len,
            Err(error) => {
                self.file = None;
                tracing::warn!(path = %self.path.display(), %error, "a session's recording stopped");
            }
        }
    }
}

/// Output pieces, each with its time in milliseconds since the epoch.
pub type Pieces = Vec<(u64, Vec<u8>)>;

/// The output in a recording file, as pieces timed in milliseconds since the epoch (its
/// header's `timestamp` plus each line's seconds): its size from the header, and the
/// pieces. Lines that do not parse (the last one, while it is being written) are skipped.
pub fn read(path: &Path) -> io::Result<(u16, u16, Pieces)> {
    let mut reader = io::BufReader::new(File::open(path)?);
    let mut line = Vec::new();
    let mut first = true;
    let (mut rows, mut cols, mut start_ms) = (24, 80, 0u64);
    let mut pieces = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') && n >= MAX_LINE {
            // Not this host's: skip to the next line.
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest)?;
            continue;
        }
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&line) else {
            continue;
        };
        if first {
            first = false;
            let dim = |key: &str, default: u16| {
                value[key]
                    .as_u64()
                    .and_then(|v| u16::try_from(v).ok())
                    .unwrap_or(default)
            };
            cols = dim("width", 80);
            rows = dim("height", 24);
            start_ms = value["timestamp"]
                .as_u64()
                .unwrap_or(0)
                .saturating_mul(1000);
            continue;
        }
        if let (Some(seconds), Some("o"), Some(text)) =
            (value[0].as_f64(), value[1].as_str(), value[2].as_str())
        {
            let ms = (seconds.max(0.0) * 1000.0).round() as u64;
            pieces.push((start_ms.saturating_add(ms), text.as_bytes().to_vec()));
        }
    }
    Ok((rows, cols, pieces))
}

/// The text at the front of `bytes`, leaving the start of an unfinished character in it;
/// bytes that are no UTF-8 become U+FFFD (JSON holds text only).
fn take_text(bytes: &mut Vec<u8>) -> String {
    let keep = unfinished_tail(bytes);
    let rest = bytes.split_off(bytes.len() - keep);
    let text = String::from_utf8_lossy(bytes).into_owned();
    *bytes = rest;
    text
}

/// How many bytes at the end of `bytes` start a character that is not complete yet.
fn unfinished_tail(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0xC0 == 0x80 {
            continue;
        }
        let needs = match byte {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => 1,
        };
        return if needs > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loopsy-rec-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_recording_reads_back_as_written_with_whole_characters_and_times() {
        let dir = dir("roundtrip");
        let recordings = Recordings::new(dir.clone(), 1024 * 1024);
        let mut recorder = recordings.start("abc1", 24, 80, 10_000).unwrap();
        recorder.output(b"hello \xc3", 10_000);
        recorder.output(b"\xb6 \xff\n", 11_500);
        let (rows, cols, pieces) = read(recorder.path()).unwrap();
        assert_eq!((rows, cols), (24, 80));
        assert_eq!(
            pieces,
            [
                (10_000, b"hello ".to_vec()),
                (11_500, "\u{f6} \u{FFFD}\n".as_bytes().to_vec())
            ]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(recorder.path()), 0o600);
        assert_eq!(mode(&dir), 0o700);
        // Never over an existing file.
        assert!(recordings.start("abc1", 24, 80, 0).is_err());
    }

    #[test]
    fn a_recording_stops_at_its_bound_and_says_so() {
        let dir = dir("bound");
        let recordings = Recordings::new(dir, 4096);
        let mut recorder = recordings.start("full1", 24, 80, 0).unwrap();
        for t in 0..1000 {
            recorder.output(&[b'x'; 100], t);
        }
        let state = recorder.state();
        assert!(state.full);
        assert!(state.bytes <= 4096);
        let on_disk = std::fs::metadata(recorder.path()).unwrap().len();
        assert_eq!(on_disk, state.bytes);
    }

    #[test]
    fn only_ids_this_host_makes_name_files() {
        let recordings = Recordings::new(PathBuf::from("/r"), 1);
        assert_eq!(
            recordings.path("k3j2ab7q"),
            Some(PathBuf::from("/r/k3j2ab7q.cast"))
        );
        for bad in ["", "../x", "a/b", "A", "x.cast", "a".repeat(33).as_str()] {
            assert_eq!(recordings.path(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_unfinished_character_waits_for_its_end() {
        let mut bytes = b"ab\xe2\x82".to_vec();
        assert_eq!(take_text(&mut bytes), "ab");
        bytes.push(0xac);
        assert_eq!(take_text(&mut bytes), "\u{20ac}");
        assert!(bytes.is_empty());
    }
}
