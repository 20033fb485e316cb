//! `loopsy peers forget`: a device that is not a member leaves the list at once; a member
//! is refused, with what to do first.

use std::time::Duration;

use loopsy_tests::{
    node::{Node, Options},
    wait_for,
};

/// `loopsy ARGS..` against `node`: exit code, stdout and stderr.
fn run(node: &Node, args: &[&str]) -> (i32, String, String) {
    let out = node.cli(args);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[test]
fn a_revoked_device_is_forgotten_and_a_member_is_refused_with_what_to_do() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    let b_id = b.peer_id.clone();

    let (code, _, err) = run(&a, &["peers", "forget", "bravo"]);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "loopsy: bravo is a member of the mesh: revoke it first (`loopsy trust rm bravo`), \
             then `loopsy peers forget` drops it from the list\n"
        )
    );
    assert!(a.peer(&b_id).is_some_and(|p| p["paired"] == true));
    let (code, _, err) = run(&a, &["peers", "forget", "zulu"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "loopsy: no device `zulu` is listed\n")
    );

    // Revoked, and gone: still listed (as a stranger) until forgotten.
    a.ok(&["trust", "rm", "bravo"]);
    b.stop()?;
    // A QUIC connection whose closing packet was lost (a loaded machine) ends only at its
    // idle timeout, 10 s after bravo's last word.
    wait_for(
        "bravo to be listed offline",
        Duration::from_secs(20),
        || {
            a.peer(&b_id)
                .filter(|p| p["paired"] == false && p["online"] == false)
        },
    )?;
    let (code, out, err) = run(&a, &["peers", "forget", &b_id[..20]]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("forgot bravo ({b_id}); it is listed again if it connects or is seen on the LAN\n")
    );
    assert!(a.peer(&b_id).is_none(), "{:?}", a.peers());
    Ok(())
}
