//! The speed of one raw libp2p stream between two meshes in this process, over loopback TCP
//! (TLS, Yamux): the ceiling for anything Loopsy sends. Prints MB/s for 1 GiB.
//!
//!     cargo run --release -p loopsy-mesh --example raw_stream [tcp|quic] [SRC DEST]
//!
//! With SRC and DEST (TCP only), the stream carries the file SRC into a new file DEST
//! instead of memory to memory, between two processes as a copy's two nodes: a blocking
//! thread on each side reads (writes) 256 KiB at a time, a few chunks ahead of (behind)
//! the stream, as a copy does, with no hashing and no protocol. That is the ceiling of
//! `loopsy cp` on the same files.

use std::{
    fs::File,
    io::{Read, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use loopsy_mesh::{Config, Keypair, Mesh};

const PROTOCOL: &str = "/loopsy/raw-speed/1";
const TOTAL: usize = 1 << 30;
const CHUNK: usize = 256 * 1024;
/// Chunks read ahead of the stream, and received ahead of the disk.
const AHEAD: usize = 8;

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

fn main() {
    // Tuned as a node is, so that the ceiling copies memory as a copy's nodes do.
    loopsy_mesh::copies::restart_tuned();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async {
            let args: Vec<String> = std::env::args().skip(1).collect();
            match args.as_slice() {
                [flag, dest] if flag == "--receive" => receive_into(PathBuf::from(dest)).await,
                [transport, src, dest] if transport == "tcp" => {
                    file_to_file(PathBuf::from(src), PathBuf::from(dest)).await
                }
                _ => run().await,
            }
        });
}

/// SRC to DEST: the receiving end runs as a process of its own (this example, with
/// `--receive DEST`), as a copy's two nodes do, each with a worker per core; this process
/// sends. Times from the stream's opening to the last byte in DEST's page cache.
async fn file_to_file(src: PathBuf, dest: PathBuf) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("this program"))
        .arg("--receive")
        .arg(&dest)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the receiving end");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let heard = lines
        .next_line()
        .await
        .expect("read")
        .expect("the receiver's address");
    let (peer, addr) = heard.split_once(' ').expect("PEER ADDR");
    let peer: loopsy_mesh::PeerId = peer.parse().expect("a peer ID");
    let (b, _b_task) = start("bravo", "/ip4/127.0.0.1/tcp/0");
    b.dial(addr.parse().expect("an address"))
        .await
        .expect("mesh")
        .expect("dial");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let stream = b.open_stream(peer, PROTOCOL).await.expect("open");
    from_file(stream, src).await;
    let total: usize = lines
        .next_line()
        .await
        .expect("read")
        .expect("the bytes received")
        .parse()
        .expect("a count");
    let secs = started.elapsed().as_secs_f64();
    println!("tcp: {:.0} MB/s", total as f64 / secs / 1e6);
}

/// The receiving end of [`file_to_file`]: prints its peer ID and address, takes one
/// stream into DEST, prints the bytes written.
async fn receive_into(dest: PathBuf) {
    let (a, _a_task) = start("alpha", "/ip4/127.0.0.1/tcp/0");
    let mut incoming = a.accept(PROTOCOL).expect("accept");
    let addr = loop {
        let status = a.status().await.expect("status");
        if let Some(addr) = status.listen_addrs.into_iter().next() {
            break addr;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("{} {addr}", a.peer_id());
    let (_, stream) = incoming.next().await.expect("a stream");
    println!("{}", into_file(stream, dest).await);
}

async fn run() {
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

/// Chunk buffers handed back for reuse, so neither side allocates (and zeroes) one per chunk.
#[derive(Clone, Default)]
struct Pool(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl Pool {
    fn take(&self) -> Vec<u8> {
        let mut buffer = self.0.lock().expect("pool").pop().unwrap_or_default();
        buffer.resize(CHUNK, 0);
        buffer
    }

    fn give(&self, buffer: Vec<u8>) {
        self.0.lock().expect("pool").push(buffer);
    }
}

/// Sends the file at `src` down `stream`, read on a blocking thread a few chunks ahead.
async fn from_file<S: futures::AsyncWrite + Unpin>(mut stream: S, src: PathBuf) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(AHEAD);
    let pool = Pool::default();
    let buffers = pool.clone();
    let reading = tokio::task::spawn_blocking(move || {
        let mut file = File::open(src).expect("open the source");
        loop {
            let mut chunk = buffers.take();
            let n = file.read(&mut chunk).expect("read the source");
            if n == 0 {
                break;
            }
            chunk.truncate(n);
            if tx.blocking_send(chunk).is_err() {
                break;
            }
        }
    });
    while let Some(chunk) = rx.recv().await {
        stream.write_all(&chunk).await.expect("write");
        pool.give(chunk);
    }
    stream.close().await.expect("close");
    reading.await.expect("reader");
}

/// Writes what `stream` carries into a new file at `dest` on a blocking thread, a few
/// chunks behind; returns the bytes written.
async fn into_file<S: futures::AsyncRead + Unpin>(mut stream: S, dest: PathBuf) -> usize {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(AHEAD);
    let pool = Pool::default();
    let buffers = pool.clone();
    let writing = tokio::task::spawn_blocking(move || {
        let mut file = File::create(dest).expect("create the destination");
        let mut total = 0;
        while let Some(chunk) = rx.blocking_recv() {
            file.write_all(&chunk).expect("write the destination");
            total += chunk.len();
            buffers.give(chunk);
        }
        total
    });
    loop {
        let mut chunk = pool.take();
        let mut filled = 0;
        // Whole chunks to the disk, as a copy writes them.
        while filled < CHUNK {
            match stream.read(&mut chunk[filled..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        chunk.truncate(filled);
        let short = filled < CHUNK;
        if tx.send(chunk).await.is_err() || short {
            break;
        }
    }
    drop(tx);
    writing.await.expect("writer")
}
