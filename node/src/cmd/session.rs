//! `loopsy session new/ls/kill/export`: persistent terminal sessions on any device of the mesh.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use loopsy_daemon::Home;
use loopsy_wire::control::{Session, SessionStatus};

use crate::term;

/// Persistent terminal sessions: started on any device, attached to from any other.
#[derive(Debug, Args)]
pub struct Cmd {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Start a session (default: the login shell of the host) and print its ID.
    New {
        /// The device that hosts it (default: this one).
        #[arg(long, value_name = "PEER")]
        on: Option<String>,
        /// A name to attach by.
        #[arg(long)]
        name: Option<String>,
        /// Attach to it at once.
        #[arg(long)]
        attach: bool,
        /// Print the session as JSON, in the shape `session ls --json` lists it.
        #[arg(long)]
        json: bool,
        /// The program and its arguments.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        command: Vec<String>,
    },
    /// Every session in the mesh, from the replicated registry (hosts offline included).
    Ls {
        /// One JSON array of sessions: id, name, host, host_peer_id, host_online,
        /// host_last_seen, command, status, code, created, last_activity, clients, waiting.
        #[arg(long)]
        json: bool,
    },
    /// End a session: its program gets a hang-up, then a kill.
    Kill {
        /// The session: its ID, its name, or a unique prefix.
        session: String,
        /// The device that hosts it (default: found by asking).
        #[arg(long, value_name = "PEER")]
        on: Option<String>,
    },
    /// Write the output the host still holds (up to 4 MiB) as an asciicast v2 recording,
    /// timed as it came: `asciinema play FILE` replays it.
    Export {
        /// The session: its ID, its name, or a unique prefix.
        session: String,
        /// The device that hosts it (default: found by asking).
        #[arg(long, value_name = "PEER")]
        on: Option<String>,
        /// Where to write it (default: stdout).
        #[arg(long, short, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
    },
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        let client = crate::client(&home);
        match self.action {
            Action::New {
                on,
                name,
                attach,
                json,
                command,
            } => {
                let session = client
                    .session_new(on.clone(), name, command, term::size())
                    .await?;
                if json {
                    crate::output::json(&session)?;
                } else {
                    println!("{}", session.id);
                }
                if attach {
                    let reattach_for = crate::attach::REATTACH_FOR;
                    return Ok(
                        crate::attach::run(&home, on, session.id, reattach_for, false).await,
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Action::Ls { json } => {
                let sessions = client.sessions().await?;
                if json {
                    crate::output::json(&sessions)?;
                } else {
                    table(&sessions);
                }
                Ok(ExitCode::SUCCESS)
            }
            Action::Kill { session, on } => {
                client.session_kill(on, session.clone()).await?;
                println!("ended session {session}");
                Ok(ExitCode::SUCCESS)
            }
            Action::Export {
                session,
                on,
                output,
            } => {
                let cast = client.session_export(on, session).await?.asciicast();
                match output {
                    Some(path) => std::fs::write(&path, cast)
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?,
                    None => {
                        use std::io::Write;
                        let mut out = std::io::stdout().lock();
                        out.write_all(cast.as_bytes())?;
                        out.flush()?;
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

fn table(sessions: &[Session]) {
    let mut rows = vec![
        [
            "ID", "NAME", "HOST", "COMMAND", "STATUS", "CREATED", "CLIENTS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for s in sessions {
        let mut status = match (s.status, s.code) {
            (SessionStatus::Running, _) => "running".to_owned(),
            (SessionStatus::Exited, Some(code)) => format!("exited ({code})"),
            (SessionStatus::Exited, None) => "exited".to_owned(),
        };
        if let Some(waiting) = &s.waiting {
            status.push_str(&format!(", waiting since {}", waiting.since));
            if let Some(text) = &waiting.text {
                status.push_str(&format!(" ({}: {text})", waiting.kind.name()));
            } else {
                status.push_str(&format!(" ({})", waiting.kind.name()));
            }
        }
        if !s.host_online {
            let seen = s.host_last_seen.as_deref().unwrap_or("never");
            status.push_str(&format!(", host offline (last seen {seen})"));
        }
        rows.push(vec![
            s.id.clone(),
            s.name.clone().unwrap_or_else(|| "-".into()),
            s.host.clone(),
            s.command.join(" "),
            status,
            s.created.clone(),
            s.clients.to_string(),
        ]);
    }
    crate::output::table(&rows);
}
