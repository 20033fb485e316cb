//! A real headless Chromium for tests, driven through `crates/web/app/test/driver.mjs`
//! (playwright-core, Debian's `/usr/bin/chromium`): one JSON command per line, one answer
//! per line. The driver runs as a child of the test (inside a network namespace when asked)
//! and exits when its stdin closes, so it never outlives the [`Browser`] that started it.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{ChildStdin, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::{
    bin,
    node::{Invite, Node, Options, Reaped},
    wait_for,
};

/// The Chromium the driver starts, unless `LOOPSY_CHROMIUM` names another.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// How long one command may take before the test fails (waits carry their own timeouts).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a page may take to show what the tests wait for.
const PAGE_WAIT: Duration = Duration::from_secs(30);

/// The Pixel-sized viewport the phone layout is checked at.
pub const PIXEL: (u32, u32) = (412, 915);
/// The smaller phone the issue names.
pub const SMALL_PHONE: (u32, u32) = (390, 844);

/// The web app's folder: its driver and its `node_modules`.
pub fn app_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/web/app")
}

/// Where tests leave screenshots: `<target>/browser-artifacts`, made if need be.
pub fn artifacts_dir() -> PathBuf {
    let dir = bin::target_dir().join("browser-artifacts");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A headless Chromium, with pages (each a fresh profile) named by the test.
pub struct Browser {
    stdin: Option<ChildStdin>,
    answers: mpsc::Receiver<String>,
    child: Reaped,
}

impl Browser {
    /// Starts the driver, in network namespace `netns` when given. Fails saying what to
    /// install when node, the app's `node_modules` or Chromium is missing.
    pub fn start(netns: Option<&str>) -> anyhow::Result<Self> {
        Self::start_trusting(netns, None)
    }

    /// As [`start`](Self::start), with Chromium also trusting a TLS server whose public key
    /// has this SPKI hash (base64 of its SHA-256), as if a CA had signed it: a test's own
    /// certificate, and nothing else, gets past the certificate check.
    pub fn start_trusting(netns: Option<&str>, spki: Option<&str>) -> anyhow::Result<Self> {
        check_support()?;
        let driver = app_dir().join("test/driver.mjs");
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "node"]);
                c
            }
            None => Command::new("node"),
        };
        if let Some(spki) = spki {
            command.env("LOOPSY_BROWSER_TRUST_SPKI", spki);
        }
        let mut child = command
            .arg(&driver)
            .current_dir(app_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start node with the browser driver")?;
        let stdin = child.stdin.take().context("the driver's stdin")?;
        let stdout = child.stdout.take().context("the driver's stdout")?;
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            stdin: Some(stdin),
            answers,
            child: Reaped(child),
        })
    }

    /// The driver's process ID (the node process; Chromium is its child).
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Sends one command and returns its value, or the driver's error.
    pub fn command(&mut self, command: Value) -> anyhow::Result<Value> {
        let stdin = self.stdin.as_mut().context("the driver is closed")?;
        writeln!(stdin, "{command}").context("the browser driver has exited")?;
        stdin.flush()?;
        let line = match self.answers.recv_timeout(ANSWER_TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("the browser driver did not answer {command} within {ANSWER_TIMEOUT:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("the browser driver exited before answering {command} (see its stderr)")
            }
        };
        let answer: Value =
            serde_json::from_str(&line).with_context(|| format!("driver answered {line:?}"))?;
        if answer["ok"] == json!(true) {
            Ok(answer["value"].clone())
        } else {
            bail!(
                "{}: {}",
                command["cmd"],
                answer["error"].as_str().unwrap_or("?")
            )
        }
    }

    /// Opens `url` in a new page `page`, a fresh profile of its own, at `(width, height)`.
    pub fn open(
        &mut self,
        page: &str,
        url: &str,
        (width, height): (u32, u32),
    ) -> anyhow::Result<()> {
        self.command(
            json!({"cmd": "open", "page": page, "url": url, "width": width, "height": height}),
        )
        .map(drop)
    }

    pub fn goto(&mut self, page: &str, url: &str) -> anyhow::Result<()> {
        self.command(json!({"cmd": "goto", "page": page, "url": url}))
            .map(drop)
    }

    /// Resizes the page's viewport (the layout follows, as on a rotated phone).
    pub fn viewport(&mut self, page: &str, (width, height): (u32, u32)) -> anyhow::Result<()> {
        self.command(json!({"cmd": "viewport", "page": page, "width": width, "height": height}))
            .map(drop)
    }

    pub fn reload(&mut self, page: &str) -> anyhow::Result<()> {
        self.command(json!({"cmd": "reload", "page": page}))
            .map(drop)
    }

    /// Clicks the first element with `testid` (whose text contains `text`, when given).
    pub fn click(&mut self, page: &str, testid: &str, text: Option<&str>) -> anyhow::Result<()> {
        self.command(json!({"cmd": "click", "page": page, "testid": testid, "text": text}))
            .map(drop)
    }

    /// Sets the value of the input with `testid`.
    pub fn fill(&mut self, page: &str, testid: &str, value: &str) -> anyhow::Result<()> {
        self.command(json!({"cmd": "fill", "page": page, "testid": testid, "value": value}))
            .map(drop)
    }

    /// Types `text` into the focused element, key by key.
    pub fn type_text(&mut self, page: &str, text: &str) -> anyhow::Result<()> {
        self.command(json!({"cmd": "type", "page": page, "text": text}))
            .map(drop)
    }

    /// Presses one key, as Playwright names them (`Enter`, `Control+C`).
    pub fn press(&mut self, page: &str, key: &str) -> anyhow::Result<()> {
        self.command(json!({"cmd": "press", "page": page, "key": key}))
            .map(drop)
    }

    /// The text of every element with `testid`, now.
    pub fn texts(&mut self, page: &str, testid: &str) -> anyhow::Result<Vec<String>> {
        strings(self.command(json!({"cmd": "texts", "page": page, "testid": testid}))?)
    }

    /// Waits until an element with `testid` holds `text`; the texts of all of them then.
    pub fn wait_text(
        &mut self,
        page: &str,
        testid: &str,
        text: &str,
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        strings(self.command(json!({
            "cmd": "wait_text", "page": page, "testid": testid, "text": text,
            "timeout_ms": timeout.as_millis() as u64,
        }))?)
    }

    /// The terminal's screen, row by row (xterm's DOM renderer), as one text.
    pub fn screen(&mut self, page: &str) -> anyhow::Result<String> {
        let rows = strings(self.command(
            json!({"cmd": "texts", "page": page, "testid": "terminal", "within": ".xterm-rows"}),
        )?)?;
        Ok(rows.join("\n"))
    }

    /// Waits until the terminal's screen holds `text`; the screen then.
    pub fn wait_screen(
        &mut self,
        page: &str,
        text: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let rows = strings(self.command(json!({
            "cmd": "wait_text", "page": page, "testid": "terminal", "within": ".xterm-rows",
            "text": text, "timeout_ms": timeout.as_millis() as u64,
        }))?)?;
        Ok(rows.join("\n"))
    }

    /// Milliseconds from the page's first `event` (`click`, `keydown`) during `action` to
    /// `text` on the terminal's screen, both timed inside the page.
    pub fn timed_screen(
        &mut self,
        page: &str,
        event: &str,
        action: Value,
        text: &str,
    ) -> anyhow::Result<f64> {
        let value = self.command(json!({
            "cmd": "timed", "page": page, "event": event, "action": action,
            "testid": "terminal", "within": ".xterm-rows", "text": text, "timeout_ms": 20_000,
        }))?;
        value.as_f64().context("the driver's time is a number")
    }

    /// Saves what `page` shows as a PNG at `path`.
    pub fn screenshot(&mut self, page: &str, path: &Path) -> anyhow::Result<()> {
        self.command(json!({"cmd": "screenshot", "page": page, "path": path}))
            .map(drop)
    }

    /// Evaluates a JavaScript expression in the page (a promise is awaited).
    pub fn eval(&mut self, page: &str, js: &str) -> anyhow::Result<Value> {
        self.command(json!({"cmd": "eval", "page": page, "js": js}))
    }

    /// Closes a page and its profile.
    pub fn close(&mut self, page: &str) -> anyhow::Result<()> {
        self.command(json!({"cmd": "close", "page": page}))
            .map(drop)
    }

    /// The page's own peer ID, as it shows it (`this browser: 12D3KooW…`).
    pub fn page_peer_id(&mut self, page: &str) -> anyhow::Result<String> {
        wait_for("the page's peer ID", PAGE_WAIT, || {
            let text = self
                .eval(page, "document.getElementById('me').textContent")
                .ok()?;
            let id = text.as_str()?.strip_prefix("this browser: ")?.to_owned();
            (!id.is_empty()).then_some(id)
        })
    }

    /// Waits until `page` lists a session named each of `names`, refreshing the list now
    /// and then (the page also pulls it every few seconds by itself).
    pub fn wait_until_listed(&mut self, page: &str, names: &[&str]) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + PAGE_WAIT;
        loop {
            let listed = self.texts(page, "session")?;
            if names
                .iter()
                .all(|n| listed.iter().any(|l| l.starts_with(n)))
            {
                return Ok(());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the page lists {listed:?}, not all of {names:?}"
            );
            std::thread::sleep(Duration::from_secs(1));
            self.click(page, "refresh", None)?;
        }
    }

    /// Pairs `page`, opened at `invite`'s link, with the device `inviter` that shows it, as
    /// a person does: the page names the device, the Pair tap, then the check code the page
    /// shows equal to `loopsy pair`'s, which paired this page's peer ID. Returns that ID.
    pub fn pair_from_link(
        &mut self,
        page: &str,
        invite: &mut Invite,
        inviter: &str,
    ) -> anyhow::Result<String> {
        let target = self.wait_text(page, "pair-target", "Pairs with", PAGE_WAIT)?;
        anyhow::ensure!(target[0].contains(inviter), "{target:?}");
        self.click(page, "pair-confirm", None)?;
        let shown = self.wait_text(page, "pair-check-code", " ", PAGE_WAIT)?;
        let invited = invite.result()?;
        anyhow::ensure!(invited["paired"] == true, "{invited}");
        anyhow::ensure!(
            shown[0] == invited["check_code"].as_str().unwrap_or("?"),
            "the page shows {shown:?}, loopsy pair {invited}"
        );
        let me = self.page_peer_id(page)?;
        anyhow::ensure!(invited["peer_id"] == me.as_str(), "{invited}");
        Ok(me)
    }

    /// The page's title (`(1) Loopsy` while one session waits).
    pub fn title(&mut self, page: &str) -> anyhow::Result<String> {
        let title = self.eval(page, "document.title")?;
        Ok(title.as_str().context("the title is a text")?.to_owned())
    }
}

