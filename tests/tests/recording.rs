//! Recordings between real nodes: `session export` from another device writes the host's
//! retained output as asciicast v2, with its times, and `asciinema cat` replays it equal to
//! what the session's program printed.

use std::time::Duration;

use loopsy_tests::{
    node::{Node, Options},
    temp::TempDir,
    wait_for,
};
use serde_json::Value;

#[test]
fn an_exported_session_replays_in_asciinema_as_it_was() -> anyhow::Result<()> {
    let has_asciinema = std::process::Command::new("asciinema")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_asciinema,
        "this test needs asciinema (Debian: apt-get install asciinema)"
    );
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    let script = "printf 'hello\\n'; sleep 1; printf 'w\\303\\266rld \\033[1mbold\\033[0m\\n'; \
                  exec sleep 600";
    let id = a
        .ok(&["session", "new", "--name", "rec", "--", "sh", "-c", script])
        .trim()
        .to_owned();
    wait_for("bravo to list it", Duration::from_secs(20), || {
        let list = b.json(&["session", "ls", "--json"]).ok()?;
        list.as_array()?
            .iter()
            .find(|s| s["id"] == id.as_str())
            .cloned()
    })?;
    std::thread::sleep(Duration::from_millis(1500));

    let dir = TempDir::new("recording");
    let file = dir.path().join("rec.cast");
    b.ok(&[
        "session",
        "export",
        "rec",
        "--output",
        file.to_str().unwrap_or_default(),
    ]);
    let text = std::fs::read_to_string(&file)?;
    let lines: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines[0]["version"], 2, "{text}");
    // Times kept: the second line came about a second after the first.
    let times: Vec<f64> = lines[1..].iter().filter_map(|l| l[0].as_f64()).collect();
    let last = times.last().copied().unwrap_or_default();
    assert!(
        (0.8..3.0).contains(&last),
        "the pieces' times {times:?} in:\n{text}"
    );

    // The output as the program printed it, through the terminal (\n became \r\n).
    assert_eq!(
        String::from_utf8_lossy(&asciinema_cat(&file)?),
        "hello\r\nwörld \x1b[1mbold\x1b[0m\r\n"
    );
    Ok(())
}

/// `asciinema cat FILE` as a terminal that passes bytes unchanged shows it (it wants a
/// terminal: `script` gives it one).
fn asciinema_cat(file: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let replayed = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("stty -opost; asciinema cat '{}'", file.display()),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::null())
        .output()?;
    anyhow::ensure!(
        replayed.status.success(),
        "asciinema cat: {}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    Ok(replayed.stdout)
}

fn listed(node: &Node, id: &str) -> Option<Value> {
    let list = node.json(&["session", "ls", "--json"]).ok()?;
    list.as_array()?.iter().find(|s| s["id"] == id).cloned()
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_default()
}

/// A node whose config has `[sessions]` settings.
fn node_with_sessions(name: &str, dir: &TempDir, settings: &str) -> Node {
    let home = dir.path().join(name);
    std::fs::create_dir_all(&home).expect("a home");
    std::fs::write(home.join("config.toml"), format!("[sessions]\n{settings}")).expect("config");
    Node::start(Options::isolated(name).home(&home)).expect("a node")
}

