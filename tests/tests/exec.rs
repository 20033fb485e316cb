//! `loopsy exec` and `loopsy shell` between two real nodes: exit codes, streams, stdin,
//! signals, timeouts, cleanup of the remote process group, policy and the gate.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::Duration,
};

use loopsy_tests::{
    bin,
    node::{self, Node, Options, Reaped},
    temp::TempDir,
    wait_for,
};

/// Two paired nodes on loopback.
fn pair() -> anyhow::Result<(Node, Node)> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    Ok((a, b))
}

/// `loopsy exec alpha -- ARGS..` from `from`, with `stdin`.
/// `loopsy exec alpha -- ARGS` from `from` with `stdin` as its standard input.
fn exec_reading(from: &Node, args: &[&str], stdin: Stdio) -> std::process::Output {
    Command::new(bin::loopsy())
        .arg("--home")
        .arg(from.home())
        .args(["exec", "alpha", "--"])
        .args(args)
        .stdin(stdin)
        .output()
        .expect("run loopsy exec")
}

fn exec(from: &Node, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut command = Command::new(bin::loopsy());
    command
        .arg("--home")
        .arg(from.home())
        .args(["exec", "alpha", "--"])
        .args(args);
    loopsy_tests::output_with_input(&mut command, stdin)
}

/// `loopsy exec alpha -- sh -c SCRIPT` from `from`, left running with its stdout piped.
fn spawn_exec(from: &Node, script: &str) -> Reaped {
    Reaped(from.spawn_cli(&["exec", "alpha", "--", "sh", "-c", script]))
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn exit_codes_streams_and_stdin_behave_as_if_local() -> anyhow::Result<()> {
    let (_a, b) = pair()?;
    for code in [0, 1, 42] {
        let out = exec(&b, &["sh", "-c", &format!("exit {code}")], b"");
        assert_eq!(out.status.code(), Some(code));
    }
    let out = exec(&b, &["sh", "-c", "kill -TERM $$"], b"");
    assert_eq!(
        out.status.code(),
        Some(128 + 15),
        "killed by a signal is 128+N"
    );

    let out = exec(&b, &["sh", "-c", "echo to-out; echo to-err >&2"], b"");
    assert_eq!(out.stdout, b"to-out\n");
    assert_eq!(out.stderr, b"to-err\n");

    // stdin with its end: `wc -c` only answers after EOF.
    let out = exec(&b, &["wc", "-c"], b"hello world");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "11");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = exec(&b, &["sha256sum"], &big);
    let local = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().expect("stdin").write_all(&big)?;
            c.wait_with_output()
        })?;
    assert_eq!(out.stdout, local.stdout, "3 MB of stdin arrived intact");
    // Standard inputs epoll cannot watch, which the CLI reads otherwise: a regular file
    // (on a blocking thread) and /dev/null (in place), whole and with their end.
    let dir = TempDir::new("exec-stdin");
    let file = dir.path().join("input");
    std::fs::write(&file, &big)?;
    let out = exec_reading(&b, &["sha256sum"], Stdio::from(std::fs::File::open(&file)?));
    assert_eq!(out.stdout, local.stdout, "a file as stdin arrived intact");
    let out = exec_reading(&b, &["wc", "-c"], Stdio::null());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");

    // A program that is not there, and arguments passed without a shell.
    assert_eq!(exec(&b, &["no-such-program"], b"").status.code(), Some(127));
    let out = exec(&b, &["printf", "%s|", "a b", "$HOME", "*"], b"");
    assert_eq!(out.stdout, b"a b|$HOME|*|");
    Ok(())
}

#[test]
fn a_large_output_streams_whole() -> anyhow::Result<()> {
    let (_a, b) = pair()?;
    let out = exec(
        &b,
        &[
            "sh",
            "-c",
            "head -c 64000000 /dev/urandom | tee /dev/stderr | sha256sum >&2",
        ],
        b"",
    );
    assert!(out.status.success());
    // stderr: the 64 MB, then its hash.
    let (data, hash) = out.stderr.split_at(64_000_000);
    let expected = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().expect("stdin").write_all(data)?;
            c.wait_with_output()
        })?;
    assert_eq!(hash, &expected.stdout[..], "every byte, in order");
    Ok(())
}

