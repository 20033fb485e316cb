//! Where members may read and write files here: `[files]` in the config, with overrides per
//! peer in the trust store. A path a peer names is taken from the first root when relative
//! (as scp takes it from the home directory), and must lie inside one of the roots.
//!
//! Writing under `~` is running code later: a peer that plants `~/.bashrc`,
//! `~/.ssh/authorized_keys` or `~/.config/autostart/*` runs whatever it likes at the next
//! login. So unless `[files] write` says otherwise, only a peer that may run programs here
//! anyway (`exec`) writes under `~`; any other writes into a drop directory, [`DROP`], that
//! nothing runs from.

use std::{
    fs::DirBuilder,
    io,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    caps::{Capability, Caps},
    exec::policy::home_dir,
};

/// Where a peer without `exec` writes by default: in plain sight, private to this user.
pub const DROP: &str = "~/Loopsy";

/// `[files]` in `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Directories members may copy from; `~` is the home directory.
    #[serde(default = "tilde")]
    pub read: Vec<PathBuf>,
    /// Directories members may copy into. Unset: `~` for a member with `exec`, [`DROP`]
    /// for one without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<Vec<PathBuf>>,
}

fn tilde() -> Vec<PathBuf> {
    vec![PathBuf::from("~")]
}

impl Default for Policy {
    /// Reading the home directory, as scp would give; writing as the peer's grants allow.
    fn default() -> Self {
        Self {
            read: tilde(),
            write: None,
        }
    }
}

/// Per-peer changes to the policy, in the trust store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Vec<PathBuf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<Vec<PathBuf>>,
}

/// One peer's roots, `~` expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    /// The drop directory, when it is the write root: made on first use.
    pub drop: Option<PathBuf>,
}

impl Policy {
    /// The roots of a peer granted `grants`, with its overrides applied.
    pub fn roots(&self, overrides: Option<&Overrides>, grants: &Caps) -> Roots {
        let expand_all = |paths: &Vec<PathBuf>| paths.iter().map(|p| expand(p)).collect();
        let read = overrides
            .and_then(|o| o.read.as_ref())
            .unwrap_or(&self.read);
        let write = overrides
            .and_then(|o| o.write.as_ref())
            .or(self.write.as_ref());
        let (write, drop) = match write {
            Some(write) => (expand_all(write), None),
            None if grants.contains(&Capability::Exec) => (vec![home_dir()], None),
            None => {
                let drop = expand(Path::new(DROP));
                (vec![drop.clone()], Some(drop))
            }
        };
        Roots {
            read: expand_all(read),
            write,
            drop,
        }
    }
}

impl Roots {
    /// Makes the drop directory, private to this device's user, if it is the write root and
    /// not there yet.
    pub fn make_drop(&self) -> io::Result<()> {
        let Some(drop) = &self.drop else {
            return Ok(());
        };
        match DirBuilder::new().mode(0o700).create(drop) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    }
}

/// `~` and `~/...` are the home directory.
fn expand(path: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => home_dir().join(rest),
        Err(_) => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_and_tilde_expands() {
        let policy = Policy {
            write: Some(tilde()),
            ..Policy::default()
        };
        let plain = policy.roots(None, &Caps::new());
        assert_eq!(plain.read, vec![home_dir()]);
        assert_eq!(plain.write, vec![home_dir()]);
        let narrowed = policy.roots(
            Some(&Overrides {
                read: None,
                write: Some(vec![PathBuf::from("~/inbox"), PathBuf::from("/srv/drop")]),
            }),
            &Caps::new(),
        );
        assert_eq!(narrowed.read, vec![home_dir()]);
        assert_eq!(
            narrowed.write,
            vec![home_dir().join("inbox"), PathBuf::from("/srv/drop")]
        );
        assert_eq!(narrowed.drop, None);
    }

    #[test]
    fn by_default_only_a_peer_that_runs_programs_writes_under_home() {
        let policy = Policy::default();
        let files_only = policy.roots(None, &Caps::from([Capability::Files]));
        assert_eq!(files_only.read, vec![home_dir()]);
        assert_eq!(files_only.write, vec![home_dir().join("Loopsy")]);
        assert_eq!(files_only.drop, Some(home_dir().join("Loopsy")));
        let exec = policy.roots(None, &Caps::from([Capability::Files, Capability::Exec]));
        assert_eq!(exec.write, vec![home_dir()]);
        assert_eq!(exec.drop, None);
        // A per-peer override counts as configured.
        let overridden = policy.roots(
            Some(&Overrides {
                read: None,
                write: Some(tilde()),
            }),
            &Caps::from([Capability::Files]),
        );
        assert_eq!(overridden.write, vec![home_dir()]);
    }

    #[test]
    fn an_unset_write_root_stays_unset_in_the_config() {
        let text = toml::to_string(&Policy::default()).unwrap();
        assert!(!text.contains("write"), "{text}");
        let parsed: Policy = toml::from_str("write = [\"/srv/in\"]").unwrap();
        assert_eq!(parsed.read, tilde());
        assert_eq!(parsed.write, Some(vec![PathBuf::from("/srv/in")]));
    }
}
