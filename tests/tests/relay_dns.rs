//! Relays named by DNS, several at once: a node given two relays as `/dns4/NAME/...`
//! resolves each name (here through `/etc/hosts`: `ip netns exec NS` shows
//! `/etc/netns/NS/hosts` in its place) and holds a reservation on each.

use std::time::Duration;

use loopsy_tests::{
    netlab::{self, HostsFile, Lab},
    node::{Node, Options, Reaped},
    temp::TempDir,
    wait_for,
};

/// A host holding two relays, `relay-one.loopsy.test` and `relay-two.loopsy.test` in its
/// hosts file; all of it goes when dropped (the relays first, the namespace last).
struct TwoRelays {
    _relays: [Reaped; 2],
    _hosts: HostsFile,
    dir: TempDir,
    ns: String,
    /// Each relay's address, by name, with its peer ID.
    named: [String; 2],
    _lab: Lab,
}

impl TwoRelays {
    /// `None` when the tests are told to skip labs.
    fn start(tag: &str) -> anyhow::Result<Option<Self>> {
        let Some(mut lab) = Lab::new(tag) else {
            return Ok(None);
        };
        let ns = lab.host("box")?;
        let hosts = HostsFile::write(
            &ns,
            "127.0.0.1 localhost\n127.0.0.1 relay-one.loopsy.test\n127.0.0.1 relay-two.loopsy.test\n",
        )?;
        let dir = TempDir::new(tag);
        let relay = |name: &str, port: u16| -> anyhow::Result<(Reaped, String)> {
            let listen = [format!("/ip4/127.0.0.1/tcp/{port}")];
            let (relay, id) = netlab::relay(Some(&ns), &dir.path().join(name), &listen)?;
            let named = format!("/dns4/relay-{name}.loopsy.test/tcp/{port}/p2p/{id}");
            Ok((relay, named))
        };
        let (one, one_named) = relay("one", 4001)?;
        let (two, two_named) = relay("two", 4002)?;
        Ok(Some(Self {
            _relays: [one, two],
            _hosts: hosts,
            dir,
            ns,
            named: [one_named, two_named],
            _lab: lab,
        }))
    }
}

#[test]
fn a_node_holds_a_reservation_on_each_of_two_relays_named_by_dns() -> anyhow::Result<()> {
    let Some(relays) = TwoRelays::start("relay-dns")? else {
        return Ok(());
    };
    let (ns, named) = (&relays.ns, &relays.named);
    let node = Node::start(
        Options::named("alpha")
            .netns(ns)
            .args(&["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(&["--relay", &named[0], "--relay", &named[1]]),
    )?;
    let reserved = wait_for(
        "a reservation on both relays",
        Duration::from_secs(30),
        || node.relay_reservations().filter(|r| r.len() == 2),
    )?;
    for name in named {
        assert!(reserved.contains(name), "{name} not in {reserved:?}");
    }
    Ok(())
}

#[test]
fn sighup_moves_the_reservation_to_the_relay_now_in_the_config() -> anyhow::Result<()> {
    let Some(relays) = TwoRelays::start("relay-reload")? else {
        return Ok(());
    };
    let [one, two] = &relays.named;
    let home = relays.dir.path().join("alpha");
    std::fs::create_dir_all(&home)?;
    let config = |relay: &str| format!("relays = [\"{relay}\"]\n");
    std::fs::write(home.join("config.toml"), config(one))?;
    let node = Node::start(
        Options::named("alpha")
            .netns(&relays.ns)
            .home(&home)
            .args(&["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"]),
    )?;
    wait_for(
        "a reservation on relay one",
        Duration::from_secs(30),
        || (node.relay_reservations()? == [one.clone()]).then_some(()),
    )?;

    std::fs::write(home.join("config.toml"), config(two))?;
    loopsy_tests::node::signal(node.pid(), "HUP");
    wait_for(
        "the reservation to move to relay two",
        Duration::from_secs(30),
        || (node.relay_reservations()? == [two.clone()]).then_some(()),
    )?;
    Ok(())
}
