//! The local terminal: raw mode for shells (restored on every way out), and its size.

use std::io::IsTerminal;

use rustix::termios::{self, OptionalActions, Termios};

/// Puts stdin's terminal in raw mode until dropped.
pub struct RawMode(Option<Termios>);

impl RawMode {
    /// Raw mode when stdin is a terminal; nothing otherwise.
    pub fn enable() -> Self {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Self(None);
        }
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return Self(None);
        };
        let mut raw = saved.clone();
        raw.make_raw();
        if termios::tcsetattr(&stdin, OptionalActions::Now, &raw).is_err() {
            return Self(None);
        }
        Self(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, saved);
        }
    }
}

/// The terminal's rows and columns (24×80 when there is none).
pub fn size() -> (u16, u16) {
    [
        termios::tcgetwinsize(std::io::stdout()),
        termios::tcgetwinsize(std::io::stdin()),
    ]
    .into_iter()
    .flatten()
    .find(|w| w.ws_row > 0 && w.ws_col > 0)
    .map_or((24, 80), |w| (w.ws_row, w.ws_col))
}

/// `TERM` to give a remote program.
pub fn term() -> String {
    std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into())
}
