//! What the gate hands a protocol: the [`Service`] trait, the per-stream [`Peer`] context
//! (who is asking, with what grants and policies, an audit handle bound to it, and the
//! signal of its departure), and [`Tasks`], the owner of every task a service starts.
//!
//! A service owns its state and gets the components it shares with others (trust, audit,
//! the mesh) as small handles when it is built; it never sees the node as a whole, so it
//! can be built and tested without a mesh.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use loopsy_mesh::{PeerId, Stream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    audit::{Audit, Outcome},
    caps::Caps,
    trust::Policies,
};

/// A protocol the gate serves: one admitted stream at a time, each with its [`Peer`].
pub trait Service: Send + Sync + 'static {
    fn serve(self: Arc<Self>, peer: Peer, stream: Stream) -> BoxFuture<'static, ()>;
}

/// The admitted peer a stream comes from, as a service needs it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub id: PeerId,
    /// Its name here, for logs.
    pub name: Option<String>,
    /// What it may do here.
    pub grants: Caps,
    /// Its own exec and file policies, over the config's.
    pub policies: Policies,
    /// The audit log, bound to this peer.
    pub audit: PeerAudit,
    /// Cancelled when the peer's last connection closes, it stops being a member, or the
    /// service stops.
    pub departed: CancellationToken,
}

impl Peer {
    /// A peer as the protocols' unit tests need one: these grants, no policies of its
    /// own, audited to `audit`.
    pub fn new(id: PeerId, grants: Caps, audit: Arc<Audit>) -> Self {
        Self {
            id,
            name: None,
            grants,
            policies: Policies::default(),
            audit: PeerAudit {
                audit,
                peer: id,
                name: None,
            },
            departed: CancellationToken::new(),
        }
    }

    /// Its name, or its peer ID when it has none here.
    pub fn shown(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.id.to_base58())
    }
}

/// The audit log, writing every entry for one peer.
#[derive(Debug, Clone)]
pub struct PeerAudit {
    audit: Arc<Audit>,
    peer: PeerId,
    name: Option<String>,
}

impl PeerAudit {
    pub fn new(audit: Arc<Audit>, peer: PeerId, name: Option<String>) -> Self {
        Self { audit, peer, name }
    }

    pub fn record(
        &self,
        action: &str,
        args: impl Into<String>,
        outcome: Outcome,
        reason: Option<String>,
    ) {
        self.audit.record(
            Some(self.peer),
            self.name.clone(),
            action,
            args,
            outcome,
            reason,
        );
    }
}

/// The tasks one component started, aborted together when it is dropped or stopped:
/// nothing a service starts outlives it. Finished tasks are reaped as new ones start.
#[derive(Debug, Default)]
pub struct Tasks(Mutex<JoinSet<()>>);

impl Tasks {
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while set.try_join_next().is_some() {}
        set.spawn(task);
    }

    /// Aborts every task and waits for them to end.
    pub async fn shutdown(&self) {
        let mut set = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        set.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_a_component_started_ends_with_it() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let tasks = Tasks::default();
        tasks.spawn(async move {
            let _held = tx;
            std::future::pending::<()>().await;
        });
        drop(tasks);
        assert!(
            rx.recv().await.is_none(),
            "the task was aborted, its sender dropped"
        );

        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let tasks = Tasks::default();
        tasks.spawn(async move {
            let _held = tx;
            std::future::pending::<()>().await;
        });
        tasks.shutdown().await;
        assert_eq!(
            rx.try_recv(),
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected),
            "stopped, and waited for"
        );
    }
}
