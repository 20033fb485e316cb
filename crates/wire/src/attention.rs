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

/// `text` as an event may carry it: no control characters, at most `max` characters.
pub fn clean(text: &str, max: usize) -> String {
    text.chars()
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
    }
}
