//! Attention: a session's program asking for its person (the terminal bell, a notification
//! escape sequence, its end), or a script saying so with `loopsy notify`. Each host detects
//! its sessions' signals; the events travel through the mesh in the replicated `events`
//! collection, and each session's waiting state in the session registry.

use serde::{Deserialize, Serialize};

/// Longest text an event carries, in characters; longer texts are cut.
pub const MAX_TEXT: usize = 200;
/// Longest title.
pub const MAX_TITLE: usize = 80;

/// What asked for attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The terminal bell (BEL).
    Bell,
    /// A notification escape sequence (OSC 9, OSC 777 `notify`, OSC 99).
    Notify,
    /// The program ended.
    Exit,
    /// `loopsy notify`, from a hook or a script.
    Note,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bell => "bell",
            Kind::Notify => "notify",
            Kind::Exit => "exit",
            Kind::Note => "note",
        }
    }
}

/// A session waiting for its person: since when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// Milliseconds since the epoch.
    pub since_ms: u64,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// One attention event, as the host that raised it wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique on its host.
    pub id: String,
    /// The session's ID, when a session raised it (or `loopsy notify --session` named one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The session's name, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// The host's name, as the host calls itself (a reader names it as it knows it).
    pub host: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Milliseconds since the epoch.
    pub time_ms: u64,
}

/// Whether `c` could make text show other than it reads: control characters, and the
/// invisible formatting ones (bidirectional overrides, zero-width characters) that let a
/// name such as `alpha\u{202e}` or `al\u{200b}pha` pass for another.
pub fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}' | '\u{061c}')
}

/// `text` as an event may carry it: control characters made spaces, the invisible
/// formatting ones of [`is_deceptive`] dropped (an event's texts and names come from other
/// hosts' programs and reach terminals and notifications), at most `max` characters.
pub fn clean(text: &str, max: usize) -> String {
    text.chars()
        .filter(|&c| c.is_control() || !is_deceptive(c))
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_loses_its_control_characters_and_its_excess() {
        assert_eq!(clean("a\x1b[31mb\x07", 10), "a [31mb");
        assert_eq!(clean(&"é".repeat(500), MAX_TEXT).chars().count(), MAX_TEXT);
        // Nor can it hide or reorder what it shows.
        assert_eq!(clean("al\u{200b}pha\u{202e}lol", 10), "alphalol");
        assert_eq!(clean("\u{2066}bravo\u{2069}\u{feff}", 10), "bravo");
    }
}
