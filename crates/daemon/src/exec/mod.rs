//! Serving `/loopsy/exec/1` (the flow is in `loopsy_wire::exec`): check the policy, start
//! the program in a process group of its own (on a PTY when asked), stream its output with
//! backpressure, and kill the whole group when the program's time is up, when the client
//! asks, or when the stream goes away: nothing is left running.

pub mod policy;

use std::{
    collections::HashMap,
    os::unix::process::ExitStatusExt,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use loopsy_mesh::{PeerId, Stream, framed};
use loopsy_wire::exec::{CHUNK, MAX_FRAME, Pty, Reply, Request};
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
    time::Instant,
};

use crate::{audit::Outcome, caps::Caps, node::Node};
use policy::Approved;

/// How the audit log says a program ended because its client left.
const GONE: &str = "killed: the client went away";
/// How long the last words to a client may take: one that stopped reading gets no more.
const LAST_WORDS: Duration = Duration::from_secs(5);
/// How long a client may take to say what to run.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// After the program exits, output is drained until it stops for this long (a background
/// child may hold the pipe open forever).
const DRAIN_IDLE: Duration = Duration::from_millis(200);

type Writer = futures::io::WriteHalf<Stream>;

/// Programs running per peer, against the policy's `max_running`.
#[derive(Debug, Default)]
pub struct Running(Mutex<HashMap<PeerId, usize>>);

/// One running program's place; given back on drop.
pub struct Slot<'a>(&'a Running, PeerId);

impl Running {
    fn claim(&self, peer: PeerId, max: usize) -> Option<Slot<'_>> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(peer).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot(self, peer))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut counts = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.1) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.1);
            }
        }
    }
}

/// Serves one exec stream from an admitted peer.
pub async fn serve(node: Arc<Node>, peer: PeerId, stream: Stream, grants: Caps) {
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
        node.audit.record(
            Some(peer),
            node.peer_name(&peer),
            "exec",
            summary.clone(),
            outcome,
            Some(reason),
        );
    };
    let policy = node
        .exec_policy
        .with(node.trust.exec_overrides(&peer).as_ref());
    let approved = match policy::check(&start, &policy, &grants) {
        Ok(approved) => approved,
        Err(rule) => {
            audit(Outcome::Denied, rule.clone());
            refuse(&mut writer, rule).await;
            return;
        }
    };
    let Some(_slot) = node.running.claim(peer, policy.max_running) else {
        let rule = format!(
            "exec policy: at most {} programs at once",
            policy.max_running
        );
        audit(Outcome::Denied, rule.clone());
        refuse(&mut writer, rule).await;
        return;
    };
    match run(approved, start.pty, reader, &mut writer).await {
        Ok(end) => audit(Outcome::Ok, end),
        Err(e) => {
            audit(Outcome::Failed, e.clone());
            refuse(&mut writer, e).await;
        }
    }
    let _ = tokio::time::timeout(LAST_WORDS, writer.close()).await;
}

/// Tells the client why, if it still listens; never waits long for one that does not.
async fn refuse(writer: &mut Writer, reason: String) {
    let _ = tokio::time::timeout(LAST_WORDS, async {
        let _ = framed::write(writer, &Reply::Refused { reason }, MAX_FRAME).await;
        let _ = writer.close().await;
    })
    .await;
}

/// Where the program's input goes: a pipe, or the terminal (which can also be resized).
enum Input {
    Pipe(tokio::process::ChildStdin),
    Pty(pty_process::OwnedWritePty),
}

/// What the input task is told.
enum ToInput {
    Data(Vec<u8>),
    Eof,
    Resize(u16, u16),
}

/// The program's input and output, piped or through a PTY.
struct Io {
    input: Input,
    stdout: Box<dyn AsyncRead + Send + Unpin>,
    stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
}

