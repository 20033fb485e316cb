//! The web app's attention UI in a real headless Chromium against real nodes, on a LAN of
//! network namespaces (issue 23): a program in a session on bravo asks its person a
//! question (an OSC 9 notification) while the paired phone is not attached to it; the
//! page, with no refresh asked, shows the session's badge and counts it in its title (the
//! delay measured); a watch-only attach leaves it waiting and sends nothing of what is
//! typed (bravo's own read-only client shows none of it); attaching answers it; and a bell
//! while attached is cleared by typing.
//!
//! The phone screenshots of docs/ come from here: `target/browser-artifacts/
//! attention-{waiting,attached}-412x915.png` (the test prints where).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use loopsy_tests::{
    attach::Attached,
    browser::{Browser, PIXEL, artifacts_dir, invite_with_url, lan_options, phone_lan},
    node::Node,
    temp::TempDir,
    wait_for,
};

const WAIT: Duration = Duration::from_secs(30);
/// What the page shows within: it pulls the sessions every 5 s, and the waiting state
/// travels from bravo to alpha (whose registry the page pulls) in well under a second.
const PAGE_LEARNS: Duration = Duration::from_secs(12);
/// The question the agent asks, in its OSC 9 notification and on its screen.
const QUESTION: &str = "Allow the edit to src/main.rs?";

/// A small program that works like a coding agent: it reads for a while (until `go`
/// exists), asks its question on the screen and in an OSC 9 notification, reads the
/// answer, and leaves a shell.
fn agent_script(go: &Path) -> String {
    format!(
        "#!/bin/sh\n\
         echo 'agent: reading src/main.rs'\n\
         while [ ! -e '{go}' ]; do sleep 0.1; done\n\
         printf 'agent: %s [y/n] ' '{QUESTION}'\n\
         printf '\\033]9;%s\\007' '{QUESTION}'\n\
         read answer\n\
         echo \"agent: answer $answer, edit applied\"\n\
         exec sh\n",
        go = go.display()
    )
}

/// Writes the agent as `agent` in `dir` (which goes first in bravo's `PATH`).
fn install_agent(dir: &Path, go: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("agent");
    std::fs::write(&path, agent_script(go))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The texts of the page's waiting badges.
fn badges(browser: &mut Browser) -> anyhow::Result<Vec<String>> {
    browser.texts("phone", "waiting")
}

/// Waits, without touching the page, until it shows no badge; how long that took.
fn wait_no_badge(browser: &mut Browser, why: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    wait_for(why, PAGE_LEARNS, || {
        badges(browser).ok().filter(|b| b.is_empty()).map(drop)
    })?;
    Ok(start.elapsed())
}

/// The `waiting` of the session `name` on `node` (`session ls --json`), null when it does not wait.
fn waiting_on(node: &Node, name: &str) -> anyhow::Result<serde_json::Value> {
    let list = node.json(&["session", "ls", "--json"])?;
    let session = list
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == name))
        .ok_or_else(|| anyhow::anyhow!("no session {name} in {list}"))?;
    Ok(session["waiting"].clone())
}

