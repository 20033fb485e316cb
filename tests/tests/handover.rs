//! `loopsy attach` hands its terminal to its node (SCM_RIGHTS): the node reads the keys
//! and writes the screen, the CLI only follows the size and the end. These tests show that
//! the hand-over happens (the CLI writes next to nothing of a stream of output, where the
//! relaying CLI, `LOOPSY_NO_HANDOVER`, writes all of it), that a killed CLI leaves no copy of
//! its terminal in the node, that the detach key still detaches, and that output order and
//! exit codes are what they were.

use std::{
    io::{Read, Write},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use loopsy_tests::{
    attach::{assert_unbroken, counted, strip_escapes},
    bin,
    node::{Node, Options},
    wait_for,
};

/// A `loopsy attach` on pipes: stdin ours, stdout and stderr one pipe, read as it comes.
struct Cli {
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<Vec<u8>>>,
    /// Hears once no process holds the output pipe any more.
    released: mpsc::Receiver<()>,
}

impl Cli {
    fn attach(node: &Node, session: &str, relayed: bool) -> Self {
        let (reader, writer) = std::io::pipe().expect("pipe");
        let mut command = Command::new(bin::loopsy());
        command
            .arg("--home")
            .arg(node.home())
            .args(["attach", session])
            .stdin(Stdio::piped())
            .stderr(writer.try_clone().expect("pipe"))
            .stdout(writer);
        if relayed {
            command.env("LOOPSY_NO_HANDOVER", "1");
        }
        let mut child = command.spawn().expect("run loopsy attach");
        // Our copies of the pipe's write end go with the command.
        drop(command);
        let output = Arc::new(Mutex::new(Vec::new()));
        let (done, released) = mpsc::channel();
        let into = output.clone();
        std::thread::spawn(move || {
            let mut reader = reader;
            let mut buffer = [0u8; 65536];
            while let Ok(n) = reader.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                into.lock().expect("output").extend_from_slice(&buffer[..n]);
            }
            let _ = done.send(());
        });
        Self {
            stdin: child.stdin.take(),
            child,
            output,
            released,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&strip_escapes(&self.output.lock().expect("output"))).into_owned()
    }

    fn wait_for_text(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.text().contains(what) {
            assert!(
                Instant::now() < deadline,
                "no `{what}` from loopsy attach: {:?}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn type_keys(&mut self, keys: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(keys).expect("loopsy attach takes keys");
        stdin.flush().expect("flush");
    }

    fn exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "loopsy attach did not end: {:?}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The bytes the CLI process has written so far, as the kernel counts them (`wchar`:
    /// write(2) and friends, to its stdout pipe as to its node's socket).
    fn written(&self) -> u64 {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.child.id())).expect("io");
        io.lines()
            .find_map(|line| line.strip_prefix("wchar: "))
            .and_then(|n| n.parse().ok())
            .expect("wchar")
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn new_session(node: &Node, args: &[&str]) -> String {
    let mut all = vec!["session", "new"];
    all.extend_from_slice(args);
    node.ok(&all).trim().to_owned()
}

fn clients(node: &Node, id: &str) -> Option<u64> {
    let listed = node.json(&["session", "ls", "--json"]).ok()?;
    let session = listed.as_array()?.iter().find(|s| s["id"] == id)?.clone();
    session["clients"].as_u64()
}

/// Output of this many bytes, once a line is typed.
const STREAM: usize = 2_000_000;

#[test]
fn a_handed_over_terminal_is_written_by_the_node_not_the_cli() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    let script = format!(
        "while true; do echo ready; read go; head -c {STREAM} /dev/zero | tr '\\0' x; echo; \
         echo done-$go; done"
    );
    let id = new_session(&b, &["--on", "alpha", "--", "sh", "-c", &script]);
    let mut measured = Vec::new();
    for (round, relayed) in [(1, false), (2, true)] {
        let mut cli = Cli::attach(&b, &id, relayed);
        cli.wait_for_text("ready");
        let before = cli.written();
        cli.type_keys(format!("{round}\n").as_bytes());
        cli.wait_for_text(&format!("done-{round}"));
        measured.push(cli.written() - before);
        cli.type_keys(b"\x1c");
        assert!(cli.exit().success(), "{:?}", cli.text());
    }
    let (handed, relayed) = (measured[0], measured[1]);
    // The relaying CLI wrote every byte of the stream to its stdout; the one that handed
    // its terminal over wrote none of it (its node did).
    assert!(relayed > STREAM as u64, "relayed: wrote {relayed} bytes");
    assert!(handed < 64 * 1024, "handed over: wrote {handed} bytes");
    Ok(())
}

#[test]
fn a_killed_cli_leaves_no_copy_of_its_terminal_in_the_node() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let id = new_session(&a, &["--", "sh", "-c", "echo ready; exec sleep 600"]);
    let mut cli = Cli::attach(&a, &id, false);
    cli.wait_for_text("ready");
    wait_for("one client", Duration::from_secs(10), || {
        (clients(&a, &id)? == 1).then_some(())
    })?;
    cli.child.kill()?;
    // Once the CLI is gone, nobody may hold its output pipe: the node let go of it.
    let released = cli.released.recv_timeout(Duration::from_secs(10));
    assert!(released.is_ok(), "the node still holds the terminal");
    wait_for("no client", Duration::from_secs(10), || {
        (clients(&a, &id)? == 0).then_some(())
    })?;
    Ok(())
}

