//! Where members may read and write files here: `[files]` in the config, with overrides per
//! peer in the trust store. A path a peer names is taken from the first root when relative
//! (as scp takes it from the home directory), and must lie inside one of the roots.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::exec::policy::home_dir;

/// `[files]` in `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Directories members may copy from; `~` is the home directory.
    pub read: Vec<PathBuf>,
    /// Directories members may copy into.
    pub write: Vec<PathBuf>,
}

impl Default for Policy {
    /// The home directory, as scp would give.
    fn default() -> Self {
        Self {
            read: vec![PathBuf::from("~")],
            write: vec![PathBuf::from("~")],
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

impl Policy {
    /// This policy with a peer's overrides applied, and `~` expanded.
    pub fn with(&self, overrides: Option<&Overrides>) -> Policy {
        let pick = |own: &Vec<PathBuf>, theirs: Option<&Vec<PathBuf>>| {
            theirs.unwrap_or(own).iter().map(|p| expand(p)).collect()
        };
        Policy {
            read: pick(&self.read, overrides.and_then(|o| o.read.as_ref())),
            write: pick(&self.write, overrides.and_then(|o| o.write.as_ref())),
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
        let policy = Policy::default();
        let plain = policy.with(None);
        assert_eq!(plain.read, vec![home_dir()]);
        let narrowed = policy.with(Some(&Overrides {
            read: None,
            write: Some(vec![PathBuf::from("~/inbox"), PathBuf::from("/srv/drop")]),
        }));
        assert_eq!(narrowed.read, vec![home_dir()]);
        assert_eq!(
            narrowed.write,
            vec![home_dir().join("inbox"), PathBuf::from("/srv/drop")]
        );
    }
}
