//! Two real `loopsy node` processes on a real LAN (two network namespaces joined by a
//! bridge) find each other by mDNS, with no flags but their names.

use std::time::Duration;

use loopsy_tests::{
    netlab::Lab,
    node::{Node, Options},
    wait_for,
};

#[test]
fn nodes_on_one_lan_find_each_other_by_mdns() -> anyhow::Result<()> {
    let Some(mut lab) = Lab::new("mdns") else {
        return Ok(());
    };
    let a_ns = lab.host("a")?;
    let b_ns = lab.host("b")?;
    lab.lan(
        "lan",
        &[
            (&a_ns, "eth0", "10.77.0.1/24"),
            (&b_ns, "eth0", "10.77.0.2/24"),
        ],
    )?;
    // Declared after the lab, so they stop before its namespaces go.
    let a = Node::start(Options::named("alpha").netns(&a_ns))?;
    let b = Node::start(Options::named("bravo").netns(&b_ns))?;

    for (me, other) in [(&a, &b), (&b, &a)] {
        // mDNS finds it, and it is dialled: online (connected) and named within moments.
        let seen = wait_for(
            &format!(
                "{} to list {} as online, connected and named",
                me.name, other.name
            ),
            Duration::from_secs(20),
            || {
                me.peer(&other.peer_id).filter(|p| {
                    p["online"] == true && p["connection"] == "direct" && p["name"].is_string()
                })
            },
        )?;
        assert_eq!(seen["name"], other.name.as_str(), "{seen}");
        assert_eq!(seen["paired"], false, "discovery alone pairs nothing");
        assert_eq!(seen["connection"], "direct");
        let addrs = seen["addrs"].as_array().expect("addrs");
        assert!(
            addrs
                .iter()
                .any(|a| a.as_str().is_some_and(|a| a.contains("/ip4/10.77.0."))),
            "the peer's LAN address is known: {seen}"
        );
    }

    // A node that stops is no longer online for the other within seconds, though its
    // mDNS announcement runs for a minute more: online means connected.
    let b_id = b.peer_id.clone();
    assert!(b.stop()?.success(), "SIGTERM stops a node cleanly");
    wait_for(
        "alpha to see bravo offline",
        // At once, normally; the margin is for a busy machine. mDNS alone would keep it
        // online for 20 s or more.
        Duration::from_secs(15),
        || {
            a.peer(&b_id)
                .filter(|p| p["online"] == false && p["connection"] == "none")
        },
    )?;
    // And leaves the list when told to, not a minute later.
    let forgot = a.cli(&["peers", "forget", "bravo"]);
    assert!(forgot.status.success(), "{forgot:?}");
    assert!(a.peer(&b_id).is_none(), "{:?}", a.peers());
    Ok(())
}
