//! Attached to a session: the screen restored, then its output as it comes, keys in, and
//! the window size followed. When the connection drops (the network, or this device's own
//! node restarting) it attaches again by itself from the last byte it showed, so nothing
//! is lost and nothing shown twice. `Ctrl-\` detaches and leaves the session running.

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use loopsy_daemon::{
    Home,
    control::{ClientError, Connection},
};
use loopsy_mesh::framed;
use loopsy_wire::{
    control::{ErrorCode, Request, Response},
    session::{self, Input, MAX_FRAME, Reply},
};
use serde_bytes::ByteBuf;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use crate::term;

/// The key that detaches: Ctrl-\ (as dtach).
pub const DETACH: u8 = 0x1c;
/// How long to keep trying to attach again after the connection dropped.
const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// How one attachment ended.
enum End {
    Detached,
    Exited(Option<i32>),
    /// Worth trying again, from where the output stopped.
    Lost(String),
    /// Not worth trying again.
    Failed(String, u8),
}

/// stderr for the client's own lines, flushed at once: tokio writes stderr on a blocking
/// thread, and a line still on its way when the command returns would be lost.
struct Say(tokio::io::Stderr);

impl Say {
    async fn say(&mut self, text: &[u8]) {
        let _ = self.0.write_all(text).await;
        let _ = self.0.flush().await;
    }
}

/// Attaches to `session` (on `host`, or wherever it is) until detached or the session ends.
pub async fn run(home: &Home, host: Option<String>, session: String) -> ExitCode {
    let _raw = term::RawMode::enable();
    let (keys_in, mut keys) = mpsc::channel::<Vec<u8>>(64);
    tokio::spawn(read_keys(keys_in));
    let mut state = Attachment {
        session,
        host,
        at: None,
        attached_once: false,
        live: false,
    };
    let mut lost_since: Option<Instant> = None;
    let mut pause = Duration::from_millis(100);
    loop {
        state.live = false;
        let end = state.attach_once(home, &mut keys).await;
        if state.live {
            // It got back in: a later drop starts a fresh count.
            lost_since = None;
            pause = Duration::from_millis(100);
        }
        let mut err = Say(tokio::io::stderr());
        match end {
            End::Detached => {
                err.say(format!("\r\n[detached from session {}]\r\n", state.session).as_bytes())
                    .await;
                return ExitCode::SUCCESS;
            }
            End::Exited(code) => {
                let text = match code {
                    Some(code) => format!(
                        "\r\n[session {} exited with code {code}]\r\n",
                        state.session
                    ),
                    None => format!("\r\n[session {} is over]\r\n", state.session),
                };
                err.say(text.as_bytes()).await;
                // No code: the host lost the program; that is not a success.
                return ExitCode::from(code.unwrap_or(1).clamp(0, 255) as u8);
            }
            End::Failed(message, code) => {
                err.say(format!("loopsy: {message}\r\n").as_bytes()).await;
                return ExitCode::from(code);
            }
            End::Lost(reason) if state.attached_once => {
                let since = *lost_since.get_or_insert_with(Instant::now);
                if since.elapsed() > RECONNECT_FOR {
                    err.say(format!("loopsy: gave up reattaching: {reason}\r\n").as_bytes())
                        .await;
                    return ExitCode::from(crate::remote::code::LOOPSY);
                }
                if pause == Duration::from_millis(100) {
                    err.say(
                        format!("\r\n[connection lost: {reason}; reattaching…]\r\n").as_bytes(),
                    )
                    .await;
                }
                // Ctrl-\ still detaches while waiting.
                let sleep = tokio::time::sleep(pause);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        typed = keys.recv() => match typed {
                            Some(typed) if typed.contains(&DETACH) => {
                                err.say(b"\r\n[detached]\r\n").await;
                                return ExitCode::SUCCESS;
                            }
                            Some(_) => {}
                            None => sleep.as_mut().await,
                        },
                    }
                }
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
            End::Lost(reason) => {
                err.say(format!("loopsy: {reason}\r\n").as_bytes()).await;
                return ExitCode::from(crate::remote::code::LOOPSY);
            }
        }
    }
}

/// Where an attachment stands across reconnections.
struct Attachment {
    session: String,
    host: Option<String>,
    /// The offset after the last byte shown.
    at: Option<u64>,
    attached_once: bool,
    /// Whether the current try got in.
    live: bool,
}

