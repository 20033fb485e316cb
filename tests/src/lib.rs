//! Helpers for Loopsy's integration tests: the real binaries ([`bin`]), nodes run as real
//! processes ([`node`]), and hosts in Linux network namespaces ([`netlab`]).

pub mod bin;
pub mod netlab;
pub mod node;
pub mod temp;

use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`. After `timeout` it panics (rather than returning
/// an error) so that the nodes of the test print their logs as they are dropped.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
