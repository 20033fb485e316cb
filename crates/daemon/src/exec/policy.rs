//! Who may run what here: the exec policy, from `[exec]` in the config with overrides per
//! peer in the trust store, checked before anything is started.

use std::path::{Path, PathBuf};

use loopsy_wire::exec::Start;
use serde::{Deserialize, Serialize};

use crate::caps::{Capability, Caps};

/// The exec policy: `[exec]` in `config.toml`, or one peer's overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Programs that may be run, by name or absolute path; `*` for any.
    pub allow: Vec<String>,
    /// Working directories must be inside this directory.
    pub root: PathBuf,
    /// Longest run, in seconds; 0 for no limit.
    pub max_secs: u64,
    /// Most programs one peer may run at once.
    pub max_running: usize,
    /// With a program list: environment variables a request may set beyond the harmless
    /// ones ([`SAFE_ENV`]); a name, or a prefix ending in `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allow: vec!["*".into()],
            root: PathBuf::from("/"),
            max_secs: 0,
            max_running: 32,
            env: Vec::new(),
        }
    }
}

/// What a request may set in the environment of a program from a list: the terminal, the
/// language and the time zone. Anything else may pick what actually runs: `BASH_ENV`,
/// `BASH_FUNC_*`, `LD_PRELOAD`, `PATH`, `GCONV_PATH`, `NODE_OPTIONS`, `PERL5OPT`,
/// `PYTHONPATH`, `GIT_CONFIG_*`, and more every year; so the rest must be named by the
/// policy's `env`.
pub const SAFE_ENV: &[&str] = &["TERM", "LANG", "LANGUAGE", "LC_*", "TZ", "COLUMNS", "LINES"];

/// Checks the environment a peer asks for: every key is a name (not empty, no `=`, no NUL:
/// `PATH=/x:` would otherwise become a second `PATH`), and with a program list every key
/// is allowed by [`SAFE_ENV`] or the policy's `env`.
fn check_env(env: &[(String, String)], policy: &Policy) -> Result<(), Denied> {
    let matches = |pattern: &str, key: &str| match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => pattern == key,
    };
    for (key, value) in env {
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return Err(Denied(format!(
                "`{}` is not an environment variable name",
                key.escape_debug()
            )));
        }
        let allowed = policy.allows_any_program()
            || SAFE_ENV.iter().any(|p| matches(p, key))
            || policy.env.iter().any(|p| matches(p, key));
        if !allowed {
            return Err(Denied(format!(
                "exec policy: setting {key} is not allowed with a program list (allowed: {}{})",
                SAFE_ENV.join(", "),
                policy
                    .env
                    .iter()
                    .map(|e| format!(", {e}"))
                    .collect::<String>()
            )));
        }
    }
    Ok(())
}

/// Why the exec policy (or the peer's grants) refuse a request, naming the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// Per-peer changes to the policy, in the trust store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
}

impl Policy {
    /// This policy with a peer's overrides applied.
    pub fn with(&self, overrides: Option<&Overrides>) -> Policy {
        let Some(o) = overrides else {
            return self.clone();
        };
        Policy {
            allow: o.allow.clone().unwrap_or_else(|| self.allow.clone()),
            root: o.root.clone().unwrap_or_else(|| self.root.clone()),
            max_secs: o.max_secs.unwrap_or(self.max_secs),
            max_running: o.max_running.unwrap_or(self.max_running),
            env: o.env.clone().unwrap_or_else(|| self.env.clone()),
        }
    }

    fn allows_any_program(&self) -> bool {
        self.allow.iter().any(|a| a == "*")
    }
}

/// A start request that passed the policy, resolved.
#[derive(Debug, Clone)]
pub struct Approved {
    /// The program, its arguments, and the name it runs under (`-bash` for a login shell).
    pub program: String,
    pub args: Vec<String>,
    pub arg0: Option<String>,
    pub cwd: PathBuf,
    /// The exec root `cwd` was checked against.
    pub root: PathBuf,
    pub env: Vec<(String, String)>,
    /// The deadline the policy and the request agree on.
    pub timeout_secs: Option<u64>,
    pub login_shell: bool,
}

