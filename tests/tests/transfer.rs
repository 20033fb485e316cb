//! `loopsy cp` between two real nodes: trees byte for byte both ways, scp's rules, resume
//! after the sending daemon is killed, confinement to the file roots (refused and audited),
//! and a full disk.

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt, symlink},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use loopsy_tests::{
    netlab,
    node::{Node, Options, Reaped},
    temp::TempDir,
    wait_for,
};
use serde_json::Value;

/// Chunk size of `/loopsy/transfer/1`.
const CHUNK: usize = loopsy_wire::transfer::CHUNK;

/// A node whose file root (its `HOME`) is `root`.
fn node_with_root(name: &str, root: &Path, home: Option<&Path>) -> anyhow::Result<Node> {
    fs::create_dir_all(root)?;
    let mut options = Options::isolated(name).env("HOME", root);
    if let Some(home) = home {
        options = options.home(home);
    }
    Node::start(options)
}

/// Deterministic bytes that do not compress.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A tree with the sizes around the chunk, many small files, modes, links and odd names.
fn make_tree(root: &Path) -> std::io::Result<()> {
    fs::create_dir_all(root.join("many"))?;
    let sizes = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * 1024 * 1024 + 3];
    for (i, size) in sizes.into_iter().enumerate() {
        fs::write(root.join(format!("size-{size}")), noise(size, i as u64))?;
    }
    for i in 0..300 {
        fs::write(
            root.join(format!("many/{i:04}")),
            noise(i * 7, 1000 + i as u64),
        )?;
    }
    let odd = root.join("odd dir/ünïcødé");
    fs::create_dir_all(&odd)?;
    fs::write(odd.join("with space.txt"), "space")?;
    fs::write(odd.join("new\nline"), "newline")?;
    let exe = root.join("run.sh");
    fs::write(&exe, "#!/bin/sh\necho hi\n")?;
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o750))?;
    fs::set_permissions(root.join("size-1"), fs::Permissions::from_mode(0o600))?;
    symlink("size-1", root.join("link"))?;
    symlink("/etc/hostname", root.join("absolute-link"))?;
    Ok(())
}

/// Every entry under `a` is under `b` alike: bytes, mode, mtime, link target.
fn assert_same_tree(a: &Path, b: &Path) {
    let (ma, mb) = (
        fs::symlink_metadata(a).expect("source entry"),
        fs::symlink_metadata(b).unwrap_or_else(|e| panic!("{}: {e}", b.display())),
    );
    assert_eq!(ma.file_type(), mb.file_type(), "{}", b.display());
    if ma.file_type().is_symlink() {
        assert_eq!(fs::read_link(a).ok(), fs::read_link(b).ok());
        return;
    }
    assert_eq!(
        ma.mode() & 0o777,
        mb.mode() & 0o777,
        "mode of {}",
        b.display()
    );
    assert_eq!(
        (ma.mtime(), ma.mtime_nsec()),
        (mb.mtime(), mb.mtime_nsec()),
        "mtime of {}",
        b.display()
    );
    if ma.is_dir() {
        let names = |d: &Path| {
            let mut n: Vec<_> = fs::read_dir(d)
                .expect("a directory")
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(a), names(b), "entries of {}", b.display());
        for name in names(a) {
            assert_same_tree(&a.join(&name), &b.join(&name));
        }
    } else {
        assert!(
            fs::read(a).ok() == fs::read(b).ok(),
            "bytes of {}",
            b.display()
        );
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 test path")
}

/// `loopsy cp --json ARGS..` from `node`: its exit code and its summary (or stderr).
fn cp(node: &Node, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["cp", "--json"];
    all.extend_from_slice(args);
    let out = node.cli(&all);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), json, stderr)
}

