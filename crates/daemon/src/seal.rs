//! Sealed boxes to a device: anyone can seal bytes that only the device named by a peer ID
//! can open. Messages use them so that the members that carry a message between sender and
//! recipient hold only ciphertext.
//!
//! The box is the one message of the Noise pattern `N` (`-> e, es`: a one-way handshake to a
//! known static key), so the crypto is `snow`'s, as for pairing. The recipient's static key
//! is the X25519 key that its Ed25519 identity key maps to, as libsodium's
//! `crypto_sign_ed25519_pk_to_curve25519` and `crypto_sign_ed25519_sk_to_curve25519` do: a
//! peer ID (which inlines the Ed25519 public key) is all a sender needs, and no second key
//! has to be published or trusted. The prologue binds the box to its context (for messages:
//! the sender and the message ID), so a box cannot be moved into another one.
//!
//! `N` does not authenticate the sender; whoever uses a box authenticates that part itself
//! (a message is a record signed by its sender, and the sender is in the prologue).

use curve25519_dalek::edwards::CompressedEdwardsY;
use libp2p::identity::Keypair;
use loopsy_mesh::PeerId;
use sha2::{Digest, Sha512};

/// The Noise protocol of a box.
const PATTERN: &str = "Noise_N_25519_ChaChaPoly_SHA256";
/// What a box adds to its plaintext: the ephemeral key and the AEAD tag.
pub const OVERHEAD: usize = 32 + 16;
/// The largest box: one Noise message.
pub const MAX_SEALED: usize = 65_535;
/// The most plaintext a box holds.
pub const MAX_PLAIN: usize = MAX_SEALED - OVERHEAD;

/// A box could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the peer ID {0} does not hold an Ed25519 key, so nothing can be sealed to it")]
    NotEd25519(PeerId),
    #[error("the peer ID {0} holds an Ed25519 key that is not a usable point")]
    BadKey(PeerId),
    #[error("this device's key is not an Ed25519 key")]
    NotEd25519Keypair,
    #[error("at most {MAX_PLAIN} bytes fit in a box")]
    TooLong,
    /// The wrong recipient, another prologue, or altered or truncated bytes.
    #[error("the box does not open")]
    Open,
    #[error("noise: {0}")]
    Noise(String),
}

/// Seals `plain` to `recipient`, bound to `prologue`.
pub fn seal(recipient: &PeerId, prologue: &[u8], plain: &[u8]) -> Result<Vec<u8>, SealError> {
    if plain.len() > MAX_PLAIN {
        return Err(SealError::TooLong);
    }
    let remote = x25519_public(recipient)?;
    let mut state = builder(prologue)?
        .remote_public_key(&remote)
        .and_then(|b| b.build_initiator())
        .map_err(noise)?;
    let mut out = vec![0u8; plain.len() + OVERHEAD];
    let n = state.write_message(plain, &mut out).map_err(noise)?;
    out.truncate(n);
    Ok(out)
}

/// Opens a box sealed to `keypair`'s device with the same `prologue`.
pub fn open(keypair: &Keypair, prologue: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    if sealed.len() < OVERHEAD || sealed.len() > MAX_SEALED {
        return Err(SealError::Open);
    }
    let secret = x25519_secret(keypair)?;
    let mut state = builder(prologue)?
        .local_private_key(&secret)
        .and_then(|b| b.build_responder())
        .map_err(noise)?;
    let mut out = vec![0u8; sealed.len()];
    let n = state
        .read_message(sealed, &mut out)
        .map_err(|_| SealError::Open)?;
    out.truncate(n);
    Ok(out)
}

fn builder(prologue: &[u8]) -> Result<snow::Builder<'_>, SealError> {
    let params = PATTERN.parse().map_err(noise)?;
    snow::Builder::new(params).prologue(prologue).map_err(noise)
}

fn noise(e: snow::Error) -> SealError {
    SealError::Noise(format!("{e:?}"))
}

/// The X25519 public key of the device named `peer`: its Ed25519 key (inlined in the peer
/// ID) as a Montgomery point.
pub fn x25519_public(peer: &PeerId) -> Result<[u8; 32], SealError> {
    let multihash = peer.as_ref();
    // Code 0 is the identity multihash: the digest is the protobuf-encoded key itself.
    let ed25519 = (multihash.code() == 0)
        .then(|| libp2p::identity::PublicKey::try_decode_protobuf(multihash.digest()).ok())
        .flatten()
        .and_then(|key| key.try_into_ed25519().ok())
        .ok_or(SealError::NotEd25519(*peer))?;
    ed25519_to_x25519_public(&ed25519.to_bytes()).ok_or(SealError::BadKey(*peer))
}

/// `crypto_sign_ed25519_pk_to_curve25519`: the birational map from Edwards to Montgomery.
/// Refuses keys that are not points, and small-order points, whose shared secrets an
/// eavesdropper knows.
fn ed25519_to_x25519_public(ed25519: &[u8; 32]) -> Option<[u8; 32]> {
    let point = CompressedEdwardsY(*ed25519).decompress()?;
    (!point.is_small_order()).then(|| point.to_montgomery().to_bytes())
}

