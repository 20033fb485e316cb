//! What a node writes to its log reads as words: errors say their causes, not Rust's
//! debug dumps of libp2p's nested errors (`Other(Right(Right(Io(Os { code: 99, ..`).

use std::time::Duration;

use loopsy_tests::{
    node::{Node, Options},
    wait_for,
};

/// What Rust's `Debug` of nested errors and options looks like.
const DUMPS: [&str; 6] = ["Right(", "Left(", "Custom {", "Os {", "Some(", "kind: "];

#[test]
fn warnings_say_what_failed_in_words() -> anyhow::Result<()> {
    // An address this machine does not have (TEST-NET-1), beside a loopback one; and a
    // relay that is not there.
    let node = Node::start(Options::isolated("alpha").args(&[
        "--listen",
        "/ip4/192.0.2.1/tcp/0",
        "--listen",
        "/ip4/192.0.2.1/udp/0/quic-v1",
        "--relay",
        "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
    ]))?;
    // Read once the relay has failed too, so that its error is among the lines checked.
    let log = wait_for(
        "the relay's failure in the log",
        Duration::from_secs(30),
        || {
            let log = node.log();
            log.contains("no reservation on the relay").then_some(log)
        },
    )?;
    let said = |line: &str| log.lines().any(|l| l.ends_with(line));
    for addr in ["/ip4/192.0.2.1/tcp/0", "/ip4/192.0.2.1/udp/0/quic-v1"] {
        let line = format!(
            "WARN loopsy_mesh: cannot listen addr={addr} error=Cannot assign requested address \
             (os error 99)"
        );
        assert!(said(&line), "no `{line}` in:\n{log}");
    }
    // Every line of Loopsy's own, at any level: no dumps.
    let ours = log
        .lines()
        .filter(|l| l.contains(" loopsy_"))
        .filter(|l| DUMPS.iter().any(|d| l.contains(d)));
    let dumped: Vec<&str> = ours.collect();
    assert!(
        dumped.is_empty(),
        "debug dumps in the log:\n{}",
        dumped.join("\n")
    );
    Ok(())
}
