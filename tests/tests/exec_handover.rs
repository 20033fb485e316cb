//! `loopsy exec` hands its stdin, stdout and stderr to its node (SCM_RIGHTS): the node
//! writes the program's output and reads its input itself. These tests show that the
//! hand-over happens (the CLI copies next to nothing of a large output or input, where the
//! relaying CLI, `LOOPSY_NO_HANDOVER`, copies all of it), that a killed CLI still ends the
//! remote program, and that bytes, their order, stdin's end, exit codes and error messages
//! are what relaying gives.

use std::{
    fs::OpenOptions,
    io::{Read, Write},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use loopsy_tests::{
    bin,
    node::{Node, Options},
    temp::TempDir,
    wait_for,
};

/// Two paired nodes on loopback: exec goes from bravo to alpha.
fn pair() -> anyhow::Result<(Node, Node)> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    Ok((a, b))
}

/// `loopsy exec ARGS..` from `from`, relaying when `relayed`.
fn exec_command(from: &Node, args: &[&str], relayed: bool) -> Command {
    let mut command = Command::new(bin::loopsy());
    command
        .arg("--home")
        .arg(from.home())
        .arg("exec")
        .args(args);
    if relayed {
        command.env("LOOPSY_NO_HANDOVER", "1");
    }
    command
}

/// Runs `loopsy exec ARGS..` on pipes with `stdin`, to its end.
fn exec(from: &Node, args: &[&str], stdin: &[u8], relayed: bool) -> Output {
    loopsy_tests::output_with_input(&mut exec_command(from, args, relayed), stdin)
}

/// What the CLI process has read and written so far, as the kernel counts it (`rchar` and
/// `wchar`: every read(2) and write(2), its pipes and its node's socket alike).
fn copied(child: &Child) -> (u64, u64) {
    let io = std::fs::read_to_string(format!("/proc/{}/io", child.id())).expect("io");
    let field = |name: &str| {
        io.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|n| n.trim().parse().ok())
            .expect("a counter")
    };
    (field("rchar:"), field("wchar:"))
}

/// Output of this many bytes, and input of that many.
const OUTPUT: usize = 20_000_000;
const INPUT: usize = 5_000_000;

