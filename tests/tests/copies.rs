//! glibc's copies tuned on AMD (crates/mesh/src/copies.rs): a node and a relay run with the
//! setting on such a CPU and without it elsewhere, and what a node runs for a peer (an
//! exec, with or without a terminal, or a session) inherits none of it.

use std::time::Duration;

use loopsy_mesh::copies::SETTING;
use loopsy_tests::{
    netlab,
    node::{Node, Options},
    temp::TempDir,
    wait_for,
};

/// Whether a node started from here should tune itself: on AMD, unless whoever runs the
/// tests set glibc tunables of their own.
fn on_amd() -> bool {
    std::env::var_os("GLIBC_TUNABLES").is_none() && amd_cpu()
}

fn amd_cpu() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with("vendor_id"))
        .is_some_and(|line| line.ends_with("AuthenticAMD"))
}

fn environment(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', "\n")
}

fn tuned(pid: u32) -> bool {
    environment(pid)
        .lines()
        .any(|line| line == format!("GLIBC_TUNABLES={SETTING}"))
}

/// No trace of the tuning in a program's environment (tunables of the user's own pass on).
fn untouched(env: &str) -> bool {
    !env.contains(SETTING) && !env.contains("LOOPSY_TUNED_COPIES")
}

#[test]
fn a_node_tunes_its_own_copies_and_passes_none_of_it_on() -> anyhow::Result<()> {
    let alpha = Node::start(Options::isolated("alpha"))?;
    let bravo = Node::start(Options::isolated("bravo"))?;
    alpha.pair_with(&bravo)?;
    assert_eq!(tuned(alpha.pid()), on_amd(), "{}", environment(alpha.pid()));

    // A relay starts itself again to get it.
    let dir = TempDir::new("copies");
    let (relay, _) = netlab::relay(
        None,
        &dir.path().join("relay"),
        &["/ip4/127.0.0.1/tcp/0".into()],
    )?;
    assert_eq!(tuned(relay.0.id()), on_amd());

    for tty in [&[][..], &["-t"][..]] {
        let mut args = vec!["exec"];
        args.extend_from_slice(tty);
        args.extend(["alpha", "--", "env"]);
        let out = bravo.cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8_lossy(&out.stdout);
        assert!(env.contains("PATH="), "{env}");
        assert!(untouched(&env), "exec {tty:?} inherited the tuning:\n{env}");

        // Tunables the user asks for are theirs, and pass on.
        let mut args = vec!["exec", "--env", "GLIBC_TUNABLES=glibc.malloc.perturb=0"];
        args.extend_from_slice(tty);
        args.extend(["alpha", "--", "env"]);
        let out = bravo.cli(&args);
        let env = String::from_utf8_lossy(&out.stdout);
        assert!(
            env.contains("GLIBC_TUNABLES=glibc.malloc.perturb=0"),
            "exec {tty:?} --env GLIBC_TUNABLES lost it:\n{env}"
        );
    }

    let seen = dir.path().join("session-env");
    let line = format!("env > {}.part && mv {0}.part {0}", seen.display());
    let out = bravo.cli(&["session", "new", "--on", "alpha", "--", "sh", "-c", &line]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = wait_for("the session's environment", Duration::from_secs(20), || {
        std::fs::read_to_string(&seen).ok()
    })?;
    assert!(env.contains("LOOPSY_SESSION="), "{env}");
    assert!(untouched(&env), "the session inherited the tuning:\n{env}");
    Ok(())
}
