//! `loopsy`: the command line. `loopsy node` and `loopsy mcp` start `loopsy-node`, the
//! binary installed beside this one, with the same arguments; every other command runs here.

use std::{os::unix::process::CommandExt, process::ExitCode};

fn main() -> ExitCode {
    loopsy_cli::main(
        async |_home, _command| Err(start_node_binary()),
        loopsy_cli::ThreadHooks::NONE,
    )
}

/// The node's binary, in place of this process (same pid, same arguments); returns only
/// on failure.
fn start_node_binary() -> anyhow::Error {
    const NAME: &str = "loopsy-node";
    let beside = std::env::current_exe().map(|exe| exe.with_file_name(NAME));
    let path = match beside {
        Ok(path) => path,
        Err(error) => return anyhow::anyhow!("cannot find {NAME}: {error}"),
    };
    let error = loopsy_mesh::copies::tune(
        std::process::Command::new(&path).args(std::env::args_os().skip(1)),
    )
    .exec();
    anyhow::anyhow!(
        "cannot start {} ({error}): it is installed beside `loopsy` \
         (`cargo install --path node` installs both)",
        path.display()
    )
}