/// The approved working directory, held open: a program starts in the very directory
/// that was checked, even if a component of its path is swapped for a symlink since.
#[derive(Debug)]
pub struct WorkingDir {
    /// Open until the program has started.
    _dir: std::fs::File,
    path: PathBuf,
}

impl WorkingDir {
    /// What to give as the program's working directory: on Linux the open directory
    /// itself (`/proc/PID/fd/N`, which the new process resolves to it), elsewhere its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Approved {
    /// Opens the working directory and checks again that what was opened lies inside
    /// the root.
    pub fn working_dir(&self) -> Result<WorkingDir, Denied> {
        use std::os::{fd::AsRawFd, unix::fs::OpenOptionsExt};
        let failed =
            |e: std::io::Error| Denied(format!("working directory {}: {e}", self.cwd.display()));
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::DIRECTORY.bits() as i32)
            .open(&self.cwd)
            .map_err(failed)?;
        let fd = format!("/proc/self/fd/{}", dir.as_raw_fd());
        let path = match std::fs::read_link(&fd) {
            Ok(real) if !real.starts_with(&self.root) => {
                return Err(Denied(format!(
                    "exec policy: working directory {} is outside the exec root {}",
                    real.display(),
                    self.root.display()
                )));
            }
            Ok(_) => PathBuf::from(format!(
                "/proc/{}/fd/{}",
                std::process::id(),
                dir.as_raw_fd()
            )),
            // No /proc (not Linux): the path, as checked.
            Err(_) => self.cwd.clone(),
        };
        Ok(WorkingDir { _dir: dir, path })
    }
}

/// Checks `start` against `policy` and the peer's grants; the error names the rule.
pub fn check(start: &Start, policy: &Policy, grants: &Caps) -> Result<Approved, Denied> {
    if !start.within_limits() {
        return Err(Denied("the request exceeds the size limits".into()));
    }
    let login_shell = start.argv.is_empty();
    let need = if login_shell {
        Capability::Shell
    } else {
        Capability::Exec
    };
    if !grants.contains(&need) {
        return Err(Denied(format!("the `{need}` capability is not granted")));
    }
    let (program, args, arg0) = if login_shell {
        let shell = login_shell_path();
        // A shell runs anything: a program list that leaves it out means no shells.
        if !policy.allows_any_program() && !shell_allowed(&shell, &policy.allow) {
            return Err(Denied(format!(
                "exec policy: the login shell `{shell}` is not in the allowed programs ({})",
                policy.allow.join(", ")
            )));
        }
        let name = Path::new(&shell)
            .file_name()
            .map(|n| format!("-{}", n.to_string_lossy()))
            .unwrap_or_else(|| "-sh".into());
        (shell, Vec::new(), Some(name))
    } else {
        let program = start.argv[0].clone();
        if !policy.allows_any_program() && !program_allowed(&program, &policy.allow) {
            return Err(Denied(format!(
                "exec policy: `{program}` is not in the allowed programs ({})",
                policy.allow.join(", ")
            )));
        }
        (program, start.argv[1..].to_vec(), None)
    };
    check_env(&start.env, policy)?;
    let root = policy
        .root
        .canonicalize()
        .unwrap_or_else(|_| policy.root.clone());
    // Commands start in the home directory, as over ssh, or in the root when home is not
    // inside it; a relative directory is taken from there.
    let home = home_dir().canonicalize().unwrap_or_else(|_| home_dir());
    let base = if home.starts_with(&root) {
        home
    } else {
        root.clone()
    };
    let cwd = match &start.cwd {
        Some(dir) => base.join(dir),
        None => base,
    };
    let cwd = cwd
        .canonicalize()
        .map_err(|e| Denied(format!("working directory {}: {e}", cwd.display())))?;
    if !cwd.starts_with(&root) {
        return Err(Denied(format!(
            "exec policy: working directory {} is outside the exec root {}",
            cwd.display(),
            root.display()
        )));
    }
    let timeout_secs = match (start.timeout_secs, policy.max_secs) {
        (t, 0) => t,
        (Some(t), max) => Some(t.min(max)),
        (None, max) => Some(max),
    };
    Ok(Approved {
        program,
        args,
        arg0,
        cwd,
        root,
        env: start.env.clone(),
        timeout_secs,
        login_shell,
    })
}

