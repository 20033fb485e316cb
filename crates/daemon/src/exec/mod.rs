//! `/loopsy/exec/1` (the flow is in `loopsy_wire::exec`): the [`Exec`] service owns the
//! exec policy and the programs running per peer; [`serve`] checks a request against the
//! policy and runs it ([`process`] starts and reaps the program), and [`client`] opens the
//! stream for this device's user and relays it, or ([`handover`]) writes and reads the
//! user's own stdout, stderr and stdin.

pub mod client;
pub mod handover;
pub mod policy;
mod process;
mod serve;
#[cfg(test)]
mod serve_tests;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::future::BoxFuture;
use loopsy_mesh::{PeerId, Stream};

use crate::service::{Peer, Service};

/// Why a program was not run, or did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Denied(#[from] policy::Denied),
    #[error("exec policy: at most {0} programs at once")]
    TooMany(usize),
    #[error("cannot start {program}: {reason}")]
    Start { program: String, reason: String },
    #[error("the program's pipes are missing")]
    NoPipes,
    #[error("the client went away: {0}")]
    ClientGone(String),
    #[error("cannot wait for the program: {0}")]
    Wait(std::io::Error),
}

/// The exec service: the policy from the config (each peer's overrides come with its
/// stream), and the programs running per peer.
#[derive(Debug, Default)]
pub struct Exec {
    policy: crate::live::Live<policy::Policy>,
    running: Running,
}

impl Exec {
    pub fn new(policy: impl Into<crate::live::Live<policy::Policy>>) -> Self {
        Self {
            policy: policy.into(),
            running: Running::default(),
        }
    }
}

impl Service for Exec {
    fn serve(self: Arc<Self>, peer: Peer, stream: Stream) -> BoxFuture<'static, ()> {
        Box::pin(async move { serve::serve(&self, &peer, stream).await })
    }
}

/// Programs running per peer, against the policy's `max_running`.
#[derive(Debug, Default)]
pub struct Running(Mutex<HashMap<PeerId, usize>>);

/// One running program's place; given back on drop.
pub struct Slot<'a>(&'a Running, PeerId);

impl Running {
    fn claim(&self, peer: PeerId, max: usize) -> Option<Slot<'_>> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(peer).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot(self, peer))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut counts = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.1) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.1);
            }
        }
    }
}
