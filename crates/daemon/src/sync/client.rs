//! The opening side of `/loopsy/sync/1`: anti-entropy with one member, collection by
//! collection.

use futures::AsyncWriteExt;
use loopsy_mesh::{Mesh, PeerId};
use loopsy_wire::{
    protocol,
    sync::{MAX_FRAME, Message},
};

use super::{DEADLINE, Engine, SyncError, read, write};
use crate::gate;

impl Engine {
    /// Anti-entropy with `peer` for every collection, over `mesh`.
    pub async fn reconcile(&self, mesh: &Mesh, peer: PeerId) -> Result<(), SyncError> {
        for collection in &self.collections {
            let name = collection.name();
            tokio::time::timeout(DEADLINE, self.reconcile_one(mesh, peer, name))
                .await
                .map_err(|_| SyncError::Timeout {
                    collection: name,
                    peer,
                })??;
        }
        Ok(())
    }

    async fn reconcile_one(
        &self,
        mesh: &Mesh,
        peer: PeerId,
        name: &'static str,
    ) -> Result<(), SyncError> {
        let collection = self.collection(name)?;
        if !self.shares_with(&**collection, &peer) {
            return Ok(());
        }
        let digest = Message::Digest {
            collection: name.to_owned(),
            entries: collection.digest(),
        };
        let mut stream = gate::open(mesh, peer, protocol::SYNC, &digest, MAX_FRAME)
            .await
            .map_err(|e| match e {
                gate::NotAdmitted::Refused(reason) => SyncError::Refused(reason),
                broken => SyncError::Stream(broken.to_string()),
            })?;
        let Some(Message::Delta { records, want }) = read(&mut stream).await? else {
            return Err(SyncError::Unexpected("a delta"));
        };
        let want: Vec<Vec<u8>> = want.into_iter().map(|k| k.into_vec()).collect();
        let answer = collection.records(&want);
        write(&mut stream, &Message::Records { records: answer }).await?;
        let _ = stream.close().await;
        self.learn(&**collection, records, peer);
        Ok(())
    }
}
