//! `loopsy service`: the systemd unit it writes is one systemd accepts, and its exact
//! `ExecStart` command line starts a node that answers; where systemd is not running,
//! `service install` says so and writes nothing.
//!
//! What runs for real depends on the machine: `systemd-analyze verify` needs only the
//! `systemd` package; starting the unit through `systemctl` needs systemd as PID 1 (or a
//! user manager), which containers usually lack, so there the command line is started
//! directly instead.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use loopsy_tests::{bin, node, temp::TempDir, wait_for};

/// `loopsy --home HOME service ARGS..` with `HOME` and `XDG_CONFIG_HOME` inside `dir`, so
/// that nothing is written to the real user's configuration.
fn service(dir: &Path, home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin::loopsy())
        .arg("--home")
        .arg(home)
        .arg("service")
        .args(args)
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdin(Stdio::null())
        .output()
        .expect("run loopsy service")
}

/// Splits a systemd command line of double-quoted arguments (what `service install`
/// writes) into the arguments systemd passes.
fn exec_start_argv(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart");
    let mut args = Vec::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' => continue,
            '"' => {}
            other => panic!("unquoted {other:?} in {line}"),
        }
        let mut arg = String::new();
        loop {
            match chars.next().expect("closing quote") {
                '"' => break,
                '\\' => arg.push(chars.next().expect("escaped char")),
                c @ ('%' | '$') => {
                    assert_eq!(chars.next(), Some(c), "{c} is doubled");
                    arg.push(c);
                }
                c => arg.push(c),
            }
        }
        args.push(arg);
    }
    args
}

/// Checks `unit` with `systemd-analyze verify`: no error and no warning about it.
fn verify(dir: &Path, unit: &str) {
    let unit_file = dir.join("loopsy.service");
    std::fs::write(&unit_file, unit).expect("write the unit");
    match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_file)
        .output()
    {
        Ok(verified) => {
            let complaints = String::from_utf8_lossy(&verified.stderr);
            assert!(verified.status.success(), "{complaints}");
            // systemd ignores unknown keys and bad values with a warning, exit status 0.
            assert!(
                complaints.trim().is_empty(),
                "systemd-analyze warns:\n{complaints}\n{unit}"
            );
        }
        Err(e) => panic!("systemd-analyze cannot run ({e}): apt-get install systemd"),
    }
}

#[test]
fn the_unit_verifies_and_its_command_line_starts_the_node() -> anyhow::Result<()> {
    let dir = TempDir::new("service-unit");
    let home = dir.path().join("home with space");
    let printed = service(
        dir.path(),
        &home,
        &[
            "install",
            "--print",
            "--",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ],
    );
    assert!(printed.status.success(), "{printed:?}");
    let unit = String::from_utf8(printed.stdout)?;
    assert!(unit.contains("\nRestart=on-failure\n"), "{unit}");

    // systemd's own parser, where the systemd package is installed: the user unit, and
    // the system unit of a headless host.
    verify(dir.path(), &unit);
    let system = service(
        dir.path(),
        &home,
        &["install", "--print", "--system", "--user", "root"],
    );
    assert!(system.status.success(), "{system:?}");
    let system = String::from_utf8(system.stdout)?;
    assert!(system.contains("\nUser=root\n"), "{system}");
    verify(dir.path(), &system);

    // The exact command line systemd would run brings a node up on that home.
    let argv = exec_start_argv(&unit);
    assert_eq!(argv[0], bin::loopsy().display().to_string());
    assert_eq!(&argv[1..3], ["--home", &home.display().to_string()]);
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let child = node::Reaped(child);
    let status = wait_for(
        "the service's node to answer",
        Duration::from_secs(30),
        || {
            let out = node::cli(&home, &["status", "--json"]);
            out.status.success().then_some(out.stdout)
        },
    )?;
    let status: serde_json::Value = serde_json::from_slice(&status)?;
    assert!(status["peer_id"].as_str().is_some(), "{status}");
    node::signal(child.0.id(), "TERM");
    drop(child);
    Ok(())
}

#[test]
fn install_without_systemd_says_so_and_writes_nothing() {
    if Path::new("/run/systemd/system").is_dir() {
        eprintln!("systemd runs here: install's refusal is not what this machine shows");
        return;
    }
    let dir = TempDir::new("service-absent");
    let home = dir.path().join("home");
    let out = service(dir.path(), &home, &["install"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("systemd is not running on this machine") && stderr.contains("--print"),
        "{stderr}"
    );
    assert!(
        !dir.path()
            .join("config/systemd/user/loopsy.service")
            .exists()
    );
}

#[test]
fn a_mistyped_node_flag_is_refused_at_install() {
    let dir = TempDir::new("service-flags");
    let out = service(
        dir.path(),
        &dir.path().join("home"),
        &["install", "--print", "--", "--no-mdsn"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr.contains("--no-mdsn"), "{stderr}");
}