#[test]
fn trees_go_both_ways_byte_for_byte() -> anyhow::Result<()> {
    let tmp = TempDir::new("cp-tree");
    let (root_a, local) = (tmp.path().join("alpha-root"), tmp.path().join("local"));
    let a = node_with_root("alpha", &root_a, None)?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    let src = local.join("src");
    make_tree(&src)?;

    // Push: `inbox` does not exist, so the tree arrives under that name (scp's rule).
    let (code, sent, err) = cp(&b, &["-r", "--sha256", path(&src), "alpha:inbox"]);
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&src, &root_a.join("inbox"));
    assert_eq!(sent["failed"], 0);
    let big = format!("src/size-{}", 5 * 1024 * 1024 + 3);
    let file = sent["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == big.as_str())
        .expect("the big file is reported");
    let sha = Command::new("sha256sum")
        .arg(root_a.join("inbox").join(&big[4..]))
        .output()?;
    let sha = String::from_utf8_lossy(&sha.stdout);
    assert_eq!(file["sha256"].as_str(), sha.split_whitespace().next());

    // Pull it back into an existing directory: it lands inside, as `inbox`.
    fs::create_dir_all(local.join("back"))?;
    let (code, _, err) = cp(&b, &["-r", "alpha:inbox", path(&local.join("back"))]);
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&src, &local.join("back/inbox"));

    // Several files into a directory, by absolute path inside the root; and without -r a
    // directory is refused.
    let files = [src.join("size-0"), src.join("run.sh")];
    let dest = format!("alpha:{}", path(&root_a.join("inbox/many")));
    let (code, _, err) = cp(&b, &[path(&files[0]), path(&files[1]), &dest]);
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&files[1], &root_a.join("inbox/many/run.sh"));
    let (code, _, err) = cp(&b, &[path(&src), "alpha:other"]);
    assert_ne!(code, 0);
    assert!(err.contains("-r"), "{err}");

    // A source with no name of its own cannot go into a directory (the sender would pick
    // the name there), only become a new name.
    let (code, _, err) = cp(&b, &["-r", "alpha:", path(&local)]);
    assert_ne!(code, 0);
    assert!(err.contains("name the directory"), "{err}");
    let (code, _, err) = cp(&b, &["-r", "alpha:", path(&local.join("whole"))]);
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&root_a.join("inbox"), &local.join("whole/inbox"));

    // No clobber keeps what is there.
    fs::write(root_a.join("keep"), "mine")?;
    let (code, summary, err) = cp(&b, &["-n", path(&files[0]), "alpha:keep"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary["files"][0]["outcome"], "skipped");
    assert_eq!(fs::read(root_a.join("keep"))?, b"mine");
    Ok(())
}

/// Runs the cut copy of `big` from `node` to alpha again, once the devices have met again
/// after a restart: its summary, the bytes it kept, and the bytes it sent.
fn copy_again(node: &Node, big: &Path) -> anyhow::Result<(Value, u64, u64)> {
    let (code, summary, err) = wait_for("the copy to run again", Duration::from_secs(30), || {
        let result = cp(node, &[path(big), "alpha:"]);
        // Right after the restart the devices may not have met again yet.
        (!result.2.contains("cannot reach")).then_some(result)
    })?;
    assert_eq!(code, 0, "{err}");
    let resumed = summary["files"][0]["resumed"].as_u64().unwrap_or(0);
    let transferred = summary["transferred"].as_u64().unwrap_or(u64::MAX);
    Ok((summary, resumed, transferred))
}

#[test]
fn a_copy_cut_by_killing_the_receiver_resumes_and_nothing_is_corrupt() -> anyhow::Result<()> {
    let tmp = TempDir::new("cp-receiver");
    let root_a = tmp.path().join("alpha-root");
    let home_a = tmp.path().join("alpha-home");
    let mut a = node_with_root("alpha", &root_a, Some(&home_a))?;
    let b = node_with_root("bravo", &tmp.path().join("bravo-root"), None)?;
    a.pair_with(&b)?;
    let size = 300 * 1024 * 1024;
    let big = tmp.path().join("big");
    fs::write(&big, noise(size, 11))?;
    let part = root_a.join(".big.loopsy-part");

    let copy = Reaped(b.spawn_cli(&["cp", "--json", path(&big), "alpha:"]));
    wait_for(
        "part of the copy to arrive",
        Duration::from_secs(60),
        || {
            let len = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            (len > 64 * 1024 * 1024).then_some(())
        },
    )?;
    // The receiving daemon dies with its part file half written (kill -9).
    a.kill();
    drop(copy);
    assert!(!root_a.join("big").exists(), "nothing under the final name");

    let a = node_with_root("alpha", &root_a, Some(&home_a))?;
    let (summary, resumed, transferred) = copy_again(&b, &big)?;
    assert!(
        resumed > 0,
        "what arrived before the kill was kept: {summary}"
    );
    assert_eq!(resumed + transferred, size as u64, "{summary}");
    assert!(
        fs::read(root_a.join("big"))? == fs::read(&big)?,
        "not a byte wrong"
    );
    assert!(!part.exists());
    drop(a);
    Ok(())
}

