//! Faults on the path between two devices, in a lab of Linux network namespaces: a router
//! between alpha and bravo that loses packets at random (nftables numgen; this kernel has
//! no netem), and alpha's link taken down for a while. Copies and sessions complete through
//! the loss, and resume after the outage, with every byte checked.
//!
//!     alpha 10.1.0.2 ── router (loss, rate) ── 10.2.0.2 bravo

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use loopsy_tests::{
    attach::{assert_unbroken, counted, start_counter},
    netlab::Lab,
    node::{Node, Options, Reaped},
    temp::TempDir,
    wait_for,
};
use serde_json::Value;

/// Two paired devices on two LANs joined by one router.
struct Path {
    lab: Lab,
    router: String,
    alpha_host: String,
    dir: TempDir,
    alpha: Node,
    bravo: Node,
}

impl Path {
    /// `None` when namespace tests are skipped. The router loses `loss` percent of what it
    /// forwards and, given `rate`, forwards to bravo no faster (a tc rate like "40mbit").
    fn build(tag: &str, loss: u32, rate: Option<&str>) -> anyhow::Result<Option<Self>> {
        let Some(mut lab) = Lab::new(tag) else {
            return Ok(None);
        };
        let [router, alpha_host, bravo_host] = [lab.host("r")?, lab.host("a")?, lab.host("b")?];
        lab.subnet("la", (&router, "lan0"), &alpha_host, "10.1.0")?;
        lab.subnet("lb", (&router, "lan1"), &bravo_host, "10.2.0")?;
        lab.lossy_router(&router, loss)?;
        if let Some(rate) = rate {
            lab.rate_limit(&router, "lan1", rate)?;
        }
        let dir = TempDir::new(tag);
        let device = |name: &str, host: &str| -> anyhow::Result<Node> {
            let root = dir.path().join(format!("{name}-files"));
            std::fs::create_dir_all(&root)?;
            Node::start(Options::named(name).netns(host).env("HOME", &root).args(&[
                "--no-mdns",
                "--listen",
                "/ip4/0.0.0.0/tcp/0",
            ]))
        };
        let alpha = device("alpha", &alpha_host)?;
        let bravo = device("bravo", &bravo_host)?;
        alpha.pair_with(&bravo)?;
        Ok(Some(Self {
            lab,
            router,
            alpha_host,
            dir,
            alpha,
            bravo,
        }))
    }

    fn files(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-files"))
    }

    /// A file of `size` bytes in alpha's files.
    fn payload(&self, name: &str, size: usize) -> anyhow::Result<(PathBuf, Vec<u8>)> {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 253) as u8).collect();
        let path = self.files("alpha").join(name);
        std::fs::write(&path, &data)?;
        Ok((path, data))
    }
}

#[test]
fn copies_and_sessions_complete_through_a_router_that_loses_a_tenth() -> anyhow::Result<()> {
    let Some(path) = Path::build("loss", 10, None)? else {
        return Ok(());
    };
    let (source, data) = path.payload("lossy.bin", 16 * 1024 * 1024)?;
    let began = Instant::now();
    path.alpha.ok(&["cp", &source.to_string_lossy(), "bravo:"]);
    let took = began.elapsed();
    assert!(std::fs::read(path.files("bravo").join("lossy.bin"))? == data);
    println!(
        "16 MiB through 10% loss: {:.1} s ({:.1} MB/s)",
        took.as_secs_f64(),
        data.len() as f64 / took.as_secs_f64() / 1e6
    );

    let attached = start_counter(&path.alpha, "bravo", "counter");
    wait_for(
        "the counter through the loss",
        Duration::from_secs(60),
        || (counted(&attached.text()).len() > 300).then_some(()),
    )?;
    assert_unbroken(&attached.text());
    let said = path.alpha.ok(&["exec", "bravo", "--", "echo", "through"]);
    assert_eq!(said.trim(), "through");
    Ok(())
}

#[test]
fn after_a_link_outage_the_copy_resumes_and_the_session_goes_on() -> anyhow::Result<()> {
    // 40 Mbit/s to bravo: a 48 MiB copy takes about 10 s, long enough to cut.
    let Some(path) = Path::build("outage", 0, Some("40mbit"))? else {
        return Ok(());
    };
    let attached = start_counter(&path.alpha, "bravo", "counter");
    wait_for("counting", Duration::from_secs(30), || {
        (counted(&attached.text()).len() > 20).then_some(())
    })?;
    let size = 48 * 1024 * 1024;
    let (source, data) = path.payload("big.bin", size)?;
    let part = path.files("bravo").join(".big.bin.loopsy-part");
    let copy = Reaped(
        path.alpha
            .spawn_cli(&["cp", "--json", &source.to_string_lossy(), "bravo:"]),
    );
    wait_for(
        "part of the copy to arrive",
        Duration::from_secs(60),
        || {
            let len = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            (len > 8 * 1024 * 1024).then_some(())
        },
    )?;

    // alpha's link goes down for longer than it takes to find a connection dead.
    let lab = &path.lab;
    lab.run(&path.alpha_host, "ip", &["link", "set", "eth0", "down"])?;
    let down = Instant::now();
    let gave_up = wait_for(
        "alpha to give up the dead link",
        Duration::from_secs(40),
        || {
            let link = path.alpha.peer(&path.bravo.peer_id);
            let connection = link.as_ref().and_then(|p| p["connection"].as_str());
            (connection == Some("none")).then(|| down.elapsed())
        },
    )?;
    // A connection that answered no ping for 13 s is checked (looked for every 2 s, 5 s to
    // answer): found dead in at most 20 s, where ping alone takes 30 to 40.
    assert!(
        gave_up < Duration::from_secs(24),
        "the dead link went on for {gave_up:?}"
    );
    std::thread::sleep(Duration::from_secs(20).saturating_sub(down.elapsed()));
    lab.run(&path.alpha_host, "ip", &["link", "set", "eth0", "up"])?;
    lab.default_route(&path.alpha_host, "10.1.0.1")?;
    let back = Instant::now();
    drop(copy);
    assert!(
        !path.files("bravo").join("big.bin").exists(),
        "nothing under the final name before the copy is whole"
    );

    // The same copy again: it goes on from what arrived.
    let summary: Value = wait_for("the copy to run again", Duration::from_secs(60), || {
        let out = path
            .alpha
            .cli(&["cp", "--json", &source.to_string_lossy(), "bravo:"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    })?;
    let resumed = summary["files"][0]["resumed"].as_u64().unwrap_or(0);
    let transferred = summary["transferred"].as_u64().unwrap_or(u64::MAX);
    assert!(resumed > 0, "it resumed: {summary}");
    assert_eq!(
        resumed + transferred,
        size as u64,
        "only the rest was sent: {summary}"
    );
    assert!(std::fs::read(path.files("bravo").join("big.bin"))? == data);

    // The attached client found its way back, and lost nothing.
    let before = counted(&attached.text()).len();
    wait_for(
        "the counter after the outage",
        Duration::from_secs(60),
        || (counted(&attached.text()).len() > before + 100).then_some(()),
    )?;
    assert_unbroken(&attached.text());
    println!(
        "after the outage: dead link given up after {} ms; copy resumed ({resumed} of {size} \
         bytes kept), session back, {} ms",
        gave_up.as_millis(),
        back.elapsed().as_millis()
    );
    drop((path.router, path.bravo));
    Ok(())
}
