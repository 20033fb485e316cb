//! The sync engine's serving side over in-memory streams: a member's exchanges, and what a
//! member may not do.

use std::sync::Arc;

use futures::AsyncWriteExt;
use libp2p::identity::Keypair;
use loopsy_mesh::framed;
use loopsy_wire::sync::{MAX_FRAME, Message};
use serde_bytes::ByteBuf;

use super::{CTX, Collection, Engine, push::PushQueue, pushes, serve::serve};
use crate::{
    audit::Audit,
    caps::{self, Capability},
    replica::{Limits, Store},
    service::Peer,
    testing::{self, Pipe},
    trust::{PeerSettings, Trust},
};

const LIMITS: Limits = Limits {
    records: 100,
    value: 1024,
    per_author: 100,
};

/// A replicated context as `keypair`'s device keeps it.
fn ctx(dir: &std::path::Path, tag: &str, keypair: &Keypair) -> Arc<Store> {
    let path = dir.join(format!("{tag}.cbor"));
    let serves = (Some(Capability::Ctx), Some(Capability::Ctx));
    Arc::new(Store::load(CTX, serves, path, keypair.clone(), LIMITS, |_, _| true).unwrap())
}

struct Here {
    engine: Engine,
    ctx: Arc<Store>,
    queue: PushQueue,
    trust: Arc<Trust>,
    audit: Arc<Audit>,
    dir: std::path::PathBuf,
}

/// This device's engine, sharing its context.
fn here(tag: &str) -> Here {
    let dir = testing::scratch(tag);
    let me = Keypair::generate_ed25519();
    let trust = Arc::new(
        Trust::load(dir.join("trust.toml"), me.clone(), true, Default::default()).unwrap(),
    );
    let audit = testing::audit(&dir);
    let ctx = ctx(&dir, "mine", &me);
    let (pushes, queue) = pushes();
    let collections: Vec<Arc<dyn Collection>> = vec![trust.clone(), ctx.clone()];
    let engine = Engine::new(trust.clone(), audit.clone(), collections, pushes);
    Here {
        engine,
        ctx,
        queue,
        trust,
        audit,
        dir,
    }
}

/// A member of `here`'s mesh with these grants, and its own copy of the context.
fn member(here: &Here, grants: &[&str]) -> (Peer, Arc<Store>) {
    let keypair = Keypair::generate_ed25519();
    let id = keypair.public().to_peer_id();
    let allow: Vec<String> = grants.iter().map(|g| g.to_string()).collect();
    let settings = PeerSettings {
        peer_id: id.to_base58(),
        name: None,
        allow: Some(allow.clone()),
        they_allow: None,
        how: Some("added".into()),
        exec: None,
        files: None,
        kind: None,
    };
    here.trust.admit(id, "bravo", &[], settings).unwrap();
    let peer = Peer::new(id, caps::parse(&allow).unwrap(), here.audit.clone());
    (peer, ctx(&here.dir, &id.to_base58(), &keypair))
}

async fn next(client: &mut Pipe) -> Option<Message> {
    framed::read(client, MAX_FRAME).await.expect("a frame")
}

#[tokio::test]
async fn a_digest_gets_what_the_member_lacks_and_what_it_sends_is_passed_on() {
    let mut here = here("sync-digest");
    here.ctx.put(b"mine", Some(b"1".to_vec()), None).unwrap();
    let (peer, theirs) = member(&here, &["ctx"]);
    let sent = theirs.put(b"theirs", Some(b"2".to_vec()), None).unwrap();
    let digest = Message::Digest {
        collection: CTX.into(),
        entries: theirs.digest(),
    };
    let (mut client, server) = testing::pipe();
    let talk = async {
        framed::write(&mut client, &digest, MAX_FRAME)
            .await
            .unwrap();
        let Some(Message::Delta { records, want }) = next(&mut client).await else {
            panic!("no delta");
        };
        assert_eq!(
            records.len(),
            1,
            "what this device holds and the member lacks"
        );
        assert_eq!(want, [ByteBuf::from(b"theirs".to_vec())]);
        let answer = Message::Records {
            records: vec![sent],
        };
        framed::write(&mut client, &answer, MAX_FRAME)
            .await
            .unwrap();
        client.close().await.unwrap();
        records
    };
    let ((), records) = tokio::join!(serve(&here.engine, &peer, server), talk);
    assert_eq!(theirs.merge(records).fresh.len(), 1);
    assert!(here.ctx.get(b"theirs").is_some(), "merged here");
    assert_eq!(
        here.queue.try_next(),
        Some((CTX, 1, Some(peer.id))),
        "passed on to the others, not back"
    );
}

