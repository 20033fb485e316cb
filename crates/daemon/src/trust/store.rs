//! `trust.toml`: the member records (signed, replicated) and this device's own settings per
//! peer (not replicated), in TOML that people can read. Written as a state file
//! ([`fsutil::StateFile`]), mode 0600. A file that does not parse (a write cut in the
//! middle, or damaged) is replaced by its previous copy `trust.toml.prev` when that one
//! parses, with a warning, and kept aside as `trust.toml.corrupt`; otherwise it is an error
//! that names it. Records that do not verify are an error in either copy, never a reason to
//! fall back: the node stops (see [`super::Trust::load`]).

use std::io;

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
    /// What kind of member it said it is when it paired (`browser`); a device when absent.
    /// A label for people: it grants nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<loopsy_wire::pair::Kind>,
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
# A store without its last line is taken for one cut short, and its previous copy is used.
";
/// Says that the file ends with [`END`] (files of older versions do not).
const ENDS_MARKED: &str =
    "# A store without its last line is taken for one cut short, and its previous copy is used.";
/// The last line: TOML cut at the end of a line still parses, with members missing.
const END: &str = "# end of the trust store";

/// What is wrong with a store's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("not text: {0}")]
    NotText(#[from] std::str::Utf8Error),
    #[error("the store is cut short: no `{END}` line")]
    CutShort,
    #[error("{0}")]
    Toml(String),
    #[error("record {index}: {reason}")]
    Record { index: usize, reason: BadRecord },
}

/// What is wrong with one record of the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRecord {
    #[error("`{0}` is not a peer ID")]
    PeerId(String),
    #[error("`{0}` is not an address")]
    Addr(String),
    #[error("the signature is not hex")]
    Signature,
}

/// Reads the store (or its previous copy, if the store does not parse); a missing file is an
/// empty store.
pub fn load(file: &fsutil::StateFile) -> io::Result<Stored> {
    file.load(|bytes| parse(std::str::from_utf8(bytes)?))
        .map(Option::unwrap_or_default)
}

/// Parses a store's text: any text gives a store or an error saying what is wrong.
pub fn parse(text: &str) -> Result<Stored, StoreError> {
    if text.lines().any(|l| l == ENDS_MARKED) && !text.lines().any(|l| l == END) {
        return Err(StoreError::CutShort);
    }
    let file: FileText =
        toml::from_str(text).map_err(|e| StoreError::Toml(e.message().to_owned()))?;
    let records = file
        .record
        .iter()
        .enumerate()
        .map(|(i, r)| {
            from_text(r).map_err(|reason| StoreError::Record {
                index: i + 1,
                reason,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Stored {
        peers: file.peer,
        records,
    })
}

/// The file's text for `stored`.
pub fn encode(stored: &Stored) -> io::Result<Vec<u8>> {
    let file = FileText {
        peer: stored.peers.clone(),
        record: stored.records.iter().filter_map(to_text).collect(),
    };
    let text = toml::to_string(&file).map_err(io::Error::other)?;
    Ok(format!("{HEADER}{text}\n{END}\n").into_bytes())
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

fn from_text(r: &RecordText) -> Result<Record, BadRecord> {
    let peer = |s: &str| {
        s.parse::<PeerId>()
            .map(|p| ByteBuf::from(p.to_bytes()))
            .map_err(|_| BadRecord::PeerId(s.to_owned()))
    };
    let addrs = r
        .addrs
        .iter()
        .map(|a| {
            a.parse::<Multiaddr>()
                .map(|a| ByteBuf::from(a.to_vec()))
                .map_err(|_| BadRecord::Addr(a.clone()))
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
                .map_err(|_| BadRecord::Signature)?,
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
    fn a_store_cut_at_the_end_of_a_line_is_no_store() {
        let stored = Stored {
            peers: vec![PeerSettings {
                peer_id: "12D3KooWKAZwybxJbvTBvS3qVuAtrcNYeZfJjB5Nj3VybGg31siD".into(),
                ..PeerSettings::default()
            }],
            records: Vec::new(),
        };
        let text = String::from_utf8(encode(&stored).unwrap()).unwrap();
        assert_eq!(parse(&text).unwrap().peers, stored.peers);
        let cut = text.trim_end().strip_suffix(END).unwrap();
        assert!(parse(cut).unwrap_err().to_string().contains("cut short"));
        // Files of older versions end with no mark.
        let old = cut.replace(ENDS_MARKED, "");
        assert_eq!(parse(&old).unwrap().peers, stored.peers);
    }

    #[test]
    fn a_record_that_is_not_one_is_named() {
        let text = "[[record]]\nkind = \"member\"\n";
        let error = parse(text).expect_err("not a record");
        assert!(!error.to_string().is_empty());
        assert!(parse("").expect("empty").records.is_empty());
    }
}
