//! `loopsy audit`: what peers did or tried on this device.

use std::{io::Write, process::ExitCode};

use clap::Args;
use loopsy_daemon::{Home, control::Connection};
use loopsy_wire::control::{AuditEntry, Request, Response};

/// Show the audit log of everything peers did or tried here.
#[derive(Debug, Args)]
pub struct Cmd {
    /// Keep printing new entries as they happen.
    #[arg(long)]
    follow: bool,
    /// JSON: one array; with --follow, one object per line.
    #[arg(long)]
    json: bool,
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        let mut connection = Connection::open(
            &home,
            Request::Audit {
                follow: self.follow,
            },
        )
        .await?;
        let mut all = Vec::new();
        while let Some(response) = connection.next().await? {
            let Response::Audit { entries } = response else {
                anyhow::bail!("the node answered with something other than audit entries");
            };
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
