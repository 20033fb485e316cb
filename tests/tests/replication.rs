//! Replicated state across a line of three devices on two LANs (A–B–C, B on both and not
//! forwarding, so A and C never meet): a session started on A shows up on C, a context key
//! set on C is read on A, and writes on both sides of a partition (B's links down)
//! converge once it heals.

use std::time::Duration;

use loopsy_tests::{
    netlab::Lab,
    node::{Node, Options},
    wait_for,
};
use serde_json::Value;

fn ctx_get(node: &Node, key: &str) -> Option<String> {
    let out = node.cli(&["ctx", "get", key]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
}

fn ctx_set(node: &Node, key: &str, value: &str) {
    let out = node.cli(&["ctx", "set", key, value]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn new_session(node: &Node, argv: &[&str]) -> String {
    let mut args = vec!["session", "new", "--"];
    args.extend_from_slice(argv);
    let out = node.cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn listed(node: &Node, id: &str) -> Option<Value> {
    let list = node.json(&["session", "ls", "--json"]).ok()?;
    list.as_array()?.iter().find(|s| s["id"] == id).cloned()
}

fn inbox(node: &Node) -> Vec<Value> {
    node.json(&["msg", "inbox", "--json"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn pair(inviter: &Node, joiner: &Node) -> anyhow::Result<()> {
    let mut invite = inviter.invite(&["--ttl", "60s"])?;
    let (ok, joined) = joiner.join(&invite.code);
    anyhow::ensure!(ok, "join failed: {joined}");
    anyhow::ensure!(invite.result()?["paired"] == true, "not paired");
    Ok(())
}

#[test]
fn state_crosses_a_line_of_devices_and_converges_after_a_partition() -> anyhow::Result<()> {
    let Some(mut lab) = Lab::new("line") else {
        return Ok(());
    };
    let [ha, hb, hc] = [lab.host("a")?, lab.host("b")?, lab.host("c")?];
    lab.lan(
        "lan1",
        &[(&ha, "eth0", "10.81.1.1/24"), (&hb, "eth1", "10.81.1.2/24")],
    )?;
    lab.lan(
        "lan2",
        &[(&hb, "eth2", "10.81.2.2/24"), (&hc, "eth0", "10.81.2.3/24")],
    )?;
    let a = Node::start(Options::named("alpha").netns(&ha))?;
    let b = Node::start(Options::named("bravo").netns(&hb))?;
    let c = Node::start(Options::named("charlie").netns(&hc))?;
    pair(&a, &b)?;
    pair(&b, &c)?;

    // A and C are members of one mesh, yet never connected.
    wait_for("charlie to know alpha", Duration::from_secs(30), || {
        c.json(&["trust", "ls", "--json"])
            .ok()?
            .as_array()?
            .iter()
            .any(|p| p["peer_id"] == a.peer_id.as_str())
            .then_some(())
    })?;

    let session = new_session(&a, &["sleep", "1000"]);
    let seen = wait_for(
        "alpha's session on charlie",
        Duration::from_secs(30),
        || listed(&c, &session),
    )?;
    assert_eq!(seen["host"], "alpha");
    assert_eq!(seen["status"], "running");
    ctx_set(&c, "from/charlie", "hello alpha");
    let read = wait_for("charlie's key on alpha", Duration::from_secs(30), || {
        ctx_get(&a, "from/charlie")
    })?;
    assert_eq!(read, "hello alpha");
    let sent = a.json(&["msg", "send", "charlie", "first, through bravo", "--json"])?;
    let first = sent["id"].as_str().unwrap_or_default().to_owned();
    wait_for(
        "the message in charlie's inbox",
        Duration::from_secs(30),
        || {
            inbox(&c)
                .iter()
                .any(|m| m["id"] == first.as_str())
                .then_some(())
        },
    )?;
    let direct = a.peer(&c.peer_id).map(|p| p["connection"].clone());
    assert_eq!(
        direct,
        Some(Value::from("none")),
        "alpha and charlie never met"
    );

    // Partition: bravo's links go down; both sides write; then it heals.
    lab.run(&hb, "ip", &["link", "set", "eth1", "down"])?;
    lab.run(&hb, "ip", &["link", "set", "eth2", "down"])?;
    ctx_set(&a, "side/a", "written on alpha");
    ctx_set(&c, "side/c", "written on charlie");
    let queued = a.json(&[
        "msg",
        "send",
        "charlie",
        "second, across the partition",
        "--json",
    ])?;
    assert_eq!(queued["delivered"], false, "charlie is out of reach");
    let later = new_session(&c, &["sleep", "999"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ctx_get(&c, "side/a"), None, "the partition holds");
    // Alpha's session is still listed on charlie, with its host shown as offline.
    let offline = wait_for(
        "alpha shown offline on charlie",
        Duration::from_secs(30),
        || listed(&c, &session).filter(|s| s["host_online"] == false),
    )?;
    assert!(offline["host_last_seen"].is_string(), "{offline}");
    lab.run(&hb, "ip", &["link", "set", "eth1", "up"])?;
    lab.run(&hb, "ip", &["link", "set", "eth2", "up"])?;
    wait_for("alpha's write on charlie", Duration::from_secs(90), || {
        ctx_get(&c, "side/a")
    })?;
    wait_for("charlie's write on alpha", Duration::from_secs(90), || {
        ctx_get(&a, "side/c")
    })?;
    wait_for(
        "charlie's new session on alpha",
        Duration::from_secs(90),
        || listed(&a, &later),
    )?;
    wait_for(
        "the queued message in charlie's inbox",
        Duration::from_secs(90),
        || (inbox(&c).len() == 2).then_some(()),
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let texts: Vec<Value> = inbox(&c).iter().map(|m| m["text"].clone()).collect();
    assert_eq!(
        texts,
        ["first, through bravo", "second, across the partition"],
        "each message once, in order"
    );
    Ok(())
}
