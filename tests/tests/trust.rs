//! The trust model against a hostile member, with the stock CLI between real nodes: a member
//! without `admit` cannot mint a device, a restriction chosen at pairing holds on every
//! member, a clock set to 2100 wins nothing, a member receives only the collections its
//! grants serve, and a device paired again keeps the grants it had.

use std::{path::Path, time::Duration};

use loopsy_tests::{
    node::{Node, Options},
    wait_for,
};
use serde_json::Value;

/// libfaketime, from Debian's `faketime` package.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

fn listed(node: &Node, peer_id: &str) -> Option<Value> {
    node.trusted().into_iter().find(|p| p["peer_id"] == peer_id)
}

/// Pairs `joiner` with `inviter` by a code made with `loopsy pair ARGS..`.
fn pair(inviter: &Node, joiner: &Node, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["--ttl", "60s"];
    all.extend(args);
    let mut invite = inviter.invite(&all)?;
    let (ok, out) = joiner.join(&invite.code);
    anyhow::ensure!(ok, "join failed: {out}");
    anyhow::ensure!(invite.result()?["paired"] == true, "inviter did not pair");
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn file(home: &Path, name: &str) -> Vec<u8> {
    std::fs::read(home.join(name)).unwrap_or_default()
}

#[test]
fn a_member_without_admit_cannot_mint_a_device() -> anyhow::Result<()> {
    let alpha = Node::start(Options::isolated("alpha"))?;
    let bravo = Node::start(Options::isolated("bravo"))?;
    let charlie = Node::start(Options::isolated("charlie"))?;
    let shadow = Node::start(Options::isolated("shadow"))?;
    pair(&alpha, &bravo, &["--allow", "files"])?;
    pair(&alpha, &charlie, &[])?;

    // The restriction chosen on alpha holds on charlie too, which bravo never paired with.
    let on_charlie = wait_for("charlie to learn of bravo", Duration::from_secs(20), || {
        listed(&charlie, &bravo.peer_id)
    })?;
    assert_eq!(on_charlie["allow"], serde_json::json!(["files"]));
    assert_eq!(on_charlie["via"], "introduced by alpha");

    // bravo vouches for a key of its own, which trusts alpha back.
    bravo.trust_add(&shadow, &[])?;
    shadow.trust_add(&alpha, &[])?;
    // alpha and charlie hold bravo's record (it spread), yet trust nobody on bravo's word:
    // bravo holds no `admit` anywhere.
    for node in [&alpha, &charlie] {
        wait_for("bravo's record to spread", Duration::from_secs(20), || {
            contains(&file(&node.home(), "trust.toml"), shadow.peer_id.as_bytes()).then_some(())
        })?;
    }
    std::thread::sleep(Duration::from_secs(2));
    for node in [&alpha, &charlie] {
        assert!(
            listed(node, &shadow.peer_id).is_none(),
            "{} trusts bravo's minted device: {:?}",
            node.name,
            node.trusted()
        );
    }
    let out = shadow.cli(&["exec", "alpha", "--", "true"]);
    assert_eq!(out.status.code(), Some(126), "shadow must be refused");

    // Nor can bravo revoke anyone.
    let out = bravo.cli(&["trust", "rm", "charlie"]);
    assert!(out.status.success());
    std::thread::sleep(Duration::from_secs(3));
    assert!(listed(&alpha, &charlie.peer_id).is_some(), "charlie stays");
    Ok(())
}

#[test]
fn a_clock_in_2100_wins_nothing() -> anyhow::Result<()> {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "this test needs Debian's faketime package (apt-get install faketime)"
    );
    let alpha = Node::start(Options::isolated("alpha"))?;
    let carol = Node::start(Options::isolated("carol"))?;
    let mallory = Node::start(
        Options::isolated("mallory")
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME", "@2100-01-01 00:00:00")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    )?;
    let mut invite = mallory.invite(&["--ttl", "60s"])?;
    let expires = loopsy_wire::pair::Code::from_text(&invite.code)?.expires;
    assert!(expires > 4_102_444_800, "mallory's clock says 2100");
    let (ok, out) = alpha.join(&invite.code);
    assert!(ok, "{out}");
    assert_eq!(invite.result()?["paired"], true);
    pair(&alpha, &carol, &[])?;
    wait_for("mallory to learn of carol", Duration::from_secs(20), || {
        listed(&mallory, &carol.peer_id)
    })?;

    // A revocation dated 2100 is refused, and said so in the audit log.
    let out = mallory.cli(&["trust", "rm", "carol"]);
    assert!(out.status.success());
    let refused = wait_for("alpha to refuse it", Duration::from_secs(20), || {
        alpha.audit().into_iter().find(|e| {
            e["action"] == "sync"
                && e["result"] == "denied"
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("2100-01-01"))
        })
    })?;
    assert_eq!(refused["peer"], mallory.peer_id.as_str());
    assert!(listed(&alpha, &carol.peer_id).is_some(), "carol stays");

    // A context write dated 2100 neither lands nor drags alpha's clock along: carol's
    // later write of a key alpha wrote after it still wins.
    let out = mallory.cli(&["ctx", "set", "pin", "from-2100"]);
    assert!(out.status.success());
    wait_for(
        "alpha to refuse the ctx record",
        Duration::from_secs(20),
        || {
            alpha
                .audit()
                .into_iter()
                .find(|e| e["action"] == "sync" && e["args"] == "ctx" && e["result"] == "denied")
        },
    )?;
    alpha.ok(&["ctx", "set", "x", "alpha"]);
    std::thread::sleep(Duration::from_millis(50));
    carol.ok(&["ctx", "set", "x", "carol"]);
    wait_for(
        "carol's write to win on alpha",
        Duration::from_secs(20),
        || (alpha.cli(&["ctx", "get", "x"]).stdout.trim_ascii() == b"carol").then_some(()),
    )?;
    assert!(alpha.cli(&["ctx", "get", "pin"]).status.code() == Some(1));
    Ok(())
}

