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

/// [`read`], into `scratch`, which keeps its length from call to call: a loop that reads
/// many large frames (a program's output) allocates and zeroes its buffer once, not for
/// every frame.
pub async fn read_reusing<T, R>(
    reader: &mut R,
    max: usize,
    scratch: &mut Vec<u8>,
) -> Result<Option<T>, ReadError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let Some(len) = read_len(reader, max).await? else {
        return Ok(None);
    };
    if scratch.len() < len {
        scratch.resize(len, 0);
    }
    let body = &mut scratch[..len];
    read_exactly(reader, body).await?;
    Ok(Some(frame::decode(body)?))
}

/// Reads one frame's body of at most `max` bytes, undecoded.
pub async fn read_body<R>(reader: &mut R, max: usize) -> Result<Option<Vec<u8>>, ReadError>
where
    R: AsyncRead + Unpin,
{
    let Some(len) = read_len(reader, max).await? else {
        return Ok(None);
    };
    let mut body = vec![0u8; len];
    read_exactly(reader, &mut body).await?;
    Ok(Some(body))
}

/// Reads a frame's header: the length of its body, at most `max`; `None` at a clean end.
async fn read_len<R>(reader: &mut R, max: usize) -> Result<Option<usize>, ReadError>
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
    Ok(Some(frame::body_len(header, max)?))
}

async fn read_exactly<R>(reader: &mut R, body: &mut [u8]) -> Result<(), ReadError>
where
    R: AsyncRead + Unpin,
{
    reader.read_exact(body).await.map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ReadError::Truncated
        } else {
            ReadError::Io(e)
        }
    })
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
    async fn a_reused_buffer_reads_frames_larger_and_smaller_than_the_last() {
        let mut buf = Cursor::new(Vec::new());
        for message in ["a".repeat(300), "bb".into(), "c".repeat(1000)] {
            write(&mut buf, &message, 4096).await.expect("write");
        }
        buf.set_position(0);
        let mut scratch = Vec::new();
        let mut read_back = Vec::new();
        while let Some(m) = read_reusing::<String, _>(&mut buf, 4096, &mut scratch)
            .await
            .expect("read")
        {
            read_back.push(m);
        }
        assert_eq!(read_back, ["a".repeat(300), "bb".into(), "c".repeat(1000)]);
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
