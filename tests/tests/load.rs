//! Load between two real nodes: a hundred programs run at once on one device from the
//! other (the gate serves 32 of one device's streams at a time and the rest wait their
//! turn), and ten copies at once, every byte checked.

use std::{
    process::Output,
    time::{Duration, Instant},
};

use loopsy_tests::{
    node::{Node, Options},
    proc::{anon_kib, cpu_secs, rss_mib},
    temp::TempDir,
};

/// Seconds the twenty nodes are left to settle before the idle one is measured.
const IDLE_SETTLE: u64 = 30;
/// Seconds over which its idle CPU is measured.
const IDLE_MEASURED: u64 = 90;

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

/// The memory a burst of copies took is given back once the node is quiet: the threads that
/// read and wrote the files end, the others run out of work, and their free pages go back
/// to the system. Here 4-5 MiB of anonymous memory before, 17-75 right after, 6-10 a few
/// seconds later; on the old code still 29-30 and 21 ten seconds later, half of it back only
/// after 16-20 s (and in a release build after ten rounds of ten 100 MiB copies, 65 MiB
/// resident 12-15 s later).
#[test]
fn a_quiet_node_gives_back_the_memory_its_copies_took() -> anyhow::Result<()> {
    const COPIES: usize = 10;
    const SIZE: usize = 32 << 20;
    let root = TempDir::new("load-give-back");
    let (a, b) = pair(&root.path().join("bravo"))?;
    let sources = root.path().join("sources");
    std::fs::create_dir_all(&sources)?;
    let data: Vec<u8> = (0..SIZE as u32).map(|j| (j % 251) as u8).collect();
    for i in 0..COPIES {
        std::fs::write(sources.join(format!("f{i}")), &data)?;
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    let before = [anon_kib(a.pid()), anon_kib(b.pid())];
    let mut busy = [0; 2];
    for round in 0..3 {
        let outputs = at_once(&a, COPIES, |i| {
            vec![
                "cp".into(),
                sources.join(format!("f{i}")).to_string_lossy().into_owned(),
                format!("bravo:r{round}-f{i}"),
            ]
        });
        for (i, out) in outputs.iter().enumerate() {
            assert!(
                out.status.success(),
                "copy {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        busy = [0, 1].map(|n| busy[n].max(anon_kib([a.pid(), b.pid()][n])));
    }
    for (n, name) in ["sender", "receiver"].iter().enumerate() {
        println!(
            "{name}: {:.0} MiB anonymous before the copies, {:.0} right after",
            mib(before[n]),
            mib(busy[n])
        );
        assert!(
            busy[n] >= before[n] + 8 * 1024,
            "the copies took too little of the {name}'s memory to tell anything"
        );
    }
    // Its file threads end 2 s after their last work, giving back what they held, and its
    // workers give back theirs as they wait: within 10 s each node is back below half of
    // what the copies took, or within 6 MiB of where it began, whichever is higher (a few
    // MiB stay with the workers; the old code's file threads lasted 10 s, and what they
    // left came back only later). A node that is gone reads 0: both must still be there.
    let bar = |n: usize| before[n] + ((busy[n] - before[n]) / 2).max(6 * 1024);
    let quiet = loopsy_tests::wait_for(
        "both nodes to give back what the copies took",
        Duration::from_secs(10),
        || {
            let now = [anon_kib(a.pid()), anon_kib(b.pid())];
            (0..2).all(|n| now[n] > 0 && now[n] < bar(n)).then_some(now)
        },
    )?;
    println!(
        "once quiet: sender {:.0} MiB, receiver {:.0} MiB",
        mib(quiet[0]),
        mib(quiet[1])
    );
    Ok(())
}

#[test]
fn twenty_nodes_converge_on_a_session_and_a_key_and_idle_quietly() -> anyhow::Result<()> {
    let nodes: Vec<Node> = (0..20)
        .map(|i| Node::start(Options::isolated(&format!("n{i:02}"))))
        .collect::<anyhow::Result<_>>()?;
    // Each pairs with the first once; the member list makes them one mesh.
    for node in &nodes[1..] {
        nodes[0].pair_with(node)?;
    }
    let everyone_sees = |what: &str, check: &dyn Fn(&Node) -> bool| {
        loopsy_tests::wait_for(what, Duration::from_secs(90), || {
            nodes.iter().all(check).then_some(())
        })
    };
    everyone_sees("every member known to every node", &|n: &Node| {
        n.trusted().len() == 19
    })?;

    let began = Instant::now();
    nodes[19].ok(&["ctx", "set", "fleet/build", "green"]);
    everyone_sees("the key everywhere", &|n: &Node| {
        n.cli(&["ctx", "get", "fleet/build"])
            .stdout
            .starts_with(b"green")
    })?;
    let key_took = began.elapsed();

    let began = Instant::now();
    let id = nodes[7].ok(&["session", "new", "--", "sleep", "600"]);
    let id = id.trim().to_owned();
    everyone_sees("the session everywhere", &|n: &Node| {
        n.json(&["session", "ls", "--json"])
            .ok()
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|all| all.iter().any(|s| s["id"] == id.as_str()))
    })?;
    let session_took = began.elapsed();
    println!(
        "20 nodes: a key everywhere in {} ms, a session in {} ms (polling all 20 included)",
        key_took.as_millis(),
        session_took.as_millis()
    );

    // Idle: connected to 19 members, nothing asked of it. Its own CPU time (user and
    // system, from /proc), so that other work on the machine does not count; over a minute
    // and a half, so that the periodic work (pings, the keeper's rounds, AutoNAT's probes)
    // is in it, after half a minute in which the mesh settles.
    std::thread::sleep(Duration::from_secs(IDLE_SETTLE));
    let pid = nodes[0].pid();
    println!("measuring the idle CPU of pid {pid}");
    let (cpu_before, wall) = (cpu_secs(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(IDLE_MEASURED));
    let cpu = (cpu_secs(pid) - cpu_before) / wall.elapsed().as_secs_f64() * 100.0;
    let rss = rss_mib(pid);
    let connected = nodes[0]
        .peers()?
        .iter()
        .filter(|p| p["connections"].as_u64().unwrap_or(0) > 0)
        .count();
    println!(
        "an idle node with 19 members ({connected} connected): {cpu:.2}% of a core, {rss:.0} MiB"
    );
    assert_eq!(connected, 19, "the members stay connected while idle");
    // 0.38% on the release build, 1-1.2% on a debug build on a loaded machine (the target,
    // under 0.5%, is for the shipped binary: docs/performance.md says where the time goes).
    // This bound catches a return to the 3-5% of before.
    assert!(cpu < 2.5, "idle CPU {cpu:.2}% of a core");
    assert!(rss < 64.0, "idle memory {rss:.0} MiB");
    Ok(())
}
