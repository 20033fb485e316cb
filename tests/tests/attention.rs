//! Attention between real nodes: a bell and an OSC 9 notification in a session on alpha
//! reach bravo's `loopsy events --follow --json` (the delay measured), the session shows as
//! waiting on bravo until bravo attaches, a bell in a loop raises a handful of events, and
//! `loopsy notify` from a hook script reaches every device.

use std::{
    io::{BufRead, BufReader},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use loopsy_tests::{
    attach::Attached,
    node::{Node, Options, Reaped},
    temp::TempDir,
    wait_for,
};
use serde_json::Value;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// `loopsy events --follow --json` on `node`: each event with the time it was read.
struct Follower {
    _child: Reaped,
    seen: Arc<Mutex<Vec<(Value, u64)>>>,
}

impl Follower {
    fn start(node: &Node) -> Self {
        let mut child = node.spawn_cli(&["events", "--follow", "--json"]);
        let stdout = child.stdout.take().expect("stdout");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    into.lock().expect("seen").push((event, now_ms()));
                }
            }
        });
        Self {
            _child: Reaped(child),
            seen,
        }
    }

    fn find(&self, kind: &str) -> Option<(Value, u64)> {
        self.seen
            .lock()
            .expect("seen")
            .iter()
            .find(|(e, _)| e["kind"] == kind)
            .cloned()
    }
}

fn session_on(node: &Node, id: &str) -> Option<Value> {
    let list = node.json(&["session", "ls", "--json"]).ok()?;
    list.as_array()?.iter().find(|s| s["id"] == id).cloned()
}

fn events(node: &Node) -> Vec<Value> {
    node.json(&["events", "--since", "10m", "--json"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn a_bell_and_a_notification_reach_another_device_and_the_session_waits_until_attached()
-> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    let follower = Follower::start(&b);
    // The follower is listening before anything rings.
    std::thread::sleep(Duration::from_secs(1));

    let script = "sleep 1; printf 'ding\\a\\n'; sleep 1; \
                  printf '\\033]9;Needs your permission\\007'; exec sleep 600";
    let out = a.ok(&[
        "session", "new", "--name", "agent", "--", "sh", "-c", script,
    ]);
    let id = out.trim().to_owned();

    let (bell, bell_read) = wait_for("bravo to see the bell", Duration::from_secs(10), || {
        follower.find("bell")
    })?;
    let (note, note_read) = wait_for(
        "bravo to see the notification",
        Duration::from_secs(10),
        || follower.find("notify"),
    )?;
    assert_eq!(bell["host"], "alpha");
    assert_eq!(bell["session"], id.as_str());
    assert_eq!(bell["session_name"], "agent");
    assert_eq!(note["text"], "Needs your permission");
    // From the host noticing it to the other device printing it.
    let delays: Vec<u64> = [(&bell, bell_read), (&note, note_read)]
        .iter()
        .map(|(e, read)| read.saturating_sub(e["time_ms"].as_u64().unwrap_or(0)))
        .collect();
    eprintln!(
        "attention delay alpha -> bravo: bell {} ms, OSC 9 {} ms",
        delays[0], delays[1]
    );
    assert!(
        delays.iter().all(|&d| d < 1000),
        "events took {delays:?} ms"
    );

    // Bravo lists the session as waiting, since the bell.
    let waiting = wait_for("bravo to list it waiting", Duration::from_secs(10), || {
        session_on(&b, &id).filter(|s| !s["waiting"].is_null())
    })?;
    assert_eq!(waiting["waiting"]["kind"], "bell");

    // Bravo attaches and types: nobody waits any more, on either device.
    let mut attached = Attached::start(&b, "agent");
    attached.type_keys("x");
    for node in [&b, &a] {
        wait_for("the waiting to clear", Duration::from_secs(10), || {
            session_on(node, &id).filter(|s| s["waiting"].is_null())
        })?;
    }
    Ok(())
}

#[test]
fn a_bell_in_a_loop_raises_a_handful_of_events() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let loop_ = "while :; do printf '\\a'; sleep 0.01; done";
    let id = a
        .ok(&["session", "new", "--", "sh", "-c", loop_])
        .trim()
        .to_owned();
    // About 300 bells in three seconds.
    std::thread::sleep(Duration::from_secs(3));
    a.ok(&["session", "kill", &id]);
    let bells = events(&a)
        .into_iter()
        .filter(|e| e["session"] == id.as_str() && e["kind"] == "bell")
        .count();
    assert!((1..=5).contains(&bells), "{bells} events for a bell loop");
    Ok(())
}

#[test]
fn notify_from_a_hook_script_reaches_every_device() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    let c = Node::start(Options::isolated("charlie"))?;
    a.pair_with(&b)?;
    a.pair_with(&c)?;
    // A hook as an agent runs one: a script, its input on stdin.
    let dir = TempDir::new("hook");
    let hook = dir.path().join("notify-hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat >/dev/null\nexec '{}' --home '{}' notify --title 'Claude Code' 'Claude needs your permission'\n",
            loopsy_tests::bin::loopsy().display(),
            b.home().display()
        ),
    )?;
    let status = std::process::Command::new("sh")
        .arg(&hook)
        .stdin(std::process::Stdio::null())
        .status()?;
    assert!(status.success(), "the hook failed");
    for node in [&a, &b, &c] {
        let found = wait_for(
            "the notification everywhere",
            Duration::from_secs(20),
            || {
                events(node)
                    .into_iter()
                    .find(|e| e["kind"] == "note" && e["host"] == "bravo")
            },
        )?;
        assert_eq!(found["title"], "Claude Code");
        assert_eq!(found["text"], "Claude needs your permission");
    }
    // A notification for a session that is not there is refused, in words.
    let out = b.cli(&["notify", "--session", "nosuch", "hello"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch"));
    Ok(())
}
