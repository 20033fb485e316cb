//! The local control API on the home's Unix socket: the CLI and `loopsy mcp` are clients
//! of it through `loopsy-client`, and any local program can be another
//! (`docs/control-api.md`).
//!
//! A client connects, sends one request frame, reads one response frame (or several, for
//! streams) and the daemon closes. The socket is private to the owner (mode 0600 inside a
//! 0700 directory): whoever can open it has the node's full authority.

pub(crate) mod api;
mod server;

pub use server::{Gone, Handler, Reply, serve};
