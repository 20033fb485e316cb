//! The exec service's serving side over an in-memory stream, with a hand-driven client.

use std::time::Duration;

use futures::AsyncWriteExt;
use loopsy_mesh::framed;
use loopsy_wire::exec::{MAX_FRAME, Reply, Request, Start};

use super::{Exec, policy::Policy, serve::serve};
use crate::testing::{self, Pipe};

fn start(argv: &[&str]) -> Request {
    Request::Start(Start {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        cwd: None,
        env: Vec::new(),
        timeout_secs: None,
        pty: None,
    })
}

async fn next(client: &mut Pipe) -> Option<Reply> {
    tokio::time::timeout(Duration::from_secs(10), framed::read(client, MAX_FRAME))
        .await
        .expect("a reply in time")
        .expect("a frame")
}

/// Everything the service says until it closes the stream.
async fn all(client: &mut Pipe) -> Vec<Reply> {
    let mut replies = Vec::new();
    while let Some(reply) = next(client).await {
        replies.push(reply);
    }
    replies
}

#[tokio::test]
async fn a_program_runs_and_its_output_and_exit_code_come_back() {
    let dir = testing::scratch("exec-runs");
    let audit = testing::audit(&dir);
    let peer = testing::peer(&["exec"], &audit);
    let exec = Exec::new(Policy::default());
    let (mut client, server) = testing::pipe();
    let served = async { serve(&exec, &peer, server).await };
    let talk = async {
        framed::write(
            &mut client,
            &start(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
            MAX_FRAME,
        )
        .await
        .unwrap();
        all(&mut client).await
    };
    let ((), replies) = tokio::join!(served, talk);
    assert!(matches!(replies[0], Reply::Started { .. }), "{replies:?}");
    let stdout: Vec<u8> = replies
        .iter()
        .filter_map(|r| match r {
            Reply::Stdout { data } => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(stdout, b"out\n");
    assert!(
        replies
            .iter()
            .any(|r| matches!(r, Reply::Stderr { data } if data == b"err\n"))
    );
    assert!(matches!(
        replies.last(),
        Some(Reply::Exited {
            code: Some(3),
            timed_out: false,
            ..
        })
    ));
    let entries = audit.read_all();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].result, "ok");
    assert_eq!(entries[0].reason.as_deref(), Some("exited with 3"));
}

#[tokio::test]
async fn a_peer_without_the_grant_or_past_the_policy_is_refused_and_audited() {
    let dir = testing::scratch("exec-refused");
    let audit = testing::audit(&dir);
    let shell_only = testing::peer(&["shell"], &audit);
    let listing = Policy {
        allow: vec!["true".into()],
        ..Policy::default()
    };
    let exec = Exec::new(listing);
    for (argv, peer, why) in [
        (
            &["true"][..],
            &shell_only,
            "the `exec` capability is not granted",
        ),
        (
            &["rm", "-rf", "/"][..],
            &testing::peer(&["exec"], &audit),
            "`rm` is not in the allowed programs",
        ),
    ] {
        let (mut client, server) = testing::pipe();
        let talk = async {
            framed::write(&mut client, &start(argv), MAX_FRAME)
                .await
                .unwrap();
            all(&mut client).await
        };
        let ((), replies) = tokio::join!(serve(&exec, peer, server), talk);
        match &replies[..] {
            [Reply::Refused { reason }] => assert!(reason.contains(why), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    let entries = audit.read_all();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e.result == "denied"));
}

#[tokio::test]
async fn a_peer_runs_at_most_its_share_and_a_client_that_leaves_ends_its_program() {
    let dir = testing::scratch("exec-share");
    let audit = testing::audit(&dir);
    let peer = testing::peer(&["exec"], &audit);
    let exec = Exec::new(Policy {
        max_running: 1,
        ..Policy::default()
    });
    let (mut first, server) = testing::pipe();
    let running = serve(&exec, &peer, server);
    tokio::pin!(running);
    framed::write(&mut first, &start(&["sleep", "30"]), MAX_FRAME)
        .await
        .unwrap();
    // The first program starts (driven by the select until it says so).
    tokio::select! {
        _ = &mut running => panic!("ended early"),
        reply = next(&mut first) => assert!(matches!(reply, Some(Reply::Started { .. }))),
    }
    let (mut second, server) = testing::pipe();
    framed::write(&mut second, &start(&["true"]), MAX_FRAME)
        .await
        .unwrap();
    let refused = tokio::select! {
        _ = &mut running => panic!("ended early"),
        ((), replies) = async { tokio::join!(serve(&exec, &peer, server), all(&mut second)) } => replies,
    };
    assert!(
        matches!(&refused[..], [Reply::Refused { reason }] if reason.contains("at most 1 programs")),
        "{refused:?}"
    );
    // The first client leaves: its program is killed, and its place comes back.
    first.close().await.unwrap();
    drop(first);
    tokio::time::timeout(Duration::from_secs(10), &mut running)
        .await
        .expect("the program ended with its client");
    let last = audit.read_all().pop().expect("an entry");
    assert_eq!(last.reason.as_deref(), Some("killed: the client went away"));
    assert!(
        exec.running.claim(peer.id, 1).is_some(),
        "the place came back"
    );
}

#[tokio::test]
async fn a_stream_that_does_not_start_with_a_start_runs_nothing() {
    let dir = testing::scratch("exec-garbage");
    let audit = testing::audit(&dir);
    let peer = testing::peer(&["exec"], &audit);
    let exec = Exec::new(Policy::default());
    for first in [Request::StdinEof, Request::Signal { signal: 9 }] {
        let (mut client, server) = testing::pipe();
        framed::write(&mut client, &first, MAX_FRAME).await.unwrap();
        let ((), replies) = tokio::join!(serve(&exec, &peer, server), all(&mut client));
        assert!(replies.is_empty(), "{replies:?}");
    }
    // Not even a frame: bytes that decode to nothing.
    let (mut client, server) = testing::pipe();
    client.write_all(&[0xff; 64]).await.unwrap();
    client.close().await.unwrap();
    let ((), replies) = tokio::join!(serve(&exec, &peer, server), all(&mut client));
    assert!(replies.is_empty(), "{replies:?}");
    assert!(audit.read_all().is_empty(), "nothing ran, nothing to audit");
}

#[tokio::test]
async fn input_the_program_does_not_read_yet_holds_up_none_of_its_output() {
    use futures::AsyncReadExt;
    const OUT: usize = 2_000_000;
    const IN_FRAMES: usize = 40;
    let dir = testing::scratch("exec-input-waits");
    let audit = testing::audit(&dir);
    let peer = testing::peer(&["exec"], &audit);
    let exec = Exec::new(Policy::default());
    let (client, server) = testing::pipe();
    let (mut from_server, mut to_server) = client.split();
    let served = async { serve(&exec, &peer, server).await };
    // It writes all of its output before it reads a byte of its input.
    let script = format!("head -c {OUT} /dev/zero; wc -c");
    let send = async {
        framed::write(&mut to_server, &start(&["sh", "-c", &script]), MAX_FRAME)
            .await
            .unwrap();
        for _ in 0..IN_FRAMES {
            let data = vec![b'i'; loopsy_wire::exec::CHUNK];
            let stdin = Request::Stdin { data };
            if framed::write(&mut to_server, &stdin, MAX_FRAME)
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = framed::write(&mut to_server, &Request::StdinEof, MAX_FRAME).await;
    };
    let receive = async {
        let mut stdout = Vec::new();
        loop {
            let reply = tokio::time::timeout(
                Duration::from_secs(20),
                framed::read::<Reply, _>(&mut from_server, MAX_FRAME),
            )
            .await
            .expect("output goes on while the input waits")
            .expect("a frame");
            match reply {
                Some(Reply::Stdout { data }) => stdout.extend(data),
                Some(Reply::Exited { code, .. }) => return (stdout, code),
                Some(_) => {}
                None => return (stdout, None),
            }
        }
    };
    let ((), (), (stdout, code)) = tokio::join!(served, send, receive);
    assert_eq!(code, Some(0));
    assert_eq!(stdout.len(), OUT + format!("{}\n", IN_FRAMES * 65536).len());
    assert!(stdout.ends_with(format!("{}\n", IN_FRAMES * 65536).as_bytes()));
}
