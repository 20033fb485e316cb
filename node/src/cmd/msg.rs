//! `loopsy msg send/inbox`: messages between devices and the agents on them, kept by the
//! mesh until the recipient is reachable, and delivered once.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use loopsy_daemon::Home;

/// Messages between devices: delivered at once when the device is reachable, or kept by
/// the mesh (for 30 days) until it is.
#[derive(Debug, Args)]
pub struct Cmd {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Send TEXT to PEER.
    Send {
        /// The device: a name, a peer ID, or a unique prefix of either.
        peer: String,
        /// The message (up to 16 KiB).
        text: String,
        /// One JSON document: {"id", "delivered"}.
        #[arg(long)]
        json: bool,
    },
    /// The messages this device received, oldest first.
    Inbox {
        /// One JSON array: id, from, text, sent, received.
        #[arg(long)]
        json: bool,
    },
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        let client = crate::client(&home);
        match self.action {
            Action::Send { peer, text, json } => {
                let loopsy_client::Sent { id, delivered } = client.msg_send(peer, text).await?;
                if json {
                    crate::output::json(&serde_json::json!({"id": id, "delivered": delivered}))?;
                } else if delivered {
                    println!("delivered ({id})");
                } else {
                    println!("sent ({id}); it will be delivered when the device is reachable");
                }
                Ok(ExitCode::SUCCESS)
            }
            Action::Inbox { json } => {
                let messages = client.msg_inbox().await?;
                if json {
                    crate::output::json(&messages)?;
                } else {
                    for m in &messages {
                        // The text is the sender's: it may not steer the terminal, and its
                        // lines, indented, cannot pass for another message.
                        let from = crate::output::plain(&m.from);
                        println!(
                            "{}  {}:\n{}",
                            m.sent,
                            from,
                            crate::output::indented(&m.text)
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
