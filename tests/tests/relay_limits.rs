//! A real `loopsy-relay` process under load from libp2p peers in this process
//! (`loopsy_relay::load`): a rate limit set low in `relay.toml` refuses what passes it, and
//! the metrics endpoint's counters move while a circuit carries bytes.

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use libp2p::Multiaddr;
use loopsy_relay::load::{Circuit, Reserved};
use loopsy_tests::{bin, node::Reaped, temp::TempDir};

/// A relay on loopback with `config` as its `relay.toml`, its metrics served.
struct Relay {
    _child: Reaped,
    /// Its address with `/p2p/ID`.
    addr: Multiaddr,
    /// `host:port` of its metrics endpoint.
    metrics: String,
}

impl Relay {
    fn start(home: &Path, config: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(home)?;
        std::fs::write(home.join("relay.toml"), config)?;
        // Reservations are served only with an external address: the port must be known.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("/ip4/127.0.0.1/tcp/{port}");
        let mut child = Command::new(bin::loopsy_relay())
            .arg("--home")
            .arg(home)
            .args(["--listen", &addr, "--external-addr", &addr])
            .args(["--metrics", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout");
        let child = Reaped(child);
        let (mut id, mut metrics) = (None, None);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("loopsy-relay ") {
                id = Some(rest.to_owned());
            }
            if let Some(rest) = line.strip_prefix("metrics http://") {
                metrics = rest.strip_suffix("/metrics").map(str::to_owned);
            }
            if id.is_some() && metrics.is_some() {
                break;
            }
        }
        let (Some(id), Some(metrics)) = (id, metrics) else {
            anyhow::bail!("the relay printed no peer ID or no metrics address");
        };
        Ok(Self {
            _child: child,
            addr: format!("{addr}/p2p/{id}").parse()?,
            metrics,
        })
    }

    /// The metrics as text, fetched the way a scraper does.
    fn scrape(&self) -> String {
        let mut stream = std::net::TcpStream::connect(&self.metrics).expect("metrics endpoint");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")
            .expect("ask");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        answer
    }

    /// One series' value, by its exact name and labels.
    fn value(&self, series: &str) -> Option<f64> {
        self.scrape()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits up to 5 s for a series to read `expected`: the relay counts a refusal or a
    /// reservation just after the client has its answer, so a scrape at once may be early.
    async fn settles_at(&self, series: &str, expected: f64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.value(series) != Some(expected) {
            assert!(
                std::time::Instant::now() < deadline,
                "{series} never reads {expected}:\n{}",
                self.scrape()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The sum of a metric's series whose line starts with `prefix`.
    fn sum(&self, prefix: &str) -> f64 {
        self.scrape()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

#[tokio::test]
async fn a_reservation_rate_set_low_refuses_the_device_past_it() -> anyhow::Result<()> {
    let dir = TempDir::new("relay-rate");
    // Two reservations from one IP address, then none for an hour.
    let relay = Relay::start(
        dir.path(),
        "[limits.rate]\nreservations_per_ip = { burst = 2, every_secs = 3600 }\n",
    )?;
    let _first = Reserved::start(&relay.addr).await?;
    let _second = Reserved::start(&relay.addr).await?;
    let third = Reserved::start(&relay.addr).await;
    assert!(
        third.is_err(),
        "a third reservation from the same address passes the rate limit"
    );
    relay.settles_at("loopsy_relay_reservations", 2.0).await;
    relay
        .settles_at(
            "loopsy_relay_refusals_total{request=\"reservation\",reason=\"rate\"}",
            1.0,
        )
        .await;
    Ok(())
}

#[tokio::test]
async fn a_circuit_limit_set_low_refuses_the_circuit_past_it() -> anyhow::Result<()> {
    let dir = TempDir::new("relay-circuits");
    let relay = Relay::start(dir.path(), "[limits]\ncircuits = 1\n")?;
    let target = Reserved::start(&relay.addr).await?;
    let _first = Circuit::open(&relay.addr, target.peer_id).await?;
    let second = Circuit::open(&relay.addr, target.peer_id).await;
    assert!(second.is_err(), "a second circuit passes `circuits = 1`");
    relay
        .settles_at(
            "loopsy_relay_refusals_total{request=\"circuit\",reason=\"full\"}",
            1.0,
        )
        .await;
    Ok(())
}

#[tokio::test]
async fn the_metrics_follow_a_circuit_while_it_carries_bytes() -> anyhow::Result<()> {
    let dir = TempDir::new("relay-metrics");
    let relay = Relay::start(dir.path(), "")?;
    assert_eq!(relay.value("loopsy_relay_reservations"), Some(0.0));
    let bytes_before = relay.sum("libp2p_bandwidth_bytes_total");

    let target = Reserved::start(&relay.addr).await?;
    let mut circuit = Circuit::open(&relay.addr, target.peer_id).await?;
    let payload = vec![7u8; 4 << 20];
    circuit.send(&payload).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while target.received() < payload.len() as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "4 MiB through the relay"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let shown = relay.scrape();
    assert_eq!(
        relay.value("loopsy_relay_reservations"),
        Some(1.0),
        "{shown}"
    );
    assert_eq!(relay.value("loopsy_relay_circuits"), Some(1.0), "{shown}");
    assert_eq!(
        relay.value("libp2p_relay_events_total{event=\"CircuitReqAccepted\"}"),
        Some(1.0),
        "{shown}"
    );
    // Every relayed byte comes in on one connection and goes out on another.
    let carried = relay.sum("libp2p_bandwidth_bytes_total") - bytes_before;
    assert!(
        carried >= 2.0 * payload.len() as f64,
        "{carried} bytes counted for 4 MiB relayed:\n{shown}"
    );

    drop(circuit);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while relay.value("loopsy_relay_circuits") != Some(0.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the closed circuit leaves the gauge:\n{}",
            relay.scrape()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
