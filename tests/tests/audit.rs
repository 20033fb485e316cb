//! The audit log against hostile input, with the stock CLI between real nodes: an argv
//! cannot forge a line, and a stranger looping refused streams cannot flush the history.

use loopsy_tests::node::{Node, Options};

#[test]
fn an_argv_cannot_forge_an_audit_line() -> anyhow::Result<()> {
    let alpha = Node::start(Options::isolated("alpha"))?;
    let bravo = Node::start(Options::isolated("bravo"))?;
    alpha.pair_with(&bravo)?;
    let forged = "x\nFORGED 2026-12-06T00:00:00Z  carol  exec rm -rf ~  ok\u{202e}";
    let out = bravo.cli(&["exec", "alpha", "--", forged]);
    assert_eq!(out.status.code(), Some(127), "no such program");

    let shown = alpha.ok(&["audit"]);
    assert!(
        shown.lines().all(|l| !l.starts_with("FORGED")),
        "a forged line:\n{shown}"
    );
    assert!(!shown.contains('\u{202e}'));
    let line = shown
        .lines()
        .find(|l| l.contains("FORGED"))
        .expect("the entry is there");
    assert!(
        line.contains(r"x\nFORGED") && line.contains(r"\u{202e}"),
        "{line}"
    );
    Ok(())
}

#[test]
fn a_stranger_cannot_flush_the_history() -> anyhow::Result<()> {
    let alpha = Node::start(Options::isolated("alpha"))?;
    let stranger = Node::start(Options::isolated("stranger"))?;
    // The stranger trusts alpha (alpha does not trust it) and so dials it.
    stranger.trust_add(&alpha, &[])?;
    let before = alpha.audit().len();
    for _ in 0..60 {
        let out = stranger.cli(&["exec", "alpha", "--", "true"]);
        assert_eq!(out.status.code(), Some(126), "refused");
    }
    let entries = alpha.audit();
    let from_stranger = entries
        .iter()
        .filter(|e| e["peer"] == stranger.peer_id.as_str())
        .count();
    assert!(from_stranger >= 1, "refusals are audited");
    assert!(
        from_stranger <= 10,
        "{from_stranger} entries from one stranger in a minute"
    );
    assert!(
        entries.len() - before <= 12,
        "{} new entries",
        entries.len() - before
    );
    Ok(())
}
