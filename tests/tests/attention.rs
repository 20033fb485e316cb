//! Attention between real nodes: a bell and an OSC 9 notification in a session on alpha
//! reach bravo's `loopsy events --follow --json` (the delay measured), the session shows as
//! waiting on bravo until bravo attaches, a bell in a loop raises a handful of events, and
//! `loopsy notify` from a hook script reaches every device.

use std::{
    io::{BufRead, BufReader},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use loopsy_tests::{
    attach::Attached,
    node::{Node, Options, Reaped},
    temp::TempDir,
    wait_for,
};
use serde_json::Value;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// `loopsy events --follow --json` on `node`: each event with the time it was read.
struct Follower {
    _child: Reaped,
    seen: Arc<Mutex<Vec<(Value, u64)>>>,
}

impl Follower {
    fn start(node: &Node) -> Self {
        let mut child = node.spawn_cli(&["events", "--follow", "--json"]);
        let stdout = child.stdout.take().expect("stdout");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    into.lock().expect("seen").push((event, now_ms()));
                }
            }
        });
        Self {
            _child: Reaped(child),
            seen,
        }
    }

    fn find(&self, kind: &str) -> Option<(Value, u64)> {
        self.seen
            .lock()
            .expect("seen")
            .iter()
            .find(|(e, _)| e["kind"] == kind)
            .cloned()
    }
}

fn session_on(node: &Node, id: &str) -> Option<Value> {
    let list = node.json(&["session", "ls", "--json"]).ok()?;
    list.as_array()?.iter().find(|s| s["id"] == id).cloned()
}

fn events(node: &Node) -> Vec<Value> {
    node.json(&["events", "--since", "10m", "--json"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn a_bell_and_a_notification_reach_another_device_and_the_session_waits_until_attached()
-> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    let follower = Follower::start(&b);
    // The follower is listening before anything rings.
    std::thread::sleep(Duration::from_secs(1));

    let script = "sleep 1; printf 'ding\\a\\n'; sleep 1; \
                  printf '\\033]9;Needs your permission\\007'; exec sleep 600";
    let out = a.ok(&[
        "session", "new", "--name", "agent", "--", "sh", "-c", script,
    ]);
    let id = out.trim().to_owned();

    let (bell, bell_read) = wait_for("bravo to see the bell", Duration::from_secs(10), || {
        follower.find("bell")
    })?;
    let (note, note_read) = wait_for(
        "bravo to see the notification",
        Duration::from_secs(10),
        || follower.find("notify"),
    )?;
    assert_eq!(bell["host"], "alpha");
    assert_eq!(bell["session"], id.as_str());
    assert_eq!(bell["session_name"], "agent");
    assert_eq!(note["text"], "Needs your permission");
    // From the host noticing it to the other device printing it.
    let delays: Vec<u64> = [(&bell, bell_read), (&note, note_read)]
        .iter()
        .map(|(e, read)| read.saturating_sub(e["time_ms"].as_u64().unwrap_or(0)))
        .collect();
    eprintln!(
        "attention delay alpha -> bravo: bell {} ms, OSC 9 {} ms",
        delays[0], delays[1]
    );
    assert!(
        delays.iter().all(|&d| d < 1000),
        "events took {delays:?} ms"
    );

    // Bravo lists the session as waiting, since the bell.
    let waiting = wait_for("bravo to list it waiting", Duration::from_secs(10), || {
        session_on(&b, &id).filter(|s| !s["waiting"].is_null())
    })?;
    assert_eq!(waiting["waiting"]["kind"], "bell");

    // Bravo attaches and types: nobody waits any more, on either device.
    let mut attached = Attached::start(&b, "agent");
    attached.type_keys("x");
    for node in [&b, &a] {
        wait_for("the waiting to clear", Duration::from_secs(10), || {
            session_on(node, &id).filter(|s| s["waiting"].is_null())
        })?;
    }
    Ok(())
}

#[test]
fn a_bell_in_a_loop_raises_a_handful_of_events() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let loop_ = "while :; do printf '\\a'; sleep 0.01; done";
    let id = a
        .ok(&["session", "new", "--", "sh", "-c", loop_])
        .trim()
        .to_owned();
    // About 300 bells in three seconds.
    std::thread::sleep(Duration::from_secs(3));
    a.ok(&["session", "kill", &id]);
    let bells = events(&a)
        .into_iter()
        .filter(|e| e["session"] == id.as_str() && e["kind"] == "bell")
        .count();
    assert!((1..=5).contains(&bells), "{bells} events for a bell loop");
    Ok(())
}

#[test]
fn notify_from_a_hook_script_reaches_every_device() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    let c = Node::start(Options::isolated("charlie"))?;
    a.pair_with(&b)?;
    a.pair_with(&c)?;
    // A hook as an agent runs one: a script, its input on stdin.
    let dir = TempDir::new("hook");
    let hook = dir.path().join("notify-hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat >/dev/null\nexec '{}' --home '{}' notify --title 'Claude Code' 'Claude needs your permission'\n",
            loopsy_tests::bin::loopsy().display(),
            b.home().display()
        ),
    )?;
    let status = std::process::Command::new("sh")
        .arg(&hook)
        .stdin(std::process::Stdio::null())
        .status()?;
    assert!(status.success(), "the hook failed");
    for node in [&a, &b, &c] {
        let found = wait_for(
            "the notification everywhere",
            Duration::from_secs(20),
            || {
                events(node)
                    .into_iter()
                    .find(|e| e["kind"] == "note" && e["host"] == "bravo")
            },
        )?;
        assert_eq!(found["title"], "Claude Code");
        assert_eq!(found["text"], "Claude needs your permission");
    }
    // A notification for a session that is not there is refused, in words.
    let out = b.cli(&["notify", "--session", "nosuch", "hello"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch"));
    Ok(())
}

/// A node whose home's config has `notify` settings, plus more environment.
fn node_with_notify(name: &str, dir: &TempDir, notify: &str, env: &[(&str, &str)]) -> Node {
    let home = dir.path().join(name);
    std::fs::create_dir_all(&home).expect("a home");
    std::fs::write(home.join("config.toml"), format!("[notify]\n{notify}")).expect("a config");
    let mut options = Options::isolated(name).home(&home);
    for (key, value) in env {
        options = options.env(key, value);
    }
    Node::start(options).expect("a node")
}

/// An HTTP listener that answers every request 200 and hands over what it got.
fn webhook_listener() -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("its address").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            // Headers, then the body that Content-Length announces.
            while let Ok(n) = stream.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|l| l.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            let _ = tx.send(String::from_utf8_lossy(&request).into_owned());
        }
    });
    (port, rx)
}

