//! The client against a scripted node on a real Unix socket: each test says what the node
//! answers and checks what the caller gets.

use std::path::PathBuf;

use loopsy_mesh::framed;
use loopsy_wire::{
    control::{self, Envelope, ErrorCode, Request, Response},
    exec,
    session::{self, Info, Status},
};
use serde_bytes::ByteBuf;
use tokio::net::UnixListener;
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::{Client, Error, exec::Event};

/// A directory of its own for one test's socket, removed at the end.
struct Place(PathBuf);

impl Place {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("loopsy-client-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory");
        Self(dir)
    }

    fn client(&self) -> Client {
        Client::new(self.0.join("control.sock"), self.0.clone(), String::new())
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A node that answers connections in turn, each by its script: `control` frames, then
/// `peer` frames (the relayed stream), then it closes. It hands back the requests it got.
fn node<P: serde::Serialize + Send + Sync + 'static>(
    place: &Place,
    scripts: Vec<(Vec<Response>, Vec<P>)>,
) -> tokio::task::JoinHandle<Vec<Request>> {
    let listener = UnixListener::bind(place.0.join("control.sock")).expect("bind");
    tokio::spawn(async move {
        let mut requests = Vec::new();
        for (control, peer) in scripts {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut stream = stream.compat();
            let envelope: Envelope = framed::read(&mut stream, control::MAX_FRAME)
                .await
                .expect("a frame")
                .expect("a request");
            requests.push(envelope.request);
            for answer in control {
                framed::write(&mut stream, &answer, control::MAX_FRAME)
                    .await
                    .expect("write");
            }
            for frame in peer {
                framed::write(&mut stream, &frame, session::MAX_FRAME)
                    .await
                    .expect("write");
            }
        }
        requests
    })
}

fn info() -> Info {
    Info {
        id: "k3j2".into(),
        name: Some("agent".into()),
        command: vec!["sh".into()],
        status: Status::Running,
        created: 0,
        last_activity: 0,
        clients: 0,
        waiting: None,
        recording: None,
    }
}

#[tokio::test]
async fn no_socket_says_no_node_runs_and_how_to_start_one() {
    let place = Place::new("none");
    let err = place.client().peers().await.expect_err("no node");
    assert!(matches!(err, Error::NoNode { .. }), "{err:?}");
    assert!(
        err.to_string().contains("start one with `loopsy node`"),
        "{err}"
    );
}

#[tokio::test]
async fn an_answer_of_another_type_is_unexpected_and_an_error_is_refused() {
    let place = Place::new("types");
    let served = node::<()>(
        &place,
        vec![(vec![Response::Peers { peers: vec![] }], vec![])],
    );
    let err = place.client().status().await.expect_err("not a status");
    assert_eq!(
        err.to_string(),
        "the node answered with something other than its status"
    );
    assert_eq!(served.await.expect("served"), [Request::Status]);

    let place = Place::new("refused");
    let refusal = control::Error::new(ErrorCode::NotFound, "no key `k`");
    node::<()>(&place, vec![(vec![Response::Error(refusal)], vec![])]);
    let err = place
        .client()
        .ctx_get("k".into())
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    assert_eq!(err.to_string(), "no key `k`");
}

#[tokio::test]
async fn exec_is_handed_over_and_its_replies_become_events() {
    let place = Place::new("exec");
    let stream = Response::Stream {
        protocol: "/loopsy/exec/1".into(),
    };
    let replies = vec![
        exec::Reply::Started { pid: 7 },
        exec::Reply::Stdout {
            data: b"out".to_vec(),
        },
        exec::Reply::Exited {
            code: Some(3),
            signal: None,
            timed_out: false,
        },
    ];
    node(&place, vec![(vec![stream.clone()], replies)]);
    let start = exec::Start {
        argv: vec!["true".into()],
        cwd: None,
        env: vec![],
        timeout_secs: None,
        pty: None,
    };
    let (mut output, _input) = place
        .client()
        .exec("bravo".into(), start.clone())
        .await
        .expect("open");
    assert_eq!(
        output.next().await.expect("out"),
        Event::Stdout(b"out".to_vec())
    );
    let Event::Exited(exit) = output.next().await.expect("exit") else {
        panic!("not the end");
    };
    assert_eq!(exit.code, Some(3));

    // A program that is not there: told apart from other refusals (a shell says 127).
    let place = Place::new("missing");
    let refused = exec::Reply::Refused {
        reason: "cannot start `nope`: No such file or directory (os error 2)".into(),
    };
    node(&place, vec![(vec![stream.clone()], vec![refused])]);
    let (mut output, _input) = place
        .client()
        .exec("bravo".into(), start.clone())
        .await
        .expect("open");
    let err = output.next().await.expect_err("not started");
    assert!(err.is_missing_program(), "{err:?}");

    // A stream that ends before the program did is lost, not a success.
    let place = Place::new("lost");
    node::<exec::Reply>(&place, vec![(vec![stream], vec![])]);
    let (mut output, _input) = place
        .client()
        .exec("bravo".into(), start)
        .await
        .expect("open");
    assert!(matches!(output.next().await, Err(Error::Lost)));
}

