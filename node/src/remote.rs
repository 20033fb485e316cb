//! Running a program on a peer, for `loopsy exec` and `loopsy shell`: the local side of
//! `/loopsy/exec/1` through the daemon. Standard streams, signals and the window size
//! behave as if the program ran here; the exit code is the program's.

use std::process::ExitCode;

use loopsy_daemon::{
    Home,
    control::{ClientError, Connection},
};
use loopsy_mesh::framed;
use loopsy_wire::{
    control::{ErrorCode, Request, Response},
    exec::{CHUNK, MAX_FRAME, Reply, Request as Input, Start},
};
use tokio::{
    io::AsyncReadExt,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use crate::term;

/// Exit codes for what went wrong on the way, apart from the program's own.
pub mod code {
    /// `--timeout` killed the program (as `timeout(1)` says).
    pub const TIMED_OUT: u8 = 124;
    /// Refused: by the peer's gate or policy.
    pub const REFUSED: u8 = 126;
    /// The program does not exist there.
    pub const NOT_FOUND: u8 = 127;
    /// Loopsy itself failed: no node, no connection, a lost stream (as ssh's 255).
    pub const LOOPSY: u8 = 255;
}

/// Runs `start` on `peer`; `raw` puts the local terminal in raw mode (shells and `-t`).
pub async fn run(home: &Home, peer: String, start: Start, raw: bool) -> ExitCode {
    let pty = start.pty.is_some();
    let mut connection = match Connection::open(home, Request::Exec { peer, start }).await {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string(), code::LOOPSY),
    };
    match connection.next().await {
        Ok(Some(Response::Stream { .. })) => {}
        Err(ClientError::Refused(e)) if e.code == ErrorCode::Refused => {
            return fail(&e.message, code::REFUSED);
        }
        Err(e) => return fail(&e.to_string(), code::LOOPSY),
        Ok(_) => return fail("the node gave an unexpected answer", code::LOOPSY),
    }
    let (from_node, to_node) = connection.into_stream().into_split();
    let (input, orders) = mpsc::channel::<Input>(16);
    tokio::spawn(send_orders(to_node, orders));
    tokio::spawn(forward_stdin(input.clone()));
    if pty {
        tokio::spawn(forward_resizes(input.clone()));
    } else {
        tokio::spawn(forward_signals(input.clone()));
    }
    let _raw = raw.then(term::RawMode::enable);
    let code = receive(from_node).await;
    drop(_raw);
    code
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("loopsy: {message}");
    ExitCode::from(code)
}

/// Which local stream a chunk of output goes to.
enum Out {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// Writes output on a blocking thread of its own, fed through a bounded channel: a slow
/// reader of our stdout slows the stream down (backpressure) without stalling the signal
/// and input forwarding, and each chunk costs a channel send rather than a thread hop.
fn output_writer() -> (mpsc::Sender<Out>, tokio::task::JoinHandle<bool>) {
    let (tx, mut rx) = mpsc::channel::<Out>(8);
    let writer = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
        while let Some(out) = rx.blocking_recv() {
            let written = match out {
                Out::Stdout(data) => {
                    let mut lock = stdout.lock();
                    lock.write_all(&data).and_then(|_| lock.flush())
                }
                Out::Stderr(data) => {
                    let mut lock = stderr.lock();
                    lock.write_all(&data).and_then(|_| lock.flush())
                }
            };
            if written.is_err() {
                // Nobody reads our output any more (a closed pipe).
                return false;
            }
        }
        true
    });
    (tx, writer)
}

/// Reads the program's output and end.
async fn receive(from_node: tokio::net::unix::OwnedReadHalf) -> ExitCode {
    let (out, writer) = output_writer();
    let code = relay_output(from_node, out).await;
    // Everything written before the exit code is returned.
    match writer.await {
        Ok(false) => ExitCode::from(code::LOOPSY),
        _ => code,
    }
}

async fn relay_output(
    from_node: tokio::net::unix::OwnedReadHalf,
    out: mpsc::Sender<Out>,
) -> ExitCode {
    let mut from_node = from_node.compat();
    loop {
        let reply = match framed::read::<Reply, _>(&mut from_node, MAX_FRAME).await {
            Ok(Some(reply)) => reply,
            Ok(None) => return fail("the connection to the peer was lost", code::LOOPSY),
            Err(e) => {
                return fail(
                    &format!("the connection to the peer failed: {e}"),
                    code::LOOPSY,
                );
            }
        };
        match reply {
            Reply::Started { .. } => {}
            Reply::Stdout { data } => {
                if out.send(Out::Stdout(data)).await.is_err() {
                    return ExitCode::from(code::LOOPSY);
                }
            }
            Reply::Stderr { data } => {
                if out.send(Out::Stderr(data)).await.is_err() {
                    return ExitCode::from(code::LOOPSY);
                }
            }
            Reply::Refused { reason } => {
                // 127 says the program is not there, as a shell says; a working directory
                // that is not there is another failure to start.
                let code = if reason.starts_with("cannot start") && reason.contains("No such file")
                {
                    code::NOT_FOUND
                } else {
                    code::REFUSED
                };
                return fail(&reason, code);
            }
            Reply::Exited {
                code,
                signal,
                timed_out,
            } => {
                if timed_out {
                    return fail("the program was killed at its timeout", code::TIMED_OUT);
                }
                return match (code, signal) {
                    (Some(code), _) => ExitCode::from(code as u8),
                    (None, Some(signal)) => ExitCode::from(128u8.wrapping_add(signal as u8)),
                    _ => ExitCode::from(code::LOOPSY),
                };
            }
        }
    }
}

/// Writes every order for the program, in order, to the node.
async fn send_orders(to_node: tokio::net::unix::OwnedWriteHalf, mut orders: mpsc::Receiver<Input>) {
    let mut to_node = to_node.compat_write();
    while let Some(order) = orders.recv().await {
        if framed::write(&mut to_node, &order, MAX_FRAME)
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn forward_stdin(input: mpsc::Sender<Input>) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = input.send(Input::StdinEof).await;
                return;
            }
            Ok(n) => {
                if input
                    .send(Input::Stdin {
                        data: buf[..n].to_vec(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Ctrl-C and friends go to the remote process group, as they would to a local program.
async fn forward_signals(input: mpsc::Sender<Input>) {
    let kinds = [
        (SignalKind::interrupt(), 2),
        (SignalKind::terminate(), 15),
        (SignalKind::hangup(), 1),
        (SignalKind::quit(), 3),
    ];
    let mut streams = Vec::new();
    for (kind, number) in kinds {
        if let Ok(s) = signal(kind) {
            streams.push((s, number));
        }
    }
    loop {
        let waits = streams
            .iter_mut()
            .map(|(s, n)| Box::pin(async move { s.recv().await.map(|_| *n) }));
        let (got, _, _) = futures::future::select_all(waits).await;
        match got {
            Some(number) => {
                if input.send(Input::Signal { signal: number }).await.is_err() {
                    return;
                }
            }
            None => return,
        }
    }
}

async fn forward_resizes(input: mpsc::Sender<Input>) {
    let Ok(mut winch) = signal(SignalKind::window_change()) else {
        return;
    };
    while winch.recv().await.is_some() {
        let (rows, cols) = term::size();
        if input.send(Input::Resize { rows, cols }).await.is_err() {
            return;
        }
    }
}
