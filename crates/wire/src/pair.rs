//! Pairing: the code one device shows, the messages of `/loopsy/pair/1`, and the
//! derivations both sides compute from the handshake.
//!
//! The flow: the inviter shows a [`Code`]. The joiner connects to the inviter's peer ID (the
//! libp2p connection authenticates both peer IDs), opens a pair stream and sends
//! [`Message::Start`] with the code's invite ID and the first message of a Noise NNpsk0
//! handshake keyed by the code's secret ([`psk`]) and bound to both peer IDs
//! ([`prologue`]). The inviter answers with the second handshake message carrying its
//! [`Hello`]; the joiner sends its own `Hello` sealed under the new keys; the inviter seals
//! a [`Done`]. Both then show the same [`check_code`] of the handshake hash. A wrong secret
//! fails the first message's authentication: the inviter answers [`Message::Refused`].
//!
//! A [`ShortCode`] (`alpha 1-472-135-890`) is for a device that already sees the inviter:
//! its secret is too short to key Noise directly (whoever saw the first message could test
//! guesses offline), so it keys a SPAKE2 exchange first. The joiner sends
//! [`Message::ShortStart`] with the nameplate and its SPAKE2 message; the inviter answers
//! [`Message::Pake`] with its own. Both derive the Noise key from SPAKE2's key ([`short_psk`]),
//! and the flow above goes on with the joiner's first handshake message in a
//! [`Message::Noise`]. A wrong code costs the guesser one online attempt and teaches nothing.

use data_encoding::BASE32_NOPAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What every code starts with; the digit is the code format's version.
pub const CODE_PREFIX: &str = "LOOPSY1-";
/// Bytes of the one-time secret: 128 bits.
pub const SECRET_LEN: usize = 16;
/// Bytes of the invite ID, which tells the inviter which of its invitations is meant.
pub const INVITE_ID_LEN: usize = 8;
/// Most addresses a code carries.
pub const MAX_CODE_ADDRS: usize = 8;
/// Longest code text accepted.
pub const MAX_CODE_TEXT: usize = 2048;
/// Largest pair protocol frame.
pub const MAX_FRAME: usize = 16 * 1024;
/// The Noise protocol the pairing handshake runs.
pub const NOISE_PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";

const CHECKSUM_LEN: usize = 4;
const FORMAT_VERSION: u8 = 1;

/// A pairing code: who invites, where to reach it, and the one-time secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// The inviter's peer ID, as bytes.
    pub inviter: Vec<u8>,
    /// The inviter's addresses, as multiaddr bytes.
    pub addrs: Vec<Vec<u8>>,
    pub invite: [u8; INVITE_ID_LEN],
    pub secret: [u8; SECRET_LEN],
    /// Expiry, in seconds since the Unix epoch.
    pub expires: u64,
}

/// A code that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("not a Loopsy pairing code (it should start with {CODE_PREFIX})")]
    NotACode,
    #[error("the pairing code is mistyped or incomplete; copy it again")]
    Mistyped,
    #[error("the pairing code is of a newer format; update loopsy")]
    UnknownVersion,
    #[error("the pairing code is malformed: {0}")]
    Malformed(&'static str),
}

impl Code {
    /// The code as text: the prefix, then base32 of the binary form with a checksum.
    pub fn to_text(&self) -> String {
        let mut bytes = vec![FORMAT_VERSION];
        bytes.extend(self.expires.to_be_bytes());
        bytes.extend(self.invite);
        bytes.extend(self.secret);
        push_short(&mut bytes, &self.inviter);
        let addrs: Vec<_> = self.addrs.iter().take(MAX_CODE_ADDRS).collect();
        bytes.push(addrs.len() as u8);
        for addr in addrs {
            push_short(&mut bytes, addr);
        }
        let sum = Sha256::digest(&bytes);
        bytes.extend(&sum[..CHECKSUM_LEN]);
        format!("{CODE_PREFIX}{}", BASE32_NOPAD.encode(&bytes))
    }

