//! The identify agent string, which carries the device's name so that people can tell
//! discovered devices apart before pairing: `loopsy/<version>/<name>`.

/// Longest device name accepted from a peer or from the config.
pub const MAX_NAME_LEN: usize = 64;

pub(crate) fn agent_version(name: &str) -> String {
    format!("loopsy/{}/{}", env!("CARGO_PKG_VERSION"), name)
}

/// The device name in a peer's agent string, if it is a Loopsy node; control characters
/// are dropped and the length is capped, since the string comes from the network.
pub(crate) fn name_from_agent(agent: &str) -> Option<String> {
    let mut parts = agent.splitn(3, '/');
    if parts.next()? != "loopsy" {
        return None;
    }
    let _version = parts.next()?;
    let name = sanitize_name(parts.next()?);
    (!name.is_empty()).then_some(name)
}

pub use loopsy_wire::attention::is_deceptive;

/// Drops control and invisible formatting characters, and caps the length of a device
/// name: names come from the network and are shown to people.
pub fn sanitize_name(raw: &str) -> String {
    raw.chars()
        .filter(|c| !is_deceptive(*c))
        .take(MAX_NAME_LEN)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_survives_the_agent_string() {
        assert_eq!(
            name_from_agent(&agent_version("desk/top")),
            Some("desk/top".into())
        );
    }

    #[test]
    fn hostile_names_are_cleaned() {
        let long = "x".repeat(500);
        assert_eq!(
            name_from_agent(&format!("loopsy/9/{long}")).map(|n| n.len()),
            Some(MAX_NAME_LEN)
        );
        assert_eq!(
            name_from_agent("loopsy/1/\u{1b}[2Jevil\n"),
            Some("[2Jevil".into())
        );
        assert_eq!(name_from_agent("rust-libp2p/0.1"), None);
        assert_eq!(name_from_agent("loopsy/1/\n\t"), None);
    }
}
