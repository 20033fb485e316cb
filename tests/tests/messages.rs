//! Messages are end-to-end encrypted: a member that carries a message for another holds
//! only ciphertext, and the recipient still reads it when only that carrier can bring it.

use std::{fs, time::Duration};

use loopsy_tests::{
    node::{Node, Options},
    temp::TempDir,
    wait_for,
};
use serde_json::Value;

fn inbox(node: &Node) -> Vec<Value> {
    node.json(&["msg", "inbox", "--json"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn knows(node: &Node, other: &Node) -> Option<()> {
    node.trusted()
        .iter()
        .any(|p| p["peer_id"] == other.peer_id.as_str())
        .then_some(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_carrier_holds_only_ciphertext_and_the_recipient_reads_it() -> anyhow::Result<()> {
    let home_b = TempDir::new("bravo-home");
    let b_options = Options::isolated("bravo").home(&home_b.path().join("home"));
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(b_options.clone())?;
    let c = Node::start(Options::isolated("charlie"))?;
    a.pair_with(&b)?;
    a.pair_with(&c)?;
    // Bravo must know where charlie is to reach it after its restart, with alpha gone.
    wait_for("bravo to know charlie", Duration::from_secs(30), || {
        knows(&b, &c)
    })?;
    wait_for("charlie to know bravo", Duration::from_secs(30), || {
        knows(&c, &b)
    })?;
    b.stop()?;

    let text = "the launch code is 7-FALCON-19";
    let sent = a.json(&["msg", "send", "bravo", text, "--json"])?;
    assert_eq!(sent["delivered"], false, "bravo is down: {sent}");
    let id = sent["id"].as_str().unwrap_or_default().to_owned();
    let key = format!("m/{}/{id}", a.peer_id);
    let state = c.home().join("messages.cbor");
    let carried = wait_for("the message on charlie", Duration::from_secs(30), || {
        fs::read(&state)
            .ok()
            .filter(|bytes| contains(bytes, key.as_bytes()))
    })?;
    assert!(
        !contains(&carried, text.as_bytes()),
        "charlie, a carrier, holds the text in the clear"
    );
    assert!(
        !contains(&carried, b"7-FALCON-19"),
        "charlie, a carrier, holds part of the text in the clear"
    );
    assert!(inbox(&c).is_empty(), "charlie's own inbox stays empty");

    // Only charlie can bring it now.
    a.stop()?;
    let b = Node::start(b_options)?;
    let received = wait_for(
        "the message in bravo's inbox",
        Duration::from_secs(60),
        || inbox(&b).into_iter().find(|m| m["id"] == id.as_str()),
    )?;
    assert_eq!(received["text"], text);
    assert_eq!(received["from"], "alpha");
    Ok(())
}
