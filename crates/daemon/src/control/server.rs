//! Serves the control socket: bounded connections, a deadline for each request, and a
//! clear error frame for anything that is not a valid request.

use std::{sync::Arc, time::Duration};

use loopsy_mesh::framed::{self, ReadError};
use loopsy_wire::control::{self, Error, ErrorCode, MAX_FRAME, Response};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::Semaphore,
    task::JoinSet,
};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// Clients served at once; more wait in the listen backlog.
const MAX_CLIENTS: usize = 64;

/// How long a client may take to send its request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// What answers requests: the daemon.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        request: loopsy_wire::control::Request,
    ) -> impl Future<Output = Response> + Send;
}

/// Accepts clients on `listener` until `shutdown` completes, then drops every open client.
pub async fn serve<H: Handler>(
    listener: UnixListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let mut clients = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
            permit = slots.clone().acquire_owned() => {
                let Ok(permit) = permit else { break };
                tokio::select! {
                    _ = &mut shutdown => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let handler = handler.clone();
                            clients.spawn(async move {
                                serve_client(stream, &*handler).await;
                                drop(permit);
                            });
                        }
                        Err(error) => {
                            tracing::warn!(%error, "control socket accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                }
            }
        }
    }
    clients.shutdown().await;
}

async fn serve_client<H: Handler>(stream: UnixStream, handler: &H) {
    let mut stream = stream.compat();
    let read =
        tokio::time::timeout(REQUEST_DEADLINE, framed::read_body(&mut stream, MAX_FRAME)).await;
    let response = match read {
        Err(_) => return, // too slow: just close
        Ok(Ok(None)) => return,
        Ok(Ok(Some(body))) => match control::decode_request(&body) {
            Ok(request) => handler.handle(request).await,
            Err(error) => Response::Error(error),
        },
        Ok(Err(ReadError::Io(_) | ReadError::Truncated)) => return,
        Ok(Err(error)) => Response::Error(Error::new(
            ErrorCode::BadRequest,
            format!("not a control request: {error}"),
        )),
    };
    if let Err(error) = framed::write(&mut stream, &response, MAX_FRAME).await {
        tracing::debug!(%error, "control client went away");
    }
}
