//! `loopsy mcp`: a Model Context Protocol server on stdio, so an AI agent can use the mesh.
//!
//! The agent's client starts `loopsy mcp`, which speaks MCP (JSON-RPC, one message per
//! line) on stdin and stdout and turns each tool call into requests on the local node's
//! control socket: the very requests the CLI makes. No secret passes through a tool's
//! arguments; what an agent may do on a peer is what that peer grants this device.
//!
//! Tools: `peers`, `exec`, `read_file`, `write_file`, `copy`, `session_list`,
//! `session_start`, `session_keys`, `session_screen`, `session_kill`, `ctx_get`, `ctx_set`,
//! `ctx_list`, `ctx_delete`, `msg_send`, `msg_inbox`, `notify`. Resources: `loopsy://peers`,
//! `loopsy://sessions`, and `loopsy://sessions/HOST_PEER_ID/ID` for each session's screen.

mod node;
mod resources;
mod scratch;
pub mod stdio;
mod tools;

use std::path::PathBuf;

use loopsy_client::Client;
use rmcp::{
    ServerHandler, ServiceExt,
    handler::server::router::tool::ToolRouter,
    model::{Implementation, ServerCapabilities, ServerConfig},
    tool_handler,
};

pub use stdio::MAX_LINE;

/// The MCP server: a client of one node.
#[derive(Clone)]
pub struct Loopsy {
    client: Client,
    /// Where files on their way to or from `read_file` and `write_file` wait (in the
    /// node's home, which the node may read and write).
    scratch: PathBuf,
    tool_router: ToolRouter<Self>,
}

impl Loopsy {
    pub fn new(client: Client, scratch: PathBuf) -> Self {
        Self {
            client,
            scratch,
            tool_router: Self::tool_router(),
        }
    }

    /// A scratch directory for a file on its way.
    fn scratch(&self) -> Result<scratch::Scratch, String> {
        scratch::Scratch::new(&self.scratch)
            .map_err(|e| format!("cannot make a scratch directory: {e}"))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Loopsy {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("loopsy", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    /// Runs a tool until it ends or the client cancels the call; a cancelled call drops
    /// its control connection, which stops what it started (a program, a copy).
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        let cancelled = context.ct.clone();
        let call = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        tokio::select! {
            result = self.tool_router.call(call) => result,
            _ = cancelled.cancelled() => Err(rmcp::ErrorData::internal_error(
                "the call was cancelled; what it started was stopped",
                None,
            )),
        }
    }

    async fn list_resources(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ListResourcesResult, rmcp::ErrorData> {
        resources::list(self).await
    }

    async fn read_resource(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        _context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, rmcp::ErrorData> {
        resources::read(self, &request.uri).await.map(Into::into)
    }
}

const INSTRUCTIONS: &str = "Loopsy joins this user's devices into one private mesh. Use \
    `peers` to see the devices, `exec` to run programs on one, `read_file`/`write_file`/\
    `copy` for files, `session_*` for long-lived terminal sessions that people can attach \
    to too, `ctx_*` for a key-value store shared by every device, and `msg_*` for messages. \
    Each device decides what this one may do there.";

/// Serves MCP on stdin and stdout until the client closes stdin.
pub async fn serve(client: Client, scratch: PathBuf) -> Result<(), std::io::Error> {
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let transport = stdio::Stdio::new(stdin, tokio::io::stdout());
    let server = Loopsy::new(client, scratch)
        .serve(transport)
        .await
        .map_err(std::io::Error::other)?;
    server.waiting().await.map_err(std::io::Error::other)?;
    Ok(())
}
