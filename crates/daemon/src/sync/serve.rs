//! The serving side of `/loopsy/sync/1`: answer a member's digest with a delta and take
//! its records, or take its push.

use std::sync::Arc;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, future::BoxFuture};
use loopsy_mesh::Stream;
use loopsy_wire::sync::Message;
use serde_bytes::ByteBuf;

use super::{DEADLINE, Engine, SyncError, compare, may_share, read, write};
use crate::service::{Peer, Service};

impl Service for Engine {
    fn serve(self: Arc<Self>, peer: Peer, stream: Stream) -> BoxFuture<'static, ()> {
        Box::pin(async move { serve(&self, &peer, stream).await })
    }
}

/// Serves a sync stream from an admitted member.
pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    peer: &Peer,
    mut stream: S,
) {
    let result = tokio::time::timeout(DEADLINE, answer(engine, peer, &mut stream)).await;
    if let Ok(Err(error)) = result {
        tracing::debug!(peer = %peer.id, %error, "sync exchange failed");
    }
    let _ = stream.close().await;
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    peer: &Peer,
    stream: &mut S,
) -> Result<(), SyncError> {
    match read(stream).await? {
        Some(Message::Digest {
            collection,
            entries,
        }) => {
            let c = engine.collection(&collection)?;
            if !may_share(&**c, Some(&peer.grants)) {
                // Nothing either way: an empty delta, so the peer's side ends cleanly.
                let nothing = Message::Delta {
                    records: Vec::new(),
                    want: Vec::new(),
                };
                return write(stream, &nothing).await;
            }
            let (send, want) = compare(&c.digest(), &entries);
            let records = c.records(&send);
            let want = want.into_iter().map(ByteBuf::from).collect();
            write(stream, &Message::Delta { records, want }).await?;
            if let Some(Message::Records { records }) = read(stream).await? {
                engine.learn(&**c, records, peer.id);
            }
            Ok(())
        }
        Some(Message::Push {
            collection,
            records,
        }) => {
            let c = engine.collection(&collection)?;
            if may_share(&**c, Some(&peer.grants)) {
                engine.learn(&**c, records, peer.id);
            }
            Ok(())
        }
        Some(_) => Err(SyncError::Unexpected("a digest or a push")),
        None => Ok(()),
    }
}
