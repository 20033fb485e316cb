//! Test networks from Linux network namespaces: hosts, LANs joined by a bridge (kept in a
//! namespace of its own, so the root namespace is never touched), and NAT routers.
//!
//! Everything a [`Lab`] makes is named `lpy-<pid>-<tag>-...` and removed on drop, also when
//! the test fails; namespaces left by a test process that was killed are removed by the
//! next lab. Tests that need a lab fail with a clear message where namespaces cannot be
//! made, unless `LOOPSY_SKIP_NETNS=1` asks to skip them (CI does not set it).

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use anyhow::Context;

use crate::{bin, node::Reaped};

/// The environment variable that skips network-namespace tests where they cannot run.
pub const SKIP_VAR: &str = "LOOPSY_SKIP_NETNS";

/// The port mapping daemon (Debian's miniupnpd-nftables): UPnP IGD, PCP, NAT-PMP.
const MINIUPNPD: &str = "/usr/sbin/miniupnpd";

/// The port mapping protocols a lab router's miniupnpd answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    /// UPnP IGD only.
    Upnp,
    /// PCP and NAT-PMP (on one port), no UPnP.
    PcpAndNatPmp,
    /// NAT-PMP only, no UPnP.
    NatPmp,
}

#[derive(Debug)]
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
}