#[test]
fn a_copy_cut_by_killing_the_sender_resumes_where_it_stopped() -> anyhow::Result<()> {
    let tmp = TempDir::new("cp-resume");
    let root_a = tmp.path().join("alpha-root");
    let home_b = tmp.path().join("bravo-home");
    let a = node_with_root("alpha", &root_a, None)?;
    let mut b = node_with_root("bravo", &tmp.path().join("bravo-root"), Some(&home_b))?;
    a.pair_with(&b)?;
    let size = 400 * 1024 * 1024;
    let big = tmp.path().join("big");
    fs::write(&big, noise(size, 7))?;
    let part = root_a.join(".big.loopsy-part");

    let copy = Reaped(b.spawn_cli(&["cp", "--json", path(&big), "alpha:"]));
    // Kill the sending daemon once a good part has arrived.
    let arrived = wait_for(
        "part of the copy to arrive",
        Duration::from_secs(60),
        || {
            let len = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            (len > 64 * 1024 * 1024).then_some(len)
        },
    )?;
    b.kill();
    drop(copy);
    assert!(!root_a.join("big").exists(), "nothing under the final name");
    assert!((arrived as usize) < size, "the copy was cut before the end");

    let b = node_with_root("bravo", &tmp.path().join("bravo-root"), Some(&home_b))?;
    let (summary, resumed, transferred) = copy_again(&b, &big)?;
    assert!(
        resumed >= arrived - arrived % CHUNK as u64 - CHUNK as u64,
        "{summary}"
    );
    assert_eq!(
        resumed + transferred,
        size as u64,
        "only the rest was sent: {summary}"
    );
    assert!(fs::read(root_a.join("big"))? == fs::read(&big)?);
    assert!(!part.exists());
    Ok(())
}

