//! An unpaired device gets identify, ping and pairing from a node, and nothing else: every
//! application protocol it opens is refused, and every refusal is in the audit log.

use std::time::Duration;

use futures::AsyncWriteExt;
use loopsy_mesh::{Config, Keypair, Mesh, framed};
use loopsy_tests::node::{Node, Options};
use loopsy_wire::{admission::Admission, pair, protocol};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaired_device_is_refused_every_application_protocol() -> anyhow::Result<()> {
    let node = Node::start(Options::isolated("alpha"))?;
    let target: libp2p::PeerId = node.peer_id.parse()?;
    let addr = node.tcp_addr()?;

    let (stranger, _task) = Mesh::start(Config {
        keypair: Keypair::generate_ed25519(),
        name: "stranger".into(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        mdns: false,
        relays: Vec::new(),
        site: None,
        upnp: false,
        natpmp: false,
    })?;
    stranger
        .connect(target, vec![addr])
        .await?
        .map_err(anyhow::Error::msg)?;

    for name in protocol::APPLICATION {
        let mut stream = stranger.open_stream(target, name).await?;
        let verdict: Option<Admission> =
            framed::read(&mut stream, loopsy_wire::admission::MAX_FRAME).await?;
        match verdict {
            Some(Admission::Refused { reason }) => {
                assert!(reason.contains("not paired"), "{name}: {reason}")
            }
            other => panic!("{name} let a stranger in: {other:?}"),
        }
    }

    // Pairing is open to anyone, but malformed or bogus requests are refused.
    let mut stream = stranger.open_stream(target, protocol::PAIR).await?;
    stream.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await?;
    let answer: Option<pair::Message> = framed::read(&mut stream, pair::MAX_FRAME).await?;
    assert!(
        matches!(answer, Some(pair::Message::Refused { .. })),
        "{answer:?}"
    );
    let mut stream = stranger.open_stream(target, protocol::PAIR).await?;
    let bogus = pair::Message::Start {
        invite: vec![7; 8],
        noise: vec![1; 48],
    };
    framed::write(&mut stream, &bogus, pair::MAX_FRAME).await?;
    let answer: Option<pair::Message> = framed::read(&mut stream, pair::MAX_FRAME).await?;
    match answer {
        Some(pair::Message::Refused { reason }) => assert!(reason.contains("unknown"), "{reason}"),
        other => panic!("a bogus invite was not refused: {other:?}"),
    }

    // Every refusal is audited with the stranger's peer ID and the reason.
    let me = stranger.peer_id().to_base58();
    let mut denied = Vec::new();
    for _ in 0..50 {
        denied = node
            .audit()
            .into_iter()
            .filter(|e| e["peer"] == me.as_str() && e["result"] == "denied")
            .collect();
        if denied.len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let actions: Vec<&str> = denied.iter().filter_map(|e| e["action"].as_str()).collect();
    for action in ["exec", "transfer", "session", "sync", "pair"] {
        assert!(
            actions.contains(&action),
            "{action} refusal audited: {denied:?}"
        );
    }
    assert!(
        denied
            .iter()
            .all(|e| e["reason"].as_str().is_some_and(|r| !r.is_empty()))
    );

    // And the node is none the worse.
    assert_eq!(
        node.json(&["id", "--json"])?["peer_id"],
        node.peer_id.as_str()
    );
    Ok(())
}
