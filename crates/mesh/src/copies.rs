//! memcpy on AMD's Zen with an older glibc: every byte a node or relay moves is copied a
//! few times in memory (into yamux frames, into TLS records, out of them), and glibc
//! copies anything over a few KiB with `rep movsb` wherever the CPU claims fast short
//! `rep movsb`, as Zen 3 and 4 do; there it runs slower than glibc's vector loop, and
//! many times slower when the destination is not aligned, as most of these copies' are.
//! Later glibc releases moved AMD off it; Debian 12's glibc 2.36 has not. Measured on a
//! 2-core AMD EPYC under Debian 12: memcpy of 16 KiB at 24-25 GB/s against 55-95 GB/s
//! without `rep movsb`, and a 1 GiB `loopsy cp` took 2.0-2.5 s of CPU on the sender (a
//! third of it in memcpy) against 1.2 s, at 595 MB/s against 737-895.
//!
//! glibc reads its tunables once, from the environment, as a program starts. So a node or
//! relay on such a machine starts itself again at once with the threshold raised, and
//! marks that it did, so that it neither loops nor passes the setting on to the programs
//! it runs for others.

use std::{ffi::OsStr, os::unix::process::CommandExt, process::Command, sync::LazyLock};

/// glibc's tunables, read only at start-up.
const TUNABLES: &str = "GLIBC_TUNABLES";
/// `rep movsb` only for copies of more than 1 MiB, the L2 cache of a Zen 3 or 4 core: none
/// of the mesh's copies (frames and buffers of at most 256 KiB) is that large.
pub const SETTING: &str = "glibc.cpu.x86_rep_movsb_threshold=1048576";
/// Set beside the setting, by whoever set it: this process's environment is then ours.
const MARK: &str = "LOOPSY_TUNED_COPIES";

/// Starts this program again, same arguments, with glibc's copies tuned, where they need it
/// and the user set no tunables of their own. Call it before the program holds anything an
/// `exec` would lose (files it opened are closed on exec); it returns when there is
/// nothing to do or it could not.
pub fn restart_tuned() {
    if !wanted() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // Returns only on failure, and then this process runs on, untuned.
    let _ = tune(command.args(args)).exec();
}

/// `command` (the node's binary, about to be started) with glibc's copies tuned where they
/// need it, so that it need not start itself again.
pub fn tune(command: &mut Command) -> &mut Command {
    if wanted() {
        command.env(TUNABLES, SETTING).env(MARK, "1");
    }
    command
}

/// A command for a program this process starts for someone (exec, a session, a notifier):
/// without the tuning, when it was ours. Variables asked for, set on it after, win
/// (`--env GLIBC_TUNABLES=...` is the user's own). A PTY's command is made `From` it.
pub fn untuned(program: impl AsRef<OsStr>) -> tokio::process::Command {
    // Read once: this process's environment does not change after it starts.
    static OURS: LazyLock<bool> = LazyLock::new(|| std::env::var_os(MARK).is_some());
    let mut command = tokio::process::Command::new(program);
    if *OURS {
        command.env_remove(TUNABLES).env_remove(MARK);
    }
    command
}

/// Whether this process should run tuned and does not: on AMD, with glibc, and with neither
/// tunables of the user's nor our mark (set once we tried) in the environment.
fn wanted() -> bool {
    cfg!(all(target_arch = "x86_64", target_env = "gnu"))
        && std::env::var_os(MARK).is_none()
        && std::env::var_os(TUNABLES).is_none()
        && is_amd()
}

fn is_amd() -> bool {
    use std::io::BufRead;
    let Ok(file) = std::fs::File::open("/proc/cpuinfo") else {
        return false;
    };
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.starts_with("vendor_id"))
        .is_some_and(|line| line.ends_with("AuthenticAMD"))
}
