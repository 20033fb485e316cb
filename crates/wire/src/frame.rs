//! Length-prefixed CBOR frames.
//!
//! A frame is `len: u32 (big-endian)` followed by `len` bytes of CBOR. Every reader states the
//! largest frame it accepts, and a length above it is refused before any byte of the body is
//! buffered, so a hostile peer cannot make us allocate what it claims.

use serde::{Serialize, de::DeserializeOwned};

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;

/// The default cap on a frame's body: large enough for any control message, small enough
/// that a stream of garbage costs little.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// A frame's length prefix was out of bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
}

/// A message could not be encoded into a frame.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("cannot encode message as CBOR: {0}")]
    Cbor(String),
}

/// A frame's body was not the message it should have been.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// Encodes `message` as one complete frame (prefix and body), refusing bodies over `max`.
pub fn encode<T: Serialize>(message: &T, max: usize) -> Result<Vec<u8>, EncodeError> {
    let mut buf = vec![0; HEADER_LEN];
    ciborium::into_writer(message, &mut buf).map_err(|e| EncodeError::Cbor(e.to_string()))?;
    let len = buf.len() - HEADER_LEN;
    check_len(len, max)?;
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max })?;
    buf[..HEADER_LEN].copy_from_slice(&prefix.to_be_bytes());
    Ok(buf)
}

/// Reads the body length from a frame's prefix, refusing lengths over `max`.
pub fn body_len(header: [u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    check_len(len, max)?;
    Ok(len)
}

/// Splits the first complete frame off `buf`: `Ok(Some((body, consumed)))` when one is
/// there, `Ok(None)` when more bytes are needed, an error when the prefix is over `max`.
pub fn split(buf: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = body_len(*header, max)?;
    let end = HEADER_LEN + len;
    Ok(buf.get(HEADER_LEN..end).map(|body| (body, end)))
}

/// Decodes one message from a frame body; the body must hold exactly one CBOR item.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let mut rest = body;
    // ciborium reads through `&mut &[u8]`, leaving what it did not consume.
    let message = ciborium::de::from_reader_with_recursion_limit(&mut rest, RECURSION_LIMIT)
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(message)
}

/// Nesting depth accepted while decoding: our messages are shallow, and a low limit keeps
/// a crafted deeply nested item from exhausting the stack.
const RECURSION_LIMIT: usize = 32;

fn check_len(len: usize, max: usize) -> Result<(), FrameError> {
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: u64,
        name: String,
        data: Vec<u8>,
        flag: Option<bool>,
    }

    fn sample() -> impl Strategy<Value = Sample> {
        (
            any::<u64>(),
            ".{0,40}",
            proptest::collection::vec(any::<u8>(), 0..512),
            any::<Option<bool>>(),
        )
            .prop_map(|(id, name, data, flag)| Sample {
                id,
                name,
                data,
                flag,
            })
    }

    #[test]
    fn frame_layout_is_big_endian_length_then_cbor() {
        let frame = encode(&"hi", DEFAULT_MAX_FRAME).expect("encode");
        // CBOR text string of length 2 is 0x62 followed by the bytes.
        assert_eq!(frame, [0, 0, 0, 3, 0x62, b'h', b'i']);
    }

    #[test]
    fn oversized_message_is_refused_when_encoding() {
        let err = encode(&vec![0u8; 100], 50).expect_err("must refuse");
        assert!(matches!(
            err,
            EncodeError::Frame(FrameError::TooLarge { max: 50, .. })
        ));
    }

    #[test]
    fn oversized_prefix_is_refused_before_the_body_arrives() {
        let header = (10_000_000u32).to_be_bytes();
        assert_eq!(
            split(&header, DEFAULT_MAX_FRAME),
            Err(FrameError::TooLarge {
                len: 10_000_000,
                max: DEFAULT_MAX_FRAME
            })
        );
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        // A body holding the CBOR for 7, then one more item.
        assert_eq!(
            decode::<u8>(&[0x07, 0x00]),
            Err(DecodeError::TrailingBytes(1))
        );
        assert_eq!(decode::<u8>(&[0x07]), Ok(7));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        // 100k nested one-element arrays: 0x81 0x81 ... 0x00
        let mut body = vec![0x81; 100_000];
        body.push(0);
        assert!(matches!(
            decode::<ciborium::Value>(&body),
            Err(DecodeError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn round_trip(msg in sample()) {
            let frame = encode(&msg, DEFAULT_MAX_FRAME).unwrap();
            let (body, used) = split(&frame, DEFAULT_MAX_FRAME).unwrap().unwrap();
            prop_assert_eq!(used, frame.len());
            prop_assert_eq!(decode::<Sample>(body).unwrap(), msg);
        }

        #[test]
        fn split_waits_for_every_byte(msg in sample(), cut in 0usize..600) {
            let frame = encode(&msg, DEFAULT_MAX_FRAME).unwrap();
            let cut = cut.min(frame.len());
            let partial = split(&frame[..cut], DEFAULT_MAX_FRAME).unwrap();
            prop_assert_eq!(partial.is_some(), cut == frame.len());
        }

        #[test]
        fn concatenated_frames_split_in_order(a in sample(), b in sample()) {
            let mut buf = encode(&a, DEFAULT_MAX_FRAME).unwrap();
            buf.extend(encode(&b, DEFAULT_MAX_FRAME).unwrap());
            let (body, used) = split(&buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
            prop_assert_eq!(decode::<Sample>(body).unwrap(), a);
            let (body, _) = split(&buf[used..], DEFAULT_MAX_FRAME).unwrap().unwrap();
            prop_assert_eq!(decode::<Sample>(body).unwrap(), b);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(Some((body, _))) = split(&bytes, 4096) {
                let _ = decode::<Sample>(body);
                let _ = decode::<crate::control::Request>(body);
                let _ = decode::<crate::control::Response>(body);
            }
            let _ = decode::<Sample>(&bytes);
            let _ = decode::<crate::control::Request>(&bytes);
            let _ = decode::<crate::control::Response>(&bytes);
        }
    }
}
