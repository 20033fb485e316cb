//! `loopsy ctx set/get/ls/rm`: the shared context, a key-value store replicated to every
//! device of the mesh, for agents and scripts.

use std::{process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use loopsy_daemon::{Home, clock};
use loopsy_wire::control::{CtxEntry, ErrorCode};

/// The shared context: keys every device of the mesh sees (the last write wins).
#[derive(Debug, Args)]
pub struct Cmd {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Set KEY to VALUE everywhere (`-` reads the value from stdin).
    Set {
        /// The key (up to 256 bytes).
        key: String,
        /// The value, or `-` to read it from stdin (as it is: a trailing newline stays).
        value: String,
        /// Forget it after this long (90s, 10m, 2h, 7d).
        #[arg(long, value_parser = clock::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Print KEY's value (exit code 1 when it is not set).
    Get {
        /// The key.
        key: String,
        /// One JSON document: the entry, or {"key", "error"} when it is not set.
        #[arg(long)]
        json: bool,
    },
    /// Every key, or those starting with a prefix.
    Ls {
        /// Only keys that start with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// One JSON array: key, value, author, updated, expires.
        #[arg(long)]
        json: bool,
    },
    /// Delete KEY everywhere.
    Rm {
        /// The key.
        key: String,
    },
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        let client = crate::client(&home);
        match self.action {
            Action::Set { key, value, ttl } => {
                let value = if value == "-" {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                        .map_err(|e| anyhow::anyhow!("cannot read the value from stdin: {e}"))?;
                    text
                } else {
                    value
                };
                let ttl_secs = ttl.map(|t| t.as_secs().max(1));
                client.ctx_set(key, value, ttl_secs).await?;
                Ok(ExitCode::SUCCESS)
            }
            Action::Get { key, json } => {
                let entry = match client.ctx_get(key.clone()).await {
                    Ok(entry) => entry,
                    Err(loopsy_client::Error::Refused(e)) if e.code == ErrorCode::NotFound => {
                        if json {
                            crate::output::json(&serde_json::json!({
                                "key": key,
                                "error": e.message,
                            }))?;
                        }
                        eprintln!("loopsy: {}", e.message);
                        return Ok(ExitCode::FAILURE);
                    }
                    Err(e) => return Err(e.into()),
                };
                if json {
                    crate::output::json(&entry)?;
                } else {
                    println!("{}", entry.value);
                }
                Ok(ExitCode::SUCCESS)
            }
            Action::Ls { prefix, json } => {
                let entries = client.ctx_list(prefix).await?;
                if json {
                    crate::output::json(&entries)?;
                } else {
                    table(&entries);
                }
                Ok(ExitCode::SUCCESS)
            }
            Action::Rm { key } => {
                client.ctx_remove(key).await?;
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

fn table(entries: &[CtxEntry]) {
    let mut rows = vec![
        ["KEY", "VALUE", "BY", "UPDATED", "EXPIRES"]
            .map(String::from)
            .to_vec(),
    ];
    for e in entries {
        // The table shows control characters as spaces.
        let value: String = e.value.chars().take(60).collect();
        rows.push(vec![
            e.key.clone(),
            value,
            e.author.clone(),
            e.updated.clone(),
            e.expires.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    crate::output::table(&rows);
}
