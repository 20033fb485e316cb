//! One module per subcommand, each with its `Cmd` (flags) and `run`.

pub mod id;
pub mod node;
pub mod peers;
pub mod status;