#[test]
fn an_event_is_posted_to_the_webhook_ntfy_style() -> anyhow::Result<()> {
    let (port, requests) = webhook_listener();
    let dir = TempDir::new("webhook");
    let a = node_with_notify(
        "alpha",
        &dir,
        &format!("desktop = false\nwebhook = \"http://127.0.0.1:{port}/agents\"\n"),
        &[],
    );
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    // Raised on bravo, delivered by alpha.
    b.ok(&[
        "notify",
        "--title",
        "Claude Code",
        "Claude needs your permission",
    ]);
    let request = requests.recv_timeout(Duration::from_secs(20))?;
    let (head, body) = request.split_once("\r\n\r\n").expect("a request");
    let lines: Vec<&str> = head.lines().collect();
    assert_eq!(lines[0], "POST /agents HTTP/1.1");
    assert!(lines.contains(&"Title: Claude Code (bravo)"), "{head}");
    assert!(lines.contains(&"Priority: 4"), "{head}");
    assert!(lines.iter().any(|l| l.starts_with("Tags: ")), "{head}");
    assert_eq!(body, "Claude needs your permission");
    // An https:// webhook is refused when the config is read, saying why.
    let home = dir.path().join("charlie");
    std::fs::create_dir_all(&home)?;
    std::fs::write(
        home.join("config.toml"),
        "[notify]\nwebhook = \"https://ntfy.sh/x\"\n",
    )?;
    let out = std::process::Command::new(loopsy_tests::bin::loopsy())
        .arg("--home")
        .arg(&home)
        .args(["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS"));
    Ok(())
}

