//! `loopsy service`: run the node under the system's service manager, so that it starts at
//! boot or login and again after a crash: a systemd unit on Linux, a LaunchAgent on macOS.
//! The files come from `units.rs`; this module writes them and drives `systemctl` or
//! `launchctl`, saying plainly when the manager is not there.

mod manager;
pub mod units;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use loopsy_daemon::Home;

use units::{Scope, Spec};

/// Install, remove or inspect the node as a service that starts at boot or login.
#[derive(Debug, Args)]
pub struct Cmd {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Write the service file and start the node under it (systemd user unit on Linux,
    /// LaunchAgent on macOS). Flags after `--` go to `loopsy node`.
    Install {
        /// Linux: a system unit (root needed) running the node as --user, for headless
        /// hosts where nobody logs in.
        #[arg(long)]
        system: bool,
        /// With --system: the account the node runs as (its home must be readable by it).
        #[arg(long, value_name = "USER", requires = "system")]
        user: Option<String>,
        /// Print the file that would be written, and change nothing.
        #[arg(long)]
        print: bool,
        /// Flags for `loopsy node`, e.g. `-- --no-mdns --relay /ip4/.../p2p/...`.
        #[arg(last = true, value_name = "NODE_FLAGS")]
        node_args: Vec<String>,
    },
    /// Stop the service and remove its file.
    Uninstall {
        /// The system unit rather than the user's.
        #[arg(long)]
        system: bool,
    },
    /// Whether the service is installed and running.
    Status {
        /// The system unit rather than the user's.
        #[arg(long)]
        system: bool,
    },
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        match self.action {
            Action::Install {
                system,
                user,
                print,
                node_args,
            } => {
                check_node_args(&node_args)?;
                let spec = Spec {
                    exe: std::env::current_exe().context("cannot find the loopsy binary")?,
                    home: std::path::absolute(home.dir())
                        .context("cannot make the home's path absolute")?,
                    node_args,
                };
                let scope = scope(system, user)?;
                let manager = manager::Manager::current(scope)?;
                if print {
                    print!("{}", manager.file(&spec));
                    return Ok(ExitCode::SUCCESS);
                }
                manager.install(&spec)?;
            }
            Action::Uninstall { system } => {
                manager::Manager::current(scope(system, None)?)?.uninstall()?
            }
            Action::Status { system } => {
                return manager::Manager::current(scope(system, None)?)?.status();
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The systemd scope: a system unit runs the node as the named account, or as whoever
/// invoked `sudo`, or as the current user.
fn scope(system: bool, user: Option<String>) -> anyhow::Result<Scope> {
    if !system {
        return Ok(Scope::User);
    }
    let user = user
        .or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .context("--system needs --user NAME: the account the node runs as")?;
    if !units::valid_user(&user) {
        anyhow::bail!("--user {user:?}: not a user name systemd takes (letters, digits, _ . -)");
    }
    Ok(Scope::System { user })
}

/// Node flags are checked now, not at boot where a typo would only show in the journal.
fn check_node_args(args: &[String]) -> anyhow::Result<()> {
    #[derive(Debug, Parser)]
    #[command(name = "loopsy node")]
    struct NodeFlags {
        #[command(flatten)]
        node: super::node::Cmd,
    }
    NodeFlags::try_parse_from(std::iter::once("loopsy node".to_owned()).chain(args.iter().cloned()))
        .map(drop)
        .map_err(|e| anyhow::anyhow!("flags for `loopsy node`: {}", e.to_string().trim()))
}

/// Where a file of the service lives, made absolute from a base directory.
fn under(base: Option<PathBuf>, rest: &str) -> anyhow::Result<PathBuf> {
    base.map(|b| b.join(rest))
        .context("cannot find the home directory (set HOME)")
}
