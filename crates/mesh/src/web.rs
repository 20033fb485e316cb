//! The WebSocket listener browsers dial, which also serves the web app on the same port.
//!
//! A browser page may only open WebSockets its CSP allows, and a page is simplest to trust
//! when it comes from the device it talks to: so one TCP port answers both. Each accepted
//! connection's HTTP request head is read first. A WebSocket upgrade goes on to libp2p's
//! WebSocket transport (then Noise and Yamux, as on TCP), with the head replayed; any other
//! request gets a file of the [`Site`] (or an error status) and the connection closes, which
//! libp2p sees as a failed incoming connection and forgets.
//!
//! With a [`Certificate`], `/tls/ws` listen addresses serve HTTPS and secure WebSockets the
//! same way ([`tls`]).
//!
//! What a stranger can do here: fetch the static app (public code), or hold a connection
//! until [`HEAD_DEADLINE`] with at most [`MAX_HEAD`] bytes, under the swarm's limit on
//! pending incoming connections.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, future::Either};
use libp2p::{
    PeerId,
    core::{ConnectedPoint, Transport, muxing::StreamMuxerBox, transport::Boxed, upgrade::Version},
    identity::Keypair,
    noise, tcp, websocket,
};

mod tls;

pub use tls::{Certificate, CertificateError};
use tls::{Secured, TlsPorts};

/// The largest request head read; the browser's upgrade request is well under 2 KiB.
pub const MAX_HEAD: usize = 8 * 1024;

/// How long a connection may take to send its request head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(10);

/// What the listener serves to plain HTTP requests.
#[derive(Debug, Clone, Copy)]
pub struct Site {
    /// The file at a path (`/` included, no query string): its content type and bytes.
    pub file: fn(&str) -> Option<Page>,
    /// The `Content-Security-Policy` header of every answer (a `<meta>` CSP cannot say
    /// `frame-ancestors`).
    pub csp: &'static str,
}

/// One file of a [`Site`].
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// The body gzipped, sent to a browser that accepts it (a phone on a slow link through
    /// a relay loads a quarter of the bytes).
    pub gzip: Option<&'static [u8]>,
    /// Its entity tag (quoted): a browser that has this version already gets a bodiless
    /// `304 Not Modified`.
    pub etag: Option<&'static str>,
}

/// A WebSocket transport over TCP, authenticated with Noise and multiplexed with Yamux,
/// answering plain HTTP from `site` when there is one, and listening on `/tls/ws` with
/// `certificate` when there is one.
pub fn transport(
    keypair: &Keypair,
    site: Option<Site>,
    certificate: Option<Certificate>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
    let ports = TlsPorts::default();
    let secure = certificate.is_some();
    let tls_ports = ports.clone();
    let tcp = tcp::tokio::Transport::new(tcp::Config::default()).and_then(
        move |stream, endpoint: ConnectedPoint| {
            let tls = match &endpoint {
                ConnectedPoint::Listener { local_addr, .. } => certificate
                    .clone()
                    .filter(|_| tls::tcp_port(local_addr).is_some_and(|p| tls_ports.contains(p))),
                ConnectedPoint::Dialer { .. } => None,
            };
            accept(stream, endpoint.is_listener(), site, tls)
        },
    );
    Ok(Secured::new(websocket::Config::new(tcp), secure, ports)
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(keypair)?)
        .multiplex(crate::muxer::Config)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// A TCP connection on its way to the WebSocket layer: its TLS ended first when it came to
/// a TLS port, then its request head read when this side listens with a site.
async fn accept<S>(
    stream: S,
    listener: bool,
    site: Option<Site>,
    tls: Option<Certificate>,
) -> io::Result<Either<Prefixed<futures_rustls::server::TlsStream<S>>, Prefixed<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(tls) = tls else {
        return Ok(Either::Right(match (listener, site) {
            (true, Some(site)) => sniff(stream, site, HEAD_DEADLINE).await?,
            _ => Prefixed::new(Vec::new(), stream),
        }));
    };
    let stream = tokio::time::timeout(HEAD_DEADLINE, tls.acceptor.accept(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no TLS handshake"))??;
    Ok(Either::Left(match site {
        Some(site) => sniff(stream, site, HEAD_DEADLINE).await?,
        None => Prefixed::new(Vec::new(), stream),
    }))
}

/// Reads the request head: a WebSocket upgrade is handed on (the head replayed), any other
/// request is answered from `site` and ends here with an error.
async fn sniff<S>(mut stream: S, site: Site, deadline: Duration) -> io::Result<Prefixed<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let head = match tokio::time::timeout(deadline, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(HeadError::Io(e))) => return Err(e),
        Ok(Err(HeadError::TooLarge)) => {
            respond(
                &mut stream,
                &Answer::status(431, "request head too large"),
                false,
            )
            .await;
            return Err(served());
        }
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "no request head")),
    };
    let request = match Request::parse(&head) {
        Some(request) => request,
        None => {
            respond(&mut stream, &Answer::status(400, "bad request"), false).await;
            return Err(served());
        }
    };
    if request.websocket {
        return Ok(Prefixed::new(head, stream));
    }
    let answer = match request.method {
        "GET" | "HEAD" => match (site.file)(request.path) {
            Some(page) => Answer::page(page, site.csp, &request),
            None => Answer::status(404, "not found"),
        },
        _ => Answer::status(405, "method not allowed"),
    };
    respond(&mut stream, &answer, request.method == "HEAD").await;
    Err(served())
}

