//! `loopsy`: parses the command line and hands each subcommand to its module in `cmd/`.

mod attach;
mod cmd;
mod output;
mod remote;
mod term;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use loopsy_daemon::Home;

/// mimalloc rather than glibc's malloc: glibc hands the top of a thread's heap back to the
/// kernel as soon as a large buffer is freed, so every 16 KiB yamux frame of a copy faulted
/// fresh pages in and zeroed them (a tenth of the receiver's CPU). Measured on a 1 GiB
/// copy: 10% more throughput and a lower peak (36 MiB, was 52); `no_thp` keeps an idle
/// node at 20 MiB, where huge pages made it 37.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Your devices and their agents in one private, end-to-end encrypted mesh.
#[derive(Debug, Parser)]
#[command(name = "loopsy", version)]
struct Cli {
    /// The node's state directory (identity, config, control socket).
    #[arg(long, global = true, env = "LOOPSY_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Node(cmd::node::Cmd),
    Id(cmd::id::Cmd),
    Status(cmd::status::Cmd),
    Peers(cmd::peers::Cmd),
    Pair(cmd::pair::Cmd),
    Trust(cmd::trust::Cmd),
    Audit(cmd::audit::Cmd),
    Exec(cmd::exec::Cmd),
    Shell(cmd::shell::Cmd),
    Cp(cmd::cp::Cmd),
    Session(cmd::session::Cmd),
    Attach(cmd::attach::Cmd),
    Ctx(cmd::ctx::Cmd),
    Msg(cmd::msg::Cmd),
    Mcp(cmd::mcp::Cmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_daemon = matches!(cli.command, Command::Node(_));
    init_logging(match cli.command {
        Command::Node(_) => "info",
        // rmcp warns of every error answer it sends; the agent's client has them already.
        Command::Mcp(_) => "warn,rmcp=error",
        _ => "warn",
    });
    let result = Home::resolve(cli.home)
        .map_err(anyhow::Error::from)
        .and_then(|home| {
            let runtime = runtime(is_daemon)?;
            let result = runtime.block_on(run(home, cli.command));
            // A read of a terminal's stdin may still be blocked in its thread: do not wait.
            runtime.shutdown_background();
            result
        });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("loopsy: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, leaving out a cause whose text the message already holds
/// (typed errors often quote their source).
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

async fn run(home: Home, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Node(cmd) => cmd.run(home).await,
        Command::Id(cmd) => cmd.run(home).await,
        Command::Status(cmd) => cmd.run(home).await,
        Command::Peers(cmd) => cmd.run(home).await,
        Command::Pair(cmd) => cmd.run(home).await,
        Command::Trust(cmd) => cmd.run(home).await,
        Command::Audit(cmd) => cmd.run(home).await,
        Command::Exec(cmd) => cmd.run(home).await,
        Command::Shell(cmd) => cmd.run(home).await,
        Command::Cp(cmd) => cmd.run(home).await,
        Command::Session(cmd) => cmd.run(home).await,
        Command::Attach(cmd) => cmd.run(home).await,
        Command::Ctx(cmd) => cmd.run(home).await,
        Command::Msg(cmd) => cmd.run(home).await,
        Command::Mcp(cmd) => cmd.run(home).await,
    }
}

/// The daemon gets worker threads; a client command, one thread, for a fast start.
fn runtime(is_daemon: bool) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if is_daemon {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build()
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