#[test]
fn an_event_is_shown_by_the_desktop_notification_service() -> anyhow::Result<()> {
    let python = std::path::Path::new("/usr/bin/python3");
    let listener_script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/python/notification_listener.py"
    );
    let has = |program: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        has("dbus-daemon") && python.exists(),
        "this test needs dbus-daemon and /usr/bin/python3 with python3-dbus and python3-gi \
         (Debian: apt-get install dbus python3-dbus python3-gi)"
    );
    // A private session bus, and a notification server on it.
    let bus = std::process::Command::new("dbus-daemon")
        .args(["--session", "--fork", "--print-address=1", "--print-pid=1"])
        .output()?;
    assert!(
        bus.status.success(),
        "dbus-daemon: {}",
        String::from_utf8_lossy(&bus.stderr)
    );
    let said = String::from_utf8_lossy(&bus.stdout).into_owned();
    let mut said = said.lines();
    let address = said.next().expect("the bus address").to_owned();
    let bus_pid: i32 = said
        .next()
        .and_then(|p| p.trim().parse().ok())
        .expect("its pid");
    struct Bus(i32);
    impl Drop for Bus {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .arg(self.0.to_string())
                .status();
        }
    }
    let _bus = Bus(bus_pid);
    let mut server = std::process::Command::new(python)
        .arg(listener_script)
        .env("DBUS_SESSION_BUS_ADDRESS", &address)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stdout = server.stdout.take().expect("stdout");
    let _server = Reaped(server);
    let (tx, shown) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(value) = serde_json::from_str(&line) {
                let _ = tx.send(value);
            }
        }
    });
    let ready = shown.recv_timeout(Duration::from_secs(20));
    assert!(
        ready.is_ok_and(|r| r["ready"] == true),
        "the notification listener did not start (python3-dbus and python3-gi installed?)"
    );

    // Desktop notifications are on by default where there is a session bus.
    let dir = TempDir::new("desktop");
    let a = node_with_notify("alpha", &dir, "", &[("DBUS_SESSION_BUS_ADDRESS", &address)]);
    let script = "sleep 1; printf '\\033]777;notify;Build;All green\\007'; exec sleep 600";
    a.ok(&["session", "new", "--name", "ci", "--", "sh", "-c", script]);
    let notification = shown.recv_timeout(Duration::from_secs(20))?;
    assert_eq!(notification["app"], "Loopsy");
    assert_eq!(notification["summary"], "Build (ci on alpha)");
    assert_eq!(notification["body"], "All green");
    drop(a);

    // Where notify-send is missing, gdbus says it (GLib's tool, on most desktops).
    if has("gdbus") {
        let path = dir.path().join("bin");
        std::fs::create_dir_all(&path)?;
        for program in ["gdbus", "sh", "sleep"] {
            let found = std::process::Command::new("sh")
                .args(["-c", &format!("command -v {program}")])
                .output()?;
            let found = String::from_utf8_lossy(&found.stdout).trim().to_owned();
            std::os::unix::fs::symlink(found, path.join(program))?;
        }
        let b = node_with_notify(
            "bravo",
            &dir,
            "",
            &[
                ("DBUS_SESSION_BUS_ADDRESS", &address),
                ("PATH", path.to_str().unwrap_or_default()),
            ],
        );
        b.ok(&["notify", "--title=-1 \"quoted\"", "through gdbus"]);
        // Alpha's session ended as alpha stopped: that may come first.
        let notification = loop {
            let notification = shown.recv_timeout(Duration::from_secs(20))?;
            if notification["summary"] != "ci on alpha" {
                break notification;
            }
        };
        assert_eq!(notification["summary"], "-1 \"quoted\" (bravo)");
        assert_eq!(notification["body"], "through gdbus");
    }
    Ok(())
}

/// The bench's figure: from a bell in a session on alpha to the event printed by bravo's
/// `loopsy events --follow`, over 30 sessions (each rings once), p50 and p95.
#[test]
#[ignore = "a measurement: cargo nextest run -p loopsy-tests --test attention --run-ignored only --no-capture"]
fn bell_to_event_delay_between_two_devices() -> anyhow::Result<()> {
    const RINGS: usize = 30;
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    let follower = Follower::start(&b);
    std::thread::sleep(Duration::from_secs(1));
    for _ in 0..RINGS {
        a.ok(&[
            "session",
            "new",
            "--",
            "sh",
            "-c",
            "sleep 0.3; printf '\\a'; exec sleep 600",
        ]);
    }
    let delays = wait_for("every bell on bravo", Duration::from_secs(60), || {
        let seen = follower.seen.lock().expect("seen");
        let mut delays: Vec<u64> = seen
            .iter()
            .filter(|(e, _)| e["kind"] == "bell")
            .map(|(e, read)| read.saturating_sub(e["time_ms"].as_u64().unwrap_or(0)))
            .collect();
        (delays.len() >= RINGS).then(|| {
            delays.sort_unstable();
            delays
        })
    })?;
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "bell to event on another device, {} events: p50 {} ms, p95 {} ms, max {} ms",
        delays.len(),
        at(0.5),
        at(0.95),
        delays[delays.len() - 1]
    );
    Ok(())
}
