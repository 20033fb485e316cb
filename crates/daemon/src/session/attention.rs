//! Finds a program's calls for attention in its terminal output: the bell (BEL outside any
//! escape sequence), and the notification sequences terminals and agents emit: OSC 9
//! (`ESC ] 9 ; text`), OSC 777 (`ESC ] 777 ; notify ; title ; body`) and the simple form of
//! OSC 99 (kitty: `ESC ] 99 ; metadata ; text`, plain text in one piece). A sequence may be
//! split across reads; its payload is bounded, and what a program repeats is rate-limited,
//! so a bell in a loop raises a handful of events, not thousands.

use std::time::{Duration, Instant};

use loopsy_wire::attention::{Kind, MAX_TEXT, MAX_TITLE, clean};
use tokio::sync::mpsc;

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;
/// The longest OSC payload kept; the rest of a longer one is skipped.
const MAX_PAYLOAD: usize = 4096;
/// Events a session may raise at once, and how often it earns another.
const BURST: u32 = 3;
const REFILL: Duration = Duration::from_secs(5);

/// A call for attention found in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub kind: Kind,
    pub title: Option<String>,
    pub text: Option<String>,
}

/// A signal raised by one of this device's sessions, for the node to spread.
#[derive(Debug, Clone)]
pub struct Raised {
    pub session: String,
    pub name: Option<String>,
    pub call: Call,
}

/// Where sessions send what they raise: a bounded queue; when it is full, signals are
/// dropped (the session's waiting state still shows it).
#[derive(Debug, Clone, Default)]
pub struct Alerts(Option<mpsc::Sender<Raised>>);

impl Alerts {
    /// Alerts, and the queue they arrive on.
    pub fn channel() -> (Self, mpsc::Receiver<Raised>) {
        let (sender, receiver) = mpsc::channel(256);
        (Self(Some(sender)), receiver)
    }

    pub fn raise(&self, raised: Raised) {
        if let Some(sender) = &self.0 {
            let _ = sender.try_send(raised);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ground,
    /// After ESC.
    Escape,
    /// In an OSC string.
    Osc,
    /// ESC inside an OSC string: `\` ends it.
    OscEscape,
    /// In a DCS, SOS, PM or APC string, which only ST ends.
    Text,
    TextEscape,
}

/// Scans one session's output.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    payload: Vec<u8>,
    /// More payload came than is kept.
    overflow: bool,
    limiter: Limiter,
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            state: State::Ground,
            payload: Vec::new(),
            overflow: false,
            limiter: Limiter::new(Instant::now()),
        }
    }
}

impl Scanner {
    /// The signals in the next piece of output, as allowed at `now` (asked for only when
    /// there is one: this runs on every piece a program prints).
    pub fn scan(&mut self, data: &[u8], now: impl FnOnce() -> Instant) -> Vec<Call> {
        let mut found = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            if self.state == State::Ground {
                // Most output is text: on to the next byte that can start something.
                match rest.iter().position(|&b| b == BEL || b == ESC) {
                    Some(at) => rest = &rest[at..],
                    None => break,
                }
            }
            if let Some(signal) = self.step(rest[0]) {
                found.push(signal);
            }
            rest = &rest[1..];
        }
        if !found.is_empty() {
            let now = now();
            found.retain(|_| self.limiter.allow(now));
        }
        found
    }

    fn step(&mut self, byte: u8) -> Option<Call> {
        match self.state {
            State::Ground => match byte {
                BEL => {
                    return Some(Call {
                        kind: Kind::Bell,
                        title: None,
                        text: None,
                    });
                }
                ESC => self.state = State::Escape,
                _ => {}
            },
            State::Escape => {
                self.state = match byte {
                    b']' => {
                        self.payload.clear();
                        self.overflow = false;
                        State::Osc
                    }
                    b'P' | b'X' | b'^' | b'_' => State::Text,
                    ESC => State::Escape,
                    _ => State::Ground,
                }
            }
            State::Osc => match byte {
                BEL => {
                    self.state = State::Ground;
                    return self.osc();
                }
                ESC => self.state = State::OscEscape,
                // CAN and SUB abandon a sequence.
                0x18 | 0x1a => self.state = State::Ground,
                _ if self.payload.len() < MAX_PAYLOAD => self.payload.push(byte),
                _ => self.overflow = true,
            },
            State::OscEscape => {
                if byte == b'\\' {
                    self.state = State::Ground;
                    return self.osc();
                }
                // Any other escape abandons the string and starts a new sequence.
                self.state = State::Escape;
                return self.step(byte);
            }
            State::Text => match byte {
                ESC => self.state = State::TextEscape,
                0x18 | 0x1a => self.state = State::Ground,
                _ => {}
            },
            State::TextEscape => {
                self.state = if byte == b'\\' {
                    State::Ground
                } else {
                    State::Text
                };
            }
        }
        None
    }

    /// The finished OSC string's signal, if it is a notification.
    fn osc(&mut self) -> Option<Call> {
        if self.overflow {
            return None;
        }
        let payload = String::from_utf8_lossy(&self.payload).into_owned();
        notification(&payload)
    }
}