/// A node's options on a lab LAN at `addr`, listening on TCP and on WebSocket (the app's
/// origin), with no mDNS.
pub fn lan_options(name: &str, ns: &str, addr: &str) -> Options {
    let tcp = format!("/ip4/{addr}/tcp/0");
    let ws = format!("/ip4/{addr}/tcp/0/ws");
    Options::named(name)
        .netns(ns)
        .args(&["--no-mdns", "--listen", &tcp, "--listen", &ws])
}

/// The browser tests' LAN: namespaces `alpha` and `bravo` (two devices) and `phone`, at
/// `NET.1`, `NET.2` and `NET.3` of `/24` network `NET` (`"10.77.0"`). Returns the lab and
/// the three namespaces; `None` when namespace tests are skipped.
pub fn phone_lan(
    tag: &str,
    net: &str,
) -> anyhow::Result<Option<(crate::netlab::Lab, [String; 3])>> {
    let Some(mut lab) = crate::netlab::Lab::new(tag) else {
        return Ok(None);
    };
    let hosts = [lab.host("alpha")?, lab.host("bravo")?, lab.host("phone")?];
    let addrs: Vec<String> = (1..=3).map(|i| format!("{net}.{i}/24")).collect();
    lab.lan(
        "lan",
        &[
            (&hosts[0], "eth0", &addrs[0]),
            (&hosts[1], "eth0", &addrs[1]),
            (&hosts[2], "eth0", &addrs[2]),
        ],
    )?;
    Ok(Some((lab, hosts)))
}

