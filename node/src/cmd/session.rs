//! `loopsy session new/ls/kill/export/recordings/rm-recording`: persistent terminal sessions
//! on any device of the mesh.

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
        /// Keep the whole output in a recording on the host (up to its
        /// `[sessions] record_max_mib`, 64 MiB by default), which `session export` writes.
        #[arg(long)]
        record: bool,
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
        /// host_last_seen, command, status, code, created, last_activity, clients, waiting,
        /// and recording (bytes, max_bytes, full) for a recorded one.
        #[arg(long)]
        json: bool,
    },
    /// The sessions of the mesh that have a recording on their host: its size, and whether
    /// it reached its bound.
    Recordings {
        /// The same JSON as `session ls --json`, of the recorded sessions only.
        #[arg(long)]
        json: bool,
    },
    /// Delete a session's recording on its host (stopping it, if the session still runs).
    RmRecording {
        /// The session: its ID, its name, or a unique prefix.
        session: String,
        /// The device that hosts it (default: found by asking).
        #[arg(long, value_name = "PEER")]
        on: Option<String>,
    },
    /// End a session: its program gets a hang-up, then a kill.
    Kill {
        /// The session: its ID, its name, or a unique prefix.
        session: String,
        /// The device that hosts it (default: found by asking).
        #[arg(long, value_name = "PEER")]
        on: Option<String>,
    },
    /// Write the session's output as an asciicast v2 recording, timed as it came: its whole
    /// recording when it was started with `--record`, else what the host still holds (up
    /// to 4 MiB). `asciinema play FILE` replays it.
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
                record,
                command,
            } => {
                let session = client
                    .session_start(on.clone(), name, command, term::size(), record)
                    .await?;
                if record && session.recording.is_none() {
                    eprintln!(
                        "loopsy: warning: the host started session {} without a recording \
                         (its version predates them)",
                        session.id
                    );
                }
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
            Action::Recordings { json } => {
                let recorded: Vec<Session> = client
                    .sessions()
                    .await?
                    .into_iter()
                    .filter(|s| s.recording.is_some())
                    .collect();
                if json {
                    crate::output::json(&recorded)?;
                } else {
                    recordings_table(&recorded);
                }
                Ok(ExitCode::SUCCESS)
            }
            Action::RmRecording { session, on } => {
                let bytes = client.session_delete_recording(on, session.clone()).await?;
                println!("deleted the recording of session {session} ({bytes} bytes)");
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
        if let Some(recording) = &s.recording {
            status.push_str(if recording.full {
                ", recorded (full)"
            } else {
                ", recording"
            });
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

fn recordings_table(sessions: &[Session]) {
    let mut rows = vec![
        ["ID", "NAME", "HOST", "STATUS", "SIZE", "BOUND"]
            .map(String::from)
            .to_vec(),
    ];
    for s in sessions {
        let Some(recording) = &s.recording else {
            continue;
        };
        let status = match (s.status, recording.full) {
            (_, true) => "stopped at its bound",
            (SessionStatus::Running, false) => "recording",
            (SessionStatus::Exited, false) => "complete",
        };
        rows.push(vec![
            s.id.clone(),
            s.name.clone().unwrap_or_else(|| "-".into()),
            s.host.clone(),
            status.to_owned(),
            mib(recording.bytes),
            mib(recording.max_bytes),
        ]);
    }
    crate::output::table(&rows);
}

/// A size in MiB, one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
