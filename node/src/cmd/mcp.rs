//! `loopsy mcp`: the MCP server for AI agents, on stdin and stdout.

use std::process::ExitCode;

use clap::Args;
use loopsy_daemon::Home;

/// Serve the Model Context Protocol on stdio, so an AI agent can use the mesh (e.g.
/// `claude mcp add loopsy -- loopsy mcp`). Needs a running `loopsy node`.
#[derive(Debug, Args)]
pub struct Cmd {}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        loopsy_mcp::serve(crate::client(&home), home.dir().join("mcp")).await?;
        Ok(ExitCode::SUCCESS)
    }
}