/// An entry names a program by its file name, or by its absolute path.
fn program_allowed(program: &str, allow: &[String]) -> bool {
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    allow.iter().any(|entry| {
        if entry.starts_with('/') {
            entry == program
        } else {
            // A bare entry allows the program found on PATH, not one given by path.
            !program.contains('/') && *entry == name
        }
    })
}

/// An entry names the login shell by its file name, or by its absolute path (either as
/// written, or as the same file once links are resolved). Unlike a program a peer names,
/// the shell's path comes from this device's user database, so its bare name is enough.
fn shell_allowed(shell: &str, allow: &[String]) -> bool {
    let shell = Path::new(shell);
    let canonical = shell.canonicalize().ok();
    allow.iter().any(|entry| {
        let entry = Path::new(entry);
        if entry.is_absolute() {
            entry == shell || canonical.is_some() && entry.canonicalize().ok() == canonical
        } else {
            shell.file_name() == Some(entry.as_os_str())
        }
    })
}

/// The daemon user's home directory.
pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .or_else(|| passwd_field(5).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The daemon user's login shell.
fn login_shell_path() -> String {
    passwd_field(6)
        .filter(|s| Path::new(s).exists())
        .or_else(|| std::env::var("SHELL").ok())
        .unwrap_or_else(|| "/bin/sh".into())
}

/// A field of this user's line in /etc/passwd.
fn passwd_field(index: usize) -> Option<String> {
    let uid = rustix::process::getuid().as_raw().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 6 && f[2] == uid)
        .map(|f| f[index].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps;

    fn start(argv: &[&str]) -> Start {
        Start {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: Some("/tmp".into()),
            env: vec![],
            timeout_secs: None,
            pty: None,
        }
    }

    fn all() -> Caps {
        caps::parse(&["all".into()]).unwrap()
    }

    #[test]
    fn a_program_list_is_enforced_by_name_and_path() {
        let policy = Policy {
            allow: vec!["echo".into(), "/usr/bin/env".into()],
            ..Policy::default()
        };
        assert!(check(&start(&["echo", "hi"]), &policy, &all()).is_ok());
        assert!(check(&start(&["/usr/bin/env"]), &policy, &all()).is_ok());
        let err = check(&start(&["rm", "-rf", "/"]), &policy, &all()).unwrap_err();
        assert!(
            err.0.contains("`rm` is not in the allowed programs"),
            "{err}"
        );
        assert!(
            check(&start(&["/tmp/echo"]), &policy, &all()).is_err(),
            "not by a path"
        );
        let mut sneaky = start(&["echo"]);
        sneaky.env = vec![("LD_PRELOAD".into(), "/tmp/x.so".into())];
        assert!(check(&sneaky, &policy, &all()).is_err());
    }

    #[test]
    fn the_working_directory_stays_inside_the_root() {
        let policy = Policy {
            root: "/tmp".into(),
            ..Policy::default()
        };
        assert!(check(&start(&["true"]), &policy, &all()).is_ok());
        let mut outside = start(&["true"]);
        outside.cwd = Some("/tmp/../etc".into());
        let err = check(&outside, &policy, &all()).unwrap_err();
        assert!(err.0.contains("outside the exec root"), "{err}");
    }

    #[test]
    fn shells_and_commands_need_their_own_capabilities() {
        let exec_only = caps::parse(&["exec".into()]).unwrap();
        assert!(check(&start(&[]), &Policy::default(), &exec_only).is_err());
        let shell_only = caps::parse(&["shell".into()]).unwrap();
        assert!(check(&start(&["ls"]), &Policy::default(), &shell_only).is_err());
        let shell = check(&start(&[]), &Policy::default(), &shell_only).unwrap();
        assert!(shell.login_shell && shell.arg0.is_some_and(|a| a.starts_with('-')));
    }

    #[test]
    fn a_program_list_that_leaves_out_the_login_shell_refuses_shells() {
        let shell = login_shell_path();
        let name = Path::new(&shell)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let listing = |allow: &[&str]| Policy {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            ..Policy::default()
        };
        let err = check(&start(&[]), &listing(&["true"]), &all()).unwrap_err();
        assert!(
            err.0.contains(&format!(
                "the login shell `{shell}` is not in the allowed programs"
            )),
            "{err}"
        );
        for allowed in [&name[..], &shell[..], "*"] {
            let shell = check(&start(&[]), &listing(&["true", allowed]), &all());
            assert!(shell.is_ok_and(|s| s.login_shell), "allowed by {allowed}");
        }
    }

    #[test]
    fn the_login_shell_is_named_by_its_file_name_or_its_path() {
        let allow =
            |entries: &[&str]| -> Vec<String> { entries.iter().map(|s| s.to_string()).collect() };
        assert!(shell_allowed("/bin/sh", &allow(&["sh"])));
        assert!(shell_allowed("/bin/sh", &allow(&["/bin/sh"])));
        assert!(!shell_allowed(
            "/bin/sh",
            &allow(&["bash", "/tmp/sh", "/bin"])
        ));
        assert!(!shell_allowed("/bin/sh", &allow(&[])));
    }

    #[test]
    fn the_policy_caps_the_timeout() {
        let policy = Policy {
            max_secs: 10,
            ..Policy::default()
        };
        let mut s = start(&["true"]);
        assert_eq!(check(&s, &policy, &all()).unwrap().timeout_secs, Some(10));
        s.timeout_secs = Some(3);
        assert_eq!(check(&s, &policy, &all()).unwrap().timeout_secs, Some(3));
        s.timeout_secs = Some(30);
        assert_eq!(check(&s, &policy, &all()).unwrap().timeout_secs, Some(10));
    }

    #[test]
    fn the_environment_cannot_pick_what_runs_under_a_program_list() {
        let policy = Policy {
            allow: vec!["/usr/local/bin/report.sh".into()],
            ..Policy::default()
        };
        let with = |key: &str| {
            let mut s = start(&["/usr/local/bin/report.sh"]);
            s.env = vec![(key.into(), "x".into())];
            check(&s, &policy, &all())
        };
        for trick in [
            "BASH_ENV",
            "ENV",
            "BASH_FUNC_report%%",
            "GCONV_PATH",
            "NODE_OPTIONS",
            "PERL5OPT",
            "PYTHONPATH",
            "GIT_CONFIG_COUNT",
            "LD_PRELOAD",
            "PATH",
            "PATH=/x:",
            "",
            "A\0B",
        ] {
            assert!(with(trick).is_err(), "{trick:?} accepted");
        }
        for harmless in ["TERM", "LANG", "LC_ALL", "TZ", "COLUMNS"] {
            assert!(with(harmless).is_ok(), "{harmless} refused");
        }
        let named = Policy {
            env: vec!["REPORT_*".into(), "VERBOSE".into()],
            ..policy.clone()
        };
        let mut s = start(&["/usr/local/bin/report.sh"]);
        s.env = vec![
            ("REPORT_DAY".into(), "1".into()),
            ("VERBOSE".into(), "1".into()),
        ];
        assert!(check(&s, &named, &all()).is_ok(), "named by the policy");
        // Without a program list any name goes (the peer may run anything), but a key is
        // still a name.
        let mut s = start(&["env"]);
        s.env = vec![("BASH_ENV".into(), "x".into())];
        assert!(check(&s, &Policy::default(), &all()).is_ok());
        s.env = vec![("PATH=/x:".into(), "y".into())];
        assert!(check(&s, &Policy::default(), &all()).is_err());
    }

    #[test]
    fn the_working_directory_checked_is_the_one_used() {
        let base = std::env::temp_dir().join(format!("loopsy-cwd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (root, outside) = (base.join("root"), base.join("outside"));
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let policy = Policy {
            root: root.clone(),
            ..Policy::default()
        };
        let mut s = start(&["true"]);
        s.cwd = Some(root.join("sub").display().to_string());
        let approved = check(&s, &policy, &all()).unwrap();
        let dir = approved.working_dir().unwrap();
        assert!(dir.path().exists());
        // Swapped for a link to elsewhere after the check: what opens is refused.
        std::fs::remove_dir(root.join("sub")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("sub")).unwrap();
        let err = approved.working_dir().unwrap_err();
        assert!(err.0.contains("outside the exec root"), "{err}");
        std::fs::remove_dir_all(&base).ok();
    }
}
