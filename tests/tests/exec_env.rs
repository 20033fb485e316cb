//! An exec program list that the environment cannot get round: each trick that would make
//! an allowed bash script run something else, tried between real nodes.

use std::{os::unix::fs::PermissionsExt, process::Command, process::Stdio};

use loopsy_tests::{
    bin,
    node::{Node, Options},
    temp::TempDir,
};

#[test]
fn the_environment_cannot_get_round_a_program_list() -> anyhow::Result<()> {
    let dir = TempDir::new("exec-env");
    let script = dir.path().join("report.sh");
    std::fs::write(&script, "#!/bin/bash\necho report\n")?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    let home = dir.path().join("alpha");
    std::fs::create_dir_all(&home)?;
    std::fs::write(
        home.join("config.toml"),
        format!(
            "[exec]\nallow = [\"{}\"]\nroot = \"/\"\nmax_secs = 0\nmax_running = 4\n",
            script.display()
        ),
    )?;
    let alpha = Node::start(Options::isolated("alpha").home(&home))?;
    let bravo = Node::start(Options::isolated("bravo"))?;
    alpha.pair_with(&bravo)?;
    let script = script.display().to_string();
    let marker = dir.path().join("ran");

    // The script itself runs, with harmless variables.
    let out = bravo.cli(&["exec", "alpha", "--env", "LANG=C", "--", &script]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "report\n");

    let payload = format!("touch {}", marker.display());
    let function = format!("() {{ {payload}; }}");
    let tricks: Vec<(String, String)> = vec![
        ("BASH_ENV".into(), "/dev/stdin".into()),
        ("BASH_FUNC_echo%%".into(), function),
        ("GCONV_PATH".into(), "/tmp".into()),
        ("NODE_OPTIONS".into(), "--require /tmp/x.js".into()),
        ("PERL5OPT".into(), "-Mstrict".into()),
        ("PYTHONPATH".into(), "/tmp".into()),
        ("GIT_CONFIG_COUNT".into(), "1".into()),
        ("PATH=/tmp:".into(), "x".into()),
    ];
    for (key, value) in tricks {
        let mut child = Command::new(bin::loopsy())
            .arg("--home")
            .arg(bravo.home())
            .args([
                "exec",
                "alpha",
                "--env",
                &format!("{key}={value}"),
                "--",
                &script,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        use std::io::Write;
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(payload.as_bytes());
        let out = child.wait_with_output()?;
        assert_eq!(out.status.code(), Some(126), "{key} was let through");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not allowed")
                || String::from_utf8_lossy(&out.stderr).contains("not an environment"),
            "{key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!marker.exists(), "{key} ran the payload");
    }
    Ok(())
}
