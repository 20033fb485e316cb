//! Attached to a session: the screen restored, then its output as it comes, keys in, and
//! the window size followed. When the connection drops (the network, or this device's own
//! node restarting) it attaches again by itself from the last byte it showed, so nothing
//! is lost and nothing shown twice; meanwhile a status line says how long it has tried and
//! how long it will go on. `Ctrl-\` detaches and leaves the session running. Every way
//! out ends with a line that says why.

use std::{
    future::Future,
    os::fd::AsFd,
    process::ExitCode,
    time::{Duration, Instant},
};

use loopsy_client::{
    Client, Error,
    handover::HandedOver,
    session::{Attach, Event},
};
use loopsy_daemon::Home;
use loopsy_wire::{
    control::ErrorCode,
    handover::{Ended, ToClient},
};
use tokio::{
    io::AsyncWriteExt,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    task::JoinHandle,
};

use crate::{remote::code, term};

/// The key that detaches: Ctrl-\ (as dtach).
pub const DETACH: u8 = loopsy_wire::handover::DETACH;
/// Set (to anything) to relay the terminal through this process instead of handing it to
/// the node: for comparing the two, and a way out should a hand-over misbehave.
pub const NO_HANDOVER: &str = "LOOPSY_NO_HANDOVER";
/// How long to keep trying to attach again after the connection dropped, unless told.
pub const REATTACH_FOR: Duration = Duration::from_secs(120);
/// After its program was hung up, how long to watch whether the host went away with it.
const HOST_GONE_WITHIN: Duration = Duration::from_secs(2);
/// The exit code of a program ended by a hang-up (128 + SIGHUP), as a stopping node
/// ends its sessions.
const HUNG_UP: i32 = 129;

/// How one attachment ended.
enum End {
    /// By Ctrl-\, or by the end of input; the text says which.
    Detached(&'static str),
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
    async fn say(&mut self, text: &str) {
        let _ = self.0.write_all(text.as_bytes()).await;
        let _ = self.0.flush().await;
    }
}

/// A dropped connection being picked up again.
struct Reconnect {
    since: Instant,
    limit: Duration,
    /// Why the last try failed.
    reason: String,
}

impl Reconnect {
    fn given_up(&self) -> bool {
        self.since.elapsed() > self.limit
    }

