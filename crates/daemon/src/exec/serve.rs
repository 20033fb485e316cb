//! Serving an exec stream: check the policy, start the program, stream its output with
//! backpressure, and kill the whole group when the program's time is up, when the client
//! asks, or when the stream goes away: nothing is left running.

use std::{os::unix::process::ExitStatusExt, process::ExitStatus, time::Duration};

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use loopsy_mesh::framed;
use loopsy_wire::exec::{MAX_FRAME, OUTPUT_CHUNK, Pty, Reply, Request};
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::{io::AsyncReadExt, sync::mpsc, time::Instant};

use super::{
    Exec, ExecError,
    policy::{self, Approved},
    process::{Reaper, ToInput, feed, spawn},
};
use crate::{audit::Outcome, service::Peer};

/// How the audit log says a program ended because its client left.
const GONE: &str = "killed: the client went away";
/// How long the last words to a client may take: one that stopped reading gets no more.
const LAST_WORDS: Duration = Duration::from_secs(5);
/// How long a client may take to say what to run.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// After the program exits, output is drained until it stops for this long (a background
/// child may hold the pipe open forever).
const DRAIN_IDLE: Duration = Duration::from_millis(200);

/// Serves one exec stream (or any byte stream, in the tests) from an admitted peer.
pub(super) async fn serve<S>(exec: &Exec, peer: &Peer, stream: S)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = stream.split();
    let start =
        match tokio::time::timeout(START_DEADLINE, framed::read(&mut reader, MAX_FRAME)).await {
            Ok(Ok(Some(Request::Start(start)))) => start,
            _ => return,
        };
    let summary = if start.argv.is_empty() {
        "(login shell)".to_owned()
    } else {
        start.argv.join(" ")
    };
    let audit = |outcome, reason: String| {
        peer.audit
            .record("exec", summary.clone(), outcome, Some(reason));
    };
    let policy = exec.policy.get().with(peer.policies.exec.as_ref());
    let approved = match policy::check(&start, &policy, &peer.grants) {
        Ok(approved) => approved,
        Err(rule) => {
            let rule = ExecError::from(rule);
            audit(Outcome::Denied, rule.to_string());
            refuse(&mut writer, &rule).await;
            return;
        }
    };
    let Some(_slot) = exec.running.claim(peer.id, policy.max_running) else {
        let rule = ExecError::TooMany(policy.max_running);
        audit(Outcome::Denied, rule.to_string());
        refuse(&mut writer, &rule).await;
        return;
    };
    match run(approved, start.pty, reader, &mut writer).await {
        Ok(end) => audit(Outcome::Ok, end),
        Err(e) => {
            audit(Outcome::Failed, e.to_string());
            refuse(&mut writer, &e).await;
        }
    }
    let _ = tokio::time::timeout(LAST_WORDS, writer.close()).await;
}

/// Tells the client why, if it still listens; never waits long for one that does not.
async fn refuse<W: AsyncWrite + Unpin>(writer: &mut W, error: &ExecError) {
    let reason = error.to_string();
    let _ = tokio::time::timeout(LAST_WORDS, async {
        let _ = framed::write(writer, &Reply::Refused { reason }, MAX_FRAME).await;
        let _ = writer.close().await;
    })
    .await;
}

