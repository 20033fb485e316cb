//! A real `loopsy attach` as a test drives it: its output collected as it comes (escape
//! sequences stripped for reading), keys typed into it, and a counter session whose output
//! shows any byte lost or repeated.

use std::{
    io::{Read, Write},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    bin,
    node::{Node, Reaped},
};

/// A `loopsy attach` whose output is collected as it comes.
pub struct Attached {
    _child: Reaped,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<Vec<u8>>>,
    errors: Arc<Mutex<Vec<u8>>>,
}

/// Appends what `from` produces to `into`, on a thread of its own.
fn collect(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 65536];
        while let Ok(n) = from.read(&mut buffer) {
            if n == 0 {
                break;
            }
            into.lock().expect("output").extend_from_slice(&buffer[..n]);
        }
    });
}

impl Attached {
    pub fn start(node: &Node, session: &str) -> Self {
        Self::start_with(node, session, &[])
    }

    /// `loopsy attach SESSION FLAGS..`.
    pub fn start_with(node: &Node, session: &str, flags: &[&str]) -> Self {
        let mut child: Child = Command::new(bin::loopsy())
            .arg("--home")
            .arg(node.home())
            .args(["attach", session])
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run loopsy attach");
        let stdin = child.stdin.take();
        let output = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().expect("stdout"), output.clone());
        collect(child.stderr.take().expect("stderr"), errors.clone());
        Self {
            _child: Reaped(child),
            stdin,
            output,
            errors,
        }
    }

    /// What the client said on stderr, for failure messages.
    pub fn said(&self) -> String {
        String::from_utf8_lossy(&self.errors.lock().expect("errors")).into_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&strip_escapes(&self.output.lock().expect("output"))).into_owned()
    }

    pub fn wait_for_text(&self, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.text().contains(what) {
            assert!(
                std::time::Instant::now() < deadline,
                "no `{what}` in the output of loopsy attach; it said: {}\nand showed: {:?}",
                self.said(),
                self.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the client shows something (it attached), then types `keys`.
    pub fn type_keys(&mut self, keys: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.output.lock().expect("output").is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "loopsy attach never attached; it said: {}",
                self.said()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let stdin = self.stdin.as_mut().expect("stdin");
        let typed = stdin
            .write_all(keys.as_bytes())
            .and_then(|()| stdin.flush());
        assert!(typed.is_ok(), "loopsy attach is gone: {}", self.said());
    }
}

/// Terminal output without its escape sequences.
pub fn strip_escapes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != 0x1b {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        i += 1;
        match bytes.get(i) {
            // CSI: parameters, then one final byte.
            Some(b'[') => {
                i += 1;
                while i < bytes.len() && !(0x40..=0x7e).contains(&bytes[i]) {
                    i += 1;
                }
                i += 1;
            }
            // OSC: up to BEL or ST.
            Some(b']') => {
                while i < bytes.len() && bytes[i] != 0x07 && bytes[i] != 0x1b {
                    i += 1;
                }
                i += 1;
            }
            Some(_) => i += 1,
            None => {}
        }
    }
    out
}

/// The numbers printed as `nK`, in order.
pub fn counted(text: &str) -> Vec<u64> {
    let mut numbers = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('n') {
        rest = &rest[at + 1..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse() {
            numbers.push(n);
        }
    }
    numbers
}

impl Attached {
    /// The text once it holds `what`, and whatever followed for a moment.
    pub fn tap_text(self, what: &str) -> String {
        self.wait_for_text(what);
        std::thread::sleep(Duration::from_millis(200));
        self.text()
    }
}

/// A program that counts, printing `nK` lines: its output shows a gap or a repeat.
pub const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo n$i; sleep 0.02; done";

/// Starts a counter session named `name` on `host` from `from`, and attaches to it there.
pub fn start_counter(from: &Node, host: &str, name: &str) -> Attached {
    from.ok(&[
        "session", "new", "--on", host, "--name", name, "--", "sh", "-c", COUNTER,
    ]);
    Attached::start(from, name)
}

/// The counter's numbers in `text` run on with no gap and no repeat.
pub fn assert_unbroken(text: &str) {
    let numbers = counted(text);
    let broken = numbers.windows(2).position(|w| w[1] != w[0] + 1);
    assert!(
        broken.is_none(),
        "the session's output has a gap or a repeat around {:?}: {:?}",
        broken,
        broken.map(|i| &numbers[i.saturating_sub(3)..(i + 4).min(numbers.len())])
    );
}
