//! A session's retained output as an asciicast v2 recording (the format `asciinema play`
//! and `asciinema cat` read): a header line, then one `[seconds, "o", text]` line per piece
//! of output, timed from the first piece.

use loopsy_wire::session::{self, Piece, Reply};
use serde_json::json;

use crate::{Client, Error};

/// The most of a recording taken from a host, counting each piece's bytes and framing. A
/// host keeps the last 4 MiB of a session's output, or a recording of at most 256 MiB
/// (`session new --record`, its largest bound); a peer that streams on past this bound is
/// no honest host, and the export stops rather than fill this process's memory.
pub const MAX_RECORDING: usize = 272 * 1024 * 1024;

/// What a host holds of a session's output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recording {
    pub rows: u16,
    pub cols: u16,
    /// Seconds since the epoch.
    pub created: u64,
    pub pieces: Vec<Piece>,
}

impl Recording {
    /// The recording as asciicast v2 text. Output is cut into pieces wherever reads fell,
    /// so a character may straddle two: its bytes are carried to the next piece, and bytes
    /// that are no UTF-8 at all become U+FFFD (JSON holds text only).
    pub fn asciicast(&self) -> String {
        let header = json!({
            "version": 2,
            "width": self.cols.max(1),
            "height": self.rows.max(1),
            "timestamp": self.created,
            "env": {"TERM": "xterm-256color"},
        });
        let mut out = header.to_string();
        out.push('\n');
        let first = self.pieces.first().map_or(0, |p| p.time_ms);
        let mut carried: Vec<u8> = Vec::new();
        for piece in &self.pieces {
            carried.extend_from_slice(&piece.data);
            let text = take_text(&mut carried);
            if text.is_empty() {
                continue;
            }
            let seconds = piece.time_ms.saturating_sub(first) as f64 / 1000.0;
            out.push_str(&json!([seconds, "o", text]).to_string());
            out.push('\n');
        }
        if !carried.is_empty() {
            let seconds = self
                .pieces
                .last()
                .map_or(0.0, |p| p.time_ms.saturating_sub(first) as f64 / 1000.0);
            let text = String::from_utf8_lossy(&carried);
            out.push_str(&json!([seconds, "o", text]).to_string());
            out.push('\n');
        }
        out
    }
}

/// The text at the front of `bytes`, leaving an unfinished character's bytes in it.
fn take_text(bytes: &mut Vec<u8>) -> String {
    let mut text = String::new();
    let mut rest: &[u8] = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                text.push_str(valid);
                rest = &[];
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                match e.error_len() {
                    // Not UTF-8: replaced, and on past it.
                    Some(bad) => {
                        text.push('\u{FFFD}');
                        rest = &after[bad..];
                    }
                    // The start of a character whose end is in the next piece.
                    None => {
                        rest = after;
                        break;
                    }
                }
            }
        }
    }
    let kept = rest.to_vec();
    *bytes = kept;
    text
}

impl Client {
    /// The output `session`'s host (`host`, or found by asking) still holds, with its times.
    pub async fn session_export(
        &self,
        host: Option<String>,
        session: String,
    ) -> Result<Recording, Error> {
        let request = loopsy_wire::control::Request::Session {
            peer: host,
            request: session::Request::Export { session },
        };
        let (mut reader, _writer) = crate::Connection::open(self, request)
            .await?
            .hand_over()
            .await?;
        let mut recording = Recording::default();
        let mut size = 0usize;
        loop {
            let frame =
                loopsy_mesh::framed::read::<Reply, _>(&mut reader, session::MAX_FRAME).await;
            match frame {
                Ok(Some(Reply::Recording {
                    rows,
                    cols,
                    created,
                    pieces,
                    last,
                })) => {
                    (recording.rows, recording.cols, recording.created) = (rows, cols, created);
                    // A piece costs its bytes and its framing, as the host counts it.
                    size = pieces
                        .iter()
                        .fold(size, |size, p| size.saturating_add(p.data.len() + 16));
                    if size > MAX_RECORDING {
                        return Err(Error::TooLarge {
                            what: "recording",
                            limit: MAX_RECORDING,
                        });
                    }
                    recording.pieces.extend(pieces);
                    if last {
                        return Ok(recording);
                    }
                }
                Ok(Some(Reply::Error { message })) => return Err(Error::Host(message)),
                Ok(Some(_)) => {
                    return Err(Error::Unexpected {
                        wanted: "a recording",
                    });
                }
                Ok(None) => return Err(Error::Lost),
                Err(e) => return Err(Error::Broken(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_bytes::ByteBuf;

    use super::*;

    fn piece(time_ms: u64, data: &[u8]) -> Piece {
        Piece {
            time_ms,
            data: ByteBuf::from(data.to_vec()),
        }
    }

    #[test]
    fn a_recording_is_asciicast_v2_with_its_times_and_whole_characters() {
        let e_acute = "é".as_bytes();
        let recording = Recording {
            rows: 24,
            cols: 80,
            created: 1_800_000_000,
            pieces: vec![
                piece(5_000, &[b"h".as_slice(), &e_acute[..1]].concat()),
                piece(6_500, &[&e_acute[1..], b"llo\r\n".as_slice()].concat()),
                piece(7_000, b"bad \xff byte"),
            ],
        };
        let text = recording.asciicast();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON lines"))
            .collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(
            (lines[0]["width"].as_u64(), lines[0]["height"].as_u64()),
            (Some(80), Some(24))
        );
        assert_eq!(lines[1], json!([0.0, "o", "h"]));
        assert_eq!(lines[2], json!([1.5, "o", "éllo\r\n"]));
        assert_eq!(lines[3], json!([2.0, "o", "bad \u{FFFD} byte"]));
    }
}