fn spawn(approved: &Approved, pty: Option<&Pty>) -> Result<(tokio::process::Child, Io), String> {
    let not_started = |e: &dyn std::fmt::Display| format!("cannot start {}: {e}", approved.program);
    let cwd = approved.working_dir()?;
    if let Some(size) = pty {
        let (pty, pts) = pty_process::open().map_err(|e| not_started(&e))?;
        pty.resize(pty_process::Size::new(size.rows.max(1), size.cols.max(1)))
            .map_err(|e| not_started(&e))?;
        let mut command = pty_process::Command::new(&approved.program)
            .args(&approved.args)
            .current_dir(cwd.path())
            .envs(approved.env.iter().cloned())
            .env("TERM", &size.term)
            .kill_on_drop(true);
        if let Some(arg0) = &approved.arg0 {
            command = command.arg0(arg0);
        }
        let child = command.spawn(pts).map_err(|e| not_started(&e))?;
        let (read, write) = pty.into_split();
        let io = Io {
            input: Input::Pty(write),
            stdout: Box::new(read),
            stderr: None,
        };
        return Ok((child, io));
    }
    let mut command = tokio::process::Command::new(&approved.program);
    command
        .args(&approved.args)
        .current_dir(cwd.path())
        .envs(approved.env.iter().cloned())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(arg0) = &approved.arg0 {
        command.arg0(arg0);
    }
    let mut child = command.spawn().map_err(|e| not_started(&e))?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("the program's pipes are missing".into());
    };
    let io = Io {
        input: Input::Pipe(stdin),
        stdout: Box::new(stdout),
        stderr: Some(Box::new(stderr)),
    };
    Ok((child, io))
}

/// Feeds the program's input (and resizes its terminal) in order, apart from the output,
/// so that a program that does not read cannot stop its output from flowing.
async fn feed(mut input: Input, mut orders: mpsc::Receiver<ToInput>) {
    while let Some(order) = orders.recv().await {
        let written = match (&mut input, order) {
            (Input::Pipe(pipe), ToInput::Data(data)) => pipe.write_all(&data).await,
            (Input::Pty(pty), ToInput::Data(data)) => pty.write_all(&data).await,
            (Input::Pty(pty), ToInput::Resize(rows, cols)) => pty
                .resize(pty_process::Size::new(rows.max(1), cols.max(1)))
                .map_err(std::io::Error::other),
            (Input::Pipe(_), ToInput::Resize(..)) => Ok(()),
            // End of input: a pipe closes; a terminal gets its end-of-file character.
            (Input::Pipe(_), ToInput::Eof) => return,
            (Input::Pty(pty), ToInput::Eof) => pty.write_all(b"\x04").await,
        };
        if written.is_err() {
            return;
        }
    }
}

/// Runs an approved program to its end; returns how it ended, for the audit log.
async fn run(
    approved: Approved,
    pty: Option<Pty>,
    mut reader: futures::io::ReadHalf<Stream>,
    writer: &mut Writer,
) -> Result<String, String> {
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
    tokio::spawn(feed(io.input, input_rx));

    let mut stdout = io.stdout;
    let mut stderr = io.stderr;
    let (mut out_buf, mut err_buf) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut out_open = true;
    let mut err_open = stderr.is_some();
    let mut status: Option<ExitStatus> = None;
    let mut timed_out = false;
    // A timeout too far away to reckon (a peer may send any number) is no timeout.
    let deadline = approved
        .timeout_secs
        .and_then(|s| Instant::now().checked_add(Duration::from_secs(s)));
    let mut drain_until = Instant::now();
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
            request = requests.recv() => match request {
                Some(Request::Stdin { data }) => {
                    let _ = input.send(ToInput::Data(data)).await;
                }
                Some(Request::StdinEof) => {
                    let _ = input.send(ToInput::Eof).await;
                }
                Some(Request::Signal { signal }) => {
                    if let Some(signal) = Signal::from_named_raw(signal) {
                        kill_group(signal);
                    }
                }
                Some(Request::Resize { rows, cols }) => {
                    let _ = input.send(ToInput::Resize(rows, cols)).await;
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
                status = Some(exit.map_err(|e| e.to_string())?);
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

/// Kills a process group when dropped.
struct Reaper(Option<Pid>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            let _ = kill_process_group(group, Signal::KILL);
        }
    }
}

async fn read_opt(
    reader: &mut Option<Box<dyn AsyncRead + Send + Unpin>>,
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
async fn deliver(
    writer: &mut Writer,
    reply: &Reply,
    gone: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<bool, String> {
    tokio::select! {
        sent = send(writer, reply) => sent.map(|()| true),
        // Gone, or the reading task ended without a word: gone either way.
        _ = gone.wait_for(|g| *g) => Ok(false),
    }
}

async fn send(writer: &mut Writer, reply: &Reply) -> Result<(), String> {
    framed::write(writer, reply, MAX_FRAME)
        .await
        .map_err(|e| format!("the client went away: {e}"))
}