#[tokio::test]
async fn a_new_session_is_answered_in_the_one_shape_with_its_host() {
    let place = Place::new("session");
    let stream = Response::Stream {
        protocol: "/loopsy/session/1".into(),
    };
    // The session's host is then named by the node's identity (this device).
    let me = Response::Id(control::Identity {
        peer_id: "12D3KooWme".into(),
        name: "alpha".into(),
    });
    let served = node(
        &place,
        vec![
            (vec![stream], vec![session::Reply::Created(info())]),
            (vec![me], vec![]),
        ],
    );
    let client = place.client();
    let made = client.session_new(None, None, vec![], (24, 80)).await;
    let asked = served.await.expect("served");
    assert!(
        matches!(asked[..], [Request::Session { .. }, Request::Id]),
        "{asked:?}"
    );
    let made = made.expect("a session");
    assert_eq!(
        (made.host.as_str(), made.host_peer_id.as_str()),
        ("alpha", "12D3KooWme")
    );
    assert_eq!(made.status, control::SessionStatus::Running);
    assert_eq!(made.created, "1970-01-01T00:00:00Z");
}

#[tokio::test]
async fn the_hosts_error_while_attached_is_an_error_and_output_is_typed() {
    let place = Place::new("attach");
    let stream = Response::Stream {
        protocol: "/loopsy/session/1".into(),
    };
    let replies = vec![
        session::Reply::Attached {
            info: info(),
            offset: 5,
            screen: Some(ByteBuf::from(b"screen".to_vec())),
            rows: 24,
            cols: 80,
        },
        session::Reply::Output {
            offset: 5,
            data: ByteBuf::from(b"more".to_vec()),
        },
        session::Reply::Error {
            message: "the session is gone".into(),
        },
    ];
    node(&place, vec![(vec![stream], replies)]);
    let to = crate::session::Attach {
        session: "agent".into(),
        host: None,
        offset: None,
        rows: 0,
        cols: 0,
        read_only: false,
    };
    let (mut output, _input) = place.client().attach(to).await.expect("attached");
    let Some(crate::session::Event::Attached { offset, screen, .. }) =
        output.next().await.expect("attached")
    else {
        panic!("not attached");
    };
    assert_eq!((offset, screen.as_deref()), (5, Some(&b"screen"[..])));
    let Some(crate::session::Event::Output { data, .. }) = output.next().await.expect("output")
    else {
        panic!("no output");
    };
    assert_eq!(data, b"more");
    let err = output.next().await.expect_err("the host's error");
    assert_eq!(err.to_string(), "the session is gone");
}

#[tokio::test]
async fn an_export_that_never_ends_is_cut_at_its_bound() {
    let place = Place::new("export");
    let stream = Response::Stream {
        protocol: "/loopsy/session/1".into(),
    };
    let frame = |last: bool| session::Reply::Recording {
        rows: 24,
        cols: 80,
        created: 0,
        pieces: vec![session::Piece {
            time_ms: 0,
            data: ByteBuf::from(vec![b'x'; 128 * 1024]),
        }],
        last,
    };
    // A host that streams on past anything a host holds, then says it is done.
    let frames = crate::recording::MAX_RECORDING / (128 * 1024) + 2;
    let mut replies: Vec<_> = (0..frames).map(|_| frame(false)).collect();
    replies.push(frame(true));
    node(&place, vec![(vec![stream], replies)]);
    let err = place
        .client()
        .session_export(None, "agent".into())
        .await
        .expect_err("more than a host holds");
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
}

#[tokio::test]
async fn a_handed_over_exec_ends_as_the_node_says_and_an_older_node_refuses_it() {
    use std::os::fd::AsFd;

    use loopsy_wire::handover::ExecNews;

    use crate::handover::ExecEnd;
    let place = Place::new("exec-here");
    let stream = || Response::Stream {
        protocol: "/loopsy/exec/1".into(),
    };
    let exited = ExecNews::Exited {
        code: Some(3),
        signal: None,
        timed_out: false,
    };
    let old_node = control::Error::new(ErrorCode::BadRequest, "not a control request");
    let node = node(
        &place,
        vec![
            (vec![stream()], vec![ExecNews::Started { pid: 7 }, exited]),
            (vec![stream()], vec![ExecNews::Unwritable]),
            (
                vec![stream()],
                vec![ExecNews::Refused {
                    reason: "exec policy: no".into(),
                }],
            ),
            (vec![Response::Error(old_node)], vec![]),
        ],
    );
    let client = place.client();
    let null = std::fs::File::open("/dev/null").unwrap();
    let fds = [null.as_fd(), null.as_fd(), null.as_fd()];
    let start = exec::Start {
        argv: vec!["true".into()],
        cwd: None,
        env: Vec::new(),
        timeout_secs: None,
        pty: None,
    };
    let run = async |stdin_relayed| {
        let (handed, _input) = client
            .exec_here("alpha".into(), start.clone(), fds, stdin_relayed)
            .await?;
        handed.end().await
    };
    match run(false).await {
        Ok(ExecEnd::Exited(exit)) => assert_eq!(exit.code, Some(3)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(run(false).await, Ok(ExecEnd::Unwritable)));
    match run(true).await {
        Err(Error::NotStarted { reason }) => assert_eq!(reason, "exec policy: no"),
        other => panic!("{other:?}"),
    }
    match run(false).await {
        Err(Error::Refused(e)) => assert_eq!(e.code, ErrorCode::BadRequest),
        other => panic!("{other:?}"),
    }
    let requests = node.await.unwrap();
    assert!(matches!(
        &requests[2],
        Request::ExecHere { peer, stdin_relayed: true, .. } if peer == "alpha"
    ));
}