#[test]
fn paths_outside_the_roots_are_refused_named_and_audited() -> anyhow::Result<()> {
    let tmp = TempDir::new("cp-escape");
    let (root_a, local) = (tmp.path().join("alpha-root"), tmp.path().join("local"));
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside)?;
    fs::write(outside.join("secret"), "secret")?;
    let a = node_with_root("alpha", &root_a, None)?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    symlink(&outside, root_a.join("door"))?;
    fs::create_dir_all(&local)?;
    fs::write(local.join("f"), "f")?;
    let into = path(&local);
    let secret = format!("alpha:{}", path(&outside.join("secret")));
    let f = local.join("f");
    let f = path(&f);
    let cases: [(&[&str], &str); 6] = [
        (&["alpha:../outside/secret", into], ".."),
        (&[&secret, into], "outside the allowed roots"),
        (&["alpha:door/secret", into], "outside the allowed roots"),
        (&["-r", "alpha:door", into], "outside the allowed roots"),
        (&[f, "alpha:door"], "outside the allowed roots"),
        (
            &[f, "alpha:/tmp/loopsy-escape"],
            "outside the allowed roots",
        ),
    ];
    for (args, why) in cases {
        let (code, _, err) = cp(&b, args);
        assert_ne!(code, 0, "{args:?} must be refused");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    assert!(!local.join("secret").exists() && !local.join("door").exists());
    assert_eq!(
        fs::read_dir(&outside)?.count(),
        1,
        "nothing written outside"
    );
    assert!(!Path::new("/tmp/loopsy-escape").exists());
    let denied = a
        .audit()
        .into_iter()
        .filter(|e| e["action"].as_str().is_some_and(|a| a.starts_with("cp")))
        .filter(|e| e["result"] == "denied")
        .count();
    assert_eq!(denied, 6, "every refusal is audited: {:?}", a.audit());
    Ok(())
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        if std::env::var(netlab::SKIP_VAR).is_ok_and(|v| v == "1") {
            eprintln!("skipped: {}=1", netlab::SKIP_VAR);
            return None;
        }
        fs::create_dir_all(at).expect("a mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "this test mounts a small tmpfs to fill it and cannot here: run it as root, or set \
             {}=1 to skip tests that need root",
            netlab::SKIP_VAR
        );
        Some(Self(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_leaves_nothing_behind() -> anyhow::Result<()> {
    let tmp = TempDir::new("cp-full");
    let root_a = tmp.path().join("alpha-root");
    let Some(_disk) = Tmpfs::mount(&root_a, "8m") else {
        return Ok(());
    };
    let a = node_with_root("alpha", &root_a, None)?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    let big = tmp.path().join("big");
    fs::write(&big, noise(20 * 1024 * 1024, 3))?;
    let (code, _, err) = cp(&b, &[path(&big), "alpha:"]);
    assert_ne!(code, 0);
    assert!(err.contains("No space left on device"), "{err}");
    let left: Vec<_> = fs::read_dir(&root_a)?
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "no partial file, nothing under the final name: {left:?}"
    );
    // The node goes on serving.
    let small = tmp.path().join("small");
    fs::write(&small, "fits")?;
    let (code, _, err) = cp(&b, &[path(&small), "alpha:"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read(root_a.join("small"))?, b"fits");
    Ok(())
}

/// `loopsy cp ARGS..` from `node` as a person runs it: exit code and stderr.
fn cp_plain(node: &Node, args: &[&str]) -> (i32, String) {
    let mut all = vec!["cp"];
    all.extend_from_slice(args);
    let out = node.cli(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn a_trailing_slash_names_a_directory_and_failures_read_as_cp_words() -> anyhow::Result<()> {
    let tmp = TempDir::new("cp-words");
    let (root_a, local) = (tmp.path().join("alpha-root"), tmp.path().join("local"));
    let a = node_with_root("alpha", &root_a, None)?;
    let b = Node::start(Options::isolated("bravo"))?;
    a.pair_with(&b)?;
    fs::create_dir_all(&local)?;
    fs::write(local.join("f1.txt"), "one")?;
    fs::write(root_a.join("there.txt"), "there")?;
    let (f1, missing_here) = (local.join("f1.txt"), local.join("nothere"));
    let (into_new, root) = (local.join("newdir/"), path(&root_a));
    let cases: [(&[&str], String); 7] = [
        // A trailing `/` names a directory, both ways: never a new file of that name.
        (
            &[path(&f1), "alpha:newdir/"],
            format!("alpha: {root}/newdir/: no such directory"),
        ),
        (
            &["alpha:there.txt", path(&into_new)],
            format!("{}: no such directory", path(&into_new)),
        ),
        (
            &[path(&f1), "alpha:there.txt/"],
            format!("alpha: {root}/there.txt/: not a directory"),
        ),
        // Missing files, on either side, in the words cp uses.
        (
            &["alpha:nothere", path(&local)],
            format!("alpha: {root}/nothere: no such file or directory"),
        ),
        (
            &["alpha:there.txt/x", path(&local)],
            format!("alpha: {root}/there.txt/x: not a directory"),
        ),
        (
            &[path(&missing_here), "alpha:"],
            format!("{}: no such file or directory", path(&missing_here)),
        ),
        (
            &[path(&f1), path(&f1), "alpha:nodir"],
            format!("alpha: {root}/nodir: no such directory"),
        ),
    ];
    for (args, said) in cases {
        let (code, err) = cp_plain(&b, args);
        assert_eq!(
            (code, err.as_str()),
            (1, format!("loopsy: {said}\n").as_str()),
            "{args:?}"
        );
        // Under --json the failure is JSON too, with the same words.
        let (code, json, _) = cp(&b, args);
        assert_eq!(code, 1, "{args:?}");
        assert_eq!(json["error"], said.as_str(), "{args:?}");
        assert_eq!(json["files"], serde_json::json!([]), "{args:?}");
    }
    assert!(!root_a.join("newdir").exists() && !local.join("newdir").exists());
    assert!(!root_a.join("nodir").exists());
    assert_eq!(fs::read(root_a.join("there.txt"))?, b"there");

    // Into a directory that is there, a trailing `/` is only what it says.
    fs::create_dir(root_a.join("inbox"))?;
    let (code, err) = cp_plain(&b, &[path(&f1), "alpha:inbox/"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read(root_a.join("inbox/f1.txt"))?, b"one");
    Ok(())
}
