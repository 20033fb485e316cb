//! Delivers attention events where the person is: a desktop notification on this device
//! (on Linux the freedesktop notification service, through `notify-send` or, without it,
//! `gdbus`; on macOS `osascript`'s `display notification`),
//! and an ntfy-style webhook (`POST` with `Title`, `Priority` and `Tags` headers, the text
//! as the body), so that a self-hosted or public ntfy server reaches a phone.
//!
//! Every device with a node delivers every event of the mesh it learns, once, and only
//! fresh ones: events that were raised before this node started, or that arrive long after
//! they were raised (a device back from a trip), are shown by `loopsy events` but not
//! delivered again.
//!
//! The webhook speaks plain HTTP/1.1 over TCP (`http://` URLs only: `https://` would need a
//! TLS client, which this build does not carry; put a local ntfy or a TLS-terminating
//! proxy in between).

use std::{collections::HashSet, sync::Arc, time::Duration};

use loopsy_wire::{attention::Kind, control::MeshEvent};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::Events;
use crate::clock;

/// An event older than this when it arrives is not delivered.
const FRESH_MS: u64 = 5 * 60 * 1000;
/// How long one delivery may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// `[notify]` in the config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Desktop notifications: on by default where a desktop session is (a session bus, or
    /// a display); `false` turns them off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop: Option<bool>,
    /// An ntfy-style webhook, `http://HOST[:PORT]/PATH` (for ntfy, the topic's URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

impl Settings {
    /// Whether to show desktop notifications, given this process's environment.
    pub fn desktop_on(&self) -> bool {
        self.desktop.unwrap_or_else(|| {
            // A Mac's user session always has its notification centre.
            cfg!(target_os = "macos")
                || ["DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "WAYLAND_DISPLAY"]
                    .iter()
                    .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
        })
    }
}

/// A webhook URL this build can post to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    host: String,
    port: u16,
    path: String,
}

/// A webhook URL that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadWebhook {
    #[error(
        "{0}: only http:// URLs are supported (https:// needs a TLS client this build does not \
         carry: use a local ntfy, or a proxy that adds TLS)"
    )]
    Scheme(String),
    #[error("{0} is not a URL like http://ntfy.example:8080/topic")]
    Malformed(String),
}

impl Webhook {
    pub fn parse(url: &str) -> Result<Self, BadWebhook> {
        let malformed = || BadWebhook::Malformed(url.to_owned());
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(BadWebhook::Scheme(url.to_owned()));
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') || path.chars().any(|c| c <= ' ') {
            return Err(malformed());
        }
        // `[v6]:port`, `host:port` or `host`.
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') || host.starts_with('[') => {
                (host, port.parse().map_err(|_| malformed())?)
            }
            _ => (authority, 80),
        };
        if host.is_empty() || host.chars().any(|c| c.is_control() || c == ' ') {
            return Err(malformed());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// Posts `event` ntfy's way; the server's status line, or why not.
    pub async fn post(&self, event: &MeshEvent) -> Result<u16, String> {
        let (title, body) = words(event);
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: loopsy\r\nTitle: {}\r\nPriority: {}\r\n\
             Tags: {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            self.path,
            self.host_header(),
            header_value(&title),
            priority(event.event.kind),
            tags(event.event.kind),
            body.len(),
        );
        let exchange = async {
            let host = self.host.trim_start_matches('[').trim_end_matches(']');
            let mut stream = TcpStream::connect((host, self.port))
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            // The status line is enough; read a little, never all of a hostile answer.
            let mut answer = vec![0u8; 256];
            let mut have = 0;
            while have < answer.len() {
                let n = stream
                    .read(&mut answer[have..])
                    .await
                    .map_err(|e| e.to_string())?;
                if n == 0 || answer[..have + n].contains(&b'\n') {
                    have += n;
                    break;
                }
                have += n;
            }
            status_of(&answer[..have]).ok_or_else(|| "no HTTP status in the answer".to_owned())
        };
        tokio::time::timeout(DEADLINE, exchange)
            .await
            .map_err(|_| "timed out".to_owned())?
    }

    fn host_header(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `HTTP/1.1 200 OK` → 200.
fn status_of(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

/// A header value: ASCII as it is, anything else as an RFC 2047 encoded word (which ntfy
/// decodes). Event texts hold no control characters, so no header can be injected.
fn header_value(text: &str) -> String {
    if text.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        text.to_owned()
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            data_encoding::BASE64.encode(text.as_bytes())
        )
    }
}

/// ntfy's priorities: 4 (high) for a program that asks, 3 (default) otherwise.
fn priority(kind: Kind) -> u8 {
    match kind {
        Kind::Notify | Kind::Note | Kind::Bell => 4,
        Kind::Exit => 3,
    }
}

/// ntfy's tags (emoji short codes among them).
fn tags(kind: Kind) -> &'static str {
    match kind {
        Kind::Bell => "bell,loopsy",
        Kind::Notify | Kind::Note => "speech_balloon,loopsy",
        Kind::Exit => "checkered_flag,loopsy",
    }
}

