//! Watching without typing, between real nodes: `attach --read-only` shows the session live
//! while its keys reach nothing, and a device granted only `view` lists and watches
//! sessions but cannot type in, start or end one, each refusal in the host's audit log.

use std::time::Duration;

use loopsy_tests::{
    attach::Attached,
    node::{Node, Options},
    wait_for,
};
use serde_json::Value;

/// A session on `node` that echoes what is typed into it (`cat` on its terminal).
const ECHO: &str = "echo echo-is-up; exec cat";

fn audited(node: &Node, peer: &str, action: &str, result: &str) -> Vec<Value> {
    node.audit()
        .into_iter()
        .filter(|e| e["peer"] == peer && e["action"] == action && e["result"] == result)
        .collect()
}

/// Types `keys` on `watcher`, then `marker` on `typist`, and checks that the marker arrived
/// at the watcher while the watcher's keys never reached the session.
fn keys_reach_nothing(watcher: &mut Attached, typist: &mut Attached, keys: &str, marker: &str) {
    watcher.wait_for_text("echo-is-up");
    watcher.type_keys(&format!("{keys}\n"));
    // Give the watcher's keys the time they would take, then type as the one who may.
    std::thread::sleep(Duration::from_millis(500));
    typist.type_keys(&format!("{marker}\n"));
    watcher.wait_for_text(marker);
    typist.wait_for_text(marker);
    assert!(
        !watcher.text().contains(keys) && !typist.text().contains(keys),
        "a watcher's keys reached the session: {:?}",
        typist.text()
    );
}

#[test]
fn a_read_only_client_sees_everything_and_types_nothing() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    let id = a
        .ok(&["session", "new", "--name", "echo", "--", "sh", "-c", ECHO])
        .trim()
        .to_owned();
    let mut owner = Attached::start(&a, &id);
    let mut watcher = Attached::start_with(&b, &id, &["--read-only"]);
    keys_reach_nothing(
        &mut watcher,
        &mut owner,
        "typed-by-watcher",
        "typed-by-owner",
    );
    let watched = audited(&a, &b.peer_id, "session watch", "ok");
    assert!(!watched.is_empty(), "the watch is audited");
    Ok(())
}

#[test]
fn a_view_device_watches_but_cannot_type_start_or_kill() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    let mut invite = a.invite(&["--ttl", "60s", "--allow", "view"])?;
    let (ok, out) = b.join(&invite.code);
    anyhow::ensure!(ok, "join failed: {out}");
    anyhow::ensure!(invite.result()?["paired"] == true, "alpha did not pair");
    let id = a
        .ok(&["session", "new", "--name", "echo", "--", "sh", "-c", ECHO])
        .trim()
        .to_owned();

    // Bravo lists it (the registry reaches a device that may view).
    wait_for(
        "bravo to list alpha's session",
        Duration::from_secs(20),
        || {
            let list = b.json(&["session", "ls", "--json"]).ok()?;
            list.as_array()?
                .iter()
                .find(|s| s["id"] == id.as_str())
                .cloned()
        },
    )?;

    // A plain attach from bravo is a watch: its keys reach nothing.
    let mut owner = Attached::start(&a, &id);
    let mut viewer = Attached::start(&b, &id);
    keys_reach_nothing(&mut viewer, &mut owner, "typed-by-viewer", "typed-by-alpha");

    // It starts nothing and ends nothing, and says why.
    for args in [
        &["session", "new", "--on", "alpha", "--", "true"][..],
        &["session", "kill", "--on", "alpha", &id][..],
    ] {
        let out = b.cli(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("only watch"), "{args:?}: {said}");
    }
    let listed = a.json(&["session", "ls", "--json"])?;
    let sessions = listed.as_array().cloned().unwrap_or_default();
    assert_eq!(sessions.len(), 1, "nothing started: {sessions:?}");
    assert_eq!(sessions[0]["status"], "running", "nothing ended");
    for action in ["session new", "session kill"] {
        let denied = audited(&a, &b.peer_id, action, "denied");
        assert!(!denied.is_empty(), "{action} refusal audited");
    }
    assert!(!audited(&a, &b.peer_id, "session watch", "ok").is_empty());
    Ok(())
}