#[test]
fn ctrl_c_timeout_and_a_killed_client_end_the_remote_program() -> anyhow::Result<()> {
    let (_a, b) = pair()?;

    // Ctrl-C: SIGINT to the local client reaches the remote process group.
    let mut child = spawn_exec(
        &b,
        "trap 'echo interrupted; exit 7' INT; echo ready; while :; do sleep 0.1; done",
    );
    let mut lines = BufReader::new(child.0.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().transpose()?.as_deref(), Some("ready"));
    node::signal(child.0.id(), "INT");
    assert_eq!(lines.next().transpose()?.as_deref(), Some("interrupted"));
    assert_eq!(child.0.wait()?.code(), Some(7));

    // --timeout kills it and says so.
    let started = std::time::Instant::now();
    let out = b.cli(&["exec", "alpha", "--timeout", "1", "--", "sleep", "30"]);
    assert_eq!(out.status.code(), Some(124));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timeout"));
    assert!(started.elapsed() < Duration::from_secs(10));

    // The client is killed: the remote program and its children go too.
    let mut child = spawn_exec(&b, "sleep 300 & echo $$ $!; wait");
    let mut lines = BufReader::new(child.0.stdout.take().expect("stdout")).lines();
    let pids: Vec<u32> = lines
        .next()
        .transpose()?
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| process_exists(*p)));
    child.0.kill()?;
    child.0.wait()?;
    wait_for(
        "the remote processes to be gone",
        Duration::from_secs(10),
        || pids.iter().all(|p| !process_exists(*p)).then_some(()),
    )?;
    Ok(())
}

