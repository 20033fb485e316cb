//! Sessions and shells obey the host's policy: a program list that leaves out the login
//! shell refuses `loopsy shell` and a login-shell session.

use std::{io::Read, process::ExitStatus, time::Duration};

use loopsy_tests::{
    node::{Node, Options, Reaped},
    temp::TempDir,
    wait_for,
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

    // `loopsy shell`: refused by the policy (126), naming the rule.
    let (ended, said) = refused(&b, &["shell", "alpha"])?;
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