#[test]
fn the_node_writes_the_output_and_reads_the_input_not_the_cli() -> anyhow::Result<()> {
    let (_a, b) = pair()?;
    for relayed in [false, true] {
        let marker = format!("handover-marker-{}-{relayed}", std::process::id());
        // A stream out, all of stdin counted, then it waits to be killed.
        let script =
            format!("head -c {OUTPUT} /dev/zero; echo; wc -c; echo done; sleep 60; : {marker}");
        let mut child = exec_command(&b, &["alpha", "--", "sh", "-c", &script], relayed)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut input = child.stdin.take().expect("stdin");
        std::thread::spawn(move || {
            // Then stdin ends: `wc` hears its end.
            let _ = input.write_all(&vec![b'i'; INPUT]);
        });
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().expect("stdout");
        let into = output.clone();
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 65536];
            while let Ok(n) = stdout.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                into.lock().expect("output").extend_from_slice(&buffer[..n]);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while !output.lock().expect("output").ends_with(b"done\n") {
            if Instant::now() > deadline {
                let output = output.lock().expect("output");
                let tail = &output[output.len().saturating_sub(40)..];
                panic!(
                    "relayed {relayed}: no `done` after {} bytes: {tail:?}",
                    output.len()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (read, written) = copied(&child);
        {
            let output = output.lock().expect("output");
            assert_eq!(output.len(), OUTPUT + 1 + format!("{INPUT}\n").len() + 5);
            assert!(output[..OUTPUT].iter().all(|&b| b == 0), "every byte");
            assert_eq!(&output[OUTPUT..], format!("\n{INPUT}\ndone\n").as_bytes());
        }
        if relayed {
            assert!(written > OUTPUT as u64, "relayed: wrote {written} bytes");
            assert!(read > INPUT as u64, "relayed: read {read} bytes");
        } else {
            assert!(written < 64 * 1024, "handed over: wrote {written} bytes");
            assert!(read < 256 * 1024, "handed over: read {read} bytes");
        }
        let remote: Vec<u32> = loopsy_tests::proc::running_with(&marker)
            .into_iter()
            .filter(|&pid| pid != child.id())
            .collect();
        assert_eq!(remote.len(), 1, "the program runs: {remote:?}");
        // Killed, the CLI cannot say goodbye: its node hears the connection close.
        child.kill()?;
        child.wait()?;
        wait_for("the remote program to end", Duration::from_secs(10), || {
            loopsy_tests::proc::running_with(&marker)
                .is_empty()
                .then_some(())
        })?;
    }
    Ok(())
}

#[test]
fn bytes_order_exit_codes_and_messages_are_as_relayed() -> anyhow::Result<()> {
    let (_a, b) = pair()?;
    let cases: &[(&[&str], &[u8], Option<i32>)] = &[
        (
            &[
                "alpha",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; printf abc; exit 3",
            ],
            b"",
            Some(3),
        ),
        (
            &["alpha", "--", "sh", "-c", "kill -TERM $$"],
            b"",
            Some(128 + 15),
        ),
        (&["alpha", "--", "seq", "1", "200000"], b"", Some(0)),
        // stdin through, to its end.
        (&["alpha", "--", "sha256sum"], &[7u8; 3_000_000], Some(0)),
        (
            &["alpha", "--", "sh", "-c", "cat; echo end >&2"],
            b"line\n",
            Some(0),
        ),
        // Not started, and not reached: the same words and codes.
        (&["alpha", "--", "no-such-program-here"], b"", Some(127)),
        (&["alpha", "--cwd", "/no/such/dir", "--", "true"], b"", None),
        (&["no-such-peer", "--", "true"], b"", Some(255)),
        (
            &["alpha", "--timeout", "1", "--", "sleep", "20"],
            b"",
            Some(124),
        ),
    ];
    for (args, stdin, code) in cases {
        let handed = exec(&b, args, stdin, false);
        let relayed = exec(&b, args, stdin, true);
        if code.is_some() {
            assert_eq!(handed.status.code(), *code, "{args:?}: {handed:?}");
        }
        assert_eq!(handed.status.code(), relayed.status.code(), "{args:?}");
        assert_eq!(handed.stdout, relayed.stdout, "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&handed.stderr),
            String::from_utf8_lossy(&relayed.stderr),
            "{args:?}"
        );
    }
    let first = exec(&b, cases[0].0, b"", false);
    assert_eq!(first.stdout, b"out\nabc");
    assert_eq!(first.stderr, b"err\n");
    let counted = exec(&b, cases[2].0, b"", false);
    let expected = Command::new("seq").args(["1", "200000"]).output()?;
    assert_eq!(counted.stdout, expected.stdout);
    Ok(())
}

#[test]
fn files_keep_their_offset_and_append_mode() -> anyhow::Result<()> {
    let (_a, b) = pair()?;
    let dir = TempDir::new("exec-files");
    for relayed in [false, true] {
        // `>> log`: after what is there, as a local program would write.
        let log = dir.path().join(format!("log-{relayed}"));
        std::fs::write(&log, "before\n")?;
        let appended = OpenOptions::new().append(true).open(&log)?;
        let status = exec_command(&b, &["alpha", "--", "echo", "after"], relayed)
            .stdin(Stdio::null())
            .stdout(appended)
            .status()?;
        assert!(status.success());
        assert_eq!(std::fs::read_to_string(&log)?, "before\nafter\n");

        // `< input`, read from where the shell left it.
        let input = dir.path().join(format!("input-{relayed}"));
        std::fs::write(&input, "skipped\nread\n")?;
        let mut from = std::fs::File::open(&input)?;
        from.read_exact(&mut [0u8; 8])?;
        let out = exec_command(&b, &["alpha", "--", "cat"], relayed)
            .stdin(from)
            .output()?;
        assert_eq!(out.stdout, b"read\n");
    }
    Ok(())
}

#[test]
fn a_reader_that_leaves_ends_the_program_promptly() -> anyhow::Result<()> {
    let (_a, b) = pair()?;
    let loopsy = bin::loopsy();
    for relayed in [false, true] {
        let started = Instant::now();
        let mut command = Command::new("timeout");
        command.args(["20", "sh", "-c"]).arg(format!(
            "'{}' --home '{}' exec alpha -- yes | head -c 10; echo \" $?\"",
            loopsy.display(),
            b.home().display()
        ));
        if relayed {
            command.env("LOOPSY_NO_HANDOVER", "1");
        }
        let out = command.output()?;
        assert_eq!(out.stdout, b"y\ny\ny\ny\ny\n 0\n", "{out:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "relayed {relayed}: {:?}",
            started.elapsed()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_cli_leaves_its_terminal_to_the_shell() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_a, b) = tokio::task::spawn_blocking(pair).await??;
    let (mut pty, pts) = pty_process::open()?;
    // A plain exec (no -t) on a terminal: its output is handed over, its keys are not.
    let mut child = pty_process::Command::new(bin::loopsy())
        .arg("--home")
        .arg(b.home())
        .args(["exec", "alpha", "--", "sh", "-c"])
        .arg("read a; echo first-$a; read b; echo second-$b")
        .spawn(pts)?;
    let mut screen = String::new();
    let mut buf = [0u8; 4096];
    // Reads the terminal until `want` shows or `wait` ends; whether it showed.
    let mut shows = async |pty: &mut pty_process::Pty, want: &str, wait: Duration| {
        let deadline = tokio::time::Instant::now() + wait;
        while !screen.contains(want) {
            match tokio::time::timeout_at(deadline, pty.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => screen.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => return false,
            }
        }
        true
    };
    pty.write_all(b"one\n").await?;
    assert!(shows(&mut pty, "first-one", Duration::from_secs(15)).await);
    // Stopped, as Ctrl-Z stops it: the shell would read the terminal now, not the node.
    let pid = child.id().expect("pid");
    loopsy_tests::node::signal(pid, "STOP");
    pty.write_all(b"two\n").await?;
    assert!(
        !shows(&mut pty, "second-two", Duration::from_secs(2)).await,
        "a line typed while the CLI was stopped reached the program"
    );
    loopsy_tests::node::signal(pid, "CONT");
    assert!(shows(&mut pty, "second-two", Duration::from_secs(15)).await);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await??;
    assert_eq!(status.code(), Some(0));
    Ok(())
}
