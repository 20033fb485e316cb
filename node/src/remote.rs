//! Running a program on a peer, for `loopsy exec` and `loopsy shell`: the local side of
//! `/loopsy/exec/1` through the daemon. Standard streams, signals and the window size
//! behave as if the program ran here; the exit code is the program's. The node writes the
//! output into our stdout and stderr and reads our stdin itself, as ssh's ControlMaster
//! does, so a stream of output costs this process nothing; when it cannot, this process
//! relays them.

use std::{
    io::IsTerminal,
    os::fd::{AsFd, BorrowedFd},
    process::ExitCode,
};

use loopsy_client::{
    Error,
    exec::{Event, Exit, Input},
    handover::{ExecEnd, ExecHandedOver},
};
use loopsy_daemon::Home;
use loopsy_wire::{
    control::ErrorCode,
    exec::{CHUNK, Start},
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

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

/// What goes to the program, in order, from the tasks that forward stdin and signals.
enum Order {
    Stdin(Vec<u8>),
    Eof,
    Signal(i32),
    Resize(u16, u16),
}

/// Runs `start` on `peer`; `raw` puts the local terminal in raw mode (shells and `-t`).
/// Our stdin, stdout and stderr go to the node, which then reads and writes them itself,
/// unless it cannot take them (then, or with `LOOPSY_NO_HANDOVER` set, every byte is
/// relayed through this process).
pub async fn run(home: &Home, peer: String, start: Start, raw: bool) -> ExitCode {
    let pty = start.pty.is_some();
    // Caught from the start, so that setting them up costs nothing once the program runs
    // (it took milliseconds there, while the answers waited); until the program has
    // started, one of them ends this process as it would have before.
    let mut signals = if pty { Vec::new() } else { signal_streams() };
    let client = crate::client(home);
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let fds = [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()];
    // A terminal in its usual mode stays ours to read: stopped (Ctrl-Z), this process
    // reads nothing while the shell has the terminal back, and neither must the node.
    let stdin_relayed = !raw && stdin.is_terminal();
    let opened = open(&client, peer, start, fds, stdin_relayed);
    let (ending, input) = tokio::select! {
        opened = opened => match opened {
            Ok(opened) => opened,
            Err(code) => return code,
        },
        number = caught(&mut signals) => return ExitCode::from(128 + number),
    };
    let (orders_in, orders) = mpsc::channel::<Order>(16);
    tokio::spawn(send_orders(input, orders));
    if matches!(ending, Ending::Relayed(_) | Ending::Handed(_, true)) {
        tokio::spawn(forward_stdin(orders_in.clone()));
    }
    if pty {
        tokio::spawn(forward_resizes(orders_in.clone()));
    } else {
        tokio::spawn(forward_signals(orders_in.clone(), signals));
    }
    let _raw = raw.then(term::RawMode::enable);
    let code = match ending {
        Ending::Relayed(output) => receive(output, pty).await,
        Ending::Handed(handed, _) => match handed.end().await {
            Ok(ExecEnd::Exited(exit)) => exited(exit),
            // As when our own write fails: nobody reads the output any more.
            Ok(ExecEnd::Unwritable) => ExitCode::from(code::LOOPSY),
            Err(e) => failed(e),
        },
    };
    drop(_raw);
    code
}

/// Starts the program, with our stdin, stdout and stderr handed to the node when it can
/// take them; the exit status when it did not start.
async fn open(
    client: &loopsy_client::Client,
    peer: String,
    start: Start,
    fds: [BorrowedFd<'_>; 3],
    stdin_relayed: bool,
) -> Result<(Ending, Input), ExitCode> {
    if hand_over(fds) {
        match client
            .exec_here(peer.clone(), start.clone(), fds, stdin_relayed)
            .await
        {
            Ok((handed, input)) => return Ok((Ending::Handed(handed, stdin_relayed), input)),
            // A node that predates hand-overs, or cannot use these descriptors.
            Err(Error::Refused(e)) if e.code == ErrorCode::BadRequest => {}
            Err(e) => return Err(not_opened(e)),
        }
    }
    match client.exec(peer, start).await {
        Ok((output, input)) => Ok((Ending::Relayed(output), input)),
        Err(e) => Err(not_opened(e)),
    }
}

/// Where the program's output goes.
enum Ending {
    /// Through this process.
    Relayed(loopsy_client::exec::Output),
    /// Straight into our stdout and stderr, by the node; our stdin through us when true.
    Handed(ExecHandedOver, bool),
}

/// Whether to hand `fds` (our stdin, stdout and stderr) to the node: when it can take all
/// three and nobody said not to.
fn hand_over(fds: [BorrowedFd<'_>; 3]) -> bool {
    std::env::var_os(crate::attach::NO_HANDOVER).is_none()
        && fds.into_iter().all(loopsy_daemon::passed::passable)
}

/// The exit status for an exec that was not opened: refused by the gate or policy, or
/// Loopsy's own failure.
fn not_opened(e: Error) -> ExitCode {
    match e {
        Error::Refused(e) if e.code == ErrorCode::Refused => fail(&e.message, code::REFUSED),
        e => fail(&e.to_string(), code::LOOPSY),
    }
}

/// The exit status for a program that ended.
fn exited(exit: Exit) -> ExitCode {
    if exit.timed_out {
        return fail("the program was killed at its timeout", code::TIMED_OUT);
    }
    ExitCode::from(status(exit.code, exit.signal))
}

/// The exit status for an exec that failed after it was opened.
fn failed(e: Error) -> ExitCode {
    match e {
        // 127 says the program is not there, as a shell says; a working directory that is
        // not there is another failure to start.
        e if e.is_missing_program() => fail(&e.to_string(), code::NOT_FOUND),
        e @ Error::NotStarted { .. } => fail(&e.to_string(), code::REFUSED),
        e => fail(&e.to_string(), code::LOOPSY),
    }
}

/// This process's exit status for a program that ended on a peer: its code, or 128+N for
/// signal N, as a shell says. A number no program ends with (the peer's mistake, or a lie)
/// is Loopsy's failure: never cut or clamped into another code, least of all 0.
fn status(code: Option<i32>, signal: Option<i32>) -> u8 {
    match (code, signal) {
        (Some(code), _) => exit_code(code),
        (None, Some(signal)) if signal > 0 => exit_code(signal.saturating_add(128)),
        _ => code::LOOPSY,
    }
}

/// A peer's exit code (0 to 255, with 128+N for signal N) as this process's exit status;
/// any other number is [`code::LOOPSY`].
pub fn exit_code(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(code::LOOPSY)
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
        use std::os::fd::AsFd;
        let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
        while let Some(out) = rx.blocking_recv() {
            let written = match out {
                Out::Stdout(data) => crate::stdio::write_all(stdout.as_fd(), &data),
                Out::Stderr(data) => crate::stdio::write_all(stderr.as_fd(), &data),
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

/// Reads the program's output and end. A program on a terminal (`shell`, `-t`) writes
/// straight to ours, as `attach` does: its output is echoes and screens, where a hand-off
/// to the writer's thread would cost every keystroke two context switches.
async fn receive(from_node: loopsy_client::exec::Output, on_terminal: bool) -> ExitCode {
    let mut writer = None;
    let code = relay_output(from_node, on_terminal, &mut writer).await;
    let Some((out, writer)) = writer else {
        return code;
    };
    drop(out);
    // Everything written before the exit code is returned.
    match writer.await {
        Ok(false) => ExitCode::from(code::LOOPSY),
        _ => code,
    }
}

/// The output's writer, started with the first output: a program that writes nothing
/// (`exec PEER true`) costs no thread.
type Writer = Option<(mpsc::Sender<Out>, tokio::task::JoinHandle<bool>)>;

async fn relay_output(
    mut from_node: loopsy_client::exec::Output,
    on_terminal: bool,
    writer: &mut Writer,
) -> ExitCode {
    loop {
        let event = match from_node.next().await {
            Ok(event) => event,
            Err(e) => return failed(e),
        };
        let chunk = match event {
            Event::Stdout(data) if on_terminal => {
                if crate::stdio::write_stdout(&data).is_err() {
                    return ExitCode::from(code::LOOPSY);
                }
                continue;
            }
            Event::Stdout(data) => Out::Stdout(data),
            Event::Stderr(data) => Out::Stderr(data),
            Event::Exited(exit) => return exited(exit),
        };
        let (out, _) = writer.get_or_insert_with(output_writer);
        if out.send(chunk).await.is_err() {
            return ExitCode::from(code::LOOPSY);
        }
    }
}

/// Sends every order for the program, in order, to the node.
async fn send_orders(mut input: Input, mut orders: mpsc::Receiver<Order>) {
    while let Some(order) = orders.recv().await {
        let sent = match order {
            Order::Stdin(data) => input.stdin(&data).await,
            Order::Eof => input.eof().await,
            Order::Signal(number) => input.signal(number).await,
            Order::Resize(rows, cols) => input.resize(rows, cols).await,
        };
        if sent.is_err() {
            return;
        }
    }
}

async fn forward_stdin(orders: mpsc::Sender<Order>) {
    let mut stdin = crate::stdio::Stdin::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = orders.send(Order::Eof).await;
                return;
            }
            Ok(n) => {
                if orders.send(Order::Stdin(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The signals a local program would get from the terminal or a `kill`, with their
/// numbers.
type Signals = Vec<(tokio::signal::unix::Signal, u8)>;

fn signal_streams() -> Signals {
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
    streams
}

/// The number of the next signal caught; never, with none to catch.
async fn caught(streams: &mut Signals) -> u8 {
    if streams.is_empty() {
        return std::future::pending().await;
    }
    let waits = streams
        .iter_mut()
        .map(|(s, n)| Box::pin(async move { s.recv().await.map(|_| *n) }));
    match futures::future::select_all(waits).await {
        (Some(number), _, _) => number,
        (None, _, _) => std::future::pending().await,
    }
}

/// Ctrl-C and friends go to the remote process group, as they would to a local program.
async fn forward_signals(orders: mpsc::Sender<Order>, mut streams: Signals) {
    loop {
        let number = caught(&mut streams).await;
        if orders.send(Order::Signal(i32::from(number))).await.is_err() {
            return;
        }
    }
}

async fn forward_resizes(orders: mpsc::Sender<Order>) {
    let Ok(mut winch) = signal(SignalKind::window_change()) else {
        return;
    };
    while winch.recv().await.is_some() {
        let (rows, cols) = term::size();
        if orders.send(Order::Resize(rows, cols)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_exit_is_its_code_and_nonsense_is_never_success() {
        assert_eq!(status(Some(0), None), 0);
        assert_eq!(status(Some(3), None), 3);
        assert_eq!(status(None, Some(9)), 128 + 9);
        // Numbers no program ends with: cut to a byte, 256 and signal 128 were "success".
        assert_eq!(status(Some(256), None), code::LOOPSY);
        assert_eq!(status(Some(-1), None), code::LOOPSY);
        assert_eq!(status(None, Some(128)), code::LOOPSY);
        assert_eq!(status(None, Some(-128)), code::LOOPSY);
        assert_eq!(status(None, None), code::LOOPSY);
        assert_eq!(exit_code(-1), code::LOOPSY, "clamped, it was 0");
    }
}
