//! A tree cannot escape its destination through a symlink at its top, between real nodes.
//! A paired device turned hostile offers `[Symlink "x" -> OUTSIDE, File "x/authorized_keys"]`
//! into a destination that does not exist yet, so that the link becomes the destination
//! itself: as the client of a push (`/loopsy/transfer/1` to a real node, which stores it)
//! and as the serving side of `loopsy cp -r bravo:x ./new` (the real node's own copy
//! receives it). Nothing lands outside either way; the copy is refused.

use std::{fs, os::unix::ffi::OsStrExt, path::Path, time::Duration};

use futures::{AsyncWriteExt, StreamExt};
use loopsy_daemon::transfer::tree::chunk_hash;
use loopsy_mesh::{Mesh, MeshTask, PeerId, Stream, framed, identity};
use loopsy_tests::{
    node::{Node, Options},
    stranger,
    temp::TempDir,
    wait_for,
};
use loopsy_wire::{
    admission::{self, Admission},
    protocol,
    transfer::{Data, Entry, Kind, MAX_FRAME, Receive, Reply, Request, Send},
};

const EVIL: &[u8] = b"ssh-ed25519 AAAA... hostile\n";

/// Alpha, whose file root is `root`, and bravo, a member of its mesh now run by hostile
/// code: its mesh, connected to alpha.
async fn alpha_and_hostile_bravo(tmp: &TempDir) -> anyhow::Result<(Node, Mesh, MeshTask, PeerId)> {
    let root = tmp.path().join("alpha-root");
    fs::create_dir_all(&root)?;
    let alpha = Node::start(Options::isolated("alpha").env("HOME", &root))?;
    let bravo = Node::start(Options::isolated("bravo"))?;
    alpha.pair_with(&bravo)?;
    let key = identity::load_or_create(&bravo.home().join("identity.key"))?;
    bravo.stop()?;
    let target: PeerId = alpha.peer_id.parse()?;
    let (hostile, task) = stranger::impersonating(key, "bravo", target, alpha.tcp_addr()?).await?;
    Ok((alpha, hostile, task, target))
}

fn entry(path: &[u8], kind: Kind) -> Entry {
    Entry {
        path: path.to_vec().into(),
        kind,
        mode: 0o644,
        mtime: 0,
        mtime_nsec: 0,
    }
}

/// Sends the hostile tree on `stream`, a sender's side of the flow; with a receiver that
/// takes the offer, the file is sent too. The receiver's answer to the offer.
async fn send_through_a_top_link(stream: &mut Stream, outside: &Path) -> anyhow::Result<Reply> {
    let begin = Data::Begin {
        sources: 1,
        files: 1,
        bytes: EVIL.len() as u64,
    };
    framed::write(stream, &begin, MAX_FRAME).await?;
    let entries = vec![
        entry(
            b"x",
            Kind::Symlink {
                target: outside.as_os_str().as_bytes().to_vec().into(),
            },
        ),
        entry(
            b"x/authorized_keys",
            Kind::File {
                size: EVIL.len() as u64,
            },
        ),
    ];
    framed::write(stream, &Data::Offer { entries }, MAX_FRAME).await?;
    let reply: Reply = framed::read(stream, MAX_FRAME)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no answer to the offer"))?;
    if let Reply::Plan { .. } = reply {
        let hash = chunk_hash(EVIL, 0, EVIL.len() as u64);
        framed::write(stream, &Data::File { index: 1, from: 0 }, MAX_FRAME).await?;
        let chunk = Data::Chunk {
            len: EVIL.len() as u32,
            hash,
        };
        framed::write(stream, &chunk, MAX_FRAME).await?;
        stream.write_all(EVIL).await?;
        let end = Data::End {
            blake3: hash,
            sha256: None,
        };
        framed::write(stream, &end, MAX_FRAME).await?;
        framed::write(stream, &Data::Finish, MAX_FRAME).await?;
        let _ = framed::read::<Reply, _>(stream, MAX_FRAME).await;
        framed::write(stream, &Data::Done, MAX_FRAME).await?;
        let _ = stream.close().await;
    }
    Ok(reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_client_cannot_push_through_a_link_it_made_the_destination() -> anyhow::Result<()>
{
    let tmp = TempDir::new("escape-push");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside)?;
    let (alpha, hostile, _task, target) = alpha_and_hostile_bravo(&tmp).await?;
    let mut stream = hostile.open_stream(target, protocol::TRANSFER).await?;
    let admitted: Option<Admission> = framed::read(&mut stream, admission::MAX_FRAME).await?;
    assert_eq!(admitted, Some(Admission::Accepted));
    let push = Request::Push {
        dest: b"new".to_vec().into(),
        options: Receive::default(),
    };
    framed::write(&mut stream, &push, MAX_FRAME).await?;
    let reply = send_through_a_top_link(&mut stream, &outside).await?;
    assert_eq!(
        fs::read_dir(&outside)?.count(),
        0,
        "nothing written outside the root"
    );
    let Reply::Error { message } = reply else {
        panic!("the offer was taken: {reply:?}");
    };
    assert!(message.contains("symlink"), "{message}");
    drop(stream);
    let refused = wait_for("the push in the audit log", Duration::from_secs(10), || {
        alpha.audit().into_iter().find(|e| e["action"] == "cp push")
    })?;
    assert_eq!(refused["result"], "denied", "{refused}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_cannot_serve_a_pull_through_a_link_it_made_the_destination()
-> anyhow::Result<()> {
    let tmp = TempDir::new("escape-pull");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside)?;
    let (alpha, hostile, _task, _) = alpha_and_hostile_bravo(&tmp).await?;
    let mut incoming = hostile
        .accept(protocol::TRANSFER)
        .expect("nothing else accepts transfers here");
    let serving = {
        let outside = outside.clone();
        tokio::spawn(async move {
            let (_, mut stream) = incoming.next().await.expect("alpha opens a stream");
            framed::write(&mut stream, &Admission::Accepted, admission::MAX_FRAME).await?;
            let request: Option<Request> = framed::read(&mut stream, MAX_FRAME).await?;
            let Some(Request::Pull { sources, options }) = request else {
                anyhow::bail!("not a pull: {request:?}");
            };
            assert!(sources.iter().map(|s| s.as_slice()).eq([b"x".as_slice()]));
            assert_eq!(
                options,
                Send {
                    recursive: true,
                    sha256: false
                }
            );
            send_through_a_top_link(&mut stream, &outside).await
        })
    };
    let new = tmp.path().join("new").to_string_lossy().into_owned();
    let (_alpha, out) = tokio::task::spawn_blocking(move || {
        let out = alpha.cli(&["cp", "-r", "bravo:x", &new]);
        (alpha, out)
    })
    .await?;
    let reply = tokio::time::timeout(Duration::from_secs(30), serving).await???;
    assert_eq!(
        fs::read_dir(&outside)?.count(),
        0,
        "nothing written outside the destination"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the copy is refused");
    assert!(stderr.contains("symlink"), "{stderr}");
    assert!(matches!(reply, Reply::Error { .. }), "{reply:?}");
    Ok(())
}
