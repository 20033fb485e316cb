//! Helpers for Loopsy's integration tests: the real binaries ([`bin`]), nodes run as real
//! processes ([`node`]), hosts in Linux network namespaces ([`netlab`]), and a Python
//! with the official MCP SDK for clients nobody here wrote ([`python`]).

pub mod attach;
pub mod bin;
pub mod browser;
pub mod netlab;
pub mod node;
pub mod proc;
pub mod python;
pub mod stranger;
pub mod temp;
pub mod tls;

use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`. After `timeout` it panics (rather than returning
/// an error) so that the nodes of the test print their logs as they are dropped.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `command` to its end with `input` on its stdin (written from a thread of its own, so
/// a program that writes before it reads cannot deadlock the test) and its output captured.
pub fn output_with_input(
    command: &mut std::process::Command,
    input: &[u8],
) -> std::process::Output {
    use std::{io::Write, process::Stdio};
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for the command");
    let _ = writer.join();
    out
}
