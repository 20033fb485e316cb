//! `trust.toml`: the member records (signed, replicated) and this device's own settings per
//! peer (not replicated), in TOML that people can read. Written atomically, mode 0600; a
//! file that does not parse, or whose records do not verify, is an error that names it.

use std::{fs, io, path::Path};

use data_encoding::HEXLOWER;
use loopsy_mesh::{Multiaddr, PeerId};
use loopsy_wire::member::Record;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::fsutil;

/// This device's settings for one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSettings {
    pub peer_id: String,
    /// The name this device's user gave it (`trust add --name`, `trust set --name`), shown
    /// here in place of the name it gives itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What this device grants the peer, in place of the configured defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// What the peer said it grants this device when they paired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub they_allow: Option<Vec<String>>,
    /// `paired` or `added`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub how: Option<String>,
    /// Changes to the exec policy for this peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<crate::exec::policy::Overrides>,
    /// Changes to the file roots for this peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<crate::transfer::policy::Overrides>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordText {
    subject: String,
    author: String,
    name: String,
    addrs: Vec<String>,
    revoked: bool,
    at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    allow: Option<Vec<String>>,
    signature: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileText {
    #[serde(default)]
    peer: Vec<PeerSettings>,
    #[serde(default)]
    record: Vec<RecordText>,
}

/// The file's contents.
#[derive(Debug, Default)]
pub struct Stored {
    pub peers: Vec<PeerSettings>,
    pub records: Vec<Record>,
}

const HEADER: &str = "\
# Loopsy trust store. Edit with `loopsy trust`; records are signed, and a changed record
# makes the node refuse to start rather than trust something nobody signed.
";

/// Reads the store; a missing file is an empty store.
pub fn load(path: &Path) -> Result<Stored, String> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stored::default()),
        Err(e) => return Err(e.to_string()),
    };
    parse(&text)
}

/// Parses a store's text: any text gives a store or an error saying what is wrong.
pub fn parse(text: &str) -> Result<Stored, String> {
    let file: FileText = toml::from_str(text).map_err(|e| e.message().to_owned())?;
    let records = file
        .record
        .iter()
        .enumerate()
        .map(|(i, r)| from_text(r).map_err(|e| format!("record {}: {e}", i + 1)))
        .collect::<Result<_, _>>()?;
    Ok(Stored {
        peers: file.peer,
        records,
    })
}

/// Replaces the store with `stored`.
pub fn save(path: &Path, stored: &Stored) -> io::Result<()> {
    let file = FileText {
        peer: stored.peers.clone(),
        record: stored.records.iter().filter_map(to_text).collect(),
    };
    let text = toml::to_string(&file).map_err(io::Error::other)?;
    fsutil::write_atomic(path, format!("{HEADER}{text}").as_bytes(), 0o600)
}

fn to_text(r: &Record) -> Option<RecordText> {
    Some(RecordText {
        subject: PeerId::from_bytes(&r.subject).ok()?.to_base58(),
        author: PeerId::from_bytes(&r.author).ok()?.to_base58(),
        name: r.name.clone(),
        addrs: r
            .addrs
            .iter()
            .filter_map(|a| Multiaddr::try_from(a.to_vec()).ok())
            .map(|a| a.to_string())
            .collect(),
        revoked: r.revoked,
        at: r.at,
        allow: r.allow.clone(),
        signature: HEXLOWER.encode(&r.signature),
    })
}

fn from_text(r: &RecordText) -> Result<Record, String> {
    let peer = |s: &str| {
        s.parse::<PeerId>()
            .map(|p| ByteBuf::from(p.to_bytes()))
            .map_err(|_| format!("`{s}` is not a peer ID"))
    };
    let addrs = r
        .addrs
        .iter()
        .map(|a| {
            a.parse::<Multiaddr>()
                .map(|a| ByteBuf::from(a.to_vec()))
                .map_err(|_| format!("`{a}` is not an address"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Record {
        subject: peer(&r.subject)?,
        author: peer(&r.author)?,
        name: r.name.clone(),
        addrs,
        revoked: r.revoked,
        at: r.at,
        allow: r.allow.clone(),
        signature: ByteBuf::from(
            HEXLOWER
                .decode(r.signature.as_bytes())
                .map_err(|_| "the signature is not hex".to_owned())?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text is a store or an error saying what is wrong: never a panic.
        #[test]
        fn any_text_parses_or_says_why(text in "[a-z_\\[\\]=\"0-9./ \n{},]{0,300}") {
            let _ = parse(&text);
        }
    }

    #[test]
    fn a_record_that_is_not_one_is_named() {
        let text = "[[record]]\nkind = \"member\"\n";
        let error = parse(text).expect_err("not a record");
        assert!(!error.is_empty());
        assert!(parse("").expect("empty").records.is_empty());
    }
}
