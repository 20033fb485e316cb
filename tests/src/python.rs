//! A Python for the tests' Python clients: the official MCP SDK and `cbor2`, pinned in
//! `tests/python/requirements.txt`. Made once per target directory, as a venv filled from
//! PyPI on first use; `LOOPSY_TEST_PYTHON` names a Python that has them already instead.

use std::{
    fs::{self, File},
    path::PathBuf,
    process::Command,
};

use anyhow::Context;

/// The Python to run the clients with.
pub fn python() -> anyhow::Result<PathBuf> {
    if let Some(given) = std::env::var_os("LOOPSY_TEST_PYTHON") {
        return Ok(given.into());
    }
    let requirements = fs::read_to_string(script("requirements.txt"))?;
    let venv = crate::bin::target_dir().join("loopsy-test-python");
    // Test processes run at once: one makes the venv, the others wait for it. The lock
    // lives beside the venv, which `venv --clear` empties.
    let lock = File::create(venv.with_extension("lock"))?;
    lock.lock()?;
    let ready = venv.join(".ready");
    let python = venv.join("bin/python3");
    if fs::read_to_string(&ready).ok().as_deref() == Some(requirements.as_str()) {
        return Ok(python);
    }
    let help = "; or set LOOPSY_TEST_PYTHON to a python3 that has them \
                (pip install -r tests/python/requirements.txt)";
    run(
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
        &format!(
            "cannot make a Python venv at {} (is python3 with venv installed?){help}",
            venv.display()
        ),
    )?;
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(script("requirements.txt")),
        &format!("cannot install the Python test packages from PyPI{help}"),
    )?;
    fs::write(&ready, requirements)?;
    Ok(python)
}

/// A file in `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

fn run(command: &mut Command, failure: &str) -> anyhow::Result<()> {
    let status = command.status().with_context(|| failure.to_owned())?;
    anyhow::ensure!(status.success(), "{failure}");
    Ok(())
}