    /// Reads a code, forgiving case and the spaces or line breaks of copying.
    pub fn from_text(text: &str) -> Result<Self, CodeError> {
        if text.len() > MAX_CODE_TEXT {
            return Err(CodeError::Malformed("too long"));
        }
        let cleaned: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
        let body = cleaned
            .strip_prefix(CODE_PREFIX)
            .ok_or(CodeError::NotACode)?;
        let bytes = BASE32_NOPAD
            .decode(body.as_bytes())
            .map_err(|_| CodeError::Mistyped)?;
        let (payload, sum) = bytes
            .split_last_chunk::<CHECKSUM_LEN>()
            .ok_or(CodeError::Mistyped)?;
        if Sha256::digest(payload)[..CHECKSUM_LEN] != sum[..] {
            return Err(CodeError::Mistyped);
        }
        let mut r = Reader(payload);
        if r.take(1)?[0] != FORMAT_VERSION {
            return Err(CodeError::UnknownVersion);
        }
        let expires = u64::from_be_bytes(r.array()?);
        let invite = r.array()?;
        let secret = r.array()?;
        let inviter = r.short()?.to_vec();
        let count = r.take(1)?[0] as usize;
        if count > MAX_CODE_ADDRS {
            return Err(CodeError::Malformed("too many addresses"));
        }
        let addrs = (0..count)
            .map(|_| r.short().map(<[u8]>::to_vec))
            .collect::<Result<_, _>>()?;
        if !r.0.is_empty() {
            return Err(CodeError::Malformed("trailing bytes"));
        }
        Ok(Self {
            inviter,
            addrs,
            invite,
            secret,
            expires,
        })
    }
}

fn push_short(out: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(255)];
    out.push(bytes.len() as u8);
    out.extend(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodeError> {
        if self.0.len() < n {
            return Err(CodeError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn short(&mut self) -> Result<&'a [u8], CodeError> {
        let len = self.take(1)?[0] as usize;
        self.take(len)
    }
}

/// The Noise pre-shared key for an invitation: 32 bytes from the code's secret.
pub fn psk(invite: &[u8; INVITE_ID_LEN], secret: &[u8; SECRET_LEN]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"loopsy pair psk v1");
    h.update(invite);
    h.update(secret);
    h.finalize().into()
}

/// Digits of a short code's secret: 10^9 codes, about 30 bits.
pub const SHORT_DIGITS: usize = 9;
/// The largest nameplate: it tells the inviter which of its open short codes is meant.
pub const MAX_NAMEPLATE: u16 = 999;
/// Longest short code text accepted.
pub const MAX_SHORT_TEXT: usize = 256;
/// Longest name in a short code accepted (device names are shorter), so that a code read
/// always writes back within [`MAX_SHORT_TEXT`].
pub const MAX_SHORT_NAME: usize = 128;
/// Largest SPAKE2 message accepted (an Ed25519 point and a side byte take 33).
pub const MAX_PAKE: usize = 64;

/// A short pairing code for a device the joiner already sees: the inviter's name, a
/// nameplate, and a nine-digit secret, as `alpha 1-472-135-890`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortCode {
    /// The name the inviter announces (a name may hold spaces).
    pub name: String,
    pub nameplate: u16,
    /// Below 10^[`SHORT_DIGITS`].
    pub secret: u32,
}

/// Text that is not a short code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShortCodeError {
    /// Nothing in it looks like a short code's digits (it may be a long code).
    #[error("not a short pairing code")]
    NotShort,
    #[error(
        "the short pairing code is mistyped: it reads NAME N-NNN-NNN-NNN, as `loopsy pair` \
         shows it (alpha 1-472-135-890)"
    )]
    Mistyped,
}

impl ShortCode {
    /// The code as people type it: `NAME N-NNN-NNN-NNN`.
    pub fn to_text(&self) -> String {
        let s = format!("{:0width$}", self.secret, width = SHORT_DIGITS);
        format!(
            "{} {}-{}-{}-{}",
            self.name,
            self.nameplate,
            &s[..3],
            &s[3..6],
            &s[6..]
        )
    }

