//! The session service's serving side over in-memory streams, with hand-driven clients.

use std::{sync::Arc, time::Duration};

use futures::AsyncWriteExt;
use loopsy_mesh::framed;
use loopsy_wire::session::{Input, MAX_FRAME, Reply, Request, Status};
use serde_bytes::ByteBuf;

use super::{SessionService, Sessions, registry::Wake, serve::serve};
use crate::{
    exec::policy::Policy,
    service::Peer,
    testing::{self, Pipe},
};

fn service(tag: &str) -> (SessionService, std::path::PathBuf) {
    let dir = testing::scratch(tag);
    let sessions = Arc::new(Sessions::load(dir.join("sessions.json")));
    (
        SessionService::new(sessions, Policy::default(), Wake::default()),
        dir,
    )
}

async fn next(client: &mut Pipe) -> Option<Reply> {
    tokio::time::timeout(Duration::from_secs(10), framed::read(client, MAX_FRAME))
        .await
        .expect("a reply in time")
        .expect("a frame")
}

/// Sends one request on a stream of its own and reads the first reply.
async fn ask(service: &SessionService, peer: &Peer, request: Request) -> Reply {
    let (mut client, server) = testing::pipe();
    framed::write(&mut client, &request, MAX_FRAME)
        .await
        .unwrap();
    client.close().await.unwrap();
    let ((), reply) = tokio::join!(serve(service, peer, server), next(&mut client));
    reply.expect("a reply")
}

fn new(name: &str, argv: &[&str]) -> Request {
    Request::New {
        name: Some(name.into()),
        argv: argv.iter().map(|a| a.to_string()).collect(),
        rows: 24,
        cols: 80,
    }
}

#[tokio::test]
async fn a_session_is_started_listed_attached_and_killed() {
    let (service, dir) = service("session-life");
    let audit = testing::audit(&dir);
    let peer = testing::peer(&["sessions", "exec"], &audit);
    let created = ask(
        &service,
        &peer,
        new("work", &["sh", "-c", "echo hello; exec cat"]),
    )
    .await;
    let Reply::Created(info) = created else {
        panic!("{created:?}");
    };
    assert_eq!(info.name.as_deref(), Some("work"));
    let Reply::Sessions { sessions } = ask(&service, &peer, Request::List).await else {
        panic!("no list");
    };
    assert_eq!(sessions.len(), 1);

    // Attached: the screen, then the keys typed go to the program and come back.
    let (mut client, server) = testing::pipe();
    let attach = Request::Attach {
        session: "work".into(),
        offset: None,
        rows: 24,
        cols: 80,
        read_only: false,
    };
    framed::write(&mut client, &attach, MAX_FRAME)
        .await
        .unwrap();
    let attached = async {
        assert!(matches!(
            next(&mut client).await,
            Some(Reply::Attached { .. })
        ));
        let keys = Input::Keys {
            data: ByteBuf::from(b"typed\n".to_vec()),
        };
        framed::write(&mut client, &keys, MAX_FRAME).await.unwrap();
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("typed") {
            match next(&mut client).await {
                Some(Reply::Output { data, .. }) => seen.extend_from_slice(&data),
                other => panic!("{other:?}"),
            }
        }
        client.close().await.unwrap();
    };
    let served = serve(&service, &peer, server);
    tokio::select! {
        () = attached => {}
        () = served => panic!("the attach ended first"),
    }

    assert!(matches!(
        ask(
            &service,
            &peer,
            Request::Kill {
                session: info.id.clone()
            }
        )
        .await,
        Reply::Killed
    ));
    let ended = service
        .sessions
        .resolve(&info.id, super::Reach::Every)
        .ok()
        .unwrap();
    let mut marks = ended.marks();
    tokio::time::timeout(
        Duration::from_secs(10),
        marks.wait_for(|m| m.exited.is_some()),
    )
    .await
    .expect("ended in time")
    .unwrap();
    let again = ask(
        &service,
        &peer,
        Request::Kill {
            session: info.id.clone(),
        },
    )
    .await;
    assert!(
        matches!(&again, Reply::Error { message } if message.contains("had already ended")),
        "{again:?}"
    );
    assert!(matches!(ended.info().status, Status::Exited { .. }));
    let actions: Vec<String> = audit.read_all().into_iter().map(|e| e.action).collect();
    assert_eq!(actions, ["session new", "session attach", "session kill"]);
}

#[tokio::test]
async fn a_peer_with_own_sessions_cannot_see_or_reach_another_peers() {
    let (service, dir) = service("session-own");
    let audit = testing::audit(&dir);
    let owner = testing::peer(&["own-sessions", "exec"], &audit);
    let other = testing::peer(&["own-sessions", "exec"], &audit);
    let Reply::Created(info) = ask(&service, &owner, new("secret", &["sleep", "30"])).await else {
        panic!("not created");
    };
    let Reply::Sessions { sessions } = ask(&service, &other, Request::List).await else {
        panic!("no list");
    };
    assert!(sessions.is_empty(), "{sessions:?}");
    for request in [
        Request::Kill {
            session: "secret".into(),
        },
        Request::Attach {
            session: info.id.clone(),
            offset: None,
            rows: 0,
            cols: 0,
            read_only: false,
        },
    ] {
        let reply = ask(&service, &other, request).await;
        let Reply::Error { message } = reply else {
            panic!("{reply:?}");
        };
        assert!(
            message.starts_with("no session here is called"),
            "{message}"
        );
    }
    // The host's log says which session it was; the peer was told nothing of it.
    let denied: Vec<_> = audit
        .read_all()
        .into_iter()
        .filter(|e| e.result == "denied")
        .collect();
    assert_eq!(denied.len(), 2);
    assert!(denied.iter().all(|e| e.args == info.id));
    service.sessions.end_all().await;
}

#[tokio::test]
async fn what_a_peer_may_not_run_starts_no_session() {
    let (service, dir) = service("session-refused");
    let audit = testing::audit(&dir);
    let no_exec = testing::peer(&["sessions"], &audit);
    let reply = ask(&service, &no_exec, new("x", &["true"])).await;
    assert!(
        matches!(&reply, Reply::Error { message } if message.contains("`exec` capability")),
        "{reply:?}"
    );
    let too_long = new(&"n".repeat(100), &[&"a".repeat(129 * 1024)]);
    let reply = ask(&service, &no_exec, too_long).await;
    assert!(
        matches!(&reply, Reply::Error { message } if message.contains("size limits")),
        "{reply:?}"
    );
    assert!(service.sessions.list(super::Reach::Every).is_empty());
}