#[tokio::test]
async fn a_member_without_the_capability_gets_nothing_and_gives_nothing() {
    let mut here = here("sync-needless");
    here.ctx.put(b"mine", Some(b"1".to_vec()), None).unwrap();
    let (peer, theirs) = member(&here, &["exec"]);
    let sent = theirs.put(b"theirs", Some(b"2".to_vec()), None).unwrap();

    let (mut client, server) = testing::pipe();
    let digest = Message::Digest {
        collection: CTX.into(),
        entries: Vec::new(),
    };
    framed::write(&mut client, &digest, MAX_FRAME)
        .await
        .unwrap();
    let ((), delta) = tokio::join!(serve(&here.engine, &peer, server), next(&mut client));
    assert!(
        matches!(delta, Some(Message::Delta { records, want }) if records.is_empty() && want.is_empty())
    );

    let (mut client, server) = testing::pipe();
    let push = Message::Push {
        collection: CTX.into(),
        records: vec![sent],
    };
    framed::write(&mut client, &push, MAX_FRAME).await.unwrap();
    client.close().await.unwrap();
    serve(&here.engine, &peer, server).await;
    assert!(here.ctx.get(b"theirs").is_none());
    assert_eq!(here.queue.try_next(), None);
}

#[tokio::test]
async fn records_by_an_author_without_the_capability_are_refused_and_audited() {
    let mut here = here("sync-forged");
    let (carrier, _) = member(&here, &["ctx"]);
    let (_, unentitled) = member(&here, &["exec"]);
    let stranger = ctx(&here.dir, "stranger", &Keypair::generate_ed25519());
    let records = vec![
        unentitled.put(b"a", Some(b"1".to_vec()), None).unwrap(),
        stranger.put(b"b", Some(b"2".to_vec()), None).unwrap(),
    ];
    let (mut client, server) = testing::pipe();
    let push = Message::Push {
        collection: CTX.into(),
        records,
    };
    framed::write(&mut client, &push, MAX_FRAME).await.unwrap();
    client.close().await.unwrap();
    serve(&here.engine, &carrier, server).await;
    assert!(here.ctx.live(b"").is_empty());
    assert_eq!(here.queue.try_next(), None);
    let entries = here.audit.read_all();
    assert_eq!(entries.len(), 1, "one entry per exchange");
    let reason = entries[0].reason.as_deref().unwrap_or_default();
    assert!(reason.starts_with("2 records refused"), "{reason}");
    assert_eq!(entries[0].peer.as_deref(), Some(&*carrier.id.to_base58()));
}

#[tokio::test]
async fn an_unknown_collection_or_an_unexpected_message_ends_the_exchange() {
    let here = here("sync-unknown");
    let (peer, _) = member(&here, &["all"]);
    for first in [
        Message::Digest {
            collection: "secrets".into(),
            entries: Vec::new(),
        },
        Message::Records {
            records: Vec::new(),
        },
    ] {
        let (mut client, server) = testing::pipe();
        framed::write(&mut client, &first, MAX_FRAME).await.unwrap();
        let ((), reply) = tokio::join!(serve(&here.engine, &peer, server), next(&mut client));
        assert!(reply.is_none(), "{reply:?}");
    }
}
