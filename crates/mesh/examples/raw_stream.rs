//! The speed of one raw libp2p stream between two meshes in this process, over loopback TCP
//! (TLS, Yamux): the ceiling for anything Loopsy sends. Prints MB/s for 1 GiB.
//!
//!     cargo run --release -p loopsy-mesh --example raw_stream [tcp|quic]

use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use loopsy_mesh::{Config, Keypair, Mesh};

const PROTOCOL: &str = "/loopsy/raw-speed/1";
const TOTAL: usize = 1 << 30;

fn start(name: &str, listen: &str) -> (Mesh, loopsy_mesh::MeshTask) {
    Mesh::start(Config {
        keypair: Keypair::generate_ed25519(),
        name: name.into(),
        listen: vec![listen.parse().expect("address")],
        mdns: false,
        relays: Vec::new(),
        site: None,
        upnp: false,
        natpmp: false,
    })
    .expect("start a mesh")
}

#[tokio::main]
async fn main() {
    let transport = std::env::args().nth(1).unwrap_or_else(|| "tcp".into());
    let listen = if transport == "quic" {
        "/ip4/127.0.0.1/udp/0/quic-v1"
    } else {
        "/ip4/127.0.0.1/tcp/0"
    };
    let (a, _a_task) = start("alpha", listen);
    let (b, _b_task) = start("bravo", listen);
    let mut incoming = a.accept(PROTOCOL).expect("accept");
    let streams: usize = std::env::var("STREAMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let sink = tokio::spawn(async move {
        let mut readers = Vec::new();
        for _ in 0..streams {
            let (_, mut stream) = incoming.next().await.expect("a stream");
            readers.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n,
                    }
                }
                total
            }));
        }
        let mut total = 0;
        for r in readers {
            total += r.await.expect("reader");
        }
        total
    });
    let addr = loop {
        let status = a.status().await.expect("status");
        if let Some(addr) = status.listen_addrs.into_iter().next() {
            break addr;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    b.dial(addr).await.expect("mesh").expect("dial");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..streams {
        let mut stream = b.open_stream(a.peer_id(), PROTOCOL).await.expect("open");
        writers.push(tokio::spawn(async move {
            let chunk = vec![7u8; 256 * 1024];
            for _ in 0..TOTAL / streams / chunk.len() {
                stream.write_all(&chunk).await.expect("write");
            }
            stream.close().await.expect("close");
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let received = sink.await.expect("sink");
    let secs = started.elapsed().as_secs_f64();
    println!("{transport}: {:.0} MB/s", received as f64 / secs / 1e6);
}
