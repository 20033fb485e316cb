//! `loopsy-relay` runs, prints an address with its peer ID that a node can dial, keeps its
//! identity across restarts, lets only its allowlist in when it has one, and names what is
//! wrong with a broken config. (Reservations, circuits and hole punching through it are
//! tested in the NAT lab, `nat.rs`.)

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use loopsy_mesh::{Config, Keypair, Link, Mesh, Multiaddr};
use loopsy_tests::{bin, temp::TempDir, tls::TestCertificate};

struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the relay and returns it with the first TCP address it prints.
fn start_relay(home: &std::path::Path) -> (Relay, Multiaddr) {
    start_relay_on(home, "/ip4/127.0.0.1/tcp/0")
}

/// Starts the relay listening on `listen` and returns it with the first address it prints.
fn start_relay_on(home: &std::path::Path, listen: &str) -> (Relay, Multiaddr) {
    start_relay_with(home, &["--listen", listen])
}

/// Starts the relay with `args` and returns it with the first address it prints.
fn start_relay_with(home: &std::path::Path, args: &[&str]) -> (Relay, Multiaddr) {
    let mut child = Command::new(bin::loopsy_relay())
        .arg("--home")
        .arg(home)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start loopsy-relay");
    let stdout = child.stdout.take().expect("stdout");
    let relay = Relay(child);
    let addr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("listening ").map(str::to_owned))
        .expect("the relay prints its address");
    (relay, addr.parse().expect("a multiaddr"))
}

/// The TCP port of a relay's address.
fn tcp_port(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a TCP port")
}

/// A mesh node that dials `addr` and says whether it is connected to `relay` a moment
/// after the dial (a refused device may see its connection up for an instant).
async fn connects(addr: &Multiaddr, relay: libp2p::PeerId, keypair: Keypair) -> bool {
    let (mesh, _task) = Mesh::start(Config {
        keypair,
        name: "node".into(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        mdns: false,
        relays: Vec::new(),
        site: None,
        upnp: false,
        natpmp: false,
    })
    .expect("mesh");
    let _ = mesh.dial(addr.clone()).await.expect("mesh");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let peers = mesh.peers().await.expect("peers");
    peers
        .iter()
        .any(|p| p.peer_id == relay && p.link == Link::Direct)
}

#[tokio::test]
async fn a_private_relay_lets_only_its_allowlist_in() {
    let dir = TempDir::new("private-relay");
    let member = Keypair::generate_ed25519();
    let allowed = member.public().to_peer_id();
    std::fs::create_dir_all(dir.path()).expect("home");
    std::fs::write(
        dir.path().join("relay.toml"),
        format!("[access]\nallow = [\"{allowed}\"]\n"),
    )
    .expect("config");
    let (_relay, addr) = start_relay(dir.path());
    let relay_id = match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(id)) => id,
        _ => panic!("address ends in /p2p/<id>: {addr}"),
    };
    assert!(
        connects(&addr, relay_id, member).await,
        "a device on the allowlist connects"
    );
    assert!(
        !connects(&addr, relay_id, Keypair::generate_ed25519()).await,
        "a stranger does not"
    );
}

/// A relay listening on WebSocket serves the web app on the same port, and carries the
/// mesh there: a node reaches it over WebSocket.
#[tokio::test]
async fn a_relay_on_websocket_serves_the_app_and_takes_devices() {
    use std::io::{Read, Write};
    let dir = TempDir::new("ws-relay");
    let (_relay, addr) = start_relay_on(dir.path(), "/ip4/127.0.0.1/tcp/0/ws");
    assert!(addr.to_string().contains("/ws/p2p/"), "{addr}");
    let port = tcp_port(&addr);
    let mut http = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    http.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    http.write_all(b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n")
        .expect("request");
    let mut page = String::new();
    http.read_to_string(&mut page).expect("answer");
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("frame-ancestors 'none'"), "{page}");
    assert!(page.contains("app.js"), "{page}");

    let relay_id = match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(id)) => id,
        _ => panic!("address ends in /p2p/<id>: {addr}"),
    };
    assert!(
        connects(&addr, relay_id, Keypair::generate_ed25519()).await,
        "a device connects over WebSocket"
    );
}

