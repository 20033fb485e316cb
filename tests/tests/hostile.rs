//! A hostile member: a paired device whose software turns against its peers. It opens
//! hundreds of streams and never reads them, and sends frames that claim to be a gigabyte.
//! The node it attacks stays within bounded memory, and keeps serving its other members.

use std::time::{Duration, Instant};

use futures::{AsyncWriteExt, StreamExt, stream::FuturesUnordered};
use loopsy_mesh::identity;
use loopsy_tests::{
    node::{Node, Options},
    proc::rss_kib,
    stranger,
};
use loopsy_wire::protocol;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_floods_and_lies_cannot_starve_or_swell_a_node() -> anyhow::Result<()> {
    let alpha = Node::start(Options::isolated("alpha"))?;
    let bravo = Node::start(Options::isolated("bravo"))?;
    let charlie = Node::start(Options::isolated("charlie"))?;
    alpha.pair_with(&bravo)?;
    alpha.pair_with(&charlie)?;
    // Bravo's identity, now run by hostile code instead of loopsy.
    let key = identity::load_or_create(&bravo.home().join("identity.key"))?;
    bravo.stop()?;
    let target: libp2p::PeerId = alpha.peer_id.parse()?;
    let addr = alpha.tcp_addr()?;
    let (hostile, _task) = stranger::impersonating(key, "bravo", target, addr).await?;
    let before = rss_kib(alpha.pid());

    // Thousands of streams opened at once, held open and never read, on every application
    // protocol; every fourth claims a frame of a gigabyte and sends a little of it. Those
    // the connection will not carry (yamux bounds streams per connection) fail to open.
    let attempts = (0..3000).map(|i| {
        let hostile = hostile.clone();
        async move {
            let name = protocol::APPLICATION[i % protocol::APPLICATION.len()];
            let mut stream = hostile.open_stream(target, name).await.ok()?;
            if i % 4 == 0 {
                let mut lie = (1u32 << 30).to_be_bytes().to_vec();
                lie.extend_from_slice(&[0xa5; 4096]);
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&lie)).await;
            }
            Some(stream)
        }
    });
    // Opens past the connection's bound wait in turn for a place (libp2p-stream asks for
    // one at a time), so the attack is whatever got open within its time, not all 3000.
    let mut attempts: FuturesUnordered<_> = attempts.collect();
    let mut held = Vec::new();
    let attack = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(attack);
    loop {
        tokio::select! {
            next = attempts.next() => match next {
                Some(stream) => held.extend(stream),
                None => break,
            },
            () = &mut attack => break,
        }
    }
    drop(attempts);
    assert!(!held.is_empty(), "the hostile device got streams open");

    // Charlie is served all the same, promptly.
    let began = Instant::now();
    let out = charlie.cli(&["exec", "alpha", "--", "echo", "served"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "served");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "charlie waited {:?}",
        began.elapsed()
    );
    let during = rss_kib(alpha.pid());
    println!(
        "alpha's memory: {} MiB before, {} MiB with {} of 3000 hostile streams open",
        before / 1024,
        during / 1024,
        held.len()
    );
    assert!(
        during < before + 128 * 1024,
        "memory stays bounded: {before} KiB before, {during} KiB during"
    );
    drop(held);
    drop(hostile);
    let out = charlie.cli(&["exec", "alpha", "--", "echo", "still"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "still");
    Ok(())
}