    /// The status line, drawn over itself (no newline), in whole seconds that add up to
    /// the limit.
    fn status(&self, session: &str) -> String {
        let tried = Duration::from_secs(self.since.elapsed().as_secs());
        format!(
            "\r\x1b[K[reattaching to session {session}: trying for {}, giving up in {}; \
             Ctrl-\\ detaches]",
            span(tried),
            span(self.limit.saturating_sub(tried))
        )
    }
}

/// `45s`, `1m05s`: whole seconds, for people.
fn span(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

/// Attaches to `session` (on `host`, or wherever it is) until detached or the session
/// ends; after a dropped connection, tries again for `reattach_for`.
pub async fn run(
    home: &Home,
    host: Option<String>,
    session: String,
    reattach_for: Duration,
    read_only: bool,
) -> ExitCode {
    let client = crate::client(home);
    let _raw = term::RawMode::enable();
    let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
    let hand_over = std::env::var_os(NO_HANDOVER).is_none()
        && loopsy_daemon::passed::passable(stdin.as_fd())
        && loopsy_daemon::passed::passable(stdout.as_fd());
    let mut state = Attachment {
        session,
        host,
        at: None,
        attached_once: false,
        live: false,
        keys: None,
        hand_over,
        input_ended: false,
        reconnect: None,
        read_only,
        host_name: None,
        status_shown: String::new(),
        say: Say(tokio::io::stderr()),
    };
    let mut pause = Duration::from_millis(100);
    loop {
        state.live = false;
        let end = state.attach_once(&client).await;
        if state.live {
            // It got back in: a later drop starts a fresh count.
            pause = Duration::from_millis(100);
        }
        let id = state.session.clone();
        match end {
            End::Detached(how) => {
                state
                    .say
                    .say(&format!("\r\n[detached from session {id}{how}]\r\n"))
                    .await;
                return ExitCode::SUCCESS;
            }
            End::Exited(exit) => {
                let gone = match exit {
                    Some(HUNG_UP) => host_gone(&client, &id).await,
                    _ => None,
                };
                let text = ended(&id, exit, gone);
                state.say.say(&format!("\r\n{text}\r\n")).await;
                // No code: the host lost the program; that is not a success.
                return ExitCode::from(exit.map_or(1, crate::remote::exit_code));
            }
            End::Failed(message, exit) => {
                // Below the session's screen, when there was one.
                let gap = if state.attached_once { "\r\n" } else { "" };
                state.say.say(&format!("{gap}loopsy: {message}\r\n")).await;
                return ExitCode::from(exit);
            }
            End::Lost(reason) if state.attached_once => {
                // Ctrl-\ is heard here while no node holds the terminal.
                state.keys_start();
                let reconnect = match &mut state.reconnect {
                    Some(reconnect) => {
                        reconnect.reason = reason;
                        reconnect
                    }
                    None => {
                        // Named by the registry, where the node found the session.
                        let host = host_of(&client, &id).await;
                        let on = host
                            .as_deref()
                            .map(|h| format!(" on {h}"))
                            .unwrap_or_default();
                        state.host_name = host;
                        let text = format!(
                            "\r\n[connection lost: {reason}; reattaching to session {id}{on} \
                             for up to {}]\r\n",
                            span(reattach_for)
                        );
                        state.say.say(&text).await;
                        state.reconnect.insert(Reconnect {
                            since: Instant::now(),
                            limit: reattach_for,
                            reason,
                        })
                    }
                };
                if reconnect.given_up() {
                    let text = format!(
                        "\r\x1b[Kloopsy: gave up reattaching to session {id} after {}: {}\r\n",
                        span(reconnect.since.elapsed()),
                        reconnect.reason
                    );
                    state.say.say(&text).await;
                    return ExitCode::from(code::LOOPSY);
                }
                if state
                    .reconnecting(tokio::time::sleep(pause))
                    .await
                    .is_detached()
                {
                    state
                        .say
                        .say(&format!("\r\n[detached from session {id}]\r\n"))
                        .await;
                    return ExitCode::SUCCESS;
                }
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            End::Lost(reason) => {
                state.say.say(&format!("loopsy: {reason}\r\n")).await;
                return ExitCode::from(code::LOOPSY);
            }
        }
    }
}

/// The last line of a session that ended while attached: why, in words.
fn ended(id: &str, exit: Option<i32>, gone: Option<Gone>) -> String {
    match (exit, gone) {
        (_, Some(Gone::Host(host))) => format!(
            "[session {id} ended: its host {host} stopped, which hung up its program (exit \
             code {HUNG_UP})]"
        ),
        (_, Some(Gone::ThisNode)) => format!(
            "[session {id} ended: this device's node stopped, which hung up its program (exit \
             code {HUNG_UP})]"
        ),
        (Some(exit), None) => format!("[session {id} exited with code {exit}]"),
        (None, None) => format!(
            "[session {id} ended: its host lost the program (its node stopped while it ran)]"
        ),
    }
}

/// How a wait while reconnecting ended.
enum Waited<T> {
    Done(T),
    /// Ctrl-\ was typed.
    Detached,
    /// The time for reattaching ran out.
    TimeUp,
}

impl<T> Waited<T> {
    fn is_detached(&self) -> bool {
        matches!(self, Waited::Detached)
    }
}

/// Why a hung-up session ended, when its host went away with it.
enum Gone {
    Host(String),
    ThisNode,
}

/// The name of the device that hosts session `id`, as this node's registry has it.
async fn host_of(client: &Client, id: &str) -> Option<String> {
    let sessions = client.sessions().await.ok()?;
    sessions.into_iter().find(|s| s.id == id).map(|s| s.host)
}

/// Whether the host of session `id` stopped (a stopping node hangs up its sessions, then
/// leaves): watched for a moment, as its connection closes after the hang-up. The host is
/// known from the replicated registry (a session started a moment ago may reach it late).
async fn host_gone(client: &Client, id: &str) -> Option<Gone> {
    let deadline = Instant::now() + HOST_GONE_WITHIN;
    while Instant::now() < deadline {
        match client.sessions().await {
            Ok(sessions) => {
                let listed = sessions.into_iter().find(|s| s.id == id);
                if let Some(session) = listed
                    && !session.host_online
                {
                    return Some(Gone::Host(session.host));
                }
            }
            Err(Error::NoNode { .. } | Error::Connect { .. } | Error::Receive(_)) => {
                return Some(Gone::ThisNode);
            }
            Err(_) => return None,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
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
    /// Stdin as this process reads it: while relaying, and while reconnecting a
    /// handed-over terminal; never while the node holds it.
    keys: Option<Keys>,
    /// Whether the terminal is handed to the node (until a node refuses it).
    hand_over: bool,
    /// Stdin ended (a pipe or /dev/null, not a terminal).
    input_ended: bool,
    /// Set while a dropped connection is being picked up again.
    reconnect: Option<Reconnect>,
    /// Watch only: keys other than the detach key, and sizes, are not sent.
    read_only: bool,
    /// The host's name, once a dropped connection made it worth asking.
    host_name: Option<String>,
    /// The status line as last drawn, so that it is drawn again only when it changes.
    status_shown: String,
    say: Say,
}

impl Attachment {
    /// Runs `work`; while reconnecting, the status line is redrawn each second, Ctrl-\
    /// is heard, and `work` may take no longer than the time left.
    async fn reconnecting<T>(&mut self, work: impl Future<Output = T>) -> Waited<T> {
        let Some(reconnect) = &self.reconnect else {
            return Waited::Done(work.await);
        };
        let time_up = tokio::time::sleep_until((reconnect.since + reconnect.limit).into());
        tokio::pin!(work, time_up);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                done = &mut work => return Waited::Done(done),
                _ = &mut time_up => return Waited::TimeUp,
                _ = tick.tick() => {
                    if let Some(reconnect) = &self.reconnect {
                        let line = reconnect.status(&self.session);
                        if line != self.status_shown {
                            self.say.say(&line).await;
                            self.status_shown = line;
                        }
                    }
                }
                typed = typed(&mut self.keys), if !self.input_ended => match typed {
                    Some(typed) if typed.contains(&DETACH) => return Waited::Detached,
                    // Keys typed while there is no session to take them are dropped.
                    Some(_) => {}
                    None => self.input_ended = true,
                },
            }
        }
    }

    async fn attach_once(&mut self, client: &Client) -> End {
        let (rows, cols) = term::size();
        let to = Attach {
            session: self.session.clone(),
            host: self.host.clone(),
            offset: self.at,
            rows,
            cols,
            read_only: self.read_only,
        };
        if self.hand_over {
            match self.attach_handed(client, to.clone()).await {
                Some(end) => return end,
                // The node cannot take the terminal: relay it, as before hand-overs.
                None => self.hand_over = false,
            }
        }
        self.keys_start();
        let opened = match self.reconnecting(client.attach(to)).await {
            Waited::Done(opened) => opened,
            Waited::Detached => return End::Detached(""),
            Waited::TimeUp => {
                let host = self.host_name.as_deref().unwrap_or("the host");
                return End::Lost(format!("{host} did not answer in time"));
            }
        };
        let (mut output, mut input) = match opened {
            Ok(halves) => halves,
            Err(e) => return self.not_attached(e),
        };
        let mut resizes = signal(SignalKind::window_change()).ok();
        loop {
            // Input that ended (stdin a pipe or /dev/null) detaches, but only once
            // attached: a refusal or an unknown session is reported, not hidden.
            if self.input_ended && self.live {
                return End::Detached(": its input ended");
            }
            tokio::select! {
                event = output.next() => {
                    let shown = match event {
                        Ok(Some(Event::Attached { info, offset, screen, .. })) => {
                            self.attached(info.id, offset).await;
                            screen
                        }
                        Ok(Some(Event::Output { offset, data })) => {
                            let (at, fresh) = loopsy_wire::session::unseen(self.at, offset, &data);
                            self.at = Some(at);
                            fresh.map(<[u8]>::to_vec)
                        }
                        Ok(Some(Event::Exited { code })) => return End::Exited(code),
                        Ok(None) => return End::Lost("the host's stream ended".into()),
                        Err(e @ (Error::Host(_) | Error::Unexpected { .. })) => {
                            return End::Failed(e.to_string(), code::LOOPSY);
                        }
                        Err(e) => return End::Lost(e.to_string()),
                    };
                    if let Some(bytes) = shown
                        && crate::stdio::write_stdout(&bytes).is_err()
                    {
                        return End::Failed("cannot write to the terminal".into(), code::LOOPSY);
                    }
                }
                typed = typed(&mut self.keys), if !self.input_ended => match typed {
                    Some(mut typed) => {
                        let detach = typed.iter().position(|&b| b == DETACH);
                        if let Some(at) = detach {
                            typed.truncate(at);
                        }
                        if self.read_only {
                            typed.clear();
                        }
                        if !typed.is_empty() && input.keys(&typed).await.is_err() {
                            return End::Lost("cannot send keys to the host".into());
                        }
                        if detach.is_some() {
                            return End::Detached("");
                        }
                    }
                    // No more input (stdin is a pipe or /dev/null, not a terminal): leave
                    // the session running, as Ctrl-\ would; a script that types into a
                    // session keeps its stdin open for as long as it watches.
                    None => self.input_ended = true,
                },
                Some(()) = async { resizes.as_mut()?.recv().await } => {
                    if !self.read_only {
                        let (rows, cols) = term::size();
                        let _ = input.resize(rows, cols).await;
                    }
                }
            }
        }
    }
}

impl Attachment {
    /// Attached to `session`, its output from `offset` on: said on the terminal when it
    /// ends a reconnection.
    async fn attached(&mut self, session: String, offset: u64) {
        self.session = session;
        self.attached_once = true;
        self.live = true;
        self.at = Some(offset);
        if let Some(reconnect) = self.reconnect.take() {
            let text = format!(
                "\r\x1b[K[reattached to session {} after {}]\r\n",
                self.session,
                span(reconnect.since.elapsed())
            );
            self.say.say(&text).await;
        }
    }

    /// Why an attachment could not be opened, as an end.
    fn not_attached(&self, error: Error) -> End {
        let Error::Refused(e) = error else {
            return End::Lost(error.to_string());
        };
        let exit = if e.code == ErrorCode::Refused {
            code::REFUSED
        } else {
            code::LOOPSY
        };
        match e.code {
            ErrorCode::Unreachable | ErrorCode::Unavailable => End::Lost(e.message),
            // A node that just restarted may not know where the session is yet.
            ErrorCode::NotFound if self.attached_once => End::Lost(e.message),
            _ => End::Failed(e.message, exit),
        }
    }

    /// One attachment with the terminal handed to the node, which reads the keys and draws
    /// the screen; this side follows the window's size and hears how it ends. `None` when
    /// the node cannot take the terminal (one that predates hand-overs).
    async fn attach_handed(&mut self, client: &Client, to: Attach) -> Option<End> {
        let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
        let opened = client.attach_here(to, stdin.as_fd(), stdout.as_fd());
        let opened = match self.reconnecting(opened).await {
            Waited::Done(opened) => opened,
            Waited::Detached => return Some(End::Detached("")),
            Waited::TimeUp => {
                let host = self.host_name.as_deref().unwrap_or("the host");
                return Some(End::Lost(format!("{host} did not answer in time")));
            }
        };
        let mut handed = match opened {
            Ok(handed) => handed,
            Err(Error::Refused(e)) if e.code == ErrorCode::BadRequest => return None,
            Err(e) => return Some(self.not_attached(e)),
        };
        // The node reads stdin now; keys typed while reconnecting are dropped.
        self.keys_stop().await;
        Some(self.follow(&mut handed).await)
    }

    async fn follow(&mut self, handed: &mut HandedOver) -> End {
        let mut resizes = signal(SignalKind::window_change()).ok();
        loop {
            tokio::select! {
                news = handed.next() => match news {
                    Ok(Some(ToClient::Attached { session, offset })) => {
                        self.attached(session, offset).await;
                        if handed.proceed().await.is_err() {
                            return End::Lost("this device's node went away".into());
                        }
                    }
                    Ok(Some(ToClient::Ended(ended))) => return self.ended_with(ended),
                    // The node went away holding the terminal: resume from what it noted.
                    Ok(None) => {
                        self.at = handed.shown().or(self.at);
                        return End::Lost("this device's node ended the attachment".into());
                    }
                    Err(e) => {
                        self.at = handed.shown().or(self.at);
                        return End::Lost(e.to_string());
                    }
                },
                Some(()) = async { resizes.as_mut()?.recv().await } => {
                    if !self.read_only {
                        let (rows, cols) = term::size();
                        let _ = handed.resize(rows, cols).await;
                    }
                }
            }
        }
    }

    /// How the node said a handed-over attachment ended, as an end.
    fn ended_with(&mut self, ended: Ended) -> End {
        match ended {
            Ended::Detached { input_ended: true } => End::Detached(": its input ended"),
            Ended::Detached { input_ended: false } => End::Detached(""),
            Ended::Exited { code } => End::Exited(code),
            Ended::Lost { message, at } => {
                self.at = at.or(self.at);
                End::Lost(message)
            }
            Ended::Failed { message } => End::Failed(message, code::LOOPSY),
        }
    }

    /// Starts reading stdin here, unless it already is.
    fn keys_start(&mut self) {
        if self.keys.is_none() && !self.input_ended {
            let (keys_in, keys) = mpsc::channel::<Vec<u8>>(64);
            let reader = tokio::spawn(read_keys(keys_in));
            self.keys = Some(Keys { keys, reader });
        }
    }

    /// Stops reading stdin here, and waits until no read is under way.
    async fn keys_stop(&mut self) {
        if let Some(Keys { reader, .. }) = self.keys.take() {
            reader.abort();
            let _ = reader.await;
        }
    }
}

/// Stdin read by this process, a chunk at a time.
struct Keys {
    keys: mpsc::Receiver<Vec<u8>>,
    reader: JoinHandle<()>,
}

/// The next chunk typed; never, while stdin is not read here; `None` once it ended.
async fn typed(keys: &mut Option<Keys>) -> Option<Vec<u8>> {
    match keys {
        Some(keys) => keys.keys.recv().await,
        None => std::future::pending().await,
    }
}

/// Reads stdin for as long as it lasts.
async fn read_keys(keys: mpsc::Sender<Vec<u8>>) {
    let mut stdin = crate::stdio::Stdin::new();
    let mut buffer = vec![0u8; 4096];
    while let Ok(n) = stdin.read(&mut buffer).await {
        if n == 0 || keys.send(buffer[..n].to_vec()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_counts_whole_seconds_that_add_up_to_the_limit() {
        let reconnect = Reconnect {
            since: Instant::now() - Duration::from_millis(61_700),
            limit: Duration::from_secs(120),
            reason: String::new(),
        };
        assert_eq!(
            reconnect.status("k3j2"),
            "\r\x1b[K[reattaching to session k3j2: trying for 1m01s, giving up in 59s; \
             Ctrl-\\ detaches]"
        );
        assert!(!reconnect.given_up());
        assert_eq!(span(Duration::from_secs(120)), "2m00s");
    }

    #[test]
    fn a_session_that_ended_says_why() {
        let host = Some(Gone::Host("alpha".into()));
        assert_eq!(
            ended("k3j2", Some(HUNG_UP), host),
            "[session k3j2 ended: its host alpha stopped, which hung up its program (exit \
             code 129)]"
        );
        assert_eq!(
            ended("k3j2", Some(0), None),
            "[session k3j2 exited with code 0]"
        );
        assert!(ended("k3j2", None, None).contains("its host lost the program"));
    }
}