/// Why a connection that got an HTTP answer goes no further (it is not an error worth a
/// warning: the event loop logs failed incoming connections at debug level).
fn served() -> io::Error {
    io::Error::other("answered a plain HTTP request")
}

/// A request head that could not be read.
#[derive(Debug)]
pub enum HeadError {
    Io(io::Error),
    /// [`MAX_HEAD`] bytes came without the blank line that ends a head.
    TooLarge,
}

/// Reads until the blank line that ends a request head, [`MAX_HEAD`] bytes at most; any
/// bytes after it stay in the returned buffer, to be replayed. The relay's metrics
/// endpoint reads its requests with it too.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        head.extend_from_slice(&chunk[..n]);
        if head_end(&head).is_some() {
            return Ok(head);
        }
        if head.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The parts of a request head that decide the answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Without its query string.
    pub path: &'a str,
    /// `Upgrade: websocket` was asked for.
    pub websocket: bool,
    /// `Accept-Encoding` names gzip.
    pub gzip: bool,
    /// The `If-None-Match` header's value.
    pub if_none_match: Option<&'a str>,
}

impl<'a> Request<'a> {
    /// Reads a whole head (up to its blank line); `None` when it is not HTTP/1.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let head = std::str::from_utf8(&bytes[..head_end(bytes)?]).ok()?;
        let mut lines = head.split("\r\n");
        let mut start = lines.next()?.split(' ');
        let (method, target, version) = (start.next()?, start.next()?, start.next()?);
        if start.next().is_some()
            || method.is_empty()
            || !version.starts_with("HTTP/1.")
            || !target.starts_with('/')
        {
            return None;
        }
        let path = target.split('?').next().unwrap_or(target);
        let (mut websocket, mut gzip, mut if_none_match) = (false, false, None);
        for line in lines {
            let (name, value) = line.split_once(':')?;
            let name = name.trim();
            let listed = |wanted: &str| {
                value.split(',').any(|v| {
                    // `gzip;q=0` refuses it.
                    let mut parts = v.split(';');
                    let named = parts
                        .next()
                        .is_some_and(|n| n.trim().eq_ignore_ascii_case(wanted));
                    named
                        && !parts
                            .any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"))
                })
            };
            if name.eq_ignore_ascii_case("upgrade") {
                websocket |= listed("websocket");
            } else if name.eq_ignore_ascii_case("accept-encoding") {
                gzip |= listed("gzip");
            } else if name.eq_ignore_ascii_case("if-none-match") {
                if_none_match = Some(value.trim());
            }
        }
        Some(Self {
            method,
            path,
            websocket,
            gzip,
            if_none_match,
        })
    }
}

