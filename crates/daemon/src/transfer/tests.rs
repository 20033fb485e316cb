//! The engine end to end over an in-memory stream: real files on both sides, and a hand-driven
//! sender for the hostile cases.

use std::{
    fs,
    os::unix::{
        ffi::OsStrExt,
        fs::{MetadataExt, PermissionsExt, symlink},
    },
    path::{Path, PathBuf},
};

use loopsy_wire::transfer::{
    CHUNK, Data, Entry, Kind, MAX_PACKED, Outcome, Plan, Receive, Reply, Send, Whole,
};
use serde_bytes::ByteBuf;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use super::{
    Expect, Progress, Summary, TransferError, confine::Escape, dirs::Dest, get, put, receive, send,
    walk,
};

/// What a push lets the sender send.
fn anything() -> Expect {
    Expect {
        names: None,
        recursive: true,
        reports: true,
        homes: Default::default(),
    }
}

type Pipe = Compat<tokio::io::DuplexStream>;

fn pipe() -> (Pipe, Pipe) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (a.compat(), b.compat())
}

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loopsy-xfer-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh directory for the test, and an empty `dest` in it.
fn with_dest(tag: &str) -> (PathBuf, PathBuf) {
    let dir = temp(tag);
    let dest = dir.join("dest");
    fs::create_dir(&dest).unwrap();
    (dir, dest)
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

/// Copies `sources` into `dest` through the engine, both sides in this process.
async fn copy(
    sources: &[PathBuf],
    dest: &Path,
    options: Receive,
) -> (
    Result<Summary, TransferError>,
    Result<Summary, TransferError>,
) {
    let items = walk::walk(sources, true).unwrap();
    let sending = Send {
        recursive: true,
        sha256: true,
    };
    exchange(items, sources.len() as u32, sending, dest, options).await
}

/// Sends `items` through the engine into `dest`, both sides in this process.
async fn exchange(
    items: Vec<walk::Item>,
    sources: u32,
    sending: Send,
    dest: &Path,
    receiving: Receive,
) -> (
    Result<Summary, TransferError>,
    Result<Summary, TransferError>,
) {
    let (a, b) = pipe();
    let (p1, p2) = (Progress::default(), Progress::default());
    tokio::join!(
        send::send(a, items, sources, sending, true, &p1),
        receive::receive(
            b,
            Dest::local(dest.to_path_buf()),
            receiving,
            anything(),
            &p2
        ),
    )
}

/// Every file, directory and link under `a` is under `b` alike: bytes, modes, times, targets.
fn assert_same_tree(a: &Path, b: &Path) {
    let meta_a = fs::symlink_metadata(a).unwrap();
    let meta_b = fs::symlink_metadata(b).unwrap_or_else(|e| panic!("{}: {e}", b.display()));
    assert_eq!(meta_a.file_type(), meta_b.file_type(), "{}", b.display());
    if meta_a.file_type().is_symlink() {
        assert_eq!(fs::read_link(a).unwrap(), fs::read_link(b).unwrap());
        return;
    }
    assert_eq!(
        meta_a.mode() & 0o777,
        meta_b.mode() & 0o777,
        "{}",
        b.display()
    );
    assert_eq!(meta_a.mtime(), meta_b.mtime(), "{}", b.display());
    assert_eq!(meta_a.mtime_nsec(), meta_b.mtime_nsec(), "{}", b.display());
    if meta_a.is_dir() {
        let names = |dir: &Path| {
            let mut names: Vec<_> = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            names
        };
        let (in_a, in_b) = (names(a), names(b));
        assert_eq!(in_a, in_b, "{}", b.display());
        for name in in_a {
            assert_same_tree(&a.join(&name), &b.join(&name));
        }
    } else {
        assert!(
            fs::read(a).unwrap() == fs::read(b).unwrap(),
            "{}",
            b.display()
        );
    }
}

fn make_tree(root: &Path) {
    let odd = root.join("odd names");
    fs::create_dir_all(odd.join("ünïcødé dir")).unwrap();
    for (i, len) in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12_345]
        .into_iter()
        .enumerate()
    {
        fs::write(root.join(format!("size-{len}")), data(len, i as u8)).unwrap();
    }
    fs::write(odd.join("with space"), "a").unwrap();
    fs::write(odd.join("new\nline"), "b").unwrap();
    fs::write(odd.join(std::ffi::OsStr::from_bytes(b"not-utf8-\xff")), "c").unwrap();
    fs::write(odd.join("ünïcødé dir/file"), "d").unwrap();
    let script = root.join("run.sh");
    fs::write(&script, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o751)).unwrap();
    fs::set_permissions(root.join("size-1"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink("size-1", root.join("link")).unwrap();
    symlink("../../outside", odd.join("escaping-link")).unwrap();
    let readonly = root.join("readonly");
    fs::create_dir(&readonly).unwrap();
    fs::write(readonly.join("inside"), "e").unwrap();
    fs::set_permissions(&readonly, fs::Permissions::from_mode(0o555)).unwrap();
}

#[tokio::test]
async fn a_tree_arrives_whole_and_verified() {
    let dir = temp("tree");
    let (src, dest) = (dir.join("src"), dir.join("dest"));
    make_tree(&src);
    fs::create_dir(&dest).unwrap();
    let (sent, received) = copy(std::slice::from_ref(&src), &dest, Receive::default()).await;
    let (sent, received) = (sent.unwrap(), received.unwrap());
    assert_same_tree(&src, &dest.join("src"));
    assert_eq!(sent.failed, 0);
    assert_eq!(received.failed, 0);
    // Both sides agree on each file's hash, which is BLAKE3's, and SHA-256 came along.
    let big = received
        .files
        .iter()
        .find(|f| f.path.ends_with(&format!("size-{}", 3 * CHUNK + 12_345)))
        .unwrap();
    let bytes = fs::read(src.join(format!("size-{}", 3 * CHUNK + 12_345))).unwrap();
    assert_eq!(big.blake3, Some(*blake3::hash(&bytes).as_bytes()));
    use sha2::Digest as _;
    assert_eq!(
        big.sha256.as_deref(),
        Some(&sha2::Sha256::digest(&bytes)[..])
    );
    assert_eq!(sent.transferred, received.transferred);
    // Copied again: everything replaced in place (the default), nothing left over.
    // A directory that was there keeps its mode (only its time follows the source).
    fs::set_permissions(
        dest.join("src/odd names"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let (_, again) = copy(std::slice::from_ref(&src), &dest, Receive::default()).await;
    assert_eq!(again.unwrap().failed, 0);
    let kept = fs::metadata(dest.join("src/odd names")).unwrap().mode() & 0o777;
    assert_eq!(kept, 0o700);
    fs::set_permissions(
        dest.join("src/odd names"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::set_permissions(src.join("odd names"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_same_tree(&src, &dest.join("src"));
    let leftovers = walk::walk(std::slice::from_ref(&dest), true)
        .unwrap()
        .into_iter()
        .filter(|i| i.entry.path.windows(7).any(|w| w == b".loopsy"))
        .count();
    assert_eq!(leftovers, 0);
    fs::set_permissions(dest.join("src/readonly"), fs::Permissions::from_mode(0o755)).ok();
    fs::set_permissions(src.join("readonly"), fs::Permissions::from_mode(0o755)).ok();
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn scp_rules_for_the_destination_and_no_clobber() {
    let dir = temp("rules");
    let (a, b) = (dir.join("a"), dir.join("b"));
    fs::write(&a, "new a").unwrap();
    fs::write(&b, "new b").unwrap();
    // One file to a new name: stored as that name.
    let (_, r) = copy(
        std::slice::from_ref(&a),
        &dir.join("renamed"),
        Receive::default(),
    )
    .await;
    r.unwrap();
    assert_eq!(fs::read(dir.join("renamed")).unwrap(), b"new a");
    // Two sources need a directory: one that exists, and is one.
    let (_, r) = copy(
        &[a.clone(), b.clone()],
        &dir.join("nodir"),
        Receive::default(),
    )
    .await;
    let missing = format!("{}: no such directory", dir.join("nodir").display());
    assert_eq!(r.map(|_| ()).map_err(|e| e.to_string()), Err(missing));
    let (_, r) = copy(
        &[a.clone(), b.clone()],
        &dir.join("renamed"),
        Receive::default(),
    )
    .await;
    let file = format!("{}: not a directory", dir.join("renamed").display());
    assert_eq!(r.map(|_| ()).map_err(|e| e.to_string()), Err(file));
    // A trailing `/` names a directory, which must be there, as with cp and scp: never a
    // new file of that name.
    for (dest, why) in [
        ("newdir/", "no such directory"),
        ("renamed/", "not a directory"),
    ] {
        let (_, r) = copy(
            std::slice::from_ref(&a),
            &dir.join(dest),
            Receive::default(),
        )
        .await;
        let said = format!("{}: {why}", dir.join(dest).display());
        assert_eq!(r.map(|_| ()).map_err(|e| e.to_string()), Err(said));
    }
    assert!(!dir.join("newdir").exists());
    assert_eq!(fs::read(dir.join("renamed")).unwrap(), b"new a");
    fs::create_dir(dir.join("there")).unwrap();
    let (_, r) = copy(
        std::slice::from_ref(&a),
        &dir.join("there/"),
        Receive::default(),
    )
    .await;
    r.unwrap();
    assert_eq!(fs::read(dir.join("there/a")).unwrap(), b"new a");
    // No clobber keeps what is there.
    let into = dir.join("into");
    fs::create_dir(&into).unwrap();
    fs::write(into.join("a"), "old a").unwrap();
    let options = Receive {
        no_clobber: true,
        fsync: true,
    };
    let (_, r) = copy(&[a.clone(), b.clone()], &into, options).await;
    let r = r.unwrap();
    assert_eq!(fs::read(into.join("a")).unwrap(), b"old a");
    assert_eq!(fs::read(into.join("b")).unwrap(), b"new b");
    assert!(r.files.iter().any(|f| f.outcome == Outcome::Skipped));
    fs::remove_dir_all(dir).ok();
}

/// Two sources of one name go into one directory, the second in a later batch than the
/// first: it merges into what the first made (its directories are gone into, not made
/// again), and its files replace the first's, or with no clobber leave them.
#[tokio::test]
async fn two_sources_of_one_name_merge_and_no_clobber_keeps_the_first() {
    let dir = temp("merge");
    for (source, said) in [("x", "from x"), ("y", "from y")] {
        fs::create_dir_all(dir.join(source).join("d/s")).unwrap();
        fs::write(dir.join(source).join("d/s/f"), said).unwrap();
    }
    // Enough of the first that the second source's entries come in another batch.
    for i in 0..loopsy_wire::transfer::MAX_BATCH {
        fs::write(dir.join(format!("x/d/z{i:05}")), "").unwrap();
    }
    fs::write(dir.join("y/d/only"), "y").unwrap();
    let sources = [dir.join("x/d"), dir.join("y/d")];
    for (into, no_clobber, kept) in [("replaced", false, "from y"), ("kept", true, "from x")] {
        let into = dir.join(into);
        fs::create_dir(&into).unwrap();
        let options = Receive {
            no_clobber,
            fsync: false,
        };
        let (_, r) = copy(&sources, &into, options).await;
        let r = r.unwrap();
        let failed: Vec<_> = r
            .files
            .iter()
            .filter(|f| matches!(f.outcome, Outcome::Failed { .. }))
            .collect();
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(fs::read_to_string(into.join("d/s/f")).unwrap(), kept);
        assert_eq!(fs::read_to_string(into.join("d/only")).unwrap(), "y");
    }
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_partial_file_is_resumed_from_its_verified_chunks() {
    let dir = temp("resume");
    let (src, dest) = (dir.join("big"), dir.join("dest"));
    let bytes = data(10 * CHUNK + 5, 9);
    fs::write(&src, &bytes).unwrap();
    fs::create_dir(&dest).unwrap();
    // Four good chunks and a torn fifth are there from an earlier run.
    fs::write(dest.join(".big.loopsy-part"), &bytes[..4 * CHUNK + 100]).unwrap();
    let (sent, received) = copy(std::slice::from_ref(&src), &dest, Receive::default()).await;
    let (sent, received) = (sent.unwrap(), received.unwrap());
    assert_eq!(fs::read(dest.join("big")).unwrap(), bytes);
    assert_eq!(sent.transferred, (6 * CHUNK + 5) as u64);
    assert_eq!(received.files[0].resumed, (4 * CHUNK) as u64);
    assert!(!dest.join(".big.loopsy-part").exists());
    // A partial file that differs from the source is not trusted: sent again whole.
    let mut wrong = bytes[..3 * CHUNK].to_vec();
    wrong[10] ^= 0xff;
    fs::write(dest.join(".big.loopsy-part"), &wrong).unwrap();
    let (sent, _) = copy(std::slice::from_ref(&src), &dest, Receive::default()).await;
    assert_eq!(sent.unwrap().transferred, bytes.len() as u64);
    assert_eq!(fs::read(dest.join("big")).unwrap(), bytes);
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_source_that_changed_is_not_delivered() {
    let dir = temp("changed");
    let (src, dest) = (dir.join("f"), dir.join("dest"));
    fs::write(&src, data(3 * CHUNK, 1)).unwrap();
    fs::create_dir(&dest).unwrap();
    let mut items = walk::walk(std::slice::from_ref(&src), false).unwrap();
    // Listed, then written to before it is read.
    items[0].entry.mtime -= 10;
    let (sent, received) = exchange(items, 1, Send::default(), &dest, Receive::default()).await;
    let received = received.unwrap();
    assert_eq!(sent.unwrap().failed, 1);
    assert!(
        matches!(&received.files[0].outcome, Outcome::Failed { reason } if reason.contains("changed")),
        "{:?}",
        received.files
    );
    assert_eq!(
        fs::read_dir(&dest).unwrap().count(),
        0,
        "nothing stored, no partial file"
    );
    fs::remove_dir_all(dir).ok();
}

/// A hand-driven sender: `script` writes what a hostile peer would, and gets the replies.
async fn hostile<F, Fut>(dest: &Path, script: F) -> Result<Summary, TransferError>
where
    F: FnOnce(Pipe) -> Fut,
    Fut: Future<Output = ()>,
{
    hostile_to(dest, anything(), script).await
}

async fn hostile_to<F, Fut>(
    dest: &Path,
    expect: Expect,
    script: F,
) -> Result<Summary, TransferError>
where
    F: FnOnce(Pipe) -> Fut,
    Fut: Future<Output = ()>,
{
    hostile_into(Dest::local(dest.to_path_buf()), expect, script).await
}

async fn hostile_into<F, Fut>(
    dest: Dest,
    expect: Expect,
    script: F,
) -> Result<Summary, TransferError>
where
    F: FnOnce(Pipe) -> Fut,
    Fut: Future<Output = ()>,
{
    let (a, b) = pipe();
    let progress = Progress::default();
    let (_, received) = tokio::join!(
        script(a),
        receive::receive(b, dest, Receive::default(), expect, &progress)
    );
    received
}

/// Offers `entries` to a receiver into `dest`: the sender must be told no, and the
/// receiver's error is returned.
async fn refused(dest: &Path, expect: Expect, entries: Vec<Entry>) -> TransferError {
    let result = hostile_to(dest, expect, |mut peer| async move {
        let reply = offer(&mut peer, entries).await;
        assert!(matches!(reply, Some(Reply::Error { .. })), "{reply:?}");
    })
    .await;
    match result {
        Err(refusal) => refusal,
        Ok(summary) => panic!("the offer was taken: {summary:?}"),
    }
}

fn file(path: &[u8], size: u64) -> Entry {
    Entry {
        path: ByteBuf::from(path.to_vec()),
        kind: Kind::File { size },
        mode: 0o644,
        mtime: 0,
        mtime_nsec: 0,
    }
}

fn link(path: &[u8], target: &[u8]) -> Entry {
    Entry {
        kind: Kind::Symlink {
            target: ByteBuf::from(target.to_vec()),
        },
        ..file(path, 0)
    }
}

async fn offer(peer: &mut Pipe, entries: Vec<Entry>) -> Option<Reply> {
    let begin = Data::Begin {
        sources: 1,
        files: 1,
        bytes: 0,
    };
    put(peer, &begin).await.ok()?;
    put(peer, &Data::Offer { entries }).await.ok()?;
    get::<_, Reply>(peer).await.ok()
}

/// The hostile sender's side: the receiver's next word is a refusal.
async fn told_no(peer: &mut Pipe) {
    let reply = get::<_, Reply>(peer).await;
    assert!(matches!(reply, Ok(Reply::Error { .. })), "{reply:?}");
}

/// The receiver's side: it stopped because the sender broke the protocol.
fn assert_protocol_error(result: &Result<Summary, TransferError>) {
    assert!(
        matches!(result, Err(TransferError::Protocol(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn escaping_paths_are_refused_and_nothing_lands_outside() {
    let (dir, dest) = with_dest("escape");
    let cases: Vec<Vec<Entry>> = vec![
        vec![file(b"x/../../outside", 1)],
        vec![file(b"/etc/outside", 1)],
        vec![
            link(b"l", dir.as_os_str().as_bytes()),
            file(b"l/outside", 1),
        ],
        vec![file(b"a\0b", 1)],
    ];
    for entries in cases {
        let refusal = refused(&dest, anything(), entries).await;
        assert!(matches!(refusal, TransferError::Escape(_)), "{refusal:?}");
    }
    assert!(!dir.join("outside").exists());
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn no_entry_lands_in_a_home_below_the_destination() {
    let (dir, dest) = with_dest("homes");
    // Another node's home (its marker), a relay's (its key), and the receiving node's own,
    // which says nothing about itself: known by the node.
    for (home, file) in [("node", crate::home::MARKER), ("relay", "identity.key")] {
        fs::create_dir_all(dest.join(format!("deep/{home}"))).unwrap();
        fs::write(dest.join(format!("deep/{home}/{file}")), "").unwrap();
    }
    fs::create_dir_all(dest.join("own")).unwrap();
    let expect = Expect {
        homes: super::homes::Homes::new(&dest.join("own")),
        ..anything()
    };
    let dir_entry = |path: &[u8]| Entry {
        kind: Kind::Dir,
        ..file(path, 0)
    };
    let cases: Vec<Vec<Entry>> = vec![
        vec![file(b"deep/node/trust.toml", 1)],
        vec![file(b"deep/relay/identity.key", 1)],
        vec![link(b"deep/node/config.toml", b"/tmp")],
        vec![dir_entry(b"deep"), dir_entry(b"deep/node")],
        vec![file(b"own/trust.toml", 1)],
        vec![dir_entry(b"own")],
    ];
    for entries in cases {
        let refusal = refused(&dest, expect.clone(), entries).await;
        assert!(
            matches!(refusal, TransferError::Escape(Escape::Home { .. })),
            "{refusal:?}"
        );
    }
    assert_eq!(fs::read_dir(dest.join("deep/node")).unwrap().count(), 1);
    assert_eq!(fs::read_dir(dest.join("own")).unwrap().count(), 0);
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn lies_about_sizes_and_hashes_are_refused_without_a_trace() {
    let (dir, dest) = with_dest("lies");
    let bytes = data(100, 3);
    let hash = *blake3::hash(&bytes).as_bytes();
    // More bytes than offered; fewer; a wrong hash.
    let cases = [
        (50u64, 100usize, hash),
        (200, 100, hash),
        (100, 100, [0u8; 32]),
    ];
    for (offered, sent, hash) in cases {
        let bytes = bytes.clone();
        let result = hostile(&dest, |mut peer| async move {
            let plan = offer(&mut peer, vec![file(b"f", offered)]).await;
            assert_eq!(
                plan,
                Some(Reply::Plan {
                    plans: vec![Plan::Fresh],
                    packed: true,
                })
            );
            put(&mut peer, &Data::File { index: 0, from: 0 })
                .await
                .unwrap();
            let len = sent as u32;
            put(&mut peer, &Data::Chunk { len, hash }).await.unwrap();
            use futures::AsyncWriteExt;
            let _ = peer.write_all(&bytes[..sent]).await;
            let _ = put(
                &mut peer,
                &Data::End {
                    blake3: hash,
                    sha256: None,
                },
            )
            .await;
            let _ = put(&mut peer, &Data::Finish).await;
            told_no(&mut peer).await;
        })
        .await;
        assert_protocol_error(&result);
        assert_eq!(fs::read_dir(&dest).unwrap().count(), 0, "{offered}/{sent}");
    }
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_link_planted_under_the_partial_name_is_not_followed() {
    let (dir, dest) = with_dest("plant");
    fs::write(dir.join("victim"), "keep").unwrap();
    let victim = dir.join("victim");
    let result = hostile(&dest, |mut peer| async move {
        let entries = vec![
            link(b".f.loopsy-part", victim.as_os_str().as_bytes()),
            file(b"f", 4),
        ];
        let reply = offer(&mut peer, entries).await;
        assert_eq!(
            reply,
            Some(Reply::Plan {
                plans: vec![Plan::Fresh],
                packed: true,
            })
        );
        let hash = *blake3::hash(b"evil").as_bytes();
        let _ = put(&mut peer, &Data::File { index: 1, from: 0 }).await;
        let _ = put(&mut peer, &Data::Chunk { len: 4, hash }).await;
        use futures::AsyncWriteExt;
        let _ = peer.write_all(b"evil").await;
        let _ = put(
            &mut peer,
            &Data::End {
                blake3: hash,
                sha256: None,
            },
        )
        .await;
        let _ = put(&mut peer, &Data::Finish).await;
        let _ = get::<_, Reply>(&mut peer).await;
    })
    .await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(fs::read(dir.join("victim")).unwrap(), b"keep");
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_pull_takes_only_the_names_it_asked_for() {
    let dir = temp("names");
    let dest = dir.join("home");
    fs::create_dir(&dest).unwrap();
    let asked = || Expect {
        names: Some(vec![b"notes.txt".to_vec()]),
        recursive: false,
        reports: true,
        homes: Default::default(),
    };
    let dir_entry = Entry {
        kind: Kind::Dir,
        ..file(b"notes.txt", 0)
    };
    let cases = [
        vec![file(b".bashrc", 1)],
        vec![dir_entry],
        vec![file(b"notes.txt/inner", 1)],
    ];
    for entries in cases {
        let refusal = refused(&dest, asked(), entries).await;
        assert!(matches!(refusal, TransferError::Protocol(_)), "{refusal:?}");
    }
    assert_eq!(fs::read_dir(&dest).unwrap().count(), 0, "nothing written");
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn an_entry_offered_twice_is_refused() {
    let (dir, dest) = with_dest("twice");
    let refusal = refused(&dest, anything(), vec![file(b"f", 1), file(b"./f", 1)]).await;
    assert!(matches!(refusal, TransferError::Protocol(_)), "{refusal:?}");
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_file_that_cannot_be_read_leaves_an_earlier_part_alone() {
    let dir = temp("unread");
    let (src, dest) = (dir.join("big"), dir.join("dest"));
    let bytes = data(4 * CHUNK, 5);
    fs::write(&src, &bytes).unwrap();
    fs::create_dir(&dest).unwrap();
    let part = dest.join(".big.loopsy-part");
    fs::write(&part, &bytes[..2 * CHUNK]).unwrap();
    let items = walk::walk(std::slice::from_ref(&src), false).unwrap();
    fs::remove_file(&src).unwrap();
    let (_, received) = exchange(items, 1, Send::default(), &dest, Receive::default()).await;
    assert_eq!(received.unwrap().failed, 1);
    assert_eq!(
        fs::read(&part).unwrap(),
        &bytes[..2 * CHUNK],
        "kept for a later run"
    );
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_file_swapped_for_a_link_after_the_listing_is_not_read() {
    let dir = temp("swap");
    let (src, dest, decoy) = (dir.join("f"), dir.join("dest"), dir.join("secret"));
    fs::write(&src, "public").unwrap();
    fs::write(&decoy, "secret").unwrap();
    fs::create_dir(&dest).unwrap();
    let items = walk::walk(std::slice::from_ref(&src), false).unwrap();
    // Same size and time as what was listed, but another file.
    let time = fs::metadata(&src).unwrap().modified().unwrap();
    fs::File::options()
        .write(true)
        .open(&decoy)
        .unwrap()
        .set_modified(time)
        .unwrap();
    fs::remove_file(&src).unwrap();
    symlink(&decoy, &src).unwrap();
    let (sent, _) = exchange(items, 1, Send::default(), &dest, Receive::default()).await;
    assert_eq!(sent.unwrap().failed, 1);
    assert!(!dest.join("f").exists(), "the secret never left");
    fs::remove_dir_all(dir).ok();
}

/// Files are stored a batch of pieces at a time; a failure must not lose the whole files
/// received before it.
#[tokio::test]
async fn whole_files_received_before_a_lie_are_kept() {
    let (dir, dest) = with_dest("before-lie");
    let bytes = data(100, 5);
    let hash = *blake3::hash(&bytes).as_bytes();
    let sent = bytes.clone();
    let result = hostile(&dest, |mut peer| async move {
        use futures::AsyncWriteExt;
        let entries = vec![file(b"good", 100), file(b"bad", 100)];
        let plan = offer(&mut peer, entries).await;
        assert!(matches!(plan, Some(Reply::Plan { .. })), "{plan:?}");
        put(&mut peer, &Data::File { index: 0, from: 0 })
            .await
            .unwrap();
        put(&mut peer, &Data::Chunk { len: 100, hash })
            .await
            .unwrap();
        peer.write_all(&sent).await.unwrap();
        let end = Data::End {
            blake3: hash,
            sha256: None,
        };
        put(&mut peer, &end).await.unwrap();
        put(&mut peer, &Data::File { index: 1, from: 0 })
            .await
            .unwrap();
        // More bytes than offered.
        put(&mut peer, &Data::Chunk { len: 200, hash })
            .await
            .unwrap();
        told_no(&mut peer).await;
    })
    .await;
    assert_protocol_error(&result);
    assert_eq!(fs::read(dest.join("good")).unwrap(), bytes);
    let names: Vec<_> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["good"], "nothing of the bad file");
    fs::remove_dir_all(dir).ok();
}

#[test]
fn a_chunk_is_handed_over_at_once_and_small_pieces_in_bulk() {
    let mut handover = super::Handover::new();
    assert!(handover.add((), CHUNK), "a whole chunk goes alone");
    assert_eq!(handover.take().len(), 1);
    let due = (0..super::Handover::<()>::PIECES)
        .map(|_| handover.add((), 100))
        .collect::<Vec<_>>();
    assert!(
        due[..due.len() - 1].iter().all(|due| !due),
        "small pieces wait"
    );
    assert!(due[due.len() - 1], "until there are enough of them");
    assert_eq!(handover.take().len(), super::Handover::<()>::PIECES);
}

#[tokio::test]
async fn copies_at_once_share_one_budget_for_what_they_queue() {
    use super::{BUDGET_KIB, Budget, Handover};
    use std::time::Duration;
    static BUDGET: Budget = Budget::new();
    let waits = |bytes| tokio::time::timeout(Duration::from_millis(50), BUDGET.hold(bytes));
    // Hand-overs of a chunk each, from any number of copies, until the budget is spent.
    let mut queued = Vec::new();
    for _ in 0..BUDGET_KIB as usize * 1024 / CHUNK {
        let mut handover = Handover::new();
        assert!(handover.add((), CHUNK));
        queued.push(handover.take_within(&BUDGET).await);
    }
    assert!(waits(CHUNK).await.is_err(), "the next waits for room");
    assert!(
        waits(0).await.expect("at once").is_none(),
        "a hand-over without file data needs none"
    );
    queued.pop();
    assert!(waits(CHUNK).await.is_ok(), "one stored makes room");
    queued.clear();
    let whole = waits(64 << 20).await.expect("not stuck for ever");
    assert!(
        whole.is_some(),
        "a hand-over bigger than the budget gets all of it"
    );
}

#[test]
fn spare_buffers_are_shared_by_copies_and_let_go_when_the_last_ends() {
    use super::{Budget, Buffers};
    static BUDGET: Budget = Budget::new();
    let (one, two) = (Buffers::of(&BUDGET), Buffers::of(&BUDGET));
    let taken: Vec<_> = (0..Buffers::KEEP + 5).map(|_| one.take(CHUNK)).collect();
    for buffer in taken {
        one.give(buffer);
    }
    assert_eq!(
        BUDGET.spare().len(),
        Buffers::KEEP,
        "no more than the budget queues"
    );
    let reused = two.take(CHUNK);
    assert_eq!(
        BUDGET.spare().len(),
        Buffers::KEEP - 1,
        "another copy takes one"
    );
    assert_eq!(
        one.take(100).len(),
        100,
        "a small file's own size, not from the pool"
    );
    two.give(reused);
    let same_copy = one.clone();
    drop(one);
    drop(two);
    assert_eq!(BUDGET.spare().len(), Buffers::KEEP, "a copy still runs");
    drop(same_copy);
    assert!(BUDGET.spare().is_empty(), "let go with the last copy");
}

/// The offer `[Symlink "x" -> outside, File "x/authorized_keys"]` into `new`, a destination
/// that is not there yet: the top entry becomes the destination itself, and nothing may
/// then be written through it. `dest` makes the destination from the directory `new` is to
/// be in (a write root, on the serving side of a push).
async fn through_a_top_level_link(tag: &str, dest: impl FnOnce(&Path) -> Dest, expect: Expect) {
    let dir = temp(tag);
    let outside = dir.join("outside");
    fs::create_dir(&outside).unwrap();
    let root = dir.join("root");
    fs::create_dir(&root).unwrap();
    let dest = dest(&root);
    let target = outside.as_os_str().as_bytes().to_vec();
    let entries = vec![link(b"x", &target), file(b"x/authorized_keys", 4)];
    let result = hostile_into(dest, expect, |mut peer| async move {
        let Some(Reply::Plan { .. }) = offer(&mut peer, entries).await else {
            return;
        };
        // Today's code takes the offer: send the file.
        let hash = *blake3::hash(b"evil").as_bytes();
        let _ = put(&mut peer, &Data::File { index: 1, from: 0 }).await;
        let _ = put(&mut peer, &Data::Chunk { len: 4, hash }).await;
        use futures::AsyncWriteExt;
        let _ = peer.write_all(b"evil").await;
        let end = Data::End {
            blake3: hash,
            sha256: None,
        };
        let _ = put(&mut peer, &end).await;
        let _ = put(&mut peer, &Data::Finish).await;
        let _ = get::<_, Reply>(&mut peer).await;
        let _ = put(&mut peer, &Data::Done).await;
    })
    .await;
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written through the link"
    );
    assert!(
        matches!(result, Err(TransferError::Escape(Escape::Symlink { .. }))),
        "{result:?}"
    );
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_push_cannot_write_through_a_link_it_made_the_destination() {
    // As the serving side takes a push: `PEER:new`, inside its write root.
    let served = |root: &Path| {
        let roots = [root.to_path_buf()];
        let requested = super::confine::requested(&roots, b"new").unwrap();
        super::confine::writable(&roots, &Default::default(), &requested).unwrap()
    };
    through_a_top_level_link("top-push", served, anything()).await;
}

#[tokio::test]
async fn a_pull_cannot_write_through_a_link_it_made_the_destination() {
    let asked = Expect {
        names: Some(vec![b"x".to_vec()]),
        recursive: true,
        reports: true,
        homes: Default::default(),
    };
    // As `loopsy cp -r PEER:x ROOT/new` takes it.
    let named = |root: &Path| Dest::local(root.join("new"));
    through_a_top_level_link("top-pull", named, asked).await;
}

#[tokio::test]
async fn a_part_file_hard_linked_elsewhere_is_never_written_through() {
    let dir = temp("hardlink");
    let dest = dir.join("dest");
    fs::create_dir(&dest).unwrap();
    let (small, big) = (dir.join("small"), dir.join("big"));
    fs::write(&small, "new").unwrap();
    let bytes = data(3 * CHUNK + 7, 4);
    fs::write(&big, &bytes).unwrap();
    // Victims elsewhere, linked under the part names: one that a resume would take as
    // the big file's first two chunks, one that a fresh copy would open and fill.
    let victims = [
        (
            dir.join("victim-small"),
            b"keep".to_vec(),
            ".small.loopsy-part",
        ),
        (
            dir.join("victim-big"),
            bytes[..2 * CHUNK].to_vec(),
            ".big.loopsy-part",
        ),
    ];
    for (victim, content, part) in &victims {
        fs::write(victim, content).unwrap();
        fs::hard_link(victim, dest.join(part)).unwrap();
    }
    let (sent, received) = copy(&[small.clone(), big.clone()], &dest, Receive::default()).await;
    assert_eq!(sent.unwrap().failed, 0);
    for (victim, content, _) in &victims {
        assert!(
            fs::read(victim).unwrap() == *content,
            "{} rewritten",
            victim.display()
        );
        assert_eq!(fs::metadata(victim).unwrap().nlink(), 1);
    }
    let received = received.unwrap();
    assert_eq!(received.failed, 0);
    assert!(
        received.files.iter().all(|f| f.resumed == 0),
        "no resume from a link"
    );
    assert_eq!(fs::read(dest.join("small")).unwrap(), b"new");
    assert!(fs::read(dest.join("big")).unwrap() == bytes);
    fs::remove_dir_all(dir).ok();
}

/// Sends one small file, whole, as entry `index` of the current batch.
async fn send_small(peer: &mut Pipe, index: u32, bytes: &[u8]) {
    use futures::AsyncWriteExt;
    let hash = *blake3::hash(bytes).as_bytes();
    put(peer, &Data::File { index, from: 0 }).await.unwrap();
    let len = bytes.len() as u32;
    put(peer, &Data::Chunk { len, hash }).await.unwrap();
    peer.write_all(bytes).await.unwrap();
    let end = Data::End {
        blake3: hash,
        sha256: None,
    };
    put(peer, &end).await.unwrap();
}

/// The receiver's next reply, within a few seconds (a receiver waiting for more from the
/// sender would never give it).
async fn reply(peer: &mut Pipe) -> Reply {
    tokio::time::timeout(std::time::Duration::from_secs(5), get::<_, Reply>(peer))
        .await
        .expect("the receiver answered")
        .expect("a reply")
}

#[tokio::test]
async fn a_tree_of_several_batches_arrives_whole() {
    let (dir, dest) = with_dest("batches");
    let src = dir.join("many");
    for i in 0..2_500 {
        let sub = src.join(format!("d{}", i / 400));
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join(format!("f{i}")), data(1 + i % 3000, i as u8)).unwrap();
    }
    fs::write(src.join("big"), data(3 * CHUNK + 17, 9)).unwrap();
    let (sent, received) = copy(std::slice::from_ref(&src), &dest, Receive::default()).await;
    let (sent, received) = (sent.unwrap(), received.unwrap());
    assert_eq!(sent.failed + received.failed, 0);
    assert_eq!(received.files.len(), 2_501);
    assert!(received.files.iter().all(|f| f.outcome == Outcome::Stored));
    assert_same_tree(&src, &dest.join("many"));
    fs::remove_dir_all(dir).ok();
}

/// The sender offers the next batch right behind the last one's data, without waiting
/// for its report.
#[tokio::test]
async fn the_next_offer_follows_a_batch_without_waiting_for_its_report() {
    let (dir, _) = with_dest("pipelined-sender");
    let src = dir.join("src");
    fs::create_dir(&src).unwrap();
    let count = loopsy_wire::transfer::MAX_BATCH + 10;
    for i in 0..count {
        fs::write(src.join(format!("f{i:05}")), data(10, i as u8)).unwrap();
    }
    let items = walk::walk(std::slice::from_ref(&src), true).unwrap();
    let (mut peer, b) = pipe();
    let progress = Progress::default();
    let sending = Send {
        recursive: true,
        sha256: false,
    };
    let receiver = async move {
        assert!(matches!(
            get::<_, Data>(&mut peer).await,
            Ok(Data::Begin { .. })
        ));
        let Ok(Data::Offer { entries }) = get::<_, Data>(&mut peer).await else {
            panic!("no first offer");
        };
        let plans = entries
            .iter()
            .filter(|e| matches!(e.kind, Kind::File { .. }))
            .map(|_| Plan::Skip)
            .collect();
        let plan = Reply::Plan {
            plans,
            packed: false,
        };
        put(&mut peer, &plan).await.unwrap();
        futures::AsyncWriteExt::flush(&mut peer).await.unwrap();
        let finish = get::<_, Data>(&mut peer).await;
        assert!(matches!(finish, Ok(Data::Finish)), "{finish:?}");
        // No report yet: the second offer comes all the same.
        let next =
            tokio::time::timeout(std::time::Duration::from_secs(5), get::<_, Data>(&mut peer))
                .await
                .expect("the next offer came before the report");
        assert!(matches!(next, Ok(Data::Offer { .. })), "{next:?}");
    };
    let sender = send::send(b, items, 1, sending, false, &progress);
    tokio::select! {
        () = receiver => {}
        sent = sender => panic!("the sender ended first: {sent:?}"),
    }
    fs::remove_dir_all(dir).ok();
}

/// A receiver answers each batch as soon as it is stored (a sender may wait for that
/// before its next offer), and when the next offer came early, still reports the batch
/// before planning the next.
#[tokio::test]
async fn each_batch_is_reported_before_the_next_is_planned() {
    for early in [false, true] {
        let (dir, dest) = with_dest(if early { "early-offer" } else { "late-offer" });
        let (first, second) = (data(100, 1), data(200, 2));
        let (one, two) = (first.clone(), second.clone());
        let result = hostile(&dest, |mut peer| async move {
            let plan = offer(&mut peer, vec![file(b"one", 100)]).await;
            assert!(matches!(plan, Some(Reply::Plan { .. })), "{plan:?}");
            send_small(&mut peer, 0, &one).await;
            put(&mut peer, &Data::Finish).await.unwrap();
            let offer_two = Data::Offer {
                entries: vec![file(b"two", 200)],
            };
            if early {
                put(&mut peer, &offer_two).await.unwrap();
            }
            let report = reply(&mut peer).await;
            assert_eq!(
                report,
                Reply::Report {
                    outcomes: vec![Outcome::Stored]
                }
            );
            if !early {
                put(&mut peer, &offer_two).await.unwrap();
            }
            let plan = reply(&mut peer).await;
            assert_eq!(
                plan,
                Reply::Plan {
                    plans: vec![Plan::Fresh],
                    packed: true,
                }
            );
            send_small(&mut peer, 0, &two).await;
            put(&mut peer, &Data::Finish).await.unwrap();
            let report = reply(&mut peer).await;
            assert!(matches!(report, Reply::Report { .. }), "{report:?}");
            put(&mut peer, &Data::Done).await.unwrap();
        })
        .await;
        let summary = result.unwrap();
        assert_eq!(summary.files.len(), 2);
        assert_eq!(fs::read(dest.join("one")).unwrap(), first);
        assert_eq!(fs::read(dest.join("two")).unwrap(), second);
        fs::remove_dir_all(dir).ok();
    }
}

/// Sends `files` packed, each `(index, bytes)`, with `hashes` as their table says.
async fn send_packed(peer: &mut Pipe, files: &[(u32, &[u8])], hashes: Option<[u8; 32]>) {
    use futures::AsyncWriteExt;
    let table: Vec<Whole> = files
        .iter()
        .map(|(index, bytes)| Whole {
            index: *index,
            len: bytes.len() as u32,
            blake3: hashes.unwrap_or(*blake3::hash(bytes).as_bytes()),
        })
        .collect();
    let files_message = Data::Files {
        files: Whole::pack(&table),
    };
    let _ = put(peer, &files_message).await;
    for (_, bytes) in files {
        let _ = peer.write_all(bytes).await;
    }
}

/// Small files come packed from a receiver that takes them, and alone to one that does
/// not say so (an older receiver), which must not be sent what it cannot read.
#[tokio::test]
async fn small_files_are_packed_only_for_a_receiver_that_takes_them() {
    let (dir, _) = with_dest("packed-or-not");
    let src = dir.join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..MAX_PACKED + 3 {
        fs::write(src.join(format!("f{i:03}")), data(i * 50, i as u8)).unwrap();
    }
    fs::write(src.join("g-big"), data(CHUNK + 1, 7)).unwrap();
    for packed in [true, false] {
        let items = walk::walk(std::slice::from_ref(&src), true).unwrap();
        let (mut peer, b) = pipe();
        let progress = Progress::default();
        let sending = Send {
            recursive: true,
            sha256: false,
        };
        let receiver = async move {
            let _begin = get::<_, Data>(&mut peer).await.unwrap();
            let Ok(Data::Offer { entries }) = get::<_, Data>(&mut peer).await else {
                panic!("no offer");
            };
            let plans = entries
                .iter()
                .filter(|e| matches!(e.kind, Kind::File { .. }))
                .map(|_| Plan::Fresh)
                .collect();
            put(&mut peer, &Reply::Plan { plans, packed })
                .await
                .unwrap();
            futures::AsyncWriteExt::flush(&mut peer).await.unwrap();
            let mut kinds = Vec::new();
            loop {
                let message = get::<_, Data>(&mut peer).await.unwrap();
                let skip = match &message {
                    Data::Files { files } => Whole::unpack(files)
                        .unwrap()
                        .iter()
                        .map(|f| u64::from(f.len))
                        .sum(),
                    Data::Chunk { len, .. } => u64::from(*len),
                    Data::Finish => break,
                    _ => 0,
                };
                let mut bytes = vec![0; skip as usize];
                futures::AsyncReadExt::read_exact(&mut peer, &mut bytes)
                    .await
                    .unwrap();
                kinds.push(match message {
                    Data::Files { files } => format!("files:{}", files.len() / Whole::LEN),
                    Data::File { .. } => "file".into(),
                    _ => "-".into(),
                });
            }
            kinds
        };
        let sender = send::send(b, items, 1, sending, false, &progress);
        let kinds = tokio::select! {
            kinds = receiver => kinds,
            sent = sender => panic!("the sender ended first: {sent:?}"),
        };
        let files = kinds.iter().filter(|k| k.starts_with("files:")).count();
        let alone = kinds.iter().filter(|k| *k == "file").count();
        if packed {
            // The small ones in two packs (the first full), the big one alone.
            assert_eq!(files, 2, "{kinds:?}");
            assert_eq!(kinds[0], format!("files:{MAX_PACKED}"));
            assert_eq!(alone, 1, "{kinds:?}");
        } else {
            assert_eq!((files, alone), (0, MAX_PACKED + 4), "{kinds:?}");
        }
    }
    fs::remove_dir_all(dir).ok();
}

/// Packed files that were not planned fresh, come out of order, outgrow a chunk, do not
/// match their hashes, or come inside another file: refused, and nothing of the batch is
/// left behind but what was stored whole before.
#[tokio::test]
async fn lies_in_packed_files_are_refused_without_a_trace() {
    let (dir, dest) = with_dest("packed-lies");
    type Script = Box<dyn Fn() -> (Vec<Entry>, Vec<(u32, Vec<u8>)>, bool, Option<[u8; 32]>)>;
    let cases: Vec<(&str, Script)> = vec![
        (
            "a size other than offered",
            Box::new(|| (vec![file(b"a", 11)], vec![(0, data(10, 2))], false, None)),
        ),
        (
            "out of order",
            Box::new(|| {
                let entries = vec![file(b"a", 10), file(b"b", 20)];
                (
                    entries,
                    vec![(1, data(20, 3)), (0, data(10, 2))],
                    false,
                    None,
                )
            }),
        ),
        (
            "the same file twice",
            Box::new(|| {
                let entries = vec![file(b"a", 10)];
                (
                    entries,
                    vec![(0, data(10, 2)), (0, data(10, 2))],
                    false,
                    None,
                )
            }),
        ),
        (
            "not an entry of the offer",
            Box::new(|| (vec![file(b"a", 10)], vec![(5, data(10, 2))], false, None)),
        ),
        (
            "more than a chunk together",
            Box::new(|| {
                let entries = vec![file(b"a", CHUNK as u64), file(b"b", 1)];
                (
                    entries,
                    vec![(0, data(CHUNK, 1)), (1, data(1, 4))],
                    false,
                    None,
                )
            }),
        ),
        (
            "a wrong hash",
            Box::new(|| {
                (
                    vec![file(b"a", 10)],
                    vec![(0, data(10, 2))],
                    false,
                    Some([9; 32]),
                )
            }),
        ),
        (
            "inside another file",
            Box::new(|| (vec![file(b"a", 10)], vec![(0, data(10, 2))], true, None)),
        ),
    ];
    for (what, case) in cases {
        let (entries, files, inside, hashes) = case();
        let result = hostile(&dest, |mut peer| async move {
            let plan = offer(&mut peer, entries).await;
            assert!(
                matches!(plan, Some(Reply::Plan { packed: true, .. })),
                "{plan:?}"
            );
            if inside {
                let _ = put(&mut peer, &Data::File { index: 0, from: 0 }).await;
            }
            let files: Vec<(u32, &[u8])> = files.iter().map(|(i, b)| (*i, &b[..])).collect();
            send_packed(&mut peer, &files, hashes).await;
            let _ = put(&mut peer, &Data::Finish).await;
            told_no(&mut peer).await;
        })
        .await;
        assert_protocol_error(&result);
        assert_eq!(fs::read_dir(&dest).unwrap().count(), 0, "{what}");
    }
    fs::remove_dir_all(dir).ok();
}

const PACKING: Send = Send {
    recursive: true,
    sha256: false,
};

/// The files reported failed for a reason that says `why`.
fn failed_for<'a>(received: &'a Summary, why: &str) -> Vec<&'a str> {
    received
        .files
        .iter()
        .filter(|f| matches!(&f.outcome, Outcome::Failed { reason } if reason.contains(why)))
        .map(|f| f.path.as_str())
        .collect()
}

/// Pieces stored by two threads so far (each test runs in a process of its own).
fn split_pieces() -> usize {
    receive::SPLIT_PIECES.load(std::sync::atomic::Ordering::Relaxed)
}

/// A piece of packed files is stored by two threads, half each: every file's outcome is
/// its own and reported as its own, whichever half it is in.
#[tokio::test]
async fn packed_files_stored_by_two_threads_land_or_fail_each_on_its_own() {
    let (dir, dest) = with_dest("packed-lanes");
    let src = dir.join("src");
    // One piece of packed files (`MAX_PACKED`), half in each directory.
    for sub in ["a", "b"] {
        fs::create_dir_all(src.join(sub)).unwrap();
        for i in 0..MAX_PACKED / 2 {
            let bytes = data(700 + i * 13, i as u8);
            fs::write(src.join(sub).join(format!("f{i:02}")), bytes).unwrap();
        }
    }
    let items = walk::walk(std::slice::from_ref(&src), true).unwrap();
    // A directory under a file's part name: that file cannot be written, in either half.
    let into = dest.join("src");
    fs::create_dir_all(into.join("a/.f07.loopsy-part")).unwrap();
    fs::create_dir_all(into.join("b/.f25.loopsy-part")).unwrap();
    let split = split_pieces();
    let (sent, received) = exchange(items, 1, PACKING, &dest, Receive::default()).await;
    let (sent, received) = (sent.unwrap(), received.unwrap());
    assert!(split_pieces() > split, "the piece was stored by one thread");
    assert_eq!((sent.failed, received.failed), (2, 2));
    let failed = failed_for(&received, "cannot write");
    assert_eq!(failed, ["src/a/f07", "src/b/f25"]);
    for sub in ["a", "b"] {
        for i in 0..MAX_PACKED / 2 {
            let name = format!("{sub}/f{i:02}");
            if failed.contains(&format!("src/{name}").as_str()) {
                assert!(!into.join(&name).exists(), "{name}");
            } else {
                assert_same_tree(&src.join(&name), &into.join(&name));
            }
        }
    }
    fs::remove_dir_all(dir).ok();
}

/// Two files whose part names are one (a name too long for `.NAME.loopsy-part` gets a hash
/// of itself instead, and a short name can be that hash), each in its own half of a piece:
/// the two threads take the part file in turn and both land whole. When the second waited
/// for the first's lock and then wrote into the file the first had just put in place, one
/// name held the other's bytes, reported stored.
#[tokio::test]
async fn two_files_with_one_part_name_both_land_whole() {
    let (dir, _) = with_dest("packed-twins");
    let src = dir.join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..MAX_PACKED / 2 {
        let long = format!("z{i:02}{}", "-long".repeat(50));
        let short = blake3::hash(long.as_bytes()).to_hex()[..32].to_owned();
        fs::write(src.join(&long), data(3000, i as u8)).unwrap();
        fs::write(src.join(&short), data(3000, 100 + i as u8)).unwrap();
    }
    let split = split_pieces();
    for round in 0..30 {
        let dest = dir.join(format!("dest-{round}"));
        fs::create_dir(&dest).unwrap();
        let items = walk::walk(std::slice::from_ref(&src), true).unwrap();
        let (sent, received) = exchange(items, 1, PACKING, &dest, Receive::default()).await;
        let (sent, received) = (sent.unwrap(), received.unwrap());
        assert_eq!(sent.failed + received.failed, 0, "round {round}");
        assert_same_tree(&src, &dest.join("src"));
    }
    assert!(
        split_pieces() >= split + 30,
        "the twins were not stored by two threads"
    );
    fs::remove_dir_all(dir).ok();
}

/// A file or link named as Loopsy names its partial files is refused, and the rest lands.
/// Taken in, `.f40.loopsy-part` was found by `f40` under its part name, taken for its
/// partial file and put in place as `f40`: gone, with nothing said.
#[tokio::test]
async fn a_file_named_like_a_part_file_is_refused_and_the_file_it_names_lands() {
    let (dir, dest) = with_dest("packed-part-names");
    let src = dir.join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..MAX_PACKED - 1 {
        fs::write(src.join(format!("f{i:02}")), data(700 + i * 13, i as u8)).unwrap();
    }
    fs::write(src.join(".f40.loopsy-part"), b"a file of its own").unwrap();
    symlink("f00", src.join(".f41.loopsy-link")).unwrap();
    fs::write(src.join(".F42.LOOPSY-PART"), b"one in capitals").unwrap();
    let items = walk::walk(std::slice::from_ref(&src), true).unwrap();
    let (sent, received) = exchange(items, 1, PACKING, &dest, Receive::default()).await;
    let (sent, received) = (sent.unwrap(), received.unwrap());
    assert_eq!((sent.failed, received.failed), (3, 3));
    assert_eq!(
        failed_for(&received, "Loopsy's own"),
        [
            "src/.F42.LOOPSY-PART",
            "src/.f40.loopsy-part",
            "src/.f41.loopsy-link"
        ]
    );
    let into = dest.join("src");
    for i in 0..MAX_PACKED - 1 {
        let name = format!("f{i:02}");
        assert_same_tree(&src.join(&name), &into.join(&name));
    }
    assert!(!into.join(".f40.loopsy-part").exists());
    assert!(fs::symlink_metadata(into.join(".f41.loopsy-link")).is_err());
    fs::remove_dir_all(dir).ok();
}

/// Packed files land whole with their modes and times, beside ones sent alone, and a part
/// file left from an earlier copy under a packed file's name is replaced, not written
/// through when it is a link.
#[tokio::test]
async fn packed_files_land_whole_beside_files_sent_alone() {
    let (dir, dest) = with_dest("packed-whole");
    let src = dir.join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..150 {
        let path = src.join(format!("f{i:03}"));
        fs::write(&path, data(i * 37 % 5000, i as u8)).unwrap();
        fs::set_permissions(
            &path,
            fs::Permissions::from_mode(0o600 | (i as u32 % 8) << 3),
        )
        .unwrap();
    }
    fs::write(src.join("empty"), b"").unwrap();
    fs::write(src.join("exactly-a-chunk"), data(CHUNK, 5)).unwrap();
    fs::write(src.join("more-than-a-chunk"), data(CHUNK + 1, 6)).unwrap();
    fs::set_permissions(src.join("f007"), fs::Permissions::from_mode(0o444)).unwrap();
    // Left by an earlier copy: an old part, and a link planted under a part's name.
    let into = dest.join("src");
    fs::create_dir(&into).unwrap();
    fs::write(
        into.join(".f001.loopsy-part"),
        b"old and longer than the file",
    )
    .unwrap();
    fs::write(dir.join("victim"), b"keep").unwrap();
    symlink(dir.join("victim"), into.join(".f002.loopsy-part")).unwrap();
    let items = walk::walk(std::slice::from_ref(&src), true).unwrap();
    let sending = Send {
        recursive: true,
        sha256: false,
    };
    let (sent, received) = exchange(items, 1, sending, &dest, Receive::default()).await;
    let (sent, received) = (sent.unwrap(), received.unwrap());
    assert_eq!(sent.failed + received.failed, 0);
    assert_eq!(received.files.len(), 153);
    assert_same_tree(&src, &into);
    assert_eq!(fs::read(dir.join("victim")).unwrap(), b"keep");
    let left: Vec<_> = fs::read_dir(&into)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.as_bytes().starts_with(b"."))
        .collect();
    assert!(left.is_empty(), "no part file stays: {left:?}");
    fs::remove_dir_all(dir).ok();
}