impl Attachment {
    async fn attach_once(&mut self, home: &Home, keys: &mut mpsc::Receiver<Vec<u8>>) -> End {
        let (rows, cols) = term::size();
        let request = Request::Session {
            peer: self.host.clone(),
            request: session::Request::Attach {
                session: self.session.clone(),
                offset: self.at,
                rows,
                cols,
            },
        };
        let mut connection = match Connection::open(home, request).await {
            Ok(c) => c,
            Err(e) => return End::Lost(e.to_string()),
        };
        match connection.next().await {
            Ok(Some(Response::Stream { .. })) => {}
            Err(ClientError::Refused(e)) => {
                let code = if e.code == ErrorCode::Refused {
                    126
                } else {
                    255
                };
                return match e.code {
                    ErrorCode::Unreachable | ErrorCode::Unavailable => End::Lost(e.message),
                    // A node that just restarted may not know where the session is yet.
                    ErrorCode::NotFound if self.attached_once => End::Lost(e.message),
                    _ => End::Failed(e.message, code),
                };
            }
            Err(e) => return End::Lost(e.to_string()),
            Ok(_) => return End::Failed("the node gave an unexpected answer".into(), 255),
        }
        let (reader, writer) = connection.into_stream().into_split();
        let (mut reader, mut writer) = (reader.compat(), writer.compat_write());
        let mut stdout = tokio::io::stdout();
        let mut resizes = signal(SignalKind::window_change()).ok();
        // Input that ended (stdin a pipe or /dev/null) detaches, but only once attached:
        // a refusal or an unknown session is reported, not hidden behind a detach.
        let mut input_ended = false;
        loop {
            if input_ended && self.live {
                return End::Detached;
            }
            tokio::select! {
                reply = framed::read::<Reply, _>(&mut reader, MAX_FRAME) => {
                    let shown = match reply {
                        Ok(Some(Reply::Attached { info, offset, screen, .. })) => {
                            self.session = info.id;
                            self.attached_once = true;
                            self.live = true;
                            self.at = Some(offset);
                            screen.map(ByteBuf::into_vec)
                        }
                        Ok(Some(Reply::Output { offset, data })) => {
                            let at = self.at.unwrap_or(offset);
                            let end = offset + data.len() as u64;
                            self.at = Some(end.max(at));
                            // Bytes already shown before a reconnection are not shown again.
                            let skip = usize::try_from(at.saturating_sub(offset)).unwrap_or(usize::MAX);
                            data.get(skip..).map(<[u8]>::to_vec)
                        }
                        Ok(Some(Reply::Exited { code })) => return End::Exited(code),
                        Ok(Some(Reply::Error { message })) => return End::Failed(message, 255),
                        Ok(Some(_)) => return End::Failed("an unexpected message".into(), 255),
                        Ok(None) => return End::Lost("the stream ended".into()),
                        Err(e) => return End::Lost(e.to_string()),
                    };
                    if let Some(bytes) = shown
                        && (stdout.write_all(&bytes).await.is_err() || stdout.flush().await.is_err())
                    {
                        return End::Failed("cannot write to the terminal".into(), 255);
                    }
                }
                typed = keys.recv(), if !input_ended => match typed {
                    Some(mut typed) => {
                        let detach = typed.iter().position(|&b| b == DETACH);
                        if let Some(at) = detach {
                            typed.truncate(at);
                        }
                        if !typed.is_empty() {
                            let input = Input::Keys { data: ByteBuf::from(typed) };
                            if framed::write(&mut writer, &input, MAX_FRAME).await.is_err() {
                                return End::Lost("cannot send keys".into());
                            }
                        }
                        if detach.is_some() {
                            return End::Detached;
                        }
                    }
                    // No more input (stdin is a pipe or /dev/null, not a terminal): leave
                    // the session running, as Ctrl-\ would; a script that types into a
                    // session keeps its stdin open for as long as it watches.
                    None => input_ended = true,
                },
                Some(()) = async { resizes.as_mut()?.recv().await } => {
                    let (rows, cols) = term::size();
                    let _ = framed::write(&mut writer, &Input::Resize { rows, cols }, MAX_FRAME).await;
                }
            }
        }
    }
}

/// Reads stdin for as long as it lasts.
async fn read_keys(keys: mpsc::Sender<Vec<u8>>) {
    let mut stdin = tokio::io::stdin();
    let mut buffer = vec![0u8; 4096];
    while let Ok(n) = stdin.read(&mut buffer).await {
        if n == 0 || keys.send(buffer[..n].to_vec()).await.is_err() {
            return;
        }
    }
}