/// An HTTP response: status, content type, body.
struct Answer {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    csp: Option<&'static str>,
    etag: Option<&'static str>,
    gzipped: bool,
}

impl Answer {
    /// The page for `request`: gzipped when it may be, or `304` when it has this version.
    fn page(page: Page, csp: &'static str, request: &Request<'_>) -> Self {
        let fresh = match (page.etag, request.if_none_match) {
            (Some(etag), Some(wanted)) => wanted.split(',').any(|w| {
                let w = w.trim();
                w == "*" || w.strip_prefix("W/").unwrap_or(w) == etag
            }),
            _ => false,
        };
        let gzip = page.gzip.filter(|_| request.gzip);
        Self {
            status: if fresh { 304 } else { 200 },
            reason: if fresh { "Not Modified" } else { "OK" },
            content_type: page.content_type,
            body: match (fresh, gzip) {
                (true, _) => b"",
                (false, Some(gzip)) => gzip,
                (false, None) => page.body,
            },
            csp: Some(csp),
            etag: page.etag,
            gzipped: gzip.is_some() && !fresh,
        }
    }

    fn status(status: u16, reason: &'static str) -> Self {
        Self {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: reason.as_bytes(),
            csp: None,
            etag: None,
            gzipped: false,
        }
    }

    fn head(&self) -> String {
        let csp = self
            .csp
            .unwrap_or("default-src 'none'; frame-ancestors 'none'");
        let mut extra = String::new();
        // A 304 has no body, and no length but the 200's.
        if self.status != 304 {
            extra.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        if let Some(etag) = self.etag {
            extra.push_str(&format!("ETag: {etag}\r\nVary: Accept-Encoding\r\n"));
        }
        if self.gzipped {
            extra.push_str("Content-Encoding: gzip\r\n");
        }
        format!(
            "HTTP/1.1 {} {}\r\n\
             Content-Type: {}\r\n\
             {extra}\
             Content-Security-Policy: {csp}\r\n\
             X-Frame-Options: DENY\r\n\
             X-Content-Type-Options: nosniff\r\n\
             Referrer-Policy: no-referrer\r\n\
             Cross-Origin-Opener-Policy: same-origin\r\n\
             Cache-Control: no-cache\r\n\
             Connection: close\r\n\r\n",
            self.status, self.reason, self.content_type,
        )
    }
}

/// Writes the answer and closes; a client that went away is no matter.
async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, answer: &Answer, head_only: bool) {
    let write = async {
        stream.write_all(answer.head().as_bytes()).await?;
        if !head_only {
            stream.write_all(answer.body).await?;
        }
        stream.close().await
    };
    let _ = tokio::time::timeout(HEAD_DEADLINE, write).await;
}

