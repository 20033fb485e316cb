//! The metrics endpoint: just enough HTTP/1.1 for a Prometheus scraper. `GET /metrics`
//! returns the registry as text; anything else is a 404 or 405; every connection closes
//! after one answer. Whoever can reach the port is a stranger: a request head is capped at
//! [`MAX_HEAD`] bytes and [`TIMEOUT`], and at most [`MAX_CONNECTIONS`] are served at once.

use std::{sync::Arc, time::Duration};

use libp2p::metrics::Registry;
use loopsy_mesh::web::{self, HeadError};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinSet,
};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// The largest request head read; a scraper's is a few hundred bytes.
pub const MAX_HEAD: usize = web::MAX_HEAD;
/// How long a client has to send its request, and then to take the answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 16;

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Metrics,
    /// `HEAD /metrics`: the headers only.
    MetricsHead,
    NotFound,
    MethodNotAllowed,
}

/// The request head cannot be read as HTTP.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an HTTP request")]
pub struct BadRequest;

/// Reads a request head (the bytes up to the blank line), as the node's web listener does.
pub fn parse(head: &[u8]) -> Result<Request, BadRequest> {
    let request = web::Request::parse(head).ok_or(BadRequest)?;
    Ok(match (request.method, request.path) {
        ("GET", "/metrics") => Request::Metrics,
        ("HEAD", "/metrics") => Request::MetricsHead,
        ("GET" | "HEAD", _) => Request::NotFound,
        _ => Request::MethodNotAllowed,
    })
}

/// Serves `registry` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        // Reap the finished, so the set stays as small as the semaphore allows.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, _)) => {
                let registry = registry.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    if let Err(error) = answer(stream, &registry).await {
                        tracing::debug!(%error, "metrics request");
                    }
                });
            }
            Err(error) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(%error, "metrics endpoint cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut stream = stream.compat();
    let head = match tokio::time::timeout(TIMEOUT, web::read_head(&mut stream)).await {
        Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
        Ok(Ok(head)) => Some(head),
        // Too long, or the client stopped before the head ended.
        Ok(Err(HeadError::TooLarge)) => None,
        Ok(Err(HeadError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
        Ok(Err(HeadError::Io(e))) => return Err(e),
    };
    let response = match head.as_deref().map(parse) {
        Some(Ok(Request::Metrics)) => response("200 OK", &encode(registry), true),
        Some(Ok(Request::MetricsHead)) => response("200 OK", &encode(registry), false),
        Some(Ok(Request::NotFound)) => response("404 Not Found", "not found\n", true),
        Some(Ok(Request::MethodNotAllowed)) => {
            response("405 Method Not Allowed", "GET /metrics\n", true)
        }
        Some(Err(BadRequest)) | None => response("400 Bad Request", "bad request\n", true),
    };
    let stream = stream.get_mut();
    tokio::time::timeout(TIMEOUT, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        // Writing to a String does not fail; an empty answer is the safe fallback.
        text.clear();
    }
    text
}

fn response(status: &str, body: &str, with_body: bool) -> Vec<u8> {
    let kind = if status.starts_with("200") {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn requests_are_read_from_their_first_line() {
        for (head, want) in [
            (
                "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                Ok(Request::Metrics),
            ),
            ("GET /metrics?x=1 HTTP/1.0\r\n\r\n", Ok(Request::Metrics)),
            ("HEAD /metrics HTTP/1.1\r\n\r\n", Ok(Request::MetricsHead)),
            ("GET / HTTP/1.1\r\n\r\n", Ok(Request::NotFound)),
            (
                "POST /metrics HTTP/1.1\r\n\r\n",
                Ok(Request::MethodNotAllowed),
            ),
            ("GET /metrics\r\n\r\n", Err(BadRequest)),
            ("GET  /metrics HTTP/1.1\r\n\r\n", Err(BadRequest)),
            ("GET metrics HTTP/1.1\r\n\r\n", Err(BadRequest)),
            ("GET /metrics SSH-2.0\r\n\r\n", Err(BadRequest)),
            ("no line end", Err(BadRequest)),
        ] {
            assert_eq!(parse(head.as_bytes()), want, "{head:?}");
        }
    }

    proptest! {
        /// Any bytes are a request or an error: never a panic.
        #[test]
        fn any_head_parses_or_is_refused(head in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&head);
        }
    }

    #[tokio::test]
    async fn a_scrape_gets_the_registry_and_a_flood_gets_nothing_big() {
        let mut registry = Registry::default();
        let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        registry.register("scrapes_seen", "a test counter", counter.clone());
        counter.inc();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(registry), async move {
            let _ = stopped.await;
        }));

        let ask = |request: Vec<u8>| async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let _ = stream.write_all(&request).await;
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer).await;
            answer
        };
        let answer = ask(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n".to_vec()).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("scrapes_seen_total 1\n"), "{answer}");
        assert!(answer.ends_with("# EOF\n"), "{answer}");
        // Exactly the cap, so the server has read all of it before it answers and closes.
        let answer = ask(vec![b'A'; MAX_HEAD]).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        let answer = ask(b"DELETE /metrics HTTP/1.1\r\n\r\n".to_vec()).await;
        assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");

        stop.send(()).expect("server runs");
        server.await.expect("server stops");
    }
}
