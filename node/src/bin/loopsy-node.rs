//! `loopsy-node`: the node's binary, which `loopsy node` and `loopsy mcp` start. It runs
//! every other command too, the same as `loopsy`.

use std::{
    cell::Cell,
    process::ExitCode,
    time::{Duration, Instant},
};

use loopsy_cli::ThreadHooks;

/// mimalloc rather than glibc's malloc: glibc hands the top of a thread's heap back to the
/// kernel as soon as a large buffer is freed, so every 16 KiB yamux frame of a copy faulted
/// fresh pages in and zeroed them (a tenth of the receiver's CPU). Measured on a 1 GiB
/// copy: 10% more throughput and a lower peak (36 MiB, was 52); `no_thp` keeps an idle
/// node at 20 MiB, where huge pages made it 37. Only here: the short-lived `loopsy` would
/// pay for its start-up (its arenas' bitmaps) on every command.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    loopsy_cli::main(
        async |home, command| {
            // Only the node and MCP move bytes enough to need it, and a command that a user
            // runs through this binary need not start twice.
            loopsy_mesh::copies::restart_tuned();
            command.run(home).await
        },
        ThreadHooks {
            ended: give_back,
            parked: give_back_now_and_then,
        },
    )
}

/// Frees this thread's empty pages and returns the arenas' free pages to the system.
/// mimalloc does that on its own only while threads allocate, so what a burst of work took
/// stayed resident once the node went quiet: 12-15 s after ten rounds of ten copies at once
/// an idle node held 65 MiB, where it began at 20. Run as each runtime thread ends (a
/// copy's file threads, 2 s after their last work).
fn give_back() {
    collect(true);
}

/// At most this often on each worker, as it parks.
const GIVE_BACK_EVERY: Duration = Duration::from_secs(1);

/// Run each time a worker parks: at most once a [`GIVE_BACK_EVERY`], frees its empty pages
/// and purges what has lain free past mimalloc's delay. The workers never end, and their
/// heaps kept the frames of a burst of copies (about 10 MiB of a receiver's). Not forced:
/// a forced purge took up to 4.7 ms, and decommitted pages freed a moment before.
fn give_back_now_and_then() {
    thread_local!(static LAST_GIVEN_BACK: Cell<Option<Instant>> = const { Cell::new(None) });
    let now = Instant::now();
    if LAST_GIVEN_BACK
        .get()
        .is_some_and(|last| now - last < GIVE_BACK_EVERY)
    {
        return;
    }
    LAST_GIVEN_BACK.set(Some(now));
    collect(false);
}

/// mimalloc's `mi_collect` on this thread; `force` also purges every free page at once.
fn collect(force: bool) {
    // SAFETY: `mi_collect` has no preconditions beyond not running inside the allocator;
    // these hooks run from tokio's scheduler, never inside an allocation.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(force)
    }
}
