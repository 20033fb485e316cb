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
    // `asciinema cat` wants a terminal: `script` gives it one that passes bytes unchanged.
    let replayed = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("stty -opost; asciinema cat '{}'", file.display()),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::null())
        .output()?;
    assert!(
        replayed.status.success(),
        "asciinema cat: {}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&replayed.stdout),
        "hello\r\nwörld \x1b[1mbold\x1b[0m\r\n"
    );
    Ok(())
}