/// An event's title and body, as a person reads them.
pub fn words(event: &MeshEvent) -> (String, String) {
    let e = &event.event;
    let session = e.session_name.as_ref().or(e.session.as_ref());
    let place = match session {
        Some(session) => format!("{session} on {}", e.host),
        None => e.host.clone(),
    };
    let title = match &e.title {
        Some(title) => format!("{title} ({place})"),
        None => place,
    };
    let body = e.text.clone().unwrap_or_else(|| match e.kind {
        Kind::Bell => "rang the bell".to_owned(),
        Kind::Exit => "ended".to_owned(),
        Kind::Notify | Kind::Note => "wants you".to_owned(),
    });
    (title, body)
}

/// Shows `event` on this device's desktop: `osascript` on macOS; on Linux the
/// freedesktop notification service, through `notify-send` or, where that is missing,
/// `gdbus`.
async fn desktop(event: &MeshEvent) -> Result<(), String> {
    let (title, body) = words(event);
    let urgent = priority(event.event.kind) >= 4;
    let commands = if cfg!(target_os = "macos") {
        vec![macos_command(&title, &body)]
    } else {
        linux_commands(&title, &body, urgent)
    };
    let mut last = String::from("no notifier");
    for argv in commands {
        let Some((program, args)) = argv.split_first() else {
            continue;
        };
        // Arguments, never a shell: the texts are another device's.
        let run = loopsy_mesh::copies::untuned(program)
            .args(args)
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(DEADLINE, run).await {
            Err(_) => return Err("timed out".into()),
            // This one is not installed: the next way, if there is one.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                last = format!("{program} is not installed");
            }
            Ok(Err(e)) => return Err(format!("{program} does not run: {e}")),
            Ok(Ok(out)) if out.status.success() => return Ok(()),
            Ok(Ok(out)) => return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        }
    }
    Err(last)
}

/// The command lines that show a notification on Linux, in the order tried: `notify-send`,
/// then the same call through `gdbus`.
fn linux_commands(title: &str, body: &str, urgent: bool) -> Vec<Vec<String>> {
    let urgency = if urgent { "critical" } else { "normal" };
    let notify_send = [
        "notify-send",
        "--app-name=Loopsy",
        "--urgency",
        urgency,
        "--",
        title,
        body,
    ];
    let gdbus = [
        "gdbus",
        "call",
        "--session",
        "--dest",
        "org.freedesktop.Notifications",
        "--object-path",
        "/org/freedesktop/Notifications",
        "--method",
        "org.freedesktop.Notifications.Notify",
        // The arguments follow: an expiry of -1 is no option.
        "--",
        "Loopsy",
        "0",
        "",
        &gvariant_string(title),
        &gvariant_string(body),
        "[]",
        "{}",
        "-1",
    ];
    [&notify_send[..], &gdbus[..]]
        .iter()
        .map(|argv| argv.iter().map(|a| a.to_string()).collect())
        .collect()
}

