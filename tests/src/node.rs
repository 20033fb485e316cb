//! `loopsy node` as a real process, optionally inside a network namespace, stopped on drop.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use anyhow::Context;
use serde_json::Value;

use crate::{bin, temp::TempDir, wait_for};

/// How to start a node.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub name: String,
    /// Run inside this network namespace.
    pub netns: Option<String>,
    /// More `loopsy node` flags.
    pub args: Vec<String>,
    /// Use this home instead of a fresh one (to restart a node, say).
    pub home: Option<PathBuf>,
    /// More environment for the node (`HOME`, whose directory is its default file root).
    pub env: Vec<(String, String)>,
    /// Start without `--home`, so that the node keeps its state where a user's node does by
    /// default: `$HOME/.local/share/loopsy`, under the `HOME` given with [`Options::env`]
    /// (`XDG_DATA_HOME` is cleared for it).
    pub default_home: bool,
}

impl Options {
    pub fn named(name: &str) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Loopback only, random ports, no mDNS: a node that meets nobody by itself.
    pub fn isolated(name: &str) -> Self {
        Self::named(name).args(&[
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
        ])
    }

    pub fn netns(mut self, ns: &str) -> Self {
        self.netns = Some(ns.into());
        self
    }

    pub fn home(mut self, home: &Path) -> Self {
        self.home = Some(home.to_owned());
        self
    }

    /// See [`Options::default_home`].
    pub fn default_home(mut self) -> Self {
        self.default_home = true;
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<Path>) -> Self {
        let value = value.as_ref().to_string_lossy().into_owned();
        self.env.push((key.into(), value));
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }
}

/// A running `loopsy node`.
#[derive(Debug)]
pub struct Node {
    dir: TempDir,
    home: PathBuf,
    child: Child,
    pub peer_id: String,
    pub name: String,
}