/// `loopsy pair --json` on `node`, waiting for a device: the invitation and the link its
/// first line gives (`url`), which opens the app with the code in the fragment.
pub fn invite_with_url(node: &Node) -> anyhow::Result<(Invite, String)> {
    let invite = node.invite(&["--ttl", "120s"])?;
    let url = invite.url.clone().context("pair --json gives a url")?;
    anyhow::ensure!(url.contains(&invite.code), "{url}");
    Ok((invite, url))
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing stdin lets the driver close Chromium itself; the kill after is for a
        // driver stuck in a command.
        drop(self.stdin.take());
        for _ in 0..50 {
            if matches!(self.child.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn strings(value: Value) -> anyhow::Result<Vec<String>> {
    Ok(serde_json::from_value(value)?)
}

/// What the driver needs: node 20 or newer, the app's `node_modules` with playwright-core,
/// and Chromium.
fn check_support() -> anyhow::Result<()> {
    let install = "apt-get install -y chromium nodejs npm, then (cd crates/web/app && npm ci)";
    let version = Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let Some(version) = version else {
        bail!("the browser tests need Node.js 20 or newer (`node` is not found): {install}");
    };
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        bail!("the browser tests need Node.js 20 or newer, and `node` is {version}: {install}");
    }
    if !app_dir().join("node_modules/playwright-core").is_dir() {
        bail!(
            "the browser tests need playwright-core in {}: run `npm ci` there",
            app_dir().display()
        );
    }
    let chromium = std::env::var("LOOPSY_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
    if !Path::new(&chromium).exists() {
        bail!("the browser tests need Chromium at {chromium} (or LOOPSY_CHROMIUM): {install}");
    }
    Ok(())
}
