//! One module per subcommand, each with its `Cmd` (flags) and `run`.

pub mod attach;
pub mod audit;
pub mod completions;
pub mod cp;
pub mod ctx;
pub mod events;
pub mod exec;
pub mod id;
pub mod man;
pub mod mcp;
pub mod msg;
pub mod netcheck;
pub mod node;
pub mod notify;
pub mod pair;
pub mod peers;
pub mod service;
pub mod session;
pub mod shell;
pub mod status;
pub mod trust;
