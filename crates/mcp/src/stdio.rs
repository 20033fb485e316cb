//! JSON-RPC on stdin and stdout, one message per line, as MCP's stdio transport has it.
//!
//! rmcp's own stdio transport drops lines that are not JSON without a word, so a client
//! that sent one would wait for an answer forever. Here every bad line gets a JSON-RPC
//! error response (a parse error, an invalid request, or a line too long) and the server
//! reads on. Batches (JSON arrays), which MCP no longer has, are refused as invalid.

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
    /// The line being read. Kept here, not in the read's future: rmcp drops a pending
    /// read whenever a response goes out, and the bytes read so far must not go with it.
    line: Vec<u8>,
    too_long: bool,
    /// The start of a line too long to keep, to find its request's ID in.
    head: Vec<u8>,
}

impl<R, W> Stdio<R, W> {
    pub fn new(input: R, output: W) -> Self {
        Self {
            input,
            output: Arc::new(Mutex::new(output)),
            line: Vec::new(),
            too_long: false,
            head: Vec::new(),
        }
    }
}

/// What one read of the input gave.
#[derive(Debug, PartialEq)]
enum Line {
    Message(Vec<u8>),
    /// With the line's first bytes.
    TooLong(Vec<u8>),
    End,
}

/// How much of a line too long to keep is looked at for its ID.
const HEAD: usize = 4096;

impl<R, W> Stdio<R, W>
where
    R: AsyncBufRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// The next line, without its end; at most [`MAX_LINE`] bytes are kept of it. Safe to
    /// cancel: what was read stays in `self` for the next call.
    async fn next_line(&mut self) -> io::Result<Line> {
        loop {
            let buf = self.input.fill_buf().await?;
            let end = buf.iter().position(|&b| b == b'\n');
            let piece = &buf[..end.unwrap_or(buf.len())];
            if !self.too_long && self.line.len() + piece.len() > MAX_LINE {
                self.too_long = true;
                let mut head = std::mem::take(&mut self.line);
                let room = HEAD.saturating_sub(head.len());
                head.extend_from_slice(&piece[..room.min(piece.len())]);
                head.truncate(HEAD);
                self.head = head;
            }
            if !self.too_long {
                self.line.extend_from_slice(piece);
            }
            // A last message without a newline still counts.
            let at_end = buf.is_empty();
            let used = end.map_or(buf.len(), |i| i + 1);
            self.input.consume(used);
            if end.is_some() || at_end {
                let line = std::mem::take(&mut self.line);
                return Ok(if std::mem::take(&mut self.too_long) {
                    Line::TooLong(std::mem::take(&mut self.head))
                } else if at_end && line.is_empty() {
                    Line::End
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
                    Err(Some(refusal)) => refusal,
                    Err(None) => continue,
                },
                // Answered under its ID where the start of the line gives one, so the
                // client does not wait for an answer for ever.
                Ok(Line::TooLong(head)) => refuse(
                    id_in(&head),
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
            // Written by a task of its own, which a dropped read cannot cut in half.
            let output = self.output.clone();
            tokio::spawn(async move {
                if let Err(error) = write_line(&output, &refusal).await {
                    tracing::warn!(%error, "cannot write to stdout");
                }
            });
        }
    }

    async fn close(&mut self) -> Result<(), io::Error> {
        self.output.lock().await.flush().await
    }
}

/// A message, or the error response to send for it: none for a broken response from the
/// client, since answering it could fail one of the client's own requests. (Public for
/// the fuzz target.)
pub fn parse(line: &[u8]) -> Result<RxJsonRpcMessage<RoleServer>, Option<JsonRpcError>> {
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
        Some(refuse(
            None,
            ErrorData::parse_error(format!("not JSON: {e}"), None),
        ))
    })?;
    let is_response = value.get("method").is_none()
        && (value.get("result").is_some() || value.get("error").is_some());
    // Answer under the request's own ID when it has a readable one.
    let id = value
        .get("id")
        .and_then(|id| serde_json::from_value::<RequestId>(id.clone()).ok());
    serde_json::from_value(value).map_err(|e| {
        if is_response {
            tracing::warn!(error = %e, "a response from the client that makes no sense; ignored");
            return None;
        }
        Some(refuse(
            id,
            ErrorData::invalid_request(format!("not a JSON-RPC 2.0 message: {e}"), None),
        ))
    })
}