#[test]
fn a_recorded_session_exports_whole_beyond_the_ring_and_can_be_deleted() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    // About 5.3 MB: more than the 4 MiB ring, so its start has left the ring.
    const LINES: usize = 700_000;
    let script = format!("seq 1 {LINES}; exec sleep 600");
    // Started by the other device, with a name that would be a path.
    let started = b.json(&[
        "session",
        "new",
        "--on",
        "alpha",
        "--record",
        "--json",
        "--name",
        "../../evil",
        "--",
        "sh",
        "-c",
        &script,
    ])?;
    let id = started["id"].as_str().unwrap_or_default().to_owned();
    assert!(started["recording"].is_object(), "{started}");
    // All of it: past the ring, and no longer growing (the program then only sleeps).
    let last = std::cell::Cell::new(0);
    let done = wait_for("alpha to record it all", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(300));
        let s = listed(&a, &id)?;
        let bytes = s["recording"]["bytes"].as_u64()?;
        let settled = bytes > 5_000_000 && bytes == last.replace(bytes);
        settled.then_some(s)
    })?;
    assert_eq!(done["recording"]["full"], false, "{done}");
    // Only the session's ID names a file, in the home, for this user alone.
    let dir = a.home().join("recordings");
    let files: Vec<String> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, [format!("{id}.cast")]);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(format!("{id}.cast"))), 0o600);
    // Listed everywhere as recorded.
    wait_for(
        "bravo to list the recording",
        Duration::from_secs(20),
        || {
            let list = b.json(&["session", "recordings", "--json"]).ok()?;
            list.as_array()?
                .iter()
                .any(|s| s["id"] == id.as_str())
                .then_some(())
        },
    )?;

    let out = TempDir::new("recorded");
    let file = out.path().join("all.cast");
    b.ok(&[
        "session",
        "export",
        &id,
        "--output",
        file.to_str().unwrap_or_default(),
    ]);
    let expected: String = (1..=LINES).map(|n| format!("{n}\r\n")).collect();
    let shown = asciinema_cat(&file)?;
    assert!(
        shown == expected.as_bytes(),
        "asciinema cat shows {} bytes, the program printed {} (starting {:?})",
        shown.len(),
        expected.len(),
        String::from_utf8_lossy(&shown[..shown.len().min(40)])
    );

    // Deleted: the file is gone, and the export falls back to the ring (its end only).
    let deleted = b.ok(&["session", "rm-recording", &id]);
    assert!(deleted.contains("deleted the recording"), "{deleted}");
    assert!(!dir.join(format!("{id}.cast")).exists());
    wait_for(
        "bravo to list it unrecorded",
        Duration::from_secs(20),
        || listed(&b, &id)?.get("recording").is_none().then_some(()),
    )?;
    b.ok(&[
        "session",
        "export",
        &id,
        "--output",
        file.to_str().unwrap_or_default(),
    ]);
    let ring = std::fs::read_to_string(&file)?;
    assert!(
        !ring.contains("\"1\\r\\n2\\r\\n"),
        "the start left the ring"
    );
    let again = b.cli(&["session", "rm-recording", &id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("has no recording"));
    Ok(())
}

#[test]
fn a_recording_stops_at_the_hosts_bound_and_says_so() -> anyhow::Result<()> {
    let dir = TempDir::new("bound");
    let a = node_with_sessions("alpha", &dir, "record_max_mib = 1");
    let id = a
        .ok(&[
            "session",
            "new",
            "--record",
            "--",
            "sh",
            "-c",
            "seq 1 400000; exec sleep 600",
        ])
        .trim()
        .to_owned();
    let full = wait_for("the recording to fill", Duration::from_secs(30), || {
        let s = listed(&a, &id)?;
        (s["recording"]["full"] == true).then_some(s)
    })?;
    let file = a.home().join("recordings").join(format!("{id}.cast"));
    let size = std::fs::metadata(&file)?.len();
    assert!(size <= 1024 * 1024, "{size} bytes");
    assert_eq!(full["recording"]["bytes"].as_u64(), Some(size));
    assert_eq!(full["recording"]["max_bytes"].as_u64(), Some(1024 * 1024));
    let table = a.ok(&["session", "recordings"]);
    assert!(table.contains("stopped at its bound"), "{table}");
    // Said once in the host's log.
    let log = a.log();
    assert_eq!(log.matches("reached its size bound").count(), 1, "{log}");
    // A bound out of range is refused where the config is read.
    let bad = TempDir::new("bad-bound");
    let home = bad.path().join("x");
    std::fs::create_dir_all(&home)?;
    std::fs::write(
        home.join("config.toml"),
        "[sessions]\nrecord_max_mib = 100000\n",
    )?;
    let refused = Node::start(Options::isolated("x").home(&home));
    assert!(refused.is_err(), "a node started with a 100000 MiB bound");
    Ok(())
}

#[test]
fn a_peer_cannot_keep_more_recordings_on_a_host_than_its_bound() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    let start = |b: &Node| {
        b.cli(&[
            "session", "new", "--on", "alpha", "--record", "--", "sleep", "600",
        ])
    };
    let mut ids = Vec::new();
    for _ in 0..16 {
        let made = start(&b);
        assert!(made.status.success(), "{made:?}");
        ids.push(String::from_utf8_lossy(&made.stdout).trim().to_owned());
    }
    let refused = start(&b);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("16 recordings already"), "{said}");
    // One ends: its recording is the oldest of an ended session, and makes room.
    b.ok(&["session", "kill", &ids[0]]);
    let made = start(&b);
    assert!(made.status.success(), "{made:?}");
    let files = std::fs::read_dir(a.home().join("recordings"))?.count();
    assert_eq!(files, 16);
    wait_for(
        "the ended one listed unrecorded",
        Duration::from_secs(20),
        || {
            listed(&a, &ids[0])?
                .get("recording")
                .is_none()
                .then_some(())
        },
    )?;
    Ok(())
}
