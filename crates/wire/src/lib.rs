//! Loopsy's wire formats, as pure code with no I/O.
//!
//! Everything a peer or a local client sends travels as a [`frame`]: a 4-byte big-endian
//! length, then one CBOR-encoded message of at most a stated size. Decoders here take bytes
//! and return typed errors, so property tests and fuzz targets call them directly.
//!
//! - [`frame`]: the length-prefixed CBOR framing and its limits.
//! - [`protocol`]: the versioned libp2p protocol names.
//! - [`control`]: the local control API between the CLI and its daemon.
//! - [`admission`]: the gate's verdict, first on every application stream.
//! - [`pair`]: pairing codes and the pairing handshake's messages.
//! - [`exec`]: remote commands and shells.
//! - [`transfer`]: copying files and trees.
//! - [`session`]: persistent terminal sessions.
//! - [`handover`]: a terminal handed to the daemon while attached.
//! - [`member`]: signed member records, the first replicated collection.
//! - [`replica`]: records of the last-writer-wins collections (sessions, context, messages).
//! - [`sync`]: the replication protocol's messages.

pub mod admission;
pub mod attention;
pub mod control;
pub mod exec;
pub mod frame;
pub mod handover;
pub mod member;
pub mod pair;
pub mod protocol;
pub mod replica;
pub mod session;
pub mod sync;
pub mod transfer;

pub use frame::{DecodeError, EncodeError, FrameError};
