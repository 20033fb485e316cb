//! Relays named by DNS, several at once: a node given two relays as `/dns4/NAME/...`
//! resolves each name (here through `/etc/hosts`: `ip netns exec NS` shows
//! `/etc/netns/NS/hosts` in its place) and holds a reservation on each.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use loopsy_tests::{
    netlab::{self, Lab},
    node::{Node, Options, Reaped},
    temp::TempDir,
    wait_for,
};

/// A relay in `ns` on 127.0.0.1:`port`; returns it with its peer ID.
fn relay(ns: &str, home: &Path, port: u16) -> anyhow::Result<(Reaped, String)> {
    netlab::relay(Some(ns), home, &[format!("/ip4/127.0.0.1/tcp/{port}")])
}

/// `/etc/netns/NS/hosts`, removed when dropped.
struct Hosts(PathBuf);

impl Hosts {
    fn write(ns: &str, text: &str) -> anyhow::Result<Self> {
        let dir = Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("hosts"), text)?;
        Ok(Self(dir))
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_node_holds_a_reservation_on_each_of_two_relays_named_by_dns() -> anyhow::Result<()> {
    let Some(mut lab) = Lab::new("relay-dns") else {
        return Ok(());
    };
    let ns = lab.host("box")?;
    let _hosts = Hosts::write(
        &ns,
        "127.0.0.1 localhost\n127.0.0.1 relay-one.loopsy.test\n127.0.0.1 relay-two.loopsy.test\n",
    )?;
    let dir = TempDir::new("relay-dns");
    let (_one, one_id) = relay(&ns, &dir.path().join("one"), 4001)?;
    let (_two, two_id) = relay(&ns, &dir.path().join("two"), 4002)?;
    let named = [
        format!("/dns4/relay-one.loopsy.test/tcp/4001/p2p/{one_id}"),
        format!("/dns4/relay-two.loopsy.test/tcp/4002/p2p/{two_id}"),
    ];
    let node = Node::start(
        Options::named("alpha")
            .netns(&ns)
            .args(&["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(&["--relay", &named[0], "--relay", &named[1]]),
    )?;
    let reserved = wait_for(
        "a reservation on both relays",
        Duration::from_secs(30),
        || node.relay_reservations().filter(|r| r.len() == 2),
    )?;
    for name in &named {
        assert!(reserved.contains(name), "{name} not in {reserved:?}");
    }
    Ok(())
}

#[test]
fn sighup_moves_the_reservation_to_the_relay_now_in_the_config() -> anyhow::Result<()> {
    let Some(mut lab) = Lab::new("relay-reload") else {
        return Ok(());
    };
    let ns = lab.host("box")?;
    let _hosts = Hosts::write(
        &ns,
        "127.0.0.1 localhost\n127.0.0.1 relay-one.loopsy.test\n127.0.0.1 relay-two.loopsy.test\n",
    )?;
    let dir = TempDir::new("relay-reload");
    let (_one, one_id) = relay(&ns, &dir.path().join("one"), 4001)?;
    let (_two, two_id) = relay(&ns, &dir.path().join("two"), 4002)?;
    let one = format!("/dns4/relay-one.loopsy.test/tcp/4001/p2p/{one_id}");
    let two = format!("/dns4/relay-two.loopsy.test/tcp/4002/p2p/{two_id}");
    let home = dir.path().join("alpha");
    std::fs::create_dir_all(&home)?;
    let config = |relay: &str| format!("relays = [\"{relay}\"]\n");
    std::fs::write(home.join("config.toml"), config(&one))?;
    let node = Node::start(Options::named("alpha").netns(&ns).home(&home).args(&[
        "--no-mdns",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
    ]))?;
    wait_for(
        "a reservation on relay one",
        Duration::from_secs(30),
        || (node.relay_reservations()? == [one.clone()]).then_some(()),
    )?;

    std::fs::write(home.join("config.toml"), config(&two))?;
    loopsy_tests::node::signal(node.pid(), "HUP");
    wait_for(
        "the reservation to move to relay two",
        Duration::from_secs(30),
        || (node.relay_reservations()? == [two.clone()]).then_some(()),
    )?;
    Ok(())
}
