//! `loopsy pair`: show a code (and its QR, and a short code for a device that sees this
//! one) for another device to join; `loopsy pair join CODE`: use one.

use std::{io::Write, process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use loopsy_client::{Error, streams::InviteEvent};
use loopsy_daemon::{Home, clock};
use loopsy_wire::control::{ErrorCode, Invitation, Paired};
use serde_json::json;

/// Pair a device with this one: show a pairing code and wait for it.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cmd {
    #[command(subcommand)]
    join: Option<Join>,
    /// How long the code stays valid, from 30s to 24h (90s, 10m, 2h).
    #[arg(long, default_value = "10m", value_parser = clock::parse_duration)]
    ttl: Duration,
    /// Capabilities to grant the device that joins (exec, shell, files, sessions, ctx,
    /// msg, admit, all, none); every member grants it at most these. The config's defaults
    /// when omitted, or what it had before when it is paired again.
    #[arg(long, value_name = "CAPS")]
    allow: Vec<String>,
    /// Let several devices use the code until it expires.
    #[arg(long)]
    multi: bool,
    /// First line: {"code", "expires", "short_code", "url"}; then one line per result.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Join {
    /// Pair with the device that shows CODE.
    Join {
        /// The code the other device shows: the long one (LOOPSY1-...) or its pairing
        /// link (http://.../#code=LOOPSY1-...), or the short one (NAME N-NNN-NNN-NNN,
        /// quoted or not) when this device sees that one.
        #[arg(required = true, num_args = 1.., value_name = "CODE")]
        code: Vec<String>,
        /// Capabilities to grant that device; the config's defaults when omitted.
        #[arg(long, value_name = "CAPS")]
        allow: Vec<String>,
        /// One line: {"paired", "peer_id", "name", "check_code"} or {"paired": false, "error"}.
        #[arg(long)]
        json: bool,
    },
}

/// The code in a pairing link (`…/#code=LOOPSY1-…`), or the text as it is.
fn code_of(text: &str) -> String {
    match text.split_once("#code=") {
        Some((_, code)) => code.trim().to_owned(),
        None => text.to_owned(),
    }
}

fn allow(list: Vec<String>) -> Option<Vec<String>> {
    (!list.is_empty()).then_some(list)
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        match self.join {
            Some(Join::Join {
                code,
                allow: a,
                json,
            }) => join(home, code_of(&code.join(" ")), allow(a), json).await,
            None => self.invite(home).await,
        }
    }

    async fn invite(self, home: Home) -> anyhow::Result<ExitCode> {
        // Listening for Ctrl-C before the code shows: a Ctrl-C as soon as it shows must
        // withdraw it in words, not kill the process (the default action until then).
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut invite = crate::client(&home)
            .pair_invite(self.ttl.as_secs(), allow(self.allow), self.multi)
            .await?;
        let invitation = invite.invitation.clone();
        if self.json {
            line(&json!({
                "code": invitation.code,
                "expires": invitation.expires,
                "short_code": invitation.short_code,
                "url": invitation.url,
            }));
        } else {
            show_invitation(&invitation, self.multi);
        }
        let mut paired = 0;
        loop {
            let next = tokio::select! {
                next = invite.next() => next,
                _ = interrupt.recv() => {
                    // Dropping the connection withdraws the code at the node.
                    drop(invite);
                    if self.json {
                        line(&json!({"paired": false, "error": "withdrawn"}));
                    }
                    eprintln!("\nloopsy: the pairing code is withdrawn; it no longer works");
                    return Ok(ExitCode::from(130));
                }
            };
            match next {
                Ok(Some(InviteEvent::Paired(p))) => {
                    paired += 1;
                    report(&p, self.json);
                }
                // On stderr: stdout keeps one line per result.
                Ok(Some(InviteEvent::ShortCodeWithdrawn { message })) => {
                    eprintln!("loopsy: {message}");
                }
                Ok(None) => break,
                Err(Error::Refused(e)) if e.code == ErrorCode::Expired => {
                    if self.json {
                        line(&json!({"paired": false, "error": e.message}));
                    } else {
                        eprintln!("loopsy: {}", e.message);
                    }
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(if paired > 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

async fn join(
    home: Home,
    code: String,
    allow: Option<Vec<String>>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match crate::client(&home).pair_join(code, allow).await {
        Ok(p) => {
            report(&p, json);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if json => {
            line(&json!({"paired": false, "error": e.to_string()}));
            eprintln!("loopsy: {e}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

fn report(p: &Paired, json: bool) {
    if json {
        line(&json!({
            "paired": true,
            "peer_id": p.peer_id,
            "name": p.name,
            "check_code": p.check_code,
        }));
    } else {
        println!("Paired with {} ({}).", p.name, p.peer_id);
        println!(
            "Check code: {}  (the other device must show the same)",
            p.check_code
        );
    }
}

/// One compact JSON document on its own line, flushed at once for scripts that wait on it.
fn line(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn show_invitation(invitation: &Invitation, multi: bool) {
    let (code, expires) = (&invitation.code, &invitation.expires);
    println!("On the other device, run:\n\n    loopsy pair join {code}\n");
    if let Some(short) = &invitation.short_code {
        println!(
            "or, if that device sees this one (`loopsy peers` there lists it), the short code:\n\n    loopsy pair join {short}\n"
        );
    }
    if let Some(url) = &invitation.url {
        println!("or, on a phone or in a browser, open:\n\n    {url}\n");
    }
    // A phone's camera opens the link in its browser; the CLI takes the link too.
    let scanned = invitation.url.as_ref().unwrap_or(code);
    if let Ok(qr) = qrcode::QrCode::new(scanned.as_bytes()) {
        use qrcode::render::unicode::Dense1x2;
        // One module a column, two a row, and a quiet zone of four modules each side.
        let width = qr.width() as u16 + 8;
        let (_, cols) = crate::term::size();
        if width <= cols {
            let picture = qr
                .render::<Dense1x2>()
                .dark_color(Dense1x2::Light)
                .light_color(Dense1x2::Dark)
                .quiet_zone(true)
                .build();
            println!("or scan this with a phone's camera:\n{picture}");
        } else {
            println!(
                "(a QR code of this is {width} columns wide: widen the terminal from {cols} to \
                 see it, or copy the code above)\n"
            );
        }
    }
    let uses = if multi { "any number of times" } else { "once" };
    println!("The code works {uses} until {expires}. Waiting (Ctrl-C withdraws it)...");
    let _ = std::io::stdout().flush();
}
