//! The state files of a home: a node killed while it writes them starts again with every
//! write it acknowledged, and a damaged file is replaced by its previous copy.

use std::{
    collections::BTreeSet,
    fs,
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use loopsy_tests::{
    node::{self, Node, Options},
    temp::TempDir,
    wait_for,
};

/// The keys of the shared context under `prefix`, as `ctx ls` lists them.
fn keys(node: &Node, prefix: &str) -> anyhow::Result<BTreeSet<String>> {
    let listed = node.json(&["ctx", "ls", "--prefix", prefix, "--json"])?;
    Ok(listed
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["key"].as_str())
                .map(str::to_owned)
        })
        .into_iter()
        .flatten()
        .collect())
}

/// The keys of `acknowledged` (`ROUND/CLIENT/N`) that `node` does not hold, listed a
/// client's round at a time (a listing is one control frame).
fn lost(node: &Node, acknowledged: &BTreeSet<String>) -> anyhow::Result<Vec<String>> {
    let prefixes: BTreeSet<&str> = acknowledged
        .iter()
        .filter_map(|k| k.rsplit_once('/').map(|(p, _)| p))
        .collect();
    let mut held = BTreeSet::new();
    for prefix in prefixes {
        held.extend(keys(node, &format!("{prefix}/"))?);
    }
    Ok(acknowledged.difference(&held).cloned().collect())
}

/// Files in `home` whose names start with `prefix`.
fn named(home: &Path, prefix: &str) -> Vec<String> {
    fs::read_dir(home)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_node_killed_while_writing_starts_again_with_every_acknowledged_write() -> anyhow::Result<()> {
    let home = TempDir::new("alpha-home");
    let options = Options::isolated("alpha").home(&home.path().join("home"));
    // Big values, so that every write of ctx.cbor takes a while and the kill lands in one.
    let value = "v".repeat(8 * 1024);
    let acknowledged = Mutex::new(BTreeSet::new());
    for round in 0..6 {
        // Starting at all is the first check: a node that cannot load a file stops.
        let mut alpha = Node::start(options.clone())?;
        let dir = alpha.home();
        let lost = lost(&alpha, &acknowledged.lock().unwrap())?;
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged, then lost: {lost:?}"
        );
        assert!(
            named(&dir, "ctx.cbor.corrupt").is_empty(),
            "a write was torn"
        );
        assert!(
            named(&dir, "ctx.cbor.tmp").is_empty(),
            "temporary files of the killed node are left"
        );

        // Four clients write at once; the node is killed under them.
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for client in 0..4 {
                let (dir, value, stop, acknowledged) = (&dir, &value, &stop, &acknowledged);
                scope.spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("r{round}/c{client}/{n}");
                        let out = node::cli(dir, &["ctx", "set", &key, value]);
                        if out.status.success() {
                            acknowledged.lock().unwrap().insert(key);
                        }
                        n += 1;
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(1000 + 200 * round));
            node::signal(alpha.pid(), "KILL");
            stop.store(true, Ordering::Relaxed);
        });
        alpha.kill();
    }
    let alpha = Node::start(options)?;
    let acknowledged = acknowledged.into_inner().unwrap();
    assert!(
        acknowledged.len() > 20,
        "only {} writes",
        acknowledged.len()
    );
    let lost = lost(&alpha, &acknowledged)?;
    assert!(lost.is_empty(), "acknowledged, then lost: {lost:?}");
    Ok(())
}

/// Cuts the file at `path` in the middle of a line, or at the end of one.
fn tear(path: &Path, at_a_line: bool) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut cut = bytes.len() / 2;
    if at_a_line {
        cut = bytes[..cut]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
    }
    fs::write(path, &bytes[..cut]).expect("tear");
}

#[test]
fn damaged_state_files_are_replaced_by_their_previous_copies() -> anyhow::Result<()> {
    let home = TempDir::new("alpha-home");
    let options = Options::isolated("alpha").home(&home.path().join("home"));
    let alpha = Node::start(options.clone())?;
    let bravo = Node::start(Options::isolated("bravo"))?;
    alpha.pair_with(&bravo)?;
    alpha.ok(&["ctx", "set", "first", "1"]);
    alpha.ok(&["ctx", "set", "second", "2"]);
    wait_for("bravo to hold both keys", Duration::from_secs(20), || {
        (keys(&bravo, "").ok()? == ["first", "second"].map(String::from).into()).then_some(())
    })?;
    // Two writes of each file at least, so that each has a previous copy.
    alpha.ok(&["session", "new", "--name", "kept", "--", "sleep", "600"]);
    alpha.ok(&["session", "new", "--name", "other", "--", "sleep", "600"]);
    let dir = alpha.home();
    alpha.stop()?;

    // Every file cut short (TOML at the end of a line, where it still parses).
    tear(&dir.join("ctx.cbor"), false);
    tear(&dir.join("registry.cbor"), false);
    tear(&dir.join("sessions.json"), false);
    tear(&dir.join("trust.toml"), true);
    let alpha = Node::start(options)?;
    for file in ["ctx.cbor", "registry.cbor", "sessions.json", "trust.toml"] {
        assert_eq!(
            named(&dir, &format!("{file}.corrupt")).len(),
            1,
            "{file} is kept aside"
        );
        assert!(
            alpha.log().contains(&format!("{file}.prev")),
            "the log says {file} was restored from its previous copy"
        );
    }
    // The previous copies: bravo is still a member, the session is still listed, the
    // context has its first key; the second comes back from bravo.
    assert!(
        alpha
            .trusted()
            .iter()
            .any(|p| p["peer_id"] == bravo.peer_id.as_str()),
        "bravo is no longer trusted"
    );
    let sessions = alpha.json(&["session", "ls", "--json"])?;
    assert!(
        sessions.to_string().contains("\"kept\""),
        "the session is lost: {sessions}"
    );
    assert!(keys(&alpha, "")?.contains("first"));
    wait_for(
        "the second key back from bravo",
        Duration::from_secs(30),
        || keys(&alpha, "").ok()?.contains("second").then_some(()),
    )?;
    Ok(())
}
