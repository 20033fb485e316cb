//! The first frame the serving side writes on every application protocol stream: whether the
//! authorization gate let the peer in. The client may send its request before reading it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Admission {
    Accepted,
    Refused { reason: String },
}

/// Largest admission frame.
pub const MAX_FRAME: usize = 4096;
