//! `loopsy session new/ls/kill`: persistent terminal sessions on any device of the mesh.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use loopsy_daemon::{Home, clock, control::Connection};
use loopsy_mesh::framed;
use loopsy_wire::{
    control::{Request, Response},
    session::{self, MAX_FRAME, Reply, Status},
};
use serde::Serialize;
use tokio_util::compat::TokioAsyncReadCompatExt;

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
        /// Print the session as JSON.
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
        /// One JSON array: id, name, host, host_peer_id, host_online, command, status,
        /// code, created, last_activity, clients.
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
}

/// A session as `ls --json` prints it.
#[derive(Serialize)]
struct Listed {
    id: String,
    name: Option<String>,
    host: String,
    host_peer_id: String,
    /// Whether the host is this device or connected to it now.
    host_online: bool,
    /// For an offline host: when this device last heard from it.
    host_last_seen: Option<String>,
    command: Vec<String>,
    status: &'static str,
    code: Option<i32>,
    created: String,
    last_activity: String,
    clients: u32,
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        match self.action {
            Action::New {
                on,
                name,
                attach,
                json,
                command,
            } => {
                let (rows, cols) = term::size();
                let request = session::Request::New {
                    name,
                    argv: command,
                    rows,
                    cols,
                };
                let Reply::Created(info) = ask(&home, on.clone(), request).await? else {
                    anyhow::bail!("the host gave an unexpected answer");
                };
                if json {
                    crate::output::json(&info)?;
                } else {
                    println!("{}", info.id);
                }
                if attach {
                    return Ok(crate::attach::run(&home, on, info.id).await);
                }
                Ok(ExitCode::SUCCESS)
            }
            Action::Ls { json } => list(&home, json).await,
            Action::Kill { session, on } => {
                let request = session::Request::Kill {
                    session: session.clone(),
                };
                match ask(&home, on, request).await? {
                    Reply::Killed => {
                        println!("ended session {session}");
                        Ok(ExitCode::SUCCESS)
                    }
                    _ => anyhow::bail!("the host gave an unexpected answer"),
                }
            }
        }
    }
}

/// Sends one session request and reads its one reply.
async fn ask(
    home: &Home,
    peer: Option<String>,
    request: session::Request,
) -> anyhow::Result<Reply> {
    let mut connection = Connection::open(home, Request::Session { peer, request }).await?;
    let Some(Response::Stream { .. }) = connection.next().await? else {
        anyhow::bail!("the node gave an unexpected answer");
    };
    let mut stream = connection.into_stream().compat();
    match framed::read::<Reply, _>(&mut stream, MAX_FRAME).await? {
        Some(Reply::Error { message }) => anyhow::bail!("{message}"),
        Some(reply) => Ok(reply),
        None => anyhow::bail!("the host closed the stream without answering"),
    }
}

async fn list(home: &Home, json: bool) -> anyhow::Result<ExitCode> {
    let response = loopsy_daemon::control::request(home, Request::SessionList).await?;
    let Response::Sessions { sessions } = response else {
        anyhow::bail!("the node answered with something other than sessions");
    };
    let listed: Vec<Listed> = sessions
        .into_iter()
        .map(|hosted| {
            let s = hosted.session;
            let (status, code) = match s.status {
                Status::Running => ("running", None),
                Status::Exited { code } => ("exited", code),
            };
            Listed {
                id: s.id,
                name: s.name,
                host: hosted.host,
                host_peer_id: hosted.host_peer_id,
                host_online: hosted.host_online,
                host_last_seen: hosted.last_seen,
                command: s.command,
                status,
                code,
                created: clock::rfc3339(s.created),
                last_activity: clock::rfc3339(s.last_activity),
                clients: s.clients,
            }
        })
        .collect();
    if json {
        crate::output::json(&listed)?;
    } else {
        let mut rows = vec![
            [
                "ID", "NAME", "HOST", "COMMAND", "STATUS", "CREATED", "CLIENTS",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for s in &listed {
            let mut status = match s.code {
                Some(code) => format!("{} ({code})", s.status),
                None => s.status.to_owned(),
            };
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
    Ok(ExitCode::SUCCESS)
}
