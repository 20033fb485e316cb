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
        record: false,
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

/// Polls `check` for up to ten seconds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_view_peer_watches_and_exports_but_its_keys_and_coming_change_nothing() {
    let (service, dir) = service("session-view");
    let audit = testing::audit(&dir);
    let owner = testing::peer(&["sessions", "exec"], &audit);
    let viewer = testing::peer(&["view"], &audit);
    let echo = new("echo", &["sh", "-c", "printf 'up\\a\\n'; exec cat"]);
    let Reply::Created(info) = ask(&service, &owner, echo).await else {
        panic!("not created");
    };
    let session = service
        .sessions
        .resolve(&info.id, super::Reach::Every)
        .unwrap();
    eventually("the bell makes it wait", || {
        session.info().waiting.is_some()
    })
    .await;

    // The viewer asks for a plain attach, and types: it gets a watch, and nothing arrives.
    let (mut client, server) = testing::pipe();
    let attach = Request::Attach {
        session: "echo".into(),
        offset: None,
        rows: 5,
        cols: 20,
        read_only: false,
    };
    framed::write(&mut client, &attach, MAX_FRAME)
        .await
        .unwrap();
    let keys = Input::Keys {
        data: ByteBuf::from(b"typed-by-viewer\n".to_vec()),
    };
    let watching = async {
        assert!(matches!(
            next(&mut client).await,
            Some(Reply::Attached { .. })
        ));
        framed::write(&mut client, &keys, MAX_FRAME).await.unwrap();
        framed::write(&mut client, &Input::Resize { rows: 5, cols: 20 }, MAX_FRAME)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.close().await.unwrap();
    };
    tokio::join!(serve(&service, &viewer, server), watching);
    let output = String::from_utf8_lossy(&session.output(0, 1 << 20).unwrap()).into_owned();
    assert!(!output.contains("typed-by-viewer"), "{output:?}");
    assert_ne!(session.size(), (5, 20), "a watcher sizes nothing");
    assert!(
        session.info().waiting.is_some(),
        "a watcher answers nothing"
    );

    // It may export, and may neither start nor end a session.
    let exported = ask(
        &service,
        &viewer,
        Request::Export {
            session: info.id.clone(),
        },
    )
    .await;
    let Reply::Recording { pieces, last, .. } = exported else {
        panic!("{exported:?}");
    };
    assert!(last);
    let recorded: Vec<u8> = pieces.iter().flat_map(|p| p.data.to_vec()).collect();
    assert!(String::from_utf8_lossy(&recorded).contains("up"));
    for request in [
        new("mine", &["true"]),
        Request::Kill {
            session: info.id.clone(),
        },
    ] {
        let reply = ask(&service, &viewer, request).await;
        assert!(
            matches!(&reply, Reply::Error { message } if message.contains("only watch")),
            "{reply:?}"
        );
    }
    assert!(session.is_running());
    let actions: Vec<(String, String)> = audit
        .read_all()
        .into_iter()
        .map(|e| (e.action, format!("{:?}", e.result)))
        .collect();
    for action in [
        "session watch",
        "session export",
        "session new",
        "session kill",
    ] {
        assert!(
            actions.iter().any(|(a, _)| a == action),
            "{action} audited: {actions:?}"
        );
    }
    session.kill().await;
}