impl Lab {
    /// A new, empty lab; `None` when the tests are told to skip labs. Panics with what is
    /// missing when namespaces cannot be made.
    pub fn new(tag: &str) -> Option<Self> {
        if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
            eprintln!("skipped: {SKIP_VAR}=1");
            return None;
        }
        if let Err(why) = check_support() {
            panic!(
                "this test builds a network in Linux network namespaces and cannot here: {why}. \
                 Run it as root on Linux with iproute2 installed (apt-get install -y iproute2 \
                 nftables), or set {SKIP_VAR}=1 to skip such tests."
            );
        }
        remove_stale();
        Some(Self {
            prefix: format!("lpy-{}-{tag}", std::process::id()),
            namespaces: Vec::new(),
        })
    }

    /// Adds a host: a namespace with its loopback up. Returns the namespace's name.
    pub fn host(&mut self, name: &str) -> anyhow::Result<String> {
        let ns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Joins hosts in one LAN through a bridge: each member is `(namespace, interface,
    /// address/prefix)`; the interface is made in the member's namespace.
    pub fn lan(&mut self, name: &str, members: &[(&str, &str, &str)]) -> anyhow::Result<()> {
        let bridge_ns = self.host(&format!("{name}-sw"))?;
        ip(&["-n", &bridge_ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge_ns, "link", "set", "br0", "up"])?;
        for (i, (ns, iface, cidr)) in members.iter().enumerate() {
            let port = format!("p{i}");
            ip(&[
                "-n", ns, "link", "add", iface, "type", "veth", "peer", "name", &port, "netns",
                &bridge_ns,
            ])?;
            ip(&[
                "-n", &bridge_ns, "link", "set", &port, "master", "br0", "up",
            ])?;
            ip(&["-n", ns, "addr", "add", cidr, "dev", iface])?;
            ip(&["-n", ns, "link", "set", iface, "up"])?;
            // mDNS sends to 224.0.0.251: route multicast out of the LAN interface (appended:
            // a host on two LANs gets one such route per interface).
            ip(&["-n", ns, "route", "append", "224.0.0.0/4", "dev", iface])?;
        }
        Ok(())
    }

    /// Makes host `ns` a home router: it forwards from `lan` out of `wan` behind NAT, and
    /// drops what comes in unasked, as home routers do. A cone NAT keeps a LAN host's
    /// port and maps it the same whoever it talks to (hole punching works through it); a
    /// symmetric one picks a random port for every new flow (punching fails, as it should).
    pub fn nat_router(&self, ns: &str, lan: &str, wan: &str, nat: Nat) -> anyhow::Result<()> {
        run_ok(self.run(ns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?)?;
        let masquerade = match nat {
            Nat::Cone => "masquerade",
            Nat::Symmetric => "masquerade random,fully-random",
        };
        // An unasked packet for the router itself is dropped before conntrack confirms it:
        // else a punch that arrives before this side's own outbound packet would take the
        // mapping, and the outbound flow would get another port (see shared/NETLAB.md).
        let rules = format!(
            "table ip nat {{
               chain postrouting {{
                 type nat hook postrouting priority 100;
                 oifname \"{wan}\" {masquerade};
               }}
             }}
             table ip filter {{
               chain forward {{
                 type filter hook forward priority 0; policy drop;
                 ct state established,related accept;
                 iifname \"{lan}\" accept;
               }}
               chain incoming {{
                 type filter hook input priority 0; policy accept;
                 iifname \"{wan}\" ct state new drop;
               }}
             }}
             "
        );
        nft(ns, &rules)
    }

    /// Runs a real `miniupnpd` speaking UPnP IGD only on router `ns`: see [`Lab::miniupnpd`].
    pub fn upnp(&self, ns: &str, lan: &str, wan: &str, dir: &Path) -> anyhow::Result<Reaped> {
        self.miniupnpd(ns, lan, wan, dir, Speaks::Upnp)
    }

    /// Runs a real `miniupnpd` (nftables backend) on router `ns`, made by [`Lab::nat_router`]:
    /// devices on `lan` may ask it (by the protocols in `speaks`) to forward a port of its
    /// `wan` address to them. Its config, pid file and log go in `dir`; it is killed when
    /// the returned process is dropped (and with the namespace). The `wan` address must
    /// look public: miniupnpd maps nothing behind a private one, nor would a node use
    /// such a mapping.
    pub fn miniupnpd(
        &self,
        ns: &str,
        lan: &str,
        wan: &str,
        dir: &Path,
        speaks: Speaks,
    ) -> anyhow::Result<Reaped> {
        anyhow::ensure!(
            Path::new(MINIUPNPD).exists(),
            "{MINIUPNPD} is missing: apt-get install -y miniupnpd-nftables"
        );
        // miniupnpd adds its rules to chains of its own; the router's forward chain, which
        // drops what comes in unasked, lets in what a mapping forwards.
        nft(
            ns,
            &format!(
                "table inet miniupnpd {{
                   chain forward {{
                     type filter hook forward priority -1; policy accept;
                     jump upnp_forward;
                   }}
                   chain upnp_forward {{
                   }}
                   chain prerouting {{
                     type nat hook prerouting priority -100; policy accept;
                     jump upnp_prerouting;
                   }}
                   chain upnp_prerouting {{
                   }}
                   chain postrouting {{
                     type nat hook postrouting priority 99; policy accept;
                     jump upnp_postrouting;
                   }}
                   chain upnp_postrouting {{
                   }}
                 }}
                 add rule ip filter forward iifname \"{wan}\" ct status dnat accept
                 "
            ),
        )?;
        if speaks == Speaks::NatPmp {
            // miniupnpd answers PCP whenever it answers NAT-PMP: a router that speaks only
            // NAT-PMP is made by dropping PCP requests (version 2, the first byte after
            // the UDP header) before they reach it.
            nft(
                ns,
                &format!(
                    "add rule ip filter incoming iifname \"{lan}\" udp dport 5351 @th,64,8 2 drop\n"
                ),
            )?;
        }
        let (upnp, natpmp) = match speaks {
            Speaks::Upnp => ("yes", "no"),
            Speaks::PcpAndNatPmp | Speaks::NatPmp => ("no", "yes"),
        };
        std::fs::create_dir_all(dir)?;
        let config = dir.join("miniupnpd.conf");
        std::fs::write(
            &config,
            format!(
                "ext_ifname={wan}
                 listening_ip={lan}
                 port=0
                 enable_upnp={upnp}
                 enable_natpmp={natpmp}
                 min_lifetime=2
                 secure_mode=yes
                 system_uptime=no
                 notify_interval=60
                 uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b
                 upnp_table_name=miniupnpd
                 upnp_nat_table_name=miniupnpd
                 upnp_forward_chain=upnp_forward
                 upnp_nat_chain=upnp_prerouting
                 upnp_nat_postrouting_chain=upnp_postrouting
                 allow 1024-65535 0.0.0.0/0 1024-65535
                 deny 0-65535 0.0.0.0/0 0-65535
                 "
            )
            .lines()
            .map(|l| format!("{}\n", l.trim()))
            .collect::<String>(),
        )?;
        let log = std::fs::File::create(dir.join("miniupnpd.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns, MINIUPNPD, "-d", "-f"])
            .arg(&config)
            .arg("-P")
            .arg(dir.join("miniupnpd.pid"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start miniupnpd")?;
        let child = Reaped(child);
        // Listening once its port shows in the log.
        let listening = match speaks {
            Speaks::Upnp => "HTTP listening on port",
            Speaks::PcpAndNatPmp | Speaks::NatPmp => "Listening for NAT-PMP/PCP traffic",
        };
        let log = dir.join("miniupnpd.log");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(listening) {
                return Ok(child);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "miniupnpd did not start in {ns}: {text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Makes host `ns` a plain router (no NAT) that loses `percent` of what it forwards,
    /// at random (this kernel has no netem: nftables' numgen does it).
    pub fn lossy_router(&self, ns: &str, percent: u32) -> anyhow::Result<()> {
        run_ok(self.run(ns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?)?;
        nft(
            ns,
            &format!(
                "table ip loss {{
                   chain forward {{
                     type filter hook forward priority 0; policy accept;
                     numgen random mod 100 < {percent} drop;
                   }}
                 }}
                 "
            ),
        )
    }

    /// Limits what `ns` sends out of `iface` to `rate` (tc's units: "40mbit").
    pub fn rate_limit(&self, ns: &str, iface: &str, rate: &str) -> anyhow::Result<()> {
        ip(&["-n", ns, "link", "show", iface])?;
        run_ok(self.run(
            ns,
            "tc",
            &[
                "qdisc", "add", "dev", iface, "root", "tbf", "rate", rate, "burst", "64kb",
                "latency", "400ms",
            ],
        )?)
    }

    /// Routes everything `ns` sends outside its LANs through `gateway`.
    pub fn default_route(&self, ns: &str, gateway: &str) -> anyhow::Result<()> {
        ip(&["-n", ns, "route", "add", "default", "via", gateway])
    }

    /// A LAN of two: `router` (on its interface `router_if`) at `PREFIX.1/24` and `host`
    /// (on `eth0`) at `PREFIX.2/24`, which sends everything else through the router.
    pub fn subnet(
        &mut self,
        name: &str,
        (router, router_if): (&str, &str),
        host: &str,
        prefix: &str,
    ) -> anyhow::Result<()> {
        let gateway = format!("{prefix}.1");
        self.lan(
            name,
            &[
                (router, router_if, &format!("{gateway}/24")),
                (host, "eth0", &format!("{prefix}.2/24")),
            ],
        )?;
        self.default_route(host, &gateway)
    }

    /// Runs a command inside a namespace.
    pub fn run(&self, ns: &str, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .output()
            .with_context(|| format!("run {program} in {ns}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            delete(ns);
        }
    }
}

/// What kind of NAT a router does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Endpoint-independent mapping, the port kept where it can be.
    Cone,
    /// A random port for every flow.
    Symmetric,
}

/// Loads nftables `rules` in namespace `ns`.
fn nft(ns: &str, rules: &str) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .map(|mut stdin| stdin.write_all(rules.as_bytes()))
                .transpose()?;
            child.wait_with_output()
        })
        .context("run nft (apt-get install -y nftables)")?;
    run_ok(out)
}

