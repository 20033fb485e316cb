//! Persistent sessions between real nodes: started on one device from another, attached
//! from two at once, picked up again after the attaching device's node is killed with no
//! byte lost or repeated, left running with no client, ended by `session kill`, and refused
//! to devices without the `sessions` capability.

use std::time::Duration;

use loopsy_tests::{
    attach::{Attached, COUNTER, assert_unbroken, counted},
    node::{Node, Options},
    temp::TempDir,
    wait_for,
};
use serde_json::Value;

fn new_session(node: &Node, args: &[&str]) -> String {
    let mut all = vec!["session", "new"];
    all.extend_from_slice(args);
    let out = node.cli(&all);
    assert!(
        out.status.success(),
        "session new: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn sessions(node: &Node) -> Vec<Value> {
    node.json(&["session", "ls", "--json"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn session<'a>(list: &'a [Value], id: &str) -> Option<&'a Value> {
    list.iter().find(|s| s["id"] == id)
}

#[test]
fn sessions_are_shared_and_survive_a_cut_without_a_lost_or_repeated_byte() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let home_b = TempDir::new("bravo-home");
    let b_options = Options::isolated("bravo").home(&home_b.path().join("home"));
    let mut b = Node::start(b_options.clone())?;
    let c = Node::start(Options::isolated("charlie"))?;
    a.pair_with(&b)?;
    a.pair_with(&c)?;

    // A shell on alpha, started from bravo; bravo and charlie attach at once.
    let shell = new_session(&b, &["--on", "alpha", "--name", "shell", "--", "sh"]);
    let found = wait_for(
        "charlie to list the session",
        Duration::from_secs(20),
        || session(&sessions(&c), &shell).cloned(),
    )?;
    assert_eq!(found["host"], "alpha");
    assert_eq!(found["status"], "running");
    let mut on_b = Attached::start(&b, "shell");
    let on_c = Attached::start(&c, &shell);
    on_b.type_keys("echo hel''lo-from-b\n");
    on_b.wait_for_text("hello-from-b");
    on_c.wait_for_text("hello-from-b");
    let attached = wait_for("two clients", Duration::from_secs(10), || {
        let listed = sessions(&a);
        let clients = session(&listed, &shell)?["clients"].as_u64()?;
        (clients == 2).then_some(clients)
    })?;
    assert_eq!(attached, 2);

    // A counter; bravo's own node is killed while bravo is attached, then restarted.
    let counter = new_session(&b, &["--on", "alpha", "--", "sh", "-c", COUNTER]);
    let watching = Attached::start(&b, &counter);
    wait_for("output before the cut", Duration::from_secs(20), || {
        (counted(&watching.text()).len() > 50).then_some(())
    })?;
    b.kill();
    let before = counted(&watching.text()).len();
    std::thread::sleep(Duration::from_secs(1));
    b = Node::start(b_options)?;
    wait_for("output after the cut", Duration::from_secs(60), || {
        (counted(&watching.text()).len() > before + 200).then_some(())
    })?;
    let said = watching.said();
    assert!(
        said.contains(&format!("[reattached to session {counter} after ")),
        "{said}"
    );
    let text = watching.text();
    drop(watching);
    let numbers = counted(&text);
    assert!(numbers.len() > before + 200, "{} numbers", numbers.len());
    assert_unbroken(&text);

    // With no client, both sessions keep running.
    drop(on_b);
    drop(on_c);
    // The client that was attached through bravo's killed node counts until alpha sees
    // that connection die: at once for TCP, after QUIC's 10 s idle timeout for QUIC (a
    // killed process sends nothing).
    let idle = wait_for("no clients", Duration::from_secs(30), || {
        let listed = sessions(&c);
        let s = session(&listed, &counter)?.clone();
        (s["clients"] == 0).then_some(s)
    })?;
    assert_eq!(idle["status"], "running");
    let later = counted(&Attached::start(&c, &counter).tap_text("n"));
    assert!(later.last() > numbers.last(), "it went on counting");

    // `session kill` ends it, from any device.
    let out = c.cli(&["session", "kill", &counter]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The end reaches every device's registry shortly after.
    wait_for("the end listed on bravo", Duration::from_secs(20), || {
        let listed = sessions(&b);
        (session(&listed, &counter)?["status"] == "exited").then_some(())
    })?;
    Ok(())
}

#[test]
fn a_device_without_the_sessions_capability_is_refused() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let e = Node::start(Options::isolated("echo"))?;
    let mut invite = a.invite(&["--ttl", "60s", "--allow", "exec"])?;
    let (ok, out) = e.join(&invite.code);
    assert!(ok, "{out}");
    assert_eq!(invite.result()?["paired"], true);
    let out = e.cli(&["session", "new", "--on", "alpha", "--", "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sessions"), "{err}");
    assert!(sessions(&a).is_empty(), "nothing started");
    let denied = a
        .audit()
        .into_iter()
        .any(|e| e["action"] == "session" && e["result"] == "denied");
    assert!(denied, "the refusal is audited: {:?}", a.audit());

    // `sessions` alone does not run programs: those still need `exec` (or `shell`).
    let f = Node::start(Options::isolated("foxtrot"))?;
    let mut invite = a.invite(&["--ttl", "60s", "--allow", "sessions"])?;
    let (ok, out) = f.join(&invite.code);
    assert!(ok, "{out}");
    assert_eq!(invite.result()?["paired"], true);
    for argv in [&["--"][..], &["--", "true"][..]] {
        let mut args = vec!["session", "new", "--on", "alpha"];
        args.extend_from_slice(argv);
        let out = f.cli(&args);
        assert!(!out.status.success(), "{argv:?} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("capability is not granted"), "{err}");
    }
    assert!(sessions(&a).is_empty(), "nothing started");
    Ok(())
}

#[test]
fn a_program_that_leaves_a_job_behind_still_ends_its_session() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let argv = ["sleep", "31337"];
    let id = new_session(
        &a,
        &["--", "sh", "-c", "sleep 31337 & echo started; exit 3"],
    );
    let ended = wait_for("the session to end", Duration::from_secs(20), || {
        let listed = sessions(&a);
        let s = session(&listed, &id)?.clone();
        (s["status"] == "exited").then_some(s)
    })?;
    assert_eq!(ended["code"], 3);
    wait_for(
        "the job it left to hang up",
        Duration::from_secs(10),
        || (!running(&argv)).then_some(()),
    )?;
    Ok(())
}

/// Whether a process runs with exactly this command line.
fn running(argv: &[&str]) -> bool {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted))
        })
        .unwrap_or(false)
}

