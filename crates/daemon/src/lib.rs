//! A Loopsy node's daemon: the state directory ([`Home`]), the identity and [`config`], the
//! lock that keeps one node per home, and the local [`control`] API that the CLI and other
//! local programs use. [`node::run`] ties them to the mesh.

mod addrs;
pub mod attention;
pub mod audit;
pub mod caps;
pub mod clock;
pub mod config;
pub mod control;
pub mod ctx;
mod dial;
pub mod exec;
mod fsutil;
mod gate;
pub mod home;
pub mod inbox;
mod keeper;
pub mod live;
mod lock;
mod netcheck;
pub mod node;
mod pair;
pub mod passed;
mod ports;
pub mod replica;
mod seal;
pub mod service;
pub mod session;
mod sync;
#[cfg(test)]
mod testing;
pub mod transfer;
pub mod trust;

pub use home::Home;
pub use loopsy_mesh::Multiaddr;
