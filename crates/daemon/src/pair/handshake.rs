//! The pairing handshake's cryptography: Noise NNpsk0 keyed by the code's secret, with the
//! prologue binding both peer IDs (see `loopsy_wire::pair` for the flow).

use loopsy_wire::pair::{self, NOISE_PATTERN};
use serde::{Serialize, de::DeserializeOwned};
use snow::{HandshakeState, TransportState};

/// The largest Noise message.
const MAX_NOISE: usize = 65_535;

/// The handshake failed cryptographically, or a sealed message did not decode.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CryptoError(pub String);

fn build(psk: &[u8; 32], prologue: &[u8], initiator: bool) -> Result<HandshakeState, CryptoError> {
    let params = NOISE_PATTERN
        .parse()
        .map_err(|e| CryptoError(format!("{e:?}")))?;
    let builder = snow::Builder::new(params)
        .psk(0, psk)
        .and_then(|b| b.prologue(prologue))
        .map_err(|e| CryptoError(format!("{e:?}")))?;
    let state = if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    };
    state.map_err(|e| CryptoError(format!("{e:?}")))
}

/// The joiner's side: the Noise initiator.
pub fn joiner(
    psk: &[u8; 32],
    inviter: &[u8],
    joiner: &[u8],
) -> Result<HandshakeState, CryptoError> {
    build(psk, &pair::prologue(inviter, joiner), true)
}

/// The inviter's side: the Noise responder.
pub fn inviter(
    psk: &[u8; 32],
    inviter: &[u8],
    joiner: &[u8],
) -> Result<HandshakeState, CryptoError> {
    build(psk, &pair::prologue(inviter, joiner), false)
}

/// Writes the next handshake message with `payload`.
pub fn write(state: &mut HandshakeState, payload: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut out = vec![0u8; MAX_NOISE];
    let n = state
        .write_message(payload, &mut out)
        .map_err(|e| CryptoError(format!("{e:?}")))?;
    out.truncate(n);
    Ok(out)
}

/// Reads the next handshake message and returns its payload; fails on a wrong key.
pub fn read(state: &mut HandshakeState, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut out = vec![0u8; MAX_NOISE];
    let n = state
        .read_message(message, &mut out)
        .map_err(|e| CryptoError(format!("{e:?}")))?;
    out.truncate(n);
    Ok(out)
}

/// Encrypts a message with the handshake's keys.
pub fn seal<T: Serialize>(state: &mut TransportState, message: &T) -> Result<Vec<u8>, CryptoError> {
    let mut plain = Vec::new();
    ciborium::into_writer(message, &mut plain).map_err(|e| CryptoError(e.to_string()))?;
    let mut out = vec![0u8; plain.len() + 16];
    let n = state
        .write_message(&plain, &mut out)
        .map_err(|e| CryptoError(format!("{e:?}")))?;
    out.truncate(n);
    Ok(out)
}

/// Decrypts and decodes a sealed message.
pub fn open<T: DeserializeOwned>(
    state: &mut TransportState,
    data: &[u8],
) -> Result<T, CryptoError> {
    if data.len() > MAX_NOISE {
        return Err(CryptoError("sealed message too large".into()));
    }
    let mut plain = vec![0u8; data.len()];
    let n = state
        .read_message(data, &mut plain)
        .map_err(|e| CryptoError(format!("{e:?}")))?;
    loopsy_wire::frame::decode(&plain[..n]).map_err(|e| CryptoError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopsy_wire::pair::{Hello, check_code};

    fn run(
        inviter_psk: [u8; 32],
        joiner_psk: [u8; 32],
        ids: (&[u8], &[u8], &[u8], &[u8]),
    ) -> Result<(String, String), CryptoError> {
        let mut i = inviter(&inviter_psk, ids.0, ids.1)?;
        let mut j = joiner(&joiner_psk, ids.2, ids.3)?;
        let m1 = write(&mut j, &[])?;
        read(&mut i, &m1)?;
        let m2 = write(&mut i, b"hello")?;
        assert_eq!(read(&mut j, &m2)?, b"hello");
        let codes = (
            check_code(i.get_handshake_hash()),
            check_code(j.get_handshake_hash()),
        );
        let (mut it, mut jt) = (
            i.into_transport_mode()
                .map_err(|e| CryptoError(format!("{e:?}")))?,
            j.into_transport_mode()
                .map_err(|e| CryptoError(format!("{e:?}")))?,
        );
        let hello = Hello {
            name: "j".into(),
            grants: vec![],
            addrs: vec![],
            kind: Default::default(),
        };
        let sealed = seal(&mut jt, &hello)?;
        assert_eq!(open::<Hello>(&mut it, &sealed)?, hello);
        Ok(codes)
    }

    #[test]
    fn same_secret_and_peers_pair_with_matching_check_codes() {
        let (a, b) = run([7; 32], [7; 32], (b"I", b"J", b"I", b"J")).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn a_wrong_secret_fails() {
        assert!(run([7; 32], [8; 32], (b"I", b"J", b"I", b"J")).is_err());
    }

    #[test]
    fn a_handshake_between_other_peers_fails() {
        // A relay in the middle that forwards to a third device changes who is on each end.
        assert!(run([7; 32], [7; 32], (b"I", b"J", b"I", b"M")).is_err());
    }
}