/// With a certificate, a `/tls/ws` listener serves the app over HTTPS (checked by an
/// independent TLS client against the certificate) and says so in the address it prints;
/// a plain request on that port gets no answer; without a certificate the relay refuses
/// to start, saying what it needs.
#[test]
fn a_relay_with_a_certificate_serves_the_app_over_https() -> anyhow::Result<()> {
    let dir = TempDir::new("tls-relay");
    let cert = TestCertificate::new(&dir.path().join("tls"), &["relay.test", "127.0.0.1"])?;
    let (cert_file, key_file) = (cert.cert.to_string_lossy(), cert.key.to_string_lossy());
    let (_relay, addr) = start_relay_with(
        &dir.path().join("relay"),
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0/tls/ws",
            "--tls-cert",
            &cert_file,
            "--tls-key",
            &key_file,
        ],
    );
    assert!(addr.to_string().contains("/tls/ws/p2p/"), "{addr}");
    let port = tcp_port(&addr);

    let page = cert.request(
        &format!("127.0.0.1:{port}"),
        "relay.test",
        "GET / HTTP/1.1\r\nHost: relay.test\r\n\r\n",
    )?;
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("frame-ancestors 'none'"), "{page}");
    assert!(page.contains("app.js"), "{page}");

    use std::io::{Read, Write};
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port))?;
    plain.set_read_timeout(Some(Duration::from_secs(10)))?;
    plain.write_all(b"GET / HTTP/1.1\r\nHost: relay.test\r\n\r\n")?;
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("app.js"),
        "the TLS port serves the app in plain text"
    );

    let refused = Command::new(bin::loopsy_relay())
        .arg("--home")
        .arg(dir.path().join("relay"))
        .args(["--listen", "/ip4/127.0.0.1/tcp/0/tls/ws"])
        .output()?;
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("--tls-cert"), "{said}");
    Ok(())
}

#[test]
fn a_relay_with_a_broken_config_says_what_is_wrong() {
    let dir = TempDir::new("bad-relay");
    std::fs::create_dir_all(dir.path()).expect("home");
    std::fs::write(
        dir.path().join("relay.toml"),
        "[limits]\ncircuit_secs = 0\n",
    )
    .expect("config");
    let out = Command::new(bin::loopsy_relay())
        .arg("--home")
        .arg(dir.path())
        .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
        .output()
        .expect("run loopsy-relay");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("relay.toml") && said.contains("circuit_secs"),
        "{said}"
    );
}

#[tokio::test]
async fn a_node_connects_to_the_printed_address() {
    let dir = TempDir::new("relay");
    let (relay, addr) = start_relay(dir.path());
    let relay_id = match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(id)) => id,
        _ => panic!("address ends in /p2p/<id>: {addr}"),
    };

    let (mesh, _task) = Mesh::start(Config {
        keypair: Keypair::generate_ed25519(),
        name: "node".into(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        mdns: false,
        relays: Vec::new(),
        site: None,
        upnp: false,
        natpmp: false,
    })
    .expect("mesh");
    mesh.dial(addr.clone()).await.expect("mesh").expect("dial");
    let mut connected = false;
    for _ in 0..100 {
        let peers = mesh.peers().await.expect("peers");
        if peers
            .iter()
            .any(|p| p.peer_id == relay_id && p.link == Link::Direct)
        {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(connected, "connected to the relay at {addr}");
    drop(relay);

    let (_again, addr_again) = start_relay(dir.path());
    assert!(
        addr_again.to_string().ends_with(&relay_id.to_string()),
        "same identity after a restart: {addr_again}"
    );
}
