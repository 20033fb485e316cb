//! Stable ports: a node listening on port 0 asks for the same ports at its next start, so
//! its members find it again where they last saw it, with no `trust set --addr`; and
//! `loopsy peers` says when it last saw a device that is away.

use std::time::Duration;

use loopsy_tests::{
    node::{Node, Options},
    temp::TempDir,
    wait_for,
};

#[test]
fn devices_restarted_on_port_0_find_each_other_again() -> anyhow::Result<()> {
    let dir = TempDir::new("stable-ports");
    let (alpha_home, bravo_home) = (dir.path().join("alpha"), dir.path().join("bravo"));
    let alpha = Node::start(Options::isolated("alpha").home(&alpha_home))?;
    let bravo = Node::start(Options::isolated("bravo").home(&bravo_home))?;
    alpha.pair_with(&bravo)?;
    let (alpha_addr, bravo_addr) = (alpha.tcp_addr()?, bravo.tcp_addr()?);
    for home in [&alpha_home, &bravo_home] {
        wait_for("the ports to be saved", Duration::from_secs(15), || {
            home.join("ports.toml").exists().then_some(())
        })?;
    }

    // Both restart (no mDNS: each knows the other only by the addresses it saw). While
    // alpha is away, bravo says when it last saw it.
    let alpha_id = alpha.peer_id.clone();
    alpha.stop()?;
    let gone = wait_for("bravo to see alpha go", Duration::from_secs(15), || {
        bravo.peer(&alpha_id).filter(|p| p["connection"] == "none")
    })?;
    let last_seen = gone["last_seen"].as_str().unwrap_or_default().to_owned();
    assert!(last_seen.ends_with('Z') && last_seen.len() == 24, "{gone}");
    let table = bravo.ok(&["peers"]);
    assert!(
        table.contains("SEEN") && table.contains(&last_seen[11..16]),
        "{table}"
    );
    bravo.stop()?;
    let alpha = Node::start(Options::isolated("alpha").home(&alpha_home))?;
    let bravo = Node::start(Options::isolated("bravo").home(&bravo_home))?;
    assert_eq!(alpha.tcp_addr()?, alpha_addr, "alpha's port");
    assert_eq!(bravo.tcp_addr()?, bravo_addr, "bravo's port");

    wait_for("bravo to find alpha again", Duration::from_secs(30), || {
        bravo.peer(&alpha.peer_id).filter(|p| p["online"] == true)
    })?;
    let out = bravo.cli(&["exec", "alpha", "--", "true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
