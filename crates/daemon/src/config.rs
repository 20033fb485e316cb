//! The node's settings: `config.toml` in its home, written with defaults on first start and
//! never silently reset: a file that does not parse is an error that names it.

use std::{fs, io, path::PathBuf};

use loopsy_mesh::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::{Home, fsutil};

/// The port a node listens on by default (TCP and QUIC); a taken port falls back to any.
pub const DEFAULT_PORT: u16 = 7717;

/// The port of the WebSocket listener browsers dial, which also serves the web app.
pub const DEFAULT_WEB_PORT: u16 = 7718;

/// What `config.toml` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The device name shown to other devices.
    #[serde(default = "host_name")]
    pub name: String,
    /// Addresses to listen on.
    #[serde(default = "default_listen")]
    pub listen: Vec<Multiaddr>,
    /// Find and announce devices on the LAN by mDNS.
    #[serde(default = "yes")]
    pub mdns: bool,
    /// Ask the home router to forward a port to this node (UPnP IGD).
    #[serde(default = "yes")]
    pub upnp: bool,
    /// Ask the default gateway to forward a port to this node by PCP, or NAT-PMP.
    #[serde(default = "yes")]
    pub natpmp: bool,
    /// Relays to be reachable through from other networks (`loopsy-relay` prints the
    /// address, ending in `/p2p/<relay id>`).
    #[serde(default)]
    pub relays: Vec<Multiaddr>,
    /// Trust devices that another member paired with (as Syncthing's introducer does).
    #[serde(default = "yes")]
    pub accept_introductions: bool,
    /// What members may do here unless the trust store says otherwise for one of them.
    #[serde(default)]
    pub grants: Grants,
    /// Which programs members may run here, where, and for how long.
    #[serde(default)]
    pub exec: crate::exec::policy::Policy,
    /// Where members may copy files from and to.
    #[serde(default)]
    pub files: crate::transfer::policy::Policy,
    /// Where this device delivers the mesh's attention events: `desktop`, `webhook`.
    #[serde(default)]
    pub notify: crate::attention::deliver::Settings,
    /// Sessions: how large a recording (`session new --record`) may grow.
    #[serde(default)]
    pub sessions: crate::session::recorder::Settings,
}

/// Default grants for members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Capabilities: exec, shell, files, sessions, ctx, msg (or all, none).
    pub allow: Vec<String>,
}

impl Default for Grants {
    /// Everything: a mesh joins one person's own devices, and each was paired on purpose.
    fn default() -> Self {
        Self {
            allow: vec!["all".into()],
        }
    }
}

fn yes() -> bool {
    true
}

/// The config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path} is not a valid config file: {reason}; fix it, or move it away to start over with defaults"
    )]
    Invalid { path: PathBuf, reason: Invalid },
}

/// What is wrong with config text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{0}")]
    Toml(String),
    #[error("grants.allow: {0}")]
    Grants(#[from] crate::caps::UnknownCapability),
    #[error("relays: {0}")]
    Relay(#[from] BadRelay),
    #[error("notify.webhook: {0}")]
    Webhook(#[from] crate::attention::deliver::BadWebhook),
    #[error("sessions.{0}")]
    Recordings(#[from] crate::session::recorder::BadBound),
}

/// A relay address a node cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRelay {
    #[error("{0} does not end in /p2p/<the relay's peer ID>; use the address loopsy-relay prints")]
    NoPeerId(Multiaddr),
    #[error(
        "{0} does not start with an IP address or a name (/ip4/..., /ip6/..., /dns4/..., \
         /dns6/... or /dns/...)"
    )]
    NoIp(Multiaddr),
}

impl Config {
    /// Defaults for a new node: the machine's host name, every interface, ports 7717 and 7718.
    pub fn defaults() -> Self {
        Self {
            name: host_name(),
            listen: default_listen(),
            mdns: true,
            upnp: true,
            natpmp: true,
            relays: Vec::new(),
            accept_introductions: true,
            grants: Grants::default(),
            exec: crate::exec::policy::Policy::default(),
            files: crate::transfer::policy::Policy::default(),
            notify: crate::attention::deliver::Settings::default(),
            sessions: crate::session::recorder::Settings::default(),
        }
    }

    /// Parses and checks config text: any text gives a config or says what is wrong.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let config: Self =
            toml::from_str(text).map_err(|e| Invalid::Toml(e.message().to_owned()))?;
        crate::caps::parse(&config.grants.allow)?;
        check_relays(&config.relays)?;
        if let Some(url) = &config.notify.webhook {
            crate::attention::deliver::Webhook::parse(url)?;
        }
        config.sessions.check()?;
        Ok(config)
    }

    /// Loads the home's config, writing the defaults first if there is none.
    pub fn load_or_create(home: &Home) -> Result<Self, ConfigError> {
        let path = home.config();
        let io_err = |source| ConfigError::Io {
            path: path.clone(),
            source,
        };
        match fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map_err(|reason| ConfigError::Invalid {
                path: path.clone(),
                reason,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let config = Self::defaults();
                let text = toml::to_string(&config).map_err(|e| io_err(io::Error::other(e)))?;
                let text = format!("{HEADER}{text}");
                fsutil::write_atomic(&path, text.as_bytes(), 0o600).map_err(io_err)?;
                Ok(config)
            }
            Err(e) => Err(io_err(e)),
        }
    }
}

