//! Stable ports. A listen address with port 0 gets any free port; the port it got is
//! saved in the home's `ports.toml` and asked for again at the next start, so that members
//! dialling the addresses they know find this device again after a restart without anyone
//! running `trust set`. A saved port that is taken by then falls back to a free one (the
//! mesh does that for every fixed port), and the new one is saved.

use std::{collections::BTreeMap, io, path::PathBuf, time::Duration};

use loopsy_mesh::{Mesh, Multiaddr, multiaddr::Protocol};
use serde::{Deserialize, Serialize};

use crate::fsutil;

/// How long after the start the bound ports are looked for.
const SETTLE: Duration = Duration::from_secs(10);

/// `ports.toml`: for each configured address with port 0, the port it got.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    port: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// The listen address as configured (or given with `--listen`), port 0.
    listen: String,
    port: u16,
}

const HEADER: &str = "\
# The ports this node got for listen addresses with port 0, asked for again at its next
# start so that other devices find it where they last saw it. Delete to take new ones.
";

/// The saved ports of a home.
#[derive(Debug)]
pub struct Ports {
    path: PathBuf,
    saved: BTreeMap<String, u16>,
}

impl Ports {
    /// Reads `path`; a missing file is no saved ports, and so is one that does not parse
    /// (it is only a hint, rewritten once the node listens).
    pub fn load(path: PathBuf) -> Self {
        let saved = match std::fs::read_to_string(&path) {
            Ok(text) => match toml::from_str::<File>(&text) {
                Ok(file) => file.port.into_iter().map(|e| (e.listen, e.port)).collect(),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "ignoring saved ports");
                    BTreeMap::new()
                }
            },
            Err(_) => BTreeMap::new(),
        };
        Self { path, saved }
    }

    /// `listen`, with each port 0 that has a saved port replaced by it.
    pub fn pin(&self, listen: &[Multiaddr]) -> Vec<Multiaddr> {
        listen
            .iter()
            .map(|addr| match self.saved.get(&addr.to_string()) {
                Some(&port) if any_port(addr) => with_port(addr, port),
                _ => addr.clone(),
            })
            .collect()
    }

    /// Takes the ports `bound` for the port-0 addresses of `listen`; true when a saved
    /// port changed, and whether every port-0 address found its port.
    fn learn(&mut self, listen: &[Multiaddr], bound: &[Multiaddr]) -> (bool, bool) {
        let mut changed = false;
        let mut complete = true;
        for addr in listen.iter().filter(|a| any_port(a)) {
            match bound.iter().find_map(|b| bound_port(addr, b)) {
                Some(port) => {
                    changed |= self.saved.insert(addr.to_string(), port) != Some(port);
                }
                None => complete = false,
            }
        }
        (changed, complete)
    }

    fn save(&self) -> io::Result<()> {
        let file = File {
            port: self
                .saved
                .iter()
                .map(|(listen, &port)| Entry {
                    listen: listen.clone(),
                    port,
                })
                .collect(),
        };
        let text = toml::to_string(&file).map_err(io::Error::other)?;
        fsutil::write_atomic(&self.path, format!("{HEADER}{text}").as_bytes(), 0o600)
    }

    /// Waits for the mesh to listen, then saves the ports it got for `listen`.
    pub async fn keep(mut self, mesh: Mesh, listen: Vec<Multiaddr>) {
        if !listen.iter().any(any_port) {
            return;
        }
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let bound = match mesh.status().await {
                Ok(status) => status.listen_addrs,
                Err(_) => return,
            };
            let (changed, complete) = self.learn(&listen, &bound);
            if changed {
                match self.save() {
                    Ok(()) => {
                        tracing::info!(path = %self.path.display(), "saved the ports this node got")
                    }
                    Err(error) => tracing::warn!(%error, "cannot save the ports this node got"),
                }
            }
            if complete || tokio::time::Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A TCP or UDP address with port 0.
fn any_port(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Protocol::Tcp(0) | Protocol::Udp(0)))
}