fn run_ok(out: Output) -> anyhow::Result<()> {
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A `loopsy-relay` in namespace `ns` (this process's own with `None`), listening on each
/// of `addrs` and announcing them; returns it, killed when dropped, with the peer ID it
/// prints once its home holds its key.
pub fn relay(ns: Option<&str>, home: &Path, addrs: &[String]) -> anyhow::Result<(Reaped, String)> {
    relay_with(ns, home, addrs, &[])
}

/// [`relay`], with more flags after the addresses.
pub fn relay_with(
    ns: Option<&str>,
    home: &Path,
    addrs: &[String],
    extra: &[&str],
) -> anyhow::Result<(Reaped, String)> {
    let mut command = match ns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns]).arg(bin::loopsy_relay());
            command
        }
        None => Command::new(bin::loopsy_relay()),
    };
    command.arg("--home").arg(home);
    for addr in addrs {
        command.args(["--listen", addr, "--external-addr", addr]);
    }
    command.args(extra);
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start loopsy-relay")?;
    let stdout = child.stdout.take().context("stdout")?;
    let child = Reaped(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let found = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("loopsy-relay ").map(str::to_owned));
        let _ = tx.send(found);
    });
    let peer_id = rx
        .recv_timeout(Duration::from_secs(30))
        .ok()
        .flatten()
        .context("the relay prints its peer ID")?;
    Ok((child, peer_id))
}

/// `/etc/netns/NS/hosts`, which `ip netns exec NS` shows as `/etc/hosts`: names of the
/// test's own for programs in the namespace. Removed when dropped.
pub struct HostsFile(std::path::PathBuf);

impl HostsFile {
    pub fn write(ns: &str, text: &str) -> anyhow::Result<Self> {
        let dir = Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("hosts"), text)?;
        Ok(Self(dir))
    }
}

impl Drop for HostsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `ip ARGS..`, turning a failure into an error with ip's own message.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    anyhow::ensure!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn check_support() -> Result<(), String> {
    if !cfg!(target_os = "linux") {
        return Err("this is not Linux".into());
    }
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Err(format!("it needs root, and runs as uid {euid}"));
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => {}
        _ => return Err("the `ip` command (iproute2) is missing".into()),
    }
    let probe = format!("lpy-{}-probe", std::process::id());
    ip(&["netns", "add", &probe]).map_err(|e| e.to_string())?;
    delete(&probe);
    Ok(())
}

/// Kills what runs in a namespace, then deletes it.
fn delete(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        let pids = String::from_utf8_lossy(&out.stdout).to_string();
        for pid in pids.split_whitespace().filter_map(|p| p.parse().ok()) {
            crate::node::signal(pid, "KILL");
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).output();
}

/// Deletes namespaces of earlier test processes that are gone (killed by a timeout, say).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name.strip_prefix("lpy-").and_then(|r| r.split('-').next()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete(name);
        }
    }
}