#[test]
fn the_detach_key_detaches_and_the_keys_before_it_arrive() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let id = new_session(&a, &["--", "sh"]);
    let mut cli = Cli::attach(&a, &id, false);
    cli.type_keys(b"echo attach''ed\n");
    cli.wait_for_text("attached");
    // Keys and the detach key in one read: those before it reach the session.
    cli.type_keys(b"echo typed-be''fore-detach > /dev/null; echo before''-detach-ran\n\x1c");
    let status = cli.exit();
    assert!(status.success(), "{status}: {:?}", cli.text());
    assert!(
        cli.text()
            .contains(&format!("[detached from session {id}]")),
        "{:?}",
        cli.text()
    );
    assert_eq!(clients(&a, &id), Some(0), "detached, the session runs on");
    let again = Cli::attach(&a, &id, false);
    again.wait_for_text("before-detach-ran");
    Ok(())
}

#[test]
fn output_order_and_exit_codes_are_as_relayed() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    for relayed in [false, true] {
        let script = "echo ready; read go; seq -f n%g 1 3000; exit 7";
        let id = new_session(&a, &["--", "sh", "-c", script]);
        let mut cli = Cli::attach(&a, &id, relayed);
        cli.wait_for_text("ready");
        cli.type_keys(b"\n");
        let status = cli.exit();
        assert_eq!(
            status.code(),
            Some(7),
            "relayed {relayed}: {:?}",
            cli.text()
        );
        let text = cli.text();
        // The end is said after the last of the output.
        let ended = format!("[session {id} exited with code 7]");
        let said = text.find(&ended);
        assert!(said.is_some(), "relayed {relayed}: {text:?}");
        // Counted up to that line, whose session ID may hold an `n` and digits.
        let output = &text[..said.unwrap_or_default()];
        let numbers = counted(output);
        assert_eq!(numbers.first(), Some(&1), "relayed {relayed}");
        assert_eq!(numbers.last(), Some(&3000), "relayed {relayed}");
        assert_unbroken(output);
    }
    Ok(())
}

#[test]
fn a_terminal_that_stopped_reading_stalls_nothing_else() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let flood = new_session(&a, &["--", "sh", "-c", "exec yes flooding"]);
    // An attach whose terminal nobody reads: its pipe fills, and the node's writes to it
    // wait (the pipe's reading end stays open, so they cannot fail either).
    let (_unread, full) = std::io::pipe()?;
    let mut stalled = Command::new(bin::loopsy())
        .arg("--home")
        .arg(a.home())
        .args(["attach", &flood])
        .stdin(Stdio::piped())
        .stdout(full.try_clone()?)
        .stderr(full)
        .spawn()?;
    std::thread::sleep(Duration::from_secs(2));
    // Meanwhile another attachment on the same node types and sees its echo.
    let shell = new_session(&a, &["--", "sh"]);
    let mut cli = Cli::attach(&a, &shell, false);
    cli.type_keys(b"echo still''-moving\n");
    cli.wait_for_text("still-moving");
    cli.type_keys(b"\x1c");
    assert!(cli.exit().success(), "{:?}", cli.text());
    assert_eq!(
        stalled.try_wait()?,
        None,
        "the stalled client is still attached"
    );
    // Killed while its terminal is stalled, the client still detaches at once: the node
    // hears the hang-up while it waits to write.
    stalled.kill()?;
    stalled.wait()?;
    wait_for(
        "the stalled client detached",
        Duration::from_secs(10),
        || (clients(&a, &flood)? == 0).then_some(()),
    )?;
    Ok(())
}