/// The command line that shows a notification on macOS: `osascript` runs a fixed script
/// that takes the title and the text as its arguments (`argv`), so that no text of
/// another device ever becomes AppleScript source.
fn macos_command(title: &str, body: &str) -> Vec<String> {
    [
        "osascript",
        "-e",
        "on run argv",
        "-e",
        "display notification (item 2 of argv) with title (item 1 of argv)",
        "-e",
        "end run",
        // The end of osascript's options: a text that starts with `-` is an argument.
        "--",
        title,
        body,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// A GVariant string literal, as `gdbus call` parses its arguments.
fn gvariant_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// Delivers each fresh event of the mesh as it arrives, for as long as the node runs.
pub async fn run(events: Arc<Events>, settings: Settings) {
    let desktop_on = settings.desktop_on();
    let webhook = match settings.webhook.as_deref().map(Webhook::parse) {
        Some(Ok(webhook)) => Some(webhook),
        Some(Err(error)) => {
            tracing::warn!(%error, "notify.webhook is not used");
            None
        }
        None => None,
    };
    if !desktop_on && webhook.is_none() {
        return;
    }
    let mut changes = events.subscribe();
    changes.borrow_and_update();
    // What is already here was raised before this node started.
    let (_, mut seen): (_, HashSet<Vec<u8>>) = events.list(u64::MAX);
    while changes.changed().await.is_ok() {
        for event in events.new_since(&mut seen) {
            if clock::now_ms().saturating_sub(event.event.time_ms) > FRESH_MS {
                continue;
            }
            if desktop_on && let Err(error) = desktop(&event).await {
                tracing::info!(%error, "a desktop notification failed");
            }
            if let Some(webhook) = &webhook {
                match webhook.post(&event).await {
                    Ok(status) if (200..300).contains(&status) => {}
                    Ok(status) => tracing::info!(status, "the webhook refused an event"),
                    Err(error) => tracing::info!(%error, "the webhook is unreachable"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_parse_or_say_why_not() {
        let hook = Webhook::parse("http://ntfy.lan:8080/agents").unwrap();
        assert_eq!((hook.host.as_str(), hook.port), ("ntfy.lan", 8080));
        assert_eq!(hook.path, "/agents");
        let bare = Webhook::parse("http://127.0.0.1").unwrap();
        assert_eq!((bare.port, bare.path.as_str()), (80, "/"));
        let v6 = Webhook::parse("http://[::1]:9000/t").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", 9000));
        assert!(matches!(
            Webhook::parse("https://ntfy.sh/x"),
            Err(BadWebhook::Scheme(_))
        ));
        for bad in [
            "http://",
            "http://h:port/",
            "http://u@h/",
            "http://h/a b",
            "http://h/\r\nX: y",
        ] {
            assert!(Webhook::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_values_stay_on_one_line() {
        assert_eq!(
            header_value("Claude (agent on desk)"),
            "Claude (agent on desk)"
        );
        assert_eq!(header_value("é"), "=?UTF-8?B?w6k=?=");
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_of(b"garbage"), None);
        assert_eq!(gvariant_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn macos_texts_are_arguments_of_a_fixed_script() {
        let hostile = r#"x" & (do shell script "rm -rf ~") & ""#;
        let argv = macos_command("-title", hostile);
        assert_eq!(argv[0], "osascript");
        // The script is the same whatever the texts: they never reach its source.
        let script: Vec<&str> = argv
            .windows(2)
            .filter(|w| w[0] == "-e")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(
            script,
            [
                "on run argv",
                "display notification (item 2 of argv) with title (item 1 of argv)",
                "end run"
            ]
        );
        assert_eq!(argv[argv.len() - 3..], ["--", "-title", hostile]);
    }

    #[test]
    fn linux_tries_notify_send_then_gdbus() {
        let commands = linux_commands("T", "b\"x", true);
        assert_eq!(commands.len(), 2);
        assert_eq!(
            commands[0],
            [
                "notify-send",
                "--app-name=Loopsy",
                "--urgency",
                "critical",
                "--",
                "T",
                "b\"x"
            ]
        );
        assert_eq!(commands[1][0], "gdbus");
        assert!(commands[1].contains(&r#""b\"x""#.to_owned()));
        assert_eq!(linux_commands("T", "b", false)[0][3], "normal");
    }
}