impl Node {
    /// Starts a node in a fresh home and waits until its control socket answers.
    pub fn start(options: Options) -> anyhow::Result<Self> {
        let dir = TempDir::new(&options.name);
        let home = if options.default_home {
            let Some((_, user)) = options.env.iter().find(|(k, _)| k == "HOME") else {
                anyhow::bail!("a node with the default home needs a HOME (Options::env)");
            };
            Path::new(user).join(".local/share/loopsy")
        } else {
            options
                .home
                .clone()
                .unwrap_or_else(|| dir.path().join("home"))
        };
        let log = File::create(dir.path().join("node.log"))?;
        let mut command = match &options.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin::loopsy());
                c
            }
            None => Command::new(bin::loopsy()),
        };
        if options.default_home {
            command
                .env_remove("XDG_DATA_HOME")
                .env_remove("LOOPSY_HOME");
        } else {
            command.arg("--home").arg(&home);
        }
        command
            .args(["node", "--name", &options.name])
            .args(&options.args)
            .env(
                "RUST_LOG",
                "info,loopsy_mesh=debug,loopsy_daemon=debug,libp2p_swarm=debug,libp2p_stream=debug",
            )
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command.spawn().context("start loopsy node")?;
        let mut node = Self {
            dir,
            home,
            child,
            peer_id: String::new(),
            name: options.name,
        };
        let id = wait_for("the node's control socket", Duration::from_secs(30), || {
            if let Ok(Some(status)) = node.child.try_wait() {
                return Some(Err(anyhow::anyhow!(
                    "loopsy node exited with {status}:\n{}",
                    node.log()
                )));
            }
            // `status` needs the node itself (`id` answers from the home without one).
            node.json(&["status", "--json"]).ok().map(Ok)
        })??;
        node.peer_id = id["peer_id"].as_str().context("peer_id")?.to_owned();
        Ok(node)
    }

    pub fn home(&self) -> PathBuf {
        self.home.clone()
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    /// Runs `loopsy --home HOME ARGS..` against this node.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.home(), args)
    }

    /// The TCP address the node listens on, with its peer ID, for in-process meshes to dial.
    pub fn tcp_addr(&self) -> anyhow::Result<libp2p::Multiaddr> {
        let status = self.json(&["status", "--json"])?;
        let addr = status["listen_addrs"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find_map(|a| a.as_str().filter(|a| a.contains("/tcp/")))
            })
            .context("a TCP listen address")?;
        Ok(addr.parse()?)
    }

    /// Runs a `loopsy` command that must succeed, and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "loopsy {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `loopsy --home HOME ARGS..` with stdout piped, for commands that wait.
    pub fn spawn_cli(&self, args: &[&str]) -> Child {
        Command::new(bin::loopsy())
            .arg("--home")
            .arg(self.home())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run loopsy")
    }

    /// Creates a pairing code with `loopsy pair --json ARGS..`: the waiting process, with
    /// its stdout lines, and the code.
    pub fn invite(&self, args: &[&str]) -> anyhow::Result<Invite> {
        let mut all = vec!["pair", "--json"];
        all.extend(args);
        let mut child = self.spawn_cli(&all);
        let stdout = child.stdout.take().expect("stdout is piped");
        // Owned by the invite from here, so the process is reaped on every path.
        let mut invite = Invite {
            child,
            lines: std::io::BufRead::lines(std::io::BufReader::new(stdout)),
            code: String::new(),
            short_code: None,
            url: None,
        };
        let first = invite
            .lines
            .next()
            .context("no output from loopsy pair")??;
        let first: Value = serde_json::from_str(&first)?;
        invite.code = first["code"].as_str().context("code")?.to_owned();
        invite.short_code = first["short_code"].as_str().map(str::to_owned);
        invite.url = first["url"].as_str().map(str::to_owned);
        Ok(invite)
    }

    /// `loopsy pair join CODE --json`: the one line of JSON it prints, and whether it
    /// succeeded.
    pub fn join(&self, code: &str) -> (bool, Value) {
        let out = self.cli(&["pair", "join", code, "--json"]);
        let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.success(), value)
    }

    /// Pairs `joiner` with this node through a code.
    pub fn pair_with(&self, joiner: &Node) -> anyhow::Result<()> {
        let mut invite = self.invite(&["--ttl", "60s"])?;
        let (ok, out) = joiner.join(&invite.code);
        anyhow::ensure!(ok, "join failed: {out}");
        anyhow::ensure!(invite.result()?["paired"] == true, "inviter did not pair");
        Ok(())
    }

    /// `loopsy trust add` of `other` here, by its peer ID and TCP address, with `extra`
    /// flags (`--allow`, say): this node then trusts and dials it.
    pub fn trust_add(&self, other: &Node, extra: &[&str]) -> anyhow::Result<()> {
        let addr = other.tcp_addr()?.to_string();
        let mut args = vec![
            "trust",
            "add",
            &other.peer_id,
            "--name",
            &other.name,
            "--addr",
            &addr,
        ];
        args.extend(extra);
        let out = self.cli(&args);
        anyhow::ensure!(
            out.status.success(),
            "trust add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// `loopsy trust ls --json`.
    pub fn trusted(&self) -> Vec<Value> {
        self.json(&["trust", "ls", "--json"])
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// `loopsy audit --json`.
    pub fn audit(&self) -> Vec<Value> {
        self.json(&["audit", "--json"])
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Runs a CLI command that must succeed and print one JSON document.
    pub fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let out = self.cli(args);
        anyhow::ensure!(
            out.status.success(),
            "loopsy {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).context("parse JSON output")
    }

    /// `loopsy peers --json`.
    pub fn peers(&self) -> anyhow::Result<Vec<Value>> {
        let peers = self.json(&["peers", "--json"])?;
        peers.as_array().cloned().context("peers is an array")
    }

    /// This node's entry for `peer_id` in `loopsy peers`, if any.
    pub fn peer(&self, peer_id: &str) -> Option<Value> {
        self.peers()
            .ok()?
            .into_iter()
            .find(|p| p["peer_id"] == peer_id)
    }

    /// The relays this node holds a reservation on now, as `loopsy status` names them.
    pub fn relay_reservations(&self) -> Option<Vec<String>> {
        let status = self.json(&["status", "--json"]).ok()?;
        let reserved = status["relay_reservations"].as_array()?;
        Some(
            reserved
                .iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect(),
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the node with SIGTERM and returns its exit status.
    pub fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.terminate()
    }

    /// Kills the node at once, as a crash or `kill -9` would (its log is kept).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        signal(self.child.id(), "TERM");
        let status = wait_for("the node to exit", Duration::from_secs(10), || {
            self.child.try_wait().ok().flatten()
        });
        match status {
            Ok(status) => Ok(status),
            Err(e) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(e)
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.terminate();
        }
        if std::thread::panicking() {
            eprintln!("--- log of node {} ---\n{}", self.name, self.log());
        }
    }
}

/// A child process that is killed and reaped when dropped, whatever path a test takes.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `loopsy pair` waiting for devices.
pub struct Invite {
    pub child: Child,
    pub lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    pub code: String,
    /// The short code for a device that sees this one (`NAME N-NNN-NNN-NNN`).
    pub short_code: Option<String>,
    /// The pairing link for a browser (`http://HOST:PORT/#code=…`), when the node
    /// listens on WebSocket.
    pub url: Option<String>,
}

impl Invite {
    /// The next result line `loopsy pair` prints.
    pub fn result(&mut self) -> anyhow::Result<Value> {
        let line = self
            .lines
            .next()
            .context("loopsy pair printed no result")??;
        Ok(serde_json::from_str(&line)?)
    }
}

impl Drop for Invite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `loopsy --home HOME ARGS..`.
pub fn cli(home: &Path, args: &[&str]) -> Output {
    Command::new(bin::loopsy())
        .arg("--home")
        .arg(home)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run loopsy")
}

/// Sends a signal by name (TERM, INT, KILL) with kill(1).
pub fn signal(pid: u32, name: &str) {
    // kill(1) reads 0 as "my process group": never send that.
    if pid == 0 {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}