const HEADER: &str = "\
# Loopsy node settings. `loopsy node` flags override these for one run.
# name:   this device's name, as other devices see it
# listen: libp2p addresses to listen on (a taken port falls back to a free one); a
#         /tcp/N/ws address is for browsers and serves the web app on the same port
# mdns:   find and announce devices on the local network
# upnp:   ask the home router to forward a port here (UPnP), so that devices elsewhere
#         connect directly even through a NAT that defeats hole punching
# natpmp: ask the same of the default gateway by PCP, or NAT-PMP (Apple's routers,
#         miniupnpd): whichever protocol the router answers maps the port
# relays: loopsy-relay addresses (ending in /p2p/<id>) to be reachable through from
#         other networks, a reservation on each, e.g.
#         [\"/ip4/203.0.113.5/tcp/4001/p2p/12D3Koo...\", \"/dns4/relay.example.net/tcp/4001/p2p/12D3Koo...\"]
# accept_introductions: trust devices that another of your devices paired with
# [grants] allow: what your devices may do here (exec, shell, files, sessions, ctx, msg,
#         own-sessions, admit, all or none); `loopsy trust add --allow` sets it for one device
# [exec]  allow: programs they may run (names or absolute paths, \"*\" for any);
#         root: working directories must be inside it; max_secs: longest run (0: none);
#         max_running: most programs one device may run at once
# [files] read / write: directories your devices may copy from / into (`~` is home);
#         a relative PEER:PATH starts at the first one. Without `write`, a device that
#         may run programs (exec) writes under ~, any other into ~/Loopsy
# [sessions] record_max_mib: the most one recording (`session new --record`) takes, in
#         MiB (1 to 256); it stops there
";

/// Relay addresses must name the relay (a reservation is made with that peer) and give
/// its IP address or a DNS name (resolved by the system's resolver, `/etc/hosts` first).
pub fn check_relays(relays: &[Multiaddr]) -> Result<(), BadRelay> {
    use loopsy_mesh::multiaddr::Protocol;
    for relay in relays {
        if !matches!(relay.iter().last(), Some(Protocol::P2p(_))) {
            return Err(BadRelay::NoPeerId(relay.clone()));
        }
        if !matches!(
            relay.iter().next(),
            Some(
                Protocol::Ip4(_)
                    | Protocol::Ip6(_)
                    | Protocol::Dns(_)
                    | Protocol::Dns4(_)
                    | Protocol::Dns6(_)
            )
        ) {
            return Err(BadRelay::NoIp(relay.clone()));
        }
    }
    Ok(())
}

/// Every interface, IPv4 and IPv6, TCP and QUIC on the default port, and WebSocket (with
/// the web app) on the web port.
fn default_listen() -> Vec<Multiaddr> {
    [
        format!("/ip4/0.0.0.0/tcp/{DEFAULT_PORT}"),
        format!("/ip4/0.0.0.0/udp/{DEFAULT_PORT}/quic-v1"),
        format!("/ip6/::/tcp/{DEFAULT_PORT}"),
        format!("/ip6/::/udp/{DEFAULT_PORT}/quic-v1"),
        format!("/ip4/0.0.0.0/tcp/{DEFAULT_WEB_PORT}/ws"),
        format!("/ip6/::/tcp/{DEFAULT_WEB_PORT}/ws"),
    ]
    .iter()
    .filter_map(|a| a.parse().ok())
    .collect()
}

/// This machine's host name, or "loopsy" when it has none.
fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| loopsy_mesh::sanitize_name(&s))
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "loopsy".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text, TOML-like or not, is a config or an error: never a panic.
        #[test]
        fn any_text_parses_or_says_why(text in "[a-z_\\[\\]=\"'0-9./ \n{},*-]{0,300}") {
            let _ = Config::parse(&text);
        }

        /// The defaults, written and read back, are the defaults.
        #[test]
        fn written_defaults_read_back(_x in 0..1u8) {
            let text = toml::to_string(&Config::defaults()).expect("toml");
            prop_assert_eq!(Config::parse(&text).expect("parses"), Config::defaults());
        }
    }

    fn temp_home(tag: &str) -> Home {
        let dir = std::env::temp_dir().join(format!("loopsy-cfg-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let home = Home::at(dir);
        home.create().expect("home");
        home
    }

    #[test]
    fn defaults_are_written_then_read_back() {
        let home = temp_home("defaults");
        let first = Config::load_or_create(&home).expect("create");
        assert_eq!(first, Config::defaults());
        let second = Config::load_or_create(&home).expect("load");
        assert_eq!(first, second);
        fs::remove_dir_all(home.dir()).ok();
    }

    #[test]
    fn relays_are_named_by_ip_or_dns_and_end_in_their_peer_id() {
        let id = "12D3KooWQVMzxLeujssVnLhrU26J5Ud7jbDLoLZUkwxuYddFcWwq";
        let ok = |a: &str| check_relays(&[a.parse().expect("addr")]);
        for good in [
            "/ip4/203.0.113.5",
            "/ip6/2001:db8::1",
            "/dns4/relay.example.net",
            "/dns6/r.example",
            "/dns/r.example",
        ] {
            assert_eq!(ok(&format!("{good}/tcp/4001/p2p/{id}")), Ok(()), "{good}");
        }
        assert!(matches!(
            ok("/dns4/relay.example.net/tcp/4001"),
            Err(BadRelay::NoPeerId(_))
        ));
        assert!(matches!(
            ok(&format!("/tcp/4001/p2p/{id}")),
            Err(BadRelay::NoIp(_))
        ));
    }

    #[test]
    fn a_broken_file_is_an_error_and_is_left_alone() {
        let home = temp_home("broken");
        fs::write(home.config(), "name = [").expect("write");
        let err = Config::load_or_create(&home).expect_err("invalid");
        assert!(err.to_string().contains("config.toml"), "{err}");
        assert_eq!(fs::read_to_string(home.config()).expect("kept"), "name = [");
        fs::remove_dir_all(home.dir()).ok();
    }
}