/// The request ID in the start of a JSON-RPC message, if it is there: `"id"`, a colon,
/// then a number or a string.
fn id_in(head: &[u8]) -> Option<RequestId> {
    let text = String::from_utf8_lossy(head);
    let after = text.find("\"id\"").map(|i| &text[i + 4..])?;
    let value = after.trim_start().strip_prefix(':')?.trim_start();
    let end = if let Some(rest) = value.strip_prefix('"') {
        rest.find('"').map(|i| i + 2)?
    } else {
        value
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(value.len())
    };
    serde_json::from_str(&value[..end]).ok()
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
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    fn stdio(input: &[u8]) -> Stdio<&[u8], Vec<u8>> {
        Stdio::new(input, Vec::new())
    }

    proptest::proptest! {
        /// Any line is a message or an answer saying what is wrong: never a panic.
        #[test]
        fn any_line_is_a_message_or_refused(line in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = parse(&line);
        }

        #[test]
        fn json_of_any_shape_is_a_message_or_refused(text in "[\\[\\]{}:,\"a-z0-9 ]{0,200}") {
            let _ = parse(text.as_bytes());
        }
    }

    #[tokio::test]
    async fn lines_are_split_bounded_and_the_last_may_lack_a_newline() {
        let long = vec![b'x'; MAX_LINE + 1];
        let input = [b"one\n".as_slice(), &long, b"\ntwo"].concat();
        let mut io = stdio(&input);
        let one = Line::Message(b"one".to_vec());
        assert_eq!(io.next_line().await.ok(), Some(one));
        assert_eq!(
            io.next_line().await.ok(),
            Some(Line::TooLong(vec![b'x'; HEAD]))
        );
        let two = Line::Message(b"two".to_vec());
        assert_eq!(io.next_line().await.ok(), Some(two));
        assert_eq!(io.next_line().await.ok(), Some(Line::End));
    }

    #[test]
    fn the_id_of_a_line_too_long_is_found_in_its_start() {
        let id = |head: &str| id_in(head.as_bytes()).map(|id| id.to_string());
        assert_eq!(
            id(r#"{"jsonrpc":"2.0","id": 42,"method":"#),
            Some("42".into())
        );
        assert_eq!(id(r#"{"id":"abc","params":{"x":"#), Some("abc".into()));
        assert_eq!(id(r#"{"method":"tools/call","params":{"#), None);
        assert_eq!(id(r#"{"id":"unterminated"#), None);
    }

    #[tokio::test]
    async fn a_read_cut_off_halfway_loses_nothing() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = Stdio::new(tokio::io::BufReader::new(server), Vec::new());
        client.write_all(b"{\"jsonrpc\":").await.expect("write");
        // The first half arrives, and the read is dropped, as rmcp does when it answers.
        let cut = tokio::time::timeout(Duration::from_millis(50), io.next_line()).await;
        assert!(cut.is_err(), "no whole line yet");
        client.write_all(b"\"2.0\"}\n").await.expect("write");
        let line = io.next_line().await.expect("a line");
        assert_eq!(line, Line::Message(b"{\"jsonrpc\":\"2.0\"}".to_vec()));
    }

    #[tokio::test]
    async fn bad_lines_are_answered_and_reading_goes_on() {
        let input = [
            "{oops",
            r#"{"jsonrpc":"2.0","id":7,"method":5}"#,
            "",
            r#"{"id":8,"result":[1]}"#,
            r#"[{"jsonrpc":"2.0","id":9,"method":"ping"}]"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            "",
        ]
        .join("\n");
        let mut io = stdio(input.as_bytes());
        let message = io.receive().await.expect("the good message");
        let notification = matches!(message, rmcp::model::JsonRpcMessage::Notification(_));
        assert!(notification);
        // The refusals are written by tasks of their own.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let written = String::from_utf8(io.output.lock().await.clone()).expect("utf-8");
        let answers: Vec<serde_json::Value> = written
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        // Three answers: none for the client's own (broken) response.
        assert_eq!(answers.len(), 3, "{written}");
        assert_eq!(answers[0]["error"]["code"], -32700);
        assert_eq!(answers[1]["error"]["code"], -32600);
        assert_eq!(answers[1]["id"], 7);
        assert_eq!(answers[2]["error"]["code"], -32600, "a batch");
        assert!(io.receive().await.is_none());
    }
}
