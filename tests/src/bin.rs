//! The workspace's binaries, built once per test process so tests always run current code.
//!
//! `cargo test` / `cargo nextest` build this package's tests, but not the `loopsy` binary
//! of another package, so the first test to need it asks cargo to build it (a no-op when
//! it is fresh) in the same profile and target directory as the test itself.

use std::{path::PathBuf, process::Command, sync::OnceLock};

/// The path of the `loopsy` binary.
pub fn loopsy() -> PathBuf {
    built().join("loopsy")
}

/// The path of the `loopsy-relay` binary.
pub fn loopsy_relay() -> PathBuf {
    built().join("loopsy-relay")
}

/// The directory of this test's build profile: `<target>/<profile>`.
fn profile_dir() -> PathBuf {
    // The test runs from <target>/<profile>/deps/<test>.
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary inside <target>/<profile>/deps")
        .to_owned()
}

/// Cargo's target directory, where tests may keep what they build once (a Python venv).
pub fn target_dir() -> PathBuf {
    profile_dir().parent().expect("target dir").to_owned()
}

fn built() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let profile_dir = profile_dir();
        let target_dir = target_dir();
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let mut command = Command::new(cargo);
        // The test runner's own variables would make cargo think the build changed and
        // rebuild it on every run.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("NEXTEST")
                || key.starts_with("CARGO_PKG_")
                || [
                    "LD_LIBRARY_PATH",
                    "CARGO_MANIFEST_DIR",
                    "CARGO_CRATE_NAME",
                    "RUST_RECURSION_COUNT",
                ]
                .contains(&key.as_ref())
            {
                command.env_remove(key.as_ref());
            }
        }
        let status = command
            .args([
                "build",
                "--quiet",
                "-p",
                "loopsy",
                "-p",
                "loopsy-relay",
                "--bins",
            ])
            .arg("--profile")
            .arg(&profile)
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build of the loopsy binaries failed"
        );
        profile_dir
    })
    .clone()
}
