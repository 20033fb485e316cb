//! Loopsy's command line, shared by its two binaries: `loopsy`, the small one a user or an
//! agent starts for every command, and `loopsy-node`, which holds the node's own code.
//! `loopsy node` and `loopsy mcp` run in `loopsy-node` (see `NodeCommand`); every other
//! command runs in whichever binary was started.

mod attach;
pub mod cmd;
mod output;
mod remote;
mod stdio;
mod term;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use loopsy_daemon::Home;

/// Your devices and their agents in one private, end-to-end encrypted mesh.
#[derive(Debug, Parser)]
#[command(name = "loopsy", version)]
pub struct Cli {
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
    Netcheck(cmd::netcheck::Cmd),
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
    Service(cmd::service::Cmd),
    Completions(cmd::completions::Cmd),
    Man(cmd::man::Cmd),
    Events(cmd::events::Cmd),
    Notify(cmd::notify::Cmd),
}

/// How a command ends when its reader went away (`loopsy audit | head`): quietly, with the
/// status a shell reports for a program that SIGPIPE ended, as `ls | head` does.
const CLOSED_PIPE: u8 = 128 + 13;

/// The commands that run the node's own code: the daemon and the MCP server (its client
/// library, rmcp, is large too). Kept out of `loopsy`, so a command such as `exec` starts
/// a binary a sixth of the size: fewer pages to map and relocate at every start.
#[derive(Debug)]
pub enum NodeCommand {
    Node(cmd::node::Cmd),
    Mcp(cmd::mcp::Cmd),
}

impl NodeCommand {
    /// Runs it in this process (`loopsy-node`).
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        match self {
            Self::Node(cmd) => cmd.run(home).await,
            Self::Mcp(cmd) => cmd.run(home).await,
        }
    }
}

/// What a binary has the runtime's threads do, for the allocator it links: give back what
/// a thread holds.
#[derive(Debug, Clone, Copy)]
pub struct ThreadHooks {
    /// As a thread ends.
    pub ended: fn(),
    /// Each time a worker parks, having run out of work.
    pub parked: fn(),
}

impl ThreadHooks {
    pub const NONE: Self = Self {
        ended: || {},
        parked: || {},
    };
}

/// Parses the command line and runs the command; `run_node` runs a `NodeCommand`, so each
/// binary links the node's code or not.
pub fn main(
    run_node: impl AsyncFnOnce(Home, NodeCommand) -> anyhow::Result<ExitCode>,
    hooks: ThreadHooks,
) -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    // These need no node, no home and no runtime.
    let offline = match &cli.command {
        Command::Completions(cmd) => Some(cmd.run()),
        Command::Man(cmd) => Some(cmd.run()),
        _ => None,
    };
    if let Some(result) = offline {
        return match result {
            Ok(code) => code,
            Err(error) if is_closed_pipe(&error) => ExitCode::from(CLOSED_PIPE),
            Err(error) => {
                eprintln!("loopsy: {}", describe(&error));
                ExitCode::FAILURE
            }
        };
    }
    let is_daemon = matches!(cli.command, Command::Node(_));
    let log_file = match &cli.command {
        Command::Node(cmd) => cmd.log_file.clone(),
        _ => None,
    };
    let logging = init_logging(
        match cli.command {
            Command::Node(_) => "info",
            // rmcp warns of every error answer it sends; the agent's client has them already.
            Command::Mcp(_) => "warn,rmcp=error",
            _ => "warn",
        },
        log_file.as_deref(),
    );
    if let Err(error) = logging {
        eprintln!("loopsy: {error}");
        return ExitCode::FAILURE;
    }
    let result = Home::resolve(cli.home)
        .map_err(anyhow::Error::from)
        .and_then(|home| {
            let runtime = runtime(is_daemon, hooks)?;
            let result = runtime.block_on(run(home, cli.command, run_node));
            // A read of a terminal's stdin may still be blocked in its thread: do not wait.
            runtime.shutdown_background();
            result
        });
    match result {
        Ok(code) => code,
        Err(error) if is_closed_pipe(&error) => ExitCode::from(CLOSED_PIPE),
        Err(error) => {
            eprintln!("loopsy: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// Rust ignores SIGPIPE, so a write to a closed stdout fails instead of ending the process,
/// and `println!` panics on it. SIGPIPE itself stays ignored (a write to the node's control
/// socket after the node hung up must fail as an error, not end the command silently): a
/// panic from printing into a closed pipe ends the process quietly instead.
fn quiet_on_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(i32::from(CLOSED_PIPE));
        }
        report(info);
    }));
}

/// Whether `error` is a write into a closed stdout: a bare I/O error, as `writeln!` to
/// stdout gives (the control socket's errors come wrapped in the client's own type).
fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The error and its causes, leaving out a cause whose text the message already holds
/// (typed errors often quote their source).
pub(crate) fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

async fn run(
    home: Home,
    command: Command,
    run_node: impl AsyncFnOnce(Home, NodeCommand) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Node(cmd) => run_node(home, NodeCommand::Node(cmd)).await,
        Command::Id(cmd) => cmd.run(home).await,
        Command::Status(cmd) => cmd.run(home).await,
        Command::Peers(cmd) => cmd.run(home).await,
        Command::Netcheck(cmd) => cmd.run(home).await,
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
        Command::Mcp(cmd) => run_node(home, NodeCommand::Mcp(cmd)).await,
        Command::Service(cmd) => cmd.run(home).await,
        Command::Events(cmd) => cmd.run(home).await,
        Command::Notify(cmd) => cmd.run(home).await,
        Command::Completions(_) | Command::Man(_) => Ok(ExitCode::SUCCESS),
    }
}

/// A client of the node whose home is `home`.
pub(crate) fn client(home: &Home) -> loopsy_client::Client {
    loopsy_client::Client::new(home.socket(), home.dir().to_owned(), home.flag_hint())
}

/// How long a daemon's thread for blocking work (files, mostly) waits for more before it
/// ends. tokio's default is 10 s; the node gives back what its copies took as their threads
/// end (`ThreadHooks::ended`), so sooner, while a burst of work still finds them waiting.
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(2);

/// The daemon gets worker threads; a client command, one thread, for a fast start.
fn runtime(is_daemon: bool, hooks: ThreadHooks) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if is_daemon {
        let mut daemon = tokio::runtime::Builder::new_multi_thread();
        daemon.thread_keep_alive(BLOCKING_KEEP_ALIVE);
        daemon
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .on_thread_stop(hooks.ended)
        .on_thread_park(hooks.parked)
        .build()
}

/// Logs go to stderr, coloured only when it is a terminal, or appended to `file`. The level
/// comes from `RUST_LOG` (`loopsy_daemon=debug`, say), else `default`.
fn init_logging(default: &str, file: Option<&std::path::Path>) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("cannot open the log file {}: {e}", path.display()))?;
            logs.with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        None => logs
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand and every argument says what it is in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (no about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "loopsy", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
