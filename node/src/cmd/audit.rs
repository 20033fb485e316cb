//! `loopsy audit`: what peers did or tried on this device.

use std::{io::Write, process::ExitCode};

use clap::Args;
use loopsy_daemon::{Home, clock};
use loopsy_wire::control::AuditEntry;

/// Show the audit log of everything peers did or tried here.
#[derive(Debug, Args)]
pub struct Cmd {
    /// Keep printing new entries as they happen (from now on, unless --since says when).
    #[arg(long)]
    follow: bool,
    /// Only entries from this long ago on (90s, 10m, 2h, 7d).
    #[arg(long, value_parser = clock::parse_duration, value_name = "DURATION")]
    since: Option<std::time::Duration>,
    /// Only entries about this device: a name, or a peer ID or its start.
    #[arg(long, value_name = "PEER")]
    peer: Option<String>,
    /// JSON: one array; with --follow, one object per line.
    #[arg(long)]
    json: bool,
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        let since = match (self.since, self.follow) {
            (Some(ago), _) => Some(clock::rfc3339_ms(
                clock::now_ms().saturating_sub(ago.as_millis() as u64),
            )),
            // Following starts from now: the history is one `loopsy audit` away.
            (None, true) => Some(clock::rfc3339_ms(clock::now_ms())),
            (None, false) => None,
        };
        let mut feed = crate::client(&home).audit(self.follow, since).await?;
        let mut all = Vec::new();
        while let Some(mut entries) = feed.next().await? {
            if let Some(peer) = &self.peer {
                entries.retain(|e| about(e, peer));
            }
            if self.json && !self.follow {
                all.extend(entries);
                continue;
            }
            let mut out = std::io::stdout().lock();
            for entry in entries {
                if self.json {
                    writeln!(out, "{}", serde_json::to_string(&entry)?)?;
                } else {
                    writeln!(out, "{}", human(&entry))?;
                }
            }
            out.flush()?;
        }
        if self.json && !self.follow {
            crate::output::json(&all)?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Whether `e` is about the device a user means: its name, or its peer ID or a start of it.
fn about(e: &AuditEntry, peer: &str) -> bool {
    e.name.as_deref() == Some(peer) || e.peer.as_deref().is_some_and(|p| p.starts_with(peer))
}

fn human(e: &AuditEntry) -> String {
    let who = match (&e.name, &e.peer) {
        (Some(name), Some(peer)) => format!("{name} ({})", short(peer)),
        (None, Some(peer)) => short(peer),
        (_, None) => "local".into(),
    };
    let mut line = format!("{}  {who}  {} {}  {}", e.time, e.action, e.args, e.result);
    if let Some(reason) = &e.reason {
        line.push_str(&format!(": {reason}"));
    }
    line
}

/// The end of a peer ID, as people tell them apart.
fn short(peer: &str) -> String {
    let tail: String = peer
        .chars()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}