/// A stream whose first bytes were already read: they are read again first.
#[derive(Debug)]
pub struct Prefixed<S> {
    head: Vec<u8>,
    read: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(head: Vec<u8>, inner: S) -> Self {
        Self {
            head,
            read: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.read < this.head.len() {
            let rest = &this.head[this.read..];
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            this.read += n;
            if this.read == this.head.len() {
                this.head = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: Site = Site {
        file: |path| match path {
            "/" => Some(Page {
                content_type: "text/html",
                body: b"<p>hello</p>",
                gzip: Some(b"GZ"),
                etag: Some("\"v1\""),
            }),
            _ => None,
        },
        csp: "default-src 'self'",
    };

    /// Runs `sniff` on a request, returning what the client read back, and whether the
    /// connection went on to the WebSocket layer with the request replayed.
    async fn exchange(request: &[u8]) -> (String, Option<Vec<u8>>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let server = tokio_util::compat::TokioAsyncReadCompatExt::compat(server);
        let mut client = tokio_util::compat::TokioAsyncReadCompatExt::compat(client);
        client.write_all(request).await.expect("write");
        let outcome = sniff(server, SITE, HEAD_DEADLINE).await;
        let replayed = match outcome {
            Ok(mut stream) => {
                let mut replayed = vec![0; request.len()];
                stream.read_exact(&mut replayed).await.expect("replay");
                Some(replayed)
            }
            Err(_) => None,
        };
        let mut answer = Vec::new();
        if replayed.is_none() {
            client.read_to_end(&mut answer).await.expect("answer");
        }
        (String::from_utf8_lossy(&answer).into_owned(), replayed)
    }

    #[tokio::test]
    async fn a_page_request_gets_the_page_with_its_headers() {
        let (answer, replayed) = exchange(b"GET /?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(replayed.is_none());
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("Content-Security-Policy: default-src 'self'\r\n"));
        assert!(answer.contains("X-Frame-Options: DENY\r\n"));
        assert!(answer.contains("Content-Length: 12\r\n"));
        assert!(answer.ends_with("\r\n\r\n<p>hello</p>"));
    }

    #[tokio::test]
    async fn a_browser_that_takes_gzip_gets_it_and_one_with_the_version_gets_a_304() {
        let (answer, _) =
            exchange(b"GET / HTTP/1.1\r\nAccept-Encoding: br, GZIP;q=0.8\r\n\r\n").await;
        assert!(answer.contains("Content-Encoding: gzip\r\n"), "{answer}");
        assert!(answer.contains("ETag: \"v1\"\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nGZ"), "{answer}");
        for refused in ["gzip;q=0", "br", "identity"] {
            let request = format!("GET / HTTP/1.1\r\nAccept-Encoding: {refused}\r\n\r\n");
            let (answer, _) = exchange(request.as_bytes()).await;
            assert!(!answer.contains("Content-Encoding"), "{refused}: {answer}");
            assert!(answer.ends_with("<p>hello</p>"), "{answer}");
        }
        for have in ["\"v1\"", "W/\"v1\"", "\"v0\", \"v1\"", "*"] {
            let request = format!("GET / HTTP/1.1\r\nIf-None-Match: {have}\r\n\r\n");
            let (answer, _) = exchange(request.as_bytes()).await;
            assert!(
                answer.starts_with("HTTP/1.1 304 Not Modified\r\n"),
                "{answer}"
            );
            assert!(answer.ends_with("\r\n\r\n") && !answer.contains("Content-Length"));
        }
        let (answer, _) = exchange(b"GET / HTTP/1.1\r\nIf-None-Match: \"v0\"\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    }

    #[tokio::test]
    async fn head_has_no_body_and_unknown_paths_and_methods_are_refused() {
        let (answer, _) = exchange(b"HEAD / HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\n"));
        let (answer, _) = exchange(b"GET /../etc/passwd HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let (answer, _) = exchange(b"POST / HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
        let (answer, _) = exchange(b"GET / SPDY\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        let (answer, _) = exchange(b"\xff\xfe / HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }

    #[tokio::test]
    async fn an_upgrade_goes_on_with_its_head_replayed() {
        let request =
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nupgrade: WebSocket\r\n\r\n";
        let (answer, replayed) = exchange(request).await;
        assert_eq!(answer, "");
        assert_eq!(replayed.as_deref(), Some(&request[..]));
    }

    #[tokio::test]
    async fn an_endless_head_is_cut_at_the_cap() {
        let mut request = b"GET / HTTP/1.1\r\n".to_vec();
        while request.len() <= MAX_HEAD + 1024 {
            request.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let (answer, replayed) = exchange(&request).await;
        assert!(replayed.is_none());
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }

    #[tokio::test]
    async fn a_silent_connection_is_dropped_at_the_deadline() {
        let (_client, server) = tokio::io::duplex(1024);
        let server = tokio_util::compat::TokioAsyncReadCompatExt::compat(server);
        let deadline = Duration::from_millis(50);
        let error = sniff(server, SITE, deadline).await.expect_err("no head");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