#[test]
fn a_member_receives_only_the_collections_it_is_granted() -> anyhow::Result<()> {
    let alpha = Node::start(Options::isolated("alpha"))?;
    let bravo = Node::start(Options::isolated("bravo"))?;
    let charlie = Node::start(Options::isolated("charlie"))?;
    pair(&alpha, &bravo, &["--allow", "none"])?;
    pair(&alpha, &charlie, &[])?;
    charlie.ok(&["ctx", "set", "deploy/token", "ctx-secret-4711"]);
    alpha.ok(&[
        "session",
        "new",
        "--name",
        "session-secret-4711",
        "--",
        "sleep",
        "60",
    ]);
    wait_for(
        "alpha to hold charlie's key",
        Duration::from_secs(20),
        || {
            (alpha
                .cli(&["ctx", "get", "deploy/token"])
                .stdout
                .trim_ascii()
                == b"ctx-secret-4711")
                .then_some(())
        },
    )?;
    wait_for(
        "charlie to list alpha's session",
        Duration::from_secs(20),
        || {
            let out = charlie.cli(&["session", "ls", "--json"]);
            contains(&out.stdout, b"session-secret-4711").then_some(())
        },
    )?;
    // bravo is a member (it learns of charlie) yet holds neither the key nor the session.
    wait_for("bravo to learn of charlie", Duration::from_secs(20), || {
        listed(&bravo, &charlie.peer_id)
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let home = bravo.home();
    for (name, secret) in [
        ("ctx.cbor", &b"ctx-secret-4711"[..]),
        ("registry.cbor", b"session-secret-4711"),
    ] {
        assert!(
            !contains(&file(&home, name), secret),
            "bravo's {name} holds what it was not granted"
        );
    }
    assert_eq!(
        bravo.cli(&["ctx", "get", "deploy/token"]).status.code(),
        Some(1)
    );
    Ok(())
}

#[test]
fn a_device_paired_again_keeps_its_grants() -> anyhow::Result<()> {
    let alpha = Node::start(Options::isolated("alpha"))?;
    let bravo = Node::start(Options::isolated("bravo"))?;
    pair(&alpha, &bravo, &["--allow", "exec,ctx"])?;
    alpha.ok(&["trust", "rm", "bravo"]);
    assert!(listed(&alpha, &bravo.peer_id).is_none());
    pair(&alpha, &bravo, &[])?;
    let again = listed(&alpha, &bravo.peer_id).expect("a member again");
    assert_eq!(again["allow"], serde_json::json!(["exec", "ctx"]));
    // A new pairing that says otherwise wins.
    alpha.ok(&["trust", "rm", "bravo"]);
    pair(&alpha, &bravo, &["--allow", "ctx"])?;
    let third = listed(&alpha, &bravo.peer_id).expect("a member again");
    assert_eq!(third["allow"], serde_json::json!(["ctx"]));
    Ok(())
}
