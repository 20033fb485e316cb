//! SIGHUP: a node re-reads `trust.toml` and `config.toml` while it runs. A grant taken
//! away in the file holds for the next stream at once, while a session already attached
//! keeps streaming.

use std::time::Duration;

use loopsy_tests::{
    attach::{self, counted},
    node::{self, Node, Options},
    wait_for,
};

/// Sets `allow = [..]` for `peer` in the `trust.toml` text, as a person editing it would.
fn with_allow(trust: &str, peer: &str, allow: &[&str]) -> String {
    let allow = format!(
        "allow = [{}]",
        allow
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut out = Vec::new();
    let mut in_peer = false;
    for line in trust.lines() {
        if line.starts_with('[') {
            in_peer = false;
        }
        if in_peer && line.starts_with("allow =") {
            continue;
        }
        out.push(line.to_owned());
        if line == format!("peer_id = \"{peer}\"") {
            in_peer = true;
            out.push(allow.clone());
        }
    }
    assert!(out.contains(&allow), "no [[peer]] for {peer} in:\n{trust}");
    out.join("\n") + "\n"
}

/// How many times the node's log says it reloaded.
fn reloads(node: &Node) -> usize {
    node.log().matches("SIGHUP: reloading").count()
}

#[test]
fn sighup_takes_exec_away_at_once_and_the_attached_session_streams_on() -> anyhow::Result<()> {
    let alpha = Node::start(Options::isolated("alpha"))?;
    let bravo = Node::start(Options::isolated("bravo"))?;
    alpha.pair_with(&bravo)?;
    let exec = |node: &Node| node.cli(&["exec", "alpha", "--", "true"]);
    assert!(exec(&bravo).status.success(), "exec before the reload");

    // Bravo watches a counting session on alpha.
    let attached = attach::start_counter(&bravo, "alpha", "count");
    attached.wait_for_text("n5\r\n");

    // Alpha's user takes exec away from bravo in trust.toml, and sends SIGHUP.
    let path = alpha.home().join("trust.toml");
    let edited = with_allow(
        &std::fs::read_to_string(&path)?,
        &bravo.peer_id,
        &["sessions", "ctx", "msg"],
    );
    std::fs::write(&path, edited)?;
    let seen_before = counted(&attached.text()).last().copied().unwrap_or(0);
    node::signal(alpha.pid(), "HUP");
    wait_for("alpha to reload", Duration::from_secs(10), || {
        (reloads(&alpha) == 1 && alpha.log().contains("bravo may now do [sessions,ctx,msg]"))
            .then_some(())
    })?;

    // At once: the next exec is refused, naming the missing grant.
    let refused = exec(&bravo);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "exec after the reload: {said}");
    assert!(said.contains("exec"), "{said}");
    assert!(
        alpha.json(&["status", "--json"]).is_ok(),
        "SIGHUP must not stop the node"
    );

    // The session attached before streams on, with no gap.
    let later = format!("n{}\r\n", seen_before + 20);
    let text = attached.tap_text(&later);
    attach::assert_unbroken(&text);
    Ok(())
}

#[test]
fn a_config_that_does_not_parse_changes_nothing_and_says_so() -> anyhow::Result<()> {
    let alpha = Node::start(Options::isolated("alpha"))?;
    let bravo = Node::start(Options::isolated("bravo"))?;
    alpha.pair_with(&bravo)?;
    std::fs::write(
        alpha.home().join("config.toml"),
        "[grants]\nallow = [\"exce\"]\n",
    )?;
    node::signal(alpha.pid(), "HUP");
    wait_for(
        "alpha to refuse the config",
        Duration::from_secs(10),
        || alpha.log().contains("not reloaded").then_some(()),
    )?;
    let out = bravo.cli(&["exec", "alpha", "--", "true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(alpha.json(&["status", "--json"]).is_ok());
    Ok(())
}
