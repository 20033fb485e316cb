//! The WebSocket listener browsers dial: one port serves the web app to plain HTTP and
//! carries the mesh (Noise, Yamux) for WebSocket upgrades; `loopsy pair` links to it.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use anyhow::Context;
use loopsy_tests::node::{Node, Options};

/// One HTTP/1.1 request on a fresh connection: the whole answer, head and body.
fn http(port: u16, request: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn get(port: u16, path: &str) -> anyhow::Result<String> {
    http(port, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
}

#[test]
fn one_port_serves_the_app_and_carries_the_mesh() -> anyhow::Result<()> {
    // Alpha listens on WebSocket only: whoever reaches it, reaches it there.
    let alpha = Node::start(Options::named("alpha").args(&[
        "--no-mdns",
        "--listen",
        "/ip4/127.0.0.1/tcp/0/ws",
    ]))?;
    let bravo = Node::start(Options::isolated("bravo"))?;

    let mut invite = alpha.invite(&["--ttl", "60s"])?;
    let url = invite.url.clone().context("loopsy pair gives no link")?;
    let (origin, code) = url
        .split_once("/#code=")
        .context("a code in the fragment")?;
    assert_eq!(code, invite.code);
    let port: u16 = origin
        .strip_prefix("http://127.0.0.1:")
        .context("the link is to the loopback listener")?
        .parse()?;

    // The page and its files, with the headers that keep other pages from framing it.
    let page = get(port, "/")?;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("frame-ancestors 'none'"), "{page}");
    assert!(page.contains("X-Frame-Options: DENY"), "{page}");
    assert!(page.contains("Content-Type: text/html"), "{page}");
    assert!(page.contains("app.js"), "{page}");
    let script = get(port, "/app.js?v=1")?;
    assert!(script.contains("Content-Type: text/javascript"), "{script}");
    // Gzipped to a browser that takes it; a 304 to one that has this version.
    let zipped = http(
        port,
        "GET /app.js HTTP/1.1\r\nAccept-Encoding: gzip, deflate\r\n\r\n",
    )?;
    assert!(
        zipped.contains("Content-Encoding: gzip\r\n"),
        "{zipped:.300}"
    );
    let length = |answer: &str| -> Option<usize> {
        answer
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))?
            .parse()
            .ok()
    };
    let (zipped_len, script_len) = (length(&zipped), length(&script));
    assert!(
        zipped_len.zip(script_len).is_some_and(|(z, s)| z * 2 < s),
        "gzip halves the script: {zipped_len:?} of {script_len:?}"
    );
    let etag = script
        .lines()
        .find_map(|l| l.strip_prefix("ETag: "))
        .context("an ETag")?;
    let again = http(
        port,
        &format!("GET /app.js HTTP/1.1\r\nIf-None-Match: {etag}\r\n\r\n"),
    )?;
    assert!(
        again.starts_with("HTTP/1.1 304 Not Modified\r\n"),
        "{again}"
    );
    for (path, status) in [("/../home/key", "404"), ("/trust.toml", "404")] {
        let answer = get(port, path)?;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {answer}"
        );
    }
    let post = http(port, "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")?;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");

    // Bravo pairs by the link, over WebSocket, and the mesh works over it.
    let (joined, out) = bravo.join(&url);
    assert!(joined, "{out}\n{}", alpha.log());
    let result = invite.result()?;
    assert_eq!(result["check_code"], out["check_code"]);
    let echoed = bravo.ok(&["exec", "alpha", "--", "echo", "over-websocket"]);
    assert_eq!(echoed.trim(), "over-websocket");
    let alpha_seen = bravo.peer(&alpha.peer_id).context("bravo lists alpha")?;
    assert!(
        alpha_seen["addrs"].to_string().contains("/ws"),
        "{alpha_seen}"
    );

    // The page is still served beside the mesh connection.
    assert!(get(port, "/")?.starts_with("HTTP/1.1 200"));
    Ok(())
}