#[test]
fn a_stopped_node_hangs_up_its_sessions_and_lists_them_as_exited() -> anyhow::Result<()> {
    let home = TempDir::new("alpha-home");
    let options = Options::isolated("alpha").home(&home.path().join("home"));
    let a = Node::start(options.clone())?;
    let argv = ["sleep", "987654"];
    let id = new_session(&a, &["--name", "nap", "--", argv[0], argv[1]]);
    wait_for("the program to run", Duration::from_secs(10), || {
        running(&argv).then_some(())
    })?;
    assert_eq!(
        session(&sessions(&a), &id).expect("listed")["status"],
        "running"
    );
    a.stop()?;
    wait_for("the program to be gone", Duration::from_secs(10), || {
        (!running(&argv)).then_some(())
    })?;
    let a = Node::start(options)?;
    let listed = sessions(&a);
    let after = session(&listed, &id).expect("still listed after the restart");
    assert_eq!(after["status"], "exited", "never shown as running: {after}");
    // Killed by the hang-up (128 + SIGHUP) when the node saw it end before stopping;
    // no code when it did not.
    assert!(
        after["code"] == Value::Null || after["code"] == 129,
        "{after}"
    );
    Ok(())
}

#[test]
fn an_attached_client_says_when_the_host_dies() -> anyhow::Result<()> {
    let mut a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    let id = new_session(
        &b,
        &[
            "--on",
            "alpha",
            "--",
            "sh",
            "-c",
            "echo up-and-running; exec sleep 600",
        ],
    );
    let attached = Attached::start(&b, &id);
    attached.wait_for_text("up-and-running");
    // The hosting daemon dies (kill -9): the client says so at once, and keeps trying.
    a.kill();
    let said = wait_for("the client to say so", Duration::from_secs(30), || {
        let said = attached.said();
        said.contains("connection lost").then_some(said)
    })?;
    assert!(said.contains("reattaching"), "{said}");
    Ok(())
}

#[test]
fn session_new_and_session_ls_print_one_shape() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    let alpha_id = a.json(&["id", "--json"])?["peer_id"].clone();
    let created = b.json(&[
        "session", "new", "--on", "alpha", "--name", "shape", "--json", "--", "sleep", "60",
    ])?;
    let id = created["id"].as_str().expect("an id").to_owned();
    let listed = wait_for("bravo to list it", Duration::from_secs(20), || {
        session(&sessions(&b), &id).cloned()
    })?;
    let keys = |v: &Value| {
        let mut keys: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&created),
        [
            "clients",
            "code",
            "command",
            "created",
            "host",
            "host_last_seen",
            "host_online",
            "host_peer_id",
            "id",
            "last_activity",
            "name",
            "status",
            "waiting"
        ]
    );
    assert_eq!(keys(&created), keys(&listed), "{created}\n{listed}");
    for field in [
        "id",
        "name",
        "host",
        "host_peer_id",
        "host_online",
        "command",
        "status",
        "code",
        "created",
    ] {
        assert_eq!(
            created[field], listed[field],
            "{field}: {created}\n{listed}"
        );
    }
    assert_eq!(created["host"], "alpha");
    assert_eq!(created["host_peer_id"], alpha_id);
    assert_eq!(created["status"], "running");
    let created_at = created["created"].as_str().expect("a time");
    assert!(
        created_at.len() == 20 && created_at.ends_with('Z') && created_at.as_bytes()[10] == b'T',
        "RFC 3339: {created_at}"
    );

    // A session on this device names this device as its host.
    let here = a.json(&["session", "new", "--json", "--", "sleep", "60"])?;
    assert_eq!(here["host"], "alpha");
    assert_eq!(here["host_peer_id"], alpha_id);
    Ok(())
}

