//! Agents' way in: `loopsy mcp` driven by a client nobody here wrote (the official MCP
//! Python SDK), bad JSON-RPC answered without stopping the server, and the Python example
//! client of the control API from `docs/`.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::Context;
use loopsy_tests::{
    bin,
    node::{Node, Options, Reaped},
    python,
    temp::TempDir,
    wait_for,
};
use serde_json::{Value, json};

/// Two paired nodes; bravo's file root is `root`.
fn pair(root: &Path) -> anyhow::Result<(Node, Node)> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo").env("HOME", root))?;
    a.pair_with(&b)?;
    Ok((a, b))
}

/// Runs a Python script of the tests (or docs) and returns its stdout.
fn run_python(script: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(python::python()?)
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed ({}):\nstdout: {}\nstderr: {}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn an_agent_uses_the_mesh_through_the_official_mcp_sdk() -> anyhow::Result<()> {
    let root = TempDir::new("bravo-files");
    let (a, b) = pair(root.path())?;
    let loopsy = bin::loopsy();
    let home = a.home();
    let out = run_python(
        &python::script("mcp_client.py"),
        &[&loopsy.to_string_lossy(), &home.to_string_lossy(), "bravo"],
    )?;
    let told: Value = serde_json::from_str(out.trim())?;

    // What the agent did is there on bravo, as bravo itself sees it.
    let written = std::fs::read_to_string(root.path().join("from agent.txt"))?;
    assert_eq!(written, "héllo from an agent\n");
    let blob = std::fs::read(root.path().join("blob.bin"))?;
    assert_eq!(blob, (0..=255u8).cycle().take(2048).collect::<Vec<_>>());
    let sessions = b.json(&["session", "ls", "--json"])?;
    let hosted = sessions
        .as_array()
        .and_then(|all| all.iter().find(|s| s["id"] == told["session"]))
        .context("the agent's session on bravo")?;
    assert_eq!(hosted["host"], "bravo");
    assert_eq!(hosted["status"], "running");
    assert_eq!(hosted["name"], "agent");
    let inbox = wait_for(
        "the message in bravo's inbox",
        Duration::from_secs(20),
        || {
            let inbox = b.json(&["msg", "inbox", "--json"]).ok()?;
            inbox
                .as_array()?
                .iter()
                .find(|m| m["id"] == told["message"])
                .cloned()
        },
    )?;
    assert_eq!(inbox["text"], "build is green");
    assert_eq!(inbox["from"], "alpha");
    Ok(())
}

/// `loopsy mcp` as a child with its stdout read line by line.
struct Server {
    child: Reaped,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn start(home: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(bin::loopsy())
            .arg("--home")
            .arg(home)
            .arg("mcp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            child: Reaped(child),
            lines,
        })
    }

    fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.send_raw(line.as_bytes())?;
        self.send_raw(b"\n")
    }

    fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let stdin = self.child.0.stdin.as_mut().context("stdin")?;
        stdin.write_all(bytes)?;
        stdin.flush()?;
        Ok(())
    }

    fn answer(&self) -> anyhow::Result<Value> {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .context("no answer from loopsy mcp")?;
        Ok(serde_json::from_str(&line)?)
    }
}

#[test]
fn malformed_json_rpc_gets_an_error_and_the_server_serves_on() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let mut server = Server::start(&a.home())?;
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "hand", "version": "1"}},
    });
    server.send(&initialize.to_string())?;
    assert_eq!(server.answer()?["result"]["serverInfo"]["name"], "loopsy");
    server.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)?;

    // Not JSON: a parse error.
    server.send("{\"jsonrpc\": \"2.0\", \"id\": 2, \"method\": ")?;
    let answer = server.answer()?;
    assert_eq!(answer["error"]["code"], -32700, "{answer}");
    // JSON, but not JSON-RPC: an invalid request, under its own ID.
    server.send(r#"{"id": 3, "params": []}"#)?;
    let answer = server.answer()?;
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert_eq!(answer["id"], 3);
    // A method nobody has: method not found.
    server.send(r#"{"jsonrpc":"2.0","id":4,"method":"tools/frobnicate"}"#)?;
    let answer = server.answer()?;
    assert_eq!(answer["error"]["code"], -32601, "{answer}");
    // A line far past the limit: refused whole, nothing done, answered under its ID so
    // the client does not wait for ever.
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{{"name":"ctx_set","arguments":{{"key":"k","value":"{}"}}}}}}"#,
        "v".repeat(loopsy_mcp::MAX_LINE + 1)
    );
    server.send(&huge)?;
    let answer = server.answer()?;
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert_eq!(answer["id"], 5, "{answer}");
    // A tool called with arguments of the wrong shape: a tool error the model can read
    // and correct (as MCP asks for input errors), not a crash.
    server.send(
        r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"exec","arguments":{"peer":7}}}"#,
    )?;
    let answer = server.answer()?;
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let said = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(said.contains("expected a string"), "{answer}");

    // A call that takes a while, and a long message that arrives in two halves around
    // its answer: nothing of the message may be lost when the answer goes out.
    server.send(
        r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"session_start","arguments":{"command":["sh"]}}}"#,
    )?;
    let started = server.answer()?;
    let id = started["result"]["structuredContent"]["id"]
        .as_str()
        .with_context(|| format!("a session: {started}"))?
        .to_owned();
    let watch = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "session_screen", "arguments": {"session": id, "wait_ms": 500}}});
    server.send(&watch.to_string())?;
    let long = json!({"jsonrpc": "2.0", "id": 10, "method": "tools/call",
        "params": {"name": "ctx_set", "arguments": {"key": "long", "value": "x".repeat(60_000)}}})
    .to_string();
    let (first, second) = long.as_bytes().split_at(long.len() / 2);
    server.send_raw(first)?;
    std::thread::sleep(Duration::from_millis(1500));
    server.send_raw(second)?;
    server.send_raw(b"\n")?;
    let answers = [server.answer()?, server.answer()?];
    assert_eq!(answers[0]["id"], 9, "{answers:?}");
    assert_eq!(answers[1]["id"], 10, "{answers:?}");
    assert_eq!(answers[1]["result"]["isError"], false, "{answers:?}");

    // And the server goes on serving.
    server.send(
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"ctx_set","arguments":{"key":"still","value":"here"}}}"#,
    )?;
    let answer = server.answer()?;
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["result"]["structuredContent"]["value"], "here");
    let out = a.cli(&["ctx", "get", "still"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "here");
    Ok(())
}

#[test]
fn the_python_example_client_of_the_control_api_works() -> anyhow::Result<()> {
    let root = TempDir::new("bravo-files");
    let (a, _b) = pair(root.path())?;
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/loopsy_control.py");
    let out = run_python(&example, &[&a.home().to_string_lossy(), "bravo"])?;
    assert!(out.contains("this device: alpha"), "{out}");
    assert!(out.contains("bravo: online"), "{out}");
    assert!(
        out.contains("ctx example/greeting = hello from python"),
        "{out}"
    );
    assert!(out.contains("uname on bravo: Linux (exit code 0)"), "{out}");
    let out = a.cli(&["ctx", "get", "example/greeting"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from python"
    );
    Ok(())
}