#[test]
fn a_waiting_session_shows_on_the_phone_and_attaching_answers_it() -> anyhow::Result<()> {
    let Some((_lab, [alpha_ns, bravo_ns, phone_ns])) = phone_lan("webattn", "10.78.0")? else {
        return Ok(());
    };
    let bin = TempDir::new("agent-bin");
    let go = bin.path().join("go");
    install_agent(bin.path(), &go)?;
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    );
    let alpha = Node::start(lan_options("alpha", &alpha_ns, "10.78.0.1"))?;
    let bravo = Node::start(lan_options("bravo", &bravo_ns, "10.78.0.2").env("PATH", &path))?;
    alpha.pair_with(&bravo)?;
    bravo.ok(&["session", "new", "--name", "agent", "--", "agent"]);
    alpha.ok(&["session", "new", "--name", "build", "--", "sh"]);

    // The phone pairs with alpha; bravo learns of it from alpha, and admits it.
    let (mut invite, url) = invite_with_url(&alpha)?;
    let mut browser = Browser::start(Some(&phone_ns))?;
    browser.open("phone", &url, PIXEL)?;
    let me = browser.pair_from_link("phone", &mut invite, &alpha.peer_id)?;
    wait_for("bravo to trust the browser", WAIT, || {
        bravo
            .trusted()
            .iter()
            .any(|p| p["peer_id"] == me.as_str())
            .then_some(())
    })?;
    browser.wait_until_listed("phone", &["agent", "build"])?;
    assert!(badges(&mut browser)?.is_empty(), "nothing waits yet");
    assert_eq!(browser.title("phone")?, "Loopsy");

    // Someone watches on bravo itself, read-only (which answers nothing): what reaches the
    // session's terminal, it shows.
    let watcher = Attached::start_with(&bravo, "agent", &["--read-only"]);
    watcher.wait_for_text("agent: reading");

    // The agent asks while the phone is on the list: the page shows it by itself.
    let asked = Instant::now();
    std::fs::write(&go, b"")?;
    let shown = browser.wait_text("phone", "waiting", QUESTION, PAGE_LEARNS)?;
    let learned = asked.elapsed();
    eprintln!("the page showed the waiting session {learned:?} after the agent asked");
    assert_eq!(shown, [format!("waiting · asks: {QUESTION}")]);
    let rows = browser.texts("phone", "session")?;
    let agent_row = rows.iter().find(|r| r.starts_with("agent"));
    assert!(
        agent_row.is_some_and(|r| r.contains("bravo") && r.contains("waiting")),
        "the badge is on bravo's agent: {rows:?}"
    );
    assert!(
        rows.iter()
            .all(|r| r.starts_with("agent") || !r.contains("waiting")),
        "{rows:?}"
    );
    assert_eq!(browser.title("phone")?, "(1) Loopsy");
    let artifacts = artifacts_dir();
    let shot = |browser: &mut Browser, what: &str| -> anyhow::Result<()> {
        let (w, h) = PIXEL;
        let path = artifacts.join(format!("attention-{what}-{w}x{h}.png"));
        browser.screenshot("phone", &path)?;
        eprintln!("screenshot: {}", path.display());
        Ok(())
    };
    shot(&mut browser, "waiting")?;

    // Watch only: the screen comes, the keys go nowhere, and the session goes on waiting.
    browser.click("phone", "read-only", None)?;
    browser.click("phone", "session", Some("agent"))?;
    browser.wait_screen("phone", QUESTION, WAIT)?;
    browser.wait_text("phone", "attached-mode", "read-only", WAIT)?;
    browser.click("phone", "terminal", None)?;
    browser.type_text("phone", "no-from-watcher")?;
    browser.press("phone", "Enter")?;
    // Time for keys to reach bravo, had they been sent.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !watcher.text().contains("no-from-watcher"),
        "keys typed watch-only reached the session: {:?}",
        watcher.text()
    );
    assert!(!browser.screen("phone")?.contains("no-from-watcher"));
    assert!(
        !waiting_on(&bravo, "agent")?.is_null(),
        "a watch-only attach answers nothing"
    );
    browser.click("phone", "refresh", None)?;
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(badges(&mut browser)?.len(), 1, "still waiting");
    assert_eq!(browser.title("phone")?, "(1) Loopsy");

    // Attached to answer: the badge and the count go without a refresh.
    browser.click("phone", "detach", None)?;
    browser.click("phone", "read-only", None)?;
    browser.click("phone", "session", Some("agent"))?;
    browser.wait_screen("phone", QUESTION, WAIT)?;
    let cleared = wait_no_badge(&mut browser, "the badge to go after attaching")?;
    eprintln!("the badge went {cleared:?} after the attach");
    assert_eq!(browser.title("phone")?, "Loopsy");
    assert!(waiting_on(&bravo, "agent")?.is_null());
    browser.click("phone", "terminal", None)?;
    browser.type_text("phone", "y")?;
    browser.press("phone", "Enter")?;
    browser.wait_screen("phone", "agent: answer y, edit applied", WAIT)?;
    // What the phone types does reach the session: bravo's watcher shows it too.
    watcher.wait_for_text("agent: answer y, edit applied");

    // A bell while attached waits again; typing answers it.
    browser.type_text("phone", "sleep 1; printf 'tests %s\\a\\n' passed")?;
    browser.press("phone", "Enter")?;
    browser.wait_screen("phone", "tests passed", WAIT)?;
    browser.wait_text("phone", "waiting", "bell", PAGE_LEARNS)?;
    assert_eq!(browser.title("phone")?, "(1) Loopsy");
    browser.type_text("phone", "echo answered-$((6*7))")?;
    browser.press("phone", "Enter")?;
    browser.wait_screen("phone", "answered-42", WAIT)?;
    let cleared = wait_no_badge(&mut browser, "the badge to go after typing")?;
    eprintln!("the bell's badge went {cleared:?} after typing");
    assert_eq!(browser.title("phone")?, "Loopsy");
    shot(&mut browser, "attached")?;

    // Over all of this, the phone's connection to bravo stayed up: js-libp2p pings every
    // connection and cuts it when no answer comes, which bravo's libp2p gave only to a
    // peer that answers pings too.
    let cut = format!("connection closed peer_id={me}");
    assert!(
        !bravo.log().contains(&cut),
        "bravo saw the phone's connection cut:\n{}",
        bravo.log()
    );
    Ok(())
}