/// Reads the terminal until `want` shows (or panics with what it showed).
async fn read_until(pty: &mut pty_process::Pty, screen: &mut String, want: &str, within: Duration) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    while !screen.contains(want) {
        match tokio::time::timeout_at(deadline, pty.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => screen.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => panic!("never saw {want:?} on the terminal: {screen:?}"),
        }
    }
}

/// `loopsy attach` on a terminal of its own.
fn attach_on_a_terminal(
    node: &Node,
    args: &[&str],
) -> anyhow::Result<(pty_process::Pty, tokio::process::Child)> {
    let (pty, pts) = pty_process::open()?;
    pty.resize(pty_process::Size::new(24, 200))?;
    let child = pty_process::Command::new(loopsy_tests::bin::loopsy())
        .arg("--home")
        .arg(node.home())
        .arg("attach")
        .args(args)
        .spawn(pts)?;
    Ok((pty, child))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_says_in_words_when_the_host_stops() -> anyhow::Result<()> {
    let (a, b) = tokio::task::spawn_blocking(|| -> anyhow::Result<(Node, Node)> {
        let a = Node::start(Options::isolated("alpha"))?;
        let b = Node::start(Options::isolated("bravo"))?;
        a.pair_with(&b)?;
        Ok((a, b))
    })
    .await??;
    let script = "echo up-and-running; exec sleep 600";
    let id = new_session(&b, &["--on", "alpha", "--", "sh", "-c", script]);
    let (mut pty, mut child) = attach_on_a_terminal(&b, &[&id])?;
    let mut screen = String::new();
    read_until(
        &mut pty,
        &mut screen,
        "up-and-running",
        Duration::from_secs(20),
    )
    .await;
    // The client learns the host's name from bravo's registry.
    let listed = tokio::task::spawn_blocking(move || {
        let found = wait_for("bravo to list the session", Duration::from_secs(20), || {
            session(&sessions(&b), &id).map(|_| ())
        });
        (b, id, found)
    });
    let (b, id, found) = listed.await?;
    found?;
    // Stopped cleanly: the host hangs its sessions up, then leaves.
    tokio::task::spawn_blocking(move || a.stop()).await??;
    let said = format!(
        "[session {id} ended: its host alpha stopped, which hung up its program (exit code 129)]"
    );
    read_until(&mut pty, &mut screen, &said, Duration::from_secs(20)).await;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await??;
    assert_eq!(status.code(), Some(129));
    drop(b);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattaching_says_how_long_it_tried_and_ends_with_a_reason() -> anyhow::Result<()> {
    let (a, b) = tokio::task::spawn_blocking(|| -> anyhow::Result<(Node, Node)> {
        let a = Node::start(Options::isolated("alpha"))?;
        let b = Node::start(Options::isolated("bravo"))?;
        a.pair_with(&b)?;
        Ok((a, b))
    })
    .await??;
    let script = "echo up-and-running; exec sleep 600";
    let id = new_session(&b, &["--on", "alpha", "--", "sh", "-c", script]);
    let (mut pty, mut child) = attach_on_a_terminal(&b, &[&id, "--reattach-for", "4s"])?;
    let mut screen = String::new();
    read_until(
        &mut pty,
        &mut screen,
        "up-and-running",
        Duration::from_secs(20),
    )
    .await;
    // The host dies (kill -9): no hang-up, no goodbye; the client keeps trying, and says
    // for how long, then gives up with the last reason.
    let mut a = a;
    tokio::task::spawn_blocking(move || a.kill()).await?;
    let lost = "[connection lost: ";
    read_until(&mut pty, &mut screen, lost, Duration::from_secs(20)).await;
    let reattaching = format!("; reattaching to session {id} on alpha for up to 4s]");
    read_until(&mut pty, &mut screen, &reattaching, Duration::from_secs(5)).await;
    let status_line =
        format!("[reattaching to session {id}: trying for 1s, giving up in 3s; Ctrl-\\ detaches]");
    read_until(&mut pty, &mut screen, &status_line, Duration::from_secs(5)).await;
    let gave_up = format!("loopsy: gave up reattaching to session {id} after ");
    read_until(&mut pty, &mut screen, &gave_up, Duration::from_secs(20)).await;
    read_until(&mut pty, &mut screen, "\r\n", Duration::from_secs(1)).await;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await??;
    assert_eq!(status.code(), Some(255));
    let last = screen[screen.rfind(&gave_up).expect("said")..].to_owned();
    assert!(
        last.trim_end().len() > gave_up.len() + "4s: ".len(),
        "a reason: {last:?}"
    );
    drop(b);
    Ok(())
}
