//! The relay at scale: one `loopsy-relay` process holding many reservations while many
//! circuits through it carry bytes as fast as they can. Prints its figures as Markdown.
//!
//!     cargo build --release -p loopsy-relay --bin loopsy-relay --example relay_load
//!     target/release/examples/relay_load [RESERVATIONS [CIRCUITS [SECONDS]]]
//!
//! (`bench/run relay` does both.) The peers are plain libp2p peers in this process
//! (`loopsy_relay::load`), on loopback, so they share the machine's cores with the relay.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::{StreamExt, stream};
use loopsy_relay::load::{Circuit, Reserved};

/// Reservations being made at once.
const AT_ONCE: usize = 32;

struct Relay {
    child: Child,
    addr: libp2p::Multiaddr,
    metrics: String,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(binary: &Path, home: &Path) -> anyhow::Result<Relay> {
    // Limits well past the load, so the load measures the relay rather than its limits.
    std::fs::create_dir_all(home)?;
    std::fs::write(
        home.join("relay.toml"),
        "[limits]\nreservations = 100000\ncircuits = 100000\ncircuits_per_peer = 64\n\
         [limits.rate]\n\
         reservations_per_peer = { burst = 100000, every_secs = 1 }\n\
         reservations_per_ip = { burst = 100000, every_secs = 1 }\n\
         circuits_per_peer = { burst = 100000, every_secs = 1 }\n\
         circuits_per_ip = { burst = 100000, every_secs = 1 }\n",
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut child = Command::new(binary)
        .arg("--home")
        .arg(home)
        .args(["--listen", &addr, "--external-addr", &addr])
        .args(["--metrics", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let (mut id, mut metrics) = (None, None);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("loopsy-relay ") {
            id = Some(rest.to_owned());
        }
        if let Some(rest) = line.strip_prefix("metrics ") {
            metrics = Some(rest.to_owned());
        }
        if id.is_some() && metrics.is_some() {
            break;
        }
    }
    let (Some(id), Some(metrics)) = (id, metrics) else {
        anyhow::bail!("the relay did not print its peer ID and metrics address");
    };
    Ok(Relay {
        child,
        addr: format!("{addr}/p2p/{id}").parse()?,
        metrics,
    })
}

/// Resident memory of `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// CPU time `pid` has used, in seconds (user and system; 100 ticks a second on Linux).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// One value from the relay's metrics, by its exact series name.
fn scrape(url: &str, series: &str) -> anyhow::Result<f64> {
    use std::io::{Read, Write};
    let authority = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .context("an http:// URL")?;
    let mut stream = std::net::TcpStream::connect(authority)?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .with_context(|| format!("{series} not in the metrics"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let reservations = args.next().transpose()?.unwrap_or(1000);
    let circuits = args.next().transpose()?.unwrap_or(100).min(reservations);
    let secs = args.next().transpose()?.unwrap_or(10) as u64;
    let exe = std::env::current_exe()?;
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .context("examples dir")?
        .join("loopsy-relay");
    let home = std::env::temp_dir().join(format!("loopsy-relay-load-{}", std::process::id()));
    let relay = start_relay(&binary, &home)?;
    let pid = relay.child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_mib(pid);

    let started = Instant::now();
    let reserved: Vec<Reserved> = stream::iter(0..reservations)
        .map(|_| Reserved::start(&relay.addr))
        .buffer_unordered(AT_ONCE)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let reserve_time = started.elapsed();
    let held = scrape(&relay.metrics, "loopsy_relay_reservations")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = cpu_secs(pid);
    let quiet = Duration::from_secs(10);
    tokio::time::sleep(quiet).await;
    let idle_cpu = (cpu_secs(pid) - cpu_before) / quiet.as_secs_f64() * 100.0;
    let reserved_rss = rss_mib(pid);

    let mut open = Vec::with_capacity(circuits);
    for target in &reserved[..circuits] {
        open.push(Circuit::open(&relay.addr, target.peer_id).await?);
    }
    // The relay counts a circuit once both ends have answered: let the last one settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open_circuits = scrape(&relay.metrics, "loopsy_relay_circuits")?;
    let cpu_before = cpu_secs(pid);
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let sent: Vec<u64> =
        futures::future::join_all(open.iter_mut().map(|circuit| circuit.send_until(until)))
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
    let wall = started.elapsed().as_secs_f64();
    let busy_cpu = (cpu_secs(pid) - cpu_before) / wall * 100.0;
    let busy_rss = rss_mib(pid);
    // What reached the far ends (the rest was in flight when the clock stopped).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut per_circuit: Vec<f64> = reserved[..circuits]
        .iter()
        .map(|r| r.received() as f64 / wall / 1e6)
        .collect();
    per_circuit.sort_by(f64::total_cmp);
    let total: f64 = per_circuit.iter().sum();
    let sent_total: u64 = sent.iter().sum();

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let build = if cfg!(debug_assertions) {
        "dev build, dependencies at opt-level 2"
    } else {
        "release build"
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?");
    println!(
        "One `loopsy-relay` ({build}) on loopback, its {reservations} devices and \
         {circuits} senders in one other process on the same {cores} cores \
         (load average {load} at the end).\n"
    );
    println!("| what | figure |\n|---|---|");
    println!("| relay memory idle (RSS) | {idle_rss:.0} MiB |");
    println!(
        "| {reservations} reservations taken ({AT_ONCE} at once) | {:.1} s; the relay counts {held:.0} |",
        reserve_time.as_secs_f64()
    );
    println!(
        "| relay memory with {reservations} reservations | {reserved_rss:.0} MiB ({:.1} KiB each) |",
        (reserved_rss - idle_rss) * 1024.0 / reservations as f64
    );
    println!("| relay CPU holding them, idle | {idle_cpu:.1}% of a core |");
    println!("| relay memory with {open_circuits:.0} busy circuits as well | {busy_rss:.0} MiB |");
    println!("| relay CPU with {circuits} busy circuits | {busy_cpu:.0}% of a core |");
    println!(
        "| throughput per circuit ({secs} s, all at once): min / median / max | \
         {:.1} / {:.1} / {:.1} MB/s |",
        per_circuit.first().copied().unwrap_or(0.0),
        per_circuit
            .get(per_circuit.len() / 2)
            .copied()
            .unwrap_or(0.0),
        per_circuit.last().copied().unwrap_or(0.0),
    );
    println!(
        "| through the relay in all | {total:.0} MB/s ({:.0} MB sent) |",
        sent_total as f64 / 1e6
    );
    drop(open);
    drop(reserved);
    drop(relay);
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}