/// Runs an approved program to its end; returns how it ended, for the audit log.
async fn run<R, W>(
    approved: Approved,
    pty: Option<Pty>,
    mut reader: R,
    writer: &mut W,
) -> Result<String, ExecError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let (mut child, io) = spawn(&approved, pty.as_ref())?;
    let pid = child.id().unwrap_or(0);
    let group = Pid::from_raw(pid as i32);
    // On every way out of here, the program's whole process group is killed.
    let _reaper = Reaper(group);
    let kill_group = |signal: Signal| {
        if let Some(group) = group {
            let _ = kill_process_group(group, signal);
        }
    };
    send(writer, &Reply::Started { pid }).await?;

    // Client frames come through a task, so that waiting for one never loses half of it.
    // When the client is gone the task says so on `gone` too: a send of output to a client
    // that stopped reading would otherwise wait for ever, and the program with it.
    let (requests_tx, mut requests) = mpsc::channel::<Request>(8);
    let (gone_tx, gone) = tokio::sync::watch::channel(false);
    let _reader = AbortOnDrop(tokio::spawn(async move {
        loop {
            match framed::read::<Request, _>(&mut reader, MAX_FRAME).await {
                Ok(Some(request)) => {
                    if requests_tx.send(request).await.is_err() {
                        break;
                    }
                }
                Ok(None) => {
                    tracing::debug!("exec client closed its stream");
                    break;
                }
                Err(error) => {
                    tracing::debug!(%error, "exec client stream failed");
                    break;
                }
            }
        }
        let _ = gone_tx.send(true);
    }));
    let mut gone = gone;
    let mut client_gone = false;
    let (input, input_rx) = mpsc::channel::<ToInput>(8);
    // Ends with its channel; aborted with this function all the same.
    let _feeder = AbortOnDrop(tokio::spawn(feed(io.input, input_rx)));

    let mut stdout = io.stdout;
    let mut stderr = io.stderr;
    let (mut out_buf, mut err_buf) = (vec![0u8; OUTPUT_CHUNK], vec![0u8; OUTPUT_CHUNK]);
    let mut out_open = true;
    let mut err_open = stderr.is_some();
    let mut status: Option<ExitStatus> = None;
    let mut timed_out = false;
    // A timeout too far away to reckon (a peer may send any number) is no timeout.
    let deadline = approved
        .timeout_secs
        .and_then(|s| Instant::now().checked_add(Duration::from_secs(s)));
    let mut drain_until = Instant::now();
    // Input the program has no room for yet. While it waits, output goes on (a program that
    // writes before it reads would otherwise never read) and the client's further frames
    // wait in the stream, held back by its flow control.
    let mut waiting: Option<ToInput> = None;
    loop {
        if client_gone {
            // The client, its connection or its membership is gone.
            kill_group(Signal::KILL);
            let _ = child.wait().await;
            return Ok(GONE.into());
        }
        if status.is_some() && (!(out_open || err_open) || Instant::now() >= drain_until) {
            break;
        }
        let drain_timer = tokio::time::sleep_until(drain_until);
        tokio::select! {
            room = input.reserve(), if waiting.is_some() => {
                // No room ever again: the program's input is closed, and the rest dropped.
                if let (Ok(room), Some(next)) = (room, waiting.take()) {
                    room.send(next);
                }
            },
            request = requests.recv(), if waiting.is_none() => match request {
                Some(Request::Stdin { data }) => waiting = Some(ToInput::Data(data)),
                Some(Request::StdinEof) => waiting = Some(ToInput::Eof),
                Some(Request::Signal { signal }) => {
                    if let Some(signal) = Signal::from_named_raw(signal) {
                        kill_group(signal);
                    }
                }
                Some(Request::Resize { rows, cols }) => {
                    waiting = Some(ToInput::Resize(rows, cols));
                }
                Some(Request::Start(_)) => {}
                None => client_gone = true,
            },
            n = stdout.read(&mut out_buf), if out_open => match n {
                Ok(n) if n > 0 => {
                    let reply = Reply::Stdout { data: out_buf[..n].to_vec() };
                    client_gone = !deliver(writer, &reply, &mut gone).await?;
                    drain_until = Instant::now() + DRAIN_IDLE;
                }
                // A PTY reports EIO once the program side is closed.
                _ => out_open = false,
            },
            n = read_opt(&mut stderr, &mut err_buf), if err_open => match n {
                Ok(n) if n > 0 => {
                    let reply = Reply::Stderr { data: err_buf[..n].to_vec() };
                    client_gone = !deliver(writer, &reply, &mut gone).await?;
                    drain_until = Instant::now() + DRAIN_IDLE;
                }
                _ => err_open = false,
            },
            exit = child.wait(), if status.is_none() => {
                status = Some(exit.map_err(ExecError::Wait)?);
                drain_until = Instant::now() + DRAIN_IDLE;
            },
            _ = sleep_until_opt(deadline), if status.is_none() && !timed_out => {
                timed_out = true;
                kill_group(Signal::KILL);
            },
            _ = drain_timer, if status.is_some() => {}
        }
    }
    // Whatever the program left behind in its group goes with it.
    kill_group(Signal::KILL);
    let status = status.unwrap_or_default();
    let exited = Reply::Exited {
        code: status.code(),
        signal: status.signal(),
        timed_out,
    };
    if !deliver(writer, &exited, &mut gone).await? {
        return Ok(GONE.into());
    }
    Ok(match (timed_out, status.code(), status.signal()) {
        (true, _, _) => "killed at its timeout".into(),
        (_, Some(code), _) => format!("exited with {code}"),
        (_, _, Some(signal)) => format!("killed by signal {signal}"),
        _ => "ended".into(),
    })
}

/// Aborts a task when dropped: a read of a stream whose connection is gone never returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn read_opt(
    reader: &mut Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match reader {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends `reply`, unless the client goes away first: `Ok(false)` then. A client that stopped
/// reading and left would otherwise hold the send, and the program, for ever.
async fn deliver<W: AsyncWrite + Unpin>(
    writer: &mut W,
    reply: &Reply,
    gone: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<bool, ExecError> {
    tokio::select! {
        sent = send(writer, reply) => sent.map(|()| true),
        // Gone, or the reading task ended without a word: gone either way.
        _ = gone.wait_for(|g| *g) => Ok(false),
    }
}

async fn send<W: AsyncWrite + Unpin>(writer: &mut W, reply: &Reply) -> Result<(), ExecError> {
    framed::write(writer, reply, MAX_FRAME)
        .await
        .map_err(|e| ExecError::ClientGone(e.to_string()))
}
