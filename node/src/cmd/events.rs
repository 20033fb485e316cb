//! `loopsy events`: the mesh's attention events (bells, notifications, programs that ended,
//! `loopsy notify`).

use std::{io::Write, process::ExitCode};

use clap::Args;
use loopsy_daemon::{Home, clock};
use loopsy_wire::control::MeshEvent;

/// Show attention events from every device: new ones, or those of the last --since.
#[derive(Debug, Args)]
pub struct Cmd {
    /// Keep printing new events as they arrive.
    #[arg(long)]
    follow: bool,
    /// Also the events of this long ago on (90s, 10m, 2h; events are kept an hour).
    #[arg(long, value_parser = clock::parse_duration, value_name = "DURATION")]
    since: Option<std::time::Duration>,
    /// JSON: one array; with --follow, one object per line.
    #[arg(long)]
    json: bool,
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        let since = self
            .since
            .map(|ago| clock::now_ms().saturating_sub(ago.as_millis() as u64));
        let mut feed = crate::client(&home).events(self.follow, since).await?;
        let mut all = Vec::new();
        while let Some(events) = feed.next().await? {
            if self.json && !self.follow {
                all.extend(events);
                continue;
            }
            let mut out = std::io::stdout().lock();
            for event in events {
                if self.json {
                    writeln!(out, "{}", serde_json::to_string(&event)?)?;
                } else {
                    writeln!(out, "{}", human(&event))?;
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

fn human(e: &MeshEvent) -> String {
    let event = &e.event;
    let session = match (&event.session_name, &event.session) {
        (Some(name), _) => format!(" {name}"),
        (None, Some(id)) => format!(" {id}"),
        (None, None) => String::new(),
    };
    let mut line = format!("{}  {}{session}  {}", e.time, event.host, event.kind.name());
    let said: Vec<&str> = [event.title.as_deref(), event.text.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    if !said.is_empty() {
        line.push_str(&format!(": {}", said.join(": ")));
    }
    line
}
