//! Serving `/loopsy/transfer/1`: the [`Transfer`] service takes a peer's push into its
//! write roots, or sends a pull from its read roots, through the same engine as the
//! opening side ([`super::send`], [`super::receive`]), and audits every copy.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use loopsy_mesh::{Stream, framed};
use loopsy_wire::transfer::{self, MAX_FRAME, Request};

use super::{
    Expect, Progress, Summary, TransferError, confine, homes::Homes, policy, receive, send, walk,
};
use crate::{
    audit::Outcome as Audited,
    service::{Peer, Service},
};

/// How long a client may take to say what to copy.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// The transfer service: the file roots from the config (each peer's own come with its
/// stream), and the Loopsy homes no copy reaches.
#[derive(Debug, Clone)]
pub struct Transfer {
    policy: crate::live::Live<policy::Policy>,
    homes: Homes,
}

impl Transfer {
    pub fn new(policy: impl Into<crate::live::Live<policy::Policy>>, homes: Homes) -> Self {
        Self {
            policy: policy.into(),
            homes,
        }
    }
}

impl Service for Transfer {
    fn serve(
        self: Arc<Self>,
        peer: Peer,
        stream: Stream,
    ) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async move { serve(&self, &peer, stream).await })
    }
}

/// Serves one transfer stream from an admitted peer: a push stores into its write roots
/// (which depend on what else it may do here), a pull sends from its read roots, and
/// neither reaches a Loopsy home. Every copy and every refusal is audited.
async fn serve(service: &Transfer, peer: &Peer, mut stream: Stream) {
    let request = match tokio::time::timeout(
        REQUEST_DEADLINE,
        framed::read::<Request, _>(&mut stream, MAX_FRAME),
    )
    .await
    {
        Ok(Ok(Some(request))) => request,
        _ => return,
    };
    let roots = service
        .policy
        .get()
        .roots(peer.policies.files.as_ref(), &peer.grants);
    let homes = service.homes.clone();
    let progress = Progress::default();
    let mut note = String::new();
    let (action, detail, result) = match request {
        Request::Push { dest, options } => {
            let shown = confine::shown(&dest);
            let expect = Expect {
                names: None,
                recursive: true,
                reports: false,
                homes: homes.clone(),
            };
            let place = match roots.make_drop() {
                Ok(()) => confine::requested(&roots.write, &dest)
                    .and_then(|path| confine::writable(&roots.write, &homes, &path))
                    .map_err(TransferError::from),
                Err(e) => Err(TransferError::Destination(format!(
                    "cannot make the drop directory: {e}"
                ))),
            };
            let result = match place {
                Ok(path) => receive::receive(stream, path, options, expect, &progress).await,
                Err(e) => refuse(stream, e, receive::refuse).await,
            };
            ("cp push", shown, result)
        }
        Request::Pull { sources, options } => {
            let sources: Vec<Vec<u8>> = sources.into_iter().map(|s| s.into_vec()).collect();
            let shown = sources
                .iter()
                .map(|s| confine::shown(s))
                .collect::<Vec<_>>()
                .join(" ");
            // Off the async threads: a walk may visit a million entries.
            let read = roots.read.clone();
            let offered = tokio::task::spawn_blocking(move || {
                if sources.len() > transfer::MAX_SOURCES {
                    return Err(TransferError::Destination(format!(
                        "more than {} sources",
                        transfer::MAX_SOURCES
                    )));
                }
                let paths = sources
                    .iter()
                    .map(|source| {
                        let path = confine::requested(&read, source)?;
                        Ok(confine::within(&read, &homes, &path)?)
                    })
                    .collect::<Result<Vec<PathBuf>, TransferError>>()?;
                let walked = walk::for_peer(&paths, options.recursive, &homes)?;
                Ok((walked, paths.len() as u32))
            })
            .await
            .unwrap_or_else(|e| Err(TransferError::Destination(e.to_string())));
            let result = match offered {
                Ok((walked, count)) => {
                    if walked.homes_left_out > 0 {
                        note = format!("; Loopsy homes left out: {}", walked.homes_left_out);
                    }
                    send::send(stream, walked.items, count, options, false, &progress).await
                }
                Err(e) => refuse(stream, e, send::refuse).await,
            };
            ("cp pull", shown, result)
        }
    };
    let (outcome, reason) = match &result {
        Ok(summary) if summary.failed == 0 => (Audited::Ok, None),
        Ok(summary) => (
            Audited::Failed,
            Some(format!("{} files failed", summary.failed)),
        ),
        Err(TransferError::Escape(e)) => (Audited::Denied, Some(e.to_string())),
        Err(e) => (Audited::Failed, Some(e.to_string())),
    };
    let moved = result.as_ref().map_or(0, |s| s.transferred);
    peer.audit.record(
        action,
        format!(
            "{detail} ({} files, {moved} bytes{note})",
            progress.files.load(Ordering::Relaxed)
        ),
        outcome,
        reason,
    );
}

/// Tells the other side why the copy cannot start, and passes the error on.
async fn refuse<F, Fut>(
    stream: Stream,
    error: TransferError,
    tell: F,
) -> Result<Summary, TransferError>
where
    F: FnOnce(Stream, String) -> Fut,
    Fut: Future<Output = ()>,
{
    tell(stream, error.to_string()).await;
    Err(error)
}