/// The X25519 secret of this device, as `crypto_sign_ed25519_sk_to_curve25519` derives it:
/// the first half of SHA-512 of the Ed25519 seed, clamped (the scalar Ed25519 signs with).
fn x25519_secret(keypair: &Keypair) -> Result<[u8; 32], SealError> {
    let ed25519 = keypair
        .clone()
        .try_into_ed25519()
        .map_err(|_| SealError::NotEd25519Keypair)?;
    Ok(seed_to_x25519_secret(ed25519.secret().as_ref()))
}

fn seed_to_x25519_secret(seed: &[u8]) -> [u8; 32] {
    let hash = Sha512::digest(seed);
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&hash[..32]);
    secret[0] &= 248;
    secret[31] &= 127;
    secret[31] |= 64;
    secret
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A vector computed independently, with libsodium through PyNaCl 1.6.2:
    /// `pk, sk = crypto_sign_seed_keypair(bytes(range(32)))`, then
    /// `crypto_sign_ed25519_pk_to_curve25519(pk)` and `crypto_sign_ed25519_sk_to_curve25519(sk)`
    /// (and `crypto_scalarmult_base` of the latter gives the former).
    const SEED: [u8; 32] = [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
        25, 26, 27, 28, 29, 30, 31,
    ];
    const ED25519_PUBLIC: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
    const X25519_PUBLIC: &str = "4701d08488451f545a409fb58ae3e58581ca40ac3f7f114698cd71deac73ca01";
    const X25519_SECRET: &str = "3894eea49c580aef816935762be049559d6d1440dede12e6a125f1841fff8e6f";

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap()
    }

    fn known_keypair() -> Keypair {
        Keypair::ed25519_from_bytes(SEED).unwrap()
    }

    #[test]
    fn the_keys_are_libsodiums() {
        let keypair = known_keypair();
        let peer = keypair.public().to_peer_id();
        let ed25519 = keypair.public().try_into_ed25519().unwrap().to_bytes();
        assert_eq!(ed25519.to_vec(), hex(ED25519_PUBLIC));
        assert_eq!(x25519_public(&peer).unwrap().to_vec(), hex(X25519_PUBLIC));
        assert_eq!(
            x25519_secret(&keypair).unwrap().to_vec(),
            hex(X25519_SECRET)
        );
    }

    #[test]
    fn a_box_opens_for_its_recipient_only() {
        let bob = Keypair::generate_ed25519();
        let eve = Keypair::generate_ed25519();
        let to = bob.public().to_peer_id();
        let sealed = seal(&to, b"context", b"for bob").unwrap();
        assert_eq!(sealed.len(), b"for bob".len() + OVERHEAD);
        assert_eq!(open(&bob, b"context", &sealed).unwrap(), b"for bob");
        // A fresh ephemeral key each time.
        assert_ne!(seal(&to, b"context", b"for bob").unwrap(), sealed);

        assert!(matches!(
            open(&eve, b"context", &sealed),
            Err(SealError::Open)
        ));
        assert!(matches!(
            open(&bob, b"another context", &sealed),
            Err(SealError::Open)
        ));
        for i in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 0x01;
            assert!(open(&bob, b"context", &flipped).is_err(), "byte {i}");
        }
        assert!(open(&bob, b"context", &sealed[..sealed.len() - 1]).is_err());
    }

    #[test]
    fn the_largest_box_round_trips_and_a_larger_one_is_refused() {
        let bob = Keypair::generate_ed25519();
        let to = bob.public().to_peer_id();
        let plain = vec![7u8; MAX_PLAIN];
        let sealed = seal(&to, b"", &plain).unwrap();
        assert_eq!(sealed.len(), MAX_SEALED);
        assert_eq!(open(&bob, b"", &sealed).unwrap(), plain);
        assert!(matches!(
            seal(&to, b"", &vec![0u8; MAX_PLAIN + 1]),
            Err(SealError::TooLong)
        ));
    }

    #[test]
    fn only_ed25519_peers_can_receive() {
        // A peer ID that is a SHA-256 hash (as for RSA keys) names no key to seal to.
        let hashed: PeerId = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
            .parse()
            .unwrap();
        assert!(matches!(
            seal(&hashed, b"", b"x"),
            Err(SealError::NotEd25519(_))
        ));
    }

    #[test]
    fn small_order_keys_are_refused() {
        // The identity point (y = 1) has order 1.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(ed25519_to_x25519_public(&identity), None);
    }

    proptest! {
        #[test]
        fn garbage_never_opens_nor_panics(
            sealed in proptest::collection::vec(any::<u8>(), 0..256),
            prologue in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let keypair = known_keypair();
            prop_assert!(open(&keypair, &prologue, &sealed).is_err());
        }

        #[test]
        fn any_plaintext_round_trips(
            plain in proptest::collection::vec(any::<u8>(), 0..1024),
            prologue in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let keypair = known_keypair();
            let sealed = seal(&keypair.public().to_peer_id(), &prologue, &plain).unwrap();
            prop_assert_eq!(open(&keypair, &prologue, &sealed).unwrap(), plain);
        }
    }
}
