//! The phone on another network (issue 22): the desktop is behind a NAT, the phone's
//! browser outside it, and the only way between them is `loopsy-relay`. The relay listens
//! on a secure WebSocket (`/tls/ws`) and is the app's HTTPS origin; `loopsy pair` links
//! there; the page pairs, lists the desktop's session and types into it through a circuit
//! on the relay, Noise end to end with the desktop's peer ID pinned.
//!
//!     alpha 192.168.1.2 ── router (NAT) 10.98.0.2 ══ relay 10.98.0.1 ══ phone 10.98.0.3
//!                                                   "relay.lab" to the phone
//!
//! The certificate is the test's own, trusted by the phone's Chromium by its key's hash
//! alone. Then the phone loses its network, and the app still opens from its service worker. A screenshot of the attached phone is left in `target/browser-artifacts/`.

use std::time::Duration;

use anyhow::Context;
use loopsy_tests::{
    browser::{Browser, PIXEL, artifacts_dir},
    netlab::{self, HostsFile, Lab, Nat, ip},
    node::{Node, Options},
    temp::TempDir,
    tls::TestCertificate,
    wait_for,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(45);
const RELAY_IP: &str = "10.98.0.1";
const RELAY_NAME: &str = "relay.lab";

#[test]
fn a_phone_outside_the_nat_pairs_and_types_through_the_relay() -> anyhow::Result<()> {
    let Some(mut lab) = Lab::new("webrelay") else {
        return Ok(());
    };
    let relay_ns = lab.host("relay")?;
    let router_ns = lab.host("router")?;
    let alpha_ns = lab.host("alpha")?;
    let phone_ns = lab.host("phone")?;
    lab.lan(
        "net",
        &[
            (&relay_ns, "eth0", &format!("{RELAY_IP}/24")),
            (&router_ns, "wan0", "10.98.0.2/24"),
            (&phone_ns, "eth0", "10.98.0.3/24"),
        ],
    )?;
    lab.subnet("la", (&router_ns, "lan0"), &alpha_ns, "192.168.1")?;
    lab.nat_router(&router_ns, "lan0", "wan0", Nat::Cone)?;
    let _names = HostsFile::write(
        &phone_ns,
        &format!("127.0.0.1 localhost\n{RELAY_IP} {RELAY_NAME}\n"),
    )?;

    // The relay: TCP for devices, a secure WebSocket for browsers, announced by name.
    let dir = TempDir::new("webrelay");
    let cert = TestCertificate::new(&dir.path().join("tls"), &[RELAY_NAME])?;
    let (cert_file, key_file) = (cert.cert.to_string_lossy(), cert.key.to_string_lossy());
    let (_relay, relay_id) = netlab::relay_with(
        Some(&relay_ns),
        &dir.path().join("relay"),
        &[format!("/ip4/{RELAY_IP}/tcp/4001")],
        &[
            "--listen",
            &format!("/ip4/{RELAY_IP}/tcp/443/tls/ws"),
            "--external-addr",
            &format!("/dns4/{RELAY_NAME}/tcp/443/tls/ws"),
            "--tls-cert",
            &cert_file,
            "--tls-key",
            &key_file,
        ],
    )?;

    // Alpha, behind the NAT, reserves on the relay over TCP and hands out the circuit
    // through the relay's secure WebSocket, where a browser can reach it.
    let alpha = Node::start(Options::named("alpha").netns(&alpha_ns).args(&[
        "--no-mdns",
        "--listen",
        "/ip4/0.0.0.0/tcp/0",
        "--relay",
        &format!("/ip4/{RELAY_IP}/tcp/4001/p2p/{relay_id}"),
    ]))?;
    let web_circuit = format!("/dns4/{RELAY_NAME}/tcp/443/tls/ws/p2p/{relay_id}/p2p-circuit");
    wait_for(
        "alpha's circuit through the relay's WebSocket",
        WAIT,
        || {
            let status = alpha.json(&["status", "--json"]).ok()?;
            let relayed = status["relayed_addrs"].as_array()?;
            relayed
                .iter()
                .any(|a| a.as_str().is_some_and(|a| a.starts_with(&web_circuit)))
                .then_some(())
        },
    )?;
    alpha.ok(&[
        "session",
        "new",
        "--name",
        "desk",
        "--",
        "sh",
        "-c",
        "echo desk-ready; exec sh",
    ]);

    // The link is to the relay, over HTTPS: the only origin the phone can reach.
    let mut invite = alpha.invite(&["--ttl", "120s"])?;
    let url = invite.url.clone().context("pair --json gives a url")?;
    assert!(
        url.starts_with(&format!("https://{RELAY_NAME}/#code=")),
        "{url}"
    );
    let mut browser = Browser::start_trusting(Some(&phone_ns), Some(&cert.spki))?;
    browser.open("phone", &url, PIXEL)?;
    let secure = browser.eval("phone", "window.isSecureContext")?;
    assert_eq!(
        secure,
        Value::Bool(true),
        "an HTTPS page is a secure context"
    );
    let me = browser.pair_from_link("phone", &mut invite, &alpha.peer_id)?;

    // The session, attached and typed into through the circuit.
    browser.wait_until_listed("phone", &["desk"])?;
    browser.click("phone", "session", Some("desk"))?;
    browser.wait_screen("phone", "desk-ready", WAIT)?;
    browser.click("phone", "terminal", None)?;
    browser.type_text("phone", "echo web-$((6*7))")?;
    browser.press("phone", "Enter")?;
    browser.wait_screen("phone", "web-42", WAIT)?;
    let shot = artifacts_dir().join("browser-relay-attached-412x915.png");
    browser.screenshot("phone", &shot)?;
    eprintln!("screenshot: {}", shot.display());

    // Alpha sees the browser itself, come through the relay: the relay only carried it.
    let peer = alpha.peer(&me).context("alpha lists the browser")?;
    assert_eq!(peer["connection"], "relayed", "{peer}");

    // With no network at all, the app still opens (its service worker kept it), with its
    // key and its paired device.
    wait_for("the service worker to control the page", WAIT, || {
        let controlled = browser
            .eval("phone", "navigator.serviceWorker.controller !== null")
            .ok()?;
        (controlled == Value::Bool(true)).then_some(())
    })?;
    ip(&["-n", &phone_ns, "link", "set", "eth0", "down"])?;
    browser.reload("phone")?;
    assert_eq!(browser.page_peer_id("phone")?, me, "the app opened offline");
    // The list is drawn from the page's storage once it has loaded, not with the page.
    wait_for("the page to list its paired device offline", WAIT, || {
        let devices = browser.texts("phone", "device").ok()?;
        devices.iter().any(|d| d.contains("alpha")).then_some(())
    })?;
    ip(&["-n", &phone_ns, "link", "set", "eth0", "up"])?;
    Ok(())
}