    /// Reads a code: the name, then the digits as the last word (dashes optional after the
    /// nameplate's), forgiving the spaces around them.
    pub fn from_text(text: &str) -> Result<Self, ShortCodeError> {
        if text.len() > MAX_SHORT_TEXT {
            return Err(ShortCodeError::NotShort);
        }
        let text = text.trim();
        let (name, digits) = text.rsplit_once(char::is_whitespace).unwrap_or(("", text));
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '-') {
            return Err(ShortCodeError::NotShort);
        }
        let name = name.trim();
        if name.len() > MAX_SHORT_NAME {
            return Err(ShortCodeError::NotShort);
        }
        let (nameplate, secret) = digits.split_once('-').ok_or(ShortCodeError::Mistyped)?;
        let secret: String = secret.chars().filter(|c| *c != '-').collect();
        if name.is_empty() || nameplate.is_empty() || secret.len() != SHORT_DIGITS {
            return Err(ShortCodeError::Mistyped);
        }
        let nameplate = nameplate
            .parse()
            .ok()
            .filter(|n| (1..=MAX_NAMEPLATE).contains(n))
            .ok_or(ShortCodeError::Mistyped)?;
        let secret = secret.parse().map_err(|_| ShortCodeError::Mistyped)?;
        Ok(Self {
            name: name.to_owned(),
            nameplate,
            secret,
        })
    }

    /// The SPAKE2 password: the nameplate and the secret, in a domain of their own.
    pub fn password(&self) -> Vec<u8> {
        let mut out = b"loopsy short code v1".to_vec();
        out.extend(self.nameplate.to_be_bytes());
        out.extend(self.secret.to_be_bytes());
        out
    }
}

/// The Noise pre-shared key of a short code's pairing: 32 bytes from SPAKE2's key (which is
/// bound to the code and to both peer IDs).
pub fn short_psk(pake_key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"loopsy pair short psk v1");
    h.update(pake_key);
    h.finalize().into()
}

/// The handshake prologue: binds the handshake to the two peer IDs the libp2p connection
/// authenticated, so it cannot be replayed or relayed between another pair of devices.
pub fn prologue(inviter: &[u8], joiner: &[u8]) -> Vec<u8> {
    let mut out = b"loopsy pair v1".to_vec();
    for id in [inviter, joiner] {
        out.extend((id.len() as u16).to_be_bytes());
        out.extend(id);
    }
    out
}

/// The short code both devices show once paired, for the user to compare: six digits from
/// the handshake hash, as "123 456".
pub fn check_code(handshake_hash: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"loopsy check code v1");
    h.update(handshake_hash);
    let digest = h.finalize();
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 1_000_000;
    format!("{:03} {:03}", n / 1000, n % 1000)
}

/// A pair stream's frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Joiner: which invitation, and the first handshake message.
    Start {
        #[serde(with = "serde_bytes")]
        invite: Vec<u8>,
        #[serde(with = "serde_bytes")]
        noise: Vec<u8>,
    },
    /// Inviter: the second handshake message, carrying its sealed [`Hello`]. Joiner, after
    /// a short code's [`Message::Pake`]: the first handshake message.
    Noise {
        #[serde(with = "serde_bytes")]
        noise: Vec<u8>,
    },
    /// Either side: a message sealed with the handshake's keys.
    Sealed {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Inviter: no pairing, and why.
    Refused { reason: String },
    /// Joiner, for a [`ShortCode`]: which short code, and its SPAKE2 message.
    ShortStart {
        nameplate: u16,
        #[serde(with = "serde_bytes")]
        pake: Vec<u8>,
    },
    /// Inviter: its SPAKE2 message.
    Pake {
        #[serde(with = "serde_bytes")]
        pake: Vec<u8>,
    },
}

/// What each side tells the other about itself inside the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub name: String,
    /// The capabilities this side grants the other.
    pub grants: Vec<String>,
    /// Where this side can be reached, as multiaddr bytes.
    pub addrs: Vec<serde_bytes::ByteBuf>,
    /// What kind of member this side is. Left out for a device (so a node's hello is what
    /// it was before kinds existed), and read as a device when absent or unknown.
    #[serde(default, skip_serializing_if = "Kind::is_device")]
    pub kind: Kind,
}

