//! Reading and writing [`loopsy_wire::frame`]s on any async byte stream: libp2p streams, and
//! the control socket through `tokio_util::compat`.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use loopsy_wire::frame::{self, DecodeError, EncodeError, FrameError, HEADER_LEN};
use serde::{Serialize, de::DeserializeOwned};
use std::io;

/// A frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("the stream ended in the middle of a frame")]
    Truncated,
}

/// A frame could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Reads one message of at most `max` bytes; `Ok(None)` when the stream ends cleanly first.
pub async fn read<T, R>(reader: &mut R, max: usize) -> Result<Option<T>, ReadError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    match read_body(reader, max).await? {
        Some(body) => Ok(Some(frame::decode(&body)?)),
        None => Ok(None),
    }
}

/// Reads one frame's body of at most `max` bytes, undecoded.
pub async fn read_body<R>(reader: &mut R, max: usize) -> Result<Option<Vec<u8>>, ReadError>
where
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match reader.read(&mut header[filled..]).await? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(ReadError::Truncated),
            n => filled += n,
        }
    }
    let len = frame::body_len(header, max)?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ReadError::Truncated
        } else {
            ReadError::Io(e)
        }
    })?;
    Ok(Some(body))
}

/// Writes one message of at most `max` bytes and flushes it.
pub async fn write<T, W>(writer: &mut W, message: &T, max: usize) -> Result<(), WriteError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    let bytes = frame::encode(message, max)?;
    writer.write_all(&bytes).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    #[tokio::test]
    async fn reads_back_what_was_written() {
        let mut buf = Cursor::new(Vec::new());
        write(&mut buf, &"one", 64).await.expect("write");
        write(&mut buf, &"two", 64).await.expect("write");
        buf.set_position(0);
        assert_eq!(
            read::<String, _>(&mut buf, 64).await.expect("read"),
            Some("one".into())
        );
        assert_eq!(
            read::<String, _>(&mut buf, 64).await.expect("read"),
            Some("two".into())
        );
        assert_eq!(read::<String, _>(&mut buf, 64).await.expect("eof"), None);
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error() {
        let mut bytes = frame::encode(&"hello", 64).expect("encode");
        bytes.truncate(bytes.len() - 1);
        let err = read::<String, _>(&mut Cursor::new(bytes), 64)
            .await
            .expect_err("short");
        assert!(matches!(err, ReadError::Truncated), "{err}");
    }

    #[tokio::test]
    async fn huge_length_is_refused_without_allocating_it() {
        let bytes = u32::MAX.to_be_bytes().to_vec();
        let err = read::<String, _>(&mut Cursor::new(bytes), 64)
            .await
            .expect_err("too big");
        assert!(
            matches!(err, ReadError::Frame(FrameError::TooLarge { .. })),
            "{err}"
        );
    }
}
