//! Capabilities: what a node lets a peer do. Each node decides what it grants each peer:
//! configured defaults for members, with overrides per peer.

use std::{collections::BTreeSet, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// One thing a peer may be allowed to do here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Run commands (`loopsy exec`).
    Exec,
    /// Open an interactive shell (`loopsy shell`).
    Shell,
    /// Read and write files inside the granted roots (`loopsy cp`).
    Files,
    /// Start, list, attach to and end terminal sessions: every session on the device,
    /// those its own user and agents started too.
    Sessions,
    /// Start sessions, and list, attach to and end only those this peer started here.
    #[serde(rename = "own-sessions")]
    OwnSessions,
    /// Read and write the shared context.
    Ctx,
    /// Send messages.
    Msg,
    /// Vouch for devices: a device this peer introduces becomes a member here (with at most
    /// what this peer holds here), and its revocations count here.
    Admit,
    /// List and watch every session here, and receive the registry and attention events:
    /// never type, resize, start or end one.
    View,
}

impl Capability {
    pub const ALL: [Capability; 9] = [
        Capability::Exec,
        Capability::Shell,
        Capability::Files,
        Capability::Sessions,
        Capability::OwnSessions,
        Capability::Ctx,
        Capability::Msg,
        Capability::Admit,
        Capability::View,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Capability::Exec => "exec",
            Capability::Shell => "shell",
            Capability::Files => "files",
            Capability::Sessions => "sessions",
            Capability::OwnSessions => "own-sessions",
            Capability::Ctx => "ctx",
            Capability::Msg => "msg",
            Capability::Admit => "admit",
            Capability::View => "view",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A capability name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown capability `{0}`: use exec, shell, files, sessions, own-sessions, view, ctx, msg, \
     admit, all or none"
)]
pub struct UnknownCapability(pub String);

impl FromStr for Capability {
    type Err = UnknownCapability;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Capability::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownCapability(s.to_owned()))
    }
}

/// A set of capabilities.
pub type Caps = BTreeSet<Capability>;

/// Parses capability lists as users write them: items may hold comma-separated names, and
/// `all` or `none` stand for every capability or no capability.
pub fn parse(items: &[String]) -> Result<Caps, UnknownCapability> {
    let mut caps = Caps::new();
    for name in items.iter().flat_map(|i| i.split(',')).map(str::trim) {
        match name {
            "" | "none" => {}
            "all" => caps.extend(Capability::ALL),
            other => {
                caps.insert(other.parse()?);
            }
        }
    }
    Ok(caps)
}

/// Parses capability names from another device's record, skipping names this version does
/// not know (a newer device's): an unknown capability grants nothing here.
pub fn parse_known(items: &[String]) -> Caps {
    let mut caps = Caps::new();
    for name in items.iter().flat_map(|i| i.split(',')).map(str::trim) {
        match name {
            "all" => caps.extend(Capability::ALL),
            other => caps.extend(other.parse::<Capability>().ok()),
        }
    }
    caps
}

/// Every capability.
pub fn all() -> Caps {
    Capability::ALL.into_iter().collect()
}

/// Names of a set, in a stable order.
pub fn names(caps: &Caps) -> Vec<String> {
    caps.iter().map(|c| c.name().to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lists_parse_as_users_write_them() {
        let caps = parse(&strings(&["exec,shell", "ctx"])).unwrap();
        assert_eq!(names(&caps), ["exec", "shell", "ctx"]);
        assert_eq!(
            parse(&strings(&["all"])).unwrap().len(),
            Capability::ALL.len()
        );
        assert!(parse(&strings(&["none"])).unwrap().is_empty());
        let err = parse(&strings(&["exec,root"])).unwrap_err();
        assert!(err.to_string().contains("`root`"));
    }
}
