//! Load between two real nodes: a hundred programs run at once on one device from the
//! other (the gate serves 32 of one device's streams at a time and the rest wait their
//! turn), and ten copies at once, every byte checked.

use std::{
    process::Output,
    time::{Duration, Instant},
};

use loopsy_tests::{
    node::{Node, Options},
    temp::TempDir,
};

fn pair(root: &std::path::Path) -> anyhow::Result<(Node, Node)> {
    std::fs::create_dir_all(root)?;
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo").env("HOME", root))?;
    a.pair_with(&b)?;
    Ok((a, b))
}

/// Runs `loopsy ARGS..` on `node` from `count` processes at once, each with its index.
fn at_once(node: &Node, count: usize, args: impl Fn(usize) -> Vec<String>) -> Vec<Output> {
    let children: Vec<_> = (0..count)
        .map(|i| {
            let args = args(i);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            node.spawn_cli(&args)
        })
        .collect();
    children
        .into_iter()
        .map(|child| child.wait_with_output().expect("wait"))
        .collect()
}

#[test]
fn a_hundred_execs_at_once_all_run() -> anyhow::Result<()> {
    let root = TempDir::new("load-exec");
    let (a, _b) = pair(root.path())?;
    let began = Instant::now();
    let outputs = at_once(&a, 100, |i| {
        [
            "exec",
            "bravo",
            "--",
            "sh",
            "-c",
            &format!("sleep 0.3; echo run-{i}"),
        ]
        .map(String::from)
        .to_vec()
    });
    let took = began.elapsed();
    for (i, out) in outputs.iter().enumerate() {
        assert!(
            out.status.success(),
            "exec {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("run-{i}")
        );
    }
    println!(
        "100 execs at once (each sleeps 0.3 s): {:.1} s",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(120));
    Ok(())
}

#[test]
fn ten_copies_at_once_all_arrive_whole() -> anyhow::Result<()> {
    let root = TempDir::new("load-cp");
    let (a, _b) = pair(&root.path().join("bravo"))?;
    let sources = root.path().join("sources");
    std::fs::create_dir_all(&sources)?;
    let files: Vec<Vec<u8>> = (0..10u8)
        .map(|i| (0..8 * 1024 * 1024u32).map(|j| (j as u8) ^ i).collect())
        .collect();
    for (i, data) in files.iter().enumerate() {
        std::fs::write(sources.join(format!("f{i}")), data)?;
    }
    let began = Instant::now();
    let outputs = at_once(&a, files.len(), |i| {
        vec![
            "cp".into(),
            sources.join(format!("f{i}")).to_string_lossy().into_owned(),
            "bravo:".into(),
        ]
    });
    let took = began.elapsed();
    for (i, out) in outputs.iter().enumerate() {
        assert!(
            out.status.success(),
            "copy {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let arrived = std::fs::read(root.path().join("bravo").join(format!("f{i}")))?;
        assert!(arrived == files[i], "copy {i} arrived whole");
    }
    println!(
        "10 copies of 8 MiB at once: {:.2} s ({:.0} MB/s in all)",
        took.as_secs_f64(),
        80.0 * 1.048576 / took.as_secs_f64()
    );
    Ok(())
}
