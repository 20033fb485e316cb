//! JSON-RPC on stdin and stdout, one message per line, as MCP's stdio transport has it.
//!
//! rmcp's own stdio transport drops lines that are not JSON without a word, so a client
//! that sent one would wait for an answer forever. Here every bad line gets a JSON-RPC
//! error response (a parse error, an invalid request, or a line too long) and the server
//! reads on.

use std::{io, sync::Arc};

use rmcp::{
    ErrorData, RoleServer,
    model::{JsonRpcError, JsonRpcVersion2_0, RequestId},
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
    transport::Transport,
};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt},
    sync::Mutex,
};

/// The longest message accepted: room for a 4 MiB file in base64, and JSON around it.
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// The server's side of a stdio connection.
pub struct Stdio<R, W> {
    input: R,
    output: Arc<Mutex<W>>,
}

impl<R, W> Stdio<R, W> {
    pub fn new(input: R, output: W) -> Self {
        Self {
            input,
            output: Arc::new(Mutex::new(output)),
        }
    }
}

/// What one read of the input gave.
#[derive(Debug, PartialEq)]
enum Line {
    Message(Vec<u8>),
    TooLong,
    End,
}

impl<R, W> Stdio<R, W>
where
    R: AsyncBufRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// The next line, without its end; at most [`MAX_LINE`] bytes are kept of it.
    async fn next_line(&mut self) -> io::Result<Line> {
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            let buf = self.input.fill_buf().await?;
            if buf.is_empty() {
                // A last message without a newline still counts.
                return Ok(match (too_long, line.is_empty()) {
                    (true, _) => Line::TooLong,
                    (false, true) => Line::End,
                    (false, false) => Line::Message(line),
                });
            }
            let end = buf.iter().position(|&b| b == b'\n');
            let piece = &buf[..end.unwrap_or(buf.len())];
            if line.len() + piece.len() > MAX_LINE {
                too_long = true;
                line = Vec::new();
            }
            if !too_long {
                line.extend_from_slice(piece);
            }
            let used = end.map_or(buf.len(), |i| i + 1);
            self.input.consume(used);
            if end.is_some() {
                return Ok(if too_long {
                    Line::TooLong
                } else {
                    Line::Message(line)
                });
            }
        }
    }
}

impl<R, W> Transport<RoleServer> for Stdio<R, W>
where
    R: AsyncBufRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), io::Error>> + Send + 'static {
        let output = self.output.clone();
        async move { write_line(&output, &item).await }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            let refusal = match self.next_line().await {
                Ok(Line::Message(line)) if line.trim_ascii().is_empty() => continue,
                Ok(Line::Message(line)) => match parse(&line) {
                    Ok(message) => return Some(message),
                    Err(refusal) => refusal,
                },
                Ok(Line::TooLong) => refuse(
                    None,
                    ErrorData::invalid_request(
                        format!("message longer than {MAX_LINE} bytes; nothing was done"),
                        None,
                    ),
                ),
                Ok(Line::End) => return None,
                Err(error) => {
                    tracing::warn!(%error, "cannot read stdin");
                    return None;
                }
            };
            if let Err(error) = write_line(&self.output, &refusal).await {
                tracing::warn!(%error, "cannot write to stdout");
                return None;
            }
        }
    }

    async fn close(&mut self) -> Result<(), io::Error> {
        self.output.lock().await.flush().await
    }
}

/// A message, or the error response to send for it.
fn parse(line: &[u8]) -> Result<RxJsonRpcMessage<RoleServer>, JsonRpcError> {
    let value: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| refuse(None, ErrorData::parse_error(format!("not JSON: {e}"), None)))?;
    // Answer under the request's own ID when it has a readable one.
    let id = value
        .get("id")
        .and_then(|id| serde_json::from_value::<RequestId>(id.clone()).ok());
    serde_json::from_value(value).map_err(|e| {
        refuse(
            id,
            ErrorData::invalid_request(format!("not a JSON-RPC 2.0 message: {e}"), None),
        )
    })
}

fn refuse(id: Option<RequestId>, error: ErrorData) -> JsonRpcError {
    JsonRpcError {
        jsonrpc: JsonRpcVersion2_0,
        id,
        error,
    }
}

async fn write_line<W: AsyncWrite + Unpin>(
    output: &Mutex<W>,
    message: &impl serde::Serialize,
) -> io::Result<()> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    let mut output = output.lock().await;
    output.write_all(&line).await?;
    output.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdio(input: &[u8]) -> Stdio<&[u8], Vec<u8>> {
        Stdio::new(input, Vec::new())
    }

    #[tokio::test]
    async fn lines_are_split_bounded_and_the_last_may_lack_a_newline() {
        let long = vec![b'x'; MAX_LINE + 1];
        let input = [b"one\n".as_slice(), &long, b"\ntwo"].concat();
        let mut io = stdio(&input);
        assert_eq!(
            io.next_line().await.ok(),
            Some(Line::Message(b"one".to_vec()))
        );
        assert_eq!(io.next_line().await.ok(), Some(Line::TooLong));
        assert_eq!(
            io.next_line().await.ok(),
            Some(Line::Message(b"two".to_vec()))
        );
        assert_eq!(io.next_line().await.ok(), Some(Line::End));
    }

    #[tokio::test]
    async fn bad_lines_are_answered_and_reading_goes_on() {
        let input = b"{oops\n{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":5}\n\n{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n";
        let mut io = stdio(input);
        let message = io.receive().await.expect("the good message");
        assert!(matches!(
            message,
            rmcp::model::JsonRpcMessage::Notification(_)
        ));
        let written = String::from_utf8(io.output.lock().await.clone()).expect("utf-8");
        let answers: Vec<serde_json::Value> = written
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(answers.len(), 2, "{written}");
        assert_eq!(answers[0]["error"]["code"], -32700);
        assert_eq!(answers[1]["error"]["code"], -32600);
        assert_eq!(answers[1]["id"], 7);
        assert!(io.receive().await.is_none());
    }
}