fn with_port(addr: &Multiaddr, port: u16) -> Multiaddr {
    addr.iter()
        .map(|p| match p {
            Protocol::Tcp(0) => Protocol::Tcp(port),
            Protocol::Udp(0) => Protocol::Udp(port),
            other => other,
        })
        .collect()
}

/// The port of `bound` when it is an address the listener of `configured` gave: the same
/// transport and IP family, and the same IP unless `configured` is unspecified (0.0.0.0
/// and :: listen on every interface).
fn bound_port(configured: &Multiaddr, bound: &Multiaddr) -> Option<u16> {
    let shape = |addr: &Multiaddr| -> Vec<String> {
        addr.iter()
            .map(|p| match p {
                Protocol::Ip4(_) => "ip4".into(),
                Protocol::Ip6(_) => "ip6".into(),
                Protocol::Tcp(_) => "tcp".into(),
                Protocol::Udp(_) => "udp".into(),
                other => other.tag().into(),
            })
            .collect()
    };
    if shape(configured) != shape(bound) {
        return None;
    }
    let mut port = None;
    for (want, got) in configured.iter().zip(bound.iter()) {
        match (want, got) {
            (Protocol::Ip4(w), Protocol::Ip4(g)) if !w.is_unspecified() && w != g => return None,
            (Protocol::Ip6(w), Protocol::Ip6(g)) if !w.is_unspecified() && w != g => return None,
            (Protocol::Tcp(0), Protocol::Tcp(p)) | (Protocol::Udp(0), Protocol::Udp(p)) => {
                port = Some(p)
            }
            _ => {}
        }
    }
    port.filter(|&p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<Multiaddr> {
        list.iter().map(|a| a.parse().expect("multiaddr")).collect()
    }

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loopsy-ports-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir.join("ports.toml")
    }

    #[test]
    fn ports_got_are_saved_and_asked_for_at_the_next_start() {
        let path = temp("roundtrip");
        let listen = addrs(&[
            "/ip4/0.0.0.0/tcp/0",
            "/ip4/0.0.0.0/udp/0/quic-v1",
            "/ip6/::/tcp/7717",
        ]);
        let bound = addrs(&[
            "/ip4/127.0.0.1/tcp/41327",
            "/ip4/10.0.0.2/tcp/41327",
            "/ip4/127.0.0.1/udp/50001/quic-v1",
            "/ip6/::1/tcp/7717",
        ]);
        let mut ports = Ports::load(path.clone());
        assert_eq!(ports.pin(&listen), listen, "nothing saved yet");
        assert_eq!(ports.learn(&listen, &bound), (true, true));
        ports.save().expect("save");

        let again = Ports::load(path.clone());
        assert_eq!(
            again.pin(&listen),
            addrs(&[
                "/ip4/0.0.0.0/tcp/41327",
                "/ip4/0.0.0.0/udp/50001/quic-v1",
                "/ip6/::/tcp/7717",
            ])
        );
        std::fs::remove_dir_all(path.parent().expect("dir")).ok();
    }

    #[test]
    fn a_port_is_taken_only_from_a_listener_of_the_same_shape() {
        let tcp4: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().expect("addr");
        for (bound, port) in [
            ("/ip4/127.0.0.1/tcp/4000", Some(4000)),
            ("/ip4/10.0.0.1/tcp/4000", None),
            ("/ip4/127.0.0.1/udp/4000/quic-v1", None),
            ("/ip6/::1/tcp/4000", None),
            ("/ip4/127.0.0.1/tcp/4000/p2p-circuit", None),
        ] {
            let bound: Multiaddr = bound.parse().expect("addr");
            assert_eq!(bound_port(&tcp4, &bound), port, "{bound}");
        }
    }

    #[test]
    fn a_damaged_file_is_no_saved_ports() {
        let path = temp("damaged");
        std::fs::write(&path, "port = [").expect("write");
        let listen = addrs(&["/ip4/0.0.0.0/tcp/0"]);
        assert_eq!(Ports::load(path.clone()).pin(&listen), listen);
        std::fs::remove_dir_all(path.parent().expect("dir")).ok();
    }
}
