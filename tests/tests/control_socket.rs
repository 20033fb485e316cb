//! The local control API as a client meets it: one node per home, clear errors, and a
//! daemon that shrugs off garbage and keeps serving.

use std::{
    io::{Read, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    time::Duration,
};

use loopsy_tests::{
    node::{self, Node, Options},
    temp::TempDir,
};
use loopsy_wire::{
    control::{ErrorCode, Response},
    frame,
};

/// Sends raw bytes to the node's socket and reads back one response frame, if any.
fn raw_exchange(node: &Node, bytes: &[u8]) -> Option<Response> {
    let mut stream = UnixStream::connect(node.home().join("control.sock")).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    stream.write_all(bytes).expect("write");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let (body, _) = frame::split(&reply, frame::DEFAULT_MAX_FRAME).ok()??;
    frame::decode(body).ok()
}

fn error_code(response: Option<Response>) -> ErrorCode {
    match response {
        Some(Response::Error(e)) => e.code,
        other => panic!("expected an error response, got {other:?}"),
    }
}

#[test]
fn a_second_node_on_the_same_home_is_refused() -> anyhow::Result<()> {
    let first = Node::start(Options::isolated("first"))?;
    let out = node::cli(
        &first.home(),
        &["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already running") && stderr.contains(&first.pid().to_string()),
        "the refusal names the running node: {stderr}"
    );
    // The first node is untouched.
    assert_eq!(
        first.json(&["id", "--json"])?["peer_id"],
        first.peer_id.as_str()
    );
    Ok(())
}

#[test]
fn state_files_are_private() -> anyhow::Result<()> {
    let node = Node::start(Options::isolated("private"))?;
    let mode = |name: &str| {
        std::fs::metadata(node.home().join(name))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    };
    assert_eq!(mode(""), 0o700, "the home directory");
    assert_eq!(mode("identity.key"), 0o600);
    assert_eq!(mode("config.toml"), 0o600);
    assert_eq!(mode("control.sock") & 0o077, 0, "the control socket");
    Ok(())
}

#[test]
fn garbage_gets_an_error_and_the_node_keeps_serving() -> anyhow::Result<()> {
    let node = Node::start(Options::isolated("garbage"))?;

    // A well-framed body that is not CBOR.
    let mut bytes = 3u32.to_be_bytes().to_vec();
    bytes.extend([0xff, 0xfe, 0xfd]);
    assert_eq!(
        error_code(raw_exchange(&node, &bytes)),
        ErrorCode::BadRequest
    );

    // Valid CBOR that is not a request.
    let not_a_request = frame::encode(&vec!["hello"; 3], frame::DEFAULT_MAX_FRAME)?;
    assert_eq!(
        error_code(raw_exchange(&node, &not_a_request)),
        ErrorCode::BadRequest
    );

    // A length prefix far over the limit: refused without reading 4 GiB.
    let huge = u32::MAX.to_be_bytes();
    assert_eq!(
        error_code(raw_exchange(&node, &huge)),
        ErrorCode::BadRequest
    );

    // A request from a newer client.
    #[derive(serde::Serialize)]
    struct Future {
        v: u16,
        op: &'static str,
    }
    let future = frame::encode(&Future { v: 99, op: "id" }, 1024)?;
    assert_eq!(
        error_code(raw_exchange(&node, &future)),
        ErrorCode::VersionMismatch
    );

    // A client that connects and says nothing, and one that hangs up mid-frame.
    let silent = UnixStream::connect(node.home().join("control.sock"))?;
    let mut partial = UnixStream::connect(node.home().join("control.sock"))?;
    partial.write_all(&[0, 0, 0, 10, 1, 2])?;
    drop(partial);

    // None of it disturbed the node.
    for _ in 0..3 {
        assert_eq!(
            node.json(&["id", "--json"])?["peer_id"],
            node.peer_id.as_str()
        );
    }
    drop(silent);
    Ok(())
}

#[test]
fn commands_without_a_node_say_where_they_looked() {
    let dir = TempDir::new("nonode");
    // (`id` answers from the home itself: see tests/tests/cli.rs.)
    for args in [&["status"][..], &["peers", "--json"]] {
        let out = node::cli(dir.path(), args);
        assert!(!out.status.success(), "{args:?} fails with no node");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&dir.path().display().to_string()) && stderr.contains("node"),
            "names the home and how to start a node: {stderr}"
        );
        assert!(out.stdout.is_empty(), "nothing on stdout for {args:?}");
    }
}

#[test]
fn sigterm_stops_the_node_and_a_restart_keeps_its_identity() -> anyhow::Result<()> {
    let dir = TempDir::new("restart");
    let home = dir.path().join("home");
    let node = Node::start(Options::isolated("term").home(&home))?;
    let peer_id = node.peer_id.clone();
    let status = node.stop()?;
    assert!(status.success(), "clean exit: {status}");
    assert!(!home.join("control.sock").exists(), "socket removed");
    assert!(
        !node::cli(&home, &["status"]).status.success(),
        "no node after stop"
    );

    let again = Node::start(Options::isolated("term").home(&home))?;
    assert_eq!(again.peer_id, peer_id, "same identity after a restart");
    Ok(())
}

#[test]
fn a_corrupt_identity_stops_the_node_with_a_clear_error() {
    let dir = TempDir::new("corrupt");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    std::fs::write(home.join("identity.key"), b"garbage").expect("write");
    std::fs::set_permissions(
        home.join("identity.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let out = node::cli(
        &home,
        &["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("identity.key") && stderr.contains("corrupt"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(home.join("identity.key")).expect("kept"),
        b"garbage"
    );
}

#[test]
fn status_and_peers_answer_in_json() -> anyhow::Result<()> {
    let node = Node::start(Options::isolated("status"))?;
    let status = node.json(&["status", "--json"])?;
    assert_eq!(status["peer_id"], node.peer_id.as_str());
    assert_eq!(status["name"], "status");
    let listening = status["listen_addrs"].as_array().expect("listen_addrs");
    assert!(
        listening.iter().any(|a| a
            .as_str()
            .is_some_and(|a| a.starts_with("/ip4/127.0.0.1/tcp/"))),
        "{status}"
    );
    assert!(
        listening
            .iter()
            .any(|a| a.as_str().is_some_and(|a| a.contains("/quic-v1"))),
        "{status}"
    );
    assert_eq!(node.peers()?.len(), 0, "an isolated node knows nobody");
    Ok(())
}
