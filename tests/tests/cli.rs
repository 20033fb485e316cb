//! The command line as a new user meets it: closed pipes, commands without a node or a
//! terminal, stdin as a value, JSON for failures, the audit filters, completions and the
//! manual page. Each asserts what the user sees.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use loopsy_tests::{
    bin,
    node::{Node, Options, Reaped},
    temp::TempDir,
};

/// `sh -c SCRIPT` with `$LOOPSY` naming the binary and `$H` the node's home; its stderr.
fn sh(home: &std::path::Path, script: &str) -> (Option<i32>, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("LOOPSY", bin::loopsy())
        .env("H", home)
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_pipe_ends_a_command_quietly() -> anyhow::Result<()> {
    let alpha = Node::start(Options::isolated("alpha"))?;
    let home = alpha.home();
    // `pair` prints its code, its QR and a waiting line: `head -2` closes the pipe early (and
    // `pair` then waits for a device, so it is ended after a moment).
    let (_, said) = sh(
        &home,
        r#"timeout 3 "$LOOPSY" --home "$H" pair --ttl 60s | head -2"#,
    );
    assert!(
        !said.contains("panicked") && !said.contains("Broken pipe"),
        "{said}"
    );
    for _ in 0..50 {
        alpha.ok(&["ctx", "set", "k", "v"]);
    }
    let (_, said) = sh(&home, r#""$LOOPSY" --home "$H" audit | true"#);
    assert!(said.is_empty(), "audit | true said: {said}");
    let (_, said) = sh(
        &home,
        r#""$LOOPSY" completions bash | head -c 10 >/dev/null"#,
    );
    assert!(said.is_empty(), "{said}");
    Ok(())
}

#[test]
fn id_works_without_a_node_and_matches_the_node_later() -> anyhow::Result<()> {
    let dir = TempDir::new("id-offline");
    let home = dir.path().join("home");
    let out = loopsy_tests::node::cli(&home, &["id", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let node = Node::start(Options::isolated("alpha").home(&home))?;
    assert_eq!(offline["peer_id"], node.peer_id.as_str());
    Ok(())
}

#[test]
fn small_commands_do_what_a_user_expects() -> anyhow::Result<()> {
    let alpha = Node::start(Options::isolated("alpha"))?;
    let bravo = Node::start(Options::isolated("bravo"))?;
    alpha.pair_with(&bravo)?;
    let home = alpha.home();

    // `ctx set KEY -` takes the value from stdin, as it is.
    let (code, said) = sh(
        &home,
        r#"printf 'line one\nline two\n' | "$LOOPSY" --home "$H" ctx set notes -"#,
    );
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(alpha.ok(&["ctx", "get", "notes"]), "line one\nline two\n\n");
    // A missing key under --json is JSON too, and exit code 1.
    let out = alpha.cli(&["ctx", "get", "nothing-here", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let missing: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(missing["key"], "nothing-here");
    assert!(missing["error"].as_str().is_some_and(|e| !e.is_empty()));

    // status says which node this is.
    let status = alpha.json(&["status", "--json"])?;
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["home"], home.display().to_string());
    assert!(
        status["config"]
            .as_str()
            .is_some_and(|c| c.ends_with("config.toml"))
    );
    assert!(status["uptime_secs"].as_u64().is_some());

    // A shell without a terminal points at exec; attach with stdin at its end detaches at
    // once instead of hanging, and the session goes on.
    let out = alpha.cli(&["shell", "bravo"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("loopsy exec bravo -- CMD"), "{said}");
    let id = alpha.ok(&["session", "new", "--name", "quiet", "--", "sleep", "60"]);
    let started = Instant::now();
    let out = alpha.cli(&["attach", id.trim()]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "attach < /dev/null hung"
    );
    let said = String::from_utf8_lossy(&out.stderr);
    let detached = format!("[detached from session {}: its input ended]", id.trim());
    assert!(said.contains(&detached), "{said}");
    let listed = alpha.ok(&["session", "ls", "--json"]);
    assert!(listed.contains("\"running\""), "{listed}");
    Ok(())
}

#[test]
fn the_audit_log_filters_by_time_and_device_and_follows_from_now() -> anyhow::Result<()> {
    let alpha = Node::start(Options::isolated("alpha"))?;
    let bravo = Node::start(Options::isolated("bravo"))?;
    alpha.pair_with(&bravo)?;
    bravo.ok(&["exec", "alpha", "--", "true"]);
    let all = alpha.audit();
    assert!(all.iter().any(|e| e["name"] == "bravo"));
    let by_bravo = alpha.json(&["audit", "--json", "--peer", "bravo"])?;
    let by_bravo = by_bravo.as_array().cloned().unwrap_or_default();
    assert!(!by_bravo.is_empty() && by_bravo.iter().all(|e| e["name"] == "bravo"));
    let prefix = &bravo.peer_id[..12];
    let by_id = alpha.json(&["audit", "--json", "--peer", prefix])?;
    assert_eq!(by_id.as_array().map(Vec::len), Some(by_bravo.len()));
    std::thread::sleep(Duration::from_millis(1200));
    let recent = alpha.json(&["audit", "--json", "--since", "1s"])?;
    let recent = recent.as_array().cloned().unwrap_or_default();
    assert!(
        recent.iter().all(|e| e["action"] != "exec"),
        "the exec of over a second ago is left out: {recent:?}"
    );

    // --follow starts from now: the history is not repeated, new entries arrive.
    let mut follow = Reaped(alpha.spawn_cli(&["audit", "--follow", "--json"]));
    let stdout = follow.0.stdout.take().expect("stdout");
    std::thread::sleep(Duration::from_millis(500));
    bravo.ok(&["exec", "alpha", "--", "echo", "followed"]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let first = BufReader::new(stdout).lines().next();
        let _ = tx.send(first);
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a followed entry within 10 s")
        .expect("a line")?;
    assert!(
        first.contains("echo followed"),
        "the first line is new: {first}"
    );
    Ok(())
}

#[test]
fn completions_and_the_manual_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin::loopsy())
            .args(["completions", shell])
            .output()
            .expect("run loopsy");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("pair") && text.contains("session"), "{shell}");
    }
    let out = Command::new(bin::loopsy())
        .arg("man")
        .output()
        .expect("run loopsy");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH loopsy 1"));
}

#[test]
fn errors_say_what_went_wrong_in_words() -> anyhow::Result<()> {
    let alpha = Node::start(Options::isolated("alpha"))?;
    let bravo = Node::start(Options::isolated("bravo"))?;
    // bravo grants alpha `exec` only: no messages.
    let mut invite = alpha.invite(&["--ttl", "60s"])?;
    let out = bravo.cli(&["pair", "join", &invite.code, "--allow", "exec", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(invite.result()?["paired"], true);

    let out = alpha.cli(&["exec", "alpha", "--", "true"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("`alpha` is this device"), "{said}");

    let out = alpha.cli(&["exec", "bravo", "--cwd", "/no/such/dir", "--", "true"]);
    assert_ne!(out.status.code(), Some(127), "127 means no such program");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/dir"));
    let out = alpha.cli(&["exec", "bravo", "--", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127));

    let out = alpha.cli(&["msg", "send", "bravo", "hello"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("bravo does not take messages"), "{said}");

    let bravo_id = bravo.peer_id.clone();
    drop(bravo);
    let out = alpha.cli(&["exec", "bravo", "--", "true"]);
    assert_eq!(out.status.code(), Some(255));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("cannot reach bravo"), "{said}");
    assert!(
        !said.contains("Failed to negotiate") && !said.contains(&bravo_id),
        "{said}"
    );
    Ok(())
}

#[test]
fn members_are_renamed_readdressed_and_regranted_by_hand() -> anyhow::Result<()> {
    // Homes of their own, kept across the restart below.
    let dir = TempDir::new("readdress");
    let (alpha_home, bravo_home) = (dir.path().join("alpha"), dir.path().join("bravo"));
    let alpha = Node::start(Options::isolated("alpha").home(&alpha_home))?;
    let bravo = Node::start(Options::isolated("bravo").home(&bravo_home))?;
    alpha.pair_with(&bravo)?;
    let listed = |node: &Node| {
        node.trusted()
            .into_iter()
            .find(|p| p["peer_id"] == bravo.peer_id.as_str())
            .expect("bravo is listed")
    };

    let said = alpha.ok(&["trust", "set", "bravo", "--name", "laptop"]);
    assert!(said.contains("laptop"), "{said}");
    assert_eq!(listed(&alpha)["name"], "laptop");
    alpha.ok(&["trust", "set", "laptop", "--allow", "ctx"]);
    assert_eq!(listed(&alpha)["allow"], serde_json::json!(["ctx"]));
    let out = bravo.cli(&["exec", "alpha", "--", "true"]);
    assert_eq!(out.status.code(), Some(126), "no exec any more");
    // `trust add` of a member is an update, and says so.
    let said = alpha.ok(&["trust", "add", &bravo.peer_id, "--name", "desk"]);
    assert!(said.contains("member already"), "{said}");
    assert_eq!(listed(&alpha)["name"], "desk");

    // Both restart on new ports (their saved ones deleted): neither finds the other,
    // until told where.
    let bravo_id = bravo.peer_id.clone();
    drop((alpha, bravo));
    for home in [&alpha_home, &bravo_home] {
        std::fs::remove_file(home.join("ports.toml"))?;
    }
    let alpha = Node::start(Options::isolated("alpha").home(&alpha_home))?;
    let bravo = Node::start(Options::isolated("bravo").home(&bravo_home))?;
    std::thread::sleep(Duration::from_secs(2));
    let online = |node: &Node| node.peer(&bravo_id).is_some_and(|p| p["online"] == true);
    assert!(!online(&alpha));
    let addr = bravo.tcp_addr()?.to_string();
    let said = alpha.ok(&["peers", "connect", "desk", &addr]);
    assert!(said.starts_with("desk: set 1 addresses"), "{said}");
    // Connected at once, or (on a busy machine) by the next redial of the new address.
    loopsy_tests::wait_for(
        "alpha to reach bravo again",
        Duration::from_secs(30),
        || online(&alpha).then_some(()),
    )?;
    Ok(())
}

#[test]
fn cp_speaks_json_when_it_fails_and_takes_scp_tilde_paths() -> anyhow::Result<()> {
    let dir = TempDir::new("cp-cli");
    let root = dir.path().join("bravo-home");
    std::fs::create_dir_all(&root)?;
    let alpha = Node::start(Options::isolated("alpha"))?;
    let bravo = Node::start(Options::isolated("bravo").env("HOME", &root))?;
    alpha.pair_with(&bravo)?;
    let file = dir.path().join("note.txt");
    std::fs::write(&file, "hello")?;
    let file = file.display().to_string();

    alpha.ok(&["cp", &file, "bravo:~/note.txt"]);
    assert_eq!(std::fs::read_to_string(root.join("note.txt"))?, "hello");

    let out = alpha.cli(&["cp", "--json", "/no/such/file", "bravo:"]);
    assert_eq!(out.status.code(), Some(1));
    let failed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert!(
        failed["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    assert_eq!(failed["files"], serde_json::json!([]));

    let help = alpha.ok(&["cp", "--help"]);
    assert!(help.contains("loopsy cp [OPTIONS] SRC... DEST"), "{help}");
    Ok(())
}

/// Reads the terminal until `want` shows (or panics with what it showed).
async fn read_until(pty: &mut pty_process::Pty, screen: &mut String, want: &str) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !screen.contains(want) {
        match tokio::time::timeout_at(deadline, pty.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => screen.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => panic!("never saw {want:?} on the terminal: {screen:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_on_a_narrow_terminal_and_ctrl_c_withdraws_the_code() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let (alpha, bravo) = tokio::task::spawn_blocking(|| -> anyhow::Result<(Node, Node)> {
        Ok((
            Node::start(Options::isolated("alpha"))?,
            Node::start(Options::isolated("bravo"))?,
        ))
    })
    .await??;
    let (mut pty, pts) = pty_process::open()?;
    pty.resize(pty_process::Size::new(40, 30))?;
    let mut child = pty_process::Command::new(bin::loopsy())
        .arg("--home")
        .arg(alpha.home())
        .args(["pair", "--ttl", "60s"])
        .spawn(pts)?;
    let mut screen = String::new();
    read_until(&mut pty, &mut screen, "Waiting").await;
    assert!(screen.contains("widen the terminal"), "{screen}");
    let code = screen
        .split_whitespace()
        .find(|w| w.starts_with("LOOPSY"))
        .expect("a code on the screen")
        .to_owned();
    pty.write_all(b"\x03").await?;
    read_until(&mut pty, &mut screen, "withdrawn").await;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await??;
    assert_eq!(status.code(), Some(130));
    let (ok, out) = tokio::task::spawn_blocking(move || bravo.join(&code)).await?;
    assert!(
        !ok && out["error"]
            .as_str()
            .is_some_and(|e| e.contains("withdrawn")),
        "{out}"
    );
    Ok(())
}

#[test]
fn session_names_are_unique_and_kill_says_when_a_session_had_ended() -> anyhow::Result<()> {
    let alpha = Node::start(Options::isolated("alpha"))?;
    alpha.ok(&["session", "new", "--name", "agent", "--", "sleep", "60"]);
    let out = alpha.cli(&["session", "new", "--name", "agent", "--", "sleep", "60"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("already called `agent`"), "{said}");

    alpha.ok(&["session", "new", "--name", "quick", "--", "true"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !alpha
        .ok(&["session", "ls", "--json"])
        .contains("\"exited\"")
    {
        assert!(Instant::now() < deadline, "the quick session never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = alpha.cli(&["session", "kill", "quick"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("had already ended"), "{said}");
    Ok(())
}

/// `loopsy node` and `loopsy mcp` run in `loopsy-node`, the binary installed beside
/// `loopsy` (which stays small for a fast start); where it is missing, they say so and
/// what to do, and the other commands work on without it.
#[test]
fn the_node_starts_from_the_binary_beside_loopsy_or_says_where_it_is_missing() -> anyhow::Result<()>
{
    let alone = TempDir::new("alone");
    let lonely = alone.path().join("loopsy");
    std::fs::copy(bin::loopsy(), &lonely)?;
    let home = alone.path().join("home");
    for command in [&["node"][..], &["mcp"]] {
        let out = Command::new(&lonely)
            .arg("--home")
            .arg(&home)
            .args(command)
            .stdin(Stdio::null())
            .output()?;
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {said}");
        let missing = alone.path().join("loopsy-node");
        assert!(
            said.contains(&format!("cannot start {}", missing.display()))
                && said.contains("installed beside `loopsy`"),
            "{command:?}: {said}"
        );
    }
    let id = Command::new(&lonely)
        .arg("--home")
        .arg(&home)
        .arg("id")
        .output()?;
    assert!(
        id.status.success(),
        "{}",
        String::from_utf8_lossy(&id.stderr)
    );

    // Beside it, `loopsy node` becomes `loopsy-node` in the same process.
    let node = Node::start(Options::isolated("beside"))?;
    let exe = std::fs::read_link(format!("/proc/{}/exe", node.pid()))?;
    assert_eq!(exe.file_name(), Some("loopsy-node".as_ref()));
    Ok(())
}
