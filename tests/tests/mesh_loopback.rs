//! Two mesh nodes in one process on loopback: they connect over TCP and over QUIC, learn
//! each other's names, carry framed application streams both ways, and keep only the
//! better of two connections.

use std::time::Duration;

use futures::StreamExt;
use loopsy_mesh::{Config, Keypair, Link, Mesh, MeshTask, Multiaddr, PeerState, framed};

const ECHO: &str = "/loopsy/test-echo/1";

const TCP: &str = "/ip4/127.0.0.1/tcp/0";
const QUIC: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

fn start(name: &str) -> (Mesh, MeshTask) {
    start_on(name, &[TCP, QUIC])
}

fn start_on(name: &str, listen: &[&str]) -> (Mesh, MeshTask) {
    Mesh::start(Config {
        keypair: Keypair::generate_ed25519(),
        name: name.into(),
        listen: listen.iter().map(|a| a.parse().expect("addr")).collect(),
        mdns: false,
        relays: Vec::new(),
        site: None,
        upnp: false,
        natpmp: false,
    })
    .expect("start mesh")
}

async fn listen_addr(mesh: &Mesh, transport: &str) -> Multiaddr {
    for _ in 0..100 {
        let status = mesh.status().await.expect("status");
        if let Some(addr) = status
            .listen_addrs
            .into_iter()
            .find(|a| a.to_string().contains(transport))
        {
            return addr;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no {transport} listen address");
}

async fn wait_for_peer(mesh: &Mesh, peer: loopsy_mesh::PeerId) -> PeerState {
    for _ in 0..200 {
        let found = mesh.peers().await.expect("peers").into_iter().find(|p| {
            p.peer_id == peer && p.link == Link::Direct && p.name.is_some() && p.rtt.is_some()
        });
        if let Some(state) = found {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("peer {peer} never showed as connected, named and pinged");
}

/// Echoes every framed message on the echo protocol, each stream in its own task.
fn serve_echo(mesh: &Mesh) -> tokio::task::JoinHandle<()> {
    let mut incoming = mesh.accept(ECHO).expect("accept");
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            tokio::spawn(async move {
                while let Ok(Some(msg)) = framed::read::<String, _>(&mut stream, 1024).await {
                    framed::write(&mut stream, &msg, 1024).await.expect("echo");
                }
            });
        }
    })
}

async fn echo(stream: &mut loopsy_mesh::Stream, text: &str) {
    framed::write(stream, &text.to_owned(), 1024)
        .await
        .expect("send");
    let back: Option<String> = framed::read(stream, 1024).await.expect("receive");
    assert_eq!(back.as_deref(), Some(text));
}

/// Over one transport only: with both, a QUIC connection would give way to TCP.
async fn connect_and_echo(transport: &str) {
    let listen = if transport == "/tcp/" { TCP } else { QUIC };
    let (a, a_task) = start_on("alpha", &[listen]);
    let (b, b_task) = start_on("bravo", &[listen]);
    let server = serve_echo(&a);

    let addr = listen_addr(&a, transport).await;
    b.dial(addr.clone()).await.expect("mesh up").expect("dial");
    let seen_by_b = wait_for_peer(&b, a.peer_id()).await;
    let seen_by_a = wait_for_peer(&a, b.peer_id()).await;
    assert_eq!(seen_by_b.name.as_deref(), Some("alpha"));
    assert_eq!(seen_by_a.name.as_deref(), Some("bravo"));
    assert!(
        seen_by_b.addrs[0].to_string().contains(transport),
        "the address in use comes first: {:?}",
        seen_by_b.addrs
    );

    let mut stream = b.open_stream(a.peer_id(), ECHO).await.expect("open stream");
    for text in ["hello", "", &"x".repeat(900)] {
        echo(&mut stream, text).await;
    }

    server.abort();
    b_task.shutdown().await;
    a_task.shutdown().await;
    assert!(a.peers().await.is_err(), "a stopped mesh says so");
}

#[tokio::test]
async fn two_nodes_connect_and_talk_over_tcp() {
    connect_and_echo("/tcp/").await;
}

#[tokio::test]
async fn two_nodes_connect_and_talk_over_quic() {
    connect_and_echo("/quic-v1").await;
}

#[tokio::test]
async fn a_protocol_nobody_accepts_is_refused() {
    let (a, _a_task) = start("alpha");
    let (b, _b_task) = start("bravo");
    let addr = listen_addr(&a, "/tcp/").await;
    b.dial(addr).await.expect("mesh up").expect("dial");
    wait_for_peer(&b, a.peer_id()).await;
    let result = b.open_stream(a.peer_id(), "/loopsy/nobody-home/1").await;
    assert!(
        matches!(
            result,
            Err(loopsy_mesh::OpenStreamError::UnsupportedProtocol(_))
        ),
        "{result:?}"
    );
}

/// A slower connection must not stay beside a faster one, nor carry new streams while it
/// lingers; but closing it under a running stream would cut an operation.
#[tokio::test]
async fn a_quic_connection_gives_way_to_tcp_once_its_last_stream_ends() {
    // Alpha's TCP on another address than its QUIC, and bravo on QUIC alone: neither dials
    // TCP beside the QUIC connection by itself, so the first stream surely goes over QUIC.
    let (a, _a_task) = start_on("alpha", &["/ip4/127.0.0.2/tcp/0", QUIC]);
    let (b, _b_task) = start_on("bravo", &[QUIC]);
    let _server = serve_echo(&a);
    let connections = || async {
        let peers = b.peers().await.expect("peers");
        let peer = peers.into_iter().find(|p| p.peer_id == a.peer_id());
        peer.map(|p| (p.connections, p.addrs[0].to_string()))
    };

    b.dial(listen_addr(&a, "/quic-v1").await)
        .await
        .expect("mesh up")
        .expect("dial");
    wait_for_peer(&b, a.peer_id()).await;
    let mut on_quic = b.open_stream(a.peer_id(), ECHO).await.expect("open");
    echo(&mut on_quic, "over quic").await;

    b.dial(listen_addr(&a, "/tcp/").await)
        .await
        .expect("mesh up")
        .expect("dial");
    // Past the idle timeout: the QUIC connection is let go, but its stream holds it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(connections().await.map(|c| c.0), Some(2));
    echo(&mut on_quic, "still over quic").await;
    // New streams go over TCP while QUIC lingers: were any of them on QUIC, it would hold
    // the QUIC connection open below.
    let mut later = Vec::new();
    for _ in 0..8 {
        let mut stream = b.open_stream(a.peer_id(), ECHO).await.expect("open");
        echo(&mut stream, "over tcp").await;
        later.push(stream);
    }

    drop(on_quic);
    for _ in 0..100 {
        if let Some((1, addr)) = connections().await {
            assert!(addr.contains("/tcp/"), "TCP is the one kept: {addr}");
            for stream in &mut later {
                echo(stream, "still over tcp").await;
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the QUIC connection stayed: {:?}", connections().await);
}
