//! Sessions and shells obey the host's policy and grants: a program list that leaves out
//! the login shell refuses `loopsy shell` and a login-shell session, and a device granted
//! `own-sessions` uses the sessions it started there and no other.

use std::{io::Read, process::ExitStatus, time::Duration};

use loopsy_mesh::{framed, identity};
use loopsy_tests::{
    attach::Attached,
    node::{Node, Options, Reaped},
    stranger,
    temp::TempDir,
    wait_for,
};
use loopsy_wire::{
    admission::{self, Admission},
    protocol,
    session::{self, Reply, Request},
};
use serde_json::Value;

/// Runs a `loopsy` command on `node` that must be refused: how it ended, and what it
/// said. One that was let in (a shell, an attach) would wait for input for ever: it is
/// given a while, then killed.
fn refused(node: &Node, args: &[&str]) -> anyhow::Result<(ExitStatus, String)> {
    let mut child = Reaped(node.spawn_cli(args));
    let ended = wait_for(
        &format!("loopsy {args:?} to be refused"),
        Duration::from_secs(30),
        || child.0.try_wait().ok().flatten(),
    )?;
    let mut said = String::new();
    if let Some(mut stderr) = child.0.stderr.take() {
        stderr.read_to_string(&mut said)?;
    }
    assert!(!ended.success(), "loopsy {args:?} must be refused: {said}");
    Ok((ended, said))
}

/// The audit entries on `node` for what `peer` tried as `action`, with `result`.
fn audited(node: &Node, peer: &str, action: &str, result: &str) -> Vec<Value> {
    node.audit()
        .into_iter()
        .filter(|e| e["peer"] == peer && e["action"] == action && e["result"] == result)
        .collect()
}

#[test]
fn a_program_list_without_the_login_shell_refuses_shells_and_login_sessions() -> anyhow::Result<()>
{
    let dir = TempDir::new("no-shells");
    let home = dir.path().join("alpha");
    std::fs::create_dir_all(&home)?;
    std::fs::write(
        home.join("config.toml"),
        "[exec]\nallow = [\"true\"]\nroot = \"/\"\nmax_secs = 0\nmax_running = 32\n",
    )?;
    let a = Node::start(Options::isolated("alpha").home(&home))?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    let rule = "is not in the allowed programs (true)";

    // `loopsy shell`, on a terminal (`script` gives it one): refused by the policy (126),
    // naming the rule.
    let shell = format!(
        "'{}' --home '{}' shell alpha",
        loopsy_tests::bin::loopsy().display(),
        b.home().display()
    );
    let out = std::process::Command::new("timeout")
        .args(["30", "script", "-qec", &shell, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()?;
    let (ended, said) = (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    );
    assert_eq!(ended.code(), Some(126), "{said}");
    assert!(
        said.contains("the login shell") && said.contains(rule),
        "{said}"
    );

    // A session with no command is the login shell: refused too, and nothing starts.
    let (_, said) = refused(&b, &["session", "new", "--on", "alpha"])?;
    assert!(
        said.contains("the login shell") && said.contains(rule),
        "{said}"
    );
    let listed = a.json(&["session", "ls", "--json"])?;
    assert_eq!(listed, serde_json::json!([]), "nothing started");
    // A program the list names still runs in a session.
    b.ok(&["session", "new", "--on", "alpha", "--", "true"]);

    for action in ["exec", "session new"] {
        let denied = audited(&a, &b.peer_id, action, "denied");
        let why = |e: &Value| e["reason"].as_str().is_some_and(|r| r.contains(rule));
        assert!(
            denied.iter().any(why),
            "{action} refusal audited: {denied:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_sessions_reaches_only_the_sessions_that_device_started() -> anyhow::Result<()> {
    let (a, b, desk, mine) = tokio::task::spawn_blocking(|| -> anyhow::Result<_> {
        let a = Node::start(Options::isolated("alpha"))?;
        let b = Node::start(Options::isolated("bravo"))?;
        let mut invite = a.invite(&["--ttl", "60s", "--allow", "own-sessions,exec"])?;
        let (ok, out) = b.join(&invite.code);
        anyhow::ensure!(ok, "join failed: {out}");
        anyhow::ensure!(invite.result()?["paired"] == true, "alpha did not pair");

        // Alpha's own user starts one; bravo starts one there.
        let desk = a.ok(&["session", "new", "--name", "desk", "--", "sleep", "600"]);
        let mine = b.ok(&[
            "session",
            "new",
            "--on",
            "alpha",
            "--name",
            "mine",
            "--",
            "sh",
            "-c",
            "echo mine-is-up; exec cat",
        ]);
        let (desk, mine) = (desk.trim().to_owned(), mine.trim().to_owned());

        // Bravo attaches to its own, and types into it.
        let mut attached = Attached::start(&b, &mine);
        attached.wait_for_text("mine-is-up");
        attached.type_keys("typed-by-bravo\n");
        attached.wait_for_text("typed-by-bravo");
        drop(attached);

        // Alpha's own is not there for bravo: answered as if it did not exist.
        let nothing = format!("no session here is called `{desk}`");
        for args in [
            &["attach", &desk, "--on", "alpha"][..],
            &["session", "kill", &desk, "--on", "alpha"],
        ] {
            let (_, said) = refused(&b, args)?;
            assert!(said.contains(&nothing), "{args:?}: {said}");
        }
        for action in ["session attach", "session kill"] {
            let denied = audited(&a, &b.peer_id, action, "denied");
            assert!(
                denied.iter().any(|e| e["args"] == desk.as_str()),
                "{action} audited: {denied:?}"
            );
        }
        // Bravo ends its own.
        b.ok(&["session", "kill", &mine]);
        Ok((a, b, desk, mine))
    })
    .await??;

    // What alpha lists for bravo, asked with bravo's key: its own session alone.
    let key = identity::load_or_create(&b.home().join("identity.key"))?;
    tokio::task::spawn_blocking(move || b.stop()).await??;
    let target: libp2p::PeerId = a.peer_id.parse()?;
    let (bravo, _task) = stranger::impersonating(key, "bravo", target, a.tcp_addr()?).await?;
    let mut stream = bravo.open_stream(target, protocol::SESSION).await?;
    let verdict: Option<Admission> = framed::read(&mut stream, admission::MAX_FRAME).await?;
    assert!(matches!(verdict, Some(Admission::Accepted)), "{verdict:?}");
    framed::write(&mut stream, &Request::List, session::MAX_FRAME).await?;
    let listed: Option<Reply> = framed::read(&mut stream, session::MAX_FRAME).await?;
    let Some(Reply::Sessions { sessions }) = listed else {
        panic!("no list: {listed:?}");
    };
    let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, [mine.as_str()], "only its own");

    // Alpha's own user still has both, and its own still runs.
    let listed =
        tokio::task::spawn_blocking(move || a.json(&["session", "ls", "--json"])).await??;
    let status = |id: &str| {
        let found = listed
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["id"] == id);
        found.map(|s| s["status"].clone())
    };
    assert_eq!(status(&desk), Some(Value::from("running")));
    assert_eq!(status(&mine), Some(Value::from("exited")));
    Ok(())
}