/// The notification an OSC payload carries, if any.
fn notification(payload: &str) -> Option<Call> {
    let (code, rest) = payload.split_once(';')?;
    let signal = |title: Option<&str>, text: &str| {
        let title = title.map(|t| clean(t, MAX_TITLE)).filter(|t| !t.is_empty());
        let text = Some(clean(text, MAX_TEXT)).filter(|t| !t.is_empty());
        (title.is_some() || text.is_some()).then_some(Call {
            kind: Kind::Notify,
            title,
            text,
        })
    };
    match code {
        // ConEmu uses `9;N;…` for its own commands (progress, sleep…): not notifications.
        "9" => {
            let command = rest.split(';').next().unwrap_or_default();
            if !command.is_empty() && command.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            signal(None, rest)
        }
        "777" => {
            let mut parts = rest.splitn(3, ';');
            if parts.next() != Some("notify") {
                return None;
            }
            let title = parts.next().unwrap_or_default();
            let body = parts.next().unwrap_or_default();
            signal(Some(title), body)
        }
        "99" => {
            let (metadata, text) = rest.split_once(';')?;
            let mut title = false;
            for item in metadata.split(':').filter(|i| !i.is_empty()) {
                match item.split_once('=') {
                    // Base64, or one piece of several: not the simple form.
                    Some(("e", "1")) | Some(("d", "0")) => return None,
                    Some(("p", "title")) => title = true,
                    Some(("p", "body")) | Some(("i", _)) | Some(("d", "1")) => {}
                    Some(("p", _)) => return None,
                    _ => {}
                }
            }
            if title {
                signal(Some(text), "")
            } else {
                signal(None, text)
            }
        }
        _ => None,
    }
}

/// A token bucket: [`BURST`] events at once, one more each [`REFILL`].
#[derive(Debug)]
struct Limiter {
    tokens: u32,
    since: Instant,
}

impl Limiter {
    fn new(now: Instant) -> Self {
        Self {
            tokens: BURST,
            since: now,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.since).as_millis() / REFILL.as_millis();
        if earned > 0 {
            self.tokens = (self.tokens as u128 + earned).min(BURST as u128) as u32;
            self.since += REFILL * earned as u32;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(pieces: &[&[u8]]) -> Vec<Call> {
        let mut scanner = Scanner::default();
        let now = Instant::now();
        pieces
            .iter()
            .flat_map(|p| scanner.scan(p, || now))
            .collect()
    }

    fn notify(title: Option<&str>, text: Option<&str>) -> Call {
        Call {
            kind: Kind::Notify,
            title: title.map(Into::into),
            text: text.map(Into::into),
        }
    }

    #[test]
    fn a_bell_outside_sequences_is_a_bell() {
        let found = scan_all(&[b"done\x07"]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, Kind::Bell);
        // A BEL that ends an OSC (a window title) is not a bell.
        assert!(scan_all(&[b"\x1b]0;my title\x07plain"]).is_empty());
        // Nor one inside a DCS string.
        assert!(scan_all(&[b"\x1bPq\x07\x1b\\"]).is_empty());
    }

    #[test]
    fn osc_9_777_and_99_are_notifications() {
        assert_eq!(
            scan_all(&[b"\x1b]9;Build finished\x07"]),
            [notify(None, Some("Build finished"))]
        );
        assert_eq!(
            scan_all(&[b"\x1b]777;notify;Claude;Needs permission\x1b\\"]),
            [notify(Some("Claude"), Some("Needs permission"))]
        );
        assert_eq!(
            scan_all(&[b"\x1b]99;i=1:d=1;Hello there\x1b\\"]),
            [notify(None, Some("Hello there"))]
        );
        assert_eq!(
            scan_all(&[b"\x1b]99;p=title;Title only\x07"]),
            [notify(Some("Title only"), None)]
        );
        // ConEmu's progress and kitty's base64 or chunked forms are not.
        assert!(scan_all(&[b"\x1b]9;4;1;50\x07"]).is_empty());
        assert!(scan_all(&[b"\x1b]99;e=1;SGVsbG8=\x07"]).is_empty());
        assert!(scan_all(&[b"\x1b]99;d=0;part\x07"]).is_empty());
        assert!(scan_all(&[b"\x1b]777;preexec\x07"]).is_empty());
    }

    #[test]
    fn a_sequence_split_across_reads_is_found_once() {
        let whole = b"\x1b]9;split text\x1b\\";
        for cut in 0..whole.len() {
            let (a, b) = whole.split_at(cut);
            assert_eq!(
                scan_all(&[a, b]),
                [notify(None, Some("split text"))],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn texts_are_cleaned_and_bounded() {
        let mut long = b"\x1b]9;".to_vec();
        long.extend(std::iter::repeat_n(b'a', 1000));
        long.push(BEL);
        let found = scan_all(&[&long]);
        assert_eq!(found[0].text.as_ref().unwrap().len(), MAX_TEXT);
        // A payload beyond what is kept raises nothing, and scanning goes on after it.
        let mut huge = b"\x1b]9;".to_vec();
        huge.extend(std::iter::repeat_n(b'b', MAX_PAYLOAD * 4));
        huge.extend_from_slice(b"\x07\x07");
        let found = scan_all(&[&huge]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, Kind::Bell);
        // An escape abandons the string (as in xterm): the BEL after it is a bell.
        let found = scan_all(&[b"\x1b]9;red \x1b[31m\x07"]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, Kind::Bell);
    }

    #[test]
    fn a_bell_loop_raises_a_handful_of_events() {
        let mut scanner = Scanner::default();
        let start = Instant::now();
        let mut raised = 0;
        // Ten seconds of a bell every millisecond.
        for ms in 0..=10_000u64 {
            raised += scanner
                .scan(b"\x07", || start + Duration::from_millis(ms))
                .len();
        }
        assert_eq!(
            raised,
            BURST as usize + 2,
            "a burst, then one per {REFILL:?}"
        );
        // Quiet for long enough, a full burst again.
        let later = start + Duration::from_secs(60);
        assert_eq!(
            scanner.scan(b"\x07\x07\x07\x07", || later).len(),
            BURST as usize
        );
    }
}