/// What kind of member a peer says it is: a label shown to people, never a grant (what a
/// member may do is what it was granted, whatever it calls itself).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A web browser running the app (`crates/web`): it serves no protocol.
    Browser,
    /// A device running `loopsy node`; also any kind this version does not know (serde
    /// wants that variant last).
    #[default]
    #[serde(other)]
    Device,
}

impl Kind {
    pub fn is_device(&self) -> bool {
        *self == Kind::Device
    }

    /// The kind's name, as `trust ls` shows it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Device => "device",
            Kind::Browser => "browser",
        }
    }
}

/// The inviter's last word: the pairing is recorded on its side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub ok: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn code() -> impl Strategy<Value = Code> {
        (
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..=8),
            any::<[u8; 8]>(),
            any::<[u8; 16]>(),
            any::<u64>(),
        )
            .prop_map(|(inviter, addrs, invite, secret, expires)| Code {
                inviter,
                addrs,
                invite,
                secret,
                expires,
            })
    }

    /// Known answers, computed independently (Python's hashlib) from the derivation as
    /// specified: a change would make old and new builds show different check codes.
    #[test]
    fn check_code_known_answer() {
        assert_eq!(check_code(&[0u8; 32]), "394 062");
        assert_eq!(check_code(b"loopsy"), "008 992");
    }

    #[test]
    fn psk_known_answer() {
        let psk = psk(&[1; 8], &[2; 16]);
        assert_eq!(
            data_encoding::HEXLOWER.encode(&psk[..8]),
            "f1240b6c50422d89"
        );
    }

    #[test]
    fn prologue_binds_the_order_of_the_peers() {
        assert_ne!(prologue(b"a", b"b"), prologue(b"b", b"a"));
        assert_ne!(prologue(b"ab", b""), prologue(b"a", b"b"));
    }

    #[test]
    fn code_errors_are_told_apart() {
        assert_eq!(Code::from_text("hello"), Err(CodeError::NotACode));
        assert_eq!(Code::from_text("LOOPSY1-AAAA"), Err(CodeError::Mistyped));
        assert_eq!(Code::from_text("LOOPSY1-!!"), Err(CodeError::Mistyped));
    }

    #[test]
    fn short_codes_read_as_typed() {
        let code = ShortCode {
            name: "my laptop".into(),
            nameplate: 4,
            secret: 7_213_589,
        };
        assert_eq!(code.to_text(), "my laptop 4-007-213-589");
        for typed in [
            "my laptop 4-007-213-589",
            "  my laptop   4-007213589 ",
            "my laptop\t4-007-213589",
        ] {
            assert_eq!(ShortCode::from_text(typed), Ok(code.clone()), "{typed}");
        }
    }

    #[test]
    fn short_code_errors_are_told_apart() {
        for long in ["LOOPSY1-AAAA", "hello", "alpha", "", "alpha beta"] {
            assert_eq!(ShortCode::from_text(long), Err(ShortCodeError::NotShort));
        }
        for typo in [
            "alpha 4721358904",
            "alpha 4-721-358-90",
            "alpha 4-721-358-9041",
            "alpha 0-721-358-904",
            "alpha 1000-721-358-904",
            "alpha -721-358-904",
            "4-721-358-904 ",
        ] {
            assert_eq!(
                ShortCode::from_text(typo),
                Err(ShortCodeError::Mistyped),
                "{typo}"
            );
        }
    }

    fn hello_bytes(value: &impl Serialize) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).unwrap();
        out
    }

    /// A hello as nodes sent it before kinds existed.
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct OldHello {
        name: String,
        grants: Vec<String>,
        addrs: Vec<serde_bytes::ByteBuf>,
    }

    #[test]
    fn a_hello_without_a_kind_is_a_device_and_a_device_sends_none() {
        let old = OldHello {
            name: "desk".into(),
            grants: vec!["exec".into()],
            addrs: vec![],
        };
        let hello: Hello = ciborium::from_reader(&hello_bytes(&old)[..]).unwrap();
        assert_eq!(hello.kind, Kind::Device);
        // A device's hello is byte for byte what older nodes sent, and read by them.
        assert_eq!(hello_bytes(&hello), hello_bytes(&old));
        let browser = Hello {
            kind: Kind::Browser,
            ..hello
        };
        let bytes = hello_bytes(&browser);
        let read_by_old: OldHello = ciborium::from_reader(&bytes[..]).unwrap();
        assert_eq!(read_by_old, old);
        let read: Hello = ciborium::from_reader(&bytes[..]).unwrap();
        assert_eq!(read.kind, Kind::Browser);
    }

    #[test]
    fn an_unknown_kind_is_a_device() {
        #[derive(Serialize)]
        struct Future {
            name: String,
            grants: Vec<String>,
            addrs: Vec<serde_bytes::ByteBuf>,
            kind: String,
        }
        let future = Future {
            name: "toaster".into(),
            grants: vec![],
            addrs: vec![],
            kind: "toaster".into(),
        };
        let hello: Hello = ciborium::from_reader(&hello_bytes(&future)[..]).unwrap();
        assert_eq!(hello.kind, Kind::Device);
    }

    #[test]
    fn short_psk_known_answer() {
        let psk = short_psk(&[3; 32]);
        assert_eq!(
            data_encoding::HEXLOWER.encode(&psk[..8]),
            "c6f146c0974aa008"
        );
    }

    proptest! {
        #[test]
        fn short_codes_round_trip(
            name in "[a-z][a-z0-9 ]{0,20}[a-z]",
            nameplate in 1..=MAX_NAMEPLATE,
            secret in 0..1_000_000_000u32,
        ) {
            let code = ShortCode { name, nameplate, secret };
            prop_assert_eq!(ShortCode::from_text(&code.to_text()), Ok(code));
        }

        #[test]
        fn garbage_short_codes_never_panic(s in "\\PC{0,300}") {
            let _ = ShortCode::from_text(&s);
        }

        #[test]
        fn code_round_trips(code in code()) {
            let text = code.to_text();
            prop_assert!(text.len() < MAX_CODE_TEXT);
            prop_assert_eq!(Code::from_text(&text).unwrap(), code);
        }

        #[test]
        fn code_survives_copying(code in code()) {
            // Lower case and line breaks, as a chat program might deliver it.
            let text = code.to_text().to_lowercase();
            let wrapped: String = text
                .chars()
                .enumerate()
                .flat_map(|(i, c)| if i % 30 == 29 { vec![c, '\n'] } else { vec![c] })
                .collect();
            prop_assert_eq!(Code::from_text(&format!("  {wrapped} ")).unwrap(), code);
        }

        #[test]
        fn a_typo_is_caught(code in code(), at in any::<prop::sample::Index>(), to in "[A-Z2-7]") {
            let text = code.to_text();
            let i = CODE_PREFIX.len() + at.index(text.len() - CODE_PREFIX.len());
            let mut typo = text.clone();
            typo.replace_range(i..=i, &to);
            if typo != text {
                prop_assert!(Code::from_text(&typo).is_err());
            }
        }

        #[test]
        fn garbage_codes_never_panic(s in "\\PC{0,300}") {
            let _ = Code::from_text(&s);
            let _ = Code::from_text(&format!("{CODE_PREFIX}{s}"));
        }

        #[test]
        fn messages_round_trip(noise in proptest::collection::vec(any::<u8>(), 0..200)) {
            let msg = Message::Start { invite: vec![1; 8], noise };
            let frame = crate::frame::encode(&msg, MAX_FRAME).unwrap();
            let (body, _) = crate::frame::split(&frame, MAX_FRAME).unwrap().unwrap();
            prop_assert_eq!(crate::frame::decode::<Message>(body).unwrap(), msg);
        }
    }
}
