//! Writing the service file and asking the service manager (`systemctl`, `launchctl`) to
//! run it. Nothing here passes silently: a manager that is not running is an error that
//! says so and what to do instead.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, bail};

use super::units::{self, LABEL, Scope, Spec, UNIT};

/// Where systemd, when it is the init system, says so (`sd_booted(3)`).
const SYSTEMD_BOOTED: &str = "/run/systemd/system";

/// The service manager of this platform, with where its file goes.
pub enum Manager {
    Systemd { scope: Scope, unit: PathBuf },
    Launchd { plist: PathBuf, log: PathBuf },
}

impl Manager {
    pub fn current(scope: Scope) -> anyhow::Result<Self> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        if cfg!(target_os = "macos") {
            if scope != Scope::User {
                bail!("--system is for Linux; on macOS the node runs as a LaunchAgent");
            }
            return Ok(Self::Launchd {
                plist: super::under(home.clone(), &format!("Library/LaunchAgents/{LABEL}.plist"))?,
                log: super::under(home, "Library/Logs/loopsy.log")?,
            });
        }
        if !cfg!(target_os = "linux") {
            bail!("`loopsy service` knows systemd (Linux) and launchd (macOS) only");
        }
        let unit = match &scope {
            Scope::System { .. } => Path::new("/etc/systemd/system").join(UNIT),
            Scope::User => std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(Ok)
                .unwrap_or_else(|| super::under(home, ".config"))?
                .join("systemd/user")
                .join(UNIT),
        };
        Ok(Self::Systemd { scope, unit })
    }

    /// The file this manager would be given.
    pub fn file(&self, spec: &Spec) -> String {
        match self {
            Self::Systemd { scope, .. } => units::systemd_unit(spec, scope),
            Self::Launchd { log, .. } => units::launchd_plist(spec, log),
        }
    }

    pub fn install(&self, spec: &Spec) -> anyhow::Result<()> {
        match self {
            Self::Systemd { scope, unit } => {
                systemd_running(scope)?;
                write(unit, &self.file(spec))?;
                systemctl(scope, &["daemon-reload"])?;
                systemctl(scope, &["enable", "--now", UNIT])?;
                println!("installed {} and started it", unit.display());
                println!("logs:   journalctl{} -u {UNIT} -f", user_flag(scope));
                println!("reload: systemctl{} reload {UNIT}", user_flag(scope));
                if *scope == Scope::User {
                    linger_advice();
                }
            }
            Self::Launchd { plist, log } => {
                write(plist, &self.file(spec))?;
                let domain = gui_domain();
                // A job loaded before is replaced; not being loaded is no error here.
                let _ = launchctl(&["bootout", &format!("{domain}/{LABEL}")]);
                launchctl(&["bootstrap", &domain, &plist.display().to_string()])?;
                println!("installed {} and started it", plist.display());
                println!("logs: {}", log.display());
            }
        }
        Ok(())
    }

    pub fn uninstall(&self) -> anyhow::Result<()> {
        match self {
            Self::Systemd { scope, unit } => {
                let running = systemd_running(scope);
                if running.is_ok() {
                    systemctl(scope, &["disable", "--now", UNIT])?;
                }
                remove(unit)?;
                match running {
                    Ok(()) => systemctl(scope, &["daemon-reload"])?,
                    Err(why) => println!("{why:#}: nothing to stop"),
                }
            }
            Self::Launchd { plist, .. } => {
                let _ = launchctl(&["bootout", &format!("{}/{LABEL}", gui_domain())]);
                remove(plist)?;
            }
        }
        Ok(())
    }

    pub fn status(&self) -> anyhow::Result<ExitCode> {
        let (file, mut command) = match self {
            Self::Systemd { scope, unit } => {
                let mut command = Command::new("systemctl");
                command.args(scope_args(scope));
                command.args(["status", "--no-pager", UNIT]);
                (unit, command)
            }
            Self::Launchd { plist, .. } => {
                let mut command = Command::new("launchctl");
                command.args(["print", &format!("{}/{LABEL}", gui_domain())]);
                (plist, command)
            }
        };
        if !file.exists() {
            println!("not installed ({} does not exist)", file.display());
            return Ok(ExitCode::FAILURE);
        }
        println!("installed: {}", file.display());
        if let Self::Systemd { scope, .. } = self {
            systemd_running(scope)?;
        }
        let status = command
            .status()
            .with_context(|| format!("cannot run {command:?}"))?;
        Ok(if status.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

/// Whether a systemd manager of `scope` answers, and if not, why in words.
fn systemd_running(scope: &Scope) -> anyhow::Result<()> {
    if !Path::new(SYSTEMD_BOOTED).is_dir() {
        let init = fs::read_to_string("/proc/1/comm").unwrap_or_default();
        bail!(
            "systemd is not running on this machine (PID 1 is `{}`, and {SYSTEMD_BOOTED} is \
             absent), so nothing was installed; `loopsy service install --print` shows the \
             unit, or start `loopsy node` from this system's own supervisor",
            init.trim()
        );
    }
    if *scope == Scope::User {
        systemctl(scope, &["show-environment"]).context(
            "systemd runs, but not a manager for this user (log in through a session, or run \
             `loginctl enable-linger`, or use --system)",
        )?;
    }
    Ok(())
}

fn scope_args(scope: &Scope) -> &'static [&'static str] {
    match scope {
        Scope::User => &["--user"],
        Scope::System { .. } => &[],
    }
}

fn user_flag(scope: &Scope) -> &'static str {
    match scope {
        Scope::User => " --user",
        Scope::System { .. } => "",
    }
}

fn systemctl(scope: &Scope, args: &[&str]) -> anyhow::Result<()> {
    let mut command = Command::new("systemctl");
    command.args(scope_args(scope)).args(args);
    run(command)
}

fn launchctl(args: &[&str]) -> anyhow::Result<()> {
    let mut command = Command::new("launchctl");
    command.args(args);
    run(command)
}

/// Runs a manager's command; a failure carries what it printed.
fn run(mut command: Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// launchd's domain for this user's GUI session.
fn gui_domain() -> String {
    format!("gui/{}", rustix::process::getuid().as_raw())
}

/// A user's manager stops with their last login session unless lingering is on; say so
/// when it is off, since "always on" depends on it.
fn linger_advice() {
    let user = std::env::var("USER").unwrap_or_default();
    if user.is_empty() || Path::new("/var/lib/systemd/linger").join(&user).exists() {
        return;
    }
    println!(
        "\nto keep the node running after you log out, and start it at boot before anyone \
         logs in, turn lingering on (systemd stops a user's services with their last \
         session otherwise):\n    loginctl enable-linger {user}"
    );
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn remove(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {
            println!("removed {}", path.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("not installed ({} does not exist)", path.display());
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}
