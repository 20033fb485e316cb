//! Versioned protocol names. A breaking change to a protocol gets a new number, so old and
//! new nodes negotiate what both speak instead of misreading each other.

/// Pairing: the PSK Noise handshake between an inviter and a joiner.
pub const PAIR: &str = "/loopsy/pair/1";
/// Remote command execution and shells.
pub const EXEC: &str = "/loopsy/exec/1";
/// File transfer.
pub const TRANSFER: &str = "/loopsy/transfer/1";
/// Persistent terminal sessions.
pub const SESSION: &str = "/loopsy/session/1";
/// Replication of shared state between members.
pub const SYNC: &str = "/loopsy/sync/1";

/// Every application protocol, for gates and tests that must cover them all.
pub const APPLICATION: [&str; 4] = [EXEC, TRANSFER, SESSION, SYNC];

/// The identify protocol version a Loopsy node announces.
pub const IDENTIFY: &str = "/loopsy/id/1";
/// A check that a connection still carries anything: one byte there and back, open to
/// every peer, like ping.
pub const ALIVE: &str = "/loopsy/alive/1";

/// The control API's version; a client and a daemon of different versions refuse each other
/// with a clear error.
pub const CONTROL_VERSION: u16 = 1;