#[test]
fn policy_and_gate_refusals_are_clear_and_audited() -> anyhow::Result<()> {
    let dir = TempDir::new("policy");
    let home = dir.path().join("alpha");
    std::fs::create_dir_all(&home)?;
    std::fs::write(
        home.join("config.toml"),
        "[exec]\nallow = [\"echo\"]\nroot = \"/tmp\"\nmax_secs = 0\nmax_running = 4\n",
    )?;
    let a = Node::start(Options::isolated("alpha").home(&home))?;
    let b = Node::start(Options::isolated("bravo"))?;
    let stranger = Node::start(Options::isolated("stranger"))?;
    a.pair_with(&b)?;

    let out = exec(&b, &["echo", "allowed"], b"");
    assert_eq!(
        out.stdout,
        b"allowed\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = exec(&b, &["ls", "/"], b"");
    assert_eq!(out.status.code(), Some(126));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("`ls` is not in the allowed programs"),
        "names the rule: {said}"
    );
    let out = b.cli(&["exec", "alpha", "--cwd", "/etc", "--", "echo"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside the exec root"));

    // A device that trusts alpha (by peer ID) but that alpha never trusted: its gate refuses.
    let status = a.json(&["status", "--json"])?;
    let addr = status["listen_addrs"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let added = stranger.cli(&[
        "trust", "add", &a.peer_id, "--name", "alpha", "--addr", &addr,
    ]);
    assert!(added.status.success());
    let out = stranger.cli(&["exec", "alpha", "--", "echo", "hi"]);
    assert_eq!(out.status.code(), Some(126));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not paired"));

    let audit = a.audit();
    let denied = |peer: &str| {
        audit
            .iter()
            .filter(|e| e["action"] == "exec" && e["result"] == "denied" && e["peer"] == peer)
            .count()
    };
    assert!(
        denied(&b.peer_id) >= 2,
        "policy refusals audited: {audit:?}"
    );
    assert_eq!(denied(&stranger.peer_id), 1, "gate refusal audited");
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "exec" && e["result"] == "ok" && e["args"] == "echo allowed")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_through_a_real_terminal() -> anyhow::Result<()> {
    let (_a, b) = tokio::task::spawn_blocking(pair).await??;
    let (mut pty, pts) = pty_process::open()?;
    pty.resize(pty_process::Size::new(30, 100))?;
    let mut child = pty_process::Command::new(bin::loopsy())
        .arg("--home")
        .arg(b.home())
        .args(["shell", "alpha"])
        .env("TERM", "xterm")
        .spawn(pts)?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut screen = String::new();
    let mut buf = [0u8; 4096];
    let mut read_until = async |pty: &mut pty_process::Pty, screen: &mut String, want: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !screen.contains(want) {
            match tokio::time::timeout_at(deadline, pty.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => screen.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => panic!("never saw {want:?} on the terminal: {screen:?}"),
            }
        }
    };
    // The remote terminal has our size, and runs what we type.
    pty.write_all(b"stty size; echo $((6*7))-done\r").await?;
    read_until(&mut pty, &mut screen, "42-done").await;
    assert!(
        screen.contains("30 100"),
        "the window size arrived: {screen:?}"
    );
    pty.write_all(b"exit 3\r").await?;
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await??;
    assert_eq!(status.code(), Some(3), "the shell's exit code comes back");
    Ok(())
}

#[test]
fn revoking_a_device_ends_what_it_runs_here() -> anyhow::Result<()> {
    let (a, b) = pair()?;
    let mut child = spawn_exec(&b, "echo $$; sleep 300");
    let mut lines = BufReader::new(child.0.stdout.take().expect("stdout")).lines();
    let pid: u32 = lines
        .next()
        .transpose()?
        .unwrap_or_default()
        .trim()
        .parse()?;
    assert!(process_exists(pid));

    let out = a.cli(&["trust", "rm", "bravo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "the revoked device's program to end",
        Duration::from_secs(10),
        || (!process_exists(pid)).then_some(()),
    )?;
    let status = child.0.wait()?;
    assert_eq!(
        status.code(),
        Some(255),
        "the client says the connection was lost"
    );

    // And it cannot start another.
    let out = exec(&b, &["true"], b"");
    assert_ne!(out.status.code(), Some(0));
    Ok(())
}

#[test]
fn a_remote_program_never_outlives_its_client() -> anyhow::Result<()> {
    let (a, b) = pair()?;
    let marker = format!("leak-marker-{}", std::process::id());
    let loopsy = bin::loopsy();
    let home = b.home();
    // Bounded, so that a client that hangs fails the test rather than stalling it.
    let piped = |consumer: &str| {
        let status = Command::new("timeout")
            .args(["20", "sh", "-c"])
            .arg(format!(
                "'{}' --home '{}' exec alpha -- yes {marker} | {consumer}",
                loopsy.display(),
                home.display()
            ))
            .stdout(Stdio::null())
            .status()
            .expect("run sh");
        assert_ne!(
            status.code(),
            Some(124),
            "the client hung: exec with `| {consumer}`"
        );
    };

    // The reader closes its end at once (SIGPIPE), a hundred times: more than the 32 slots
    // a peer has, so one leaked program each time would lock bravo out.
    for _ in 0..100 {
        piped("head -c 1");
    }
    // A reader that stops reading for a while, then leaves.
    piped("sleep 1");
    wait_for("every remote `yes` to end", Duration::from_secs(10), || {
        loopsy_tests::proc::running_with(&marker)
            .is_empty()
            .then_some(())
    })?;

    // The next exec is served at once, and the audit log says why each one ended.
    let started = std::time::Instant::now();
    let out = exec(&b, &["echo", "served"], b"");
    assert_eq!(out.stdout, b"served\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    wait_for(
        "an audit entry for each run",
        Duration::from_secs(10),
        || {
            let ended = a
                .audit()
                .into_iter()
                .filter(|e| {
                    e["action"] == "exec" && e["args"].as_str().is_some_and(|a| a.contains(&marker))
                })
                .count();
            (ended == 101).then_some(())
        },
    )?;
    Ok(())
}
