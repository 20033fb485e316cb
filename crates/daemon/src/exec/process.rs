//! The program side of exec: starting an approved program in a process group of its own
//! (on a PTY when asked), feeding its input, and killing its whole group at the end.

use std::process::Stdio;

use loopsy_mesh::copies::untuned;
use loopsy_wire::exec::Pty;
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::{
    io::{AsyncRead, AsyncWriteExt},
    sync::{Semaphore, SemaphorePermit, mpsc},
};

use super::{ExecError, policy::Approved};

/// Where the program's input goes: a pipe, or the terminal (which can also be resized).
pub(super) enum Input {
    Pipe(tokio::process::ChildStdin),
    Pty(pty_process::OwnedWritePty),
}

/// What the input task is told.
pub(super) enum ToInput {
    Data(Vec<u8>),
    Eof,
    Resize(u16, u16),
}

/// The program's input and output, piped or through a PTY.
pub(super) struct Io {
    /// The place of a widened stdout pipe, given back when the program's pipes go.
    pub _wide: Option<SemaphorePermit<'static>>,
    pub input: Input,
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    pub stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
}

/// What a program's stdout pipe holds: 1 MiB, the most an unprivileged user may ask for by
/// default (a pipe's default is 64 KiB). A program that writes fast (`cat` of a large file)
/// then fills it while a chunk is on its way to the client, rather than stopping every
/// 64 KiB for the node to read again.
const PIPE_BYTES: usize = 1 << 20;

/// How many programs at once get a wide pipe. The kernel counts a pipe's size against its
/// user (`pipe-user-pages-soft`, 64 MiB by default), and past it gives every new pipe of
/// that user, the user's own shells' included, a single page: 16 wide pipes take a quarter.
static WIDE: Semaphore = Semaphore::const_new(16);

/// Makes `pipe` hold [`PIPE_BYTES`] while a place among `wide` is free and the system lets
/// it; the place is held until the returned permit is dropped with the program's pipes.
fn widen(
    pipe: &impl std::os::fd::AsFd,
    wide: &'static Semaphore,
) -> Option<SemaphorePermit<'static>> {
    let place = wide.try_acquire().ok()?;
    rustix::pipe::fcntl_setpipe_size(pipe, PIPE_BYTES).ok()?;
    Some(place)
}

/// Starts an approved program in a process group of its own, on a PTY when asked.
pub(super) fn spawn(
    approved: &Approved,
    pty: Option<&Pty>,
) -> Result<(tokio::process::Child, Io), ExecError> {
    let not_started = |e: &dyn std::fmt::Display| ExecError::Start {
        program: approved.program.clone(),
        reason: e.to_string(),
    };
    let cwd = approved.working_dir()?;
    if let Some(size) = pty {
        let (pty, pts) = pty_process::open().map_err(|e| not_started(&e))?;
        pty.resize(pty_process::Size::new(size.rows.max(1), size.cols.max(1)))
            .map_err(|e| not_started(&e))?;
        let mut command = pty_process::Command::from(untuned(&approved.program))
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
            _wide: None,
            input: Input::Pty(write),
            stdout: Box::new(read),
            stderr: None,
        };
        return Ok((child, io));
    }
    let mut command = untuned(&approved.program);
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
        return Err(ExecError::NoPipes);
    };
    let wide = widen(&stdout, &WIDE);
    let io = Io {
        _wide: wide,
        input: Input::Pipe(stdin),
        stdout: Box::new(stdout),
        stderr: Some(Box::new(stderr)),
    };
    Ok((child, io))
}

/// Feeds the program's input (and resizes its terminal) in order, apart from the output,
/// so that a program that does not read cannot stop its output from flowing.
pub(super) async fn feed(mut input: Input, mut orders: mpsc::Receiver<ToInput>) {
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

/// Kills a process group when dropped.
pub(super) struct Reaper(pub Option<Pid>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            let _ = kill_process_group(group, Signal::KILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past its places, a pipe keeps the system's default size, and a place comes back
    /// when the pipe that held it goes.
    #[test]
    fn only_so_many_pipes_are_widened_at_once() {
        static TWO: Semaphore = Semaphore::const_new(2);
        let pipes: Vec<_> = (0..3)
            .map(|_| rustix::pipe::pipe().expect("pipe"))
            .collect();
        let size = |i: usize| rustix::pipe::fcntl_getpipe_size(&pipes[i].0).expect("size");
        let default = size(0);
        let first = widen(&pipes[0].1, &TWO);
        let second = widen(&pipes[1].1, &TWO);
        assert!(first.is_some() && second.is_some());
        assert_eq!((size(0), size(1)), (PIPE_BYTES, PIPE_BYTES));
        assert!(widen(&pipes[2].1, &TWO).is_none());
        assert_eq!(size(2), default);
        drop(first);
        assert!(widen(&pipes[2].1, &TWO).is_some());
        assert_eq!(size(2), PIPE_BYTES);
    }
}
